"""The few-shot benchmark report (``hypermeta fewshot PLAN`` -> ``studies/reports/tune/report.md`` and
``progress.png``), rendered from the plan and the run stage's ``runs_by_method.csv`` and ``progress.csv``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from hypermeta.lab.fewshot import PROGRESS_COLUMNS, FewShotPlan, _diff, _tune, sampler_choice
from hypermeta.engine.pipeline import BOOTSTRAP_REPS, PAIRED_REPS, iqm_with_ci, paired_scores, score_matrix
from hypermeta.search.tune import round0_size
from hypermeta.reports.common import (diverged_line, generated_line, iqm_text, pyplot, save_figure, seed_shortfall_line,
                                      test_seed_text, versions_text, wall_hours, write_markdown)


def render_fewshot_report(plan: FewShotPlan, out_dir: str | Path = "studies/reports/tune") -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (plan.root / "runs_by_method.csv").is_file():
        raise ValueError(f"no task of plan {plan.name!r} has finished yet ({str(plan.root / 'runs_by_method.csv')!r} "
                         f"does not exist): run `hypermeta fewshot {plan.path}` first")
    runs = pd.read_csv(plan.root / "runs_by_method.csv")
    progress = pd.read_csv(plan.root / "progress.csv") if (plan.root / "progress.csv").is_file() else pd.DataFrame(
        columns=PROGRESS_COLUMNS)
    finished = set(runs["task"])  # the run stage writes a task's rows once all its test runs are stored
    tasks = [e["task"] for e in plan.tasks if e["task"] in finished]
    evaluation = [t for t in tasks if t not in plan.selection_tasks]
    default, choice = choose_sampler(plan, runs)
    lines = ["# Few-shot tuning: `hypermeta tune` against cold Optuna TPE", "",
             generated_line(f"hypermeta fewshot {plan.path}"), ""]
    lines += interim_lines(plan, tasks)
    lines += deviation_lines(plan, runs) + [""]
    lines += targets_lines(plan, runs, evaluation, default) + [""] + choice + [""] + setup_lines(plan, runs) + [""]
    if evaluation:
        lines += paired_lines(plan, runs, evaluation) + [""] + reference_lines(plan, runs, tasks, evaluation, default)
        lines += [""] + zero_shot_lines(plan, runs, evaluation, default)
        lines += [""] + optimism_lines(plan, runs, progress, evaluation, default) + [""]
        lines += origin_lines(plan, evaluation, default) + [""] + iqm_lines(runs, evaluation) + [""]
    lines += per_task_lines(plan, runs, tasks, default)
    if not tasks:
        return write_markdown(out_dir / "report.md", lines)
    plot_progress(progress, tasks, out_dir / "progress.png")
    lines += ["", "![best so far against environment steps](progress.png)", "",
              "Best objective so far (normalised AUC on tuning seeds, optimistic) against the environment steps the "
              "study spent, per task: cold TPE and each `tune` sampler."]
    return write_markdown(out_dir / "report.md", lines)


def interim_lines(plan: FewShotPlan, finished: list[str]) -> list[str]:
    """What an unfinished benchmark's report rests on: the tasks still to run (none: an empty list)."""
    missing = [e["task"] for e in plan.tasks if e["task"] not in finished]
    if not missing:
        return []
    n_eval = sum(t not in plan.selection_tasks for t in finished)
    return [f"**An interim report: {len(finished)} of {len(plan.tasks)} tasks have finished** ({n_eval} of "
            f"{sum(e['task'] not in plan.selection_tasks for e in plan.tasks)} evaluation tasks). Every number below "
            f"reads those only; still to run (`hypermeta fewshot {plan.path}` resumes): "
            + ", ".join(f"`{t}`" for t in missing) + ".", ""]


