"""The report of meta-learner v3's evaluation (``hypermeta meta-eval PLAN --render``):
``studies/reports/v3/report.md``, from the runs of :mod:`hypermeta.lab.v3` only.

The status and the deviations, then the targets (each met, missed, or not measured yet) and the shipping rule's
decision, the dated reading written after the runs (``findings.md`` beside the plan), the comparisons per family
and per held-out task, the failure rates, the v2 fallback re-test, the Q-network starts (normalised AUC and the
final evaluation separately), the secondary comparisons and the CPU spent. A method's rows appear once its step is
done; the controller's held-out runs are made only after its meta-training has ended
(:func:`hypermeta.lab.v3.run_step`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermeta.lab import v3 as lab
from hypermeta.lab.v3 import (INIT_CHOICE_SEEDS, SB3_SETTINGS_METHODS, STARTS, STEPS, TPE_METHODS, TPE_RERUNS,
                              EvaluationError, V3Evaluation)
from hypermeta.reports.common import (ci_text, generated_line, paired_diff, paired_rows, pyplot, save_figure,
                                      target_verdict, test_seed_text, versions_text, wall_hours, write_markdown)

FAILURE = 0.1  # a run below this normalised AUC has failed (the plan's definition)
SHIPPING_ONLY = ("sb3_confirmation_above_0",)  # conditions of the plan's shipping rule that are not targets
METHOD_ORDER = ("controller", "hand-rule", "base", "sb3-default", "v2-winner", "v2-winner-no-fallback",
                "v2-winner-structure-fallback", *(f"init-{s}" for s in STARTS), "init-best+controller")


@dataclass
class _Data:
    ev: V3Evaluation
    runs: pd.DataFrame
    sb3: pd.DataFrame
    tpe: pd.DataFrame
    steps: dict

    @classmethod
    def load(cls, ev: V3Evaluation) -> _Data:
        runs = _scored(ev.runs(STEPS, "engine"))
        sb3 = _scored(ev.runs(("confirm",), "sb3"))
        tpe = runs.iloc[:0]
        if ev.done("tpe"):
            stored = _scored(ev.meta2_runs)
            stored = stored[stored["method"].isin(["optuna-tpe@20", "optuna-tpe@50", "best-fixed"])
                            & stored["task"].isin(ev.tpe_tasks())]
            here = runs[runs["method"].isin(TPE_METHODS) & runs["task"].isin(ev.tpe_tasks())]
            measured = ["task", "timesteps", "n_evals", "eval_episodes"]
            if not set(map(tuple, here[measured].values)) <= set(map(tuple, stored[measured].values)):
                raise EvaluationError("the tpe step's runs are not measured as meta2's stored runs (budget, "
                                      "evaluations or episodes differ on some task): they cannot be paired")
            tpe = pd.concat([stored, here])
        return cls(ev, runs, sb3, tpe, ev.steps()["done"])


def _scored(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame["auc"].astype(float))


def render_v3_report(plan: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the plan's evaluation (as far as it has run) and return its path."""
    ev = V3Evaluation.load(plan)
    data = _Data.load(ev)
    out = Path(out) if out is not None else Path("studies/reports/v3/report.md")
    lines = [f"# Meta-learner v3: the in-run controller and the meta-learned Q-network start ({ev.plan_path})", "",
             generated_line(f"hypermeta meta-eval {ev.plan_path} --render"), "", *status_section(data), "",
             *deviations_section(ev), "", *targets_section(data), "", *shipping_section(data), "",
             *reading_section(ev), "",
             *setup_section(data), "",
             *per_family_section(data), "", *per_context_section(data), "", *failures_section(data), "",
             *fallback_section(data), "",
             *starts_section(data), "", *meta_training_section(data), "", *trajectory_section(data, out.parent), "",
             *secondary_section(data), "", *cost_section(data), ""]
    return write_markdown(out, lines)


