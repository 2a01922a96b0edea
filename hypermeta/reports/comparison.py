"""The comparison report (``hypermeta compare``): renders ``report.md`` and its plots from the runs and the
spec; the run stage is :mod:`hypermeta.search.comparison`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hypermeta.search.baselines import RL_ZOO_SOURCE
from hypermeta.search.comparison import ComparisonSpec, run_comparison
from hypermeta.engine.measurement import Measurement
from hypermeta.reports.common import (fmt_ci, generated_line, iqm_text, plot_learning_curves, plot_score_distributions,
                                      pyplot, save_figure, score_text, test_seed_text, write_markdown)
from hypermeta.engine.pipeline import summarize


def compare(spec: ComparisonSpec, workers: int = 1, progress: bool = False) -> Path:
    """Run (or resume) the comparison, then render its report; returns the report's path."""
    run_comparison(spec, workers=workers, progress=progress)
    return render_comparison(spec)


def render_comparison(spec: ComparisonSpec, out_dir: str | Path | None = None) -> Path:
    """Render the report of ``spec`` from ``runs_by_method.csv`` and ``tuning_cost.csv`` in ``spec.out_dir``,
    written to ``out_dir`` (default: the same folder)."""
    src = Path(spec.out_dir)
    out = Path(out_dir or src)
    out.mkdir(parents=True, exist_ok=True)
    runs = pd.read_csv(src / "runs_by_method.csv")
    cost = pd.read_csv(src / "tuning_cost.csv")
    main, bsf, per_task = comparison_tables(spec, runs, cost)
    main.to_csv(out / "aggregates.csv", index=False)
    bsf.to_csv(out / "best_so_far.csv", index=False)
    per_task.to_csv(out / "per_task.csv")
    measurements = {t: Measurement(n, spec.n_evals, spec.eval_episodes) for t, n in spec.tasks.items()}
    plot_learning_curves(runs, measurements, spec.final_methods(), out / "learning_curves.png")
    plot_best_so_far(spec, bsf, main, out / "best_so_far.png")
    plot_score_distributions(runs, spec.final_methods(), out / "score_distributions.png")
    return write_markdown(out / "report.md", comparison_markdown(spec, main, bsf, per_task))


