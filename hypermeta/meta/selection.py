"""Model selection for meta-learner v2: leave-one-task-out cross-validation (LOTO-CV) on the training tasks.

For every method and every training task ``t``: meta-train on the other tasks, predict ``t`` zero-shot from its
features, and score the prediction with ``t``'s own measured matrix: the mean normalised score of the portfolio
configuration nearest to the prediction (Euclidean distance of codes; exact when the prediction is a portfolio
configuration). The same fold also scores ``best-fixed`` of the other tasks and records the OOD score of ``t``.

* The **CV winner** is the method with the best mean CV score over the training tasks; it is shipped.
* The **OOD threshold** is the OOD score that best separates (balanced accuracy) the folds where the winner's
  zero-shot prediction scored below best-fixed from the others; out of distribution, predict falls back to
  best-fixed. Nothing here looks at held-out tasks.

Folds are independent and stored as they finish (``cv_runs.csv``), so a killed CV resumes; ``workers`` runs
folds in parallel processes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from hypermeta.meta.data import MetaTrainConfig, TaskData
from hypermeta.parallel import distributed, pool_results

CV_COLUMNS = ["method", "task", "score", "best_fixed", "oracle", "ood_score", "nearest_distance", "disagreement",
              "code", "fingerprint"]


def fingerprint(tasks: Sequence[TaskData], cfg: MetaTrainConfig) -> str:
    """What a fold's result depends on besides its method and left-out task: every task's data and the
    settings. A fold stored under another fingerprint (fewer tasks, other data or settings) is not reused. Values
    are rounded to 9 decimals (and -0.0 counted as 0.0), so float-parsing noise (1e-14) almost never makes the same
    data another fingerprint (only a value within the noise of a rounding boundary would); the run store reads its
    floats exactly, so a re-export reproduces them."""
    h = hashlib.sha1(json.dumps({k: v for k, v in asdict(cfg).items() if k != "method"}, sort_keys=True).encode())
    for t in sorted(tasks, key=lambda t: t.task):
        h.update(t.task.encode())
        for a in (t.features, t.codes, t.objectives):
            h.update((np.round(np.asarray(a, float), 9) + 0.0).tobytes())  # + 0.0: -0.0 (noise below 0) is 0.0
    return h.hexdigest()[:16]


def portfolio_score(task: TaskData, code: np.ndarray) -> float:
    """The measured objective of the configuration of ``task`` nearest to ``code`` (in code space)."""
    d = np.linalg.norm(task.codes - np.asarray(code, float)[None], axis=1)
    return float(task.objectives[int(np.argmin(d))])


def cv_fold(tasks: Sequence[TaskData], held: int, cfg: MetaTrainConfig) -> dict:
    """One LOTO fold: train ``cfg.method`` without task ``held``, then score its zero-shot prediction there."""
    from hypermeta.meta.model import meta_train

    task = tasks[held]
    model = meta_train([t for i, t in enumerate(tasks) if i != held], cfg)
    pred = model.predict(task.features, warn=False, fallback=False)
    return {"method": cfg.method, "task": task.task, "score": portfolio_score(task, pred.code),
            "best_fixed": np.nan if model.fallback is None else portfolio_score(task, model.fallback),
            "oracle": float(task.objectives.max()), "ood_score": pred.ood_score,
            "nearest_distance": pred.nearest_distance, "disagreement": pred.disagreement,
            "code": " ".join(f"{v:.6f}" for v in pred.code)}


def _fold_job(args: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    return cv_fold(*args)


def loto_cv(tasks: Sequence[TaskData], methods: Sequence[str], cfg: MetaTrainConfig, out: str | Path | None = None,
            workers: int = 1, progress: bool = False) -> pd.DataFrame:
    """LOTO-CV of ``methods`` (each with ``cfg``, its ``method`` replaced) over ``tasks``; rows of
    :data:`CV_COLUMNS`. With ``out``, finished folds are appended there and skipped when the CV runs again on
    the same tasks and settings (:func:`fingerprint`); folds of other data stay in the file, unused."""
    tasks = list(tasks)
    if len(tasks) < 3:
        raise ValueError(f"leave-one-task-out cross-validation needs >= 3 training tasks, got {len(tasks)}")
    fp = fingerprint(tasks, cfg)
    done = pd.read_csv(out) if out is not None and Path(out).is_file() else pd.DataFrame(columns=CV_COLUMNS)
    done = done[done["fingerprint"] == fp] if "fingerprint" in done else done.iloc[:0]
    have = set(zip(done["method"], done["task"]))
    todo = [(tasks, i, replace(cfg, method=m)) for m in methods for i, t in enumerate(tasks) if (m, t.task) not in have]
    rows = [r for r in done.to_dict("records") if r["method"] in methods]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="CV folds", unit="fold")
    try:
        for row in _run_folds(todo, workers):
            row["fingerprint"] = fp
            rows.append(row)
            if out is not None:
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame([row], columns=CV_COLUMNS).to_csv(out, mode="a", header=not Path(out).is_file(),
                                                              index=False)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows, columns=CV_COLUMNS)


def _run_folds(todo: list[tuple], workers: int) -> Iterator[dict]:
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 and not distributed():
        yield from (_fold_job(args) for args in todo)
        return
    yield from (row for _, row in pool_results(_fold_job, todo, workers))


def cv_table(cv: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Per method: mean CV score over tasks, its mean paired difference to best-fixed, the share of the
    best-fixed-to-oracle gap closed (mean over tasks of the score gains / mean gap), wins over best-fixed."""
    rows = []
    for m in methods:
        sel = cv[cv["method"] == m]
        if sel.empty:
            continue
        diff = sel["score"] - sel["best_fixed"]
        gap = float((sel["oracle"] - sel["best_fixed"]).mean())
        rows.append({"method": m, "tasks": len(sel), "cv_score": float(sel["score"].mean()),
                     "minus_best_fixed": float(diff.mean()),
                     "gap_closed": float(diff.mean() / gap) if gap > 0 else np.nan,
                     "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum())})
    return pd.DataFrame(rows)


def cv_winner(cv: pd.DataFrame, methods: Sequence[str]) -> str:
    """The method with the best mean CV score (ties: the first in ``methods``); every method needs every fold."""
    table = cv_table(cv, methods)
    every = set(cv["task"])
    if len(table) != len(methods) or any(set(cv[cv["method"] == m]["task"]) != every for m in methods):
        raise ValueError("every method needs the same, complete set of CV folds before a winner is chosen")
    order = {m: i for i, m in enumerate(methods)}
    best = max(table.to_dict("records"), key=lambda r: (r["cv_score"], -order[r["method"]]))
    return str(best["method"])


def ood_threshold(scores: np.ndarray, worse: np.ndarray) -> float:
    """The OOD-score threshold (OOD iff score > threshold) with the best balanced accuracy at telling the
    ``worse`` folds (zero-shot below best-fixed) from the rest; midpoints between observed scores are the
    candidates. With one class only: 2x the largest score (never OOD) when nothing was worse, half the smallest
    (always OOD) when everything was."""
    scores, worse = np.asarray(scores, float), np.asarray(worse, bool)
    if not worse.any():
        return 2.0 * float(scores.max())
    if worse.all():
        return 0.5 * float(scores.min())
    s = np.unique(scores)
    candidates = np.concatenate([[s[0] / 2], (s[1:] + s[:-1]) / 2, [s[-1] * 2]])
    best, best_acc = candidates[0], -1.0
    for c in candidates:
        flag = scores > c
        acc = 0.5 * (flag[worse].mean() + (~flag[~worse]).mean())
        if acc > best_acc + 1e-12:
            best, best_acc = c, acc
    return float(best)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (ties count half); NaN with one class only."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return float(greater / (len(pos) * len(neg)))