def status_section(data: _Data) -> list[str]:
    done = [s for s in STEPS if s in data.steps]
    todo = [s for s in STEPS if s not in data.steps]
    ended, where = data.ev.meta_training_ended()
    lines = ["## Status", "", f"- Steps done: {', '.join(done) or 'none'}; to do: {', '.join(todo) or 'none'}.",
             f"- Meta-training of the controller: {'ended' if ended else 'not ended'} ({where})."]
    if todo:
        lines.append("- **Interim report**: every number below is from the steps done; a target whose runs are not "
                     "made yet reads 'not measured yet'.")
    return lines


def targets_section(data: _Data) -> list[str]:
    return ["## Targets (pre-registered in the plan)", "",
            *(f"- {t.label}: {t.text}" for key, t in target_results(data).items() if key not in SHIPPING_ONLY)]


@dataclass
class Target:
    """One pre-registered target: ``met`` is None until its runs exist; ``text`` is the verdict as reported."""
    label: str
    met: bool | None
    text: str


def _judged(label: str, d: dict | None, test: Any, seeds: int) -> Target:
    """A target judged only on every registered seed (a done step stores every run: fewer pairs mean runs are
    missing, and a verdict on them would rest on less than the plan registered)."""
    if d is not None and d["seeds"] < seeds:
        return Target(label, None, f"not measured yet (only {d['seeds']} of the {seeds} registered seeds paired)")
    return Target(label, None if d is None else bool(test(d)), target_verdict(d, test))


def target_results(data: _Data) -> dict[str, Target]:
    """Every target of the plan, keyed as the plan's shipping rule names them (``heldout_contexts``,
    ``structure_fallback``, ``heldout_family``, ``failures``, ``stretch``, ``start:FAMILY``), and
    ``sb3_confirmation_above_0`` (the SB3 confirmation's mean difference, a condition of the shipping rule)."""
    ev, runs = data.ev, data.runs
    ctx, fam = ev.context_tasks, ev.family_tasks
    above = lambda d: d["ci_low"] > 0  # noqa: E731
    family = ev.plan["evaluation"]["heldout_family"]["family"]
    n = ev.test_seeds
    results = {
        "heldout_contexts": _judged(f"{len(ctx)} new held-out contexts, controller - best-fixed > 0 with the paired "
                                    "95% CI above 0", paired_diff(runs, "controller", "best-fixed", ctx), above, n),
        "structure_fallback": _judged("the same contexts, v2-winner-structure-fallback - best-fixed, CI above 0",
                                      paired_diff(runs, "v2-winner-structure-fallback", "best-fixed", ctx), above, n),
        "heldout_family": _judged(f"held-out family ({family}), controller - best-fixed with the CI's lower bound "
                                  "above -0.03", paired_diff(runs, "controller", "best-fixed", fam),
                                  lambda d: d["ci_low"] > -0.03, n),
        "failures": _failure_target(runs, ev.held_out_tasks, n),
        "stretch": _judged("stretch, meta2's 16 held-out contexts, controller - optuna-tpe@20 with the CI above 0",
                           paired_diff(data.tpe, "controller", "optuna-tpe@20", ev.tpe_tasks()), above, n)}
    for name, tasks in ev.contexts.items():
        results[f"start:{name}"] = _start_target(data, name, tasks)
    results["sb3_confirmation_above_0"] = _judged(
        f"SB3 confirmation, controller - best-fixed > 0: the mean over every held-out task x {lab.CONFIRM_SEEDS} "
        "seeds, pooled (a condition of the plan's shipping rule, not a target)",
        paired_diff(data.sb3, "controller", "best-fixed", ev.held_out_tasks), lambda d: d["diff"] > 0, lab.CONFIRM_SEEDS)
    return results


