"""Named baseline configurations, available for every task.

* ``sb3-default``: Stable-Baselines3 2.x ``DQN`` defaults (lr 1e-4, buffer 1e6, learning_starts 100,
  batch 32, gamma 0.99, train_freq 4, gradient_steps 1, target_update_interval 10000, epsilon 1.0 -> 0.05
  over 10%, net [64, 64]).
* ``rl-zoo``: the tuned values of rl-baselines3-zoo ``hyperparams/dqn.yml`` for CartPole-v1, Acrobot-v1,
  MountainCar-v0 and LunarLander-v3; a family's variants use the entry of the family's environment.
* ``base``: hypermeta's base configuration with its default schedule (``DQNConfig()``).
* ``study:NAME``: the best trial's configuration of the Optuna study ``NAME`` (see :mod:`hypermeta.search.study`).
"""

from __future__ import annotations

from hypermeta.space import DQNConfig
from hypermeta.tasks.families import get_task, is_family_task

SB3_DEFAULT = DQNConfig(
    lr_initial=1e-4, lr_shape="constant", eps_initial=1.0, eps_final=0.05, eps_fraction=0.1, eps_shape="linear",
    gamma=0.99, batch_size=32, train_freq=4, subsample_steps=4, target_update_interval=10_000,
    learning_starts=100, net_arch="small", buffer_size=1_000_000,
)

#: rl-baselines3-zoo ``hyperparams/dqn.yml`` (gradient_steps = train_freq // subsample_steps; the zoo's
#: ``gradient_steps: -1`` means one per environment step, i.e. ``subsample_steps=1``).
RL_ZOO_SOURCE = "rl-baselines3-zoo hyperparams/dqn.yml"
RL_ZOO: dict[str, DQNConfig] = {
    "CartPole-v1": DQNConfig(
        lr_initial=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
        target_update_interval=10, train_freq=256, subsample_steps=2, eps_fraction=0.16, eps_final=0.04,
        net_arch="medium"),
    "MountainCar-v0": DQNConfig(
        lr_initial=4e-3, batch_size=128, buffer_size=10_000, learning_starts=1000, gamma=0.98,
        target_update_interval=600, train_freq=16, subsample_steps=2, eps_fraction=0.2, eps_final=0.07,
        net_arch="medium"),
    "LunarLander-v3": DQNConfig(
        lr_initial=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
        target_update_interval=250, train_freq=4, subsample_steps=1, eps_fraction=0.12, eps_final=0.1,
        net_arch="medium"),
    "Acrobot-v1": DQNConfig(
        lr_initial=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
        target_update_interval=250, train_freq=4, subsample_steps=1, eps_fraction=0.12, eps_final=0.1,
        net_arch="medium"),
}

BASELINES = ("sb3-default", "rl-zoo", "base")


def rl_zoo_config(task_id: str) -> DQNConfig:
    env_id = get_task(task_id).family.env_id if is_family_task(task_id) else task_id
    if env_id not in RL_ZOO:
        raise ValueError(f"rl-zoo has no tuned DQN entry for {task_id!r} (env {env_id}); it has {sorted(RL_ZOO)}")
    return RL_ZOO[env_id]


def baseline_config(name: str, task_id: str, storage: str | None = None) -> DQNConfig:
    """The configuration a baseline name stands for on ``task_id``."""
    if name == "sb3-default":
        return SB3_DEFAULT
    if name == "rl-zoo":
        return rl_zoo_config(task_id)
    if name == "base":
        return DQNConfig()
    if name.startswith("study:"):
        from hypermeta.search.study import best_config

        return best_config(name.removeprefix("study:"), storage)
    raise ValueError(f"unknown baseline {name!r}; use one of {list(BASELINES)} or study:NAME")


def named_config(task_id: str, *, config_file: str | None = None, baseline: str | None = None,
                 study: str | None = None, storage: str | None = None) -> tuple[str, DQNConfig]:
    """``(label, configuration)`` from exactly one of a YAML/JSON file, a baseline name or a study name."""
    from pathlib import Path

    if sum(x is not None for x in (config_file, baseline, study)) != 1:
        raise ValueError("give exactly one of --config FILE, --baseline NAME or --study NAME")
    if config_file is not None:
        return Path(config_file).stem, DQNConfig.load(config_file)
    if baseline is not None:
        return baseline, baseline_config(baseline, task_id)
    return f"study:{study}", baseline_config(f"study:{study}", task_id, storage)


def compare_with_sb3_default(task: str, config: DQNConfig, timesteps: int, n_seeds: int,
                             reference: float | None = None) -> dict[str, float]:
    """``config`` against SB3's default schedules over the same DQN settings, on the same ``n_seeds`` test seeds,
    trained by the batched engine (cheap): each one's mean normalised AUC and their paired difference with its 95%
    bootstrap CI (``hypermeta train --compare``)."""
    from hypermeta.engine.batched import BatchedRunner
    from hypermeta.engine.measurement import Measurement
    from hypermeta.engine.pipeline import paired_difference, run_jobs
    from hypermeta.engine.runner import Job
    from hypermeta.seeds import test_seeds

    default = config.with_schedules(SB3_DEFAULT)
    seeds = test_seeds(n_seeds)
    jobs = [Job(task, label, c, Measurement(timesteps), s, reference) for label, c in (("config", config),
            ("sb3-default", default)) for s in seeds]
    runs = run_jobs(jobs, runner=BatchedRunner())
    scores = {m: runs[runs["method"] == m].set_index("seed").loc[seeds, "auc"].to_numpy()[:, None]
              for m in ("config", "sb3-default")}
    return {"config": float(scores["config"].mean()), "sb3_default": float(scores["sb3-default"].mean()),
            **paired_difference(scores["config"], scores["sb3-default"])}
