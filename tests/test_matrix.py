"""The performance matrix of meta-learner v2: per-task seeds, the portfolio over the fixed settings, resume."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

import hypermeta.experiments.engine as engine
from hypermeta.experiments.matrix import MatrixPlan, collect_matrix
from hypermeta.seeds import TEST_SEED_START, matrix_seeds


def tiny_plan(tmp_path) -> MatrixPlan:
    plan = {"name": "tiny", "fixed": {"net_arch": "small", "learning_starts": 100}, "seed": 1,
            "train": {"cartpole": 2}, "calibration": ["cartpole"], "heldout_contexts": ["cartpole:gravity=12"],
            "heldout_family": ["frozenlake"], "budgets": {"cartpole": 300, "frozenlake": 300},
            "portfolio": {"sobol": 2, "named": ["base", "rl-zoo"]}, "matrix_seeds": 2}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return MatrixPlan.load(path)


def test_portfolio_varies_only_the_schedules_over_the_fixed_settings(tmp_path):
    plan = tiny_plan(tmp_path)
    configs = plan.portfolio_for("cartpole")
    assert list(configs) == ["sobol-00", "sobol-01", "base", "rl-zoo"]
    assert {c.net_arch for c in configs.values()} == {"small"} and {c.learning_starts for c in configs.values()} == {100}
    assert configs["rl-zoo"].lr_initial == pytest.approx(2.3e-3)  # CartPole-v1's rl-zoo schedule
    assert "rl-zoo" not in plan.portfolio_for("frozenlake")  # rl-zoo has no FrozenLake entry


def test_every_task_has_its_own_seeds_disjoint_from_test_seeds(tmp_path):
    plan = tiny_plan(tmp_path)
    tasks = plan.train_tasks()
    assert tasks[0] == "cartpole" and len(tasks) == 3
    seeds = {t: {j.seed for j in plan.jobs([t])} for t in tasks}
    assert all(len(s) == 2 for s in seeds.values())
    assert not set.intersection(*seeds.values()) and max(max(s) for s in seeds.values()) < TEST_SEED_START
    with pytest.raises(ValueError, match="n <= 1000"):
        matrix_seeds(0, 1001)


def test_collection_resumes_without_redoing_runs(tmp_path, monkeypatch):
    plan = tiny_plan(tmp_path)
    first = collect_matrix(plan, n_tasks=1)
    assert len(first) == 4 * 2 and len(pd.read_csv(plan.runs_path)) == 8
    calls = []
    real = engine.train_group
    monkeypatch.setattr(engine, "train_group", lambda jobs, *a, **k: calls.append(len(jobs)) or real(jobs, *a, **k))
    grown = collect_matrix(plan, n_tasks=2)  # the first task's runs are read back, only the second's are trained
    assert calls == [8] and len(grown) == 16 and len(pd.read_csv(plan.runs_path)) == 16
    assert set(grown["task"]) == set(plan.train_tasks()[:2])
