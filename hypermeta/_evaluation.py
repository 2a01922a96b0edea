"""Learning curves, normalised scores and divergence detection: what a study trial and a test run measure.

Normalised score of a return ``R`` on a task: ``(R - R_random) / (R_reference - R_random)``, where

* ``R_random`` is the mean return of the uniform random policy over :data:`RANDOM_EPISODES` episodes
  (environment and action sampler seeded with :data:`RANDOM_SEED`), computed on first use per task;
* ``R_reference`` is the family's ``reference_return`` (for the built-in families and plain gymnasium
  ids: the environment spec's ``reward_threshold``, the score at which gymnasium calls the task solved:
  CartPole 475, Acrobot -100, MountainCar -110, LunarLander 200), or a value given explicitly.

0 is the random policy, 1 is "solved"; scores above 1 are possible (CartPole caps at 500).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback

from hypermeta._space import DQNConfig
from hypermeta._tasks import Task, get_task, is_family_task, make_env
from hypermeta._train import build_model, check_timesteps, evaluate

RANDOM_EPISODES = 100
RANDOM_SEED = 12345


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, network weight, Q-value or return."""


@lru_cache(maxsize=None)
def random_return(task_id: str) -> float:
    """Mean return of the uniform random policy (see the module docstring)."""
    env = make_env(task_id)
    env.action_space.seed(RANDOM_SEED)
    returns = []
    for episode in range(RANDOM_EPISODES):
        env.reset(seed=RANDOM_SEED if episode == 0 else None)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def reference_return(task_id: str) -> float:
    """The return that counts as 1.0: the family's ``reference_return`` or the spec's ``reward_threshold``."""
    if is_family_task(task_id):
        family = get_task(task_id).family
        ref = getattr(family, "reference_return", None)
        if ref is not None:
            return float(ref)
    env = make_env(task_id)
    ref = env.spec.reward_threshold if env.spec is not None else None
    env.close()
    if ref is None:
        raise ValueError(
            f"no reference return for {task_id!r}: its spec has no reward_threshold. Pass one explicitly "
            "(--reference R on the command line, reference=R in Python)."
        )
    return float(ref)


@dataclass(frozen=True)
class Normalizer:
    """Maps returns of one task to normalised scores."""

    task: str
    random: float
    reference: float

    def __post_init__(self) -> None:
        if not self.reference > self.random:
            raise ValueError(
                f"reference return ({self.reference}) must exceed the random policy's ({self.random}) for {self.task!r}"
            )

    @classmethod
    def for_task(cls, task_id: str, reference: float | None = None) -> Normalizer:
        return cls(task_id, random_return(task_id), reference_return(task_id) if reference is None else reference)

    def __call__(self, returns: float | np.ndarray) -> float | np.ndarray:
        return (np.asarray(returns, dtype=np.float64) - self.random) / (self.reference - self.random)


@dataclass(frozen=True)
class CurveSettings:
    """How one training run is measured: ``n_evals`` evenly spaced greedy evaluations of ``eval_episodes``."""

    timesteps: int
    n_evals: int = 5
    eval_episodes: int = 5

    def __post_init__(self) -> None:
        check_timesteps(self.timesteps)
        if self.n_evals < 1 or self.eval_episodes < 1:
            raise ValueError(f"n_evals and eval_episodes must be >= 1, got {self.n_evals}, {self.eval_episodes}")
        if self.timesteps < self.n_evals:
            raise ValueError(f"timesteps ({self.timesteps}) must be >= n_evals ({self.n_evals})")

    @property
    def eval_steps(self) -> list[int]:
        return [round(self.timesteps * (k + 1) / self.n_evals) for k in range(self.n_evals)]


@dataclass
class Curve:
    """One training run: mean evaluation return at each evaluation step."""

    steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    env_steps: int = 0

    def auc(self, normalizer: Normalizer) -> float:
        """Normalised area under the curve: the mean normalised score over the (evenly spaced) evaluations."""
        return float(np.mean(normalizer(np.array(self.returns))))


def check_finite(model: DQN, where: str) -> None:
    """Raise :class:`DivergenceError` if the loss, a weight or a Q-value of recent observations is not finite."""
    loss = model.logger.name_to_value.get("train/loss")
    if loss is not None and not math.isfinite(loss):
        raise DivergenceError(f"non-finite training loss ({loss}) {where}")
    for name, param in model.q_net.named_parameters():
        if not torch.isfinite(param).all():
            raise DivergenceError(f"non-finite weights in q_net.{name} {where}")
    buffer = model.replay_buffer
    if buffer is not None and buffer.size() > 0:
        n = min(buffer.size(), 256)
        obs = torch.as_tensor(buffer.observations[:n].reshape(n * buffer.n_envs, -1), device=model.device)
        with torch.no_grad():
            q = model.q_net(obs.float())
        if not torch.isfinite(q).all():
            raise DivergenceError(f"non-finite Q-values {where}")


class _CurveCallback(BaseCallback):
    def __init__(self, task: str, settings: CurveSettings, seed: int, curve: Curve,
                 on_eval: Callable[[int, float], None] | None) -> None:
        super().__init__()
        self.task, self.settings, self.seed, self.curve, self.on_eval = task, settings, seed, curve, on_eval
        self.pending = list(settings.eval_steps)

    def _on_step(self) -> bool:
        if self.pending and self.num_timesteps >= self.pending[0]:
            self.pending.pop(0)
            self.evaluate()
        return True

    def evaluate(self) -> None:
        where = f"at step {self.num_timesteps}"
        check_finite(self.model, where)
        returns = evaluate(self.model, self.task, self.settings.eval_episodes, self.seed)
        if not np.all(np.isfinite(returns)):
            raise DivergenceError(f"non-finite evaluation return {where}")
        self.curve.steps.append(self.num_timesteps)
        self.curve.returns.append(float(np.mean(returns)))
        if self.on_eval is not None:
            self.on_eval(self.num_timesteps, self.curve.returns[-1])


def run_curve(
    task: str | Task,
    config: DQNConfig,
    settings: CurveSettings,
    seed: int,
    on_eval: Callable[[int, float], None] | None = None,
) -> Curve:
    """Train DQN (with :class:`~hypermeta.HyperMetaCallback`) and evaluate it ``settings.n_evals`` times.

    Every evaluation uses the same ``settings.eval_episodes`` episodes (seeded from ``seed``), so curve
    points differ by the policy only. ``on_eval(step, mean_return)`` may raise (e.g. ``optuna.TrialPruned``)
    to stop early. Raises :class:`DivergenceError` on non-finite loss, weights, Q-values or returns.
    """
    from hypermeta._callback import HyperMetaCallback

    task_id = task.id if isinstance(task, Task) else task
    curve = Curve()
    start = time.perf_counter()
    model = build_model(task_id, config, seed)
    try:
        cb = _CurveCallback(task_id, settings, seed, curve, on_eval)
        model.learn(settings.timesteps, callback=[HyperMetaCallback(config), cb])
        if cb.pending:  # learn() stopped exactly at the last step before the final evaluation fired
            cb.evaluate()
    finally:
        model.env.close()
    curve.wall_time = time.perf_counter() - start
    curve.env_steps = model.num_timesteps
    return curve
