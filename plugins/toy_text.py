"""Toy-text families: ``FrozenLake-v1`` with varied slipperiness and hole penalty (one-hot observations)."""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym

from hypermeta import ContextParam, TaskFamily


class FrozenLakeFamily(TaskFamily):
    """``FrozenLake-v1`` (4x4) with gymnasium's own ``success_rate`` and ``reward_schedule`` arguments.

    ``success_rate`` is the probability that the agent moves in the chosen direction (gymnasium's
    default slippery lake: 1/3; 1.0 is a deterministic lake); ``hole_reward`` is the reward for falling
    into a hole (0 in gymnasium's default, negative values punish it). Reaching the goal gives 1.
    """

    name = "frozenlake"
    env_id = "FrozenLake-v1"
    description = "Cross a slippery 4x4 lake to the goal; reward 1 at the goal, at most 100 steps."
    context_space = {
        "success_rate": ContextParam(1 / 3, 1 / 3, 1.0, "probability of moving in the chosen direction",
                                     hard_low=0.0, hard_high=1.0),
        "hole_reward": ContextParam(0.0, -1.0, 0.0, "reward for falling into a hole", hard_low=-10.0, hard_high=0.0),
    }

    def make_env(self, context: Mapping[str, Any] | None = None, **make_kwargs: Any) -> gym.Env:
        ctx = self.validate_context(context or {})
        return gym.make(self.env_id, is_slippery=True, success_rate=ctx["success_rate"],
                        reward_schedule=(1, ctx["hole_reward"], 0), **make_kwargs)
