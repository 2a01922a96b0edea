"""The few-shot benchmark of ``hypermeta tune`` (``hypermeta fewshot PLAN``; report under ``studies/reports/tune/``).

For every task of a pre-registered plan (``studies/tune/plan.yaml``), all with the same budget, tuning seeds
per trial and fixed DQN settings (those of the meta-learner's weights):

* a cold Optuna TPE study of ``max(cold_trials)`` trials (no pruning); its best trial among the first k is
  ``cold@k`` for every k in ``cold_trials``;
* ``hypermeta tune`` with ``tune_trials`` trials for every sampler in ``samplers`` (``tune-<sampler>@<n>``);
* every chosen configuration re-trained on the plan's test seeds (paired: the same seeds for all).

Studies live in ``<plan dir>/studies.db`` and test runs in ``<plan dir>/runs.csv``: every stage resumes. The
renderer (:mod:`hypermeta.reports.fewshot`) reads ``runs_by_method.csv`` and ``progress.csv`` (best-so-far
objective against environment steps spent, per study).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from optuna.trial import TrialState

from hypermeta.engine.measurement import Measurement, Normalizer
from hypermeta.engine.pipeline import (BOOTSTRAP_REPS, RunStore, config_key, paired_difference, paired_scores,
                                       run_jobs_scoring_divergence)
from hypermeta.search.proposers import PROPOSERS
from hypermeta.engine.runner import RUNNERS, Job
from hypermeta.search.study import StudySpec, best_config_of, finished_in_order, run_study, stored_study
from hypermeta.search.tune import tune
from hypermeta.files import dataclass_from_yaml, git_commit, write_text_atomic
from hypermeta.seeds import test_seeds
from hypermeta.space import DQNConfig, get_space


@dataclass
class FewShotPlan:
    name: str
    tasks: list[dict[str, Any]]  # {task, timesteps, runner}
    samplers: list[str] = field(default_factory=lambda: ["tpe"])
    tune_trials: int = 8
    cold_trials: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    #: batched runner: trials each worker of a cold study asks at once (all of a batch is chosen before any of
    #: its results, so the first workers x cold_batch trials are TPE's random start)
    cold_batch: int = 8
    seeds_per_trial: int = 3
    test_seeds: int = 10
    weights: str | None = None  # the meta-learner tune uses (default: the shipped weights)
    #: the network meta-learner whose few-shot step the ``adapt`` sampler takes (default: ``weights``)
    adapt_weights: str | None = None
    meta_data: str | None = None  # metatpe's dataset of training-task trials
    #: a meta-learner v2 plan whose held-out evaluation runs Optuna TPE on some of these tasks with the same
    #: settings: those tasks' cold studies are that plan's TPE studies (`meta2 heldout` runs their first trials,
    #: this benchmark continues them to max(cold_trials)), not a second study of the same thing
    cold_from: str | None = None
    #: tasks on which the default sampler is chosen (the first sampler, unless another beats it there with a
    #: paired CI above 0); the targets are then judged on the other tasks only
    selection_tasks: list[str] = field(default_factory=list)
    target: str = ""
    path: str = ""
    #: ``cold_from``'s shared studies, found (and their settings checked) once, when the plan is loaded
    _shared: dict[str, tuple[str, str]] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for entry in self.tasks:
            if set(entry) - {"task", "timesteps", "runner"} or "task" not in entry or "timesteps" not in entry:
                raise ValueError(f"plan {self.name!r}: each task needs `task` and `timesteps` (and optionally "
                                 f"`runner`), got {entry}")
            if entry.setdefault("runner", "batched") not in RUNNERS:
                raise ValueError(f"plan {self.name!r}: runner must be one of {list(RUNNERS)}, got {entry['runner']!r}")
            Measurement(int(entry["timesteps"]))
        names = [e["task"] for e in self.tasks]
        if len(set(names)) < len(names):
            twice = sorted(t for t in set(names) if names.count(t) > 1)[0]
            raise ValueError(f"plan {self.name!r}: task {twice!r} is listed twice")
        if self.cold_batch < 1:
            raise ValueError(f"plan {self.name!r}: cold_batch must be >= 1, got {self.cold_batch}")
        unknown = sorted(set(self.samplers) - set(PROPOSERS))
        if unknown:
            raise ValueError(f"plan {self.name!r}: unknown sampler(s) {unknown}; choose from {list(PROPOSERS)}")
        unknown = sorted(set(self.selection_tasks) - {e["task"] for e in self.tasks})
        if unknown:
            raise ValueError(f"plan {self.name!r}: selection tasks {unknown} are not among its tasks")
        if len(set(self.selection_tasks)) >= len(self.tasks):
            raise ValueError(f"plan {self.name!r}: the selection tasks leave no task to judge the targets on")
        if self.tune_trials < 1 or self.seeds_per_trial < 1 or self.test_seeds < 1 or min(self.cold_trials) < 1:
            raise ValueError(f"plan {self.name!r}: trial, seed and test-seed counts must be >= 1")
        if self.cold_from:
            self.shared_cold_studies()  # the shared studies' settings are checked now, before any training

    def shared_runs(self) -> RunStore | None:
        """``cold_from``'s held-out test runs (made with the batched runner, as the shared tasks' runs here), from
        which the identical test runs of the shared tasks are copied instead of trained again."""
        heldout = self._shared_heldout()
        return None if heldout is None else RunStore(heldout / "runs.csv")

    def shared_method_runs(self) -> pd.DataFrame | None:
        """``cold_from``'s held-out test runs with their method labels (``winner``, ``best-fixed``, ...), as of its
        last finished evaluation step; None without ``cold_from`` or before its first."""
        heldout = self._shared_heldout()
        path = None if heldout is None else heldout / "runs_by_method.csv"
        return pd.read_csv(path) if path is not None and path.is_file() else None

    def _shared_heldout(self) -> Path | None:
        """``cold_from``'s held-out folder, where it shares cold studies with this plan."""
        if not self.shared_cold_studies():
            return None
        from hypermeta.lab import meta2
        from hypermeta.lab.matrix import MatrixPlan

        return meta2.Paths.of(MatrixPlan.load(self.cold_from)).heldout

    def shared_cold_studies(self) -> dict[str, tuple[str, str]]:
        """``{task: (storage, study name)}`` of the tasks whose cold study is ``cold_from``'s TPE study."""
        if self._shared is None:
            self._shared = self._find_shared_cold_studies()
        return self._shared

    def _find_shared_cold_studies(self) -> dict[str, tuple[str, str]]:
        if not self.cold_from:
            return {}
        from hypermeta.lab import meta2
        from hypermeta.lab.matrix import MatrixPlan

        if not Path(self.cold_from).is_file():
            raise ValueError(f"plan {self.name!r}: cold_from {self.cold_from!r} does not exist")
        other = MatrixPlan.load(self.cold_from)
        settings = meta2.Paths.of(other).heldout / "settings.json"
        ran_with = json.loads(settings.read_text()).get("runner") if settings.is_file() else "batched"
        if ran_with != "batched":
            raise ValueError(f"plan {self.name!r}: the TPE studies of {self.cold_from!r} were run with the {ran_with} "
                             "runner; shared cold studies need the batched one")
        if (self.cold_batch, self.seeds_per_trial) != (meta2.TPE_BATCH, meta2.TPE_SEEDS_PER_TRIAL):
            raise ValueError(f"plan {self.name!r}: cold studies shared with {self.cold_from!r} need cold_batch "
                             f"{meta2.TPE_BATCH} and seeds_per_trial {meta2.TPE_SEEDS_PER_TRIAL}, as its TPE studies")
        shared = {}
        for entry in self.tasks:
            if entry["task"] in (*other.heldout_contexts, *other.heldout_family):
                if int(entry["timesteps"]) != other.budget(entry["task"]) or entry["runner"] != "batched":
                    raise ValueError(f"plan {self.name!r}: task {entry['task']!r} shares its cold study with "
                                     f"{self.cold_from!r}, so it needs that plan's budget "
                                     f"({other.budget(entry['task'])}) and the batched runner")
                shared[entry["task"]] = meta2.tpe_study(other, entry["task"])
        return shared

    @classmethod
    def load(cls, path: str | Path) -> FewShotPlan:
        return dataclass_from_yaml(cls, path, "few-shot plan")

    @property
    def root(self) -> Path:
        return Path(self.path).parent

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.root / 'studies.db'}"

    def cold_study(self, task: str) -> tuple[str, str]:
        """The storage URL and name of ``task``'s cold study (``cold_from``'s TPE study where it is shared)."""
        return self.shared_cold_studies().get(task, (self.storage, f"{self.name}|{task}|cold"))

    def tune_study_name(self, task: str, sampler: str) -> str:
        return f"{self.name}|{task}|tune-{sampler}"

    def studies(self, task: str) -> dict[str, tuple[str, str]]:
        """``{label: (storage, name)}`` of ``task``'s studies: ``cold`` and ``tune-<sampler>`` per sampler."""
        return {"cold": self.cold_study(task),
                **{f"tune-{s}": (self.storage, self.tune_study_name(task, s)) for s in self.samplers}}

    def fixed(self) -> dict[str, Any]:
        """The untuned settings: those the meta-learner's data came from (cold and tune studies alike)."""
        from hypermeta.meta.predict import load_predictor

        return get_space("schedule").untuned(load_predictor(self.weights).base)


