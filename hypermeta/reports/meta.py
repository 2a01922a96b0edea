"""The held-out report (``hypermeta meta-report``): renders ``report.md`` and its plots from the runs, the
zero-shot predictions and the task distribution; the run stage is :mod:`hypermeta.lab.heldout`."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pandas as pd

from hypermeta.search.baselines import BASELINES
from hypermeta.lab.collect import TaskDistribution
from hypermeta.lab.heldout import HELDOUT_SAMPLER, run_heldout
from hypermeta.reports.common import (aggregate, fmt_ci, generated_line, iqm_text, pyplot, save_figure, score_text,
                                      test_seed_text, write_markdown)


def meta_report(dist: TaskDistribution, workers: int = 1, progress: bool = False, retrain: bool = False) -> Path:
    """Run (or resume) the held-out evaluation, then render its report; returns the report's path."""
    run_heldout(dist, workers=workers, progress=progress, retrain=retrain)
    return render_meta_report(dist)


class _Data:
    """What the renderer reads from ``dist.report_dir``, and the method lists derived from it."""

    def __init__(self, dist: TaskDistribution, src: Path) -> None:
        self.dist = dist
        self.runs = pd.read_csv(src / "runs_by_method.csv")
        self.preds = pd.read_csv(src / "predictions.csv")
        self.cost = pd.read_csv(src / "tuning_cost.csv")
        self.learned = [f"hypermeta-{m}" for m in dict.fromkeys(self.preds["method"])]
        self.optuna = [f"optuna-{HELDOUT_SAMPLER}@{k}" for k in dist.best_of]
        self.methods = self.learned + list(BASELINES) + self.optuna
        self.rivals = list(BASELINES) + [self.optuna[-1]]


def render_meta_report(dist: TaskDistribution, out_dir: str | Path | None = None) -> Path:
    """Render the report of ``dist`` from the files in ``dist.report_dir`` into ``out_dir`` (default: there)."""
    src = Path(dist.report_dir)
    out = Path(out_dir or src)
    out.mkdir(parents=True, exist_ok=True)
    data = _Data(dist, src)
    tables = group_tables(data)
    for group, table in tables.items():
        table.assign(group=group).to_csv(out / f"aggregates_{group.replace(' ', '_')}.csv")
    per_task = data.runs.groupby(["task", "method"])["auc"].agg(["mean", "std"]).reset_index()
    per_task.to_csv(out / "per_task.csv", index=False)
    plot_iqm(data, tables, out / "iqm.png")
    if "held-out contexts" in tables:
        plot_zero_shot_vs_optuna(data, tables["held-out contexts"], out / "zero_shot_vs_optuna.png")
    lines = [*setup_section(data), *results_section(tables), *targets_section(data, tables),
             *losses_section(data, tables), *cost_section(data), *ood_section(data),
             *per_task_section(data, per_task), *files_section()]
    return write_markdown(out / "report.md", lines)


def group_tables(data: _Data) -> dict[str, pd.DataFrame]:
    """IQM per method over each group of held-out tasks (a method enters a group if it ran on all its tasks)."""
    dist, runs = data.dist, data.runs
    zoo_tasks = [t for t in dist.heldout_contexts if ((runs["task"] == t) & (runs["method"] == "rl-zoo")).any()]
    groups = {"held-out contexts": dist.heldout_contexts, "held-out family": dist.heldout_family,
              "all held-out tasks": dist.heldout_tasks(),
              "held-out contexts with an rl-zoo entry": zoo_tasks if len(zoo_tasks) < len(dist.heldout_contexts) else []}
    return {g: aggregate(runs, data.methods, tasks, "auc").set_index("method") for g, tasks in groups.items() if tasks}


