"""The engine's pre-registered equivalence test at full budgets (``hypermeta bench fidelity --plan PLAN``).

A plan (``studies/fidelity2/plan.yaml``) names contexts with their budgets, configurations (schedule fields over
fixed DQN settings), seeds and the equivalence margin. Every job runs in both runners, each into its own resumable
CSV beside the plan (``runs_sb3.csv``, ``runs_batched.csv``); the report pairs the runs job by job and tests
equivalence per family and overall: the 90% CI of the mean paired difference (engine - SB3) inside +-margin (two
one-sided tests at alpha 0.05).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermeta.engine.measurement import Measurement
from hypermeta.engine.pipeline import RunStore, run_jobs_scoring_divergence
from hypermeta.engine.runner import Job
from hypermeta.files import read_yaml
from hypermeta.seeds import fidelity_seeds
from hypermeta.space import DQNConfig

PLAN_KEYS = {"name", "fixed", "contexts", "configs", "portfolio_plan", "seeds", "seed_offset", "n_evals",
             "eval_episodes", "runners", "score", "margin", "targets", "deviations"}
BOOTSTRAP = 10_000


@dataclass
class FidelityPlan:
    path: Path
    name: str
    fixed: dict[str, Any]
    contexts: list[dict[str, Any]]
    configs: list[str]
    portfolio_plan: str
    seeds: int
    #: the plan's seeds are the fidelity seeds ``seed_offset .. seed_offset + seeds - 1`` (a later plan on new seeds)
    seed_offset: int = 0
    n_evals: int = 5
    eval_episodes: int = 5
    runners: list[str] = field(default_factory=lambda: ["sb3", "batched"])
    score: str = "meta2"
    margin: float = 0.03
    targets: dict[str, Any] = field(default_factory=dict)
    #: dated notes added after the plan was committed (shown at the top of the report)
    deviations: list[str] = field(default_factory=list)
    _jobs: list[Job] | None = field(default=None, init=False, repr=False)  # built once (configurations, seeds)
    _scale: dict[str, float] | None = field(default=None, init=False, repr=False)  # read once from the matrix

    @classmethod
    def load(cls, path: str | Path) -> FidelityPlan:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"fidelity plan file {str(path)!r} does not exist")
        data = read_yaml(path, "fidelity plan file")
        unknown = sorted(set(data) - PLAN_KEYS)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(PLAN_KEYS)}")
        plan = cls(path=path, **data)
        for ctx in plan.contexts:
            if set(ctx) != {"task", "timesteps"}:
                raise ValueError(f"{path}: each context needs exactly task and timesteps, got {ctx}")
        return plan

    def store(self, runner: str) -> RunStore:
        return RunStore(self.path.parent / f"runs_{runner}.csv")

    def configs_for(self, task: str) -> dict[str, DQNConfig]:
        """The plan's configurations that exist for ``task`` (rl-zoo only where the env has an entry), as the
        portfolio of ``portfolio_plan`` defines them over the plan's fixed settings; best-fixed is the portfolio
        configuration with the best mean score over that plan's training tasks."""
        from hypermeta.lab.matrix import MatrixPlan

        portfolio = MatrixPlan.load(self.portfolio_plan).portfolio_for(task)
        base = DQNConfig.from_dict(self.fixed, source=f"{self.path} fixed")
        out = {}
        for name in self.configs:
            source = portfolio.get(_best_fixed_key(self.portfolio_plan) if name == "best-fixed" else name)
            if source is not None:
                out[name] = base.with_schedules(source)
            elif name != "rl-zoo":
                raise ValueError(f"{self.path}: configuration {name!r} is not in {self.portfolio_plan}'s portfolio")
        return out

    def jobs(self) -> list[Job]:
        """Context by context in the plan's order, then seed, then configuration."""
        if self._jobs is not None:
            return self._jobs
        jobs = []
        for ctx in self.contexts:
            configs = self.configs_for(ctx["task"])
            measurement = Measurement(int(ctx["timesteps"]), self.n_evals, self.eval_episodes)
            jobs += [Job(ctx["task"], name, config, measurement, seed)
                     for seed in fidelity_seeds(self.seeds, self.seed_offset) for name, config in configs.items()]
        self._jobs = jobs
        return jobs