def choose_sampler(plan: FewShotPlan, runs: pd.DataFrame) -> tuple[str, list[str]]:
    """The default sampler as the run stage recorded it in ``choice.json`` before any evaluation task ran, or,
    for runs made without that record, chosen now by the same rule (and the report says so)."""
    path = plan.root / "choice.json"
    finished = [t for t in plan.selection_tasks if t in set(runs["task"])]
    if not path.is_file() and len(finished) < len(plan.selection_tasks):  # the run stage has not chosen yet
        best, lines = sampler_choice(plan, runs, finished)
        return best, lines + ["", f"**Provisional**: {len(finished)} of the {len(plan.selection_tasks)} selection "
                              "tasks have finished; the run stage records the choice once all have, before any "
                              "evaluation task runs."]
    if not path.is_file():
        best, lines = sampler_choice(plan, runs)
        return best, lines + ["", "(Chosen when this report was rendered: the run stage left no record of the "
                              "choice, so nothing shows it preceded the evaluation tasks' runs.)"]
    choice = json.loads(path.read_text())
    start = recording_start(plan, choice["created"])
    by = f" by the run started {start['time']} (commit `{start.get('commit') or 'unrecorded'}`)" if start else ""
    first = first_tune_trial(plan, [e["task"] for e in plan.tasks if e["task"] not in plan.selection_tasks])
    if first is None:
        note = [f"Recorded {choice['created']}{by}; no evaluation task's `tune` study has a trial yet."]
    elif f"{first:%Y-%m-%d %H:%M} UTC" == choice["created"]:
        note = [f"Recorded {choice['created']}{by}; the first trial of an evaluation task's `tune` study started in "
                f"the same minute ({first:%H:%M:%S} UTC, its storage's record): the record's minutes do not resolve "
                "which came first."]
    elif f"{first:%Y-%m-%d %H:%M} UTC" < choice["created"]:
        note = [f"**Recorded {choice['created']}{by}, after the first trial of an evaluation task's `tune` study** "
                f"(started {first:%Y-%m-%d %H:%M:%S} UTC in the storage): the rule read the selection tasks only, "
                "but the order the plan asks for was not kept."]
    else:
        note = [f"Recorded {choice['created']}{by}; the first trial of an evaluation task's `tune` study started "
                f"{first:%Y-%m-%d %H:%M:%S} UTC (its storage's record)."]
    if choice.get("evaluation_runs_existed"):
        note = ["**Recorded after some evaluation tasks' test runs already existed** (a resumed older run): the "
                "rule below read the selection tasks only, but the order the plan asks for was not kept."]
    return choice["default"], choice["lines"] + [""] + note


def first_tune_trial(plan: FewShotPlan, tasks: list[str]) -> datetime | None:
    """When the first trial of any of ``tasks``' ``tune`` studies started (UTC), or None. Optuna stores naive
    local times: this assumes the report is rendered in the time zone the trials ran in."""
    if not (plan.root / "studies.db").is_file():
        return None
    import optuna

    names = {plan.tune_study_name(t, s) for t in tasks for s in plan.samplers}
    starts = [s.datetime_start for s in optuna.get_all_study_summaries(plan.storage, include_best_trial=False)
              if s.study_name in names and s.datetime_start is not None]
    return min(starts).astimezone(timezone.utc) if starts else None


def recording_start(plan: FewShotPlan, created: str) -> dict | None:
    """The run start (``manifest.json``) whose process recorded a choice made at ``created``: the last start
    before it. (Records before 2026-11-27 05:40 UTC name the repository's commit at that moment, which a
    long run may not be running.)"""
    path = plan.root / "manifest.json"
    starts = json.loads(path.read_text())["starts"] if path.is_file() else []
    before = [s for s in starts if s["time"] <= created]  # "YYYY-MM-DD HH:MM UTC" sorts as text
    return before[-1] if before else None


