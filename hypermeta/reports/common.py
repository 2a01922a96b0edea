"""What every report renderer shares: number formats, the protocol sentences, aggregates, plots and files.

Renderers only read runs (and the small data files the run stage writes beside them) and a spec; every
number and setting in their text comes from those, never typed in as prose.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hypermeta.engine.measurement import Measurement, Normalizer
from hypermeta.engine.pipeline import (BOOTSTRAP_REPS, PAIRED_REPS, common_seeds, paired_difference, paired_scores,
                                       summarize)
from hypermeta.seeds import TEST_SEED_START


def fmt_ci(row: Any, key: str = "") -> str:
    """``iqm [low, high]`` of an aggregate row (columns ``iqm``/``ci_low``/``ci_high``, optionally suffixed)."""
    sfx = f"_{key}" if key else ""
    return f"{row['iqm' + sfx]:.3f} [{row['ci_low' + sfx]:.3f}, {row['ci_high' + sfx]:.3f}]"


def versions_text() -> str:
    """The packages and machine this report was rendered with (runs may come from other machines)."""
    import os
    import platform

    import gymnasium
    import optuna
    import stable_baselines3
    import torch

    return (f"Python {platform.python_version()}, torch {torch.__version__}, stable-baselines3 "
            f"{stable_baselines3.__version__}, gymnasium {gymnasium.__version__}, optuna {optuna.__version__}; "
            f"{platform.machine()}, {os.cpu_count() or 1} CPUs")


def wall_hours(frame: pd.DataFrame | None) -> float:
    """Summed per-run wall time of the distinct runs in ``frame``, in hours (an upper bound on CPU time when
    several processes shared the cores)."""
    if frame is None or "wall_time" not in frame:
        return float("nan")
    key = [c for c in ("task", "config_key", "seed", "timesteps") if c in frame]
    return float(frame.drop_duplicates(key)["wall_time"].sum()) / 3600


def generated_line(command: str) -> str:
    return f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `{command}`."


def test_seed_text(n: int) -> str:
    return f"{n} test seeds ({TEST_SEED_START:,}..{TEST_SEED_START + n - 1:,})"


test_seed_text.__test__ = False  # type: ignore[attr-defined]


def score_text(n_evals: int, eval_episodes: int) -> str:
    return (f"normalised AUC = mean over {n_evals} evenly spaced greedy evaluations of {eval_episodes} episodes of "
            "(R - R_random) / (R_reference - R_random), R_reference = the env's reward_threshold")


def iqm_text() -> str:
    return (f"IQM over all runs × tasks with 95% stratified bootstrap CI (rliable, {BOOTSTRAP_REPS:,} "
            "resamples)")


def aggregate(runs: pd.DataFrame, methods: Sequence[str], tasks: Sequence[str], metric: str = "auc") -> pd.DataFrame:
    """IQM with CI per method over ``tasks`` (methods missing on a task are left out)."""
    present = [m for m in methods if all(((runs["task"] == t) & (runs["method"] == m)).any() for t in tasks)]
    return summarize(runs, present, tasks, metric)


def seed_shortfall_line(runs: pd.DataFrame, test_seeds: int) -> list[str]:
    """A deviation line when some (method, task) pair has fewer than the plan's ``test_seeds`` seeds."""
    counts = runs.groupby(["method", "task"])["seed"].nunique()
    short = counts[counts < test_seeds]
    if not len(short):
        return []
    (method, task), n = short.index[0], int(short.iloc[0])
    return [f"- **Fewer test seeds than the plan's {test_seeds}** for {len(short)} (method, task) pair(s), e.g. "
            f"{method} on `{task}` ({n})."]


