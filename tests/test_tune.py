"""`hypermeta tune`: round 0 from the meta-learner, then TPE; resumable; the best configuration as YAML."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from hypermeta import DQNConfig, HyperMetaCallback, load_default, predict_config
from hypermeta.cli import main
from hypermeta.search.study import best_config_of
from hypermeta.search.tune import ROUND0, round0, tune
from hypermeta.seeds import tuning_seeds

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_round0_starts_with_the_zero_shot_prediction_and_is_diverse():
    candidates = round0("cartpole:gravity=12")
    labels = [label for label, _ in candidates]
    assert labels[0] == "zero-shot" and any(label.startswith("nearest:") for label in labels)
    assert candidates[0][1] == predict_config("cartpole:gravity=12", warn=False).config
    assert 3 <= len(candidates) <= ROUND0
    assert len({yaml.safe_dump(c.to_dict()) for _, c in candidates}) == len(candidates)  # no duplicates
    model = load_default()
    # zero-shot, best-fixed (unless that is the method), the members' own (when more than one), 3 nearest tasks
    assert len(candidates) <= 1 + (model.fallback is not None) + len(model.members) + 3


def test_tune_tries_round0_first_then_tpe_and_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path}/t.db"
    first = tune("cartpole", 4, 300, storage=storage, runner="batched")
    configs = [DQNConfig.from_dict(t.user_attrs["config"]) for t in sorted(first.study.trials, key=lambda t: t.number)]
    assert len(first.candidates) == 2  # round 0 takes at most half of the trials, so TPE gets the rest
    assert configs[:2] == [c for _, c in first.candidates]  # the first trials are round 0, in order
    again = tune("cartpole", 5, 300, storage=storage, runner="batched")
    assert len(again.study.get_trials(states=(TrialState.COMPLETE,))) == 5 and again.trials == 5


def test_tpe_starts_from_round0s_results_not_from_a_random_start(tmp_path, monkeypatch):
    import hypermeta.search.tune as tune_module
    from hypermeta.search.study import make_sampler

    calls, real = [], tune_module.run_study

    def spy(spec, n_trials, **kwargs):
        calls.append((n_trials, kwargs["batch_size"], kwargs.get("n_startup_trials"), len(kwargs.get("enqueue", ()))))
        return real(spec, n_trials, **kwargs)

    monkeypatch.setattr(tune_module, "run_study", spy)
    tune("cartpole", 4, 300, storage=f"sqlite:///{tmp_path}/t.db", runner="batched")
    # round 0 (2 candidates) alone first; then TPE, whose random start is those 2 finished trials
    assert calls == [(2, 4, None, 2), (4, 2, 2, 0)]
    assert make_sampler("tpe", 0, n_startup_trials=2)._n_startup_trials == 2
    assert make_sampler("tpe", 0)._n_startup_trials == 10  # Optuna's default, for cold studies


def _printed_exports(text: str) -> tuple[str, dict]:
    """The Python lines ``tune`` prints after "SB3 kwargs" (dedented) and the rl-zoo entry after them."""
    lines = text.split("SB3 kwargs", 1)[1].splitlines()[1:]
    end = next(i for i, line in enumerate(lines) if line.strip().startswith("model.learn("))
    code = "\n".join(line[4:] for line in lines[:end + 1])
    rest = [line for line in lines[end + 1:] if not line.startswith("rl-zoo (")]
    return code, yaml.safe_load("\n".join(rest))


def _check_exports(text: str, out, task: str, env_id: str, timesteps: int, storage: str):
    """best.yaml is the study's best trial; the printed SB3 code builds a DQN with its values and the callback
    that applies it; the printed rl-zoo entry has the same values. Returns best.yaml's configuration, the DQN
    the snippet built and the rl-zoo entry."""
    from hypermeta.tasks.families import make_env

    study = optuna.load_study(study_name=None, storage=storage)
    best = DQNConfig.load(out)
    assert best == best_config_of(study) and HyperMetaCallback(str(out)).config == best
    code, zoo = _printed_exports(text)
    env = make_env(task)
    scope = {"env": env}
    exec(code.replace("total_timesteps=...", "total_timesteps=1"), scope)  # noqa: S102 - the printed snippet
    model = scope["model"]
    assert model.learning_rate(1.0) == pytest.approx(best.lr_initial)
    assert (model.batch_size, model.exploration_initial_eps) == (best.batch_size, best.eps_initial)
    (entry,) = zoo.values()
    assert list(zoo) == [env_id] and entry["n_timesteps"] == timesteps
    assert entry["learning_rate"] == pytest.approx(best.lr_initial) and entry["batch_size"] == best.batch_size
    assert DQNConfig.from_dict(entry["callback"][0]["hypermeta.HyperMetaCallback"]["config"]) == best
    env.close()
    return best, model, entry


def test_cli_tune_writes_a_best_yaml_the_callback_applies_and_prints_working_exports(tmp_path, capsys):
    """The printed SB3 code runs once the user's env and total_timesteps are filled in."""
    out, storage = tmp_path / "best.yaml", f"sqlite:///{tmp_path}/t.db"
    code = main(["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--runner", "batched",
                 "--storage", storage, "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "round 0" in text and "2 finished trials" in text and "s of CPU" in text
    assert "out of distribution" not in text  # cartpole is a training family's default context
    _check_exports(text, out, "cartpole", "cartpole", 300, storage)


def test_cli_tune_on_a_minatar_game_writes_a_schedule_train_uses(tmp_path, capsys):
    """The issue's own command on MinAtar (SB3 runner, the CNN), at a tiny budget; its best.yaml drives `train`."""
    from hypermeta.networks import MinAtarCNN

    out, storage = tmp_path / "best.yaml", f"sqlite:///{tmp_path}/t.db"
    code = main(["tune", "MinAtar/Breakout-v1", "--timesteps", "300", "--trials", "2", "--n-evals", "1",
                 "--eval-episodes", "1", "--storage", storage, "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "2 finished trials" in text
    best, model, entry = _check_exports(text, out, "MinAtar/Breakout-v1", "MinAtar/Breakout-v1", 300, storage)
    assert isinstance(model.policy.q_net.features_extractor, MinAtarCNN)
    assert "MinAtarCNN" in entry["policy_kwargs"] and "from hypermeta.networks import MinAtarCNN" in text
    assert main(["train", "MinAtar/Breakout-v1", "--timesteps", "200", "--schedule", str(out),
                 "--eval-episodes", "1"]) == 0
    assert f"lr: {best.lr_schedule()}" in capsys.readouterr().out  # train used best.yaml's schedule


def test_cli_tune_passes_scoring_and_pruner_options_to_the_study(tmp_path, monkeypatch):
    """--reference (for tasks without a reference return), --n-evals and --eval-episodes reach the study. The
    default pruner is none for a new study, as the few-shot benchmark measured tune, and the study's own when it
    resumes one (studies of older versions were stored with the median pruner)."""
    import hypermeta.search.tune as tune_module
    from hypermeta.search.study import StudySpec, open_study

    seen = []

    def first_study(spec, n_trials, **kwargs):
        seen.append((spec, kwargs["pruner"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_module, "run_study", first_study)
    storage = f"sqlite:///{tmp_path}/t.db"
    argv = ["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--storage", storage,
            "--reference", "123.5", "--n-evals", "2", "--eval-episodes", "3"]
    for extra, pruner in (([], "none"), (["--pruner", "median"], "median")):
        with pytest.raises(KeyboardInterrupt):
            main(argv + extra)
        spec, used = seen.pop()
        assert (spec.reference, spec.n_evals, spec.eval_episodes, used) == (123.5, 2, 3, pruner)
    assert not (tmp_path / "t.db").exists()  # looking for a stored pruner created nothing
    open_study(StudySpec("cartpole", 300), "tune|cartpole|T300|m1", storage, pruner="median")
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert seen.pop()[1] == "median"


def test_time_budget_stops_starting_trials_once_spent(tmp_path, monkeypatch):
    """With only a time budget, round 0 runs and no later round starts once the budget is spent (a fake clock
    jumps past it after round 0); the progress bar has no fixed total."""
    import time as real_time

    import hypermeta.search.tune as tune_module

    clock = {"now": real_time.time()}
    monkeypatch.setattr(tune_module, "time", type("Clock", (), {"time": staticmethod(lambda: clock["now"])}))
    calls, real = [], tune_module.run_study

    def spy(spec, n_trials, **kwargs):
        calls.append(n_trials)
        study = real(spec, n_trials, **kwargs)
        clock["now"] += 3600  # an hour later: past the 10-minute budget
        return study

    monkeypatch.setattr(tune_module, "run_study", spy)
    bars = []
    import tqdm.auto

    real_bar = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **k: bars.append(k["total"]) or real_bar(*a, **k))
    res = tune("cartpole", None, 300, storage=f"sqlite:///{tmp_path}/t.db", runner="batched",
               time_budget_minutes=10, progress=True)
    assert len(calls) == 1 and calls[0] == len(res.candidates) == res.trials  # round 0 only
    assert bars == [None]  # one bar for the call, no total
    with pytest.raises(ValueError, match="a number of trials, a time budget, or both"):
        tune("cartpole", None, 300, storage=f"sqlite:///{tmp_path}/t.db")


def test_cli_tune_says_before_any_training_when_the_task_is_out_of_distribution(tmp_path, capsys, monkeypatch):
    """The shipped weights flag LunarLander out of distribution (meta2's held-out family): tune says so, with the
    advice, before its first trial; the prediction it warns about is the one round 0 uses (probed once)."""
    import hypermeta.search.tune as tune_module
    import hypermeta.meta.predict as predict

    probes, real = [], predict.predict_config
    monkeypatch.setattr(predict, "predict_config", lambda *a, **k: probes.append(a[0]) or real(*a, **k))
    monkeypatch.setattr(tune_module, "predict_config", predict.predict_config)
    trained = []

    def first_study(*args, **kwargs):  # what was printed before any training; then stop
        trained.append(capsys.readouterr().out)
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_module, "run_study", first_study)
    with pytest.raises(KeyboardInterrupt):
        main(["tune", "lunarlander", "--timesteps", "300", "--trials", "2", "--storage", f"sqlite:///{tmp_path}/t.db"])
    assert probes == ["lunarlander"]
    assert len(trained) == 1 and trained[0].startswith("WARNING out of distribution: ") and "more trials" in trained[0]


def test_tune_killed_with_sigkill_in_round0_resumes_with_the_same_command(tmp_path, sigkill_when):
    """kill -9 while round 0 trains; the same command fails its trials once they are stale, retries each once
    with the same configuration, and finishes the study; nothing is lost or run twice."""
    storage = f"sqlite:///{tmp_path}/t.db"
    cmd = [sys.executable, "-m", "hypermeta.cli", "tune", "cartpole", "--timesteps", "6000", "--trials", "4",
           "--runner", "batched", "--storage", storage, "--out", str(tmp_path / "best.yaml"),
           "--heartbeat-interval", "1", "--grace-period", "3"]
    study = sigkill_when(cmd, storage, None, lambda s: bool(s.get_trials(deepcopy=False, states=(TrialState.RUNNING,))))
    killed = study.get_trials(states=(TrialState.RUNNING,))
    assert killed and not study.get_trials(states=(TrialState.COMPLETE,))  # killed in round 0, nothing finished

    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name=None, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in killed] == [t.number for t in trials if t.state == TrialState.FAIL]
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    for dead in killed:  # each retried once, with its configuration
        retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == dead.number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        assert dead.params.items() <= retries[0].params.items()
        assert retries[0].system_attrs["fixed_params"] == dead.system_attrs["fixed_params"]  # round 0's config
        assert retries[0].user_attrs["seeds"] == tuning_seeds(dead.number, 1)  # and the dead trial's seeds
    round0 = [t for t in trials if t.number < 2 or RetryHeartbeatStaleTrialCallback.retried_trial_number(t) in (0, 1)]
    assert len({tuple(sorted(t.params.items())) for t in round0 if t.state == TrialState.COMPLETE}) == 2
    assert DQNConfig.load(tmp_path / "best.yaml") == best_config_of(study)


# --- the proposers after round 0 ------------------------------------------------------------------------------
def _meta_tasks(optima, n_tasks=6, seed=0, trials=67):
    """Training tasks of a portfolio's size whose objective peaks at one of ``optima`` (alternating)."""
    import numpy as np

    from hypermeta.meta.data import SPACE, TaskData

    cont = [i for i, n in enumerate(SPACE.encoded_names) if "=" not in n]  # numbers, not one-hot choices
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_tasks):
        codes = rng.uniform(size=(trials, SPACE.dim))
        opt = optima[k % len(optima)]
        out.append(TaskData(f"meta-{k}", np.zeros(3), codes, -((codes[:, cont] - opt[cont]) ** 2).sum(1)))
    return out, cont


def test_metatpe_proposes_near_the_region_good_on_similar_tasks_and_weighs_them_more():
    import numpy as np

    from hypermeta.search.proposers import MetaTPEProposer
    from hypermeta.meta.data import SPACE

    near, far = np.full(SPACE.dim, 0.2), np.full(SPACE.dim, 0.8)
    tasks, cont = _meta_tasks([near, far])
    proposer = MetaTPEProposer(tasks, seed=0)
    rng = np.random.default_rng(1)
    codes = np.clip(near + rng.normal(0, 0.15, (6, SPACE.dim)), 0, 1)  # the new task is good where `near` tasks are
    observed = [(SPACE.decode(c), float(-((c[cont] - near[cont]) ** 2).sum())) for c in codes]
    props = proposer.propose(observed, 8)
    assert len(props) == 8 and len({json.dumps(p.to_dict()) for p in props}) == 8

    def dist(configs):
        return float(np.mean(np.linalg.norm(np.stack([SPACE.encode(c) for c in configs])[:, cont] - near[cont], axis=1)))

    uniform = dist([SPACE.decode(c) for c in rng.uniform(size=(200, SPACE.dim))])
    assert dist(props) < 0.8 * uniform  # measured 0.61 vs 0.88
    w = proposer.weights
    assert np.mean([w.get(f"meta-{k}", 0.0) for k in (0, 2, 4)]) > np.mean([w.get(f"meta-{k}", 0.0) for k in (1, 3, 5)])


def test_adapt_proposer_moves_away_from_the_observed_configs(network_weights):
    from hypermeta.search.proposers import AdaptProposer
    from hypermeta.meta.predict import predict_config

    import numpy as np

    pred = predict_config("cartpole:gravity=11", network_weights, warn=False)
    base = pred.prediction.config
    higher = base.replace(lr_initial=min(base.lr_initial * 4, 0.01))
    observed = [(base, 0.3), (higher, 0.6)]  # the higher learning rate did better
    props = AdaptProposer(pred.model, pred.features, steps=30).propose(observed, 3)
    assert 1 <= len(props) <= 3
    assert all(json.dumps(p.to_dict()) not in {json.dumps(c.to_dict()) for c, _ in observed} for p in props)
    # the few-shot step moved the prediction towards the better trial
    assert np.log(props[0].lr_initial) > np.log(base.lr_initial) + 0.3 * (np.log(higher.lr_initial) - np.log(base.lr_initial))


def _other_settings(weights: str, folder) -> str:
    """A copy of ``weights`` that records other DQN settings (batch size 32)."""
    from hypermeta.meta.model import MetaModel

    model = MetaModel.load(weights)
    model.trained_settings = model.base.replace(batch_size=32)
    return str(model.save(folder / "other-settings"))


def test_tune_with_a_proposer_runs_rounds_and_names_its_study(tmp_path, network_weights, no_network_weights):
    from hypermeta.search.tune import tune

    storage = f"sqlite:///{tmp_path / 't.db'}"
    with pytest.raises(ValueError, match="needs a meta-learner with networks.*--adapt-weights"):  # before any run
        tune("cartpole", 5, 300, storage=storage, runner="batched", sampler="adapt", predictor=no_network_weights)
    with pytest.raises(ValueError, match="other DQN settings"):  # round-0 weights of other settings
        tune("cartpole", 5, 300, storage=storage, runner="batched", sampler="adapt", adapt_predictor=network_weights,
             predictor=_other_settings(network_weights, tmp_path))
    with pytest.raises(ValueError, match="--adapt-weights is for --sampler adapt"):
        tune("cartpole", 5, 300, storage=storage, runner="batched", adapt_predictor=network_weights)
    assert not (tmp_path / "t.db").exists()
    # round 0 from one model without networks, the few-shot step from another with them (the same settings)
    res = tune("cartpole", 5, 300, storage=storage, runner="batched", sampler="adapt", predictor=no_network_weights,
               adapt_predictor=network_weights)
    assert res.trials == 5 and res.study.study_name.endswith("|adapt")
    trials = sorted(res.study.trials, key=lambda t: t.number)
    assert len(res.candidates) == 2 and all("fixed_params" in t.system_attrs for t in trials)  # all enqueued:
    round0 = {json.dumps(c.to_dict()) for _, c in res.candidates}  # round 0, then the proposer's rounds
    assert not round0 & {json.dumps(t.user_attrs["config"]) for t in trials[2:]}
    with pytest.raises(ValueError, match="needs --meta-data"):
        tune("cartpole", 5, 300, storage=storage, sampler="metatpe")


def test_adapt_with_the_shipped_default_takes_the_shipped_network_methods_step():
    """The shipped default (a method without networks) cannot adapt; `meta2 ship` ships the network method with
    the best CV score beside it, trained on the same settings, and `--sampler adapt` takes its few-shot step."""
    import json as _json

    from hypermeta.search.proposers import AdaptProposer
    from hypermeta.search.tune import make_proposer
    from hypermeta.meta.model import MetaModel, default_adapt_weights_path, default_weights_path

    default = MetaModel.load(default_weights_path())
    if default.members:
        pytest.skip("the shipped default has networks: adapt uses it directly")
    provenance = _json.loads(default_adapt_weights_path().with_name("adapt.provenance.json").read_text())
    shipped = MetaModel.load(default_adapt_weights_path())
    assert shipped.members and shipped.method == provenance["method"] and shipped.base == default.base
    proposer = make_proposer("adapt", predict_config("cartpole", warn=False), None, 0)
    assert isinstance(proposer, AdaptProposer) and proposer.model.method == provenance["method"]


def test_cli_tune_steers_its_trials_with_a_controller_and_starts_them_from_a_start(tmp_path, capsys):
    """Every trial runs under the controller and from the start (stored with the study, so a resume must give the
    same), the study is named after them, and the printed callback carries both."""
    from hypermeta.qstart import QStart

    start = QStart({"q_net.0.weight": [[0.1] * 4] * 64, "q_net.0.bias": [0.0] * 64,
                    "q_net.2.weight": [[0.01] * 64] * 64, "q_net.2.bias": [0.0] * 64,
                    "q_net.4.weight": [[0.01] * 64] * 2, "q_net.4.bias": [0.0] * 2}, {"family": "cartpole"})
    path = str(start.save(tmp_path / "start"))
    out, storage = tmp_path / "best.yaml", f"sqlite:///{tmp_path}/t.db"
    code = main(["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--runner", "batched",
                 "--storage", storage, "--out", str(out), "--controller", "rule", "--init", path])
    text = capsys.readouterr().out
    assert code == 0 and "2 finished trials" in text
    assert f"HyperMetaCallback({str(out)!r}, controller='rule', init={path!r})" in text
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.study_name == f"tune|cartpole|T300|m1|hand-rule|{start.key}"
    attrs = optuna.load_study(study_name=summary.study_name, storage=storage).user_attrs
    assert attrs["control"] == "rule" and attrs["init"] == path
    with pytest.raises(ValueError, match="exists with other settings"):  # resumed without its controller and start
        tune("cartpole", 3, 300, runner="batched", storage=storage, study_name=summary.study_name)
    plain = f"sqlite:///{tmp_path}/plain.db"
    assert main(["tune", "cartpole", "--timesteps", "300", "--trials", "2", "--runner", "batched",
                 "--storage", plain, "--out", str(tmp_path / "plain.yaml")]) == 0
    steered = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    unsteered = optuna.load_study(study_name="tune|cartpole|T300|m1", storage=plain).trials
    assert [t.params for t in steered] == [t.params for t in unsteered]  # the same round 0 ...
    assert [t.user_attrs["curve"] for t in steered] != [t.user_attrs["curve"] for t in unsteered]  # ... trained otherwise


def test_cli_tune_refuses_a_start_that_does_not_fit_the_task_before_any_study(tmp_path):
    from hypermeta.qstart import QStart

    start = QStart({"q_net.0.weight": [[0.0] * 6] * 64, "q_net.0.bias": [0.0] * 64, "q_net.2.weight": [[0.0] * 64] * 64,
                    "q_net.2.bias": [0.0] * 64, "q_net.4.weight": [[0.0] * 64] * 3, "q_net.4.bias": [0.0] * 3},
                   {"family": "acrobot"})
    path = str(start.save(tmp_path / "acrobot"))
    proc = subprocess.run([sys.executable, "-m", "hypermeta.cli", "tune", "cartpole", "--timesteps", "300", "--trials",
                           "1", "--storage", f"sqlite:///{tmp_path}/t.db", "--init", path],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "fits observations of size 6, 3 actions" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "t.db").exists()
