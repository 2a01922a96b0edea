"""Minimum detectable differences of meta-learner v3's evaluation, before any of its runs (EVALUATION.md), from
meta-learner v2's training matrix: `python studies/v3/power.py` writes `studies/v3/power.md`.

The v3 plan scores runs by normalised AUC (0 = random policy, 1 = the family's reference return) without meta2's
per-task rescaling (its new contexts have no matrix), so the variance components are computed on that scale: as
`studies/meta2/power.py` does, with every task's scale set to 1. A controller changes its schedules per run, so
its between-task variance against best-fixed may exceed these fixed-configuration pairs': a lower bound.
"""
from __future__ import annotations

import importlib.util
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from hypermeta.lab.matrix import MatrixPlan, _planned_runs, matrix_scores
from hypermeta.engine.pipeline import RunStore, planned_mdd

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("meta2_power", ROOT / "studies" / "meta2" / "power.py")
meta2_power = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(meta2_power)

#: (design, tasks, seeds) of the v3 plan
DESIGNS = [("new held-out contexts (primary)", 40, 10), ("held-out family", 4, 10),
           ("SB3 defaults (secondary)", 8, 10), ("SB3 confirmation", 40, 5)]


def main() -> Path:
    plan = MatrixPlan.load(ROOT / "studies" / "meta2" / "plan.yaml")
    stored = RunStore(plan.runs_path).frame()
    scores = matrix_scores(plan, stored, plan.train_tasks())
    tasks = scores.groupby("task")["best_auc"].first().index
    unit = pd.Series(1.0, index=tasks)  # normalised AUC as it is
    runs = pd.concat([_planned_runs(plan, stored, t) for t in tasks])
    everywhere = scores.groupby("method")["task"].nunique() == len(tasks)
    means = scores[scores["method"].isin(everywhere[everywhere].index)].groupby("method")["auc_mean"].mean()
    fixed = "sobol-43"  # meta2's best-fixed
    others = [m for m in means.index if m != fixed]
    rows = []
    for a, b in [(fixed, "base"), *((m, fixed) for m in others)]:
        t2, s2 = meta2_power.paired_components(runs, unit, a, b, plan.matrix_seeds)
        rows.append({"pair": f"{a} - {b}", "t2": t2, "s2": s2,
                     **{d: planned_mdd(t2, s2, n, k) for d, n, k in DESIGNS}})
    table = pd.DataFrame(rows)
    first, rest = table.iloc[0], table.iloc[1:]
    lines = ["# Meta-learner v3: minimum detectable differences, before its evaluation", "",
             f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python studies/v3/power.py`, from meta2's "
             f"training matrix ({len(tasks)} tasks, {plan.matrix_seeds} seeds per configuration), on the v3 plan's "
             "scale (normalised AUC, 1 = the family's reference return). No v3 run existed. Method: the script's "
             "docstring.", "", "Designs: " + "; ".join(f"{d}: {n} tasks x {k} seeds" for d, n, k in DESIGNS) + ".", "",
             "| pair (training matrix) | between-task var | seed var | " + " | ".join(f"MDD, {d}" for d, _, _ in DESIGNS)
             + " |", "|---|---:|---:|" + "---:|" * len(DESIGNS),
             f"| {first['pair']} (best-fixed - base) | {first['t2']:.4f} | {first['s2']:.4f} | "
             + " | ".join(f"{first[d]:.3f}" for d, _, _ in DESIGNS) + " |"]
    for q, label in ((0.5, "median"), (0.1, "10th percentile"), (0.9, "90th percentile")):
        lines.append(f"| {label} over the other {len(rest)} configurations - best-fixed | {rest['t2'].quantile(q):.4f} | "
                     f"{rest['s2'].quantile(q):.4f} | " + " | ".join(f"{rest[d].quantile(q):.3f}" for d, _, _ in DESIGNS)
                     + " |")
    lines += ["", "Reading: a method whose true advantage over best-fixed is smaller than these numbers is likely (more "
              "than 20%) to be reported with a CI that includes 0. The held-out family's column is indicative only."]
    out = Path(__file__).with_name("power.md")
    out.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    print(main())
