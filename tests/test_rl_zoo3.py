"""rl-baselines3-zoo, as users run it: `python -m rl_zoo3.train` with hypermeta's callback from a hyperparams file.

rl-zoo3 wraps every env in a `Monitor` that writes a file (so the env cannot be deep-copied); the callback with
no config must still predict (it probes a fresh env rebuilt from the env's spec) and log both tags."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

pytest.importorskip("rl_zoo3")

TAGS = {"hypermeta/learning_rate", "hypermeta/exploration_rate"}


def _tensorboard_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.mark.parametrize("callback", [
    [{"hypermeta.HyperMetaCallback": {"config": {"lr_initial": 1e-3, "lr_shape": "cosine", "eps_shape": "exponential"}}}],
    ["hypermeta.HyperMetaCallback"],  # the default predictor (shipped weights, features of a fresh env)
], ids=["config", "default-predictor"])
def test_rl_zoo3_train_with_the_callback_logs_both_tags(tmp_path, callback):
    conf = tmp_path / "dqn.yml"
    conf.write_text(yaml.safe_dump({"CartPole-v1": {
        "n_timesteps": 400, "policy": "MlpPolicy", "learning_starts": 50, "train_freq": 4, "callback": callback}}))
    result = subprocess.run(
        [sys.executable, "-m", "rl_zoo3.train", "--algo", "dqn", "--env", "CartPole-v1", "-conf", str(conf),
         "-f", str(tmp_path / "logs"), "--tensorboard-log", str(tmp_path / "tb"), "--seed", "0", "--log-interval", "1",
         "--eval-freq", "-1", "--num-threads", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert TAGS <= _tensorboard_tags(tmp_path / "tb")
    assert list((tmp_path / "logs").rglob("*.monitor.csv"))  # the env really was a file-writing Monitor
