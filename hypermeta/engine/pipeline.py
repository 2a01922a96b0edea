"""The run pipeline: ``(task, configuration, seed)`` jobs -> a runner -> stored runs -> honest aggregates.

* Test seeds come from :func:`hypermeta.seeds.test_seeds` (10,000,000 and up); tuning seeds (study trials)
  are always below them, so no configuration is ever judged on a seed it was tuned on.
* Jobs are trained by a :class:`~hypermeta.engine.runner.Runner` chosen by name (default ``sb3``).
* Each run records the normalised AUC of its evaluation curve (the study objective) and the final
  evaluation return and score; runs are stored one row per (task, configuration, seed) in a CSV that is
  appended to as runs finish, so an interrupted evaluation resumes where it stopped.
* Aggregates are the interquartile mean (IQM) over all runs of all tasks, with 95% stratified
  bootstrap confidence intervals from ``rliable`` (Agarwal et al., 2021).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from hypermeta.engine.measurement import Curve, Normalizer, check_task
from hypermeta.engine.runner import DEFAULT_RUNNER, Job, Runner, get_runner
from hypermeta.space import DQNConfig

#: Bootstrap resamples of every confidence interval except the reports' paired differences (PAIRED_REPS).
BOOTSTRAP_REPS = 2000
#: Bootstrap resamples of the reports' paired differences (their CIs decide targets): at rliable's usual 2,000 a CI
#: bound moved by about +-0.003 between bootstrap seeds, as much as the few-shot interim report's margin above 0
#: (measured 2026-11-27).
PAIRED_REPS = 20_000

RUN_COLUMNS = ["task", "method", "config_key", "seed", "timesteps", "n_evals", "eval_episodes", "auc",
               "final_return", "final_score", "wall_time", "env_steps", "curve", "config"]


def config_key(config: DQNConfig, control: str | None = None, init: str | None = None) -> str:
    """A short stable hash of a configuration (identical configurations share their runs), and of the controller
    that steers it and the Q-network start it begins from when there are (runs without either keep the keys they
    always had)."""
    data = config.to_dict()
    if control is not None:
        data["controller"] = control
    if init is not None:
        data["init"] = init
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def job_key(job: Job) -> tuple:
    """Identical runs (same task, configuration and controller, seed and measurement) share one stored row."""
    m = job.measurement
    return (job.task, config_key(job.config, job.control_key, job.init_key), job.seed, m.timesteps, m.n_evals, m.eval_episodes)


def run_row(job: Job, curve: Curve) -> dict:
    """One row of :data:`RUN_COLUMNS` for a finished job."""
    normalizer = Normalizer.for_task(job.task, job.reference)
    m = job.measurement
    return {
        "task": job.task, "method": job.method, "config_key": config_key(job.config, job.control_key, job.init_key),
        "seed": job.seed, "timesteps": m.timesteps, "n_evals": m.n_evals, "eval_episodes": m.eval_episodes,
        "auc": curve.auc(normalizer), "final_return": curve.returns[-1],
        "final_score": float(normalizer(curve.returns[-1])), "wall_time": curve.wall_time,
        "env_steps": curve.env_steps, "curve": json.dumps(curve.returns),
        "config": json.dumps(job.config.to_dict(), sort_keys=True),
    }


def diverged_row(job: Job, error: BaseException) -> dict:
    """The row of a run that diverged (non-finite loss, weights or returns): scored as the random policy
    (normalised AUC 0, final return the random policy's), its reason kept in ``curve``. Used where a failed
    configuration must still get a score, as in the performance matrix."""
    normalizer = Normalizer.for_task(job.task, job.reference)
    m = job.measurement
    return {
        "task": job.task, "method": job.method, "config_key": config_key(job.config, job.control_key, job.init_key),
        "seed": job.seed, "timesteps": m.timesteps, "n_evals": m.n_evals, "eval_episodes": m.eval_episodes, "auc": 0.0,
        "final_return": normalizer.random, "final_score": 0.0, "wall_time": 0.0, "env_steps": 0,
        "curve": json.dumps(f"diverged: {error}"), "config": json.dumps(job.config.to_dict(), sort_keys=True),
    }


class RunStore:
    """Per-seed results in a CSV, appended to as runs finish (the cache that makes evaluations resumable)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: dict[tuple, dict] = {}
        if self.path.exists():
            for row in pd.read_csv(self.path, float_precision="round_trip").to_dict("records"):  # exact floats
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

    def frame(self) -> pd.DataFrame:
        """Every stored run (one row per key, the latest if a key was written twice)."""
        return pd.DataFrame(list(self.rows.values()), columns=RUN_COLUMNS)

    def get(self, job: Job) -> dict | None:
        row = self.rows.get(job_key(job))
        return None if row is None else {**row, "method": job.method}

    def adopt(self, source: RunStore, jobs: Sequence[Job]) -> int:
        """Copy into this store the runs of ``jobs`` that ``source`` holds and this store lacks: identical jobs
        (task, configuration, seed, measurement) need not be trained twice, provided ``source``'s runs were made
        by the same runner (the caller's check). Returns how many rows were copied."""
        copied = 0
        for key in dict.fromkeys(map(job_key, jobs)):
            if key not in self.rows and key in source.rows:
                self.add(source.rows[key])
                copied += 1
        return copied


def run_jobs(jobs: Sequence[Job], store: RunStore | None = None, workers: int = 1, progress: bool = False,
             runner: str | Runner = DEFAULT_RUNNER, errors: list | None = None) -> pd.DataFrame:
    """Run every job not already in ``store`` through ``runner`` (in ``workers`` processes) and return all
    their rows, one per job (identical jobs under several method labels are trained once).

    A diverged run is raised (after the other runs are stored), unless ``errors`` is a list: then
    ``(job, error)`` is appended to it and the run is left out of the rows."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    runner = get_runner(runner)
    rows: list[dict] = []
    todo: dict[tuple, list[Job]] = {}
    for job in jobs:
        cached = store.get(job) if store is not None else None
        if cached is not None:
            rows.append(cached)
        else:
            todo.setdefault(job_key(job), []).append(job)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="test runs", unit="run")
    failed: list[tuple[Job, BaseException]] = []
    try:
        for job, curve in runner.run_many([same[0] for same in todo.values()], workers):
            if isinstance(curve, BaseException):  # a diverged run: the others are kept, then it is reported
                failed.append((job, curve))
                continue
            row = run_row(job, curve)
            if store is not None:
                store.add(row)
            rows.extend({**row, "method": j.method} for j in todo[job_key(job)])
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    if failed and errors is None:
        raise failed[0][1]
    if errors is not None:
        errors.extend(failed)
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_jobs_scoring_divergence(jobs: Sequence[Job], store: RunStore, **kwargs: Any) -> pd.DataFrame:
    """:func:`run_jobs`, but a diverged run is stored as :func:`diverged_row` (scored as the random policy, its
    reason in ``curve``) instead of raised, so the stage finishes and a rerun does not train it again. Every
    job gets a row, under its own method label."""
    failed: list[tuple[Job, BaseException]] = []
    run_jobs(jobs, store, errors=failed, **kwargs)
    for job, error in failed:
        store.add(diverged_row(job, error))
    return run_jobs(jobs, store)  # everything is stored now: only reads


def evaluate_on_test_seeds(task: str, method: str, config: DQNConfig, measurement: Any, n_seeds: int,
                           out: str | Path, *, workers: int = 1, runner: str | Runner = DEFAULT_RUNNER,
                           reference: float | None = None, progress: bool = False) -> tuple[pd.DataFrame, pd.Series]:
    """Re-train ``config`` on ``n_seeds`` test seeds (runs appended to the CSV ``out``, which resumes) and
    return the runs and their IQM normalised AUC with its 95% CI (``hypermeta evaluate``)."""
    from hypermeta.seeds import test_seeds

    check_task(task, reference)  # unknown task ids, unsupported spaces and missing references fail before training
    Normalizer.for_task(task, reference)
    jobs = [Job(task, method, config, measurement, s, reference) for s in test_seeds(n_seeds)]
    runs = run_jobs(jobs, RunStore(out), workers=workers, progress=progress, runner=runner)
    return runs, summarize(runs, [method], [task], "auc").iloc[0]


def score_matrix(runs: pd.DataFrame, method: str, tasks: Sequence[str], metric: str = "auc",
                 seeds: Sequence[int] | None = None) -> np.ndarray:
    """``(n_seeds, n_tasks)`` scores of one method, as rliable expects, seeds ascending: ``seeds`` exactly (a
    missing one is an error, so two methods' matrices pair run by run), or else the seeds every task has."""
    sel = runs[(runs["method"] == method) & runs["task"].isin(tasks)]
    if sel[metric].isna().any():  # a missing score must show, not drop its seed from every task
        raise ValueError(f"runs of method {method!r} have no {metric} (NaN) on some seeds")
    if (sel.groupby(["task", "seed"])[metric].nunique() > 1).any():
        raise ValueError(f"method {method!r} has two different {metric} values for one (task, seed)")
    sel = sel.drop_duplicates(["task", "seed"])
    present = set(sel["task"])
    absent = [t for t in tasks if t not in present]
    if absent:
        raise ValueError(f"no runs of method {method!r} on task {absent[0]!r}")
    table = sel.pivot(index="seed", columns="task", values=metric).reindex(columns=list(tasks)).astype(np.float64)
    if seeds is None:
        table = table.dropna().sort_index()
        if table.empty:
            raise ValueError(f"method {method!r} has no seed in common across the tasks")
        return table.to_numpy()
    missing = sorted(set(seeds) - set(table.dropna().index))
    if missing:
        raise ValueError(f"method {method!r} lacks seed {missing[0]} on some of the tasks")
    return table.loc[sorted(seeds)].to_numpy()


def common_seeds(runs: pd.DataFrame, methods: Sequence[str], tasks: Sequence[str]) -> list[int]:
    """The seeds that every one of ``methods`` has on every one of ``tasks`` (what paired statistics use)."""
    sets = [set(runs.loc[(runs["method"] == m) & (runs["task"] == t), "seed"]) for m in methods for t in tasks]
    return sorted(set.intersection(*sets)) if sets else []


def paired_scores(runs: pd.DataFrame, a: str, b: str, tasks: Sequence[str],
                  metric: str = "auc") -> tuple[np.ndarray, np.ndarray]:
    """``a``'s and ``b``'s ``(seeds, tasks)`` scores, paired run by run: the seeds both have on every task."""
    seeds = common_seeds(runs, (a, b), tasks)
    return score_matrix(runs, a, tasks, metric, seeds), score_matrix(runs, b, tasks, metric, seeds)


def _seeded_interval(x: np.ndarray, func: Any, reps: int, seed: int, task_bootstrap: bool = False
                     ) -> tuple[float, float, float]:
    """Point estimate and 95% percentile CI of ``func`` over a ``(runs, tasks)`` array, bootstrapped by rliable
    (stratified over tasks; ``task_bootstrap`` also resamples the tasks).

    rliable's ``StratifiedBootstrap`` draws its resamples from NumPy's *global* generator (its ``random_state``
    argument only seeds arch's unused one), so the bootstrap runs under the global generator seeded with
    ``seed`` (restored afterwards): CIs are reproducible and do not depend on what else a report computes.
    """
    from rliable import library as rly

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # rliable 1.2 passes arch's deprecated random_state
            warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
            point, ci = rly.get_interval_estimates({"x": x}, lambda v: np.array([func(v)]), reps=reps,
                                                   task_bootstrap=task_bootstrap)
    finally:
        np.random.set_state(state)
    return float(point["x"][0]), float(ci["x"][0, 0]), float(ci["x"][1, 0])


def iqm_with_ci(scores: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = 0) -> pd.DataFrame:
    """IQM and 95% stratified bootstrap CI per method (rliable); ``scores[m]`` is ``(runs, tasks)``; every
    method's bootstrap is seeded with ``seed`` (see :func:`_seeded_interval`)."""
    from rliable import metrics

    rows = []
    for method, x in scores.items():
        iqm, low, high = _seeded_interval(x, metrics.aggregate_iqm, reps, seed)
        rows.append({"method": method, "iqm": iqm, "ci_low": low, "ci_high": high, "runs": int(x.size)})
    return pd.DataFrame(rows, columns=["method", "iqm", "ci_low", "ci_high", "runs"])


#: z_{0.975} + z_{0.80}: a true difference this many standard errors from 0 is detected with 80% power by a
#: two-sided test at alpha 0.05.
MDD_Z = 1.959964 + 0.841621


def planned_mdd(task_var: float, seed_var: float, n_tasks: int, n_seeds: int) -> float:
    """The minimum detectable difference (80% power) that :func:`paired_difference` will report, planned from
    variance components of the paired differences: ``task_var`` between tasks' true means, ``seed_var`` between
    seeds within a task. Its task bootstrap resamples tasks, then seeds within each drawn task, so the seed noise
    counts twice: SE^2 ~ (n-1)/n (task_var + seed_var/k) / n + (k-1)/k seed_var / (n k)."""
    n, k = n_tasks, n_seeds
    return MDD_Z * math.sqrt((n - 1) / n * (task_var + seed_var / k) / n + (k - 1) / k * seed_var / (n * k))


def paired_difference(a: np.ndarray, b: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> dict[str, float]:
    """Mean paired difference ``a - b`` of two methods' ``(seeds, tasks)`` scores on the same tasks and test
    seeds, with a 95% bootstrap CI that resamples tasks and, within each task, seeds (rliable,
    ``task_bootstrap=True``), and the minimum detectable difference at 80% power (``MDD_Z`` bootstrap standard
    errors, the standard error read off the CI as its half-width / 1.96)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"paired scores must be two (seeds, tasks) arrays of one shape, got {a.shape} and {b.shape}")
    mean, low, high = _seeded_interval(a - b, np.mean, reps, seed, task_bootstrap=True)
    se = (high - low) / (2 * 1.959964)
    return {"diff": mean, "ci_low": low, "ci_high": high, "se": se, "mdd": MDD_Z * se,
            "tasks": int(a.shape[1]), "seeds": int(a.shape[0])}


def summarize(runs: pd.DataFrame, methods: Iterable[str], tasks: Sequence[str], metric: str = "auc",
              reps: int = BOOTSTRAP_REPS) -> pd.DataFrame:
    return iqm_with_ci({m: score_matrix(runs, m, tasks, metric) for m in methods}, reps=reps)
