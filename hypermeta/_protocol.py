"""The evaluation protocol: re-train chosen configurations on fresh test seeds and aggregate honestly.

* Test seeds are ``TEST_SEED_START + i`` (10,000,000 and up); tuning seeds (study trials) are always
  below it, so no configuration is ever judged on a seed it was tuned on.
* Each run records the normalised AUC of its evaluation curve (the study objective) and the final
  evaluation return and score; runs are stored one row per (task, configuration, seed) in a CSV that is
  appended to as runs finish, so an interrupted evaluation resumes where it stopped.
* Aggregates are the interquartile mean (IQM) over all runs of all tasks, with 95% stratified
  bootstrap confidence intervals from ``rliable`` (Agarwal et al., 2021).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from hypermeta._evaluation import CurveSettings, Normalizer, run_curve
from hypermeta._space import DQNConfig
from hypermeta._study import TEST_SEED_START

RUN_COLUMNS = ["task", "method", "config_key", "seed", "timesteps", "n_evals", "eval_episodes", "auc",
               "final_return", "final_score", "wall_time", "env_steps", "curve", "config"]


def seeds_for_testing(n: int) -> list[int]:
    if n < 1:
        raise ValueError(f"the number of test seeds must be >= 1, got {n}")
    return [TEST_SEED_START + i for i in range(n)]


def config_key(config: DQNConfig) -> str:
    """A short stable hash of a configuration (identical configurations share their runs)."""
    return hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Job:
    task: str
    method: str
    config: DQNConfig
    settings: CurveSettings
    seed: int
    reference: float | None = None

    @property
    def key(self) -> tuple:
        s = self.settings
        return (self.task, config_key(self.config), self.seed, s.timesteps, s.n_evals, s.eval_episodes)


def run_job(job: Job) -> dict:
    """Train and evaluate one configuration on one seed; returns a row of :data:`RUN_COLUMNS`."""
    import torch

    torch.set_num_threads(1)
    normalizer = Normalizer.for_task(job.task, job.reference)
    curve = run_curve(job.task, job.config, job.settings, job.seed)
    return {
        "task": job.task, "method": job.method, "config_key": config_key(job.config), "seed": job.seed,
        "timesteps": job.settings.timesteps, "n_evals": job.settings.n_evals,
        "eval_episodes": job.settings.eval_episodes, "auc": curve.auc(normalizer),
        "final_return": curve.returns[-1], "final_score": float(normalizer(curve.returns[-1])),
        "wall_time": curve.wall_time, "env_steps": curve.env_steps, "curve": json.dumps(curve.returns),
        "config": json.dumps(job.config.to_dict(), sort_keys=True),
    }


class RunStore:
    """Per-seed results in a CSV, appended to as runs finish (the cache that makes evaluations resumable)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: dict[tuple, dict] = {}
        if self.path.exists():
            for row in pd.read_csv(self.path).to_dict("records"):
                self.rows[self._key(row)] = row

    @staticmethod
    def _key(row: dict) -> tuple:
        return (row["task"], row["config_key"], int(row["seed"]), int(row["timesteps"]), int(row["n_evals"]),
                int(row["eval_episodes"]))

    def add(self, row: dict) -> None:
        self.rows[self._key(row)] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = not self.path.exists()
        pd.DataFrame([row], columns=RUN_COLUMNS).to_csv(self.path, mode="a", header=header, index=False)

    def get(self, job: Job) -> dict | None:
        row = self.rows.get(job.key)
        return None if row is None else {**row, "method": job.method}


def run_jobs(jobs: Sequence[Job], store: RunStore | None = None, workers: int = 1,
             progress: bool = False) -> pd.DataFrame:
    """Run every job not already in ``store`` (in ``workers`` processes) and return all their rows."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    rows: list[dict] = []
    todo: dict[tuple, list[Job]] = {}
    for job in jobs:
        cached = store.get(job) if store is not None else None
        if cached is not None:
            rows.append(cached)
        else:
            todo.setdefault(job.key, []).append(job)  # identical runs (same config, task, seed) run once
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="test runs", unit="run")

    def finish(row: dict, same: list[Job]) -> None:
        if store is not None:
            store.add(row)
        rows.extend({**row, "method": j.method} for j in same)
        if bar is not None:
            bar.update()

    try:
        if workers == 1:
            for same in todo.values():
                finish(run_job(same[0]), same)
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(run_job, same[0]): same for same in todo.values()}
                for fut in as_completed(futures):
                    finish(fut.result(), futures[fut])
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def score_matrix(runs: pd.DataFrame, method: str, tasks: Sequence[str], metric: str = "auc") -> np.ndarray:
    """``(n_seeds, n_tasks)`` scores of one method, as rliable expects (seeds in ascending order)."""
    cols = []
    for task in tasks:
        sel = runs[(runs["method"] == method) & (runs["task"] == task)].sort_values("seed")
        if sel.empty:
            raise ValueError(f"no runs of method {method!r} on task {task!r}")
        cols.append(sel[metric].to_numpy(dtype=np.float64))
    n = min(len(c) for c in cols)
    return np.stack([c[:n] for c in cols], axis=1)


def iqm_with_ci(scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """IQM and 95% stratified bootstrap CI per method (rliable); ``scores[m]`` is ``(runs, tasks)``."""
    from rliable import library as rly
    from rliable import metrics

    with warnings.catch_warnings():  # rliable 1.2 passes arch's deprecated random_state; results are unchanged
        warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
        point, ci = rly.get_interval_estimates(
            scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return pd.DataFrame(
        [{"method": m, "iqm": float(point[m][0]), "ci_low": float(ci[m][0, 0]), "ci_high": float(ci[m][1, 0]),
          "runs": int(scores[m].size)} for m in scores]
    )


def summarize(runs: pd.DataFrame, methods: Iterable[str], tasks: Sequence[str], metric: str = "auc",
              reps: int = 2000) -> pd.DataFrame:
    return iqm_with_ci({m: score_matrix(runs, m, tasks, metric) for m in methods}, reps=reps)
