"""The performance matrix of meta-learner v2 (``hypermeta matrix PLAN``): every portfolio configuration on every
training task with several seeds, as planned in a pre-registered plan file (``studies/meta2/plan.yaml``).

Runs are stored one row per (task, configuration, seed) in ``<plan dir>/matrix_runs.csv`` as they finish, so the
collection resumes where it stopped and can grow (more tasks, seeds or configurations later) without redoing
anything. Seeds are per task and disjoint from tuning and test seeds (:func:`hypermeta.seeds.matrix_seeds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hypermeta.experiments.baselines import SB3_DEFAULT, rl_zoo_config
from hypermeta.experiments.measurement import Measurement
from hypermeta.experiments.pipeline import RunStore, run_jobs
from hypermeta.experiments.runner import Job
from hypermeta.files import dataclass_from_yaml
from hypermeta.seeds import matrix_seeds
from hypermeta.space import DQNConfig, get_space
from hypermeta.tasks.families import get_family, get_task

SCHEDULE_FIELDS = tuple(p.name for p in get_space("schedule").params)


@dataclass
class MatrixPlan:
    """The parts of a meta-learner v2 plan that define the matrix (the rest of the file is read as text)."""

    name: str
    fixed: dict[str, Any]
    seed: int
    train: dict[str, int]
    heldout_contexts: list[str]
    heldout_family: list[str]
    budgets: dict[str, int]
    portfolio: dict[str, Any]
    matrix_seeds: int
    budget_ladder: list[int] = field(default_factory=list)
    calibration: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    selection: str = ""
    ood: str = ""
    test_seeds: int = 10
    compare: list[str] = field(default_factory=list)
    oracle: str = ""
    primary: str = ""
    secondary: list[str] = field(default_factory=list)
    runner: str = ""
    targets: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def __post_init__(self) -> None:
        self.base = DQNConfig.from_dict(self.fixed, source="plan `fixed`")
        for task in self.all_tasks():
            self.budget(task)
        if self.matrix_seeds < 1:
            raise ValueError(f"matrix_seeds must be >= 1, got {self.matrix_seeds}")
        overlap = set(self.train_tasks()) & set(self.heldout_contexts)
        if overlap:
            raise ValueError(f"held-out contexts {sorted(overlap)} are also training tasks")

    @classmethod
    def load(cls, path: str | Path) -> MatrixPlan:
        plan = dataclass_from_yaml(cls, path, "plan")
        plan.path = str(path)
        return plan

    @property
    def runs_path(self) -> Path:
        return Path(self.path).parent / "matrix_runs.csv"

    def train_tasks(self) -> list[str]:
        """Calibration tasks (the families' default contexts) first, then the sampled training contexts."""
        tasks = [get_task(t).id for t in self.calibration]
        for i, (fam, n) in enumerate(sorted(self.train.items())):
            for ctx in get_family(fam).sample_contexts(n, seed=self.seed + i):
                tasks.append(get_task(f"{fam}:" + ",".join(f"{k}={v:g}" for k, v in ctx.items())).id)
        return list(dict.fromkeys(tasks))

    def all_tasks(self) -> list[str]:
        return [*self.train_tasks(), *self.heldout_contexts, *self.heldout_family]

    def budget(self, task: str) -> int:
        family = get_task(task).family.name
        if family not in self.budgets:
            raise ValueError(f"plan {self.name!r}: no budget for family {family!r} (task {task!r})")
        return int(self.budgets[family])

    def portfolio_for(self, task: str) -> dict[str, DQNConfig]:
        """The shared portfolio (Sobol points and named schedules) over the fixed settings, for ``task``."""
        from scipy.stats import qmc

        space = get_space("schedule")
        codes = qmc.Sobol(space.dim, scramble=True, seed=0).random(int(self.portfolio.get("sobol", 0)))
        configs = {f"sobol-{i:02d}": space.decode(code, base=self.base) for i, code in enumerate(codes)}
        for name in self.portfolio.get("named", []):
            source = {"base": DQNConfig(), "sb3-default": SB3_DEFAULT}.get(name)
            if name == "rl-zoo":
                try:
                    source = rl_zoo_config(task)
                except ValueError:  # no rl-zoo entry for this environment (FrozenLake)
                    continue
            if source is None:
                raise ValueError(f"plan {self.name!r}: unknown named portfolio configuration {name!r}")
            configs[name] = self.base.replace(**{k: getattr(source, k) for k in SCHEDULE_FIELDS})
        return configs

    def jobs(self, tasks: list[str]) -> list[Job]:
        index = {t: i for i, t in enumerate(self.train_tasks())}
        jobs = []
        for task in tasks:
            measurement = Measurement(self.budget(task))
            for name, config in self.portfolio_for(task).items():
                jobs += [Job(task, name, config, measurement, s) for s in matrix_seeds(index[task], self.matrix_seeds)]
        return jobs


def collect_matrix(plan: MatrixPlan, runner: str = "batched", workers: int = 1, n_tasks: int | None = None,
                   progress: bool = False) -> pd.DataFrame:
    """Run (or resume) the matrix on the first ``n_tasks`` training tasks (default: all); returns its runs."""
    tasks = plan.train_tasks()[:n_tasks]
    return run_jobs(plan.jobs(tasks), RunStore(plan.runs_path), workers=workers, progress=progress, runner=runner)


def matrix_summary(runs: pd.DataFrame) -> str:
    if runs.empty:
        return "no runs yet"
    per_task = runs.groupby("task")["seed"].count()
    return (f"{len(runs)} runs on {len(per_task)} tasks ({runs['method'].nunique()} configurations; "
            f"{int(per_task.min())}-{int(per_task.max())} runs per task)")
