"""Meta-learner v3's pre-registered evaluation (``hypermeta meta-eval PLAN``): the methods of
``studies/v3/plan.yaml`` on its 40 new held-out contexts and its held-out family, on the test seeds, paired.

The evaluation runs in steps, in this order (each resumable: finished runs are read back from the stores in
``PLAN's folder/eval/``, and ``steps.json`` records the steps done):

* ``predictions``: meta-learner v2's shipped winner on every held-out task, with its OOD fallback (as shipped),
  without it, and with the structure rule (item 0 of the plan): task features only, no run;
* ``init-choice``: the reptile and first-order MAML starts under best-fixed's schedule on the ES validation tasks
  (training contexts) with validation seeds :data:`INIT_CHOICE_SEED_START` + j; the one with the higher mean
  normalised AUC enters the start x control 2 x 2 (never chosen on a held-out context);
* ``v2``: best-fixed and the three v2-winner variants (item 0 of the issue: the fallback re-test comes first);
* ``baselines``: base, sb3-default and the hand-written rule;
* ``starts``: the four Q-network starts under best-fixed's schedule (the 40 contexts; Taxi has no start);
* ``controller``: the shipped candidate of meta-training, and the chosen start with it (only once meta-training
  has ended, so that no held-out run of the controller exists while it could still change);
* ``trajectories``: the lr and epsilon the controller chose on the first context of each family and the held-out
  family's default context (test seed 0), beside best-fixed's schedules, for the report's plot;
* ``sb3-settings``: the secondary comparison under SB3's default DQN settings on the first 2 contexts per family;
* ``tpe``: the controller on meta2's 16 held-out contexts, against meta2's Optuna TPE best-of-k test runs;
* ``confirm``: controller and best-fixed with the SB3 runner on every held-out task, :data:`CONFIRM_SEEDS` seeds.

The score is the normalised AUC of every run (0 = the random policy, 1 = the family's reference return): the new
contexts have no matrix, so meta2's per-task rescaling does not apply. ``hypermeta meta-eval PLAN --render``
writes the report (:mod:`hypermeta.reports.v3`) from what exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermeta.engine.measurement import Measurement
from hypermeta.engine.pipeline import RUN_COLUMNS, RunStore, run_jobs_scoring_divergence, run_row
from hypermeta.engine.runner import Job
from hypermeta.files import git_commit, platform_fingerprint, read_yaml, write_text_atomic
from hypermeta.search.baselines import SB3_DEFAULT
from hypermeta.seeds import CONTROL_VALIDATION_SEED_START, test_seeds
from hypermeta.space import DQNConfig

#: Validation seeds of the start choice: 42,100,000 + j (their evaluation episodes 43,100,000 + j), apart from the
#: controller's validation seeds (42,000,000 + j) and every other range of :mod:`hypermeta.seeds`.
INIT_CHOICE_SEED_START = CONTROL_VALIDATION_SEED_START + 100_000
INIT_CHOICE_SEEDS = 2
#: SB3-runner confirmation seeds per held-out task (the plan's 5).
CONFIRM_SEEDS = 5
STARTS = ("reptile", "fomaml", "transfer", "multitask")
STEPS = ("predictions", "init-choice", "v2", "baselines", "starts", "controller", "trajectories", "sb3-settings", "tpe",
         "confirm")
STEP_METHODS = {
    "v2": ("best-fixed", "v2-winner", "v2-winner-no-fallback", "v2-winner-structure-fallback"),
    "baselines": ("base", "sb3-default", "hand-rule"),
    "starts": tuple(f"init-{s}" for s in STARTS),
    "controller": ("controller", "init-best+controller"),
}
#: The steps that train runs (the others write predictions, the start choice or the trajectories), and those that
#: run the controller (only once its meta-training has ended).
RUN_STEPS = (*STEP_METHODS, "sb3-settings", "tpe", "confirm")
CONTROLLER_STEPS = ("controller", "trajectories", "sb3-settings", "tpe", "confirm")
#: The secondary comparison under SB3's default DQN settings: these methods, on the first contexts per family.
SB3_SETTINGS_METHODS = ("sb3:controller", "sb3:sb3-default", "sb3:best-fixed")
SB3_SETTINGS_PER_FAMILY = 2
#: The ``tpe`` step: the controller, and the configurations of meta2's stored TPE and best-fixed test runs trained
#: again on this machine (meta2's runs were made under another torch build and CPU, so they are not bit-identical
#: to what this machine makes of the same jobs: the re-runs pair run by run; a deviation dated 2026-12-06).
TPE_RERUNS = ("rerun:optuna-tpe@20", "rerun:optuna-tpe@50", "rerun:best-fixed")
TPE_METHODS = ("controller", *TPE_RERUNS)
V2_VARIANTS = {"v2-winner": True, "v2-winner-no-fallback": False, "v2-winner-structure-fallback": "structure"}


class EvaluationError(ValueError):
    """A step that cannot run yet (one line: what is missing and the command that makes it)."""


@dataclass
class V3Evaluation:
    """The plan's evaluation: its tasks, budgets, methods and stores."""

    plan_path: Path

    @classmethod
    def load(cls, path: str | Path) -> V3Evaluation:
        path = Path(path)
        if not path.is_file():
            raise EvaluationError(f"plan file {str(path)!r} does not exist")
        return cls(path)

    @cached_property
    def plan(self) -> dict:
        return read_yaml(self.plan_path, "v3 plan file")

    @cached_property
    def problem(self) -> Any:
        from hypermeta.lab.control_training import Problem

        return Problem(self.plan["matrix_plan"])

    @property
    def root(self) -> Path:
        return self.plan_path.parent

    @property
    def out(self) -> Path:
        return self.root / "eval"

    @cached_property
    def contexts(self) -> dict[str, list[str]]:
        """The held-out contexts per family, interpolation first (studies/v3/contexts.yaml)."""
        data = read_yaml(self.root / "contexts.yaml", "held-out contexts file")
        return {fam: [*parts["interpolation"], *parts["extrapolation"]] for fam, parts in data.items()}

    @cached_property
    def family_tasks(self) -> list[str]:
        """The held-out family's contexts: every combination of its switches (Taxi: rain x fickle passenger)."""
        from itertools import product

        from hypermeta.tasks.families import get_family, get_task

        fam = get_family(self.plan["evaluation"]["heldout_family"]["family"])
        names = list(fam.context_space)
        tasks = []
        for values in product((0, 1), repeat=len(names)):
            ctx = ",".join(f"{n}={v}" for n, v in zip(names, values) if v)
            tasks.append(get_task(f"{fam.name}:{ctx}" if ctx else fam.name).id)
        return tasks

    @property
    def context_tasks(self) -> list[str]:
        return [t for ts in self.contexts.values() for t in ts]

    @property
    def held_out_tasks(self) -> list[str]:
        """Every held-out task: the new contexts, then the held-out family's tasks."""
        return [*self.context_tasks, *self.family_tasks]

    def budget(self, task: str) -> int:
        family = task.partition(":")[0]
        held = self.plan["evaluation"]["heldout_family"]
        return int(held["budget"]) if family == held["family"] else self.problem.plan.budget(task)

    def measurement(self, task: str) -> Measurement:
        return Measurement(self.budget(task), 5, 5)

    @property
    def controller_path(self) -> Path:
        return self.root / "controller" / "controller.safetensors"

    @cached_property
    def es_settings(self) -> Any:
        from hypermeta.lab.control_training import ESSettings

        return ESSettings(**self.plan.get("meta_training", {}))

    def es_state(self) -> Any:
        """The controller's meta-training state (:class:`~hypermeta.lab.control_training.ESState`), None before it
        starts."""
        from hypermeta.lab.control_training import ESState

        path = self.root / "controller" / "es_state.json"
        return ESState.load(path) if path.is_file() else None

    def start_path(self, task: str, method: str) -> Path | None:
        """The start of ``method`` for ``task``'s family (the plan's paths are relative to the repository root, the
        folder ``hypermeta meta-eval`` runs in); None for a family the plan makes no start for (the held-out
        family), and an error when a start the plan makes is missing."""
        family = task.partition(":")[0]
        if family not in self.plan["init_starts"]["families"]:
            return None
        path = Path(self.plan["init_starts"]["out"]) / f"{family}-{method}.safetensors"
        if not path.is_file():
            raise EvaluationError(f"{path} does not exist: run `bash studies/v3/init_all.sh` (from the repository "
                                  "root) first")
        return path

    # --- the steps' state ---------------------------------------------------------------------------------------
    def steps(self) -> dict:
        path = self.out / "steps.json"
        return json.loads(path.read_text()) if path.is_file() else {"done": {}}

    def mark(self, step: str, **info: Any) -> None:
        state = self.steps()
        state["done"][step] = {"time": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "commit": git_commit(),
                               "platform": platform_fingerprint(), **info}
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "steps.json", json.dumps(state, indent=1) + "\n")

    def done(self, step: str) -> bool:
        return step in self.steps()["done"]

    def meta_training_ended(self) -> tuple[bool, str]:
        settings, state = self.es_settings, self.es_state()
        if state is None:
            return False, "meta-training has not started"
        return settings.ended(state), (f"generation {state.generation} of {settings.generations}, "
                                       f"{state.cpu_seconds / 3600:.2f} of {settings.cpu_hours:g} CPU-hours")

    # --- methods -------------------------------------------------------------------------------------------------
    @cached_property
    def predictions(self) -> pd.DataFrame:
        path = self.out / "predictions.csv"
        if not path.is_file():
            raise EvaluationError(f"no v2 predictions yet: run `hypermeta meta-eval {self.plan_path} --step predictions`")
        return pd.read_csv(path)

    def chosen_start(self) -> str:
        path = self.out / "init_choice.json"
        if not path.is_file():
            raise EvaluationError(f"the start of the 2 x 2 is not chosen yet: run `hypermeta meta-eval "
                                  f"{self.plan_path} --step init-choice`")
        return json.loads(path.read_text())["chosen"]

    def method_job(self, method: str, task: str, seed: int) -> Job | None:
        """The run of ``method`` on ``task`` with ``seed`` (None where the method does not apply: a start on a
        family that has none)."""
        best, controller = self.problem.base, str(self.controller_path)
        control = init = None
        config = best
        if method == "base":
            config = best.with_schedules(DQNConfig())
        elif method == "sb3-default":
            config = best.with_schedules(SB3_DEFAULT)
        elif method == "hand-rule":
            control = "rule"
        elif method in V2_VARIANTS:
            sel = self.predictions[(self.predictions["task"] == task) & (self.predictions["variant"] == method)]
            config = DQNConfig.from_dict(json.loads(sel["config"].iloc[0]))
        elif method.startswith("init-"):
            name = self.chosen_start() if method == "init-best+controller" else method.removeprefix("init-")
            init = self.start_path(task, name)
            if init is None:
                return None
            control = controller if method == "init-best+controller" else None
        elif method == "controller":
            control = controller
        elif method.startswith("rerun:"):  # a configuration of meta2's stored test runs, trained again here
            config = self.meta2_config(method.removeprefix("rerun:"), task)
        elif method.startswith("sb3:"):
            inner = method.removeprefix("sb3:")
            config = SB3_DEFAULT.with_schedules(best) if inner != "sb3-default" else SB3_DEFAULT
            control = controller if inner == "controller" else None
        elif method != "best-fixed":
            raise ValueError(f"unknown v3 method {method!r}")
        return Job(task, method, config, self.measurement(task), seed, control=control,
                   init=None if init is None else str(init))

    def jobs(self, methods: tuple[str, ...] | list[str], tasks: list[str], n_seeds: int) -> list[Job]:
        """Task by task, seed by seed, every method: a step cut short leaves complete pairs behind (the keys, and so
        the stored runs, do not depend on the order)."""
        jobs = [self.method_job(m, t, s) for t in tasks for s in test_seeds(n_seeds) for m in methods]
        return [j for j in jobs if j is not None]

    @property
    def test_seeds(self) -> int:
        return int(self.plan["evaluation"]["test_seeds"])

    def sb3_settings_tasks(self) -> list[str]:
        return [t for ts in self.contexts.values() for t in ts[:SB3_SETTINGS_PER_FAMILY]]

    def tpe_tasks(self) -> list[str]:
        return list(self.problem.plan.heldout_contexts)

    @cached_property
    def meta2_runs(self) -> pd.DataFrame:
        """meta2's stored test runs on its held-out contexts (the ``tpe`` step's other side)."""
        path = Path(self.problem.plan.path).parent / "heldout" / "runs_by_method.csv"
        if not path.is_file():
            raise EvaluationError(f"{path} does not exist: the tpe step pairs with meta2's stored test runs")
        return pd.read_csv(path)

    def meta2_config(self, method: str, task: str) -> DQNConfig:
        """The configuration meta2's ``method`` (e.g. ``optuna-tpe@20``: that study's choice) ran on ``task``."""
        configs = set(self.meta2_runs.loc[(self.meta2_runs["method"] == method) & (self.meta2_runs["task"] == task),
                                          "config"])
        if len(configs) != 1:
            raise EvaluationError(f"meta2's {method!r} has {len(configs)} configurations on {task!r}, not one")
        return DQNConfig.from_dict(json.loads(configs.pop()))

    def all_jobs(self, step: str) -> tuple[list[Job], str]:
        """A step's runs and the store they go to (``engine`` or ``sb3``)."""
        if step in STEP_METHODS:
            return self.jobs(STEP_METHODS[step], self.held_out_tasks, self.test_seeds), "engine"
        if step == "sb3-settings":
            return self.jobs(SB3_SETTINGS_METHODS, self.sb3_settings_tasks(), self.test_seeds), "engine"
        if step == "tpe":  # TPE's and best-fixed's test runs on these tasks are meta2's (studies/meta2/heldout), and
            return self.jobs(TPE_METHODS, self.tpe_tasks(), self.test_seeds), "engine"  # trained again here
        if step == "confirm":
            return self.jobs(("controller", "best-fixed"), self.held_out_tasks, CONFIRM_SEEDS), "sb3"
        raise ValueError(f"step {step!r} has no runs")

    def store(self, kind: str) -> RunStore:
        return RunStore(self.out / ("runs.csv" if kind == "engine" else "runs_sb3.csv"))

    def runs(self, steps: tuple[str, ...] | list[str], kind: str = "engine") -> pd.DataFrame:
        """The stored runs of the steps that are done, under their method labels (reads only)."""
        store, jobs = self.store(kind), []
        for step in (s for s in steps if s in RUN_STEPS and self.done(s)):
            step_jobs, step_kind = self.all_jobs(step)
            jobs += step_jobs if step_kind == kind else []
        rows = [row for row in map(store.get, jobs) if row is not None]  # under each job's method label
        return pd.DataFrame(rows, columns=RUN_COLUMNS)


