"""The SB3 runner: training and evaluating Stable-Baselines3 DQN on a task with a hypermeta configuration."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from hypermeta.callback import HyperMetaCallback
from hypermeta.engine.measurement import Curve, DivergenceError, Measurement, check_timesteps
from hypermeta.engine.runner import Job, OnEval, Runner
from hypermeta.guard import health
from hypermeta.seeds import check_seed, eval_seed
from hypermeta.space import DQNConfig
from hypermeta.tasks.features import check_spaces
from hypermeta.tasks.families import Task, env_factory


def build_model(
    env_id: str | Task,
    config: DQNConfig,
    seed: int,
    n_envs: int = 1,
    tensorboard_log: str | Path | None = None,
    verbose: int = 0,
    device: str = "cpu",
) -> DQN:
    """A ``DQN`` on ``n_envs`` copies of the task, built from ``config.sb3_kwargs(observation_space)``."""
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    check_seed(seed)
    venv = make_vec_env(env_factory(env_id), n_envs=n_envs, seed=seed)
    check_spaces(venv)
    kwargs = config.sb3_kwargs(venv.observation_space)
    return DQN(
        "MlpPolicy", venv, seed=seed, verbose=verbose, device=device,
        tensorboard_log=None if tensorboard_log is None else str(tensorboard_log), **kwargs,
    )


def train(
    env_id: str | Task,
    config: DQNConfig,
    timesteps: int,
    seed: int,
    *,
    n_envs: int = 1,
    progress_bar: bool = False,
    tensorboard_log: str | Path | None = None,
    callbacks: Sequence[BaseCallback] = (),
    verbose: int = 0,
    guard: bool = False,
    controller: Any = None,
    init: Any = None,
) -> DQN:
    """Train DQN with the :class:`HyperMetaCallback` applying ``config``'s schedules (and, with ``guard``,
    its divergence guard; with ``controller``, steered during training; with ``init``, from a Q-network start)."""
    timesteps = check_timesteps(timesteps)
    model = build_model(env_id, config, seed, n_envs=n_envs, tensorboard_log=tensorboard_log, verbose=verbose)
    callback = CallbackList([HyperMetaCallback(config, guard=guard, controller=controller, init=init), *callbacks])
    model.learn(timesteps, callback=callback, progress_bar=progress_bar)
    return model


def evaluate(model: DQN, env_id: str | Task, n_episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of ``n_episodes`` deterministic (greedy) episodes on fresh, seeded envs."""
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    venv = make_vec_env(env_factory(env_id), n_envs=1, seed=eval_seed(seed))
    try:
        returns, _ = evaluate_policy(model, venv, n_eval_episodes=n_episodes, deterministic=True,
                                     return_episode_rewards=True)
    finally:
        venv.close()
    return np.asarray(returns, dtype=np.float64)


def check_finite(model: DQN, where: str) -> None:
    """Raise :class:`DivergenceError` if the loss, a weight or a Q-value of recent observations is not finite."""
    reason = health(model, q_factor=math.inf)
    if reason is not None:
        raise DivergenceError(f"{reason} {where}")


class _CurveCallback(BaseCallback):
    def __init__(self, task: str, settings: Measurement, seed: int, curve: Curve,
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
    settings: Measurement,
    seed: int,
    on_eval: OnEval | None = None,
    control: Any = None,
    init: Any = None,
) -> Curve:
    """Train DQN (with :class:`~hypermeta.HyperMetaCallback`) and evaluate it ``settings.n_evals`` times.

    Every evaluation uses the same ``settings.eval_episodes`` episodes (seeded from ``seed``), so curve
    points differ by the policy only. ``on_eval(step, mean_return)`` may raise (e.g. ``optuna.TrialPruned``)
    to stop early. Raises :class:`DivergenceError` on non-finite loss, weights, Q-values or returns. ``control``:
    a controller steering the schedules (``HyperMetaCallback(config, controller=control)``); ``init``: a Q-network
    start loaded before the first step (``HyperMetaCallback(config, init=init)``).
    """
    task_id = task.id if isinstance(task, Task) else task
    curve = Curve()
    start = time.perf_counter()
    model = build_model(task_id, config, seed)
    try:
        cb = _CurveCallback(task_id, settings, seed, curve, on_eval)
        model.learn(settings.timesteps, callback=[HyperMetaCallback(config, controller=control, init=init), cb])
        if cb.pending:  # learn() stopped exactly at the last step before the final evaluation fired
            cb.evaluate()
    finally:
        model.env.close()
    curve.wall_time = time.perf_counter() - start
    curve.env_steps = model.num_timesteps
    return curve


class SB3Runner(Runner):
    """One Stable-Baselines3 ``DQN`` per job, with :class:`~hypermeta.HyperMetaCallback` applying the schedules."""

    name = "sb3"

    def run(self, job: Job, on_eval: OnEval | None = None) -> Curve:
        return run_curve(job.task, job.config, job.measurement, job.seed, on_eval, job.control, job.init)
