"""Box2D families: ``LunarLander-v3`` (discrete actions) with gravity, wind and turbulence contexts."""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym

from hypermeta import ContextParam, TaskFamily


class LunarLanderFamily(TaskFamily):
    """``LunarLander-v3`` with gravity, wind and turbulence (gymnasium's own constructor arguments).

    Wind is enabled when ``wind_power`` or ``turbulence_power`` is above zero; the default context is
    gymnasium's default environment (gravity -10, no wind).
    """

    name = "lunarlander"
    env_id = "LunarLander-v3"
    description = "Land between the flags with 4 discrete engines; +100..140 for landing, at most 1000 steps."
    context_space = {
        "gravity": ContextParam(-10.0, -11.5, -4.0, "gravity (gymnasium requires -12 < g < 0)",
                                hard_low=-11.999, hard_high=-0.001),
        "wind_power": ContextParam(0.0, 0.0, 20.0, "maximum linear wind", hard_high=20.0),
        "turbulence_power": ContextParam(0.0, 0.0, 2.0, "maximum rotational wind", hard_high=2.0),
    }

    def make_env(self, context: Mapping[str, Any] | None = None, **make_kwargs: Any) -> gym.Env:
        ctx = self.validate_context(context or {})
        enable_wind = ctx["wind_power"] > 0 or ctx["turbulence_power"] > 0
        return gym.make(self.env_id, continuous=False, gravity=ctx["gravity"], enable_wind=enable_wind,
                        wind_power=ctx["wind_power"], turbulence_power=ctx["turbulence_power"], **make_kwargs)