_BEST_FIXED: dict[str, str] = {}


def _best_fixed_key(portfolio_plan: str) -> str:
    """The portfolio configuration with the best mean normalised score over the training tasks of a matrix plan
    (meta2's best-fixed), from its committed matrix."""
    if portfolio_plan not in _BEST_FIXED:
        from hypermeta.lab.matrix import MatrixPlan, matrix_scores

        plan = MatrixPlan.load(portfolio_plan)
        scores = matrix_scores(plan, RunStore(plan.runs_path).frame(), plan.train_tasks())
        _BEST_FIXED[portfolio_plan] = str(scores.groupby("method")["score"].mean().idxmax())
    return _BEST_FIXED[portfolio_plan]


def run_plan(plan: FidelityPlan, runners: list[str], workers: int = 1, progress: bool = False) -> None:
    """Run (or resume) the plan's jobs in each of ``runners``; each stores its rows as they finish."""
    jobs = plan.jobs()
    for runner in runners:
        if runner not in plan.runners:
            raise ValueError(f"runner {runner!r} is not in the plan's runners {plan.runners}")
        from hypermeta.engine.batched import BatchedRunner

        run_jobs_scoring_divergence(jobs, plan.store(runner), workers=workers, progress=progress,
                                    runner=BatchedRunner() if runner == "batched" else runner)


def family_of(task: str) -> str:
    return task.partition(":")[0].split("-")[0]


def scored_runs(plan: FidelityPlan, runner: str) -> pd.DataFrame:
    """The runner's stored runs of the plan's jobs, with ``score`` (the plan's normalisation), ``family`` and
    ``diverged``."""
    store = plan.store(runner)
    rows = [{**row, "method": job.method} for job in plan.jobs() if (row := store.get(job)) is not None]
    frame = pd.DataFrame(rows, columns=None if rows else ["task", "method", "seed", "auc", "curve", "wall_time"])
    if frame.empty:
        return frame.assign(score=[], family=[], diverged=[])
    frame["diverged"] = frame["curve"].str.startswith('"diverged')
    frame["family"] = frame["task"].map(family_of)
    frame["score"] = frame["auc"] / frame["task"].map(_score_scale(plan))
    return frame


def _score_scale(plan: FidelityPlan) -> dict[str, float]:
    """What a normalised AUC of each of the plan's tasks is divided by: the best portfolio mean in meta2's matrix
    (training or held-out split), 1 for tasks in no matrix (read once per plan)."""
    from hypermeta.lab.matrix import MatrixPlan, matrix_scores

    if plan._scale is not None:
        return plan._scale
    tasks = [c["task"] for c in plan.contexts]
    if plan.score != "meta2":
        plan._scale = {t: 1.0 for t in tasks}
        return plan._scale
    matrix_plan = MatrixPlan.load(plan.portfolio_plan)
    runs = RunStore(matrix_plan.runs_path).frame()
    known = [t for t in tasks if t in set(matrix_plan.all_tasks())]
    best = matrix_scores(matrix_plan, runs, known).groupby("task")["best_auc"].first() if known else {}
    plan._scale = {t: float(best[t]) if t in known and t in best else 1.0 for t in tasks}
    return plan._scale