def _failure_target(runs: pd.DataFrame, tasks: list[str], seeds: int) -> Target:
    """Judged only when both methods have every (task, seed) of the held-out tasks: the same runs on both sides."""
    label = f"fewer failed runs (normalised AUC below {FAILURE}) than best-fixed"
    runs = runs[runs["task"].isin(tasks)]
    counts = {m: int((runs.loc[runs["method"] == m, "score"] < FAILURE).sum()) for m in ("controller", "best-fixed")}
    pairs = [set(zip(runs.loc[runs["method"] == m, "task"], runs.loc[runs["method"] == m, "seed"]))
             for m in ("controller", "best-fixed")]
    if not (pairs[0] == pairs[1] and len(pairs[0]) == len(tasks) * seeds):
        return Target(label, None, "not measured yet")
    met = counts["controller"] < counts["best-fixed"]
    return Target(label, met, f"{'**met**' if met else '**missed**'} (controller {counts['controller']}, "
                              f"best-fixed {counts['best-fixed']})")


def _start_target(data: _Data, family: str, tasks: list[str]) -> Target:
    """Meta-learned start (the one chosen for the 2 x 2) - random start > 0 with the CI above 0, the final
    evaluation's difference with its lower bound above -0.03, and >= plain transfer."""
    label = f"starts, {family}"
    try:
        start = f"init-{data.ev.chosen_start()}"
    except EvaluationError:
        return Target(label, None, "not measured yet (the start is not chosen yet)")
    auc = paired_diff(data.runs, start, "best-fixed", tasks)
    final = paired_diff(data.runs.assign(score=data.runs["final_score"].astype(float)), start, "best-fixed", tasks)
    transfer = paired_diff(data.runs, start, "init-transfer", tasks)
    n = data.ev.test_seeds
    if any(d is None or d["seeds"] < n for d in (auc, final, transfer)):
        return Target(label, None, "not measured yet")
    met = auc["ci_low"] > 0 and final["ci_low"] > -0.03 and transfer["diff"] >= 0
    return Target(label, met, f"{'**met**' if met else '**missed**'}: `{start}` - random start {ci_text(auc)}; "
                              f"final evaluation {ci_text(final)}; - plain transfer (mean AUC, the target needs "
                              f">= 0) {ci_text(transfer)}")


@dataclass
class Decision:
    """What the plan's shipping rule decides: ``controller`` and each family's start are True (ship), False (do not)
    or None (a condition is not measured yet)."""
    controller: bool | None
    conditions: dict[str, Target]
    starts: dict[str, bool | None]
    start_targets: dict[str, Target]


def shipping_decision(data: _Data) -> Decision:
    """The plan's ``shipping`` rule on the targets: the controller ships if every condition it names is met; a
    family's chosen start ships where that family's start target is met."""
    results = target_results(data)
    rule = data.ev.plan.get("shipping") or {}
    names = list(rule.get("controller", []))
    unknown = [n for n in names if n not in results]
    if unknown or not names:
        raise EvaluationError(f"the plan's shipping.controller names {unknown or 'no condition'}: use some of "
                              f"{', '.join(k for k in results if not k.startswith('start:'))}")
    if rule.get("starts") != "per_family_target":
        raise EvaluationError("the plan's shipping.starts must be 'per_family_target' (the one rule implemented)")
    conditions = {n: results[n] for n in names}
    met = [c.met for c in conditions.values()]
    controller = False if False in met else (None if None in met else True)
    targets = {k.partition(":")[2]: t for k, t in results.items() if k.startswith("start:")}
    return Decision(controller, conditions, {f: t.met for f, t in targets.items()}, targets)


def shipping_section(data: _Data) -> list[str]:
    try:
        decision = shipping_decision(data)
    except EvaluationError as exc:
        return ["## Shipping (the plan's rule)", "", f"Not applicable: {exc}."]
    word = {True: "**ships**", False: "**does not ship**", None: "not decided yet"}
    lines = ["## Shipping (the plan's rule)", "",
             f"`hypermeta meta-eval {data.ev.plan_path} --ship` applies it once every step is done. The controller: "
             f"{word[decision.controller]} (every condition must be met):", ""]
    lines += [f"- `{name}`: {t.text}" for name, t in decision.conditions.items()]
    lines += ["", "A family's chosen start ships where its start target is met:", ""]
    lines += [f"- {family}: {word[ship]}" for family, ship in decision.starts.items()]
    return lines


