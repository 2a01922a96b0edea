"""Optuna studies: objective, warm start, divergence, kill -9 and resume, several workers (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from hypermeta import DQNConfig, get_space
from hypermeta import Measurement
from hypermeta.engine.measurement import DivergenceError, Normalizer
from hypermeta.engine.sb3 import run_curve
from hypermeta.search.study import StudySpec, make_storage, open_study, run_study
from hypermeta.seeds import TEST_SEED_START, tuning_seeds

optuna.logging.set_verbosity(optuna.logging.WARNING)

# ~1 s per trial: learning starts after 100 steps, so the schedules matter even in a tiny run.
TINY = dict(timesteps=600, n_evals=3, eval_episodes=1)
SMALL_BASE = dict(net_arch="small", learning_starts=100)




def small_spec(task="CartPole-v1", **kw) -> StudySpec:
    return StudySpec(task, **{**TINY, **kw})


def finished(study):
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]


def test_objective_records_measurements_and_uses_tuning_seeds(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    study = run_study(small_spec(seeds_per_trial=2), 2, storage=storage, sampler="random", pruner="none")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    seeds = [s for t in trials for s in t.user_attrs["seeds"]]
    assert sorted(seeds) == [0, 1, 2, 3] and max(seeds) < TEST_SEED_START  # two seeds per trial, none reused
    for t in trials:
        assert len(t.user_attrs["curve"]) == 2 and all(len(c) == 3 for c in t.user_attrs["curve"])
        assert t.user_attrs["env_steps"] >= 2 * 600 and t.user_attrs["wall_time"] > 0
        norm = Normalizer.for_task("CartPole-v1")
        expected = np.mean([norm(np.array(c)).mean() for c in t.user_attrs["curve"]])
        assert t.value == pytest.approx(expected)  # objective = normalised AUC, mean over tuning seeds
        assert t.user_attrs["final_return"] == pytest.approx(np.mean([c[-1] for c in t.user_attrs["curve"]]))
        # reported after each evaluation of each seed in turn (running mean), so pruning can act
        assert sorted(t.intermediate_values) == list(range(6))
        assert t.intermediate_values[5] == pytest.approx(t.value)
        assert DQNConfig.from_dict(t.user_attrs["config"]) == get_space("schedule").from_optuna_params(t.params)
    df = study.trials_dataframe()  # an ordinary Optuna study
    assert {"params_lr_initial", "user_attrs_final_return"} <= set(df.columns)


def test_tuning_seeds_never_reach_test_seeds():
    spec = StudySpec("CartPole-v1", 100, seeds_per_trial=3)
    assert spec.tuning_seeds(2) == [6, 7, 8]
    with pytest.raises(ValueError, match="would use a test seed"):
        spec.tuning_seeds(TEST_SEED_START // 3)


def test_enqueued_configs_run_first_and_once(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    warm = DQNConfig(lr_initial=2e-3, lr_shape="cosine", eps_fraction=0.3, eps_shape="exponential")
    spec = small_spec()
    for n in (1, 2):  # the second call resumes: the enqueued config is not tried again
        study = run_study(spec, n, storage=storage, sampler="tpe", pruner="none", enqueue=[warm])
    trials = sorted(finished(study), key=lambda t: t.number)
    assert len(trials) == 2
    first = DQNConfig.from_dict(trials[0].user_attrs["config"])
    assert first.lr_initial == pytest.approx(2e-3) and first.lr_shape == "cosine" and first.eps_shape == "exponential"
    assert DQNConfig.from_dict(trials[1].user_attrs["config"]) != first


def test_resuming_with_other_settings_is_refused(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path}/s.db")
    open_study(small_spec(), "x", storage)
    with pytest.raises(ValueError, match="exists with other settings.*timesteps: stored 600, given 700"):
        open_study(small_spec(timesteps=700), "x", storage)
    open_study(small_spec(), "made-by", storage, runner="batched")
    open_study(small_spec(), "made-by", storage, runner="batched")  # the same runner resumes
    with pytest.raises(ValueError, match="runner: stored 'batched', given 'sb3'"):
        open_study(small_spec(), "made-by", storage, runner="sb3")
    open_study(small_spec(), "x", storage, runner="sb3")  # a study from before runners were stored resumes


def test_batched_tpe_starts_once_a_batch_has_finished(monkeypatch, tmp_path):
    """meta2's TPE and the few-shot cold studies: 8 trials per worker and TPE after 8 finished (Optuna's default of
    10 would leave a worker's second batch random too)."""
    import optuna

    from hypermeta.lab import meta2
    from hypermeta.search import study as study_module
    from hypermeta.lab.matrix import MatrixPlan
    from hypermeta.search.study import make_sampler

    def after_eight(n_startup):
        study = optuna.create_study(sampler=make_sampler("tpe", 0, True, n_startup), direction="maximize")
        dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
        for i in range(8):
            study.add_trial(optuna.trial.create_trial(params={"x": i / 8}, distributions=dist, value=float(i)))
        randomly = []
        real = optuna.samplers.RandomSampler.sample_independent
        monkeypatch.setattr(optuna.samplers.RandomSampler, "sample_independent",
                            lambda self, *a, **k: randomly.append(1) or real(self, *a, **k))
        study.ask().suggest_float("x", 0, 1)
        return bool(randomly)

    assert after_eight(None) and not after_eight(meta2.TPE_BATCH)  # Optuna's default would still be random
    seen = {}
    monkeypatch.setattr(study_module, "run_study", lambda spec, n, **kw: seen.update(kw, n=n))
    monkeypatch.setattr(study_module, "best_config_of", lambda study, k: None)
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump({
        "name": "p", "fixed": {}, "seed": 0, "train": {}, "heldout_contexts": ["cartpole:gravity=12"],
        "heldout_family": [], "budgets": {"cartpole": 1000}, "portfolio": {"sobol": 2}, "matrix_seeds": 1}))
    meta2.tpe_configs(MatrixPlan.load(tmp_path / "plan.yaml"), "cartpole:gravity=12", 2, "batched", False)
    assert (seen["batch_size"], seen["n_startup_trials"], seen["n"]) == (8, 8, 50)

