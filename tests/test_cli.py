from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from stable_baselines3 import DQN

from hypermeta import DQNConfig, FEATURE_NAMES
from hypermeta.cli import main


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's one-line errors
        code = exc.code
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
    """The `hypermeta` executable that pip installed next to this interpreter (not `python -m`)."""
    script = Path(sys.executable).parent / "hypermeta"
    assert script.is_file(), f"no console script at {script}: is hypermeta installed (pip install -e .)?"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "features" in out.stdout and "train" in out.stdout
    bad = subprocess.run([str(script), "train", "CartPole-v1", "--timesteps", "100", "--seed", "-1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_study_evaluate_and_compare_commands(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/s.db"
    common = ["--timesteps", "300", "--n-evals", "2", "--eval-episodes", "1"]
    code, out, _ = run(capsys, "study", "cartpole", *common, "--trials", "2", "--storage", storage,
                       "--study-name", "s", "--sampler", "random", "--pruner", "none")
    assert code == 0 and "2 finished trials" in out and '"lr_initial"' in out
    csv = tmp_path / "runs.csv"
    code, out, _ = run(capsys, "evaluate", "cartpole", *common, "--study", "s", "--storage", storage,
                       "--seeds", "2", "--out", str(csv))
    assert code == 0 and "study:s on cartpole: IQM normalised AUC" in out and "2 test seeds" in out
    code, out, _ = run(capsys, "evaluate", "cartpole", *common, "--baseline", "rl-zoo", "--seeds", "1",
                       "--out", str(csv))
    assert code == 0 and "rl-zoo on cartpole" in out
    assert len(pd.read_csv(csv)) == 3  # per-seed rows, appended
    spec = tmp_path / "c.yaml"
    spec.write_text(f"name: c\ntasks: {{cartpole: 300}}\nsamplers: [random]\ntrials: 1\nn_evals: 2\n"
                    f"eval_episodes: 1\ntest_seeds: 1\nbest_so_far: [1]\nbaselines: [base]\n"
                    f"storage: {storage}\nout_dir: {tmp_path / 'report'}\n")
    code, out, _ = run(capsys, "compare", str(spec))
    assert code == 0 and (tmp_path / "report" / "report.md").exists()



def test_evaluate_unknown_study_lists_existing_ones(capsys, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    code, _, err = run(capsys, "evaluate", "cartpole", "--timesteps", "100", "--study", "nope", "--storage", storage)
    assert code == 2 and "no study named 'nope'" in err


def test_train_compare_ends_with_a_measured_comparison_against_sb3s_default_schedules(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "cartpole:gravity=12", "--timesteps", "400", "--base", "--eval-episodes", "1",
                 "--compare", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("normalised AUC") and "SB3's default schedules" in last and "over the 2 seeds" in last
    assert list(tmp_path.iterdir()) == []  # measured in memory, nothing written