def deviations_section(ev: V3Evaluation) -> list[str]:
    path = ev.root / "deviations.md"
    body = path.read_text().strip().splitlines() if path.is_file() else ["None so far."]
    return ["## Deviations from the plan", "", *body]


def reading_section(ev: V3Evaluation) -> list[str]:
    """What the numbers say, written by hand after the runs (``findings.md`` beside the plan; dated entries)."""
    path = ev.root / "findings.md"
    if not path.is_file():
        return []
    return ["## Reading (written after the runs; dated)", "", *path.read_text().strip().splitlines()]


def setup_section(data: _Data) -> list[str]:
    ev = data.ev
    budgets = ", ".join(f"{f} {ev.budget(ts[0]):,}" for f, ts in ev.contexts.items())
    return ["## Setup", "",
            f"- Held-out contexts: {len(ev.context_tasks)} ({', '.join(f'{len(v)} {k}' for k, v in ev.contexts.items())}; "
            f"studies/v3/contexts.yaml); held-out family: {', '.join(ev.family_tasks)} at "
            f"{ev.budget(ev.family_tasks[0]):,} steps.",
            f"- Budgets (meta2's): {budgets}; 5 evaluations of 5 greedy episodes per run; "
            f"{test_seed_text(ev.test_seeds)}, the same for every method (paired).",
            f"- Best-fixed: meta2's `{ev.problem.best_fixed_name}` over meta2's DQN settings; every start and the "
            "controller run over its schedule.",
            "- Score: normalised AUC (0 = the random policy, 1 = the family's reference return). Paired differences: "
            "mean over tasks x seeds, 95% CI by a bootstrap over tasks, then seeds within a task (rliable); MDD = the "
            "minimum difference detectable with 80% power at that CI's width.",
            f"- Rendered with {versions_text()}."]


def per_family_section(data: _Data) -> list[str]:
    ev, runs = data.ev, data.runs
    groups = {**ev.contexts, "all 40 contexts": ev.context_tasks, f"{ev.family_tasks[0]} (held-out family)":
              ev.family_tasks}
    lines = ["## Every method - best-fixed, per family", ""]
    methods = [m for m in METHOD_ORDER if m in set(runs["method"])]
    if not methods:
        return lines + ["No held-out runs yet."]
    header = "| method | " + " | ".join(groups) + " |"
    lines += [header, "|---|" + "---:|" * len(groups)]
    for m in methods:
        cells = []
        for tasks in groups.values():
            d = paired_diff(runs, m, "best-fixed", tasks)
            cells.append("-" if d is None else ci_text(d))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    means = [runs[(runs["method"] == "best-fixed") & runs["task"].isin(t)]["score"].mean() for t in groups.values()]
    lines.append("| *best-fixed's own mean* | " + " | ".join(f"{x:.3f}" for x in means) + " |")
    return lines


def per_context_section(data: _Data) -> list[str]:
    """Each held-out task: best-fixed's mean, then each controlled or started method's mean difference to it and on
    how many seeds it is above / below (where the controller wins and where it loses)."""
    ev, runs = data.ev, data.runs
    methods = [m for m in ("controller", *_chosen_start_method(ev), "init-best+controller") if m in set(runs["method"])]
    if "controller" not in methods:
        return []
    table = runs[runs["task"].isin(ev.held_out_tasks)].pivot_table(
        index=["task", "seed"], columns="method", values="score")
    lines = ["## Per held-out task: where the controller wins and loses", "",
             "Mean over the test seeds of the paired difference to best-fixed, then on how many seeds it is above / "
             "below best-fixed (ties are neither). Within a family, tasks by the controller's difference.", "",
             "| task | best-fixed | " + " | ".join(f"{m} - best-fixed" for m in methods) + " |",
             "|---|---:|" + "---:|" * len(methods)]
    for tasks in _family_groups(ev).values():
        rows = []
        for task in tasks:
            sel = table.loc[task]
            diffs = {m: (sel[m] - sel["best-fixed"]).dropna() if m in sel else pd.Series(dtype=float)
                     for m in methods}
            cells = ["-" if d.empty else f"{d.mean():+.3f} ({int((d > 0).sum())} / {int((d < 0).sum())})"
                     for d in diffs.values()]
            row = f"| {task} | {sel['best-fixed'].mean():.3f} | " + " | ".join(cells) + " |"
            rows.append((diffs["controller"].mean(), row))
        lines += [row for _, row in sorted(rows, key=lambda r: r[0])]
    return lines


