"""Optuna studies over hypermeta's search space: the baselines hypermeta is compared with.

A study is an ordinary Optuna study (it opens in optuna-dashboard and ``study.trials_dataframe()``) whose
user attributes record how its trials were measured (:class:`StudySpec`). Trials are trained on
*tuning seeds* (:func:`hypermeta.seeds.tuning_seeds`), which never reach the test seeds, by a runner
(:mod:`hypermeta.engine.runner`).

Fault tolerance: storages are :class:`optuna.storages.RDBStorage` with a heartbeat, so a trial whose
process was killed is failed after ``grace_period`` seconds and re-queued once by
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`; running the same command again resumes the study
until ``n_trials`` trials have finished (complete or pruned), keeping every finished trial. Several
processes (``workers``) or machines (a PostgreSQL URL) may work on one study at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from hypermeta.engine.defaults import (DEFAULT_STORAGE, EVAL_EPISODES, GRACE_PERIOD, HEARTBEAT_INTERVAL,
                                       N_EVALS, PRUNERS, SAMPLERS)
from hypermeta.engine.measurement import DivergenceError, Measurement, Normalizer, check_task
from hypermeta.engine.runner import DEFAULT_RUNNER, Job, Runner, get_runner
from hypermeta.files import check_writable_file, read_yaml
from hypermeta.seeds import tuning_seeds, worker_seed
from hypermeta.space import SPACE_VERSION, DQNConfig, get_space

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

_log = logging.getLogger("hypermeta.study")


@dataclass(frozen=True)
class StudySpec:
    """What a study tunes and how each trial is measured (stored as the study's user attributes)."""

    task: str
    timesteps: int
    space: str = "schedule"
    seeds_per_trial: int = 1
    n_evals: int = N_EVALS
    eval_episodes: int = EVAL_EPISODES
    reference: float | None = None
    #: the DQN settings that are not tuned (default: hypermeta's base configuration), e.g. a matrix plan's
    #: ``fixed`` settings so that a study tunes the schedules on the settings the meta-learner's data came from
    fixed: dict[str, Any] | None = None
    #: a controller steering every trial's schedules (``"rule"``, ``"default"`` or a weights path) and a Q-network
    #: start every trial begins from (a path); None: neither (the trials' own schedules, SB3's initialisation)
    control: str | None = None
    init: str | None = None

    def __post_init__(self) -> None:
        get_space(self.space)
        self.base  # validates ``fixed``
        if self.seeds_per_trial < 1:
            raise ValueError(f"seeds_per_trial must be >= 1, got {self.seeds_per_trial}")
        self.measurement  # validates timesteps, n_evals and eval_episodes

    @property
    def measurement(self) -> Measurement:
        return Measurement(self.timesteps, self.n_evals, self.eval_episodes)

    @property
    def base(self) -> DQNConfig:
        return DQNConfig.from_dict(self.fixed or {}, source="study `fixed` settings")

    def tuning_seeds(self, trial_number: int) -> list[int]:
        return tuning_seeds(trial_number, self.seeds_per_trial)

    def trial_seeds(self, study: optuna.Study, trial: optuna.Trial) -> list[int]:
        """The tuning seeds of ``trial``: those of its number, or, where it retries a trial whose process died,
        those of the trial it retries (a retry trains the configuration and seeds of the trial it replaces; the
        trials after it still get later numbers, and so other seeds, than without the kill)."""
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))  # the trial itself is running
        frozen = next((t for t in running if t.number == trial.number), None)
        original = retried_trial_number(frozen) if frozen is not None else None
        return self.tuning_seeds(trial.number if original is None else original)

    def attrs(self) -> dict[str, Any]:
        """What is stored with the study (and checked when it resumes). ``control``/``init`` (the paths) and
        ``control_key``/``init_key`` (what the files hold) only when set, so studies from before they existed
        resume; :func:`open_study` compares the keys, a missing one as None."""
        attrs = {k: v for k, v in asdict(self).items() if k not in ("control", "init") or v is not None}
        if self.control is not None:
            from hypermeta.controller import get_controller

            attrs["control_key"] = get_controller(self.control).key
        if self.init is not None:
            from hypermeta.qstart import get_start

            attrs["init_key"] = get_start(self.init).key
        return {**attrs, "space_version": SPACE_VERSION}

    def job(self, config: DQNConfig, seed: int) -> Job:
        """One run of a trial: ``config`` on the study's task with ``seed``, steered and started as the spec says."""
        return Job(self.task, "trial", config, self.measurement, seed, self.reference, control=self.control,
                   init=self.init)


