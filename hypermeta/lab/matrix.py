"""The performance matrix of meta-learner v2 (``hypermeta matrix PLAN``): every portfolio configuration on every
training task with several seeds, as planned in a pre-registered plan file (``studies/meta2/plan.yaml``).

Runs are stored one row per (task, configuration, seed) in ``<plan dir>/matrix_runs.csv`` as they finish, so the
collection resumes where it stopped and can grow (more tasks, seeds or configurations later) without redoing
anything. Seeds are per task and disjoint from tuning and test seeds (:func:`hypermeta.seeds.matrix_seeds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import json
from typing import Any

import numpy as np
import pandas as pd

from hypermeta.search.baselines import SB3_DEFAULT, rl_zoo_config
from hypermeta.engine.measurement import Measurement
from hypermeta.engine.pipeline import RunStore, config_key, run_jobs_scoring_divergence
from hypermeta.engine.runner import Job
from hypermeta.files import dataclass_from_yaml
from hypermeta.seeds import matrix_seeds
from hypermeta.space import DQNConfig, get_space
from hypermeta.tasks.families import get_family, get_task

#: Lock-step batch size of the matrix: throughput is nearly that of 256 (engine throughput report: 16,888 vs
#: 18,266 agent-steps/s for CartPole at K=64 and 256) and a batch of 60,000-step runs lands in ~10 min, not ~40.
MATRIX_MAX_AGENTS = 64


@dataclass
class MatrixPlan:
    """The parts of a meta-learner v2 plan that define the matrix (the rest of the file is read as text)."""

    name: str
    fixed: dict[str, Any]
    seed: int
    train: dict[str, int]
    heldout_contexts: list[str]
    heldout_family: list[str]
    budgets: dict[str, int]
    portfolio: dict[str, Any]
    matrix_seeds: int
    budget_ladder: list[int] = field(default_factory=list)
    calibration: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    selection: str = ""
    ood: str = ""
    test_seeds: int = 10
    compare: list[str] = field(default_factory=list)
    oracle: str = ""
    primary: str = ""
    secondary: list[str] = field(default_factory=list)
    runner: str = ""
    targets: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def __post_init__(self) -> None:
        self.base = DQNConfig.from_dict(self.fixed, source="plan `fixed`")
        for task in self.all_tasks():
            self.budget(task)
        if self.matrix_seeds < 1:
            raise ValueError(f"matrix_seeds must be >= 1, got {self.matrix_seeds}")
        overlap = set(self.train_tasks()) & set(self.heldout_contexts)
        if overlap:
            raise ValueError(f"held-out contexts {sorted(overlap)} are also training tasks")

    @classmethod
    def load(cls, path: str | Path) -> MatrixPlan:
        return dataclass_from_yaml(cls, path, "plan")

    @property
    def runs_path(self) -> Path:
        return Path(self.path).parent / "matrix_runs.csv"

    def train_tasks(self) -> list[str]:
        """Calibration tasks (the families' default contexts) first, then the sampled training contexts."""
        tasks = [get_task(t).id for t in self.calibration]
        for i, (fam, n) in enumerate(sorted(self.train.items())):
            for ctx in get_family(fam).sample_contexts(n, seed=self.seed + i):
                tasks.append(get_task(f"{fam}:" + ",".join(f"{k}={v:g}" for k, v in ctx.items())).id)
        return list(dict.fromkeys(tasks))

    def collection_order(self) -> list[str]:
        """The training tasks in the order the matrix collects them: the calibration tasks, then one task of
        each family in turn, so that a partial matrix covers every family. (Seeds follow :meth:`train_tasks`'
        order, not this one.)"""
        tasks = self.train_tasks()
        head = [t for t in tasks if t in {get_task(c).id for c in self.calibration}]
        by_family: dict[str, list[str]] = {}
        for t in tasks:
            if t not in head:
                by_family.setdefault(get_task(t).family.name, []).append(t)
        rest = [t for i in range(max(map(len, by_family.values()), default=0)) for ts in by_family.values()
                if i < len(ts) for t in ts[i:i + 1]]
        return head + rest

    def all_tasks(self) -> list[str]:
        return [*self.train_tasks(), *self.heldout_contexts, *self.heldout_family]

    def budget(self, task: str) -> int:
        family = get_task(task).family.name
        if family not in self.budgets:
            raise ValueError(f"plan {self.name!r}: no budget for family {family!r} (task {task!r})")
        return int(self.budgets[family])

    def portfolio_for(self, task: str) -> dict[str, DQNConfig]:
        """The shared portfolio (Sobol points and named schedules) over the fixed settings, for ``task``."""
        from scipy.stats import qmc

        space = get_space("schedule")
        codes = qmc.Sobol(space.dim, scramble=True, seed=0).random(int(self.portfolio.get("sobol", 0)))
        configs = {f"sobol-{i:02d}": space.decode(code, base=self.base) for i, code in enumerate(codes)}
        for name in self.portfolio.get("named", []):
            source = {"base": DQNConfig(), "sb3-default": SB3_DEFAULT}.get(name)
            if name == "rl-zoo":
                try:
                    source = rl_zoo_config(task)
                except ValueError:  # no rl-zoo entry for this environment (FrozenLake)
                    continue
            if source is None:
                raise ValueError(f"plan {self.name!r}: unknown named portfolio configuration {name!r}")
            configs[name] = self.base.with_schedules(source)
        return configs

    def jobs(self, tasks: list[str]) -> list[Job]:
        """Every (configuration, seed) run of ``tasks`` (training or held-out: held-out tasks get the matrix too,
        for their oracle). Seeds are per task: its position in :meth:`all_tasks` picks its seed block."""
        index = {t: i for i, t in enumerate(self.all_tasks())}
        jobs = []
        for task in tasks:
            measurement = Measurement(self.budget(task))
            for name, config in self.portfolio_for(task).items():
                jobs += [Job(task, name, config, measurement, s) for s in matrix_seeds(index[task], self.matrix_seeds)]
        return jobs


def collect_matrix(plan: MatrixPlan, runner: str = "batched", workers: int = 1, n_tasks: int | None = None,
                   progress: bool = False, split: str = "train", max_agents: int | None = MATRIX_MAX_AGENTS,
                   tasks: list[str] | None = None) -> pd.DataFrame:
    """Run (or resume) the matrix on the first ``n_tasks`` tasks of ``split`` (``train``: the training tasks;
    ``heldout``: the held-out contexts and family, whose matrix gives their oracle), or on ``tasks`` of the plan
    where given; returns all its runs.
    With the batched runner, lock-step batches hold at most ``max_agents`` runs: runs are stored when their
    batch ends, so smaller batches lose less to a kill (the engine is batch-invariant: results do not change)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if tasks is None:
        tasks = plan.collection_order() if split == "train" else [*plan.heldout_contexts, *plan.heldout_family]
    unknown = [t for t in tasks if t not in plan.all_tasks()]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a task of plan {plan.name!r}")
    store = RunStore(plan.runs_path)  # a diverged configuration scores as the random policy, and is not retried
    if runner == "batched" and max_agents is not None:
        from hypermeta.engine.batched import BatchedRunner

        runner = BatchedRunner(max_agents=max_agents)
    run_jobs_scoring_divergence(plan.jobs(tasks[:n_tasks]), store, workers=workers, progress=progress, runner=runner)
    return store.frame()


def matrix_scores(plan: MatrixPlan, runs: pd.DataFrame, tasks: list[str] | None = None) -> pd.DataFrame:
    """One row per (task, portfolio configuration) of the tasks whose matrix is complete (every configuration on
    every planned seed at the planned budget; other runs in the file, e.g. of an earlier budget, are ignored).

    ``auc`` is the normalised AUC of the runs (0 = random policy, 1 = the env's reward threshold); ``score``
    renormalises it per task so that 1 = the best portfolio mean on that task (``score = auc_mean / best``;
    0 stays the random policy), which puts every family on one scale. A task where no configuration beats the
    random policy on average (``best <= 0``) carries no signal and is left out (:func:`matrix_gaps` lists it).
    """
    out = []
    for task in tasks if tasks is not None else plan.all_tasks():
        sel = _planned_runs(plan, runs, task)
        if sel is None:
            continue
        stats = sel.groupby(["method", "config_key"], sort=False).agg(
            auc_mean=("auc", "mean"), auc_std=("auc", "std"), n_seeds=("auc", "size"),
            config=("config", "first")).reset_index()
        best = float(stats["auc_mean"].max())
        if not best > 0:
            continue
        stats["auc_se"] = stats["auc_std"] / np.sqrt(stats["n_seeds"])
        stats.insert(0, "task", task)
        stats["best_auc"] = best
        stats["score"] = stats["auc_mean"] / best
        stats["score_se"] = stats["auc_se"] / best
        out.append(stats)
    cols = ["task", "method", "config_key", "auc_mean", "auc_std", "n_seeds", "config", "auc_se", "best_auc",
            "score", "score_se"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def matrix_gaps(plan: MatrixPlan, runs: pd.DataFrame, tasks: list[str]) -> dict[str, float]:
    """The tasks whose matrix is complete but where no portfolio configuration beats the random policy on
    average (best mean normalised AUC <= 0), with that best mean: they cannot be normalised and carry no signal."""
    out = {}
    for task in tasks:
        sel = _planned_runs(plan, runs, task)
        if sel is not None:
            best = float(sel.groupby("config_key")["auc"].mean().max())
            if not best > 0:
                out[task] = best
    return out


def _planned_runs(plan: MatrixPlan, runs: pd.DataFrame, task: str) -> pd.DataFrame | None:
    """The runs of ``task`` that the plan asks for, or None while any of them is missing."""
    if runs.empty:
        return None
    keys = {(config_key(j.config), j.seed) for j in plan.jobs([task])}
    sel = runs[(runs["task"] == task) & (runs["timesteps"] == plan.budget(task))]
    sel = sel[[(k, int(s)) in keys for k, s in zip(sel["config_key"], sel["seed"])]]
    sel = sel.drop_duplicates(["config_key", "seed"])
    return sel if len(sel) == len(keys) and np.isfinite(sel["auc"]).all() else None


def incomplete_tasks(plan: MatrixPlan, runs: pd.DataFrame, tasks: list[str]) -> list[str]:
    """Those of ``tasks`` whose matrix still lacks planned runs."""
    return [t for t in tasks if _planned_runs(plan, runs, t) is None]


def matrix_dataset(plan: MatrixPlan, runs: pd.DataFrame, tasks: list[str] | None = None) -> pd.DataFrame:
    """The meta-training dataset of the complete training tasks, in the columns ``hypermeta meta-train`` reads
    (``task``, ``f_<feature>``, ``x_<code>``, ``objective`` = the per-task ``score`` of :func:`matrix_scores`, and
    every configuration field as ``c_<field>``, from which it records the DQN settings the data came from)."""
    from hypermeta.seeds import FEATURE_SEED
    from hypermeta.tasks.features import FEATURE_NAMES, probe_features

    space = get_space("schedule")
    scores = matrix_scores(plan, runs, plan.train_tasks() if tasks is None else tasks)
    rows = []
    for task, group in scores.groupby("task", sort=False):
        feats = probe_features(task, seed=FEATURE_SEED)
        for _, r in group.iterrows():
            config = DQNConfig.from_dict(json.loads(r["config"]))
            row = {"task": task, "family": get_task(task).family.name, "method": r["method"],
                   "config_key": r["config_key"], "timesteps": plan.budget(task), "objective": r["score"],
                   "objective_se": r["score_se"], "auc_mean": r["auc_mean"], "best_auc": r["best_auc"],
                   "n_seeds": r["n_seeds"]}
            row.update({f"f_{n}": v for n, v in zip(FEATURE_NAMES, feats.values)})
            row.update({f"x_{n}": v for n, v in zip(space.encoded_names, space.encode(config))})
            row.update({f"c_{k}": v for k, v in config.to_dict().items()})  # the fixed settings too (meta-train)
            rows.append(row)
    return pd.DataFrame(rows)


def export_matrix_dataset(plan: MatrixPlan, out: str | Path | None = None) -> tuple[pd.DataFrame, Path]:
    """Write :func:`matrix_dataset` of the runs collected so far (default: ``dataset.csv`` beside the plan)."""
    frame = matrix_dataset(plan, RunStore(plan.runs_path).frame())
    path = Path(out) if out else Path(plan.path).parent / "dataset.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame, path


#: ``--status`` estimates a family's time per run from this many of its latest stored runs
RECENT_RUNS = 256


def matrix_progress(plan: MatrixPlan, runs: pd.DataFrame) -> pd.DataFrame:
    """Per split and family: tasks planned and complete, planned runs stored, and the CPU time the missing runs
    need, estimated from the median ``wall_time`` of the family's latest :data:`RECENT_RUNS` stored runs at its
    budget (the latest, because the engine has become cheaper over time; one core per worker; NaN before the
    family has any)."""
    train = set(plan.train_tasks())
    rows: dict[tuple[str, str], dict] = {}
    for task in plan.all_tasks():
        family = get_task(task).family.name
        row = rows.setdefault(("train" if task in train else "heldout", family), {
            "split": "train" if task in train else "heldout", "family": family, "budget": plan.budget(task),
            "tasks": 0, "complete": 0, "runs": 0, "planned": 0, "walls": []})
        keys = {(config_key(j.config), j.seed) for j in plan.jobs([task])}
        sel = runs[(runs["task"] == task) & (runs["timesteps"] == plan.budget(task))] if len(runs) else runs
        planned = [(k, int(s)) in keys for k, s in zip(sel["config_key"], sel["seed"])] if len(sel) else []
        sel = sel[planned] if len(sel) else sel
        done = {(k, int(s)) for k, s in zip(sel["config_key"], sel["seed"])}
        row["tasks"] += 1
        row["complete"] += len(done) == len(keys)
        row["runs"] += len(done)
        row["planned"] += len(keys)
        row["walls"] += list(zip(sel.index, sel["wall_time"].astype(float))) if len(sel) else []
    out = pd.DataFrame(rows.values())
    wall = out.pop("walls").map(lambda w: float(np.median([t for _, t in sorted(w)[-RECENT_RUNS:]])) if w
                                else float("nan"))
    by_family = pd.Series(wall.values, index=out["family"]).groupby(level=0).max()  # a family's runs cost alike
    out["s_per_run"] = out["family"].map(by_family)
    out["remaining_core_h"] = (out["planned"] - out["runs"]) * out["s_per_run"] / 3600
    return out


def format_progress(progress: pd.DataFrame) -> str:
    lines = [f"{'split':<8} {'family':<12} {'budget':>7} {'tasks':>9} {'runs':>13} {'s/run':>6} {'left (core-h)':>14}"]
    for r in progress.itertuples():
        lines.append(f"{r.split:<8} {r.family:<12} {r.budget:>7} {r.complete:>4}/{r.tasks:<4} {r.runs:>6}/{r.planned:<6} "
                     f"{r.s_per_run:>6.1f} {r.remaining_core_h:>14.1f}")
    unknown = progress.loc[progress["s_per_run"].isna(), "family"].unique().tolist()
    if len(unknown) == progress["family"].nunique():
        lines.append("left in all: unknown until a family has stored runs (their times give the estimate)")
    else:
        total = progress["remaining_core_h"].sum()
        lines.append(f"left in all: {total:.1f} core-hours" + (f" (not counting {', '.join(unknown)}: no runs yet)"
                                                             if unknown else "") + "; divide by --workers")
    return "\n".join(lines)


def matrix_summary(runs: pd.DataFrame) -> str:
    if runs.empty:
        return "no runs yet"
    per_task = runs.groupby("task")["seed"].count()
    return (f"{len(runs)} runs on {len(per_task)} tasks ({runs['method'].nunique()} configurations; "
            f"{int(per_task.min())}-{int(per_task.max())} runs per task)")