def _family_groups(ev: V3Evaluation) -> dict[str, list[str]]:
    """Each training family's new contexts, then the held-out family's tasks, under their family's name."""
    return {**ev.contexts, ev.family_tasks[0]: ev.family_tasks}


def _chosen_start_method(ev: V3Evaluation) -> list[str]:
    try:
        return [f"init-{ev.chosen_start()}"]
    except EvaluationError:
        return []


def failures_section(data: _Data) -> list[str]:
    ev = data.ev
    runs = data.runs[data.runs["task"].isin(ev.held_out_tasks)]  # not the tpe step's
    if runs.empty:
        return ["## Failed runs", "", "No held-out runs yet."]
    lines = ["## Failed runs", "", f"Runs below {FAILURE} normalised AUC, per method, on all held-out tasks and on "
             f"the {len(ev.context_tasks)} contexts alone (diverged runs are scored 0 and counted; the Q-network "
             f"starts have no {ev.family_tasks[0]} start, so they compare on the contexts).", "",
             f"| method | runs | failed | share | failed on the {len(ev.context_tasks)} contexts |",
             "|---|---:|---:|---:|---:|"]
    for m in ["best-fixed", *METHOD_ORDER]:
        sel = runs[runs["method"] == m]
        if not sel.empty:
            failed = int((sel["score"] < FAILURE).sum())
            on_contexts = int((sel.loc[sel["task"].isin(ev.context_tasks), "score"] < FAILURE).sum())
            lines.append(f"| {m} | {len(sel)} | {failed} | {failed / len(sel):.1%} | {on_contexts} |")
    return lines


def fallback_section(data: _Data) -> list[str]:
    if not (data.ev.out / "predictions.csv").is_file():
        return ["## Meta-learner v2's fallback, re-tested", "", "No predictions yet."]
    preds = _with_best_fixed_flag(data.ev)
    lines = ["## Meta-learner v2's fallback, re-tested", "",
             f"The shipped v2 winner ({_shipped_method()}) on every held-out task: flagged out of distribution by its "
             "OOD score, and where each variant used best-fixed's configuration instead of its own prediction.", "",
             "| variant | tasks | flagged OOD | fell back to best-fixed | best-fixed's configuration (difference 0 by "
             "construction) |", "|---|---:|---:|---:|---:|"]
    for variant, sel in preds.groupby("variant", sort=False):
        lines.append(f"| {variant} | {len(sel)} | {int(sel['out_of_distribution'].sum())} | "
                     f"{int(sel['fallback'].sum())} | {int(sel['best_fixed'].sum())} |")
    return lines + ["", *paired_rows(data.runs, [("v2-winner-structure-fallback", "v2-winner"),
                                               ("v2-winner-no-fallback", "v2-winner")], data.ev.context_tasks),
                    "", *_fallback_verdict(data, preds)]


def _with_best_fixed_flag(ev: V3Evaluation) -> pd.DataFrame:
    """The v2 predictions, with ``best_fixed``: whether a prediction is best-fixed's own configuration."""
    best = ev.problem.base.to_dict()
    return ev.predictions.assign(best_fixed=[json.loads(c) == best for c in ev.predictions["config"]])