def deviation_lines(plan: FewShotPlan, runs: pd.DataFrame) -> list[str]:
    """First in the report: what the run record says about how the runs were made, and what departs from the
    plan (its own dated notes are in the plan file's comments)."""
    from hypermeta.lab.fewshot import run_fingerprint

    lines = ["## Deviations and the run record", "", f"The plan's own dated notes are in `{plan.path}`."]
    path = plan.root / "manifest.json"
    if not path.is_file():
        lines.append("- **No run record** (`manifest.json`): these runs predate it; nothing shows which plan, "
                     "weights or workers made them.")
    else:
        manifest = json.loads(path.read_text())
        starts = manifest["starts"]
        lines.append(f"- Run in {len(starts)} start(s): " + "; ".join(
            f"{s['time']}, {s['workers']} worker(s), commit `{s.get('commit') or 'unrecorded'}`"
            + (f", only {s['only']}" if s.get("only") else "")
            for s in starts)
            + f". Cold studies' random start: workers x {plan.cold_batch} trials per batched task"
            + (f"; the cold studies shared with `{plan.cold_from}` were started by its `meta2 heldout`, whose "
               "workers its `heldout/settings.json` records, before this benchmark's sampler choice (which reads "
               "only the selection tasks' tune runs)" if plan.cold_from else "") + ".")
        if manifest.get("preexisting"):
            lines.append("- **Runs from before the run record existed** were found at the first recorded start: "
                         "nothing shows which plan, weights or workers made them.")
        if manifest.get("copied_runs"):
            lines.append(f"- {manifest['copied_runs']} test run(s) were copied from `{plan.cold_from}`'s held-out "
                         "runs instead of trained again: the same jobs (task, configuration, test seed, budget) with "
                         "the same runner, e.g. a `cold@k` that is one of its `optuna-tpe@k` configurations.")
        if len({s["workers"] for s in starts if not s.get("only")}) > 1:  # "only": a start that ran no study
            lines.append("- **The workers changed between starts**, and with them the cold studies' random start.")
        if manifest["fingerprint"] != run_fingerprint(plan):
            lines.append("- **The plan, weights or dataset changed since the runs were made**: this report reads "
                         "them under the current plan.")
    lines.append(f"- Paired CIs use {PAIRED_REPS:,} bootstrap resamples (the plan names none; the IQM table keeps "
                 f"{BOOTSTRAP_REPS:,}). The sections marked exploratory are outside the plan and select nothing. The "
                 "plan registered no power analysis: every MDD below is computed from the observed differences.")
    finished = sorted(set(runs["task"]))
    lines += retried_seed_lines(plan, [t for t in finished if t in plan.selection_tasks], "selection tasks' studies")
    lines += retried_seed_lines(plan, [t for t in finished if t not in plan.selection_tasks],
                                "evaluation tasks' studies")
    lines += seed_shortfall_line(runs, plan.test_seeds)
    lines += diverged_line(runs)
    return lines


def retried_seed_lines(plan: FewShotPlan, tasks: list[str], what: str) -> list[str]:
    """Retried trials of the tasks' cold and tune studies that trained on other seeds than the trial they retry."""
    from hypermeta.search.study import stored_study
    from hypermeta.reports.common import moved_retries, moved_retries_line

    counts = {}
    for task in tasks:
        for storage, name in plan.studies(task).values():
            study = stored_study(storage, name)
            counts[name] = 0 if study is None else moved_retries(study, plan.seeds_per_trial)
    return moved_retries_line(counts, what)


def targets_lines(plan: FewShotPlan, runs: pd.DataFrame, tasks: list[str], sampler: str) -> list[str]:
    """tune (the default sampler) at its trials against cold TPE at 32 (target) and 64 (stretch)."""
    lines = ["## Targets", ""]
    default = _tune(plan, sampler)
    if not tasks:
        return lines + ["No evaluation task has finished yet: no target to check."]
    if not {32, 64} & set(plan.cold_trials):
        lines.append("The plan has neither cold@32 nor cold@64: no target to check.")
    planned = sum(e["task"] not in plan.selection_tasks for e in plan.tasks)
    interim = f" so far (interim: {len(tasks)} of {planned} evaluation tasks)" if len(tasks) < planned else ""
    for k, what in ((32, "target"), (64, "stretch")):
        if k not in plan.cold_trials:
            continue
        d = _diff(runs, default, f"cold@{k}", tasks, reps=PAIRED_REPS)
        met = d["diff"] >= 0 and d["ci_high"] >= 0
        lines.append(f"- {what}: {default} >= cold@{k}: **{'met' if met else 'missed'}{interim}** (the plan's rule: "
                     f"paired difference >= 0 and its 95% CI's upper bound >= 0). Difference {d['diff']:+.3f} "
                     f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]; {default} scores higher on "
                     f"{wins(runs, default, f'cold@{k}', tasks)} of {len(tasks)} tasks; this benchmark has 80% power "
                     f"only for differences of at least {d['mdd']:.3f}.")
    return lines


