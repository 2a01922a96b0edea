"""Task distributions, `hypermeta collect`, the meta-learning CLI, the predicting callback and the meta report."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import optuna
import pandas as pd
import pytest
from scipy.stats import trim_mean
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from hypermeta import (FEATURE_NAMES, DQNConfig, HyperMetaCallback, MetaModel, MetaTrainConfig, OutOfDistributionWarning,
                       get_space, make_env, meta_train, predict_config, probe_features)
from hypermeta.cli import main
from hypermeta.lab.collect import TaskDistribution, collect
from hypermeta.meta.data import tasks_from_frame
from hypermeta.meta.method import METHODS
from hypermeta.seeds import FEATURE_SEED
from hypermeta.tasks.families import env_factory

optuna.logging.set_verbosity(optuna.logging.WARNING)


def tiny_distribution(tmp_path, **kw) -> TaskDistribution:
    base = dict(name="tiny", budgets={"cartpole": 300, "acrobot": 300, "mountaincar": 300, "frozenlake": 300},
                train={"cartpole": 2}, extra_train=["acrobot", "frozenlake"],
                heldout_contexts=["cartpole:gravity=12", "frozenlake:success_rate=0.5"],
                heldout_family=["mountaincar:force=0.002"], trials=2, n_evals=2, eval_episodes=1, test_seeds=1,
                best_of=[1, 2], storage=f"sqlite:///{tmp_path}/c.db", heldout_storage=f"sqlite:///{tmp_path}/h.db",
                dataset=str(tmp_path / "dataset.csv"), weights_dir=str(tmp_path / "weights"),
                report_dir=str(tmp_path / "report"),
                meta_train={"ensemble": 2, "meta_iterations": 10, "surrogate_epochs": 10, "inner_steps": 2})
    return TaskDistribution(**{**base, **kw})


def test_distribution_samples_fixed_contexts_and_validates(tmp_path):
    dist = tiny_distribution(tmp_path)
    tasks = dist.train_tasks()
    assert tasks[:2] == ["acrobot", "frozenlake"] and len(tasks) == 4
    assert tasks == tiny_distribution(tmp_path).train_tasks()
    assert all(t.startswith("cartpole:gravity=") for t in tasks[2:])
    with pytest.raises(ValueError, match="is of a training family"):
        tiny_distribution(tmp_path, heldout_family=["cartpole:gravity=5"])
    with pytest.raises(ValueError, match="not of a training family"):
        tiny_distribution(tmp_path, heldout_contexts=["mountaincar:force=0.0015"])
    with pytest.raises(ValueError, match="also training tasks"):
        tiny_distribution(tmp_path, heldout_contexts=["acrobot"])
    with pytest.raises(ValueError, match="no budget for family"):
        tiny_distribution(tmp_path, budgets={"cartpole": 300, "acrobot": 300})
    with pytest.raises(ValueError, match="unknown task family"):
        tiny_distribution(tmp_path, train={"cartpol": 2})
    with pytest.raises(ValueError, match="meta_train has unknown or reserved key"):
        tiny_distribution(tmp_path, meta_train={"method": "maml"})


def test_collect_exports_one_row_per_trial_and_grows_without_redoing(tmp_path):
    dist = tiny_distribution(tmp_path)
    frame = collect(dist, tasks=["acrobot"])
    assert len(frame) == 2 and set(frame["task"]) == {"acrobot"}
    assert list(frame.filter(like="f_").columns) == [f"f_{n}" for n in FEATURE_NAMES]
    np.testing.assert_allclose(frame.filter(like="f_").iloc[0], probe_features("acrobot", FEATURE_SEED).values)
    space = get_space("schedule")
    for _, row in frame.iterrows():  # the code column round-trips to the configuration of the trial
        config = space.decode(row[[f"x_{n}" for n in space.encoded_names]].to_numpy(float))
        assert config.lr_initial == pytest.approx(row["c_lr_initial"]) and config.eps_shape == row["c_eps_shape"]
    before = set(zip(frame["trial"], frame["objective"]))
    grown = collect(dist, tasks=["acrobot"], trials=3)
    assert len(grown) == 3 and before <= set(zip(grown["trial"], grown["objective"]))  # nothing redone or lost
    assert pd.read_csv(dist.dataset).shape[0] == 3


def _fake_dataset(path, n_tasks=6, seed=0):
    """A dataset with real feature columns (of real tasks) and random trials."""
    rng = np.random.default_rng(seed)
    space = get_space("schedule")
    rows = []
    for k, task in enumerate(["cartpole", "acrobot", "cartpole:length=0.8", "acrobot:link_mass_2=1.5",
                              "cartpole:gravity=15", "acrobot:link_length_1=1.4"][:n_tasks]):
        feats = probe_features(task, FEATURE_SEED).values
        for t in range(5):
            code = space.encode(space.decode(rng.uniform(size=space.dim)))
            rows.append({"task": task, "objective": float(rng.uniform()), **{f"f_{n}": v for n, v in zip(FEATURE_NAMES, feats)},
                         **{f"x_{n}": v for n, v in zip(space.encoded_names, code)}})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_meta_train_and_predict_commands(tmp_path, capsys):
    data = _fake_dataset(tmp_path / "d.csv")
    for method in METHODS:
        code = main(["meta-train", "--method", method, "--data", str(data), "--out", str(tmp_path / method),
                     "--ensemble", "2", "--iterations", "5"])
        if method in ("best-fixed", "k-nearest", "ridge-portfolio"):  # no shared configuration: one line says so
            assert code == 2 and "share their configurations" in capsys.readouterr().err
            continue
        assert code == 0 and (tmp_path / f"{method}.safetensors").exists()
    capsys.readouterr()
    assert main(["predict", "cartpole:gravity=11", "--weights", str(tmp_path / "reptile.safetensors"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "reptile" and DQNConfig.from_dict(out["config"])
    assert main(["predict", "cartpole", "--weights", str(tmp_path / "reptile.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "WARNING" not in text  # a training task is in distribution ...
    assert "learned for these DQN settings" in text and "batch_size 64" in text  # meta-train's base
    assert main(["predict", "frozenlake", "--weights", str(tmp_path / "reptile.safetensors"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # ... one-hot observations are unlike every training task
    assert out["out_of_distribution"] and "from the nearest training task" in out["reasons"][0]
    assert main(["predict", "cartpole", "--weights", str(tmp_path / "model.pt")]) == 2
    assert "pickle files" in capsys.readouterr().err
    # the DQN settings the data came from are recorded in the weights, and `predict` says them
    (tmp_path / "small.yaml").write_text("net_arch: small\nbatch_size: 128\n")
    assert main(["meta-train", "--method", "nearest-task", "--data", str(data), "--out", str(tmp_path / "s"),
                 "--settings", str(tmp_path / "small.yaml")]) == 0
    assert MetaModel.load(tmp_path / "s.safetensors").trained_settings == DQNConfig(net_arch="small", batch_size=128)
    capsys.readouterr()
    assert main(["predict", "cartpole", "--weights", str(tmp_path / "s.safetensors")]) == 0
    assert "batch_size 128" in capsys.readouterr().out
    assert main(["predict", "cartpole", "--weights", str(tmp_path / "s.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trained_settings"]["batch_size"] == 128
    # without --settings, a dataset that records its settings (c_ columns of every field) gives them
    frame = pd.read_csv(data)
    for name, value in DQNConfig(net_arch="small", gamma=0.98).to_dict().items():
        frame[f"c_{name}"] = value
    frame.to_csv(tmp_path / "with_settings.csv", index=False)
    assert main(["meta-train", "--method", "nearest-task", "--data", str(tmp_path / "with_settings.csv"),
                 "--out", str(tmp_path / "d")]) == 0
    assert MetaModel.load(tmp_path / "d.safetensors").trained_settings == DQNConfig(net_arch="small", gamma=0.98)
    frame.loc[0, "c_gamma"] = 0.9
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    assert main(["meta-train", "--method", "nearest-task", "--data", str(tmp_path / "mixed.csv"),
                 "--out", str(tmp_path / "m")]) == 2
    assert "2 values of gamma" in capsys.readouterr().err


def test_callback_without_config_predicts_from_the_training_env(tmp_path):
    tasks = tasks_from_frame(pd.read_csv(_fake_dataset(tmp_path / "d.csv")))
    predictor = meta_train(tasks, MetaTrainConfig(method="reptile", ensemble=1, meta_iterations=5))
    expected = predictor.predict(probe_features("cartpole:length=0.8", FEATURE_SEED), warn=False).config
    model = DQN("MlpPolicy", make_vec_env(env_factory("cartpole:length=0.8"), n_envs=2, seed=1),
                **DQNConfig(net_arch="small", learning_starts=100).sb3_kwargs())
    callback = HyperMetaCallback(predictor=predictor)
    model.learn(200, callback=callback)
    assert callback.config == expected and callback.prediction.nearest_task == "cartpole:length=0.8"
    assert model.lr_schedule(1.0) == pytest.approx(expected.lr_initial)
    assert model.exploration_schedule(0.0) == pytest.approx(expected.eps_final)
    path = predictor.save(tmp_path / "w")
    by_task = HyperMetaCallback(predictor=path, task="cartpole:length=0.8")
    DQN("MlpPolicy", make_vec_env(env_factory("cartpole"), seed=1), learning_starts=50).learn(10, callback=by_task)
    assert by_task.config == expected


@pytest.fixture(scope="module")
def nearest(tmp_path_factory):
    tasks = tasks_from_frame(pd.read_csv(_fake_dataset(tmp_path_factory.mktemp("d") / "d.csv", n_tasks=3)))
    return meta_train(tasks, MetaTrainConfig(method="nearest-task"))


def _monitored(task, path):
    return lambda: Monitor(make_env(task), filename=str(path))


@pytest.mark.parametrize("kind", ["monitor-file", "monitor-file-gym-id", "monitor-dir", "vecnormalize", "subprocess"])
def test_default_predictor_probes_a_fresh_env_never_the_training_env(tmp_path, nearest, kind):
    """rl-zoo3 and make_vec_env(monitor_dir=...) wrap envs in a Monitor writing a file (not deep-copyable);
    VecNormalize and SubprocVecEnv hide the envs. The probe rebuilds the env from its task id instead."""
    task = "CartPole-v1" if kind == "monitor-file-gym-id" else "cartpole:length=0.8"
    if kind.startswith("monitor-file"):  # a gymnasium id is rebuilt from its EnvSpec, a task id from the task
        venv = DummyVecEnv([_monitored(task, tmp_path / "m")])
    elif kind == "monitor-dir":
        venv = make_vec_env(env_factory(task), n_envs=2, seed=1, monitor_dir=str(tmp_path / "mon"))
    elif kind == "vecnormalize":
        venv = VecNormalize(make_vec_env(env_factory(task), n_envs=2, seed=1))
    else:
        venv = make_vec_env(env_factory(task), n_envs=2, seed=1, vec_env_cls=SubprocVecEnv)
    try:
        callback = HyperMetaCallback(predictor=nearest)
        model = DQN("MlpPolicy", venv, learning_starts=50)
        model.learn(16, callback=callback)
        expected = predict_config(task, nearest, warn=False).prediction
        assert callback.prediction.nearest_task == expected.nearest_task
        assert callback.config == expected.config
        if kind.startswith("monitor-file"):  # the training env took exactly the training steps, no probe steps
            assert venv.envs[0].get_total_steps() == model.num_timesteps
    finally:
        venv.close()


class _NoSpecEnv(gym.Env):
    """An env made without gymnasium's registry or a task id, holding an open file (cannot be copied)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, path):
        self.log = open(path, "a")  # noqa: SIM115

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


