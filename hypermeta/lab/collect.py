"""The task distribution of the meta-learner and ``hypermeta collect``: its training data.

A task distribution (``studies/meta/tasks.yaml``) names the training tasks (contexts of several families,
sampled with a fixed seed), the held-out contexts of those families (interpolation: inside the sampling
ranges; extrapolation: outside) and a held-out family, with a training budget per family.

``hypermeta collect`` runs one resumable Optuna study per training task (all in one storage, so workers and
machines can share them) and exports every finished trial as one row of a dataset: task id, family,
task features, configuration (fields and schedule-space code), objective, final return, seeds. Raising
``trials`` later adds trials to the same studies; nothing already computed is redone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from optuna.trial import TrialState

from hypermeta.engine.defaults import BATCHED_STUDY_BATCH, DEFAULT_RUNNER, RUNNERS, TEST_SEEDS
from hypermeta.engine.defaults import EVAL_EPISODES, N_EVALS
from hypermeta.search.study import StudySpec, make_storage, run_study
from hypermeta.files import dataclass_from_yaml
from hypermeta.seeds import FEATURE_SEED
from hypermeta.space import DQNConfig, get_space
from hypermeta.tasks.features import FEATURE_NAMES, probe_features
from hypermeta.tasks.families import get_family, get_task, make_env


@dataclass
class TaskDistribution:
    """Training and held-out tasks of the meta-learner, with their budgets (see ``studies/meta/tasks.yaml``)."""

    name: str
    budgets: dict[str, int]  # family -> training steps of every run on its tasks
    train: dict[str, int]  # family -> number of training contexts, sampled with `seed`
    heldout_contexts: list[str]
    heldout_family: list[str]
    seed: int = 2026
    trials: int = 24
    sampler: str = "tpe"
    n_evals: int = N_EVALS
    eval_episodes: int = EVAL_EPISODES
    storage: str = "sqlite:///studies/meta/collect.db"
    dataset: str = "studies/meta/dataset.csv"
    extra_train: list[str] = field(default_factory=list)  # explicitly named training tasks (e.g. defaults)
    # --- the held-out evaluation (``hypermeta meta-report``) ---
    test_seeds: int = TEST_SEEDS
    best_of: list[int] = field(default_factory=lambda: [1, 5, 10, 20])  # Optuna TPE best-of-k on held-out tasks
    heldout_pruner: str = "median"
    heldout_storage: str = "sqlite:///studies/meta/heldout.db"
    weights_dir: str = "studies/meta/weights"
    report_dir: str = "studies/reports/meta"
    meta_train: dict[str, Any] = field(default_factory=dict)  # MetaTrainConfig overrides (e.g. ensemble: 3)
    target_vs_sb3_default: float = 1.3  # the report's target: best zero-shot IQM / sb3-default IQM
    runner: str = DEFAULT_RUNNER  # sb3 or batched: how every run of collect and meta-report is trained

    def __post_init__(self) -> None:
        for fam in list(self.budgets) + list(self.train):
            get_family(fam)  # unknown family names fail now, with the known ones listed
        missing = sorted({f for f in self.train} - set(self.budgets))
        if missing:
            raise ValueError(f"task distribution {self.name!r}: no budget for family(ies) {missing}")
        train_families = set(self.train) | {get_task(t).family.name for t in self.extra_train}
        for task in self.heldout_contexts:
            if get_task(task).family.name not in train_families:
                raise ValueError(f"held-out context {task!r} is not of a training family {sorted(train_families)}")
        for task in self.heldout_family:
            if get_task(task).family.name in train_families:
                raise ValueError(f"held-out family task {task!r} is of a training family; list it under "
                                 "heldout_contexts instead")
        overlap = set(self.train_tasks()) & set(self.heldout_contexts)
        if overlap:
            raise ValueError(f"held-out contexts {sorted(overlap)} are also training tasks")
        for task in self.all_tasks():
            self.budget(task)
        if self.runner not in RUNNERS:
            raise ValueError(f"runner must be one of {list(RUNNERS)}, got {self.runner!r}")
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if not self.best_of or min(self.best_of) < 1:
            raise ValueError(f"best_of must be a non-empty list of trial counts >= 1, got {self.best_of}")
        self.best_of = sorted(set(int(k) for k in self.best_of))
        from hypermeta.meta.data import MetaTrainConfig

        unknown = sorted((set(self.meta_train) - set(MetaTrainConfig.__dataclass_fields__))
                         | ({"method", "seed"} & set(self.meta_train)))
        if unknown:
            raise ValueError(f"meta_train has unknown or reserved key(s) {unknown}; valid keys are "
                             f"{sorted(set(MetaTrainConfig.__dataclass_fields__) - {'method', 'seed'})}")
        MetaTrainConfig(**self.meta_train)

    @classmethod
    def load(cls, path: str | Path) -> TaskDistribution:
        return dataclass_from_yaml(cls, path, "task distribution")

    def train_tasks(self) -> list[str]:
        tasks = list(self.extra_train)
        for i, (fam, n) in enumerate(sorted(self.train.items())):
            family = get_family(fam)
            for ctx in family.sample_contexts(n, seed=self.seed + i):
                tasks.append(get_task(f"{fam}:" + ",".join(f"{k}={v:g}" for k, v in ctx.items())).id)
        return list(dict.fromkeys(tasks))

    def heldout_tasks(self) -> list[str]:
        return [*self.heldout_contexts, *self.heldout_family]

    def all_tasks(self) -> list[str]:
        return [*self.train_tasks(), *self.heldout_tasks()]

    def budget(self, task: str) -> int:
        fam = get_task(task).family.name
        if fam not in self.budgets:
            raise ValueError(f"task distribution {self.name!r}: no budget for family {fam!r} (task {task!r})")
        return int(self.budgets[fam])

    def study_spec(self, task: str) -> StudySpec:
        return StudySpec(task, self.budget(task), "schedule", 1, self.n_evals, self.eval_episodes)

    def study_batch(self) -> int:
        return BATCHED_STUDY_BATCH if self.runner == "batched" else 1

    def study_name(self, task: str) -> str:
        return f"{self.name}|{task}"


def collect(dist: TaskDistribution, workers: int = 1, progress: bool = False, trials: int | None = None,
            tasks: list[str] | None = None) -> pd.DataFrame:
    """Run (or resume) the study of every training task, then export and return the dataset."""
    todo = dist.train_tasks() if tasks is None else tasks
    for task in todo:  # every task id resolves before hours of work start
        make_env(task).close()
    for task in todo:
        run_study(dist.study_spec(task), trials or dist.trials, study_name=dist.study_name(task),
                  storage=dist.storage, sampler=dist.sampler, pruner="none", workers=workers, progress=progress,
                  runner=dist.runner, batch_size=dist.study_batch())
    return export_dataset(dist)


def export_dataset(dist: TaskDistribution, out: str | Path | None = None) -> pd.DataFrame:
    """One row per complete trial of the training studies that exist so far; written to ``dist.dataset``."""
    import optuna

    storage = make_storage(dist.storage)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    space = get_space("schedule")
    rows: list[dict[str, Any]] = []
    for task in dist.train_tasks():
        name = dist.study_name(task)
        if name not in existing:
            continue
        study = optuna.load_study(study_name=name, storage=storage)
        feats = probe_features(task, seed=FEATURE_SEED)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            config = DQNConfig.from_dict(t.user_attrs["config"])
            row: dict[str, Any] = {"task": task, "family": get_task(task).family.name, "study": name,
                                   "trial": t.number, "seeds": json.dumps(t.user_attrs["seeds"]),
                                   "timesteps": dist.budget(task), "objective": t.value,
                                   "final_return": t.user_attrs.get("final_return")}
            row.update({f"f_{n}": v for n, v in zip(FEATURE_NAMES, feats.values)})
            row.update({f"x_{n}": v for n, v in zip(space.encoded_names, space.encode(config))})
            row.update({f"c_{k}": v for k, v in config.to_dict().items()})  # the fixed settings too (meta-train)
            rows.append(row)
    frame = pd.DataFrame(rows)
    path = Path(out or dist.dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def summary(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "no complete trials yet"
    per = frame.groupby("task")["objective"].agg(["count", "max", "median"])
    return (f"{len(frame)} complete trials on {len(per)} tasks ({frame['family'].nunique()} families); "
            f"per task: {int(per['count'].min())}-{int(per['count'].max())} trials, best objective median "
            f"{np.median(per['max']):.3f}")
