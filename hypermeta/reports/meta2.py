"""The meta-learner v2 report (``hypermeta meta2 report PLAN`` -> ``studies/reports/meta2/report.md``), rendered
from the plan's files only: the calibration/deviation log, ``cv_runs.csv`` + ``selection.json`` (model
selection), the matrix (oracles), ``heldout/runs.csv``, ``heldout/runs_sb3.csv`` and ``heldout/predictions.csv``.

Scores are per-task normalised like the training data (1 = the task's best portfolio mean in its own matrix,
0 = the random policy). The primary statistics are paired differences over tasks x test seeds with a bootstrap
CI that resamples tasks and seeds, and the minimum detectable difference at 80% power.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hypermeta.experiments.matrix import MatrixPlan, matrix_scores
from hypermeta.experiments.meta2 import TPE_BEST_OF, Paths, heldout_scores, score_array
from hypermeta.experiments.pipeline import RunStore, iqm_with_ci, paired_difference
from hypermeta.meta.data import SPACE
from hypermeta.meta.selection import auroc, cv_table, portfolio_score
from hypermeta.reports.common import generated_line, iqm_text, test_seed_text, write_markdown
from hypermeta.space import DQNConfig


class _Data:
    def __init__(self, plan: MatrixPlan) -> None:
        paths = Paths.of(plan)
        self.plan = plan
        self.selection = json.loads(paths.selection.read_text())
        self.winner = self.selection["winner"]
        self.cv = pd.read_csv(paths.cv)
        excluded = paths.heldout / "excluded.json"
        self.excluded = json.loads(excluded.read_text()) if excluded.is_file() else {}
        self.contexts = [t for t in plan.heldout_contexts if t not in self.excluded]
        self.family = [t for t in plan.heldout_family if t not in self.excluded]
        tasks = self.contexts + self.family
        self.matrix = matrix_scores(plan, RunStore(plan.runs_path).frame(), tasks)  # read once, used thrice
        self.runs = heldout_scores(plan, pd.read_csv(paths.heldout / "runs_by_method.csv"), tasks, self.matrix)
        sb3 = paths.heldout / "runs_sb3_by_method.csv"
        self.sb3 = heldout_scores(plan, pd.read_csv(sb3), tasks, self.matrix) if sb3.is_file() else None
        self.preds = pd.read_csv(paths.heldout / "predictions.csv")
        self.calibration = paths.root / "calibration.md"


def render_meta2_report(plan: MatrixPlan, out: str | Path | None = None) -> Path:
    data = _Data(plan)
    out = Path(out or "studies/reports/meta2/report.md")
    lines = ["# Meta-learner v2: zero-shot schedules on held-out tasks", "",
             generated_line(f"hypermeta meta2 report {plan.path}"), ""]
    for section in (targets_section, deviations_section, selection_section, primary_section, iqm_section, prediction_section,
                    ood_section, confirmation_section):
        lines += section(data) + [""]
    return write_markdown(out, lines)


def deviations_section(data: _Data) -> list[str]:
    lines = ["## Deviations from the plan", "",
             f"The plan (`{data.plan.path}`) was committed before any of its data. Changes since, in order:", ""]
    if data.calibration.is_file():
        lines += [f"> {line}" if line else ">" for line in data.calibration.read_text().splitlines()[1:]]
    missing = data.selection.get("incomplete_tasks", [])
    if missing:
        lines += ["", f"- **The model selection ran on an incomplete training matrix** (`--allow-incomplete`): "
                  f"{len(missing)} of the plan's training tasks had missing runs and were not in the CV, nor in the "
                  "shipped weights' data. The plan selects on all of them: this is not the pre-registered result."]
    lines += ["", f"- Cross-validation folds train ensembles of {data.selection['cv_ensemble']} member(s) (the plan "
              "does not fix it; the shipped weights have 5)."]
    lines += [f"- Left out: `{t}`: no portfolio configuration beat the random policy there (best mean normalised "
              f"AUC {v:.3f}), so it cannot be normalised." for t, v in data.excluded.items()]
    diverged = int(data.runs["curve"].astype(str).str.startswith('"diverged').sum())
    lines.append(f"- {diverged} test run(s) diverged; each is scored as the random policy (0).")
    return lines


def selection_section(data: _Data) -> list[str]:
    table = cv_table(data.cv[data.cv["task"].isin(data.selection["tasks"])], data.selection["methods"])
    lines = ["## Model selection (leave-one-task-out CV on the training tasks)", "",
             f"{len(data.selection['tasks'])} training tasks; CV score = the left-out task's matrix mean of the "
             "portfolio configuration nearest to the zero-shot prediction.", "",
             "| method | CV score | minus best-fixed | gap to oracle closed | wins / losses | OOD threshold |",
             "|---|---:|---:|---:|---|---:|"]
    for r in table.itertuples():
        gap = "-" if np.isnan(r.gap_closed) else f"{r.gap_closed:.0%}"
        lines.append(f"| {r.method}{' (winner)' if r.method == data.winner else ''} | {r.cv_score:.3f} | "
                     f"{r.minus_best_fixed:+.3f} | {gap} | {r.wins} / {r.losses} | "
                     f"{data.selection['ood_thresholds'][r.method]:.2f} |")
    return lines


def _paired_rows(runs: pd.DataFrame, pairs: list[tuple[str, str]], tasks: list[str]) -> list[str]:
    if not tasks:
        return ["No tasks in this group."]
    lines = ["| comparison | tasks x seeds | mean paired difference [95% CI] | MDD (80% power) |", "|---|---|---:|---:|"]
    for a, b in pairs:
        if not all(((runs["method"] == m) & (runs["task"] == t)).any() for m in (a, b) for t in tasks):
            lines.append(f"| {a} - {b} | missing runs | - | - |")
            continue
        d = paired_difference(score_array(runs, a, tasks), score_array(runs, b, tasks))
        verdict = "**above 0**" if d["ci_low"] > 0 else ("**below 0**" if d["ci_high"] < 0 else "includes 0")
        lines.append(f"| {a} - {b} | {d['tasks']} x {d['seeds']} | {d['diff']:+.3f} [{d['ci_low']:+.3f}, "
                     f"{d['ci_high']:+.3f}] ({verdict}) | {d['mdd']:.3f} |")
    return lines


def _diff(runs: pd.DataFrame, a: str, b: str, tasks: list[str]) -> dict | None:
    if not tasks or not all(((runs["method"] == m) & (runs["task"] == t)).any() for m in (a, b) for t in tasks):
        return None
    return paired_difference(score_array(runs, a, tasks), score_array(runs, b, tasks))


def targets_section(data: _Data) -> list[str]:
    """The plan's targets, each met / missed / not measurable yet, first in the report."""
    def verdict(d: dict | None, test) -> str:
        if d is None:
            return "not measured yet"
        return (f"{'**met**' if test(d) else '**missed**'} ({d['diff']:+.3f} [{d['ci_low']:+.3f}, "
                f"{d['ci_high']:+.3f}], MDD {d['mdd']:.3f})")

    above = lambda d: d["ci_low"] > 0  # noqa: E731
    not_worse = lambda d: d["ci_high"] >= 0  # noqa: E731
    ctx, fam, runs = data.contexts, data.family, data.runs
    gap = gap_closed(runs, "winner", ctx) if _diff(runs, "oracle", "base", ctx) else float("nan")
    return ["## Targets (pre-registered)", "",
            f"- held-out contexts, winner beats best-fixed (paired CI above 0): "
            f"{verdict(_diff(runs, 'winner', 'best-fixed', ctx), above)}",
            f"- held-out contexts, winner beats base: {verdict(_diff(runs, 'winner', 'base', ctx), above)}",
            f"- closes >= 50% of the base-to-oracle gap: "
            f"{'not measured yet' if np.isnan(gap) else ('**met**' if gap >= 0.5 else '**missed**')} ({gap:.0%})",
            f"- not significantly worse than optuna-tpe@20: "
            f"{verdict(_diff(runs, 'winner', 'optuna-tpe@20', ctx), not_worse)}",
            f"- held-out family, not significantly worse than best-fixed: "
            f"{verdict(_diff(runs, 'winner', 'best-fixed', fam), not_worse)}; the winner fell back to best-fixed "
            f"on {_fallbacks(data, fam)} of {len(fam)} family task(s) (a fallback is best-fixed itself: difference 0)"]


