"""Meta-training the controller by evolution strategies: the estimator and the update find a known optimum, and a
tiny meta-training in the engine runs, validates, writes its candidate and resumes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hypermeta.cli import main
from hypermeta.lab.control_training import ESState, adam_ascent, centred_ranks, es_gradient

ROOT = Path(__file__).resolve().parents[1]


def test_es_with_adam_climbs_to_the_optimum_of_a_known_function():
    rng = np.random.default_rng(0)
    optimum = np.array([0.5, -0.3, 0.2])
    theta, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    for t in range(1, 301):
        noise = rng.standard_normal((8, 3))
        f = lambda x: -np.sum((x - optimum) ** 2, axis=1)  # noqa: E731
        grad = es_gradient(noise, f(theta + 0.1 * noise), f(theta - 0.1 * noise), 0.1)
        theta, m, v = adam_ascent(theta, grad, m, v, t, lr=0.02)
    assert np.abs(theta - optimum).max() < 0.05


def test_fitness_shaping_is_centred_ranks():
    np.testing.assert_allclose(centred_ranks(np.array([10.0, -5.0, 0.0, 100.0])), [1 / 6, -0.5, -1 / 6, 0.5])


def test_a_tiny_meta_training_runs_validates_writes_its_candidate_and_resumes(tmp_path, capsys):
    meta2 = (ROOT / "studies" / "meta2" / "plan.yaml").read_text()
    tiny = re.sub(r"^budgets: .*$", "budgets: {cartpole: 1500, acrobot: 1500, frozenlake: 1500, mountaincar: 1500, lunarlander: 300}",
                  meta2, flags=re.M)
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "plan.yaml").write_text(tiny)
    shutil.copy(ROOT / "studies" / "meta2" / "dataset.csv", tmp_path / "m2" / "dataset.csv")
    plan = tmp_path / "v3.yaml"
    plan.write_text(f"name: t\nmatrix_plan: {tmp_path / 'm2' / 'plan.yaml'}\nmeta_training: {{pairs: 2, "
                    "tasks_per_family: 1, generations: 3, validate_every: 2, validation_tasks_per_family: 1, "
                    "validation_seeds: 1, sigma: 0.5}\n")
    out = tmp_path / "ctl"
    assert main(["meta-control", str(plan), "--out", str(out), "--generations", "2"]) == 0
    state = ESState.load(out / "es_state.json")
    assert state.generation == 2 and len(state.history) == 2 and len(state.validation) == 1
    assert np.linalg.norm(state.theta) > 0  # it moved
    runs = pd.read_csv(out / "es_runs.csv")
    assert len(runs) == 2 * (4 * 4) + 2 * 4  # 2 generations x 4 members x 4 tasks, then 2 controllers x 4 tasks
    assert set(runs["seed"]) >= {40_000_000, 40_000_100, 42_000_000}
    if state.validation[0]["mean_difference"] > 0:
        meta = json.loads((out / "controller.json").read_text())
        assert meta["generation"] == 2 and (out / "controller.safetensors").is_file()
    # resume: the third generation only
    assert main(["meta-control", str(plan), "--out", str(out)]) == 0
    again = ESState.load(out / "es_state.json")
    assert again.generation == 3 and again.history[:2] == state.history
    assert len(pd.read_csv(out / "es_runs.csv")) == len(runs) + 16
    assert "3 generations" in capsys.readouterr().out


def test_the_committed_v3_plan_parses_and_states_its_budget():
    from hypermeta.files import read_yaml
    from hypermeta.lab.control_training import ESSettings

    plan = read_yaml(ROOT / "studies" / "v3" / "plan.yaml", "v3 plan file")
    settings = ESSettings(**plan["meta_training"])
    assert settings.cpu_hours <= 15 and settings.pairs >= 1
    assert {"controller", "best-fixed", "hand-rule", "v2-winner", "v2-winner-no-fallback"} <= set(
        plan["evaluation"]["methods"])


def test_meta_training_refuses_more_generations_than_its_plan_registered(tmp_path):
    from hypermeta.lab.control_training import meta_train

    with pytest.raises(ValueError, match="beyond the plan's 120"):
        meta_train(ROOT / "studies/v3/plan.yaml", tmp_path, generations=121)
    assert not any(tmp_path.iterdir())