# --- the steps ---------------------------------------------------------------------------------------------------
def predict_v2(ev: V3Evaluation) -> pd.DataFrame:
    """The shipped v2 winner's three variants on every held-out task (features probed once per task)."""
    from hypermeta.meta.predict import load_predictor
    from hypermeta.seeds import FEATURE_SEED
    from hypermeta.tasks.features import probe_features

    model = load_predictor(None)
    rows = []
    for task in ev.held_out_tasks:
        features = probe_features(task, seed=FEATURE_SEED)
        for variant, fallback in V2_VARIANTS.items():
            p = model.predict(features, warn=False, fallback=fallback)
            rows.append({"task": task, "variant": variant, "config": json.dumps(p.config.to_dict()),
                         "out_of_distribution": p.out_of_distribution, "fallback": p.fallback,
                         "ood_score": p.ood_score, "nearest_task": p.nearest_task})
    frame = pd.DataFrame(rows)
    ev.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(ev.out / "predictions.csv", frame.to_csv(index=False))
    return frame


def choose_start(ev: V3Evaluation, workers: int = 1, progress: bool = False, max_agents: int | None = None) -> dict:
    """Reptile vs first-order MAML on the ES validation tasks (training contexts) and the start-choice seeds; the
    higher mean normalised AUC (meta2's normalisation, as meta-training's validation) is chosen."""
    from hypermeta.engine.batched import BatchedRunner

    problem = ev.problem
    tasks = problem.validation_tasks(ev.es_settings)
    jobs = []
    for method in ("reptile", "fomaml"):
        for task in tasks:
            init = ev.start_path(task, method)
            jobs += [Job(task, method, problem.base, ev.measurement(task), INIT_CHOICE_SEED_START + j, init=str(init))
                     for j in range(INIT_CHOICE_SEEDS)]
    rows = run_jobs_scoring_divergence(jobs, RunStore(ev.out / "init_choice_runs.csv"), workers=workers,
                                       progress=progress, runner=BatchedRunner(max_agents))
    rows["score"] = [problem.score(r) for _, r in rows.iterrows()]
    means = rows.groupby("method")["score"].mean()
    families = rows.assign(family=rows["task"].str.partition(":")[0]).pivot_table(
        index="family", columns="method", values="score")
    choice = {"chosen": str(means.idxmax()), "means": means.round(6).to_dict(), "tasks": tasks,
              "seeds": [INIT_CHOICE_SEED_START + j for j in range(INIT_CHOICE_SEEDS)],
              "per_family": families.round(6).to_dict(orient="index")}
    write_text_atomic(ev.out / "init_choice.json", json.dumps(choice, indent=1) + "\n")
    return choice