def test_unprobeable_env_fails_clearly_naming_the_task_argument(tmp_path, nearest):
    venv = DummyVecEnv([lambda: _NoSpecEnv(tmp_path / "log")])
    try:
        with pytest.raises(ValueError, match=r"cannot make a probe copy.*HyperMetaCallback\(task="):
            DQN("MlpPolicy", venv).learn(10, callback=HyperMetaCallback(predictor=nearest))
    finally:
        venv.close()
    with pytest.raises(ValueError, match="not both"):
        HyperMetaCallback(DQNConfig(), predictor=nearest)


def test_meta_report_end_to_end(tmp_path):
    from hypermeta.reports.meta import meta_report

    dist = tiny_distribution(tmp_path)
    collect(dist)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDistributionWarning)
        path = meta_report(dist)
    text = path.read_text()
    for method in ("hypermeta-maml", "hypermeta-nearest-task", "sb3-default", "rl-zoo", "base", "optuna-tpe@2"):
        assert f"| {method} |" in text
    assert "### held-out family" in text and "Feature probe: median" in text
    # rl-zoo has no FrozenLake entry: it is compared on the held-out contexts that have one, and marked n/a
    assert "### held-out contexts with an rl-zoo entry" in text and "| n/a |" in text
    for method in METHODS:
        assert MetaModel.load(tmp_path / "weights" / f"{method}.safetensors").method == method
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert set(runs["task"]) == {"cartpole:gravity=12", "frozenlake:success_rate=0.5", "mountaincar:force=0.002"}
    by_method = pd.read_csv(tmp_path / "report" / "runs_by_method.csv")
    family = text.split("### held-out family")[1].split("###")[0]
    for method in ("hypermeta-maml", "base", "optuna-tpe@2"):  # the held-out family's table is its runs' mean AUC
        sel = by_method[(by_method["method"] == method) & (by_method["task"] == "mountaincar:force=0.002")]
        assert f"| {method} | {trim_mean(sel['auc'], 0.25):.3f} [" in family