def task_differences(runs: pd.DataFrame, a: str, b: str, tasks: list[str]) -> pd.Series:
    """Per task, the mean over the test seeds of ``a - b``: the columns the paired bootstrap resamples."""
    x, y = paired_scores(runs, a, b, tasks)
    return pd.Series((x - y).mean(axis=0), index=tasks)


def wins(runs: pd.DataFrame, a: str, b: str, tasks: list[str]) -> int:
    return int((task_differences(runs, a, b, tasks) > 0).sum())


def setup_lines(plan: FewShotPlan, runs: pd.DataFrame) -> list[str]:
    tasks = ", ".join(f"`{e['task']}` ({int(e['timesteps']):,} steps, {e['runner']})" for e in plan.tasks)
    return ["## Setup", "",
            f"Tasks: {tasks}. Every trial averages {plan.seeds_per_trial} tuning seeds; the chosen configuration of "
            f"every study is re-trained on {test_seed_text(plan.test_seeds)}, the same for every method. Cold TPE: "
            f"one study of {max(plan.cold_trials)} trials, best of its first k = `cold@k` (batched tasks ask "
            f"{plan.cold_batch} trials per worker at once and TPE samples at random until {plan.cold_batch} have "
            "finished, so the first workers x that many are random; sb3 tasks ask one at a time, random until 10 "
            "have finished"
            + (f"; the study of each task of `{plan.cold_from}`'s held-out evaluation is that plan's Optuna TPE "
               "study, continued" if plan.cold_from else "") + "); `tune`: "
            f"{plan.tune_trials} trials, round 0 from the meta-learner (`{plan.weights or 'shipped weights'}`), then "
            f"each sampler of {plan.samplers} (TPE starting from round 0's results; no pruning in either). "
            f"Summed per-run wall time of the test runs: {wall_hours(runs):.1f} h (the studies' own trials are "
            f"in the progress plot's steps). Rendered with {versions_text()}. Scores: normalised AUC (0 = random policy, 1 = reference return)."]


def paired_lines(plan: FewShotPlan, runs: pd.DataFrame, tasks: list[str]) -> list[str]:
    lines = ["## Paired differences (tasks x test seeds, bootstrap over both)", "",
             "| comparison | difference [95% CI] | MDD (80% power) |", "|---|---:|---:|"]
    for sampler in plan.samplers:
        for k in plan.cold_trials:
            d = _diff(runs, _tune(plan, sampler), f"cold@{k}", tasks, reps=PAIRED_REPS)
            lines.append(f"| {_tune(plan, sampler)} - cold@{k} | {d['diff']:+.3f} [{d['ci_low']:+.3f}, "
                         f"{d['ci_high']:+.3f}] | {d['mdd']:.3f} |")
    return lines


