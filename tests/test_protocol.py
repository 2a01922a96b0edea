"""The evaluation protocol: test seeds, resumable per-seed results, IQM + CIs, baselines, best-so-far, reports."""

from __future__ import annotations

import json
import re

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy.stats import trim_mean
from scipy import stats

from hypermeta import DQNConfig, get_space
from hypermeta.search.baselines import RL_ZOO, SB3_DEFAULT, baseline_config
from hypermeta import Job, Measurement, run_jobs
from hypermeta.engine.measurement import Normalizer, random_return
from hypermeta.engine.pipeline import RunStore, iqm_with_ci, summarize
from hypermeta.search.comparison import ComparisonSpec
from hypermeta.reports.comparison import compare
from hypermeta.search.study import StudySpec, best_config_of, make_storage, open_study
from hypermeta.seeds import TEST_SEED_START, test_seeds

optuna.logging.set_verbosity(optuna.logging.WARNING)
TINY_SETTINGS = Measurement(300, 2, 1)


def test_test_seeds_are_disjoint_from_tuning_seeds():
    assert test_seeds(3) == [TEST_SEED_START, TEST_SEED_START + 1, TEST_SEED_START + 2]
    assert StudySpec("CartPole-v1", 100, seeds_per_trial=5).tuning_seeds(1000)[-1] < TEST_SEED_START
    with pytest.raises(ValueError, match="must be >= 1"):
        test_seeds(0)


def test_normalizer_maps_random_to_zero_and_reference_to_one():
    norm = Normalizer.for_task("CartPole-v1")
    assert 15 < norm.random < 30 and norm.reference == 475.0  # CartPole's reward_threshold
    assert norm(norm.random) == pytest.approx(0.0) and norm(475.0) == pytest.approx(1.0)
    assert Normalizer.for_task("cartpole").random == pytest.approx(random_return("cartpole"))
    assert Normalizer.for_task("MountainCar-v0").reference == -110.0
    with pytest.raises(ValueError, match=r"no reference return.*--reference R"):
        Normalizer.for_task("Blackjack-v1")  # Blackjack has no reward_threshold: the error says how to give one


def test_iqm_with_ci_matches_the_definition():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 3))
    b = a + 10
    table = iqm_with_ci({"a": a, "b": b}, reps=300).set_index("method")
    assert table.loc["a", "iqm"] == pytest.approx(stats.trim_mean(a.ravel(), 0.25))
    assert table.loc["b", "iqm"] == pytest.approx(table.loc["a", "iqm"] + 10)
    for m in "ab":
        assert table.loc[m, "ci_low"] < table.loc[m, "iqm"] < table.loc[m, "ci_high"]
    assert table.loc["a", "ci_high"] < table.loc["b", "ci_low"]


def test_run_jobs_stores_per_seed_rows_and_resumes_without_retraining(tmp_path, monkeypatch):
    config = DQNConfig(net_arch="small", learning_starts=100)
    jobs = [Job("CartPole-v1", "mine", config, TINY_SETTINGS, s) for s in test_seeds(2)]
    jobs.append(Job("CartPole-v1", "alias", config, TINY_SETTINGS, TEST_SEED_START))  # same run, other name
    store = RunStore(tmp_path / "runs.csv")
    runs = run_jobs(jobs, store)
    assert len(runs) == 3 and len(pd.read_csv(tmp_path / "runs.csv")) == 2  # the identical run trained once
    row = runs[runs["method"] == "mine"].iloc[0]
    curve = json.loads(row["curve"])
    assert len(curve) == 2 and row["final_return"] == curve[-1]
    assert row["auc"] == pytest.approx(np.mean(Normalizer.for_task("CartPole-v1")(np.array(curve))))

    from hypermeta.engine.sb3 import SB3Runner

    monkeypatch.setattr(SB3Runner, "run", lambda self, job, on_eval=None: pytest.fail("a stored run was trained again"))
    again = run_jobs(jobs, RunStore(tmp_path / "runs.csv"))
    pd.testing.assert_series_equal(again.sort_values(["method", "seed"])["auc"].reset_index(drop=True),
                                   runs.sort_values(["method", "seed"])["auc"].reset_index(drop=True))
    table = summarize(again, ["mine"], ["CartPole-v1"], reps=100)
    assert table.iloc[0]["runs"] == 2
    # another store adopts the identical runs it lacks, once, and trains only the rest
    other = RunStore(tmp_path / "other.csv")
    extra = Job("CartPole-v1", "mine", config, TINY_SETTINGS, TEST_SEED_START + 5)
    assert other.adopt(RunStore(tmp_path / "runs.csv"), [*jobs, extra]) == 2
    assert other.adopt(RunStore(tmp_path / "runs.csv"), jobs) == 0 and len(pd.read_csv(tmp_path / "other.csv")) == 2
    assert other.get(extra) is None and other.get(jobs[2])["auc"] == other.get(jobs[0])["auc"]
    # copied byte for byte: a reloaded store keeps the exact floats it read (pandas' default parser may not)
    assert (tmp_path / "other.csv").read_text() == (tmp_path / "runs.csv").read_text()