def paired(plan: FidelityPlan, runs: dict[str, pd.DataFrame] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs of both runners joined job by job (``d`` = engine - SB3, ``same_curve``), and the runs that diverged in
    either runner (left out of the pairs). ``runs``: each runner's :func:`scored_runs` when the caller has them."""
    runs = runs or {r: scored_runs(plan, r) for r in ("sb3", "batched")}
    sb3, eng = runs["sb3"], runs["batched"]
    keys = ["task", "method", "seed"]
    both = sb3.merge(eng, on=keys, suffixes=("_sb3", "_engine"))
    if both.empty:
        return both.assign(d=[], same_curve=[], family=[]), both
    bad = both["diverged_sb3"] | both["diverged_engine"]
    out = both[~bad].copy()
    out["family"] = out["family_sb3"]
    out["d"] = out["score_engine"] - out["score_sb3"]
    out["same_curve"] = out["curve_sb3"] == out["curve_engine"]
    return out, both[bad]


def bootstrap_means(frame: pd.DataFrame, rng: np.random.Generator, n: int = BOOTSTRAP) -> np.ndarray:
    """``n`` bootstrap means of ``d``, seeds resampled within each (task, configuration) stratum."""
    total = np.zeros(n)
    for _, g in frame.groupby(["task", "method"], sort=True):
        d = g["d"].to_numpy()
        total += d[rng.integers(0, len(d), (n, len(d)))].sum(axis=1)
    return total / len(frame)


def equivalence_table(pairs: pd.DataFrame, margin: float, seed: int = 0) -> pd.DataFrame:
    """Per family and overall (the mean of the family means): mean d, 90% and 95% CIs, the TOST verdict, identical
    curves, the rank agreement of configuration means and each runner's CPU seconds."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    rows, boots = [], []
    for family, g in pairs.groupby("family", sort=False):
        boot = bootstrap_means(g, rng)
        boots.append(boot)
        means = g.groupby("method")[["score_sb3", "score_engine"]].mean()
        rho = spearmanr(means["score_sb3"], means["score_engine"]).statistic if len(means) > 2 else np.nan
        rows.append(_row(family, g, boot, margin, rho, len(means)))
    if rows:
        overall = np.mean(boots, axis=0)
        row = _row("overall", pairs, overall, margin, np.nan, pairs["method"].nunique())
        row["mean"] = float(np.mean([r["mean"] for r in rows]))
        rows.append(row)
    return pd.DataFrame(rows)


def _row(family: str, g: pd.DataFrame, boot: np.ndarray, margin: float, rho: float, n_configs: int) -> dict:
    lo90, hi90 = np.quantile(boot, [0.05, 0.95])
    lo95, hi95 = np.quantile(boot, [0.025, 0.975])
    return {"family": family, "contexts": g["task"].nunique(), "configs": n_configs, "runs": len(g),
            "mean": float(g["d"].mean()), "ci90_low": lo90, "ci90_high": hi90, "ci95_low": lo95, "ci95_high": hi95,
            "equivalent": bool(-margin < lo90 and hi90 < margin), "identical": int(g["same_curve"].sum()),
            "spearman": rho, "cpu_sb3": float(g["wall_time_sb3"].sum()), "cpu_engine": float(g["wall_time_engine"].sum())}


def verdict_text(r: Any) -> str:
    """The plan's verdict (equivalent: the 90% CI inside the margin), and when it is not met, whether the runners
    differ (the 95% CI excludes 0) or the test could not tell (it includes 0: too few pairs for the margin)."""
    if r.equivalent:
        return "yes"
    if r.ci95_low > 0 or r.ci95_high < 0:
        return "**no: they differ** (95% CI excludes 0)"
    return "not shown (95% CI includes 0: inconclusive)"


def trace_lines(folder: Path) -> list[str]:
    """The step-by-step traces (``studies/fidelity2/trace.py``) stored beside the plan, as a table: where the engine
    and SB3 first part on one job, beside where SB3 parts from itself when started one ulp away."""
    import json

    traces = [(path, json.loads(path.read_text())) for path in sorted(folder.glob("trace_*.json"))]
    forced = [(path, t) for path, t in traces if t.get("mode") == "forced"]
    traces = [(path, t) for path, t in traces if t.get("mode") != "forced"]
    if not traces:
        return forced_trace_lines(forced)
    lines = ["## Where the runners part: one job per family, step by step", "",
             "`studies/fidelity2/trace.py` trains one job (base schedules over the plan's settings, seed 10,000,000) "
             "in both runners and compares, step by step, the observation, the action and the online network's "
             "Q-values. `--ulp` compares SB3 with SB3 started one unit in the last place away instead: what a "
             "difference of rounding size does by itself.", "",
             "| trace | task | steps | first action difference | gap of the best two Q (SB3) | max abs Q difference "
             "then | max abs Q difference by step 5,000 | curves identical |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for path, t in traces:
        at = t.get("at_first_action_difference", {})
        by5k = t["max_abs_q_difference_before"].get("5000")
        lines.append(f"| `{path.name}` | `{t['task']}` | {t['steps']:,} | {t['first_action_difference'] or 'none'} | "
                     f"{at.get('gap_between_best_two_actions', float('nan')):.2e} | "
                     f"{at.get('max_abs_q_difference', float('nan')):.2e} | "
                     f"{'' if by5k is None else f'{by5k:.1e}'} | {'yes' if t['identical_curves'] else 'no'} |")
    return [*lines, "", *forced_trace_lines(forced)]


def _at_end(checks: dict[str, Any]) -> Any:
    """The value at a forced trace's last checkpoint (its keys are step counts as strings)."""
    return checks[str(max(map(int, checks)))]


def _q_growth(run: dict) -> str:
    """A forced run's largest |Q - Q_SB3| by 10k, 20k and 30k steps and at the end."""
    checks = run["max_abs_q_difference_before"]
    return (" / ".join(f"{checks[k]:.1e}" if k in checks else "-" for k in ("10000", "20000", "30000"))
            + f" / {_at_end(checks):.1e}")


def forced_trace_lines(forced: list[tuple[Path, dict]]) -> list[str]:
    """The forced traces (``trace.py --forced``): the engine and SB3-one-ulp take SB3's actions for the whole budget,
    so their replay contents can be compared and their Q-values followed past the first flip."""
    if not forced:
        return []
    lines = ["### Past the first flip: the same actions for the whole budget", "",
             "`trace.py --forced` (best-fixed's schedules over the plan's settings, "
             "`studies/fidelity2/best-fixed.json`, on one of the plan's jobs; `-rlzoo` in a trace's name: rl-zoo's, "
             "`studies/fidelity2/rl-zoo.json`): SB3 trains freely and records its "
             "actions; the engine, and SB3 started one ulp away, train again on the same job, each making its own "
             "random draws but taking SB3's action at every step. Their replay buffers at the end are compared field "
             "by field (observation, next observation, action, reward, and the done flag as SB3's TD target reads it, "
             "`dones * (1 - timeouts)`), and the largest |Q - Q_SB3| on the observations visited is followed to the "
             "end of the run, beside the largest |Q_SB3| (the size of the Q-values): where the engine's curve leaves "
             "SB3-one-ulp's, its learning update differs from SB3's by more than rounding. Action selection: how many "
             "times a run's own epsilon-greedy choice (its own random draws and Q-values) was not the action SB3 took; "
             "where the engine's count leaves SB3-one-ulp's, its action selection differs from SB3's by more than "
             "rounding (older traces did not record it).", "",
             "| trace | task | seed | steps | truncated episodes (first at) | buffer wraps at | replay identical "
             "(engine; SB3-one-ulp) | max abs Q difference by 10k / 20k / 30k / end: engine | the same: SB3-one-ulp "
             "| max abs Q of SB3 | own choice not SB3's action, whole run (engine; SB3-one-ulp) |",
             "|---|---|---:|---:|---:|---:|---|---|---|---:|---|"]
    for path, t in forced:
        same = "; ".join("yes" if not t[n]["replay_differs_in"] else "no: " + ", ".join(t[n]["replay_differs_in"])
                         for n in ("engine", "sb3_ulp"))
        first_trunc = "" if t["first_truncation"] is None else f" ({t['first_truncation']:,})"
        sizes = t["engine"].get("max_abs_q_sb3_before")
        size = f"{_at_end(sizes):.3g}" if sizes else "not recorded"
        wraps = "no wrap" if t["buffer_wraps_at"] is None else f"{t['buffer_wraps_at']:,}"
        lines.append(f"| `{path.name}` | `{t['task']}` | {t['seed']:,} | {t['steps']:,} | "
                     f"{t['episodes_truncated']}{first_trunc} | {wraps} | {same} | {_q_growth(t['engine'])} | "
                     f"{_q_growth(t['sb3_ulp'])} | {size} | {_own_choices(t)} |")
    return [*lines, ""]


def _own_choices(trace: dict) -> str:
    """How often the engine's and SB3-one-ulp's own choices were not SB3's action, over the whole forced run."""
    counts = [trace[n].get("own_choice_differs_before") for n in ("engine", "sb3_ulp")]
    if not all(counts):
        return "not recorded"
    return "; ".join(f"{_at_end(c):,}" for c in counts) + f" of {trace['steps']:,}"


def _conclusion(plan: FidelityPlan) -> list[str]:
    """``conclusion.md`` beside the plan (what the results show, written after them and dated), if there is one."""
    path = plan.path.parent / "conclusion.md"
    return [*path.read_text().rstrip("\n").splitlines(), ""] if path.is_file() else []


def render(plan: FidelityPlan, out: Path) -> Path:
    """Write the report (markdown, the table as CSV) from the runs stored so far."""
    from hypermeta.lab.engine_bench import _machine
    from hypermeta.files import git_commit, write_report

    runs = {r: scored_runs(plan, r) for r in ("sb3", "batched")}  # read once: the pairs and the counts
    pairs, dropped = paired(plan, runs)
    jobs = plan.jobs()
    table = equivalence_table(pairs, plan.margin) if not pairs.empty else pd.DataFrame()
    families = sorted({family_of(c["task"]) for c in plan.contexts})
    if not table.empty and table["family"].nunique() - 1 < len(families):  # 'overall' of the families so far only
        table.loc[table["family"] == "overall", "family"] = \
            f"overall, interim ({table['family'].nunique() - 1} of {len(families)} families)"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    stored = {r: len(runs[r]) for r in plan.runners}
    lines = [f"# Engine fidelity at full budgets: the pre-registered equivalence test ({plan.name})", "",
             *(["## Deviations and notes (dated, after the plan)", "", *(f"- {d}" for d in plan.deviations), ""]
               if plan.deviations else []),
             *_conclusion(plan),
             f"Plan: `{plan.path}` (committed before any of its runs). Rendered {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             f"with `hypermeta bench fidelity --plan {plan.path} --render-only` at commit {git_commit()} ({_machine()}).", "",
             "Stored runs: " + ", ".join(f"{r} {n} of {len(jobs)}" for r, n in stored.items())
             + f"; paired: {len(pairs)}; left out because a runner diverged: {len(dropped)}."
             + ("" if all(n == len(jobs) for n in stored.values()) else
                " **The plan is not complete: the verdicts below cover the families with pairs so far and are "
                "interim.**"), "",
             f"Margin +-{plan.margin}; equivalent = the 90% CI of the mean paired difference (engine - SB3) inside the "
             "margin (two one-sided tests at alpha 0.05). Scores: " + ("meta2's normalisation (1 = the best portfolio "
             "mean on the task in meta2's matrix; MinAtar: normalised AUC against its reference return)." if
             plan.score == "meta2" else "normalised AUC."), ""]
    if not table.empty:
        lines += ["| family | contexts | configs | runs | engine - SB3 | 90% CI | 95% CI | equivalent | identical curves "
                  "| Spearman of config means | CPU s SB3 | CPU s engine |",
                  "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r.family} | {r.contexts} | {r.configs} | {r.runs} | {r.mean:+.4f} | [{r.ci90_low:+.4f}, "
                  f"{r.ci90_high:+.4f}] | [{r.ci95_low:+.4f}, {r.ci95_high:+.4f}] | {verdict_text(r)} | "
                  f"{r.identical} ({r.identical / r.runs:.0%}) | {'' if np.isnan(r.spearman) else f'{r.spearman:.3f}'} | "
                  f"{r.cpu_sb3:,.0f} | {r.cpu_engine:,.0f} |" for r in table.itertuples()]
        lines.append("")
    lines += trace_lines(plan.path.parent)
    if not dropped.empty:
        lines.append("Diverged (left out): " + "; ".join(
            f"{r.task} {r.method} seed {r.seed} ({'SB3' if r.diverged_sb3 else ''}{' and ' if r.diverged_sb3 and r.diverged_engine else ''}"
            f"{'engine' if r.diverged_engine else ''})" for r in dropped.itertuples()) + ".")
        lines.append("")
    lines.append(f"Files: `{out.with_suffix('.csv').name}` (the table); the runs in `{plan.store('sb3').path}` and "
                 f"`{plan.store('batched').path}`.")
    write_report(out, lines)
    return out