def test_divergence_is_detected_during_training():
    config = DQNConfig(**SMALL_BASE)
    with pytest.raises(DivergenceError, match="non-finite"):
        run_curve("HyperMetaTest/NaNReward-v0", config, Measurement(400, 2, 1), seed=0)
    curve = run_curve("HyperMetaTest/NaNReward-v0", config, Measurement(400, 2, 1), seed=1)
    assert all(np.isfinite(curve.returns))


def test_diverging_trial_fails_with_reason_and_study_goes_on(tmp_path):
    # trials 0 and 2 train on even seeds: their rewards turn NaN; trials 1 and 3 complete.
    spec = StudySpec("HyperMetaTest/NaNReward-v0", 400, n_evals=2, eval_episodes=1, reference=200.0)
    study = run_study(spec, 2, storage=f"sqlite:///{tmp_path}/s.db", sampler="random", pruner="none")
    by_state = {s: [t.number for t in study.trials if t.state == s] for s in (TrialState.COMPLETE, TrialState.FAIL)}
    assert by_state == {TrialState.COMPLETE: [1, 3], TrialState.FAIL: [0, 2]}
    assert all(study.trials[n].user_attrs["fail_reason"].startswith("diverged: non-finite") for n in (0, 2))


def _study_cmd(storage: str, trials: int) -> list[str]:
    return [sys.executable, "-m", "hypermeta.cli", "study", "CartPole-v1", "--timesteps", "4000", "--n-evals", "3",
            "--eval-episodes", "1", "--trials", str(trials), "--storage", storage, "--study-name", "crash",
            "--sampler", "random", "--pruner", "none", "--heartbeat-interval", "1", "--grace-period", "3"]


