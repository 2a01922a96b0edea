"""What every command module shares: argument types, the one-line error parser, shared options, warnings."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import NoReturn


def _load_config(path: str | None):
    from hypermeta.space import DQNConfig

    return DQNConfig() if path is None else DQNConfig.load(path)


def _add_fallback_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-fallback", action="store_true",
                   help="out of distribution, keep the meta-learner's own prediction instead of falling back to "
                        "best-fixed's configuration (the default behaviour); it is still flagged")


def _add_heartbeat_args(p: argparse.ArgumentParser) -> None:
    from hypermeta.engine.defaults import GRACE_PERIOD, HEARTBEAT_INTERVAL

    p.add_argument("--heartbeat-interval", type=positive_int, default=HEARTBEAT_INTERVAL,
                   help="seconds between a running trial's heartbeats in the storage")
    p.add_argument("--grace-period", type=positive_int, default=GRACE_PERIOD,
                   help="seconds without heartbeat after which a trial counts as dead (a killed run) and is retried once")


def _add_scoring_args(p: argparse.ArgumentParser) -> None:
    """How a run is scored: its evaluations and the return that normalises to 1."""
    from hypermeta.engine.defaults import EVAL_EPISODES, N_EVALS

    p.add_argument("--n-evals", type=positive_int, default=N_EVALS, help="evenly spaced evaluations per run")
    p.add_argument("--eval-episodes", type=positive_int, default=EVAL_EPISODES, help="greedy episodes per evaluation")
    p.add_argument("--reference", type=finite_float, help="return that normalises to 1 (default: the task's "
                   "reference return, e.g. reward_threshold; needed for tasks without one)")


def _add_measurement_args(p: argparse.ArgumentParser) -> None:
    from hypermeta.engine.defaults import DEFAULT_RUNNER, RUNNERS

    p.add_argument("task", help="task id (cartpole:gravity=15) or gymnasium id (CartPole-v1)")
    p.add_argument("--timesteps", type=positive_int, required=True, help="training steps per run")
    _add_scoring_args(p)
    p.add_argument("--workers", type=positive_int, default=1, help="processes on this machine")
    p.add_argument("--runner", choices=list(RUNNERS), default=DEFAULT_RUNNER,
                   help="sb3: one SB3 DQN per run; batched: the lock-step engine (see README)")
    p.add_argument("--progress", action="store_true")


def nonneg_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def finite_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``hypermeta CMD: error: ...``, exit 2) instead of usage dumps."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


@contextlib.contextmanager
def _one_line_warnings():
    """hypermeta's own warnings (e.g. the episode cap) as one line, ``WARNING ...`` on stderr, like the OOD one."""
    import warnings

    from hypermeta.tasks.families import EpisodeCapWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EpisodeCapWarning):
            print(f"WARNING {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: worker processes are stopped, storages stay consistent
