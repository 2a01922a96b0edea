"""``hypermeta compare``, the run stage: Optuna studies and baselines, re-evaluated on test seeds.

A comparison is defined by a YAML file (see ``studies/baselines.yaml``). Running it is resumable at every
stage: studies resume from their storage, test runs from ``runs.csv``; what exists is not recomputed. The
stage leaves its data in ``out_dir`` (``runs_by_method.csv``, ``tuning_cost.csv``, ``trials.csv``) for the
renderer, :mod:`hypermeta.reports.comparison`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hypermeta.search.baselines import BASELINES, baseline_config
from hypermeta.engine.defaults import (BATCHED_STUDY_BATCH, GRACE_PERIOD, HEARTBEAT_INTERVAL, RUNNERS, SAMPLERS,
                                       TEST_SEEDS)
from hypermeta.engine.defaults import EVAL_EPISODES, N_EVALS
from hypermeta.engine.measurement import Measurement, Normalizer
from hypermeta.engine.pipeline import RunStore, run_jobs
from hypermeta.engine.runner import DEFAULT_RUNNER, Job
from hypermeta.search.study import StudySpec, best_config_of, run_study, trials_frame, tuning_cost_frame
from hypermeta.files import dataclass_from_yaml
from hypermeta.seeds import test_seeds
from hypermeta.tasks.families import make_env


@dataclass
class ComparisonSpec:
    """One comparison: tasks (with their training budgets), samplers and baselines, and the protocol."""

    name: str
    tasks: dict[str, int]
    samplers: list[str] = field(default_factory=lambda: ["tpe", "random"])
    trials: int = 30
    space: str = "schedule"
    seeds_per_trial: int = 1
    n_evals: int = N_EVALS
    eval_episodes: int = EVAL_EPISODES
    test_seeds: int = TEST_SEEDS
    pruner: str = "median"
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    best_so_far: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 30])
    storage: str = "sqlite:///studies/baselines.db"
    out_dir: str = ""
    runner: str = DEFAULT_RUNNER

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("a comparison needs at least one task (tasks: {task_id: timesteps})")
        for sampler in self.samplers:
            if sampler not in SAMPLERS:
                raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if not self.best_so_far or max(self.best_so_far) > self.trials or min(self.best_so_far) < 1:
            raise ValueError(f"best_so_far points must lie in [1, trials={self.trials}], got {self.best_so_far}")
        self.best_so_far = sorted(set(self.best_so_far) | {self.trials})
        if self.runner not in RUNNERS:
            raise ValueError(f"runner must be one of {list(RUNNERS)}, got {self.runner!r}")
        self.out_dir = self.out_dir or f"studies/reports/{self.name}"
        for task in self.tasks:
            self.study_spec(task)

    @classmethod
    def load(cls, path: str | Path) -> ComparisonSpec:
        return dataclass_from_yaml(cls, path, "comparison")

    def study_spec(self, task: str) -> StudySpec:
        return StudySpec(task, self.tasks[task], self.space, self.seeds_per_trial, self.n_evals, self.eval_episodes)

    def study_name(self, task: str, sampler: str) -> str:
        return f"{self.name}|{task}|{sampler}"

    def method(self, sampler: str, k: int) -> str:
        return f"optuna-{sampler}@{k}"

    def final_methods(self) -> list[str]:
        """The baselines and every sampler's best after all its trials: the main table's rows."""
        return list(self.baselines) + [self.method(s, self.trials) for s in self.samplers]


def check_comparison(spec: ComparisonSpec) -> None:
    """Every task id and every baseline resolves, before hours of work start."""
    for task in spec.tasks:
        make_env(task).close()
        Normalizer.for_task(task)
        for name in spec.baselines:
            if not name.startswith("study:"):
                baseline_config(name, task)


def run_comparison(spec: ComparisonSpec, workers: int = 1, progress: bool = False,
                   heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD) -> pd.DataFrame:
    """Run (or resume) every study and test run of ``spec``; write its data files and return the runs."""
    check_comparison(spec)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    studies = {}
    for task in spec.tasks:
        for sampler in spec.samplers:
            studies[task, sampler] = run_study(
                spec.study_spec(task), spec.trials, study_name=spec.study_name(task, sampler), storage=spec.storage,
                sampler=sampler, pruner=spec.pruner, workers=workers, progress=progress,
                heartbeat_interval=heartbeat_interval, grace_period=grace_period, runner=spec.runner,
                batch_size=BATCHED_STUDY_BATCH if spec.runner == "batched" else 1)
    jobs = []
    for task in spec.tasks:
        measurement = Measurement(spec.tasks[task], spec.n_evals, spec.eval_episodes)
        configs = {name: baseline_config(name, task, spec.storage) for name in spec.baselines}
        for sampler in spec.samplers:
            for k in spec.best_so_far:
                configs[spec.method(sampler, k)] = best_config_of(studies[task, sampler], k)
        for method, config in configs.items():
            jobs += [Job(task, method, config, measurement, seed) for seed in test_seeds(spec.test_seeds)]
    runs = run_jobs(jobs, RunStore(out / "runs.csv"), workers=workers, progress=progress, runner=spec.runner)
    runs.to_csv(out / "runs_by_method.csv", index=False)
    tuning_cost_frame(studies).to_csv(out / "tuning_cost.csv", index=False)
    trials_frame(studies).to_csv(out / "trials.csv", index=False)
    return runs