def comparison_tables(spec: ComparisonSpec, runs: pd.DataFrame,
                      cost: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The main table (IQM of AUC and final score), best-so-far per sampler and k, and per-task means."""
    tasks, final_methods = list(spec.tasks), spec.final_methods()
    auc = summarize(runs, final_methods, tasks, "auc")
    final = summarize(runs, final_methods, tasks, "final_score")
    main = auc.merge(final, on=["method", "runs"], suffixes=("_auc", "_final"))
    rows = []
    for sampler in spec.samplers:
        methods = [spec.method(sampler, k) for k in spec.best_so_far]
        agg = summarize(runs, methods, tasks, "auc").set_index("method")
        steps = cost[cost["sampler"] == sampler].set_index(["task", "trials"])["env_steps"]
        for k, m in zip(spec.best_so_far, methods):
            rows.append({"sampler": sampler, "trials": k,
                         "env_steps_per_task": float(pd.Series([steps[t, k] for t in tasks], dtype=float).mean()),
                         **agg.loc[m].to_dict()})
    per_task = (runs[runs["method"].isin(final_methods)]
                .groupby(["task", "method"])[["auc", "final_return"]].agg(["mean", "std"]).round(3))
    return main, pd.DataFrame(rows), per_task


def plot_best_so_far(spec: ComparisonSpec, bsf: pd.DataFrame, main: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    baseline_iqm = main.set_index("method")["iqm_auc"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for xcol, ax in zip(("trials", "env_steps_per_task"), axes):
        for sampler in spec.samplers:
            d = bsf[bsf["sampler"] == sampler]
            ax.plot(d[xcol], d["iqm"], marker="o", label=f"optuna-{sampler}")
            ax.fill_between(d[xcol], d["ci_low"], d["ci_high"], alpha=0.2)
        for m in spec.baselines:
            ax.axhline(baseline_iqm[m], ls="--", lw=1, color="gray")
            ax.annotate(m, (bsf[xcol].min(), baseline_iqm[m]), fontsize=7, color="gray")
        ax.set_xscale("log")
        ax.set_xlabel("trials" if xcol == "trials" else "environment steps spent tuning (per task)")
        ax.set_ylabel("IQM normalised AUC on test seeds")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def comparison_markdown(spec: ComparisonSpec, main: pd.DataFrame, bsf: pd.DataFrame,
                        per_task: pd.DataFrame) -> list[str]:
    ranked = main.sort_values("iqm_auc", ascending=False)
    lines = [
        f"# Comparison `{spec.name}`: Optuna studies vs baselines on test seeds", "",
        generated_line("hypermeta compare") + f" Comparison file `{spec.name}` (see the README for the command). "
        f"Every number below comes from re-training the chosen configuration on {test_seed_text(spec.test_seeds)} "
        "that no study ever tuned on.", "",
        "## Protocol", "",
        "- Tasks and training budgets: " + ", ".join(f"`{t}` ({n:,} steps)" for t, n in spec.tasks.items()) + ".",
        f"- Studies: Optuna {', '.join(spec.samplers)} over the `{spec.space}` space, {spec.trials} trials each, "
        f"{spec.seeds_per_trial} tuning seed(s) per trial, {spec.pruner} pruner; storage `{spec.storage}`.",
        f"- Objective and score: {score_text(spec.n_evals, spec.eval_episodes)}. 'final' = the normalised score of "
        "the last evaluation.",
        f"- Baselines: {', '.join(spec.baselines)} (rl-zoo values from {RL_ZOO_SOURCE}).",
        "- `optuna-X@k` = the best complete trial among the first k finished trials of study X, re-evaluated: "
        "never the study's own (noisy, selected) objective value.",
        f"- Aggregate: {iqm_text()}.", "",
        "## Results", "",
        "| method | IQM normalised AUC [95% CI] | IQM final score [95% CI] | runs |", "|---|---|---|---:|",
        *(f"| {r['method']} | {fmt_ci(r, 'auc')} | {fmt_ci(r, 'final')} | {r['runs']} |" for _, r in ranked.iterrows()),
        "", f"Highest IQM AUC: **{ranked.iloc[0]['method']}**. Overlapping intervals mean the data cannot separate "
        "the methods.", "",
        "### Best so far vs tuning compute", "",
        "| sampler | trials | env steps spent per task | IQM AUC [95% CI] |", "|---|---:|---:|---|",
        *(f"| {r['sampler']} | {r['trials']} | {r['env_steps_per_task']:,.0f} | {fmt_ci(r)} |" for _, r in bsf.iterrows()),
        "", "### Per task (mean ± std over test seeds)", "",
        "| task | method | normalised AUC | final return |", "|---|---|---:|---:|",
        *(f"| `{task}` | {method} | {r[('auc', 'mean')]:.3f} ± {r[('auc', 'std')]:.3f} | "
          f"{r[('final_return', 'mean')]:.1f} ± {r[('final_return', 'std')]:.1f} |"
          for (task, method), r in per_task.iterrows()),
        "", "## Plots", "", "![learning curves](learning_curves.png)", "", "![best so far](best_so_far.png)", "",
        "![score distributions](score_distributions.png)", "",
        "## Files", "",
        "`runs.csv` (every test run, with its curve and configuration; the resumable cache), `runs_by_method.csv` "
        "(the same runs, one row per method that uses them), `tuning_cost.csv` (environment steps each study spent "
        "after each trial), `aggregates.csv`, `best_so_far.csv`, `per_task.csv`, `trials.csv` (every trial of every "
        "study).", "",
    ]
    return lines