def test_a_reloaded_run_store_keeps_every_float_exactly(tmp_path):
    # pandas' default CSV float parser reads 0.39949973199928535 as 0.3994997319992853: a resumed evaluation would
    # then rewrite its cached runs with other last digits (and adopt slightly different copies)
    row = {"task": "t", "method": "m", "config_key": "k", "seed": 1, "timesteps": 10, "n_evals": 1, "eval_episodes": 1,
           "auc": 0.39949973199928535, "final_return": 0.28604609612292303, "final_score": 0.29444345184920495,
           "wall_time": 1.0, "env_steps": 10, "curve": "[1.0]", "config": "{}"}
    RunStore(tmp_path / "runs.csv").add(row)
    again = RunStore(tmp_path / "runs.csv").frame().iloc[0]
    assert [again[c] for c in ("auc", "final_return", "final_score")] == [row[c] for c in ("auc", "final_return",
                                                                                        "final_score")]


def test_baselines_resolve_by_name():
    assert baseline_config("sb3-default", "acrobot") == SB3_DEFAULT
    assert SB3_DEFAULT.sb3_kwargs()["learning_rate"](0.5) == 1e-4 and SB3_DEFAULT.buffer_size == 1_000_000
    assert baseline_config("rl-zoo", "cartpole:gravity=12") == RL_ZOO["CartPole-v1"]  # variants use the env's
    assert baseline_config("rl-zoo", "Acrobot-v1").sb3_kwargs()["gradient_steps"] == 4  # zoo's -1 with freq 4
    assert baseline_config("base", "cartpole") == DQNConfig()
    with pytest.raises(ValueError, match="unknown baseline 'best'"):
        baseline_config("best", "cartpole")
    with pytest.raises(ValueError, match="rl-zoo has no tuned DQN entry"):
        baseline_config("rl-zoo", "Taxi-v3")


def _add(study, space, value, lr):
    # add_trial stamps the completion time 'now': trials finish in the order they are added
    study.add_trial(optuna.trial.create_trial(
        params=space.to_optuna_params(DQNConfig(lr_initial=lr)), distributions=space.distributions(),
        value=value, user_attrs={"env_steps": 100}))


def test_best_so_far_picks_the_best_among_the_first_k_finished(tmp_path):
    study = open_study(StudySpec("CartPole-v1", 100), "bsf", make_storage(f"sqlite:///{tmp_path}/b.db"))
    space = get_space("schedule")
    lrs = [1e-4, 2e-4, 3e-4, 4e-4]
    for value, lr in zip([0.1, 0.5, 0.3, 0.9], lrs):
        _add(study, space, value, lr)
    assert best_config_of(study, 1).lr_initial == pytest.approx(1e-4)
    assert best_config_of(study, 3).lr_initial == pytest.approx(2e-4)
    assert best_config_of(study).lr_initial == pytest.approx(4e-4)
    empty = open_study(StudySpec("CartPole-v1", 100), "empty", make_storage(f"sqlite:///{tmp_path}/b.db"))
    with pytest.raises(ValueError, match="has no complete trial"):
        best_config_of(empty)


def test_comparison_runs_end_to_end_and_writes_the_report(tmp_path):
    spec = ComparisonSpec(name="tiny", tasks={"cartpole": 300}, samplers=["random"], trials=2, n_evals=2,
                          eval_episodes=1, test_seeds=2, best_so_far=[1, 2], baselines=["base", "rl-zoo"],
                          storage=f"sqlite:///{tmp_path}/c.db", out_dir=str(tmp_path / "report"))
    path = compare(spec)
    text = path.read_text()
    for method in ("base", "rl-zoo", "optuna-random@2"):
        assert f"| {method} |" in text
    for name in ("learning_curves.png", "best_so_far.png", "score_distributions.png", "runs.csv",
                 "aggregates.csv", "best_so_far.csv", "trials.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert set(runs["seed"]) == {TEST_SEED_START, TEST_SEED_START + 1}
    trials = pd.read_csv(tmp_path / "report" / "trials.csv")
    assert len(trials) == 2 and (trials["user_attrs_seeds"].map(lambda s: max(json.loads(s))) < TEST_SEED_START).all()
    # the table's numbers are the runs' numbers: IQM (25% trimmed mean) of every run's AUC and final score
    by_method = pd.read_csv(tmp_path / "report" / "runs_by_method.csv")
    for method in ("base", "rl-zoo", "optuna-random@2"):
        sel = by_method[by_method["method"] == method]
        auc, final = trim_mean(sel["auc"], 0.25), trim_mean(sel["final_score"], 0.25)
        assert re.search(rf"\| {re.escape(method)} \| {auc:.3f} \[[-0-9.]+, [-0-9.]+\] \| {final:.3f} \[", text)
    cost = pd.read_csv(tmp_path / "report" / "tuning_cost.csv")
    assert cost["env_steps"].iloc[-1] == trials["user_attrs_env_steps"].sum()


def test_comparison_file_errors_are_clear(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("name: x\ntasks: {cartpole: 100}\ntrial: 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['trial'\]"):
        ComparisonSpec.load(bad)
    with pytest.raises(ValueError, match="best_so_far points must lie in"):
        ComparisonSpec(name="x", tasks={"cartpole": 100}, trials=5, best_so_far=[10])
    with pytest.raises(ValueError, match="sampler must be one of"):
        ComparisonSpec(name="x", tasks={"cartpole": 100}, samplers=["grid"])
