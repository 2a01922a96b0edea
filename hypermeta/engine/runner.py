"""The seam between experiments and training: a :class:`Runner` turns ``(task, configuration, seed)`` jobs
into learning curves.

Everything that trains DQN for a measurement (study trials, test runs, collected data, reports) goes through
a runner picked by name (:func:`get_runner`), so another way of training (the batched engine) plugs in here
with no change elsewhere. Runners are registered in :data:`RUNNERS` as ``"module:Class"`` strings, imported
only when used.

Call order: the pipeline calls :meth:`Runner.run_many` once with every job still to run, and consumes the
``(job, curve)`` pairs as they finish; a study calls :meth:`Runner.run` per seed of a trial, with an
``on_eval`` hook that may raise to prune.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, ClassVar, Iterator, Sequence

from hypermeta.engine.defaults import DEFAULT_RUNNER
from hypermeta.engine.measurement import Curve, DivergenceError, Measurement
from hypermeta.parallel import distributed, pool_results
from hypermeta.space import DQNConfig

#: Runner name -> ``"module:Class"``; add a runner with one line here.
RUNNERS: dict[str, str] = {
    "sb3": "hypermeta.engine.sb3:SB3Runner",
    "batched": "hypermeta.engine.batched:BatchedRunner",
}

OnEval = Callable[[int, float], None]


@dataclass(frozen=True)
class Job:
    """One training run: ``config`` on ``task`` with training seed ``seed``, measured by ``measurement``.

    ``method`` is only a label (several methods may share one run); ``reference`` overrides the task's
    reference return for normalisation; ``control``: a controller (:mod:`hypermeta.controller`: an instance, or
    ``"rule"``, ``"zero"``, ``"default"`` or a weights path) that steers the configuration's lr and epsilon during the
    run (None: the schedules as they are); ``init``: a Q-network start (:mod:`hypermeta.qstart`: a path or a
    :class:`~hypermeta.qstart.QStart`) loaded before the first step (None: SB3's random initialisation).
    """

    task: str
    method: str
    config: DQNConfig
    measurement: Measurement
    seed: int
    reference: float | None = None
    control: Any = None
    init: Any = None

    @property
    def control_key(self) -> str | None:
        """What names the run's controller in its stored key (None without one)."""
        if self.control is None:
            return None
        from hypermeta.controller import get_controller

        return get_controller(self.control).key

    @property
    def init_key(self) -> str | None:
        """What names the run's Q-network start in its stored key (None without one)."""
        if self.init is None:
            return None
        from hypermeta.qstart import get_start

        return get_start(self.init).key


class Runner(ABC):
    """Trains DQN on jobs and measures their learning curves (``measurement.n_evals`` greedy evaluations)."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, job: Job, on_eval: OnEval | None = None) -> Curve:
        """Train and evaluate one job. ``on_eval(step, mean_return)`` is called after every evaluation and
        may raise (e.g. ``optuna.TrialPruned``) to stop early. Raises
        :class:`~hypermeta.engine.measurement.DivergenceError` when training diverges."""

    def run_many(self, jobs: Sequence[Job], workers: int = 1) -> Iterator[tuple[Job, Curve | DivergenceError]]:
        """Run every job, yielding ``(job, curve)`` as each finishes, or ``(job, error)`` for a job whose
        training diverged (the others go on); in ``workers`` processes when > 1."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers == 1 and not distributed():
            for job in jobs:
                yield job, _run_single_thread(self, job)
            return
        yield from pool_results(partial(_run_single_thread, self), list(jobs), workers)


def _run_single_thread(runner: Runner, job: Job) -> Curve | DivergenceError:
    import torch

    torch.set_num_threads(1)  # tiny networks: more threads only cost
    try:
        return runner.run(job)
    except DivergenceError as exc:
        return exc


def get_runner(name: str | Runner = DEFAULT_RUNNER) -> Runner:
    """The runner registered as ``name`` (a :class:`Runner` instance is returned as it is)."""
    if isinstance(name, Runner):
        return name
    if name not in RUNNERS:
        raise ValueError(f"unknown runner {name!r}; choose one of {sorted(RUNNERS)}")
    module, cls = RUNNERS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