def same_curve(row: Any, curve: Any) -> bool:
    """Whether a stored run (its ``curve`` column: the evaluations' returns as JSON) is ``curve``'s run."""
    return json.loads(row["curve"]) == curve.returns


def trajectories(ev: V3Evaluation, points: int = 101) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The lr and epsilon a controller chose during runs (:attr:`~hypermeta.engine.measurement.Curve.control`) on
    a grid of ``points`` steps, beside its base schedules, on a few held-out tasks: ``eval/trajectories.csv``, and
    the tasks whose run failed (left out). The runs are the controller's held-out runs on test seed 0 again (the
    engine is deterministic on one platform: the same runs), as the run store keeps curves, not control logs; the
    third list names the tasks whose re-run's curve is not the stored run's (empty on the platform that made them,
    which ``steps.json`` records)."""
    from hypermeta.controller import ControlledSchedule
    from hypermeta.engine.batched import BatchedRunner

    tasks = [ts[0] for ts in ev.contexts.values()] + ev.family_tasks[:1]
    jobs = [ev.method_job("controller", t, test_seeds(1)[0]) for t in tasks]
    store = ev.store("engine")
    rows, failed, differ = [], [], []
    for job, curve in BatchedRunner().run_many(jobs):
        if isinstance(curve, BaseException):
            failed.append(job.task)
            continue
        stored = store.get(job)
        if stored is not None and not same_curve(stored, curve):
            differ.append(job.task)  # one platform gives one curve: another platform (steps.json) or a bug
        lr, eps = job.config.lr_schedule(), job.config.exploration_schedule()
        total = job.measurement.timesteps
        for step in np.linspace(0, total, points).round().astype(int):
            u_lr, u_eps = next(((a, b) for s, a, b in reversed(curve.control) if s <= step), (0.0, 0.0))
            p = 1.0 - step / total
            rows.append({"task": job.task, "step": int(step), "lr": ControlledSchedule(lr, "lr", u_lr)(p),
                         "eps": ControlledSchedule(eps, "eps", u_eps)(p), "base_lr": lr(p), "base_eps": eps(p)})
    frame = pd.DataFrame(rows)
    ev.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(ev.out / "trajectories.csv", frame.to_csv(index=False))
    return frame, failed, differ


def reproduce_meta2(ev: V3Evaluation) -> dict:
    """Before the ``tpe`` step pairs new controller runs with meta2's stored ones: best-fixed on the first test seed
    of the first ``tpe`` task of each family, trained again now, against meta2's stored run (the same curve on the
    platform that made it; on another, a different but equally valid run: the report says how many matched)."""
    from hypermeta.engine.batched import BatchedRunner

    stored = ev.meta2_runs
    stored = stored[stored["method"] == "best-fixed"].set_index(["task", "seed"])
    firsts: dict[str, str] = {}
    for task in ev.tpe_tasks():
        firsts.setdefault(task.partition(":")[0], task)
    tasks = list(firsts.values())
    seed = test_seeds(1)[0]
    jobs = [ev.method_job("best-fixed", t, seed) for t in tasks]
    rows = {}
    for job, curve in BatchedRunner().run_many(jobs):
        old = stored.loc[(job.task, seed)]
        failed = isinstance(curve, BaseException)
        rows[job.task] = {"stored_auc": float(old["auc"]), "auc": None if failed else float(run_row(job, curve)["auc"]),
                          "same_curve": not failed and same_curve(old, curve)}
    return {"seed": seed, "tasks": rows, "identical": sum(r["same_curve"] for r in rows.values())}


def run_step(ev: V3Evaluation, step: str, workers: int = 1, progress: bool = False,
             max_agents: int | None = None) -> str:
    """Run (or resume) one step; returns a line saying what it did. ``max_agents``: the engine's runs per lock-step
    batch (a batch's runs are stored when it ends, so smaller batches lose less to a kill; results do not depend on
    it); default: the engine's own."""
    if step not in STEPS:
        raise EvaluationError(f"unknown step {step!r}: one of {', '.join(STEPS)}")
    if ev.done(step):  # a done step is never redone: its choices (the start, the predictions) stay as first made
        info = ev.steps()["done"][step]
        return f"step {step}: done at {info['time']} (commit {info.get('commit')}); skipped"
    if step == "predictions":
        frame = predict_v2(ev)
        ev.mark(step)
        return f"v2 predictions on {frame['task'].nunique()} held-out tasks -> {ev.out / 'predictions.csv'}"
    if step == "init-choice":
        choice = choose_start(ev, workers, progress, max_agents)
        ev.mark(step, chosen=choice["chosen"])
        return f"start of the 2 x 2: {choice['chosen']} (validation means {choice['means']})"
    controller = _check_ready(ev, step)
    if step == "trajectories":
        frame, failed, differ = trajectories(ev)
        ev.mark(step, controller=controller, failed=failed, differ_from_stored=differ)
        return (f"the controller's lr and epsilon on {frame['task'].nunique()} tasks -> {ev.out / 'trajectories.csv'}"
                + (f"; failed runs: {failed}" if failed else "")
                + (f"; NOT the stored runs' curves: {differ}" if differ else "; the same curves as the stored runs"))
    extra = {"reproduced": reproduce_meta2(ev)} if step == "tpe" else {}
    jobs, kind = ev.all_jobs(step)
    from hypermeta.engine.batched import BatchedRunner

    runner = "sb3" if kind == "sb3" else BatchedRunner(max_agents)
    store = ev.store(kind)
    todo = sum(store.get(j) is None for j in jobs)
    run_jobs_scoring_divergence(jobs, store, workers=workers, progress=progress, runner=runner)
    ev.mark(step, runs=len(jobs), **({"controller": controller} if controller else {}), **extra)
    return f"step {step}: {len(jobs)} runs ({todo} trained now) -> {store.path}"


