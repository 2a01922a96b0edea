from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from hypermeta.engine.runner import Runner

torch.set_num_threads(1)  # tiny networks: threads only add overhead and noise on 2 cores


class MarkerRunner(Runner):
    """A runner for process tests (defined here so spawned workers can import it): each run touches
    ``$HYPERMETA_TEST_MARKERS/<seed>`` and then sleeps 1.5 s."""

    name = "marker"

    def run(self, job, on_eval=None):
        from hypermeta.engine.measurement import Curve

        touch_and_sleep(Path(os.environ["HYPERMETA_TEST_MARKERS"], str(job.seed)))
        return Curve([job.measurement.timesteps], [0.0])


def touch_and_sleep(marker: Path) -> Path:
    """A job for process-pool tests (importable by spawned workers): touch ``marker``, then sleep 1.5 s."""
    marker.touch()
    time.sleep(1.5)
    return marker


class NaNRewardEnv(gym.Env):
    """Reward 1 for action 0, else 0; it turns NaN after 150 steps of episodes begun with an even seed."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.poisoned, self.t = False, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.poisoned = seed % 2 == 0
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float("nan") if self.poisoned and self.t > 150 else float(action == 0)
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), reward, False, self.t >= 200, {}


gym.register("HyperMetaTest/NaNReward-v0", entry_point=NaNRewardEnv, reward_threshold=200.0)


def _postgres_bin() -> Path | None:
    """The directory of Debian's PostgreSQL server programs (``apt-get install postgresql``)."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A throwaway PostgreSQL server on 127.0.0.1, started for this test session and stopped after it.

    Uses ``HYPERMETA_TEST_POSTGRES_URL`` if set. Otherwise it needs Debian's ``postgresql`` package; without
    it the test is skipped, unless ``HYPERMETA_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) turns that into a failure.
    """
    if os.environ.get("HYPERMETA_TEST_POSTGRES_URL"):
        yield os.environ["HYPERMETA_TEST_POSTGRES_URL"]
        return
    bindir = _postgres_bin()
    if bindir is None:
        message = "PostgreSQL server programs not found (apt-get install postgresql)"
        if os.environ.get("HYPERMETA_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="hypermeta-pg-"))  # not under pytest's 0700 base: postgres must reach it
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100", "start"],
                   check=True, capture_output=True)
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.time() + 30
        while True:
            try:
                import sqlalchemy

                sqlalchemy.create_engine(url).connect().close()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1.5)
        yield url
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def learn_recording_actions():
    """``learn(model, config, steps)``: train an SB3 DQN with ``HyperMetaCallback(config)`` and return every action
    it took (for the engine's agreement tests)."""
    from stable_baselines3.common.callbacks import BaseCallback

    from hypermeta import HyperMetaCallback

    def learn(model, config, steps: int) -> list[int]:
        actions: list[int] = []

        class Actions(BaseCallback):
            def _on_step(self) -> bool:
                actions.append(int(self.locals["actions"][0]))
                return True

        model.learn(steps, callback=[HyperMetaCallback(config), Actions()])
        return actions

    return learn


def _tiny_meta_model(method: str, folder: Path) -> str:
    from hypermeta.meta.data import SPACE, MetaTrainConfig, TaskData
    from hypermeta.meta.model import meta_train
    from hypermeta.tasks.features import FEATURE_NAMES

    rng = np.random.default_rng(0)
    tasks = [TaskData(f"t{k}", rng.normal(size=len(FEATURE_NAMES)), rng.uniform(size=(12, SPACE.dim)),
                      rng.uniform(size=12)) for k in range(8)]
    model = meta_train(tasks, MetaTrainConfig(method=method, ensemble=2, meta_iterations=30))
    return str(model.save(folder / method))


@pytest.fixture(scope="session")
def network_weights(tmp_path_factory) -> str:
    """A tiny meta-learner with networks (reptile, 2 members, synthetic tasks): for the few-shot step of
    `tune --sampler adapt`, whatever method the shipped default weights hold."""
    return _tiny_meta_model("reptile", tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def no_network_weights(tmp_path_factory) -> str:
    """A tiny meta-learner without networks (nearest-task): it has no few-shot step."""
    return _tiny_meta_model("nearest-task", tmp_path_factory.mktemp("weights"))


@pytest.fixture
def sigkill_when():
    """``run(cmd, storage, study_name, ready)``: start ``cmd`` in its own session, poll its Optuna study until
    ``ready(study)`` holds, kill -9 its process group and return the study as the kill left it."""
    import signal

    import optuna

    def run(cmd: list[str], storage: str, study_name: str | None, ready, poll: float = 0.1, timeout: float = 120):
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        try:
            while True:
                assert time.time() < deadline and proc.poll() is None, "the command ended before it could be killed"
                try:
                    study = optuna.load_study(study_name=study_name, storage=storage)
                except Exception:  # the study is not created yet
                    study = None
                if study is not None and ready(study):
                    break
                time.sleep(poll)
        finally:
            if proc.poll() is None:  # (an ended process is reported by the assertion above, not hidden by killpg)
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return optuna.load_study(study_name=study_name, storage=storage)

    return run