def test_predict_no_fallback_keeps_the_prediction_of_an_out_of_distribution_task(capsys):
    task = "cartpole:gravity=12,length=0.7,masspole=0.15"  # outside the shipped weights' CV threshold
    assert main(["predict", task, "--json"]) == 0
    shipped = json.loads(capsys.readouterr().out)
    assert main(["predict", task, "--json", "--no-fallback"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert shipped["out_of_distribution"] and own["out_of_distribution"]  # flagged either way
    assert shipped["fallback"] and not own["fallback"] and own["config"] != shipped["config"]
    from hypermeta.meta.model import load_default

    assert own["config"] == load_default().predict(probe_features(task, FEATURE_SEED), warn=False,
                                                   fallback=False).config.to_dict()


def test_shipped_default_weights_predict_and_drive_the_callback():
    from hypermeta.meta.model import default_weights_path, load_default

    model = load_default()
    meta = json.loads(default_weights_path().with_suffix(".json").read_text())
    assert meta["method"] == model.method and len(meta["training_tasks"]) >= 16
    assert {t.split(":")[0] for t in meta["training_tasks"]} >= {"cartpole", "acrobot", "frozenlake"}
    pred = model.predict(probe_features(meta["training_tasks"][0], FEATURE_SEED), warn=False)
    assert not pred.out_of_distribution  # a training task is in distribution
    task = "cartpole:gravity=12,length=0.7,masspole=0.15"
    expected = model.predict(probe_features(task, FEATURE_SEED), warn=False).config  # computed independently
    callback = HyperMetaCallback()  # no arguments: shipped weights, features of the training env
    dqn = DQN("MlpPolicy", make_vec_env(env_factory(task), seed=0), learning_starts=0, train_freq=4)
    dqn.learn(64, callback=callback)
    assert callback.config == expected
    # gradient steps happened, with the predicted lr schedule (its value at SB3's progress at the last train())
    assert dqn._n_updates > 0
    assert dqn.policy.optimizer.param_groups[0]["lr"] == pytest.approx(expected.lr_schedule()(0.0))