def _check_ready(ev: V3Evaluation, step: str) -> str | None:
    """One line naming what a step still needs, before any of its runs; for the controller's steps, the key of the
    controller they run (the candidate of the ended meta-training, checked against its state)."""
    needs = {"v2": ["predictions"], "baselines": [], "starts": ["init-choice"], "controller": ["init-choice"],
             "trajectories": ["controller"], "sb3-settings": [], "tpe": [], "confirm": []}[step]
    for other in needs:
        if not ev.done(other):
            raise EvaluationError(f"step {step!r} needs step {other!r} first: `hypermeta meta-eval {ev.plan_path} "
                                  f"--step {other}`")
    if step in CONTROLLER_STEPS:
        ended, where = ev.meta_training_ended()
        if not ended:
            raise EvaluationError(f"meta-training has not ended ({where}): finish it with `hypermeta meta-control "
                                  f"{ev.plan_path}` before any held-out run of the controller")
        return check_candidate(ev)
    return None


def check_candidate(ev: V3Evaluation) -> str:
    """The candidate file must be the one the ended meta-training's state selects (the best validation check above
    0), not one left by an earlier, shorter call; returns its key."""
    from hypermeta.controller import LinearController
    from hypermeta.lab.control_training import best_check

    best = best_check(ev.es_state())
    if best is None:
        raise EvaluationError("no validation check of the meta-training was above best-fixed, so the plan ships no "
                              "controller and its controller steps do not run")
    if not ev.controller_path.is_file():
        raise EvaluationError(f"{ev.controller_path} does not exist: run `hypermeta meta-control {ev.plan_path}` once "
                              "more (it writes the candidate of the ended meta-training and stops)")
    ctl = LinearController.load(ev.controller_path)
    if ctl.meta.get("generation") != best["generation"] or not np.allclose(ctl.weights.ravel(), best["theta"]):
        raise EvaluationError(f"{ev.controller_path} is not the candidate of the ended meta-training (the check after "
                              f"generation {best['generation']}): run `hypermeta meta-control {ev.plan_path}` once "
                              "more to write it")
    return ctl.key