def _fallback_verdict(data: _Data, preds: pd.DataFrame) -> list[str]:
    """What the re-test decides (item 0 of the issue: ship the structure rule only if its target is met)."""
    ctx = data.ev.context_tasks
    rule = paired_diff(data.runs, "v2-winner-structure-fallback", "best-fixed", ctx)
    shipped = paired_diff(data.runs, "v2-winner", "best-fixed", ctx)
    if rule is None or shipped is None:
        return []
    if rule["ci_low"] > 0:
        return [f"**The structure rule's target is met** ({ci_text(rule)}): it replaces the OOD score's fallback."]
    own = int((~preds.loc[(preds["variant"] == "v2-winner") & preds["task"].isin(ctx), "best_fixed"]).sum())
    return [f"**The structure rule's target is missed** ({ci_text(rule)} against best-fixed on the 40 contexts), so "
            f"it is not shipped: the after-the-fact finding that v2's OOD fallback cost accuracy does not replicate "
            f"on new contexts. The shipped v2 winner, with its fallback, is {ci_text(shipped)} against best-fixed "
            f"there (a secondary comparison of the plan, one of several); it trains a configuration of its own on "
            f"{own} of the {len(ctx)} contexts, and best-fixed's on the others, so that difference comes from those "
            f"{own}."]


def _shipped_method() -> str:
    from hypermeta.meta.predict import load_predictor

    return load_predictor(None).method


def starts_section(data: _Data) -> list[str]:
    ev, runs = data.ev, data.runs
    choice = ev.out / "init_choice.json"
    lines = ["## Q-network starts (issue 30)", ""]
    if choice.is_file():
        c = json.loads(choice.read_text())
        per_family = "; ".join(f"{fam}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items())
                               for fam, m in c["per_family"].items())
        lines += [f"Chosen for the start x control 2 x 2 on validation runs ({len(c['tasks'])} training contexts, 2 per "
                  f"family; {INIT_CHOICE_SEEDS} seeds from {c['seeds'][0]:,}): **{c['chosen']}**. Mean score "
                  + ", ".join(f"{k} {v:.3f}" for k, v in c["means"].items()) + f" ({per_family}). These scores use "
                  "meta2's normalisation of training tasks (AUC over the task's best portfolio mean in meta2's "
                  "matrix, as the controller's validation), not this report's.", ""]
    lines += ["Under best-fixed's schedule; the random start is best-fixed itself. Normalised AUC, then the final "
              "evaluation's score (a head start that ends lower is a loss of plasticity).", "",
              "| start - random start | " + " | ".join(ev.contexts) + " |", "|---|" + "---:|" * len(ev.contexts)]
    for s in STARTS:
        for label, frame in (("AUC", runs), ("final", runs.assign(score=runs["final_score"].astype(float)))):
            cells = [paired_diff(frame, f"init-{s}", "best-fixed", tasks) for tasks in ev.contexts.values()]
            lines.append(f"| {s} ({label}) | " + " | ".join("-" if d is None else ci_text(d) for d in cells) + " |")
    return lines


def trajectory_section(data: _Data, folder: Path) -> list[str]:
    """The lr and epsilon the controller chose on a few held-out tasks, beside best-fixed's schedules (a plot)."""
    path = data.ev.out / "trajectories.csv"
    lines = ["## What the controller chose", ""]
    if not path.is_file():
        return lines + ["Not run yet (the `trajectories` step follows the controller's held-out runs)."]
    frame = pd.read_csv(path)
    tasks = list(dict.fromkeys(frame["task"]))
    plt = pyplot()
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.6 * len(tasks), 5.2), squeeze=False)
    for col, task in enumerate(tasks):
        sel = frame[frame["task"] == task]
        for row, (name, log) in enumerate((("lr", True), ("eps", False))):
            ax = axes[row][col]
            ax.plot(sel["step"], sel[f"base_{name}"], "--", color="grey", label="best-fixed")
            ax.plot(sel["step"], sel[name], color="C0", label="controller")
            ax.set_yscale("log" if log else "linear")
            ax.set_title(task if row == 0 else "", fontsize=7)
            ax.set_xlabel("environment steps" if row == 1 else "")
        axes[0][0].set_ylabel("learning rate")
        axes[1][0].set_ylabel("epsilon")
    axes[0][-1].legend(fontsize=7)
    folder.mkdir(parents=True, exist_ok=True)
    save_figure(fig, folder / "trajectories.png")
    record = data.steps.get("trajectories", {})
    differ = record.get("differ_from_stored", [])
    same = (f"On {len(tasks) - len(differ)} of the {len(tasks)} tasks the re-run's curve is the stored run's; on "
            f"{', '.join(differ)} it is not, the re-run being made on another platform ({record.get('platform')}) "
            "than the stored run: an equally valid run of the same job, not the same one."
            if differ else "No re-run's curve differs from its stored run's.")
    return lines + ["The learning rate and epsilon in force along one run (test seed 10,000,000) on the first context of "
                    "each family and the held-out family's default context, beside best-fixed's schedules (the "
                    "controller's runs trained again: the run store keeps curves, not control logs). " + same, "",
                    "![lr and epsilon chosen by the controller](trajectories.png)"]


