"""``hypermeta tune``: a short Optuna study on a new task, warm from its first trials.

Round 0 (enqueued, evaluated first, together when the runner is batched) holds what hypermeta already knows
about the task: the meta-learner's zero-shot prediction, each ensemble member's own prediction, and the best
configurations of the nearest training tasks (duplicates dropped, at most :data:`ROUND0`). TPE then proposes
the rest with those observations in its model, or (``sampler="adapt"`` / ``"metatpe"``, see
:mod:`hypermeta.search.proposers`) a proposer enqueues each following round from what has been observed,
TPE filling any slot it leaves. The study is an ordinary resumable Optuna study; the best trial's configuration
is written as YAML (``HyperMetaCallback("best.yaml")`` applies it).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hypermeta.engine.defaults import (BATCHED_STUDY_BATCH, DEFAULT_STORAGE, EVAL_EPISODES, GRACE_PERIOD,
                                       HEARTBEAT_INTERVAL, N_EVALS)
from hypermeta.search.study import (StudySpec, best_config_of, check_storage_url, finished_in_order, run_study,
                                    stored_study)
from hypermeta.engine.measurement import check_task
from hypermeta.meta.data import SPACE
from hypermeta.meta.predict import predict_config
from hypermeta.space import DQNConfig

#: At most this many round-0 candidates (and at most half of the trials, so that the sampler after round 0
#: always gets trials): the zero-shot prediction, best-fixed, and nearest tasks' best configurations
#: alternating with ensemble members fit; more would spend the user's trial budget on guesses.
ROUND0 = 8
#: Trials per proposer round with the SB3 runner (the batched runner's rounds are its batches).
ROUND_SIZE = 4


@dataclass
class TuneResult:
    study: optuna.Study
    best: DQNConfig
    candidates: list[tuple[str, DQNConfig]]
    trials: int
    env_steps: int
    train_seconds: float


def round0(task: str, predictor: Any = None, limit: int = ROUND0, result: Any = None) -> list[tuple[str, DQNConfig]]:
    """The warm-start candidates for ``task`` (see the module docstring), labelled, duplicates dropped."""
    result = result or predict_config(task, predictor, warn=False)
    seen, out = set(), []
    for label, code in result.model.warm_start_codes(result.features):
        config = SPACE.decode(code, base=result.model.base)
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((label, config))
    return out[:limit]


def round0_size(trials: int) -> int:
    """Round 0 takes at most :data:`ROUND0` trials and at most half of them (at least one)."""
    return max(1, min(ROUND0, trials // 2))


def make_proposer(sampler: str, prediction: Any, meta_data: str | Path | None, seed: int,
                  adapt_predictor: Any = None) -> Any:
    """The proposer of ``sampler`` (None for ``tpe``); ``metatpe`` reads the training tasks' trials from the
    dataset CSV ``meta_data`` (``hypermeta matrix --export-only`` writes one); ``adapt`` takes the few-shot step of
    ``adapt_predictor`` (default: the round-0 predictor's, or, where it has no networks, the shipped adapt weights
    if they were trained on the same DQN settings), which must be a method with networks."""
    from hypermeta.search.proposers import PROPOSERS, AdaptProposer, MetaTPEProposer
    from hypermeta.meta.model import default_adapt_weights_path
    from hypermeta.meta.predict import load_predictor

    if sampler not in PROPOSERS:
        raise ValueError(f"sampler must be one of {list(PROPOSERS)}, got {sampler!r}")
    if adapt_predictor is not None and sampler != "adapt":
        raise ValueError(f"--adapt-weights is for --sampler adapt, got --sampler {sampler}")
    if sampler == "adapt":
        model = prediction.model if adapt_predictor is None else load_predictor(adapt_predictor)
        if adapt_predictor is None and not model.members and default_adapt_weights_path().is_file():
            shipped = load_predictor(default_adapt_weights_path())  # the network method shipped for this
            if SPACE.untuned(shipped.base) == SPACE.untuned(prediction.model.base):
                model = shipped
        if not model.members:
            raise ValueError(f"--sampler adapt needs a meta-learner with networks to take a few-shot step; the "
                             f"weights hold {model.method!r}, which has none: pass --adapt-weights of a network "
                             "method (multitask, surrogate, reptile, maml, fomaml)")
        if SPACE.untuned(model.base) != SPACE.untuned(prediction.model.base):
            raise ValueError("--adapt-weights were trained with other DQN settings than the round-0 weights; the "
                             "study tunes the schedules over one set of settings: pass weights of the same data")
        return AdaptProposer(model, prediction.features)
    if sampler == "metatpe":
        import pandas as pd

        from hypermeta.meta.data import tasks_from_frame

        if meta_data is None or not Path(meta_data).is_file():
            raise ValueError(f"--sampler metatpe needs --meta-data DATASET.csv (the training tasks' trials), "
                             f"got {meta_data!r}; `hypermeta matrix PLAN --export-only` writes one")
        return MetaTPEProposer(tasks_from_frame(pd.read_csv(meta_data)), prediction.model.base, seed)
    return None


def observed_trials(study: optuna.Study) -> list[tuple[DQNConfig, float]]:
    """(configuration, objective) of every complete trial, in finishing order."""
    return [(DQNConfig.from_dict(t.user_attrs["config"]), float(t.value)) for t in finished_in_order(study)
            if t.value is not None and "config" in t.user_attrs]


#: ``tune(trials=None, time_budget_minutes=...)`` runs until the time budget is spent: at most this many trials.
UNLIMITED_TRIALS = 10_000


def tune(task: str, trials: int | None, timesteps: int, *, seeds_per_trial: int = 1, runner: str = "sb3",
         storage: str = DEFAULT_STORAGE, study_name: str | None = None, predictor: Any = None,
         time_budget_minutes: float | None = None, progress: bool = False, seed: int = 0,
         sampler: str = "tpe", meta_data: str | Path | None = None, pruner: str | None = None,
         adapt_predictor: Any = None, heartbeat_interval: int = HEARTBEAT_INTERVAL,
         grace_period: int = GRACE_PERIOD, prediction: Any = None, n_evals: int = N_EVALS,
         eval_episodes: int = EVAL_EPISODES, reference: float | None = None, controller: str | None = None,
         init: str | None = None) -> TuneResult:
    """Run (or resume) the warm-started study of ``task`` until ``trials`` trials finished or the time budget
    is spent (``trials=None``: until the time budget is spent), and return its best configuration. Round 0 runs
    first, as one batch; TPE then starts from its results (its random start is the trials already finished).
    ``pruner``: ``"none"`` or ``"median"``; None (default): the study's own when it exists (it resumes), else
    ``"none"``, as the few-shot benchmark measured ``tune``. ``adapt_predictor``:
    the network meta-learner of ``sampler="adapt"`` (default: ``predictor``). ``heartbeat_interval``/
    ``grace_period``: as in :func:`run_study` (a killed run's trials are failed and retried once when the same
    call resumes it). ``prediction``: ``predict_config(task, predictor)``'s result when the caller has it already
    (it probes the task's features). ``n_evals``/``eval_episodes``/``reference``: how a trial is measured, as in
    :class:`StudySpec` (``reference``: the return that normalises to 1, for tasks without a reference return).
    ``progress``: True for one bar counting the study's finished trials over the whole call, ``"lines"`` for one
    line per finished trial (:class:`TrialLines`, what ``hypermeta tune`` prints when not on a terminal), False
    for nothing. ``controller``/``init``: every trial is steered by that controller (``"rule"``, ``"default"`` or
    a weights file) or starts from that Q-network start (a file): the study then tunes the schedules the controller
    steers, and the best configuration is meant to be trained with the same controller and start."""
    if time_budget_minutes is not None and not time_budget_minutes > 0:
        raise ValueError(f"time budget must be > 0 minutes, got {time_budget_minutes}")
    if trials is None and time_budget_minutes is None:
        raise ValueError("give a number of trials, a time budget, or both")
    if trials is not None and trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    limit = UNLIMITED_TRIALS if trials is None else trials
    check_storage_url(storage)  # every input that can be refused is refused before a study or file exists
    check_task(task, reference)
    suffix = _check_control(controller, init)
    prediction = prediction or predict_config(task, predictor, warn=False)
    proposer = make_proposer(sampler, prediction, meta_data, seed, adapt_predictor)  # fails before any training
    candidates = round0(task, limit=round0_size(limit), result=prediction)
    # the study tunes the schedules over the settings the predictor's data came from (its candidates use them)
    fixed = SPACE.untuned(candidates[0][1])
    if init is not None:  # the start must fit the task and the net the study trains (before any trial)
        _check_start_fits(task, init, candidates[0][1])
    spec = StudySpec(task, timesteps, "schedule", seeds_per_trial, n_evals, eval_episodes, reference, fixed=fixed,
                     control=None if controller is None else str(controller), init=None if init is None else str(init))
    deadline = None if time_budget_minutes is None else time.time() + 60 * time_budget_minutes
    batch = max(len(candidates), BATCHED_STUDY_BATCH) if runner == "batched" else 1
    name = study_name or (f"tune|{task}|T{timesteps}|m{seeds_per_trial}" + ("" if sampler == "tpe" else f"|{sampler}")
                          + suffix)
    if pruner is None:  # the study's own when it resumes one (older versions stored "median"), else none
        existing = stored_study(storage, name)
        pruner = (existing.user_attrs.get("pruner") if existing is not None else None) or "none"
    report = _progress_report(progress, trials, name, deadline)
    common = dict(study_name=name, storage=storage, sampler="tpe", runner=runner, seed=seed, pruner=pruner,
                  progress=report or False, deadline=deadline,
                  heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    try:
        study = _run_rounds(spec, limit, candidates, proposer, runner, batch, deadline, common)
    finally:
        if report is not None:
            report.close()
    finished = finished_in_order(study)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in finished):
        raise ValueError(f"no trial of study {name!r} completed"
                         + (" within the time budget: give it more minutes"
                            if deadline is not None and time.time() >= deadline else
                            " (every trial diverged or was pruned): check the task and its --timesteps")
                         + "; the same command resumes the study")
    return TuneResult(study, best_config_of(study), candidates, len(finished),
                      sum(t.user_attrs.get("env_steps", 0) for t in finished),
                      sum(t.user_attrs.get("wall_time", 0.0) for t in finished))


def _check_control(controller: str | None, init: str | None) -> str:
    """Refuse an unknown controller or an unreadable start before any study exists (whether the start fits the
    task's network is :func:`_check_start_fits`); returns what the default study name adds for them (a study per
    controller and start)."""
    suffix = ""
    if controller is not None:
        from hypermeta.controller import get_controller

        suffix += f"|{get_controller(controller).key}"
    if init is not None:
        from hypermeta.qstart import get_start

        suffix += f"|{get_start(init).key}"
    return suffix


def _check_start_fits(task: str, init: str, config: Any) -> None:
    """The start must fit the network the study trains on ``task`` (the engine's check, before any trial)."""
    from hypermeta.engine.batched import task_shapes
    from hypermeta.qstart import get_start
    from hypermeta.space import NET_ARCHS

    obs_dim, n_actions, _ = task_shapes(task)
    get_start(init).check(obs_dim, n_actions, tuple(NET_ARCHS[config.net_arch]), f"task {task!r}")


def _progress_report(progress: bool | str, trials: int | None, name: str, deadline: float | None) -> Any:
    if progress == "lines":
        return TrialLines(trials, deadline)
    if progress:
        return TrialBar(trials, name)
    if progress is not False:
        raise ValueError(f"progress must be True, False or 'lines', got {progress!r}")
    return None


class TrialBar:
    """A tqdm bar of the study's finished trials over a whole ``tune`` call (each ``run_study`` of it would show
    its own phase only); no total when only a time budget bounds the study."""

    def __init__(self, trials: int | None, name: str) -> None:
        from tqdm.auto import tqdm

        self.trials = trials
        self.bar = tqdm(total=trials, desc=name, unit="trial")

    def __call__(self, finished: int, study: optuna.Study) -> None:
        self.bar.n = finished if self.trials is None else min(finished, self.trials)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class TrialLines:
    """One line per trial as it finishes: its value, the best so far, the time elapsed and an estimate of the time
    left (this call's time per finished trial times the trials still to run, or the time budget left)::

        trial 3 of 8 (#2): 0.4120, best 0.4550 (#0); 2m10s elapsed, about 3m37s left
    """

    def __init__(self, trials: int | None, deadline: float | None, file: Any = None) -> None:
        self.trials, self.deadline, self.file = trials, deadline, file
        self.start = time.time()
        self.shown: set[int] | None = None  # trial numbers already finished or shown (None: not read yet)
        self.last = -1

    def __call__(self, finished: int, study: optuna.Study) -> None:
        if finished == self.last:  # called at every poll: read the storage only when a trial finished
            return
        self.last = finished
        done = finished_in_order(study)
        if self.shown is None:  # a resumed study's earlier trials: counted, not shown
            self.shown, self.before = {t.number for t in done}, len(done)
            return
        for i, trial in enumerate(done):
            if trial.number not in self.shown:
                self.shown.add(trial.number)
                print(self.line(i + 1, trial, done[:i + 1], len(done)), file=self.file or sys.stdout, flush=True)

    def line(self, count: int, trial: optuna.trial.FrozenTrial, done: list[optuna.trial.FrozenTrial],
             finished: int) -> str:
        """The line of the ``count``-th finished trial; the estimate uses all ``finished`` trials (a batch's trials
        finish together)."""
        of = "" if self.trials is None else f" of {self.trials}"
        value = f"{trial.value:.4f}" if trial.state == optuna.trial.TrialState.COMPLETE else "pruned"
        complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
        best = max(complete, key=lambda t: t.value) if complete else None
        best_text = f"best {best.value:.4f} (#{best.number})" if best is not None else "no complete trial yet"
        elapsed = time.time() - self.start
        left = None
        if self.trials is not None and finished > self.before:
            left = elapsed / (finished - self.before) * max(self.trials - finished, 0)
        if self.deadline is not None:
            left = min(left if left is not None else math.inf, max(self.deadline - time.time(), 0.0))
        left_text = "" if left is None or not math.isfinite(left) else f", about {_duration(left)} left"
        return f"trial {count}{of} (#{trial.number}): {value}, {best_text}; {_duration(elapsed)} elapsed{left_text}"

    def close(self) -> None:
        pass


def _duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _run_rounds(spec: StudySpec, trials: int, candidates: list[tuple[str, DQNConfig]], proposer: Any, runner: str,
                batch: int, deadline: float | None, common: dict[str, Any]) -> optuna.Study:
    """Round 0, then TPE or the proposer's rounds, until ``trials`` finished or the deadline passed."""
    study = run_study(spec, min(len(candidates), trials), enqueue=[c for _, c in candidates],
                      batch_size=min(batch, trials), **common)
    done = len(finished_in_order(study))
    if proposer is None and trials > done and (deadline is None or time.time() < deadline):
        # TPE samples at random until n_startup_trials have finished: here, those are round 0's
        study = run_study(spec, trials, batch_size=min(BATCHED_STUDY_BATCH, trials - done) if runner == "batched"
                          else 1, n_startup_trials=done or None, **common)
    rounds = BATCHED_STUDY_BATCH if runner == "batched" else ROUND_SIZE
    while proposer is not None and len(finished_in_order(study)) < trials and (deadline is None or time.time() < deadline):
        done = len(finished_in_order(study))
        size = min(rounds, trials - done)
        study = run_study(spec, done + size, enqueue=proposer.propose(observed_trials(study), size),
                          batch_size=size if runner == "batched" else 1, **common)
        if len(finished_in_order(study)) == done:  # the round finished nothing (e.g. every trial diverged)
            break
    return study


def write_best(config: DQNConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return config.save(path)
