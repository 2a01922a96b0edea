"""Names and defaults of the experiment commands, importable without optuna, torch or SB3 (the CLI's
``--help`` reads them)."""

from __future__ import annotations

#: Defaults of every :class:`~hypermeta.engine.measurement.Measurement` (study trials, test runs, data).
N_EVALS = 5
EVAL_EPISODES = 5
DEFAULT_STORAGE = "sqlite:///studies/optuna.db"
SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
PRUNERS = ("median", "none")
#: Seconds between a running trial's heartbeats in the storage.
HEARTBEAT_INTERVAL = 10
#: Seconds without a heartbeat after which a running trial counts as dead (failed, then retried once).
GRACE_PERIOD = 30
#: Test seeds of ``hypermeta evaluate`` and of the reports, unless a spec says otherwise.
TEST_SEEDS = 5
#: Runner names (the registry itself, with the classes, is hypermeta.engine.runner.RUNNERS).
RUNNERS = ("sb3", "batched")
DEFAULT_RUNNER = "sb3"
#: Trials per batch of a study run by the batched runner.
BATCHED_STUDY_BATCH = 16