PROGRESS_COLUMNS = ["task", "study", "trials", "env_steps", "best_so_far"]


def progress_rows(study: Any, task: str, label: str) -> list[dict]:
    """Best objective so far after each finished trial, with the environment steps spent until then."""
    rows, best, steps = [], -np.inf, 0
    for i, t in enumerate(finished_in_order(study), start=1):
        steps += int(t.user_attrs.get("env_steps", 0))
        if t.state == TrialState.COMPLETE and t.value is not None:  # a pruned trial's value is a partial one
            best = max(best, float(t.value))
        rows.append({"task": task, "study": label, "trials": i, "env_steps": steps, "best_so_far": best})
    return rows


def run_task(plan: FewShotPlan, entry: dict[str, Any], workers: int, progress: bool
             ) -> tuple[dict[str, DQNConfig], list[dict]]:
    task, steps, runner = entry["task"], int(entry["timesteps"]), entry["runner"]
    spec = StudySpec(task, steps, "schedule", plan.seeds_per_trial, fixed=plan.fixed())
    storage, name = plan.cold_study(task)
    batched = runner == "batched"  # TPE starts once a batch has finished (Optuna's default waits for 10 trials)
    cold = run_study(spec, max(plan.cold_trials), study_name=name, storage=storage,
                     sampler="tpe", pruner="none", workers=workers, progress=progress, runner=runner,
                     batch_size=plan.cold_batch if batched else 1, n_startup_trials=plan.cold_batch if batched else None)
    configs = {f"cold@{k}": best_config_of(cold, k) for k in plan.cold_trials}
    rows = progress_rows(cold, task, "cold")
    for sampler, config, tune_rows in tune_samplers(plan, entry, workers, progress):
        configs[f"tune-{sampler}@{plan.tune_trials}"] = config
        rows += tune_rows
    return configs, rows


