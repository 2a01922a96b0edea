"""Every bad command-line input ends in one line on stderr and exit status 2: no traceback, no work, no file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hypermeta.cli import main

FILES = {
    "bad.yaml": "lr_initial: 0.001\nlr_shape: [linear\n",  # unclosed flow sequence
    "bad.json": '{"lr_initial": 0.001,, "lr_shape": "linear"}',
    "range.yaml": "lr_initial: 0.5\n",
    "list.yaml": "- 1\n- 2\n",
    "model.pt": "not a pickle you should load",
    "fake.safetensors": "\x80\x04 a pickle in disguise",
    "spec.yaml": "name: x\ntasks: {cartpole: 100}\ntrial: 3\n",
    "dist.yaml": "name: d\nbudgets: {cartpole: 100}\ntrain: {cartpole: 1}\nheldout_contexts: []\nheldout_family: []\n",
    "v3.yaml": "name: v3\nmatrix_plan: studies/meta2/plan.yaml\n",
}
PG = "postgresql+psycopg2://hyper:s3cret@127.0.0.1:1/x"  # nothing listens on port 1

CASES = [
    (["families", "--jsn"], "unrecognized arguments: --jsn"),
    (["space", "--space", "huge"], "invalid choice: 'huge'"),
    (["config", "--schedule", "missing.yaml"], "'missing.yaml' does not exist"),
    (["config", "--schedule", "bad.yaml"], "bad.yaml:3:1: schedule file is not valid YAML/JSON"),
    (["config", "--schedule", "list.yaml"], "must be a mapping of DQNConfig fields"),
    (["config", "--format", "toml"], "invalid choice: 'toml'"),
    (["config", "--timesteps", "-5"], "--timesteps: must be an integer >= 1, got '-5'"),
    (["features", "CartPol-v1"], "Did you mean CartPole-v1"),
    (["features", "cartpole", "--seed", "-3"], "--seed: must be an integer >= 0"),
    (["features", "Pendulum-v1"], "needs a Discrete action space"),
    (["features", "lunarlander:gravity=3"], "outside its valid range"),
    (["train", "cartpole", "--timesteps", "0"], "--timesteps: must be an integer >= 1, got '0'"),
    (["train", "CartPole-v1", "--timesteps", "100", "--seed", "-1"], "--seed: must be an integer >= 0, got '-1'"),
    (["train", "cartpole", "--timesteps", "100", "--n-envs", "0"], "--n-envs: must be an integer >= 1"),
    (["train", "cartpole", "--timesteps", "100", "--schedule", "bad.json"], "bad.json:1:22: schedule file"),
    (["train", "cartpole", "--timesteps", "100", "--schedule", "range.yaml"], "lr_initial must be in [1e-05, 0.01]"),
    (["train", "cartpole", "--timesteps", "100", "--weights", "model.pt"], "pickle files (.pt, .pth, .pkl) are refused"),
    (["train", "cartpole", "--timesteps", "100", "--base", "--weights", "w.safetensors"], "give one of"),
    (["train", "cartpole:gravity=-1", "--timesteps", "100"], "gravity"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "1", "--storage", "foo://bar"],
     "storage foo://bar: unknown or uninstalled database kind 'foo'"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "1", "--storage", PG],
     "storage postgresql+psycopg2://hyper:***@127.0.0.1:1/x: cannot connect (connection to server"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "1", "--storage", "sqlite:////proc/x/y.db"],
     "storage sqlite:////proc/x/y.db: cannot create its folder"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "1", "--storage", "sqlite://"], "in-memory SQLite"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "1", "--storage", "studies.db"],
     "storage must be a database URL"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "0"], "--trials: must be an integer >= 1"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "1", "--sampler", "grid"], "invalid choice: 'grid'"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "1", "--grace-period", "5", "--heartbeat-interval", "10"],
     "grace_period > heartbeat_interval"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "1", "--enqueue", "bad.yaml"], "bad.yaml:3:1: enqueue file"),
    (["study", "cartpole", "--timesteps", "100", "--trials", "1", "--sampler-seed", "-1"], "--sampler-seed: must be"),
    (["study", "cartpol", "--timesteps", "100", "--trials", "2"], "Did you mean cartpole"),
    (["evaluate", "cartpole", "--timesteps", "100", "--baseline", "tuned"], "unknown baseline 'tuned'"),
    (["evaluate", "cartpole", "--timesteps", "100", "--baseline", "base", "--config", "range.yaml"],
     "give exactly one of"),
    (["evaluate", "CliffWalking-v1", "--timesteps", "100", "--baseline", "base"], "--reference R"),
    (["evaluate", "cartpole", "--timesteps", "100", "--baseline", "base", "--seeds", "0"], "--seeds: must be"),
    (["evaluate", "cartpole", "--timesteps", "100", "--config", "bad.yaml"], "bad.yaml:3:1"),
    (["evaluate", "cartpole", "--timesteps", "100", "--baseline", "base", "--reference", "nan"],
     "--reference: must be a finite number"),
    (["compare", "missing.yaml"], "comparison file 'missing.yaml' does not exist"),
    (["compare", "spec.yaml"], "unknown key(s) ['trial']"),
    (["compare", "bad.yaml"], "bad.yaml:3:1: comparison file is not valid YAML/JSON"),
    (["collect", "dist.yaml", "--workers", "0"], "--workers: must be an integer >= 1"),
    (["meta-train", "--method", "bogus", "--out", "w"], "invalid choice: 'bogus'"),
    (["meta-train", "--method", "reptile", "--out", "w", "--data", "missing.csv"], "'missing.csv' does not exist"),
    (["meta-train", "--method", "reptile", "--out", "w", "--seed", "-1"], "--seed: must be an integer >= 0"),
    (["predict", "cartpole", "--weights", "model.pt"], "are refused because loading them can run code"),
    (["predict", "cartpole", "--weights", "fake.safetensors"], "fake.json"),
    (["predict", "cartpol"], "Did you mean cartpole"),
    (["train", "cartpole", "--timesteps", "100", "--base", "--no-fallback"], "applies to a predicted configuration"),
    (["meta-report", "missing.yaml"], "task distribution file 'missing.yaml' does not exist"),
    (["bench", "nothing"], "invalid choice: 'nothing'"),
    (["tune", "cartpole", "--timesteps", "300"], "give --trials N, --time-budget MINUTES, or both"),
    (["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--time-budget", "-1"], "time budget must be > 0"),
    (["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--storage", "foo://x"], "unknown or uninstalled"),
    (["matrix", "missing.yaml"], "plan file 'missing.yaml' does not exist"),
    (["bench", "overhead", "--timesteps", "0"], "--timesteps: must be an integer >= 1"),
    (["bench", "minatar", "--games", "minatar-brekout"], "did you mean ['minatar-breakout'"),
    (["meta2", "cv", "missing.yaml"], "plan file 'missing.yaml' does not exist"),
    (["meta2", "report", "studies"], "plan file 'studies' does not exist"),
    (["fewshot", "missing.yaml"], "few-shot plan file 'missing.yaml' does not exist"),
    (["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--sampler", "metatpe"], "needs --meta-data"),
    (["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--out", "."], "--out '.' is a folder"),
    (["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--out", "new/"], "--out 'new/' is a folder"),
    (["meta-control", "missing.yaml"], "plan file 'missing.yaml' does not exist"),
    (["meta-init", "cartpole", "--method", "bogus"], "invalid choice: 'bogus'"),
    (["meta-eval", "missing.yaml"], "plan file 'missing.yaml' does not exist"),
    (["meta-eval", "missing.yaml", "--step", "everything"], "invalid choice: 'everything'"),
    (["meta-eval", "v3.yaml", "--ship"], "the evaluation is not finished (steps to do: predictions, init-choice"),
    (["train", "taxi", "--timesteps", "100", "--init", "default"], "none is shipped for family 'taxi'"),
    (["meta-init", "cartpole", "--method", "reptile", "--plan", "missing.yaml"], "missing.yaml"),
    (["train", "cartpole", "--timesteps", "100", "--controller", "magic"], "unknown controller 'magic': use 'rule', 'default'"),
    (["train", "cartpole", "--timesteps", "100", "--init", "start.pt"], "must be a .safetensors file"),
]


@pytest.mark.parametrize("argv,match", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    for name, text in FILES.items():
        Path(name).write_text(text)
    before = sorted(os.walk(tmp_path))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hypermeta"), err
    assert "Traceback" not in err and match in err, err
    assert "s3cret" not in err  # passwords are masked
    assert out == ""  # nothing started
    assert sorted(os.walk(tmp_path)) == before  # nothing written


def test_at_least_thirty_bad_inputs_over_every_command():
    from hypermeta.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    assert len(CASES) >= 30 and {argv[0] for argv, _ in CASES} == commands


def test_wrong_credentials_name_the_cause(postgres_url):
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url).set(username="nobody", password="wr0ng").render_as_string(hide_password=False)
    with pytest.raises(ValueError, match=r"nobody:\*\*\*@.*cannot connect \(.*nobody") as info:
        from hypermeta.search.study import check_storage_url

        check_storage_url(url)
    assert "wr0ng" not in str(info.value)