def _fallbacks(data: _Data, tasks: list[str]) -> int:
    sel = data.preds[(data.preds["method"] == data.winner) & data.preds["task"].isin(tasks)]
    return int(sel["fallback"].astype(bool).sum())


def gap_closed(runs: pd.DataFrame, method: str, tasks: list[str]) -> float:
    """Share of the base-to-oracle gap closed: mean(method - base) / mean(oracle - base) over tasks x seeds."""
    m, base, oracle = (score_array(runs, x, tasks) for x in (method, "base", "oracle"))
    gap = float((oracle - base).mean())
    return float((m - base).mean() / gap) if gap > 0 else float("nan")


def primary_section(data: _Data) -> list[str]:
    rivals = [("winner", "best-fixed"), ("winner", "base")] + [("winner", f"optuna-tpe@{k}") for k in TPE_BEST_OF]
    runs = data.runs
    lines = ["## Primary: paired differences on the held-out contexts", "",
             f"Winner = `{data.winner}` (zero-shot, OOD fallback on). {test_seed_text(data.plan.test_seeds)} per "
             "task, the same for every method; CI: bootstrap over tasks and seeds (rliable, task_bootstrap).", ""]
    lines += _paired_rows(runs, rivals, data.contexts)
    lines += ["", f"Share of the base-to-oracle gap closed by the winner: {gap_closed(runs, 'winner', data.contexts):.0%}.",
              "", "## Held-out family", ""]
    lines += _paired_rows(runs, [("winner", "best-fixed"), ("winner", "base")], data.family)
    return lines