def tune_sampler(plan: FewShotPlan, entry: dict[str, Any], sampler: str, progress: bool
                 ) -> tuple[str, DQNConfig, list[dict]]:
    """One sampler's ``tune`` study of the task: its best configuration and progress rows."""
    task = entry["task"]
    result = tune(task, plan.tune_trials, int(entry["timesteps"]), seeds_per_trial=plan.seeds_per_trial,
                  runner=entry["runner"], storage=plan.storage, study_name=plan.tune_study_name(task, sampler),
                  predictor=plan.weights, progress=progress, sampler=sampler, meta_data=plan.meta_data,
                  pruner="none",  # no pruning, as cold
                  adapt_predictor=plan.adapt_weights if sampler == "adapt" else None)
    return sampler, result.best, progress_rows(result.study, task, f"tune-{sampler}")


def tune_samplers(plan: FewShotPlan, entry: dict[str, Any], workers: int, progress: bool
                  ) -> list[tuple[str, DQNConfig, list[dict]]]:
    """Every sampler's ``tune`` study of the task, in the plan's order. A tune study runs in one process (its
    rounds are lock-step batches), so with several workers the samplers' studies run side by side, at most
    ``workers`` at once, one process each (independent studies; each is seeded as when run alone); the parent then
    reads the finished studies. If this process is stopped (Ctrl-C, SIGTERM) or a study fails, the running ones are
    terminated, as :func:`run_study` stops its workers: their finished trials are stored and a rerun resumes."""
    n = min(workers, len(plan.samplers))
    if n > 1:
        import multiprocessing
        import time

        from hypermeta.search.study import make_storage

        make_storage(plan.storage)  # the schema is created here: two processes creating it at once collide
        ctx = multiprocessing.get_context("spawn")
        errors = ctx.SimpleQueue()
        waiting, running = list(plan.samplers), []
        try:
            while waiting or running:
                while waiting and len(running) < n:
                    proc = ctx.Process(target=_tune_sampler_main, args=(plan, entry, waiting.pop(0), progress, errors))
                    proc.start()
                    running.append(proc)
                time.sleep(0.5)
                for proc in [p for p in running if not p.is_alive()]:
                    running.remove(proc)
                    if proc.exitcode != 0:
                        message = errors.get() if not errors.empty() else f"exit code {proc.exitcode}"
                        raise ValueError(f"a tune study of {entry['task']!r} failed ({message}); rerun to resume")
        except BaseException:
            for proc in running:
                proc.terminate()
            for proc in running:
                proc.join(10)
            raise
    return [tune_sampler(plan, entry, s, progress) for s in plan.samplers]  # after the processes: reads only


