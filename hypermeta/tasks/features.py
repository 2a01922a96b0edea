"""Task features: a fixed-length, named description of an environment, probed with a random policy."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from hypermeta.tasks.families import Task, has_time_limit, make_env, max_episode_steps

#: Bumped whenever a feature is added, removed or computed differently.
FEATURE_VERSION = "1"

#: Every feature, in vector order, with what it measures. ``symlog(x) = sign(x) log(1 + |x|)``.
FEATURE_DOCS: dict[str, str] = {
    "log_obs_dim": "log of the flattened observation size (a Discrete observation counts as one-hot)",
    "log_n_actions": "log of the number of discrete actions",
    "obs_is_binary": "1 if observations are boolean or one-hot (Box of bool, Discrete, MultiBinary), else 0",
    "obs_bounded_fraction": "fraction of observation dimensions with finite bounds in the observation space",
    "log_obs_std": "log of the mean (over dimensions) standard deviation of observations seen",
    "log_obs_absmax": "log of the largest absolute observation value seen",
    "log_obs_delta": "log of the mean |obs(t+1) - obs(t)| relative to the observation std (dynamics speed)",
    "action_effect": "share of the variance of obs(t+1) - obs(t) explained by the action taken (0..1)",
    "random_return_mean": "symlog of the mean undiscounted return of the uniform random policy",
    "random_return_std": "log(1 + std) of the random policy's episode returns",
    "log_episode_length": "log of the random policy's mean episode length",
    "episode_length_cv": "coefficient of variation of the random policy's episode lengths",
    "log_max_episode_steps": "log of the time limit (spec.max_episode_steps; hypermeta's episode cap when none)",
    "terminated_fraction": "fraction of probed episodes that terminated (rather than being truncated)",
    "reward_mean": "symlog of the mean per-step reward",
    "reward_std": "log(1 + std) of the per-step reward",
    "reward_absmax": "log(1 + max |per-step reward|)",
    "reward_nonzero_fraction": "fraction of steps with a non-zero reward (1 - sparsity)",
    "reward_positive_fraction": "fraction of steps with a positive reward",
    "log_reward_distinct": "log of the number of distinct per-step reward values (capped at 1000)",
    "terminal_reward": "symlog of the mean reward on the step that terminates an episode (0 if none did)",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_DOCS)


@dataclass(frozen=True)
class TaskFeatures:
    """A named feature vector. ``values[i]`` is the feature ``names[i]``; all values are finite."""

    names: tuple[str, ...]
    values: np.ndarray
    task: str
    seed: int
    probe_steps: int
    probe_seconds: float

    def as_dict(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.values)}

    def __getitem__(self, name: str) -> float:
        return float(self.values[self.names.index(name)])


def symlog(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


def check_spaces(env: gym.Env, who: str = "hypermeta") -> None:
    """Raise ``ValueError`` unless the action space is Discrete and observations are Box/Discrete/MultiBinary."""
    act, obs = env.action_space, env.observation_space
    if not isinstance(act, gym.spaces.Discrete):
        raise ValueError(
            f"{who} needs a Discrete action space (DQN picks one of n actions), got {act}. For continuous "
            "control use SAC/TD3, or discretize the actions with a wrapper."
        )
    if isinstance(obs, (gym.spaces.Dict, gym.spaces.Tuple)):
        raise ValueError(
            f"{who} supports Box, Discrete or MultiBinary observations, got {type(obs).__name__}. Wrap the "
            "environment with gymnasium.wrappers.FlattenObservation first."
        )
    if not isinstance(obs, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiBinary)):
        raise ValueError(f"{who} supports Box, Discrete or MultiBinary observations, got {obs}")


def _flatten_obs(space: gym.Space, obs: Any) -> np.ndarray:
    if isinstance(space, gym.spaces.Discrete):
        out = np.zeros(space.n, dtype=np.float64)
        out[int(obs) - space.start] = 1.0
        return out
    return np.asarray(obs, dtype=np.float64).ravel()


def probe_features(
    env_or_task: str | Task | gym.Env,
    seed: int = 0,
    max_episodes: int = 20,
    max_steps: int = 4000,
) -> TaskFeatures:
    """Run the uniform random policy for at most ``max_episodes`` episodes / ``max_steps`` steps and
    summarise the environment as :data:`FEATURE_NAMES`.

    Deterministic for a given ``seed`` (the environment and the action sampler are both seeded).
    Raises ``ValueError`` on unsupported spaces and on NaN/inf observations or rewards.

    >>> f = probe_features("cartpole", seed=0)
    >>> f["log_n_actions"] == math.log(2), len(f.values) == len(FEATURE_NAMES)
    (True, True)
    """
    if max_episodes < 1 or max_steps < 1:
        raise ValueError(f"max_episodes and max_steps must be >= 1, got {max_episodes}, {max_steps}")
    start = time.perf_counter()
    own_env = not isinstance(env_or_task, gym.Env)
    env = make_env(env_or_task) if own_env else env_or_task
    name = env_or_task.id if isinstance(env_or_task, Task) else (
        env_or_task if isinstance(env_or_task, str) else str(env.spec.id if env.spec else type(env).__name__))
    try:
        check_spaces(env, "probe_features")
        # a user's env without a time limit: its episodes end at the cap make_env would give it
        episode_cap = None if has_time_limit(env) else max_episode_steps()
        obs_space, n_actions = env.observation_space, int(env.action_space.n)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        x = _flatten_obs(obs_space, obs)
        observations, deltas, actions, rewards = [x], [], [], []
        returns, lengths, terminated_flags, terminal_rewards = [], [], [], []
        ep_return, ep_len, steps = 0.0, 0, 0
        while len(returns) < max_episodes and steps < max_steps:
            a = env.action_space.sample()
            obs, r, terminated, truncated, _ = env.step(a)
            x_next = _flatten_obs(obs_space, obs)
            r = float(r)
            if not np.all(np.isfinite(x_next)) or not math.isfinite(r):
                raise ValueError(
                    f"{name}: the environment returned a non-finite observation or reward at step {ep_len + 1} "
                    f"of episode {len(returns) + 1} (reward={r}); fix the environment or wrap it so it stays finite"
                )
            deltas.append(x_next - x)
            actions.append(int(a))
            rewards.append(r)
            observations.append(x_next)
            ep_return += r
            ep_len += 1
            steps += 1
            x = x_next
            truncated = truncated or ep_len == episode_cap
            if terminated or truncated or steps >= max_steps:
                returns.append(ep_return)
                lengths.append(ep_len)
                terminated_flags.append(bool(terminated))
                if terminated:
                    terminal_rewards.append(r)
                ep_return, ep_len = 0.0, 0
                if len(returns) < max_episodes and steps < max_steps:
                    x = _flatten_obs(obs_space, env.reset()[0])
                    observations.append(x)
        values = _summarise(env, obs_space, n_actions, episode_cap or max_steps, np.array(observations),
                            np.array(deltas), np.array(actions), np.array(rewards), np.array(returns), np.array(lengths),
                            terminated_flags, terminal_rewards)
    finally:
        if own_env:
            env.close()
    return TaskFeatures(FEATURE_NAMES, values, name, seed, steps, time.perf_counter() - start)


def _summarise(env, obs_space, n_actions, limit, obs, deltas, actions, rewards, returns, lengths,
               terminated_flags, terminal_rewards) -> np.ndarray:
    obs_std = obs.std(axis=0)
    scale = np.maximum(obs_std, 1e-6)
    delta_var = deltas.var(axis=0)
    between = np.zeros_like(delta_var)
    for a in np.unique(actions):  # variance of the per-action means of the observation change
        mask = actions == a
        between += mask.mean() * (deltas[mask].mean(axis=0) - deltas.mean(axis=0)) ** 2
    moving = delta_var > 1e-12
    action_effect = float(np.mean(between[moving] / delta_var[moving])) if moving.any() else 0.0
    if isinstance(obs_space, gym.spaces.Box):
        bounded = float(np.mean(np.isfinite(obs_space.low) & np.isfinite(obs_space.high)))
        binary = float(obs_space.dtype == np.bool_)
    else:
        bounded, binary = 1.0, 1.0
    spec_limit = env.spec.max_episode_steps if env.spec is not None else None
    mean_len = float(lengths.mean())
    f = {
        "log_obs_dim": math.log(obs.shape[1]),
        "log_n_actions": math.log(n_actions),
        "obs_is_binary": binary,
        "obs_bounded_fraction": bounded,
        "log_obs_std": math.log(float(obs_std.mean()) + 1e-6),
        "log_obs_absmax": math.log(float(np.abs(obs).max()) + 1e-6),
        "log_obs_delta": math.log(float(np.mean(np.abs(deltas) / scale)) + 1e-6),
        "action_effect": action_effect,
        "random_return_mean": symlog(float(returns.mean())),
        "random_return_std": math.log1p(float(returns.std())),
        "log_episode_length": math.log(mean_len),
        "episode_length_cv": float(lengths.std()) / mean_len,
        "log_max_episode_steps": math.log(spec_limit or limit),
        "terminated_fraction": float(np.mean(terminated_flags)),
        "reward_mean": symlog(float(rewards.mean())),
        "reward_std": math.log1p(float(rewards.std())),
        "reward_absmax": math.log1p(float(np.abs(rewards).max())),
        "reward_nonzero_fraction": float(np.mean(rewards != 0)),
        "reward_positive_fraction": float(np.mean(rewards > 0)),
        "log_reward_distinct": math.log(min(len(np.unique(rewards)), 1000)),
        "terminal_reward": symlog(float(np.mean(terminal_rewards))) if terminal_rewards else 0.0,
    }
    return np.array([f[n] for n in FEATURE_NAMES], dtype=np.float64)