def iqm_section(data: _Data) -> list[str]:
    methods = list(dict.fromkeys(data.runs["method"]))
    table = iqm_with_ci({m: score_array(data.runs, m, data.contexts) for m in methods})
    lines = ["## Every method on the held-out contexts", "", iqm_text() + "; scores normalised per task.", "",
             "| method | IQM [95% CI] | runs |", "|---|---:|---:|"]
    lines += [f"| {r.method} | {r.iqm:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.runs} |"
              for r in table.sort_values("iqm", ascending=False).itertuples()]
    return lines


def _oracle(data: _Data, task: str) -> DQNConfig:
    sel = data.matrix[data.matrix["task"] == task]
    return DQNConfig.from_dict(json.loads(sel.loc[sel["score"].idxmax(), "config"]))


def prediction_section(data: _Data) -> list[str]:
    lines = ["## Predictions against each task's oracle", "",
             "| task | predicted lr / eps fraction | oracle lr / eps fraction | code distance | fallback |",
             "|---|---|---|---:|---|"]
    rows = []
    for r in data.preds[data.preds["method"] == data.winner].itertuples():
        pred, oracle = DQNConfig.from_dict(json.loads(r.config)), _oracle(data, r.task)
        dist = float(np.linalg.norm(SPACE.encode(pred) - SPACE.encode(oracle)))
        rows.append((r.task.split(":")[0], pred.lr_initial, oracle.lr_initial, pred.eps_fraction, oracle.eps_fraction))
        lines.append(f"| {r.task} | {pred.lr_initial:.2g} / {pred.eps_fraction:.2f} | {oracle.lr_initial:.2g} / "
                     f"{oracle.eps_fraction:.2f} | {dist:.2f} | {'yes' if r.fallback else 'no'} |")
    frame = pd.DataFrame(rows, columns=["family", "lr", "lr_oracle", "frac", "frac_oracle"])
    lines += ["", "Spearman correlation of predicted and oracle values across a family's held-out tasks:", ""]
    for fam, g in frame.groupby("family"):
        if len(g) >= 3:
            lines.append(f"- {fam} ({len(g)} tasks): lr {g['lr'].corr(g['lr_oracle'], method='spearman'):+.2f}, "
                         f"eps fraction {g['frac'].corr(g['frac_oracle'], method='spearman'):+.2f}")
    return lines


def ood_section(data: _Data) -> list[str]:
    """How well the OOD score flags held-out tasks where the raw zero-shot prediction is worse than best-fixed
    (both looked up in the task's own matrix, as in CV)."""
    from hypermeta.meta.data import TaskData

    scores, worse = [], []
    fixed = data.preds[data.preds["method"] == "best-fixed"].set_index("task")["config"]
    for r in data.preds[data.preds["method"] == data.winner].itertuples():
        sel = data.matrix[data.matrix["task"] == r.task]
        codes = np.stack([SPACE.encode(DQNConfig.from_dict(json.loads(c))) for c in sel["config"]])
        task = TaskData(r.task, np.zeros(1), codes, sel["score"].to_numpy())
        raw = portfolio_score(task, SPACE.encode(DQNConfig.from_dict(json.loads(r.raw_config))))
        bf = portfolio_score(task, SPACE.encode(DQNConfig.from_dict(json.loads(fixed[r.task]))))
        scores.append(r.ood_score)
        worse.append(raw < bf)
    threshold = data.selection["ood_thresholds"][data.winner]
    flagged = np.array(scores) > threshold
    return ["## Calibrated OOD", "",
            f"AUROC of the OOD score for \"zero-shot worse than best-fixed\" over the {len(scores)} held-out tasks: "
            f"{auroc(np.array(scores), np.array(worse)):.2f} ({int(np.sum(worse))} worse); the CV threshold "
            f"{threshold:.2f} flags {int(flagged.sum())} task(s), of which {int((flagged & np.array(worse)).sum())} "
            "were worse."]


def confirmation_section(data: _Data) -> list[str]:
    lines = ["## Confirmation with the SB3 runner", ""]
    if data.sb3 is None:
        return lines + ["Not run yet."]
    return lines + _paired_rows(data.sb3, [("winner", "best-fixed"), ("winner", "base")], data.contexts + data.family)