def _tune_sampler_main(plan: FewShotPlan, entry: dict[str, Any], sampler: str, progress: bool, errors: Any) -> None:
    import torch

    torch.set_num_threads(1)
    try:
        tune_sampler(plan, entry, sampler, progress)
    except BaseException as exc:
        errors.put(f"{sampler}: {' '.join(str(exc).split())}")
        raise SystemExit(1) from None


def _tune(plan: FewShotPlan, sampler: str) -> str:
    return f"tune-{sampler}@{plan.tune_trials}"


def _diff(runs: pd.DataFrame, a: str, b: str, tasks: list[str], reps: int = BOOTSTRAP_REPS) -> dict:
    return paired_difference(*paired_scores(runs, a, b, tasks), reps=reps)


def sampler_choice(plan: FewShotPlan, runs: pd.DataFrame, tasks: list[str] | None = None) -> tuple[str, list[str]]:
    """The default sampler, chosen on the selection tasks only (``tasks``: those of them finished so far, for an
    interim report): the plan's first sampler unless another beats it there (paired CI above 0; the largest
    difference wins); with the lines that show the rule and numbers."""
    first = plan.samplers[0]
    tasks = plan.selection_tasks if tasks is None else tasks
    lines = ["## Choice of the default sampler (selection tasks only)", "",
             f"Rule: `{first}` (the plan's first sampler) unless another beats it on the selection tasks with a "
             "paired 95% CI above 0; the largest such difference wins.", ""]
    if not tasks:
        return first, lines + [f"No selection tasks {'in the plan' if not plan.selection_tasks else 'finished'}: "
                               f"the default stays `{first}`."]
    best, best_diff = first, 0.0
    for sampler in plan.samplers[1:]:
        d = _diff(runs, _tune(plan, sampler), _tune(plan, first), tasks)
        lines.append(f"- {sampler} - {first}: {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
        if d["ci_low"] > 0 and d["diff"] > best_diff:
            best, best_diff = sampler, d["diff"]
    return best, lines + ["", f"Default: `{best}` (on {len(tasks)} selection tasks; the targets "
                              "and tables below use the other tasks only)."]


def record_choice(plan: FewShotPlan, runs: pd.DataFrame, evaluation_runs_existed: bool, commit: str | None) -> dict:
    """Write ``choice.json`` (the default sampler, its numbers, when, and ``commit``: the code of the run start
    recording it) once the selection tasks are done, before any evaluation task runs; an existing record is kept."""
    from datetime import datetime, timezone

    path = plan.root / "choice.json"
    if path.is_file():
        choice = json.loads(path.read_text())
        if choice.get("fingerprint") != run_fingerprint(plan):
            raise ValueError(f"{str(path)!r} was recorded for another plan, weights or dataset; move it away "
                             "(with the runs it belongs to) to start again")
        return choice
    default, lines = sampler_choice(plan, runs)
    choice = {"default": default, "lines": lines, "created": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
              "commit": commit, "evaluation_runs_existed": evaluation_runs_existed,
              "fingerprint": run_fingerprint(plan)}
    write_text_atomic(path, json.dumps(choice, indent=2) + "\n")
    return choice


def check_inputs(plan: FewShotPlan) -> None:
    """Before any training: the weights load, metatpe has its dataset, and that dataset holds none of the plan's
    tasks (a task would find its own trials there)."""
    from hypermeta.meta.predict import load_predictor
    from hypermeta.tasks.families import get_task, is_family_task

    fixed = plan.fixed()  # loads the weights
    if plan.cold_from and plan.shared_cold_studies():
        from hypermeta.lab.matrix import MatrixPlan

        if get_space("schedule").untuned(MatrixPlan.load(plan.cold_from).base) != fixed:
            raise ValueError(f"plan {plan.name!r}: the cold studies shared with {plan.cold_from!r} tune over that plan's "
                             "fixed DQN settings, and `weights` were trained with others")
    if "adapt" in plan.samplers:
        adapt = load_predictor(plan.adapt_weights or plan.weights)
        if not adapt.members:
            raise ValueError(f"plan {plan.name!r}: sampler adapt needs a meta-learner with networks; "
                             f"{plan.adapt_weights or plan.weights or 'the shipped weights'!r} holds "
                             f"{adapt.method!r}, which has none: set `adapt_weights` to a network method's weights")
        if get_space("schedule").untuned(adapt.base) != fixed:
            raise ValueError(f"plan {plan.name!r}: `adapt_weights` were trained with other DQN settings than "
                             "`weights`; the studies tune the schedules over one set of settings")
    if "metatpe" not in plan.samplers:
        return
    if not plan.meta_data or not Path(plan.meta_data).is_file():
        raise ValueError(f"plan {plan.name!r}: sampler metatpe needs `meta_data`, a dataset CSV that exists, got "
                         f"{plan.meta_data!r} (`hypermeta matrix PLAN --export-only` writes one)")
    canonical = lambda t: get_task(t).id if is_family_task(t) else t  # noqa: E731
    seen = {canonical(t) for t in pd.read_csv(plan.meta_data, usecols=["task"])["task"].unique()}
    overlap = sorted(seen & {canonical(e["task"]) for e in plan.tasks})
    if overlap:
        raise ValueError(f"plan {plan.name!r}: meta_data {plan.meta_data!r} holds trials of the plan's own task "
                         f"{overlap[0]!r}; the benchmark's tasks must be new to it")


#: the plan fields whose change makes stored runs another benchmark's (the manifest's fingerprint)
RUN_FIELDS = ("tasks", "samplers", "tune_trials", "cold_trials", "cold_batch", "seeds_per_trial", "test_seeds",
              "weights", "adapt_weights", "meta_data", "selection_tasks", "cold_from")


def _sha256(path: str | None) -> str | None:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path and Path(path).is_file() else None


def run_fingerprint(plan: FewShotPlan) -> dict[str, Any]:
    """What the stored runs depend on: the plan's run fields and the contents of its weights and dataset."""
    import hashlib

    fields = json.dumps({k: getattr(plan, k) for k in RUN_FIELDS}, sort_keys=True, default=str)
    from hypermeta.meta.model import default_weights_path

    return {"plan": hashlib.sha256(fields.encode()).hexdigest()[:16],
            "weights": _sha256(plan.weights or str(default_weights_path())), "meta_data": _sha256(plan.meta_data),
            "adapt_weights": _sha256(plan.adapt_weights), "cold_from": _sha256(plan.cold_from)}


def check_fingerprint(plan: FewShotPlan) -> dict[str, Any]:
    """The plan's :func:`run_fingerprint`, refused if ``manifest.json`` records another (the stored runs were made
    with another plan, weights or dataset)."""
    path, now = plan.root / "manifest.json", run_fingerprint(plan)
    recorded = json.loads(path.read_text())["fingerprint"] if path.is_file() else now
    if recorded != now:
        changed = [k for k in now if now[k] != recorded.get(k)]
        raise ValueError(f"the runs in {str(plan.root)!r} were made with another {' and '.join(changed)} (see "
                         "manifest.json); restore it, or move runs.csv, studies.db, choice.json and manifest.json "
                         "away to start again")
    return now


def record_start(plan: FewShotPlan, workers: int, preexisting: bool = False, only: str | None = None
                 ) -> dict[str, Any]:
    """``manifest.json``: the fingerprint of the first start, and every start's time and workers (the cold studies'
    random start is workers x cold_batch trials), and ``only`` what a start limited to test runs did. A start
    whose fingerprint differs is refused."""
    from datetime import datetime, timezone

    path, now = plan.root / "manifest.json", check_fingerprint(plan)
    manifest = (json.loads(path.read_text()) if path.is_file()
                else {"fingerprint": now, "starts": [], "preexisting": preexisting})
    manifest["starts"].append({"time": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "workers": workers,
                               "commit": git_commit(), **({"only": only} if only else {})})
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")
    return manifest


def record_copied(plan: FewShotPlan, copied: int) -> None:
    """Add to ``manifest.json`` the test runs this start copied from ``cold_from``'s held-out runs."""
    path = plan.root / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["copied_runs"] = manifest.get("copied_runs", 0) + copied
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")


def fewshot_progress(plan: FewShotPlan) -> pd.DataFrame:
    """Per task: finished trials of its cold study and of each tune study, its stored test runs, and the CPU time
    the rest needs: the runs left (``seeds_per_trial`` per trial left, plus test runs) times the median own time of
    the task's runs so far (its trials' ``wall_time`` per seed, its stored test runs, and ``cold_from``'s held-out
    test runs of the task; NaN before any exists). Process start, sampling and storage come on top of the runs'
    own time. Until a task's studies are finished its test runs planned are an upper bound (chosen configurations
    that coincide train once); then they are exact, and a shared task's runs that ``cold_from`` already made count
    as stored (they are copied, not trained). A tune study that stopped short of its trials (a round that finished
    none) keeps counting as unfinished."""
    runs = RunStore(plan.root / "runs.csv").frame()
    source = plan.shared_runs()
    shared = source.frame() if source is not None else runs.iloc[:0]  # cold_from's held-out runs (shared tasks')
    rows = []
    for entry in plan.tasks:
        task, steps = entry["task"], int(entry["timesteps"])
        studies = {label: stored_study(*where) for label, where in plan.studies(task).items()}
        trials = {k: finished_in_order(v) if v is not None else [] for k, v in studies.items()}
        row = {"task": task, "runner": entry["runner"], "timesteps": steps, "cold_target": max(plan.cold_trials),
               **{k: len(v) for k, v in trials.items()}}
        trials_left = max(0, row["cold_target"] - row["cold"]) + sum(max(0, plan.tune_trials - row[f"tune-{s}"])
                                                                     for s in plan.samplers)
        mine = runs[(runs["task"] == task) & (runs["timesteps"] == steps)]
        theirs = shared[(shared["task"] == task) & (shared["timesteps"] == steps)]
        if trials_left:  # the configurations are not chosen yet: at most one per cold@k and sampler
            row["test_runs"] = len(mine)
            row["test_planned"] = (len(plan.cold_trials) + len(plan.samplers)) * plan.test_seeds
        else:  # chosen: distinct ones train once, and those cold_from made are copied
            chosen = [best_config_of(studies["cold"], k) for k in plan.cold_trials]
            chosen += [best_config_of(studies[f"tune-{s}"]) for s in plan.samplers]
            planned = {(config_key(c), s) for c in chosen for s in test_seeds(plan.test_seeds)}
            have = {(k, int(s)) for f in (mine, theirs) for k, s in zip(f["config_key"], f["seed"])}
            row["test_runs"], row["test_planned"] = len(planned & have), len(planned)
        walls = [float(t.user_attrs["wall_time"]) / plan.seeds_per_trial for ts in trials.values() for t in ts
                 if "wall_time" in t.user_attrs]
        for frame in (mine, theirs):
            walls += frame["wall_time"].astype(float).tolist()
        walls = [w for w in walls if w > 0]  # a diverged run is stored with 0
        row["s_per_run"] = float(np.median(walls)) if walls else float("nan")
        runs_left = trials_left * plan.seeds_per_trial + max(0, row["test_planned"] - row["test_runs"])
        row["remaining_core_h"] = runs_left * row["s_per_run"] / 3600 if runs_left else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def format_fewshot_progress(plan: FewShotPlan, progress: pd.DataFrame) -> str:
    width = max(len("task"), *(len(t) for t in progress["task"]))
    studies = ["cold", *(f"tune-{s}" for s in plan.samplers)]
    lines = [f"{'task':<{width}} {'runner':<7} {'steps':>7} " + " ".join(f"{s:>13}" for s in studies)
             + f" {'test runs':>10} {'s/run':>6} {'left (core-h)':>14}"]
    for r in progress.to_dict("records"):
        cells = [f"{r['cold']}/{r['cold_target']}", *(f"{r[s]}/{plan.tune_trials}" for s in studies[1:])]
        lines.append(f"{r['task']:<{width}} {r['runner']:<7} {r['timesteps']:>7} " + " ".join(f"{c:>13}" for c in cells)
                     + f" {str(r['test_runs']) + '/' + str(r['test_planned']):>10} {r['s_per_run']:>6.1f} "
                     f"{r['remaining_core_h']:>14.1f}")
    unknown = progress.loc[progress["remaining_core_h"].isna(), "task"].tolist()
    total = progress["remaining_core_h"].sum()  # NaN rows (no runs yet) are skipped
    lines.append(f"left in all: {total:.1f} core-hours of the runs' own time" + (
        f" (not counting {', '.join(unknown)}: no runs yet)" if unknown else "") + "; divide by --workers. Process "
        "start, sampling and storage come on top; until a task's studies finish, its test runs planned are an upper "
        "bound (identical runs train once, and runs cold_from already made are copied).")
    return "\n".join(lines)


def select_tasks(plan: FewShotPlan, patterns: list[str] | None) -> list[dict[str, Any]]:
    """The plan's task entries to run now, in the order they run: the selection tasks first (always: the default
    sampler is chosen on them before any evaluation task runs), then the evaluation tasks that match one of the
    shell-style ``patterns`` (all of them when ``patterns`` is None). A pattern that matches no task is an error."""
    from fnmatch import fnmatchcase

    selection = [e for e in plan.tasks if e["task"] in plan.selection_tasks]
    evaluation = [e for e in plan.tasks if e["task"] not in plan.selection_tasks]
    if patterns is None:
        return selection + evaluation
    for pattern in patterns:
        if not any(fnmatchcase(e["task"], pattern) for e in plan.tasks):
            raise ValueError(f"--tasks {pattern!r} matches none of plan {plan.name!r}'s tasks; quote patterns such as "
                             "'cartpole*' so the shell does not expand them")
    return selection + [e for e in evaluation if any(fnmatchcase(e["task"], p) for p in patterns)]


def merge_task_rows(path: Path, frame: pd.DataFrame, task: str) -> None:
    """Replace ``task``'s rows of the CSV ``path`` (created if missing) with ``frame``, atomically, keeping the
    other tasks' rows: the report can be rendered after every task, and a run of some tasks keeps the rest."""
    old = pd.read_csv(path) if path.is_file() else frame.iloc[:0]
    merged = pd.concat([old[old["task"] != task], frame], ignore_index=True)
    write_text_atomic(path, merged.to_csv(index=False))


def check_test_runs_only(plan: FewShotPlan, entries: list[dict[str, Any]]) -> str:
    """For ``--test-runs-only``: the selected tasks must be evaluation tasks whose studies are all finished (so
    the run trains test runs and nothing that the workers could change), after the sampler choice. Returns what
    the run record says the start did."""
    check_fingerprint(plan)  # a changed plan is refused as such, not as unfinished studies
    if not (plan.root / "choice.json").is_file():
        raise ValueError("--test-runs-only needs the default sampler chosen first (choice.json): run the benchmark "
                         "without it until the selection tasks are done")
    progress = fewshot_progress(plan).set_index("task")
    names = [e["task"] for e in entries if e["task"] not in plan.selection_tasks]
    if not names:
        raise ValueError("--test-runs-only: --tasks matches only selection tasks; name evaluation tasks")
    for task in names:
        row = progress.loc[task]
        if row["cold"] < row["cold_target"] or any(row[f"tune-{s}"] < plan.tune_trials for s in plan.samplers):
            raise ValueError(f"--test-runs-only: {task!r}'s studies are not finished (see --status); run it without "
                             "--test-runs-only")
    return "the test runs of " + ", ".join(names) + " (studies finished before)"


def run_fewshot(plan: FewShotPlan, workers: int = 1, progress: bool = False, tasks: list[str] | None = None,
                test_runs_only: bool = False) -> Path:
    """Run (or resume) the benchmark, or with ``tasks`` (shell-style patterns) its selection tasks and the matching
    evaluation tasks. The selection tasks run first; the default sampler is then chosen on them and recorded
    (``choice.json``) before any evaluation task's study starts. After every task its rows of
    ``runs_by_method.csv`` and ``progress.csv`` (beside the plan) are replaced, other tasks' rows kept.

    ``test_runs_only`` (with ``tasks``): only the matching evaluation tasks, whose studies must be finished: their
    test runs, for example on a machine with more cores; the run record notes it."""
    entries = select_tasks(plan, tasks)  # a bad pattern fails before any training
    for entry in plan.tasks:
        Normalizer.for_task(entry["task"])  # unknown tasks and missing references fail before any training
    check_inputs(plan)
    only = None
    if test_runs_only:
        if tasks is None:
            raise ValueError("--test-runs-only needs --tasks: the evaluation tasks whose test runs to train")
        only = check_test_runs_only(plan, entries)
        entries = [e for e in entries if e["task"] not in plan.selection_tasks]
    store = plan.root / "runs.csv"
    # files from before the run record: nothing shows what made them, or whether evaluation studies ran
    preexisting = not (plan.root / "manifest.json").is_file() and any(
        (plan.root / f).is_file() for f in ("runs.csv", "choice.json", "studies.db"))
    commit = record_start(plan, workers, preexisting, only)["starts"][-1]["commit"]  # the code this run started with
    n_selection = sum(e["task"] in plan.selection_tasks for e in entries)
    evaluation = {e["task"] for e in plan.tasks if e["task"] not in plan.selection_tasks}
    existed = preexisting or (store.is_file() and bool(set(pd.read_csv(store, usecols=["task"])["task"]) & evaluation))
    selection_runs = []
    shared, source = plan.shared_cold_studies(), plan.shared_runs()
    for i, entry in enumerate(entries):
        if i == n_selection:
            record_choice(plan, pd.concat(selection_runs, ignore_index=True) if selection_runs else pd.DataFrame(),
                          existed, commit)
        configs, rows = run_task(plan, entry, workers, progress)
        m = Measurement(int(entry["timesteps"]))
        jobs = [Job(entry["task"], name, c, m, s) for name, c in configs.items() for s in test_seeds(plan.test_seeds)]
        store = RunStore(plan.root / "runs.csv")
        if source is not None and entry["task"] in shared:  # e.g. cold@8 = meta2's optuna-tpe@10: the same runs
            copied = store.adopt(source, jobs)
            if copied:  # recorded now: a kill later in the run must not lose the count (a resume copies none)
                record_copied(plan, copied)
        runs = run_jobs_scoring_divergence(jobs, store, workers=workers, progress=progress, runner=entry["runner"])
        if i < n_selection:
            selection_runs.append(runs)
        # progress first: a task's rows in runs_by_method.csv are what marks it finished
        merge_task_rows(plan.root / "progress.csv", pd.DataFrame(rows, columns=PROGRESS_COLUMNS), entry["task"])
        merge_task_rows(plan.root / "runs_by_method.csv", runs, entry["task"])
    if len(entries) == n_selection and not test_runs_only:  # only selection tasks ran: the choice is recorded
        record_choice(plan, pd.concat(selection_runs, ignore_index=True), existed, commit)
    return plan.root
