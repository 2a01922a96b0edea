"""The performance matrix of meta-learner v2: per-task seeds, the portfolio over the fixed settings, resume."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

import hypermeta.engine.batched as engine
from hypermeta.lab.matrix import MatrixPlan, collect_matrix
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


def test_status_counts_stored_runs_and_estimates_the_rest(tmp_path, capsys):
    from hypermeta.cli import main
    from hypermeta.lab.matrix import format_progress, matrix_progress
    from hypermeta.engine.pipeline import RunStore

    plan = tiny_plan(tmp_path)
    collect_matrix(plan, n_tasks=1)  # the default context: 4 configurations x 2 seeds
    runs = RunStore(plan.runs_path).frame()
    assert "unknown until" in format_progress(matrix_progress(plan, runs.iloc[:0]))
    # runs at another budget, or of a configuration the plan lacks, count for nothing (not even their times)
    stale = runs.assign(timesteps=999, wall_time=runs["wall_time"] * 100)
    alien = runs.assign(config_key="not-in-the-plan", wall_time=runs["wall_time"] * 100)
    progress = matrix_progress(plan, pd.concat([runs, stale, alien], ignore_index=True)).set_index(["split", "family"])
    train = progress.loc[("train", "cartpole")]
    assert (train["tasks"], train["complete"], train["runs"], train["planned"]) == (3, 1, 8, 24)
    assert train["remaining_core_h"] == pytest.approx(16 * runs["wall_time"].median() / 3600)
    held = progress.loc[("heldout", "frozenlake")]
    assert held["runs"] == 0 and held["planned"] == 3 * 2 and pd.isna(held["remaining_core_h"])  # no frozenlake runs yet
    assert progress.loc[("heldout", "cartpole"), "s_per_run"] == train["s_per_run"]  # estimated from the family's runs
    # the time per run comes from the family's latest runs (file order): older, slower ones do not count
    slow_then_fast = runs.assign(wall_time=[100.0] * 4 + [2.0] * (len(runs) - 4))
    import hypermeta.lab.matrix as matrix

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matrix, "RECENT_RUNS", len(runs) - 4)
        assert matrix_progress(plan, slow_then_fast).set_index(["split", "family"]).loc[
            ("train", "cartpole"), "s_per_run"] == 2.0
    assert main(["matrix", str(plan.path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "1/3" in out and "8/24" in out and "not counting frozenlake" in out