def secondary_section(data: _Data) -> list[str]:
    ev, runs = data.ev, data.runs
    lines = ["## Secondary comparisons", "", "### The 2 x 2: start x control (40 contexts)", "",
             *paired_rows(runs, _two_by_two(ev), ev.context_tasks),
             "", f"### Under SB3's default DQN settings ({len(ev.sb3_settings_tasks())} contexts)", "",
             *paired_rows(runs, [(SB3_SETTINGS_METHODS[0], m) for m in SB3_SETTINGS_METHODS[1:]],
                          ev.sb3_settings_tasks()),
             "", "### Against Optuna TPE on meta2's 16 held-out contexts (meta2's TPE test runs)", "",
             *paired_rows(data.tpe, [("controller", "optuna-tpe@20"), ("controller", "optuna-tpe@50"),
                                     ("controller", "best-fixed")], ev.tpe_tasks()),
             "", *_tpe_rerun_lines(data),
             "", f"### SB3 confirmation ({lab.CONFIRM_SEEDS} seeds, the SB3 runner)", "",
             *paired_rows(data.sb3, [("controller", "best-fixed")], ev.held_out_tasks),
             *_confirmation_by_family(data)]
    return lines


def _confirmation_by_family(data: _Data) -> list[str]:
    """Controller - best-fixed per family in the SB3 runner beside the engine's on the same tasks and seeds
    (descriptive: the plan's condition is the pooled mean above)."""
    ev = data.ev
    if data.sb3.empty:
        return []
    pairs = data.sb3[["task", "seed"]].drop_duplicates()
    engine = data.runs.merge(pairs, on=["task", "seed"])  # the engine's runs of the SB3 runner's (task, seed)s
    groups = {"all held-out tasks": ev.held_out_tasks, **_family_groups(ev)}
    lines = ["", "Per family (descriptive, not a target), and the engine's difference on the same tasks and seeds:", "",
             "| tasks | SB3 runner | engine, same tasks x seeds |", "|---|---:|---:|"]
    for label, tasks in groups.items():
        cells = [paired_diff(frame, "controller", "best-fixed", tasks) for frame in (data.sb3, engine)]
        lines.append(f"| {label} ({len(tasks)}) | " + " | ".join("-" if d is None else ci_text(d) for d in cells)
                     + " |")
    return lines


def _tpe_rerun_lines(data: _Data) -> list[str]:
    """The same comparisons against the stored configurations trained again on this machine (a deviation dated
    2026-12-06: meta2's runs are not bit-identical to this machine's), and the reproduction check behind it."""
    info = data.steps.get("tpe", {}).get("reproduced")
    check = ""
    if info:
        check = (f" Reproduction check before the step: best-fixed on seed {info['seed']:,} of one task per family, "
                 f"trained again, gave meta2's stored curve on {info['identical']} of {len(info['tasks'])} tasks.")
    return ["The same configurations and seeds trained again on the step's machine (each pair on one machine; "
            "planned because meta2's stored runs did not reproduce on an earlier session's CPU, deviations "
            "2026-12-06 19:55):" + check, "",
            *paired_rows(data.tpe, [("controller", m) for m in TPE_RERUNS], data.ev.tpe_tasks())]


