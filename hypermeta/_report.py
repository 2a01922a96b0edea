"""``hypermeta compare``: Optuna studies vs baselines, re-evaluated on test seeds, as a markdown report.

A comparison is defined by a YAML file (see ``studies/baselines.yaml``). Running it is resumable at every
stage: studies resume from their storage, test runs from ``runs.csv``; what exists is not recomputed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermeta._baselines import BASELINES, RL_ZOO_SOURCE, baseline_config
from hypermeta._files import dataclass_from_yaml
from hypermeta._evaluation import CurveSettings, Normalizer
from hypermeta._protocol import Job, RunStore, run_jobs, seeds_for_testing, summarize
from hypermeta._study import FINISHED, SAMPLERS, StudySpec, best_config_of, make_storage, run_study
from hypermeta._tasks import make_env


@dataclass
class ComparisonSpec:
    """One comparison: tasks (with their training budgets), samplers and baselines, and the protocol."""

    name: str
    tasks: dict[str, int]
    samplers: list[str] = field(default_factory=lambda: ["tpe", "random"])
    trials: int = 30
    space: str = "schedule"
    seeds_per_trial: int = 1
    n_evals: int = 5
    eval_episodes: int = 5
    test_seeds: int = 5
    pruner: str = "median"
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    best_so_far: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 30])
    storage: str = "sqlite:///studies/baselines.db"
    out_dir: str = ""

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("a comparison needs at least one task (tasks: {task_id: timesteps})")
        for sampler in self.samplers:
            if sampler not in SAMPLERS:
                raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if not self.best_so_far or max(self.best_so_far) > self.trials or min(self.best_so_far) < 1:
            raise ValueError(f"best_so_far points must lie in [1, trials={self.trials}], got {self.best_so_far}")
        self.best_so_far = sorted(set(self.best_so_far) | {self.trials})
        self.out_dir = self.out_dir or f"studies/reports/{self.name}"
        for task, timesteps in self.tasks.items():
            StudySpec(task, timesteps, self.space, self.seeds_per_trial, self.n_evals, self.eval_episodes)

    @classmethod
    def load(cls, path: str | Path) -> ComparisonSpec:
        return dataclass_from_yaml(cls, path, "comparison")

    def study_spec(self, task: str) -> StudySpec:
        return StudySpec(task, self.tasks[task], self.space, self.seeds_per_trial, self.n_evals, self.eval_episodes)

    def study_name(self, task: str, sampler: str) -> str:
        return f"{self.name}|{task}|{sampler}"

    def method(self, sampler: str, k: int) -> str:
        return f"optuna-{sampler}@{k}"


def _check(spec: ComparisonSpec) -> None:
    """Every task id and every baseline resolves, before hours of work start."""
    for task in spec.tasks:
        make_env(task).close()
        Normalizer.for_task(task)
        for name in spec.baselines:
            if not name.startswith("study:"):
                baseline_config(name, task)


def run_comparison(spec: ComparisonSpec, workers: int = 1, progress: bool = False,
                   heartbeat_interval: int = 10, grace_period: int = 30) -> Path:
    """Run (or resume) every study and test run of ``spec`` and write the report; returns its path."""
    _check(spec)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    studies = {}
    for task in spec.tasks:
        for sampler in spec.samplers:
            studies[task, sampler] = run_study(
                spec.study_spec(task), spec.trials, study_name=spec.study_name(task, sampler), storage=spec.storage,
                sampler=sampler, pruner=spec.pruner, workers=workers, progress=progress,
                heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    jobs = []
    for task in spec.tasks:
        settings = CurveSettings(spec.tasks[task], spec.n_evals, spec.eval_episodes)
        configs = {name: baseline_config(name, task, spec.storage) for name in spec.baselines}
        for sampler in spec.samplers:
            for k in spec.best_so_far:
                configs[spec.method(sampler, k)] = best_config_of(studies[task, sampler], k)
        for method, config in configs.items():
            jobs += [Job(task, method, config, settings, seed) for seed in seeds_for_testing(spec.test_seeds)]
    runs = run_jobs(jobs, RunStore(out / "runs.csv"), workers=workers, progress=progress)
    return write_report(spec, studies, runs)


def _study_compute(study: Any, ks: list[int]) -> dict[int, float]:
    finished = sorted((t for t in study.get_trials(deepcopy=False) if t.state in FINISHED),
                      key=lambda t: (t.datetime_complete, t.number))
    steps = np.cumsum([t.user_attrs.get("env_steps", 0) for t in finished])
    return {k: float(steps[k - 1]) for k in ks}


def _fmt(row: pd.Series) -> str:
    return f"{row['iqm']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def write_report(spec: ComparisonSpec, studies: dict, runs: pd.DataFrame) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(spec.out_dir)
    tasks = list(spec.tasks)
    final_methods = list(spec.baselines) + [spec.method(s, spec.trials) for s in spec.samplers]
    runs.to_csv(out / "runs_by_method.csv", index=False)

    # --- main table: IQM of the normalised AUC and of the final normalised score ----------------------
    auc = summarize(runs, final_methods, tasks, "auc")
    final = summarize(runs, final_methods, tasks, "final_score")
    main = auc.merge(final, on=["method", "runs"], suffixes=("_auc", "_final"))
    main.to_csv(out / "aggregates.csv", index=False)

    # --- best so far: the configuration chosen after k trials, re-evaluated on the test seeds ------------
    bsf_rows = []
    for sampler in spec.samplers:
        methods = [spec.method(sampler, k) for k in spec.best_so_far]
        agg = summarize(runs, methods, tasks, "auc").set_index("method")
        compute = {task: _study_compute(studies[task, sampler], spec.best_so_far) for task in tasks}
        for k, m in zip(spec.best_so_far, methods):
            bsf_rows.append({"sampler": sampler, "trials": k,
                             "env_steps_per_task": float(np.mean([compute[t][k] for t in tasks])),
                             **agg.loc[m].to_dict()})
    bsf = pd.DataFrame(bsf_rows)
    bsf.to_csv(out / "best_so_far.csv", index=False)

    # --- per-task table -----------------------------------------------------------------------------
    per_task = (runs[runs["method"].isin(final_methods)]
                .groupby(["task", "method"])[["auc", "final_return"]].agg(["mean", "std"]).round(3))
    per_task.to_csv(out / "per_task.csv")

    # --- trials of every study, exported so the numbers reproduce without the database ---------------
    frames = []
    for (task, sampler), study in studies.items():
        df = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
        frames.append(df.assign(study=study.study_name, task=task, sampler=sampler))
    pd.concat(frames, ignore_index=True).to_csv(out / "trials.csv", index=False)

    # --- plots --------------------------------------------------------------------------------------
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        norm = Normalizer.for_task(task)
        steps = CurveSettings(spec.tasks[task], spec.n_evals, spec.eval_episodes).eval_steps
        for m in final_methods:
            sel = runs[(runs["task"] == task) & (runs["method"] == m)]
            curves = np.array([norm(np.array(json.loads(c))) for c in sel["curve"]])
            mean, sem = curves.mean(0), curves.std(0) / np.sqrt(len(curves))
            ax.plot(steps, mean, marker="o", ms=3, label=m)
            ax.fill_between(steps, mean - sem, mean + sem, alpha=0.15)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("environment steps")
    axes[0][0].set_ylabel("normalised return (mean ± s.e.)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for xcol, ax in zip(("trials", "env_steps_per_task"), axes):
        for sampler in spec.samplers:
            d = bsf[bsf["sampler"] == sampler]
            ax.plot(d[xcol], d["iqm"], marker="o", label=f"optuna-{sampler}")
            ax.fill_between(d[xcol], d["ci_low"], d["ci_high"], alpha=0.2)
        for m in spec.baselines:
            ax.axhline(auc.set_index("method").loc[m, "iqm"], ls="--", lw=1, color="gray")
            ax.annotate(m, (d[xcol].min(), auc.set_index("method").loc[m, "iqm"]), fontsize=7, color="gray")
        ax.set_xscale("log")
        ax.set_xlabel("trials" if xcol == "trials" else "environment steps spent tuning (per task)")
        ax.set_ylabel("IQM normalised AUC on test seeds")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "best_so_far.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    taus = np.linspace(-0.5, 1.5, 201)
    for m in final_methods:
        scores = runs[runs["method"] == m]["auc"].to_numpy()
        ax.plot(taus, [(scores > t).mean() for t in taus], label=m)
    ax.set_xlabel("normalised AUC τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "score_distributions.png", dpi=110)
    plt.close(fig)

    # --- markdown -----------------------------------------------------------------------------------
    best = main.sort_values("iqm_auc", ascending=False).iloc[0]["method"]
    lines = [
        f"# Comparison `{spec.name}`: Optuna studies vs baselines on test seeds",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `hypermeta compare` from the comparison file "
        f"named `{spec.name}` (see the README for the command). Every number below comes from re-training the chosen configuration "
        f"on {spec.test_seeds} test seeds (seeds 10,000,000+) that no study ever tuned on.",
        "",
        "## Protocol",
        "",
        f"- Tasks and training budgets: " + ", ".join(f"`{t}` ({n:,} steps)" for t, n in spec.tasks.items()) + ".",
        f"- Studies: Optuna {', '.join(spec.samplers)} over the `{spec.space}` space, {spec.trials} trials each, "
        f"{spec.seeds_per_trial} tuning seed(s) per trial, {spec.pruner} pruner; storage `{spec.storage}`.",
        f"- Objective and score: {spec.n_evals} evenly spaced greedy evaluations of {spec.eval_episodes} episodes; "
        "normalised AUC = mean over evaluations of (R - R_random) / (R_reference - R_random), R_reference = the "
        "env's reward_threshold. 'final' = the normalised score of the last evaluation.",
        f"- Baselines: {', '.join(spec.baselines)} (rl-zoo values from {RL_ZOO_SOURCE}).",
        "- `optuna-X@k` = the best complete trial among the first k finished trials of study X, re-evaluated: "
        "never the study's own (noisy, selected) objective value.",
        "- Aggregate: IQM over all runs × tasks with 95% stratified bootstrap CI (rliable, 2,000 resamples).",
        "",
        "## Results",
        "",
        "| method | IQM normalised AUC [95% CI] | IQM final score [95% CI] | runs |",
        "|---|---|---|---:|",
    ]
    for _, row in main.sort_values("iqm_auc", ascending=False).iterrows():
        lines.append(f"| {row['method']} | {_fmt(row.rename({'iqm_auc': 'iqm', 'ci_low_auc': 'ci_low', 'ci_high_auc': 'ci_high'}))}"
                     f" | {_fmt(row.rename({'iqm_final': 'iqm', 'ci_low_final': 'ci_low', 'ci_high_final': 'ci_high'}))}"
                     f" | {row['runs']} |")
    lines += ["", f"Highest IQM AUC: **{best}**. Overlapping intervals mean the data cannot separate the methods.",
              "", "### Best so far vs tuning compute", "",
              "| sampler | trials | env steps spent per task | IQM AUC [95% CI] |", "|---|---:|---:|---|"]
    for _, row in bsf.iterrows():
        lines.append(f"| {row['sampler']} | {row['trials']} | {row['env_steps_per_task']:,.0f} | {_fmt(row)} |")
    lines += ["", "### Per task (mean ± std over test seeds)", "",
              "| task | method | normalised AUC | final return |", "|---|---|---:|---:|"]
    for (task, method), row in per_task.iterrows():
        lines.append(f"| `{task}` | {method} | {row[('auc', 'mean')]:.3f} ± {row[('auc', 'std')]:.3f} | "
                     f"{row[('final_return', 'mean')]:.1f} ± {row[('final_return', 'std')]:.1f} |")
    lines += ["", "## Plots", "", "![learning curves](learning_curves.png)", "",
              "![best so far](best_so_far.png)", "", "![score distributions](score_distributions.png)", "",
              "## Files", "",
              "`runs.csv` (every test run, with its curve and configuration; the resumable cache), `runs_by_method.csv` "
              "(the same runs, one row per method that uses them), `aggregates.csv`, `best_so_far.csv`, "
              "`per_task.csv`, `trials.csv` (every trial of every study).", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