def diverged_line(runs: pd.DataFrame, name: str = "test") -> list[str]:
    """How many distinct runs diverged (a run shared by several method labels counts once)."""
    if "curve" not in runs:
        return []
    distinct = runs.drop_duplicates(["task", "config_key", "seed"]) if "config_key" in runs else runs
    diverged = int(distinct["curve"].astype(str).str.startswith('"diverged').sum())
    return [f"- {diverged} of {len(distinct)} distinct {name} run(s) diverged; each is scored as the random policy (0)."]


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def plot_learning_curves(runs: pd.DataFrame, tasks: dict[str, Measurement], methods: Sequence[str], path: Path) -> None:
    """Mean ± s.e. normalised evaluation return over training, one panel per task."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, (task, measurement) in zip(axes[0], tasks.items()):
        norm = Normalizer.for_task(task)
        for m in methods:
            sel = runs[(runs["task"] == task) & (runs["method"] == m)]
            curves = np.array([norm(np.array(json.loads(c))) for c in sel["curve"]])
            mean, sem = curves.mean(0), curves.std(0) / np.sqrt(len(curves))
            ax.plot(measurement.eval_steps, mean, marker="o", ms=3, label=m)
            ax.fill_between(measurement.eval_steps, mean - sem, mean + sem, alpha=0.15)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("environment steps")
    axes[0][0].set_ylabel("normalised return (mean ± s.e.)")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path)


def plot_score_distributions(runs: pd.DataFrame, methods: Sequence[str], path: Path) -> None:
    """Fraction of runs above each normalised AUC (a performance profile)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    taus = np.linspace(-0.5, 1.5, 201)
    for m in methods:
        scores = runs[runs["method"] == m]["auc"].to_numpy()
        ax.plot(taus, [(scores > t).mean() for t in taus], label=m)
    ax.set_xlabel("normalised AUC τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_markdown(path: Path, lines: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def moved_retries(study: Any, seeds_per_trial: int, first: int | None = None) -> int:
    """Retried trials of ``study`` (among its ``first`` finished ones, or all) that trained on other tuning seeds
    than the trial they retry: every retry did before 2026-11-27, when retries began to keep their seeds."""
    from hypermeta.search.study import finished_in_order, retried_trial_number
    from hypermeta.seeds import tuning_seeds

    trials = finished_in_order(study)[:first] if first is not None else study.get_trials(deepcopy=False)
    retried = [(t, retried_trial_number(t)) for t in trials]
    return sum(original is not None and t.user_attrs.get("seeds") is not None
               and t.user_attrs["seeds"] != tuning_seeds(original, seeds_per_trial) for t, original in retried)


def moved_retries_line(counts: dict[str, int], what: str) -> list[str]:
    """One deviation line for :func:`moved_retries` counts per study (nothing when there are none)."""
    moved = {k: v for k, v in counts.items() if v}
    if not moved:
        return []
    return [f"- {sum(moved.values())} retried trial(s) in {len(moved)} of the {what} trained on the tuning seeds "
            "of their own trial number, not of the trial they retry (their process had been killed and the run "
            "resumed; every retry did so before 2026-11-27, fixed since): the same configurations on other seeds."]


def tasks_with_runs(runs: pd.DataFrame, methods: tuple[str, ...], tasks: list[str]) -> list[str]:
    """Those of ``tasks`` where every one of ``methods`` has runs."""
    present = set(zip(runs["method"], runs["task"]))
    return [t for t in tasks if all((m, t) in present for m in methods)]


def ci_text(d: dict) -> str:
    verdict = "**above 0**" if d["ci_low"] > 0 else ("**below 0**" if d["ci_high"] < 0 else "includes 0")
    return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] ({verdict})"


def target_verdict(d: dict | None, test: Any) -> str:
    """A pre-registered target's verdict on a :func:`paired_diff` result: met or missed by ``test(d)``, with the
    difference, its CI and the MDD; "not measured yet" without runs."""
    if d is None:
        return "not measured yet"
    return (f"{'**met**' if test(d) else '**missed**'} ({d['diff']:+.3f} [{d['ci_low']:+.3f}, "
            f"{d['ci_high']:+.3f}], MDD {d['mdd']:.3f})")


def paired_rows(runs: pd.DataFrame, pairs: list[tuple[str, str]], tasks: list[str]) -> list[str]:
    if not tasks:
        return ["No tasks in this group."]
    lines = ["| comparison | tasks x seeds | mean paired difference [95% CI] | MDD (80% power) |", "|---|---|---:|---:|"]
    for a, b in pairs:
        d = paired_diff(runs, a, b, tasks)
        if d is None:
            lines.append(f"| {a} - {b} | missing runs | - | - |")
            continue
        lines.append(f"| {a} - {b} | {d['tasks']} x {d['seeds']} | {ci_text(d)} | {d['mdd']:.3f} |")
    return lines


def paired_diff(runs: pd.DataFrame, a: str, b: str, tasks: list[str]) -> dict | None:
    """The paired difference ``a - b`` of the ``score`` column over ``tasks`` (None when some task lacks runs of
    either method, or they share no seed)."""
    if not tasks or len(tasks_with_runs(runs, (a, b), tasks)) < len(tasks):
        return None
    if not common_seeds(runs, (a, b), tasks):
        return None
    return paired_difference(*paired_scores(runs, a, b, tasks, "score"), reps=PAIRED_REPS)