def retried_trial_number(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the trial that ``trial`` retries (None if it retries none): Optuna's
    ``RetryHeartbeatStaleTrialCallback.retried_trial_number``, without its ExperimentalWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


class _Storage(RDBStorage):
    """Optuna's RDB storage, plus: a RUNNING trial that has no heartbeat row at all and started more than
    ``grace_period`` seconds ago is stale too.

    Optuna only fails trials whose *last* heartbeat is old, so a process killed between creating a trial
    and storing its first heartbeat left a RUNNING trial nobody would ever fail, and a resumed study waited
    for it forever. A live process stores its first heartbeat as soon as the sampler has proposed the
    trial's parameters (milliseconds; seconds at most for GP sampling), far less than the grace period, so
    this never fails a live trial. ``datetime_start`` is the creating process's clock: with several
    machines, keep their clocks within a fraction of the grace period (NTP does).
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = set(super()._get_stale_trial_ids(study_id))
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        now = datetime.now()
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            if trial._trial_id in stale or trial.datetime_start is None:
                continue
            if (now - trial.datetime_start).total_seconds() > grace and not self._has_heartbeat(trial._trial_id):
                stale.add(trial._trial_id)
        return sorted(stale)

    def _has_heartbeat(self, trial_id: int) -> bool:
        from optuna.storages._rdb import models

        session = self.scoped_session()
        try:
            return session.query(models.TrialHeartbeatModel).filter_by(trial_id=trial_id).first() is not None
        finally:
            session.close()


def check_storage_url(url: str) -> Any:
    """Fail with one line naming ``url`` (password masked) and the cause, before any work, when the storage
    cannot be used: not a URL, an unknown database kind, an unwritable SQLite path, or a server that is
    unreachable or refuses the credentials. Returns the parsed ``sqlalchemy`` URL."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url) if "://" in url else None
    except sqlalchemy.exc.ArgumentError:
        parsed = None
    if parsed is None:
        raise ValueError(f"storage must be a database URL such as sqlite:///studies/optuna.db, got {url!r}")
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect()
    except (sqlalchemy.exc.NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ValueError(f"storage {shown}: unknown or uninstalled database kind {parsed.drivername!r} ({exc}); "
                         "use sqlite:///PATH.db or postgresql+psycopg2://USER:PASSWORD@HOST/DB") from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(shown, parsed.database)
        return parsed
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=_connect_timeout(parsed),
                                          poolclass=sqlalchemy.pool.NullPool)
    except ModuleNotFoundError as exc:
        raise ValueError(f"storage {shown}: its database driver is not installed ({exc}); install it, or name an "
                         "installed one, e.g. postgresql+psycopg2://") from None
    try:
        engine.connect().close()
    except Exception as exc:  # noqa: BLE001  # the driver's own error says why (refused, auth, unknown db)
        raise ValueError(f"storage {shown}: cannot connect ({_first_line(exc)})") from None
    finally:
        engine.dispose()
    return parsed


def _first_line(exc: BaseException) -> str:
    """The first line of a database error's own message (the driver's, under SQLAlchemy's wrapper)."""
    lines = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _connect_timeout(parsed: Any) -> dict[str, Any]:
    return {"connect_timeout": 10} if parsed.get_backend_name() in ("postgresql", "mysql") else {}


def _check_sqlite_path(shown: str, database: str | None) -> None:
    if not database or database == ":memory:":
        raise ValueError(f"storage {shown}: an in-memory SQLite database cannot hold a resumable study; give a "
                         "file, sqlite:///studies/optuna.db")
    check_writable_file(database, f"storage {shown}:", "optuna.db")


def make_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD) -> RDBStorage:
    """An RDB storage with heartbeat and one retry of trials whose process died (also those that died before
    their first heartbeat, see :class:`_Storage`).

    ``url`` is a SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg2://user:pw@host/db``), checked by
    :func:`check_storage_url` first. The parent folder of a SQLite file is created.
    """
    if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
        raise ValueError(f"need heartbeat_interval >= 1 and grace_period > heartbeat_interval, got "
                         f"{heartbeat_interval} and {grace_period}")
    parsed = check_storage_url(url)
    shown = parsed.render_as_string(hide_password=True)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": 120}}  # several worker processes share one file
        try:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"storage {shown}: cannot create its folder "
                             f"({exc.strerror}: {exc.filename})") from None
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5; we opt in knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return _Storage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except Exception as exc:  # noqa: BLE001  # e.g. a file that is not an SQLite database
            raise ValueError(f"storage {shown}: cannot open it ({_first_line(exc)})") from None


