"""Minimum detectable differences of the held-out evaluation, computed *before* it runs (EVALUATION.md), from
the training matrix: `python studies/meta2/power.py studies/meta2/plan.yaml` writes `studies/meta2/power.md`.

For two portfolio configurations A and B, each complete training task gives paired per-seed score differences
(the matrix uses the same seeds for every configuration of a task; scores normalised as in the dataset). From
them: the within-task seed variance of a difference (s2, the mean over tasks of the per-task variance) and the
between-task variance of its true mean (t2 = variance of the per-task means - s2 / matrix seeds, at least 0).

The report's CI resamples tasks and then seeds within each drawn task (rliable's task bootstrap), which counts
the seed noise twice; its standard error for a paired mean over n tasks x k seeds is about
sqrt((n-1)/n (t2 + s2/k) / n + (k-1)/k s2 / (n k)), and the minimum detectable difference at 80% power and
two-sided 5% is (1.96 + 0.84) x that, as the report computes it (`hypermeta.engine.pipeline.planned_mdd`;
`test_the_planned_mdd_matches_the_bootstrap` checks it against `paired_difference`). A zero-shot method picks a configuration per task, so its
between-task variance against best-fixed may exceed these fixed-configuration pairs': read the numbers as a
lower bound. The family column (2 tasks) is indicative only.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from hypermeta.lab.matrix import MatrixPlan, _planned_runs, matrix_scores
from hypermeta.engine.pipeline import RunStore, planned_mdd


def paired_components(runs: pd.DataFrame, best: pd.Series, a: str, b: str, seeds: int) -> tuple[float, float]:
    """(t2, s2) of the difference a - b over the tasks in ``best`` (task -> best portfolio mean AUC)."""
    means, variances = [], []
    for task, top in best.items():
        sel = runs[runs["task"] == task]
        pa = sel[sel["method"] == a].set_index("seed")["auc"] / top
        pb = sel[sel["method"] == b].set_index("seed")["auc"] / top
        d = (pa - pb).dropna()
        means.append(d.mean())
        variances.append(d.var(ddof=1))
    s2 = float(np.mean(variances))
    return max(float(np.var(means, ddof=1)) - s2 / seeds, 0.0), s2


def mdd(t2: float, s2: float, n_tasks: int, n_seeds: int) -> float:
    return planned_mdd(t2, s2, n_tasks, n_seeds)


def main(plan_path: str) -> Path:
    plan = MatrixPlan.load(plan_path)
    stored = RunStore(plan.runs_path).frame()
    scores = matrix_scores(plan, stored, plan.train_tasks())
    best = scores.groupby("task")["best_auc"].first()
    runs = pd.concat([_planned_runs(plan, stored, t) for t in best.index])  # the plan's runs only (its budgets)
    everywhere = scores.groupby("method")["task"].nunique() == len(best)  # rl-zoo lacks FrozenLake: left out
    names = scores[scores["method"].isin(everywhere[everywhere].index)].groupby("method")["score"].mean()
    names = names.sort_values(ascending=False)
    fixed = names.index[0]  # best-fixed: the portfolio configuration with the best mean score over the tasks
    designs = [("held-out contexts (primary)", len(plan.heldout_contexts), plan.test_seeds),
               ("held-out family", len(plan.heldout_family), plan.test_seeds),
               ("SB3 confirmation, contexts", len(plan.heldout_contexts), 5)]
    pairs = {f"{fixed} (best-fixed) - base": (fixed, "base")}
    pairs.update({f"{m} - {fixed} (best-fixed)": (m, fixed) for m in names.index[1:]})
    rows = []
    for label, (a, b) in pairs.items():
        t2, s2 = paired_components(runs, best, a, b, plan.matrix_seeds)
        rows.append({"pair": label, "t2": t2, "s2": s2, **{d: mdd(t2, s2, n, k) for d, n, k in designs}})
    table = pd.DataFrame(rows)
    first, others = table.iloc[0], table.iloc[1:]
    lines = ["# Meta-learner v2: minimum detectable differences, before the held-out evaluation", "",
             f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python studies/meta2/power.py "
             f"{plan_path}`, from the {len(best)} training tasks whose matrix was complete then (of "
             f"{len(plan.train_tasks())}), over the {len(names)} portfolio configurations measured on every one of "
             "them. No held-out run existed. Method: see the script's docstring.", "",
             "Designs: " + "; ".join(f"{d}: {n} tasks x {k} seeds" for d, n, k in designs) + ".", "",
             "| pair (training matrix) | between-task var | seed var | " + " | ".join(f"MDD, {d}" for d, _, _ in designs)
             + " |", "|---|---:|---:|" + "---:|" * len(designs),
             f"| {first['pair']} | {first['t2']:.4f} | {first['s2']:.4f} | "
             + " | ".join(f"{first[d]:.3f}" for d, _, _ in designs) + " |"]
    for q, label in ((0.5, "median"), (0.1, "10th percentile"), (0.9, "90th percentile")):
        lines.append(f"| {label} over the other {len(others)} configurations - best-fixed | "
                     f"{others['t2'].quantile(q):.4f} | {others['s2'].quantile(q):.4f} | "
                     + " | ".join(f"{others[d].quantile(q):.3f}" for d, _, _ in designs) + " |")
    lines += ["", f"Per family, for {first['pair']} (the plan's analysis pools every task; this only shows where the "
              "noise comes from: a family whose best portfolio mean is small has noisy per-seed scores once "
              "normalised by it):", "", "| family | training tasks | median best portfolio mean AUC | between-task var "
              "| seed var |", "|---|---:|---:|---:|---:|"]
    for family in sorted({t.split(":")[0] for t in best.index}):
        fam = best[[t.split(":")[0] == family for t in best.index]]
        t2, s2 = paired_components(runs, fam, *pairs[first["pair"]], plan.matrix_seeds)
        lines.append(f"| {family} | {len(fam)} | {fam.median():.3f} | {t2:.4f} | {s2:.4f} |")
    lines += ["", "Reading: a zero-shot method whose true advantage over best-fixed is smaller than these numbers "
              "is likely (more than 20%) to be reported as \"includes 0\". Scores are on the per-task scale "
              "(1 = the task's best portfolio mean). The differences between configurations vary from task to "
              "task (the between-task variance), which more seeds per task cannot remove. The held-out family's "
              "column (2 tasks) is indicative only."]
    out = Path(plan.path).parent / "power.md"
    out.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "studies/meta2/plan.yaml"))
