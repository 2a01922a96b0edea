from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import yaml
from stable_baselines3 import DQN

from hypermeta import DQNConfig, get_space
from hypermeta.space import PARAMS
from hypermeta.space import NET_ARCHS

SPACE_NAMES = ["schedule", "full"]


def random_configs(space_name, n, seed=0):
    space = get_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append((space.suggest(trial), trial))
        study.tell(trial, 0.0)
    return configs


@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_encode_decode_round_trip(space_name):
    space = get_space(space_name)
    for config, _ in random_configs(space_name, 50):
        code = space.encode(config)
        assert code.shape == (space.dim,) and np.all((code >= 0) & (code <= 1))
        back = space.decode(code)
        for p in space.params:
            a, b = getattr(config, p.name), getattr(back, p.name)
            assert a == (b if isinstance(b, str) else pytest.approx(b, rel=1e-9)), p.name


@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_decode_clips_any_vector_to_a_valid_config(space_name):
    space = get_space(space_name)
    rng = np.random.default_rng(0)
    for _ in range(50):
        config = space.decode(rng.normal(0.5, 2.0, size=space.dim))
        DQNConfig(**config.to_dict())  # re-validates every field


def test_decode_rejects_wrong_length():
    with pytest.raises(ValueError, match="shape"):
        get_space("schedule").decode(np.zeros(3))


@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_optuna_params_round_trip(space_name):
    space = get_space(space_name)
    for config, trial in random_configs(space_name, 20, seed=1):
        assert space.from_optuna_params(trial.params) == config
        assert space.to_optuna_params(config) == pytest.approx(trial.params)
        assert set(trial.distributions) == set(space.distributions())


def test_schedule_space_leaves_base_fields_alone():
    for config, trial in random_configs("schedule", 10):
        assert set(trial.params) == {p.name for p in PARAMS if p.group == "schedule"}
        assert config.gamma == DQNConfig().gamma and config.net_arch == DQNConfig().net_arch


def test_enqueued_config_is_reproduced():
    space = get_space("full")
    target = DQNConfig(lr_initial=2.3e-3, gamma=0.98, batch_size=128, train_freq=16, subsample_steps=2,
                       target_update_interval=600, net_arch="big", eps_shape="cosine")
    study = optuna.create_study()
    study.enqueue_trial(space.to_optuna_params(target))
    trial = study.ask()
    assert space.suggest(trial) == target


@pytest.mark.parametrize("field,value,match", [
    ("lr_initial", 0.5, r"lr_initial must be in \[1e-05, 0.01\]"),
    ("eps_final", -0.1, r"eps_final must be in \[0, 0.2\]"),
    ("lr_shape", "step", "lr_shape must be one of 'constant', 'linear', 'cosine', 'exponential'"),
    ("batch_size", 100, "batch_size must be one of 16, 32"),
    ("train_freq", 2.5, "train_freq must be an integer"),
    ("gamma", float("nan"), "gamma must be in"),
    ("lr_initial", "fast", "lr_initial must be a number"),
    ("net_arch", True, "net_arch must be one of"),
])
def test_invalid_values_name_field_and_range(field, value, match):
    with pytest.raises(ValueError, match=match):
        DQNConfig(**{field: value})


def test_sb3_kwargs_build_a_dqn():
    config = DQNConfig(train_freq=16, subsample_steps=4, net_arch="small", batch_size=32, gamma=0.98)
    kwargs = config.sb3_kwargs()
    assert kwargs["gradient_steps"] == 4
    model = DQN("MlpPolicy", "CartPole-v1", **kwargs)
    assert model.batch_size == 32 and model.gamma == 0.98 and model.train_freq.frequency == 16
    assert [m.out_features for m in model.q_net.q_net if hasattr(m, "out_features")] == NET_ARCHS["small"] + [2]


@pytest.mark.parametrize("suffix", [".yml", ".yaml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    config = DQNConfig(lr_initial=1e-3, lr_shape="cosine", eps_fraction=0.3)
    path = config.save(tmp_path / f"cfg{suffix}")
    assert DQNConfig.load(path) == config


def test_partial_file_takes_base_values(tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text("lr_initial: 0.002\neps_shape: cosine\n")
    assert DQNConfig.load(path) == DQNConfig(lr_initial=0.002, eps_shape="cosine")


@pytest.mark.parametrize("text,match", [
    ("lr_initial: [oops", "not valid YAML/JSON"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("learning_rate: 0.001\n", r"unknown field\(s\) \['learning_rate'\]"),
    ("eps_final: 0.9\n", r"eps_final must be in \[0, 0.2\]"),
])
def test_malformed_files_are_explained(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        DQNConfig.load(path)
    with pytest.raises(ValueError, match="does not exist"):
        DQNConfig.load(tmp_path / "missing.yaml")


def test_zoo_export_is_a_valid_entry():
    config = DQNConfig(lr_initial=6.3e-4, train_freq=4, subsample_steps=1)
    entry = yaml.safe_load(yaml.safe_dump(config.to_zoo("LunarLander-v3", 100_000)))["LunarLander-v3"]
    assert entry["n_timesteps"] == 100_000 and entry["gradient_steps"] == 4
    assert entry["policy_kwargs"] == "dict(net_arch=[256, 256])"
    (cb,) = entry["callback"]
    assert DQNConfig.from_dict(cb["hypermeta.HyperMetaCallback"]["config"]) == config
    json.dumps(entry)