def plot_iqm(data: _Data, tables: dict[str, pd.DataFrame], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.6), squeeze=False)
    for ax, (group, table) in zip(axes[0], tables.items()):
        shown = [m for m in data.methods if m in table.index]
        t = table.loc[shown]
        y = np.arange(len(shown))
        colors = ["tab:blue" if m in data.learned else "tab:gray" if m in BASELINES else "tab:orange" for m in shown]
        ax.barh(y, t["iqm"], xerr=[t["iqm"] - t["ci_low"], t["ci_high"] - t["iqm"]], color=colors, alpha=0.8)
        ax.set_yticks(y, shown, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("IQM normalised AUC, 95% CI")
    save_figure(fig, path)


def plot_zero_shot_vs_optuna(data: _Data, ctx: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    d = ctx.loc[data.optuna]
    ax.plot(data.dist.best_of, d["iqm"], marker="o", color="tab:orange", label=f"Optuna {HELDOUT_SAMPLER} best-of-k")
    ax.fill_between(data.dist.best_of, d["ci_low"], d["ci_high"], color="tab:orange", alpha=0.2)
    for m in data.learned + ["sb3-default"]:
        ax.axhline(ctx.loc[m, "iqm"], ls="--" if m in data.learned else ":", lw=1, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("Optuna trials on the held-out task (k)")
    ax.set_ylabel("IQM normalised AUC (held-out contexts)")
    ax.legend(fontsize=6)
    save_figure(fig, path)


def setup_section(data: _Data) -> list[str]:
    dist = data.dist
    return [
        "# hypermeta zero-shot on held-out tasks vs baselines and Optuna", "",
        generated_line("hypermeta meta-report studies/meta/tasks.yaml"),
        f"Every number re-trains the chosen configuration on {test_seed_text(dist.test_seeds)} that no study and no "
        f"meta-learner ever saw; score: {score_text(dist.n_evals, dist.eval_episodes)} (0 = random policy, 1 = "
        f"solved throughout). {iqm_text()}.", "",
        "## Setup", "",
        f"- Training tasks: {len(dist.train_tasks())} contexts of {', '.join(sorted(dist.train))}, {dist.trials} "
        f"{dist.sampler.upper()} trials each (dataset `{dist.dataset}`).",
        f"- Held-out contexts ({len(dist.heldout_contexts)}): " + ", ".join(f"`{t}`" for t in dist.heldout_contexts) + ".",
        "- Held-out family: " + ", ".join(f"`{t}`" for t in dist.heldout_family) + ".",
        f"- `hypermeta-X`: zero-shot prediction of method X (no trial on the task). `optuna-{HELDOUT_SAMPLER}@k`: best "
        f"of the first k trials of a {HELDOUT_SAMPLER.upper()} study ({dist.heldout_pruner} pruner) on the held-out "
        "task itself, re-evaluated.", "",
    ]


def results_section(tables: dict[str, pd.DataFrame]) -> list[str]:
    lines = ["## Results", ""]
    for group, table in tables.items():
        lines += [f"### {group}", "", "| method | IQM normalised AUC [95% CI] | runs |", "|---|---|---:|"]
        lines += [f"| {m} | {fmt_ci(table.loc[m])} | {int(table.loc[m, 'runs'])} |"
                  for m in table.sort_values("iqm", ascending=False).index]
        lines.append("")
    return lines


def best_learned(data: _Data, ctx: pd.DataFrame) -> str:
    return max(data.learned, key=lambda m: ctx.loc[m, "iqm"])


def targets_section(data: _Data, tables: dict[str, pd.DataFrame]) -> list[str]:
    ctx = tables.get("held-out contexts")
    if ctx is None:
        return []
    dist, best = data.dist, best_learned(data, ctx)
    sb3 = ctx.loc["sb3-default", "iqm"]
    ratio = ctx.loc[best, "iqm"] / sb3 if sb3 > 0 else float("nan")
    beats = {k: ctx.loc[best, "iqm"] >= ctx.loc[m, "iqm"] for k, m in zip(dist.best_of, data.optuna)}
    k_max = max(dist.best_of)
    return [
        "## Targets (held-out contexts)", "",
        f"- Best zero-shot method here: **{best}**, IQM {fmt_ci(ctx.loc[best])}. Picking the best of "
        f"{len(data.learned)} methods on these same tasks flatters it; compare the methods' intervals.",
        f"- vs Optuna {HELDOUT_SAMPLER.upper()} best-of-{k_max}: {'meets' if beats[k_max] else 'misses'} "
        f"({data.optuna[-1]} {fmt_ci(ctx.loc[data.optuna[-1]])}); best-of-k it matches or beats: "
        + (", ".join(str(k) for k, ok in beats.items() if ok) or "none") + ".",
        f"- vs `sb3-default` (target >= {dist.target_vs_sb3_default:g}x): {ratio:.2f}x "
        f"({fmt_ci(ctx.loc['sb3-default'])}).", "",
    ]


def losses_section(data: _Data, tables: dict[str, pd.DataFrame]) -> list[str]:
    ctx = tables.get("held-out contexts")
    if ctx is None:
        return []
    best = best_learned(data, ctx)
    mean = data.runs.groupby(["task", "method"])["auc"].mean()
    lines = ["## Where hypermeta loses", "",
             f"Tasks where **{best}** (zero-shot) has a lower mean normalised AUC over the test seeds than a rival:", ""]
    for task in data.dist.heldout_tasks():
        lost = [f"{r} ({mean[task, r]:.2f} vs {mean[task, best]:.2f})" for r in data.rivals
                if (task, r) in mean.index and mean[task, r] > mean[task, best]]
        lines.append(f"- `{task}`: " + (", ".join(lost) if lost else "loses to none of them"))
    fam = tables.get("held-out family")
    if fam is not None:
        order = list(fam.sort_values("iqm", ascending=False).index)
        lines += ["", f"On the held-out family, {best} ranks {order.index(best) + 1} of {len(order)} "
                  f"(IQM {fmt_ci(fam.loc[best])}); the best there is {order[0]} ({fmt_ci(fam.loc[order[0]])})."]
    return lines + [""]


def cost_section(data: _Data) -> list[str]:
    probe = data.preds.drop_duplicates("task")["probe_seconds"]
    predict_ms = data.preds["predict_ms"]
    steps = data.cost.groupby("task")["env_steps"].apply(list)
    tuning = ", ".join(f"{k} trials: {np.mean([s[min(k, len(s)) - 1] for s in steps]):,.0f}" for k in data.dist.best_of)
    return [
        "## Cost", "",
        f"- Feature probe: median {statistics.median(probe):.3f} s, max {max(probe):.3f} s per task.",
        f"- Prediction: median {statistics.median(predict_ms):.2f} ms, max {max(predict_ms):.2f} ms.",
        "- Optuna's tuning cost on a held-out task, environment steps (mean over tasks): " + tuning
        + ". A zero-shot prediction costs one feature probe.", "",
    ]


def ood_section(data: _Data) -> list[str]:
    lines = ["## Out-of-distribution flags", "",
             "| task | methods flagging it | nearest training task (distance) |", "|---|---|---|"]
    for task in data.dist.heldout_tasks():
        sel = data.preds[data.preds["task"] == task]
        flagged = ", ".join(sel[sel["out_of_distribution"]]["method"]) or "none"
        first = sel.iloc[0]
        lines.append(f"| `{task}` | {flagged} | `{first['nearest_task']}` ({first['nearest_distance']:.2f}) |")
    return lines


def per_task_section(data: _Data, per_task: pd.DataFrame) -> list[str]:
    pt = per_task.set_index(["task", "method"])
    lines = ["", "## Per task (mean ± std of normalised AUC over test seeds)", "",
             "| task | " + " | ".join(data.methods) + " |", "|---|" + "---:|" * len(data.methods)]
    for task in data.dist.heldout_tasks():
        cells = [f"{pt.loc[(task, m), 'mean']:.2f} ± {pt.loc[(task, m), 'std']:.2f}" if (task, m) in pt.index
                 else "n/a" for m in data.methods]
        lines.append(f"| `{task}` | " + " | ".join(cells) + " |")
    return lines


def files_section() -> list[str]:
    return ["", "## Plots", "", "![IQM](iqm.png)", "", "![zero-shot vs Optuna](zero_shot_vs_optuna.png)", "",
            "## Files", "", "`runs.csv` (every test run, resumable cache), `runs_by_method.csv`, `per_task.csv`, "
            "`predictions.csv` (every zero-shot prediction with its OOD flag and its probe and prediction times), "
            "`tuning_cost.csv` (environment steps each held-out study spent after each trial), `aggregates_*.csv`.", ""]