def test_kill_9_then_same_command_resumes_keeping_finished_trials(tmp_path, sigkill_when):
    storage = f"sqlite:///{tmp_path}/crash.db"

    def ready(study):  # in the middle of a trial, after at least one has finished; whatever the running trial's
        # age: before or after its first heartbeat (both are failed and retried on resume; the next test makes the
        # no-heartbeat case certain)
        states = {t.state for t in study.get_trials(deepcopy=False)}
        return TrialState.COMPLETE in states and TrialState.RUNNING in states

    study = sigkill_when(_study_cmd(storage, 4), storage, "crash", ready, poll=0.2)
    before = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    killed = [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]
    assert before and len(killed) == 1

    result = subprocess.run(_study_cmd(storage, 4), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="crash", storage=storage)
    complete = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(complete) == 4 and all(complete[n] == v for n, v in before.items())  # nothing finished was lost
    assert study.trials[killed[0]].state == TrialState.FAIL  # the dead trial was failed by the heartbeat ...
    retries = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed[0]]
    # ... and retried once, with the parameters it had drawn (a kill in the middle of its suggestions leaves only
    # some of them: the retry keeps those and samples the rest)
    assert len(retries) == 1 and study.trials[killed[0]].params.items() <= retries[0].params.items()
    assert set(retries[0].params) == set(study.trials[min(complete)].params)  # a full configuration
    assert retries[0].user_attrs["seeds"] == tuning_seeds(killed[0], 1)  # the dead trial's seeds, not its own
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_retried(tmp_path):
    """A process killed between creating a trial and storing its first heartbeat leaves a RUNNING trial with no
    heartbeat row; the resumed study fails it once it is older than the grace period, retries it, finishes."""
    storage = f"sqlite:///{tmp_path}/orphan.db"
    rdb = make_storage(storage, heartbeat_interval=1, grace_period=3)
    spec = StudySpec("CartPole-v1", 4000, n_evals=3, eval_episodes=1)
    study = open_study(spec, "crash", rdb, sampler="random", pruner="none")
    orphan = rdb.create_new_trial(study._study_id)  # RUNNING, never a heartbeat: what such a kill leaves behind
    assert not rdb._has_heartbeat(orphan)
    assert orphan not in rdb._get_stale_trial_ids(study._study_id)  # younger than the grace period: not touched
    time.sleep(3.5)
    assert orphan in rdb._get_stale_trial_ids(study._study_id)
    result = subprocess.run(_study_cmd(storage, 2), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="crash", storage=storage)
    assert study.trials[0].state == TrialState.FAIL
    retries = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def _assert_no_lost_or_duplicated(study, n_trials: int) -> None:
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no gaps, no duplicated numbers
    done = [t for t in trials if t.state.is_finished()]
    assert n_trials <= len(done) <= n_trials + 1  # at most one extra if both workers start the last trial at once
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    seeds = [s for t in done for s in t.user_attrs["seeds"]]
    assert len(seeds) == len(set(seeds))  # every trial trained on its own tuning seed


def test_two_workers_share_one_sqlite_study(tmp_path):
    study = run_study(small_spec(), 6, storage=f"sqlite:///{tmp_path}/w.db", sampler="tpe", pruner="none",
                      workers=2)
    _assert_no_lost_or_duplicated(study, 6)


def test_two_workers_share_one_postgresql_study(postgres_url):
    name = f"pg-{os.getpid()}-{time.time_ns()}"
    study = run_study(small_spec(), 6, storage=postgres_url, study_name=name, sampler="tpe", pruner="none",
                      workers=2)
    _assert_no_lost_or_duplicated(study, 6)
    reloaded = optuna.load_study(study_name=name, storage=postgres_url)
    assert len(reloaded.trials) == len(study.trials)


def test_median_pruner_prunes_a_hopeless_trial(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path}/p.db")
    spec = small_spec(n_evals=4)
    study = open_study(spec, "p", storage, sampler="random", pruner="median")
    for value in (0.5, 0.6, 0.7, 0.8, 0.9):  # five good finished trials with high intermediate values
        trial = study.ask()
        for step in range(4):
            trial.report(value, step)
        study.tell(trial, value)
    trial = study.ask()
    trial.report(-1.0, 0)
    assert not trial.should_prune()  # warm-up: the first evaluation never prunes
    trial.report(-1.0, 1)
    assert trial.should_prune()


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc"])
def test_every_sampler_runs_a_study_over_the_full_space(tmp_path, sampler):
    spec = StudySpec("CartPole-v1", 300, space="full", n_evals=1, eval_episodes=1)
    study = run_study(spec, 3, storage=f"sqlite:///{tmp_path}/s.db", sampler=sampler, pruner="none")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    configs = [DQNConfig.from_dict(t.user_attrs["config"]) for t in trials]
    assert configs == [get_space("full").from_optuna_params(t.params) for t in trials]
    assert len({c.gamma for c in configs}) == 3  # the full space is searched, not only the schedules


def test_moved_retries_counts_retries_that_trained_on_their_own_numbers_seeds():
    """A retry that trained on the seeds of the trial it retries is not counted; one that trained on the seeds of
    its own number (every retry before 2026-11-27) is; trials that retry nothing never are."""
    from hypermeta.search.study import retried_trial_number
    from hypermeta.reports.common import moved_retries

    study = optuna.create_study()
    for number, retries, seeds_of in [(0, None, 0), (1, 0, 0), (2, 1, 2), (3, None, 3), (4, 3, 4)]:
        system = {} if retries is None else {"failed_trial": retries}
        study.add_trial(optuna.trial.create_trial(value=0.5, system_attrs=system,
                                                  user_attrs={"seeds": tuning_seeds(seeds_of, 2)}))
    assert [retried_trial_number(t) for t in study.trials] == [None, 0, 1, None, 3]
    assert moved_retries(study, seeds_per_trial=2) == 2  # trials 2 and 4
    assert moved_retries(study, seeds_per_trial=2, first=3) == 1  # among the first 3 finished, only trial 2
