"""Training and evaluating SB3 DQN on a task with a hypermeta configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from hypermeta._callback import HyperMetaCallback
from hypermeta._features import check_spaces
from hypermeta._space import DQNConfig
from hypermeta._tasks import Task, env_factory

#: Evaluation environments are seeded with ``seed + EVAL_SEED_OFFSET`` so they never replay training episodes.
EVAL_SEED_OFFSET = 1_000_000


def check_timesteps(timesteps: int) -> int:
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or timesteps <= 0:
        raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
    return int(timesteps)


def build_model(
    env_id: str | Task,
    config: DQNConfig,
    seed: int,
    n_envs: int = 1,
    tensorboard_log: str | Path | None = None,
    verbose: int = 0,
    device: str = "cpu",
) -> DQN:
    """A ``DQN`` on ``n_envs`` copies of the task, built from ``config.sb3_kwargs()``."""
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    venv = make_vec_env(env_factory(env_id), n_envs=n_envs, seed=seed)
    check_spaces(venv)
    return DQN(
        "MlpPolicy", venv, seed=seed, verbose=verbose, device=device,
        tensorboard_log=None if tensorboard_log is None else str(tensorboard_log), **config.sb3_kwargs(),
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
) -> DQN:
    """Train DQN with the :class:`HyperMetaCallback` applying ``config``'s schedules."""
    timesteps = check_timesteps(timesteps)
    model = build_model(env_id, config, seed, n_envs=n_envs, tensorboard_log=tensorboard_log, verbose=verbose)
    callback = CallbackList([HyperMetaCallback(config), *callbacks])
    model.learn(timesteps, callback=callback, progress_bar=progress_bar)
    return model


def evaluate(model: DQN, env_id: str | Task, n_episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of ``n_episodes`` deterministic (greedy) episodes on fresh, seeded envs."""
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    venv = make_vec_env(env_factory(env_id), n_envs=1, seed=seed + EVAL_SEED_OFFSET)
    try:
        returns, _ = evaluate_policy(model, venv, n_eval_episodes=n_episodes, deterministic=True,
                                     return_episode_rewards=True)
    finally:
        venv.close()
    return np.asarray(returns, dtype=np.float64)
