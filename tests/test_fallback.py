"""Meta-learner v3's fallback rule (studies/v3/plan.yaml, item 0 of issue 29): fall back to best-fixed only where the
task's observation/action structure is unknown to the training tasks, not wherever the OOD score is high."""

from __future__ import annotations

import pytest

from hypermeta.meta.predict import load_predictor, predict_config
from hypermeta.seeds import FEATURE_SEED
from hypermeta.tasks.features import probe_features


@pytest.mark.parametrize("task,known", [("frozenlake:success_rate=0.25", True), ("cartpole:gravity=12", True),
                                        ("lunarlander", False), ("minatar-breakout", False)])
def test_structure_fallback_keeps_the_prediction_of_known_structures(task, known):
    model = load_predictor()
    features = probe_features(task, seed=FEATURE_SEED)
    assert model.known_structure(features) == known
    shipped = predict_config(features, warn=False).prediction
    structure = predict_config(features, warn=False, fallback="structure").prediction
    assert structure.fallback == (not known)
    assert structure.out_of_distribution == (shipped.out_of_distribution or not known)  # the flag is kept
    if known:
        assert structure.config == predict_config(features, warn=False, fallback=False).prediction.config


def test_an_unknown_fallback_rule_is_refused():
    with pytest.raises(ValueError, match="fallback must be True, False or 'structure'"):
        load_predictor().predict(probe_features("cartpole", seed=FEATURE_SEED), fallback="ood")