def reference_lines(plan: FewShotPlan, runs: pd.DataFrame, finished: list[str], evaluation: list[str],
                    sampler: str) -> list[str]:
    """Exploratory: how much the targets' differences rest on single tasks, and the same differences on the
    selection tasks and on every finished task (the selection tasks chose between tune samplers only, so their
    tune-vs-cold differences are not selected on)."""
    default = _tune(plan, sampler)
    lines = ["## The same comparisons elsewhere (exploratory)", "",
             "Not the targets. The selection tasks chose only between the `tune` samplers, so their tune-vs-cold "
             "differences are no more selected than the evaluation tasks'.", ""]
    selection = [t for t in finished if t in plan.selection_tasks]
    for k in (k for k in (32, 64) if k in plan.cold_trials):
        cold = f"cold@{k}"
        per_task = task_differences(runs, default, cold, evaluation)
        if len(evaluation) > 1:
            loo = [per_task.drop(t).mean() for t in evaluation]  # every task weighs alike, as in the bootstrap
            lines.append(f"- {default} - {cold} on the evaluation tasks, leaving out one task at a time: "
                         f"{min(loo):+.3f} to {max(loo):+.3f} (all tasks: {per_task.mean():+.3f}).")
        for what, tasks in (("the {} selection tasks", selection), ("all {} finished tasks", finished)):
            if tasks:
                d = _diff(runs, default, cold, tasks, reps=PAIRED_REPS)
                lines.append(f"- {default} - {cold} on {what.format(len(tasks))}: {d['diff']:+.3f} "
                             f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]; {default} scores higher on "
                             f"{wins(runs, default, cold, tasks)} of {len(tasks)}.")
    return lines


#: meta-learner v2's zero-shot methods that the few-shot report sets against ``tune`` (from its held-out runs)
ZERO_SHOT = ("winner", "best-fixed", "base")


def zero_shot_lines(plan: FewShotPlan, runs: pd.DataFrame, evaluation: list[str], sampler: str) -> list[str]:
    """Exploratory: what ``tune``'s trials add to using a configuration with no trial at all. ``cold_from``'s
    held-out runs of its zero-shot winner, best-fixed and base are made as this plan's test runs (task, budget, test
    seeds, the batched runner), so they pair with ``tune``'s run by run on the evaluation tasks and budgets both
    have."""
    theirs = plan.shared_method_runs()
    if theirs is None:
        return []
    budgets = {e["task"]: int(e["timesteps"]) for e in plan.tasks}
    theirs = theirs[theirs["task"].isin(evaluation) & (theirs["timesteps"] == theirs["task"].map(budgets))]
    default = _tune(plan, sampler)
    lines = ["## Tune against no trials at all (exploratory)", "",
             f"Not a target. `{default}` against meta-learner v2's zero-shot choices on the same evaluation tasks and "
             f"test seeds (their held-out runs, `{plan.cold_from}`): `winner` is its shipped prediction (with the OOD "
             "fallback to best-fixed), `best-fixed` one configuration for every task"
             + ("; tune's round 0 holds both the prediction without the fallback and best-fixed." if
                round0_size(plan.tune_trials) >= 2 else "; tune's round 0 is the prediction without the fallback."),
             ""]
    for method in ZERO_SHOT:
        tasks = [t for t in evaluation if not theirs[(theirs["task"] == t) & (theirs["method"] == method)].empty]
        if not tasks:
            continue
        both = pd.concat([runs, theirs[theirs["method"] == method].assign(method=f"zero-shot {method}")])
        d = _diff(both, default, f"zero-shot {method}", tasks, reps=PAIRED_REPS)
        lines.append(f"- {default} - zero-shot {method} on {len(tasks)} of the {len(evaluation)} evaluation tasks "
                     f"({d['seeds']} seeds): {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]; {default} "
                     f"scores higher on {wins(both, default, f'zero-shot {method}', tasks)} of {len(tasks)}.")
    return lines


def optimism_lines(plan: FewShotPlan, runs: pd.DataFrame, progress: pd.DataFrame, tasks: list[str],
                   sampler: str) -> list[str]:
    """Exploratory: each study's best objective on its tuning seeds (what chose the configuration) against the
    chosen configuration's score on the test seeds, averaged over ``tasks``. The gap is the selection's
    optimism: the best of k noisy trials is partly the luckiest."""
    studies = [("cold", f"cold@{k}", k) for k in plan.cold_trials] + [
        (f"tune-{s}", _tune(plan, s), plan.tune_trials) for s in plan.samplers]
    lines = ["## Optimism of the choices (exploratory)", "",
             f"Mean over the {len(tasks)} evaluation tasks: the chosen trial's objective on its tuning seeds (what "
             "chose it), its configuration's score on the test seeds, and the difference, the selection's optimism "
             "(the best of many noisy trials is partly the luckiest).", "",
             "| choice | on tuning seeds | on test seeds | optimism |", "|---|---:|---:|---:|"]
    for study, method, k in studies:
        tuned = progress[(progress["study"] == study) & (progress["trials"] == k) & progress["task"].isin(tasks)]
        tested = runs[(runs["method"] == method) & runs["task"].isin(tasks)].groupby("task")["auc"].mean()
        if tuned["task"].nunique() != len(tasks) or len(tested) != len(tasks):
            continue
        best = float(tuned.groupby("task")["best_so_far"].max().mean())
        lines.append(f"| {method} | {best:.3f} | {tested.mean():.3f} | {best - tested.mean():+.3f} |")
    return lines


