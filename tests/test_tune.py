"""`hypermeta tune`: round 0 from the meta-learner, then TPE; resumable; the best configuration as YAML."""

from __future__ import annotations

import optuna
import yaml
from optuna.trial import TrialState

from hypermeta import DQNConfig, HyperMetaCallback, load_default, predict_config
from hypermeta.cli import main
from hypermeta.experiments.tune import ROUND0, round0, tune

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_round0_starts_with_the_zero_shot_prediction_and_is_diverse():
    candidates = round0("cartpole:gravity=12")
    labels = [label for label, _ in candidates]
    assert labels[0] == "zero-shot" and any(label.startswith("nearest:") for label in labels)
    assert candidates[0][1] == predict_config("cartpole:gravity=12", warn=False).config
    assert 3 <= len(candidates) <= ROUND0
    assert len({yaml.safe_dump(c.to_dict()) for _, c in candidates}) == len(candidates)  # no duplicates
    model = load_default()
    assert len(candidates) <= 1 + len(model.members) + 3


def test_tune_tries_round0_first_then_tpe_and_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path}/t.db"
    first = tune("cartpole", 2, 300, storage=storage, runner="batched")
    configs = [DQNConfig.from_dict(t.user_attrs["config"]) for t in sorted(first.study.trials, key=lambda t: t.number)]
    assert configs == [c for _, c in first.candidates[:2]]  # the first trials are round 0, in order
    again = tune("cartpole", 3, 300, storage=storage, runner="batched")
    assert len(again.study.get_trials(states=(TrialState.COMPLETE,))) == 3 and again.trials == 3


def test_cli_tune_writes_a_best_yaml_the_callback_applies(tmp_path, capsys):
    out = tmp_path / "best.yaml"
    code = main(["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--runner", "batched",
                 "--storage", f"sqlite:///{tmp_path}/t.db", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "round 0" in text and "2 finished trials" in text and "SB3 kwargs" in text
    assert HyperMetaCallback(str(out)).config == DQNConfig.load(out)
