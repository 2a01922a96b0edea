"""``hypermeta tune``: a short Optuna study on a new task, warm from its first trials.

Round 0 (enqueued, evaluated first, together when the runner is batched) holds what hypermeta already knows
about the task: the meta-learner's zero-shot prediction, each ensemble member's own prediction, and the best
configurations of the nearest training tasks (duplicates dropped, at most :data:`ROUND0`). TPE then proposes
the rest with those observations in its model. The study is an ordinary resumable Optuna study; the best
trial's configuration is written as YAML (``HyperMetaCallback("best.yaml")`` applies it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hypermeta.experiments.defaults import BATCHED_STUDY_BATCH, DEFAULT_STORAGE
from hypermeta.experiments.study import StudySpec, best_config_of, finished_in_order, run_study
from hypermeta.meta.data import SPACE
from hypermeta.meta.predict import predict_config
from hypermeta.space import DQNConfig

#: At most this many round-0 candidates: the zero-shot prediction, up to 5 ensemble members and 2-3 nearest
#: training tasks' best configurations fit; more would spend the user's trial budget on guesses.
ROUND0 = 8


@dataclass
class TuneResult:
    study: optuna.Study
    best: DQNConfig
    candidates: list[tuple[str, DQNConfig]]
    trials: int
    env_steps: int
    train_seconds: float


def round0(task: str, predictor: Any = None, limit: int = ROUND0) -> list[tuple[str, DQNConfig]]:
    """The warm-start candidates for ``task`` (see the module docstring), labelled, duplicates dropped."""
    result = predict_config(task, predictor, warn=False)
    seen, out = set(), []
    for label, code in result.model.warm_start_codes(result.features):
        config = SPACE.decode(code, base=result.model.base)
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((label, config))
    return out[:limit]


def tune(task: str, trials: int, timesteps: int, *, seeds_per_trial: int = 1, runner: str = "sb3",
         storage: str = DEFAULT_STORAGE, study_name: str | None = None, predictor: Any = None,
         time_budget_minutes: float | None = None, progress: bool = False, seed: int = 0) -> TuneResult:
    """Run (or resume) the warm-started study of ``task`` until ``trials`` trials finished or the time budget
    is spent, and return its best configuration."""
    if time_budget_minutes is not None and not time_budget_minutes > 0:
        raise ValueError(f"time budget must be > 0 minutes, got {time_budget_minutes}")
    candidates = round0(task, predictor, limit=min(ROUND0, trials))
    # the study tunes the schedules over the settings the predictor's data came from (its candidates use them)
    fixed = {k: v for k, v in candidates[0][1].to_dict().items() if k not in {p.name for p in SPACE.params}}
    spec = StudySpec(task, timesteps, "schedule", seeds_per_trial, fixed=fixed)
    deadline = None if time_budget_minutes is None else time.time() + 60 * time_budget_minutes
    batch = max(len(candidates), BATCHED_STUDY_BATCH) if runner == "batched" else 1
    study = run_study(spec, trials, study_name=study_name or f"tune|{task}|T{timesteps}|m{seeds_per_trial}",
                      storage=storage, sampler="tpe", pruner="none" if runner == "batched" else "median",
                      enqueue=[c for _, c in candidates], progress=progress, runner=runner,
                      batch_size=min(batch, trials), deadline=deadline, seed=seed)
    finished = finished_in_order(study)
    return TuneResult(study, best_config_of(study), candidates, len(finished),
                      sum(t.user_attrs.get("env_steps", 0) for t in finished),
                      sum(t.user_attrs.get("wall_time", 0.0) for t in finished))


def write_best(config: DQNConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return config.save(path)