def origin_lines(plan: FewShotPlan, tasks: list[str], sampler: str) -> list[str]:
    """Exploratory: whether the default tune study's choice was one of round 0's candidates (the meta-learner's)
    or a trial its sampler proposed after round 0."""
    from hypermeta.search.study import best_trial_of, retried_trial_number, stored_study
    from hypermeta.search.tune import round0_size

    size = round0_size(plan.tune_trials)
    origins = {}
    for task in tasks:
        study = stored_study(*plan.studies(task)[f"tune-{sampler}"])
        if study is None:
            continue
        best = best_trial_of(study, plan.tune_trials)
        number = retried_trial_number(best)  # a retry trains the trial it retries
        origins[task] = (best.number if number is None else number) < size
    if not origins:
        return []
    later = [t for t, from_round0 in origins.items() if not from_round0]
    return ["## Where tune's choice came from (exploratory)", "",
            f"{_tune(plan, sampler)} chose one of round 0's {size} candidates (the meta-learner's zero-shot "
            f"prediction and its other warm-start configurations) on {len(origins) - len(later)} of the "
            f"{len(origins)} evaluation tasks, and a trial its sampler ({sampler}) proposed after round 0 on "
            + (", ".join(f"`{t}`" for t in later) if later else "none") + "."]


def iqm_lines(runs: pd.DataFrame, tasks: list[str]) -> list[str]:
    methods = list(dict.fromkeys(runs["method"]))
    table = iqm_with_ci({m: score_matrix(runs, m, tasks) for m in methods})
    return ["## Every configuration", "", iqm_text() + ".", "", "| method | IQM [95% CI] | runs |", "|---|---:|---:|"] + [
        f"| {r.method} | {r.iqm:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.runs} |" for r in table.itertuples()]


def per_task_lines(plan: FewShotPlan, runs: pd.DataFrame, tasks: list[str], sampler: str) -> list[str]:
    """Where tune loses: per task, the default sampler's mean against cold@k."""
    default = _tune(plan, sampler)
    others = [_tune(plan, s) for s in plan.samplers if s != sampler]
    cold = [f"cold@{k}" for k in plan.cold_trials]
    cols = [default] + others + cold
    lines = ["## Per task (mean normalised AUC over the test seeds)", "",
             "Every task, selection tasks included (marked); the targets and the tables above use the others only. "
             f"(loses): the default, {default}, scores below that cold study's choice.",
             "", "| task | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for task in tasks:
        means = [float(runs[(runs["task"] == task) & (runs["method"] == c)]["auc"].mean()) for c in cols]
        cells = [f"{v:.3f}" + (" (loses)" if c in cold and means[0] < v else "") for c, v in zip(cols, means)]
        mark = " (selection)" if task in plan.selection_tasks else ""
        lines.append(f"| {task}{mark} | " + " | ".join(cells) + " |")
    return lines


def plot_progress(progress: pd.DataFrame, tasks: list[str], path: Path) -> None:
    if not tasks:
        return
    plt = pyplot()
    cols = min(len(tasks), 4)
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks):
        for label, g in progress[progress["task"] == task].groupby("study", sort=False):
            ax.step(g["env_steps"], np.maximum.accumulate(g["best_so_far"]), where="post", label=label)
        ax.set_title(task, fontsize=8)
        ax.set_xlabel("environment steps")
    for row in axes:
        row[0].set_ylabel("best objective so far")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)
