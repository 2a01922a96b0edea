"""Toy-text families (one-hot observations): ``FrozenLake-v1`` with varied slipperiness and hole penalty, and
``Taxi-v4`` with its rain and fickle-passenger switches."""

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


class TaxiFamily(TaskFamily):
    """``Taxi-v4`` with gymnasium's own ``is_rainy`` (moves go sideways with probability 0.2) and
    ``fickle_passenger`` (the passenger may change destination once, with probability 0.3) switches, each 0 or 1:
    four contexts. Meta-learner v3's held-out family (studies/v3/plan.yaml): no study has trained on it."""

    name = "taxi"
    env_id = "Taxi-v4"
    description = "Pick up a passenger and drop them at their destination on a 5x5 grid; at most 200 steps."
    context_space = {
        "is_rainy": ContextParam(0.0, 0.0, 1.0, "1: rain makes moves slip sideways (probability 0.2)",
                                 hard_low=0.0, hard_high=1.0),
        "fickle_passenger": ContextParam(0.0, 0.0, 1.0, "1: the passenger may change destination once",
                                         hard_low=0.0, hard_high=1.0),
    }

    def validate_context(self, context: Mapping[str, Any]) -> dict[str, float]:
        ctx = super().validate_context(context)
        for key, value in ctx.items():
            if value not in (0.0, 1.0):
                raise ValueError(f"taxi: context {key} is a switch, 0 or 1, got {value:g}")
        return ctx

    def sample_contexts(self, n: int, seed: int, features: list[str] | None = None) -> list[dict[str, float]]:
        """``n`` contexts with the switches in ``features`` (all by default) drawn 0 or 1 with
        ``numpy.random.default_rng(seed)``."""
        import numpy as np

        rng = np.random.default_rng(seed)
        keys = list(self.context_space) if features is None else features
        return [{**self.default_context(), **{k: float(rng.integers(0, 2)) for k in keys}} for _ in range(n)]

    def make_env(self, context: Mapping[str, Any] | None = None, **make_kwargs: Any) -> gym.Env:
        ctx = self.validate_context(context or {})
        return gym.make(self.env_id, is_rainy=bool(ctx["is_rainy"]), fickle_passenger=bool(ctx["fickle_passenger"]),
                        **make_kwargs)
