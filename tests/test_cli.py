from __future__ import annotations

import json
import subprocess
import sys

import pytest
from stable_baselines3 import DQN

from hypermeta import DQNConfig, FEATURE_NAMES
from hypermeta.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_features_json(capsys):
    code, out, _ = run(capsys, "features", "cartpole:gravity=12", "--json")
    data = json.loads(out)
    assert code == 0 and data["task"] == "cartpole:gravity=12" and list(data["features"]) == list(FEATURE_NAMES)


def test_train_with_schedule_save_and_tensorboard(tmp_path, capsys):
    schedule = DQNConfig(lr_initial=1e-3, lr_shape="linear", net_arch="small", learning_starts=100).save(
        tmp_path / "s.yaml")
    code, out, _ = run(capsys, "train", "cartpole:length=0.3", "--timesteps", "800", "--seed", "3",
                       "--schedule", str(schedule), "--save", str(tmp_path / "m.zip"),
                       "--tensorboard", str(tmp_path / "tb"), "--eval-episodes", "2", "--progress")
    assert code == 0 and "mean return over 2 evaluation episodes" in out
    model = DQN.load(tmp_path / "m.zip")
    assert model.num_timesteps == 800 and model.learning_rate.start == 1e-3
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("argv,match", [
    (["train", "CartPol-v1", "--timesteps", "100"], "Did you mean CartPole-v1"),
    (["train", "Pendulum-v1", "--timesteps", "100"], "needs a Discrete action space"),
    (["train", "cartpole", "--timesteps", "0"], "timesteps must be a positive integer, got 0"),
    (["train", "cartpole", "--timesteps", "100", "--schedule", "missing.yaml"], "does not exist"),
    (["features", "lunarlander:gravity=3"], "outside its valid range"),
])
def test_bad_input_is_a_clear_error_before_training(capsys, argv, match):
    code, out, err = run(capsys, *argv)
    assert code == 2 and match in err and "training DQN" not in out


def test_malformed_schedule_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"lr_initial": 0.5}')
    code, _, err = run(capsys, "train", "cartpole", "--timesteps", "100", "--schedule", str(bad))
    assert code == 2 and "lr_initial must be in [1e-05, 0.01]" in err and "bad.json" in err


def test_config_space_and_families(capsys):
    code, out, _ = run(capsys, "config", "--format", "zoo", "--env", "Acrobot-v1")
    assert code == 0 and "Acrobot-v1:" in out and "hypermeta.HyperMetaCallback" in out
    code, out, _ = run(capsys, "space", "--space", "full", "--json")
    assert code == 0 and {r["name"] for r in json.loads(out)} >= {"lr_initial", "gamma", "net_arch"}
    code, out, _ = run(capsys, "families")
    assert code == 0 and all(n in out for n in ("cartpole", "acrobot", "mountaincar", "lunarlander"))


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "hypermeta.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "features" in out.stdout and "train" in out.stdout