def _two_by_two(ev: V3Evaluation) -> list[tuple[str, str]]:
    """{random, chosen start} x {best-fixed's schedule, the controller}: each cell against the others."""
    chosen = _chosen_start_method(ev)
    if not chosen:
        return [("init-best+controller", "best-fixed"), ("init-best+controller", "controller")]
    start = chosen[0]
    return [("controller", "best-fixed"), (start, "best-fixed"), ("init-best+controller", "best-fixed"),
            ("init-best+controller", "controller"), ("init-best+controller", start)]


def meta_training_section(data: _Data) -> list[str]:
    """Every validation check of the controller's meta-training: the difference it was selected on (meta2's
    normalisation) and, per family, the difference in plain normalised AUC, which shows what drives it."""
    from hypermeta.engine.pipeline import RunStore
    from hypermeta.lab.control_training import VALIDATION_SEED_START

    state, problem, settings = data.ev.es_state(), data.ev.problem, data.ev.es_settings
    if state is None:
        return ["## Meta-training", "", "Not started."]
    tasks = problem.validation_tasks(settings)
    seeds = [VALIDATION_SEED_START + j for j in range(settings.validation_seeds)]
    store = RunStore(data.ev.root / "controller" / "es_runs.csv")
    lines = ["## Meta-training: the validation checks", "",
             f"{len(tasks)} validation tasks (training contexts) x {len(seeds)} seeds, the current theta against zero "
             "(best-fixed), paired. The candidate is the check with the highest difference in meta2's normalisation "
             "(the plan's rule); that normalisation divides by the task's best portfolio mean, which is small on "
             "MountainCar, so one MountainCar run can dominate it: the per-family columns give plain normalised AUC.",
             "", "| after generation | theta - zero (meta2's normalisation, s.e.) | "
             + " | ".join(problem.families) + " |", "|---:|---:|" + "---:|" * len(problem.families)]
    for check in state.validation:
        cells = []
        for family in problem.families:
            d = []
            for task in (t for t in tasks if t.partition(":")[0] == family):
                for seed in seeds:
                    a = store.get(problem.job(task, "theta", np.asarray(check["theta"]), seed))
                    b = store.get(problem.job(task, "zero", np.zeros(problem.size()), seed))
                    if a is not None and b is not None:
                        d.append(float(a["auc"]) - float(b["auc"]))
            cells.append(f"{np.mean(d):+.3f}" if d else "-")
        lines.append(f"| {check['generation']} | {check['mean_difference']:+.3f} ({check['se_difference']:.3f}) | "
                     + " | ".join(cells) + " |")
    return lines


def cost_section(data: _Data) -> list[str]:
    state = data.ev.es_state()
    es = state.cpu_seconds / 3600 if state is not None else 0.0
    return ["## CPU spent", "",
            f"- Controller meta-training: {es:.2f} CPU-hours (the runs' own time, one torch thread each).",
            *_starts_cost(data.ev),
            f"- Held-out runs{'' if 'confirm' in data.steps else ' so far'}: engine {wall_hours(data.runs):.2f} h, "
            f"SB3 {wall_hours(data.sb3):.2f} h (summed per-run wall time of the distinct runs)."]


def _starts_cost(ev: V3Evaluation) -> list[str]:
    """The Q-network starts' training time, from their manifests (``cpu_seconds``), per method."""
    spent: dict[str, float] = {}
    for method in STARTS:
        for family in ev.plan["init_starts"]["families"]:
            manifest = Path(ev.plan["init_starts"]["out"]) / f"{family}-{method}.json"
            if manifest.is_file():
                spent[method] = spent.get(method, 0.0) + float(json.loads(manifest.read_text()).get("cpu_seconds", 0))
    if not spent:
        return []
    return [f"- Q-network starts ({len(ev.plan['init_starts']['families'])} families): {sum(spent.values()) / 60:.0f} "
            "CPU-minutes (" + ", ".join(f"{m} {v / 60:.0f}" for m, v in spent.items()) + ")."]