def make_sampler(name: str, seed: int | None, constant_liar: bool = False,
                 n_startup_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """``n_startup_trials``: TPE samples at random until that many trials have finished (None: Optuna's 10)."""
    if name == "tpe":  # constant_liar: trials asked together (a batch, or parallel workers) spread out
        startup = {} if n_startup_trials is None else {"n_startup_trials": n_startup_trials}
        return optuna.samplers.TPESampler(seed=seed, constant_liar=constant_liar, **startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":  # categorical parameters fall back to independent (random) sampling
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {name!r}")


def make_pruner(name: str, spec: StudySpec) -> optuna.pruners.BasePruner:
    if name == "median":  # never prune on the first third of a trial's evaluations (and never on the first)
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(spec.n_evals // 3, 1))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {PRUNERS}, got {name!r}")


def study_spec(study: optuna.Study) -> StudySpec:
    attrs = study.user_attrs
    if "task" not in attrs:
        raise ValueError(f"study {study.study_name!r} was not created by hypermeta (it has no task attribute)")
    fields = {k: attrs[k] for k in StudySpec.__dataclass_fields__ if k in attrs}
    return StudySpec(**fields)


def open_study(spec: StudySpec, study_name: str, storage: str | RDBStorage, sampler: str = "tpe",
               pruner: str = "median", sampler_seed: int | None = 0, constant_liar: bool = False,
               n_startup_trials: int | None = None, runner: str | None = None) -> optuna.Study:
    """Create the study, or load it and check it was made with the same spec (else ``ValueError``). ``runner``
    (its name) is stored with a new study and checked against one that has it (studies from before it was
    stored resume with any runner)."""
    storage = make_storage(storage) if isinstance(storage, str) else storage
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=make_sampler(sampler, sampler_seed, constant_liar, n_startup_trials), pruner=make_pruner(pruner, spec),
    )
    wanted = {**spec.attrs(), "sampler": sampler, "pruner": pruner}
    if not study.user_attrs:
        for key, value in {**wanted, **({"runner": runner} if runner else {})}.items():
            study.set_user_attr(key, value)
        return study
    stored = study.user_attrs
    if runner and "runner" in stored:
        wanted["runner"] = runner
    # the controller and the start are compared by what their files hold (a moved file is the same, a retrained
    # one at the same path is not), and a study steered by one does not resume without it, nor the other way round
    wanted = {k: v for k, v in wanted.items() if k not in ("control", "init")}
    wanted.setdefault("control_key", None)
    wanted.setdefault("init_key", None)
    diff = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
    if diff:
        text = ", ".join(f"{k}: stored {a!r}, given {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"study {study_name!r} exists with other settings ({text}); resume it with the same "
                         "options or choose another --study-name")
    return study


class Objective:
    """Normalised area under the evaluation curve, averaged over the trial's tuning seeds.

    Reports the running mean of the normalised evaluations after each one (so pruners see a value
    on the same scale as the objective) and stores ``final_return`` (mean over seeds of the last
    evaluation), ``wall_time``, ``env_steps``, ``seeds``, ``config`` and ``curve`` as user attributes.
    """

    def __init__(self, spec: StudySpec, runner: str | Runner = DEFAULT_RUNNER) -> None:
        self.spec = spec
        self.runner = get_runner(runner)
        self.space = get_space(spec.space)
        self.normalizer = Normalizer.for_task(spec.task, spec.reference)

    def __call__(self, trial: optuna.Trial, study: optuna.Study | None = None) -> float:
        spec = self.spec
        config = self.space.suggest(trial, base=spec.base)
        seeds = spec.tuning_seeds(trial.number) if study is None else spec.trial_seeds(study, trial)
        trial.set_user_attr("seeds", seeds)
        trial.set_user_attr("config", config.to_dict())
        scores: list[float] = []
        finals: list[float] = []
        curves: list[list[float]] = []
        steps_done = [0]
        start = time.perf_counter()

        def on_eval(step: int, mean_return: float) -> None:
            scores.append(float(self.normalizer(mean_return)))
            trial.report(float(np.mean(scores)), len(scores) - 1)
            if trial.should_prune():
                steps_done[0] += step
                raise optuna.TrialPruned(f"pruned after {len(scores)} evaluations")

        try:
            for seed in seeds:
                curve = self.runner.run(spec.job(config, seed), on_eval)
                steps_done[0] += curve.env_steps
                finals.append(curve.returns[-1])
                curves.append(curve.returns)
        except DivergenceError as exc:
            trial.set_user_attr("fail_reason", f"diverged: {exc}")
            raise
        finally:
            trial.set_user_attr("wall_time", time.perf_counter() - start)
            trial.set_user_attr("env_steps", steps_done[0])
        trial.set_user_attr("final_return", float(np.mean(finals)))
        trial.set_user_attr("curve", curves)
        return float(np.mean(scores))


    def run_batch(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        """Evaluate ``trials`` together (all their seeds in one ``run_many`` call, one lock-step batch with the
        batched runner) and tell the study each result. Intermediate values are reported afterwards in the
        order :meth:`__call__` reports them, so pruners learn from them; a batch itself is never pruned."""
        spec, start = self.spec, time.perf_counter()
        jobs, owner = [], {}
        for trial in trials:
            config = self.space.suggest(trial, base=spec.base)
            seeds = spec.trial_seeds(study, trial)
            trial.set_user_attr("seeds", seeds)
            trial.set_user_attr("config", config.to_dict())
            for seed in seeds:
                jobs.append(spec.job(config, seed))
                owner[seed] = trial  # tuning seeds are unique to their trial
        results: dict[int, list] = {t.number: [] for t in trials}
        with _Heartbeats(study, trials):
            for job, result in self.runner.run_many(jobs):
                results[owner[job.seed].number].append((job.seed, result))
        for trial in trials:
            outcome = sorted(results[trial.number], key=lambda sr: sr[0])
            trial.set_user_attr("wall_time", (time.perf_counter() - start) / len(trials))
            errors = [r for _, r in outcome if isinstance(r, BaseException)]
            trial.set_user_attr("env_steps", sum(r.env_steps for _, r in outcome if not isinstance(r, BaseException)))
            if errors:
                trial.set_user_attr("fail_reason", f"diverged: {errors[0]}")
                study.tell(trial, state=TrialState.FAIL)
                continue
            scores = [float(self.normalizer(x)) for _, curve in outcome for x in curve.returns]
            for i in range(len(scores)):
                trial.report(float(np.mean(scores[: i + 1])), i)
            trial.set_user_attr("final_return", float(np.mean([c.returns[-1] for _, c in outcome])))
            trial.set_user_attr("curve", [c.returns for _, c in outcome])
            study.tell(trial, float(np.mean(scores)))


class _Heartbeats:
    """Records a heartbeat for every trial of a batch while it runs (what ``study.optimize`` does for one
    trial), so that other workers never mistake a live batch for dead trials."""

    def __init__(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        import threading

        self.storage, self.ids = study._storage, [t._trial_id for t in trials]
        self.interval = self.storage.get_heartbeat_interval() if is_heartbeat_enabled(self.storage) else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            for trial_id in self.ids:
                self.storage.record_heartbeat(trial_id)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> _Heartbeats:
        if self.interval:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def _count(trials: Sequence[optuna.trial.FrozenTrial], states: Sequence[TrialState]) -> int:
    return sum(t.state in states for t in trials)


def work(study: optuna.Study, objective: Objective, n_trials: int, poll_seconds: float = 1.0,
         max_diverged: int | None = None, on_progress: Any = None, batch_size: int = 1,
         deadline: float | None = None) -> None:
    """Run trials until the study has ``n_trials`` finished ones (complete or pruned).

    With ``batch_size`` > 1, up to that many trials are asked at once and evaluated together
    (:meth:`Objective.run_batch`); a batch never asks for more trials than the budget still needs. After
    ``deadline`` (a ``time.time()`` value) no new trial is started; running ones finish.

    Safe to run in several processes at once. Trials of dead processes turn stale after the storage's
    grace period and are retried; while other live trials could still complete the budget, it waits.
    Diverged trials (failed with a ``fail_reason``) do not count towards ``n_trials``; the study gives up
    after ``max_diverged`` of them (default ``max(2 * n_trials, 10)``), when the space is clearly unusable.
    """
    max_diverged = max(2 * n_trials, 10) if max_diverged is None else max_diverged
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = _count(trials, FINISHED)
        if on_progress is not None:
            on_progress(finished)
        if finished >= n_trials or (deadline is not None and time.time() >= deadline):
            return
        diverged = sum(t.state == TrialState.FAIL and "fail_reason" in t.user_attrs for t in trials)
        if diverged >= max_diverged:
            _log.warning("stopping: %d trials diverged (limit %d)", diverged, max_diverged)
            return
        if finished + _count(trials, (TrialState.RUNNING,)) >= n_trials and not _count(trials, (TrialState.WAITING,)):
            time.sleep(poll_seconds)  # the running trials may still finish the budget, or turn stale
            continue
        if batch_size > 1:
            room = n_trials - finished - _count(trials, (TrialState.RUNNING,))
            with warnings.catch_warnings():  # the batch's heartbeats are ours (_Heartbeats), not optimize's
                warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used", UserWarning)
                asked = [study.ask() for _ in range(max(1, min(batch_size, room)))]
            objective.run_batch(study, asked)
        else:
            study.optimize(lambda trial: objective(trial, study), n_trials=1, catch=(DivergenceError,),
                           gc_after_trial=False)


def _worker_main(kwargs: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = StudySpec(**kwargs["spec"])
    storage = make_storage(kwargs["storage"], kwargs["heartbeat_interval"], kwargs["grace_period"])
    study = open_study(spec, kwargs["study_name"], storage, kwargs["sampler"], kwargs["pruner"], kwargs["seed"],
                       constant_liar=kwargs["batch_size"] > 1, n_startup_trials=kwargs.get("n_startup_trials"),
                       runner=get_runner(kwargs["runner"]).name)
    work(study, Objective(spec, kwargs["runner"]), kwargs["n_trials"], batch_size=kwargs["batch_size"],
         deadline=kwargs["deadline"])


def load_enqueue_file(path: str | Path) -> list[DQNConfig]:
    """Configurations to warm-start with: a YAML/JSON mapping (one config) or a list of mappings."""
    data = read_yaml(path, "enqueue file")
    items = data if isinstance(data, list) else [data]
    return [DQNConfig.from_dict(d, source=f"enqueue file {str(path)!r} item {i}") for i, d in enumerate(items)]


def run_study(
    spec: StudySpec,
    n_trials: int,
    *,
    study_name: str | None = None,
    storage: str = DEFAULT_STORAGE,
    sampler: str = "tpe",
    pruner: str = "median",
    workers: int = 1,
    seed: int | None = 0,
    enqueue: Sequence[DQNConfig] = (),
    progress: bool | Callable[[int], None] = False,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
    runner: str = DEFAULT_RUNNER,
    batch_size: int = 1,
    deadline: float | None = None,
    n_startup_trials: int | None = None,
) -> optuna.Study:
    """Create or resume a study and run it until ``n_trials`` trials have finished.

    ``workers`` processes share the storage (worker ``i`` seeds its sampler with ``seed + i``).
    Configurations in ``enqueue`` are tried first (once each, even across resumes). With ``batch_size`` > 1
    (what ``runner="batched"`` is for) each worker asks that many trials at once and trains them together,
    with TPE's ``constant_liar`` so a batch spreads out; resuming after a kill keeps every finished trial.
    ``n_startup_trials``: TPE's random start (None: Optuna's default, 10 finished trials). ``progress``: True for
    a progress bar of this call, or a function that is given the number of the study's finished trials and the
    study, as they change (the caller's own report, as ``tune`` keeps one over several calls).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_task(spec.task, spec.reference)  # bad task ids and missing references fail before the storage is made
    study_name = study_name or default_study_name(spec, sampler)
    rdb = make_storage(storage, heartbeat_interval, grace_period)
    study = open_study(spec, study_name, rdb, sampler, pruner, seed, constant_liar=batch_size > 1,
                       n_startup_trials=n_startup_trials, runner=get_runner(runner).name)
    space = get_space(spec.space)
    for config in enqueue:
        study.enqueue_trial(space.to_optuna_params(config), skip_if_exists=True)
    objective = Objective(spec, runner)  # computes the normaliser once, before any worker starts

    bar = None
    if progress and not callable(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=n_trials, desc=study_name, unit="trial")

    def show(finished: int) -> None:
        if callable(progress):
            progress(finished, study)
        elif bar is not None:
            bar.n = min(finished, n_trials)
            bar.refresh()

    try:
        if workers == 1:  # one torch thread per trial, as in worker processes (tiny networks: threads only cost)
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                work(study, objective, n_trials, on_progress=show, batch_size=batch_size, deadline=deadline)
            finally:
                torch.set_num_threads(threads)
        else:
            ctx = multiprocessing.get_context("spawn")
            args = {"spec": asdict(spec), "storage": storage, "study_name": study_name, "sampler": sampler,
                    "pruner": pruner, "n_trials": n_trials, "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period, "runner": runner, "batch_size": batch_size, "deadline": deadline,
                    "n_startup_trials": n_startup_trials}
            procs = [ctx.Process(target=_worker_main, args=({**args, "seed": worker_seed(seed, i)},))
                     for i in range(workers)]
            for p in procs:
                p.start()
            try:
                while any(p.is_alive() for p in procs):
                    show(_count(study.get_trials(deepcopy=False), FINISHED))
                    time.sleep(1.0)
            except BaseException:  # Ctrl-C or SIGTERM of this process: stop the workers too (rerun to resume)
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.join(10)
                raise
            bad = [p.exitcode for p in procs if p.exitcode != 0]
            if bad:
                raise RuntimeError(f"{len(bad)} worker process(es) failed (exit codes {bad}); rerun to resume")
            show(_count(study.get_trials(deepcopy=False), FINISHED))
    finally:
        if bar is not None:
            bar.close()
    return study


def default_study_name(spec: StudySpec, sampler: str) -> str:
    return f"{spec.task}|{spec.space}|{sampler}|T{spec.timesteps}|m{spec.seeds_per_trial}"


def stored_study(storage: str, name: str) -> Any:
    """The stored study, or None where its SQLite file or the study does not exist yet (nothing is created)."""
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
        return None
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no study of that name
        return None


def finished_in_order(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Finished (complete or pruned) trials in the order they finished: the order a user saw them."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED]
    return sorted(trials, key=lambda t: (t.datetime_complete, t.number))


def tuning_env_steps(study: optuna.Study) -> list[int]:
    """Cumulative environment steps spent after each finished trial (in finishing order)."""
    return [int(x) for x in np.cumsum([t.user_attrs.get("env_steps", 0) for t in finished_in_order(study)])]


def best_config(study_name: str, storage: str | None = None, within_trials: int | None = None) -> DQNConfig:
    """Configuration of the best complete trial (optionally among the first ``within_trials`` finished)."""
    rdb = make_storage(storage or DEFAULT_STORAGE)
    try:
        study = optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(rdb)]
        raise ValueError(f"no study named {study_name!r} in {storage or DEFAULT_STORAGE}; it has {names}") from None
    return best_config_of(study, within_trials)


def best_trial_of(study: optuna.Study, within_trials: int | None = None) -> optuna.trial.FrozenTrial:
    """The best complete trial among the first ``within_trials`` finished ones (all, if None); ties: the earliest."""
    finished = finished_in_order(study)
    if within_trials is not None:
        finished = finished[:within_trials]
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    if not complete:
        raise ValueError(f"study {study.study_name!r} has no complete trial yet"
                         + (f" among its first {within_trials}" if within_trials else ""))
    return max(complete, key=lambda t: (t.value, -t.number))


def best_config_of(study: optuna.Study, within_trials: int | None = None) -> DQNConfig:
    spec = study_spec(study)
    return get_space(spec.space).from_optuna_params(best_trial_of(study, within_trials).params, base=spec.base)


def tuning_cost_frame(studies: dict[tuple[str, str], optuna.Study]) -> pd.DataFrame:
    """Environment steps spent by each ``(task, sampler)`` study after each finished trial: one row per
    ``(task, sampler, trials)``; what the reports plot best-so-far results against."""
    rows = [{"task": task, "sampler": sampler, "trials": k + 1, "env_steps": steps}
            for (task, sampler), study in studies.items() for k, steps in enumerate(tuning_env_steps(study))]
    return pd.DataFrame(rows, columns=["task", "sampler", "trials", "env_steps"])


def trials_frame(studies: dict[tuple[str, str], optuna.Study]) -> pd.DataFrame:
    """Every trial of every study (Optuna's ``trials_dataframe``), so reports reproduce without the database."""
    frames = []
    for (task, sampler), study in studies.items():
        df = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
        frames.append(df.assign(study=study.study_name, task=task, sampler=sampler))
    return pd.concat(frames, ignore_index=True)
