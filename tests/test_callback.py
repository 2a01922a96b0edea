"""The callback must change what SB3 actually uses during training, not only return numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stable_baselines3 import A2C, DQN
from stable_baselines3.common.callbacks import CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import LinearSchedule

from hypermeta import DQNConfig, HyperMetaCallback

CONFIG = DQNConfig(lr_initial=1e-3, lr_final_ratio=0.01, lr_shape="cosine", eps_initial=0.9, eps_final=0.02,
                   eps_fraction=0.5, eps_shape="exponential", learning_starts=100, net_arch="small",
                   batch_size=32, buffer_size=5_000)


class Spy:
    """Wraps ``model.predict`` and ``model.train`` to record the epsilon and the optimizer lr SB3 really uses."""

    def __init__(self, model: DQN) -> None:
        self.model, self.eps, self.lr = model, [], []
        predict, train = model.predict, model.train

        def spy_predict(*args, **kwargs):
            if not kwargs.get("deterministic", False):  # the exploration call from _sample_action
                self.eps.append((model.num_timesteps, model.exploration_rate))
            return predict(*args, **kwargs)

        def spy_train(*args, **kwargs):
            out = train(*args, **kwargs)
            self.lr.append((model.num_timesteps, model.policy.optimizer.param_groups[0]["lr"]))
            return out

        model.predict, model.train = spy_predict, spy_train

    def check(self, config: DQNConfig, total: int, since: int = 0, min_points: int = 20) -> None:
        """Every recorded value equals the schedule at SB3's progress remaining, 1 - t / total."""
        lr_s, eps_s = config.lr_schedule(), config.exploration_schedule()
        eps = [(t, e) for t, e in self.eps if t >= since]
        lr = [(t, v) for t, v in self.lr if t > since]
        assert len(eps) >= min_points and len(lr) >= min_points // 4
        for t, e in eps:
            assert e == pytest.approx(eps_s(1 - t / total), abs=1e-12), f"epsilon at step {t}"
        for t, v in lr:
            assert v == pytest.approx(lr_s(1 - t / total), rel=1e-9), f"lr at step {t}"
        # The schedules really move over the recorded points (so the test would catch a frozen value).
        assert max(e for _, e in eps) - min(e for _, e in eps) > 0.1
        assert max(v for _, v in lr) / min(v for _, v in lr) > 1.5


def make_model(n_envs=1, seed=0, **kwargs):
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)
    return DQN("MlpPolicy", env, seed=seed, device="cpu", **{**CONFIG.sb3_kwargs(), **kwargs})


@pytest.mark.parametrize("n_envs", [1, 2])
def test_epsilon_and_lr_follow_the_schedule_during_training(n_envs):
    # Build the model with SB3's own *different* schedules: the callback must replace them.
    model = make_model(n_envs, learning_rate=5e-4, exploration_fraction=0.1, exploration_final_eps=0.1)
    spy = Spy(model)
    model.learn(1200, callback=HyperMetaCallback(CONFIG))
    spy.check(CONFIG, total=1200)


def test_without_the_callback_the_spy_sees_sb3_defaults():
    model = make_model(learning_rate=5e-4)
    spy = Spy(model)
    model.learn(600)
    assert len(spy.eps) >= 20 and len(spy.lr) >= 5  # values were recorded, and they are SB3's own:
    assert all(v == pytest.approx(5e-4) for _, v in spy.lr)  # the constant lr the model was built with
    eps_s = CONFIG.exploration_schedule()
    assert any(e != pytest.approx(eps_s(1 - t / 600), abs=1e-6) for t, e in spy.eps)  # not hypermeta's epsilon


def test_with_eval_callback_and_progress_bar(tmp_path):
    model = make_model()
    spy = Spy(model)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=99)
    eval_cb = EvalCallback(eval_env, eval_freq=300, n_eval_episodes=2, log_path=str(tmp_path), verbose=0)
    model.learn(1200, callback=CallbackList([eval_cb, HyperMetaCallback(CONFIG)]), progress_bar=True)
    spy.check(CONFIG, total=1200)
    assert len(eval_cb.evaluations_results) == 4


def test_schedules_survive_save_load_and_continued_learning(tmp_path):
    config = CONFIG.replace(eps_fraction=0.6, eps_shape="linear")  # epsilon still moves in the second half
    model = make_model()
    model.learn(600, callback=HyperMetaCallback(config))
    model.save(tmp_path / "model.zip")
    loaded = DQN.load(tmp_path / "model.zip", env=make_vec_env("CartPole-v1", n_envs=1, seed=1), device="cpu")
    # DQN.load rebuilds SB3's linear epsilon schedule: the callback has to re-install its own.
    assert isinstance(loaded.exploration_schedule, LinearSchedule)
    spy = Spy(loaded)
    loaded.learn(600, callback=HyperMetaCallback(config), reset_num_timesteps=False)
    assert min(t for t, _ in spy.eps) >= 600
    spy.check(config, total=1200, since=600, min_points=100)


def test_lr_and_epsilon_are_logged(tmp_path):
    model = make_model()
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(1500, callback=HyperMetaCallback(CONFIG), log_interval=1)
    log = pd.read_csv(tmp_path / "progress.csv").dropna(subset=["hypermeta/learning_rate"])
    assert len(log) > 5
    lr, eps = log["hypermeta/learning_rate"].to_numpy(), log["hypermeta/exploration_rate"].to_numpy()
    assert np.all(np.diff(lr) <= 1e-15) and np.all(np.diff(eps) <= 1e-15)
    assert lr[0] <= CONFIG.lr_initial and lr[-1] < CONFIG.lr_initial / 2
    assert np.all((eps >= CONFIG.eps_final) & (eps <= CONFIG.eps_initial)) and eps[-1] < 0.5


def test_refuses_a_non_dqn_model():
    model = A2C("MlpPolicy", "CartPole-v1", n_steps=8)
    with pytest.raises(TypeError, match="got a A2C model"):
        model.learn(16, callback=HyperMetaCallback(CONFIG))
    assert model.num_timesteps == 0


def test_refuses_a_non_discrete_action_space():
    import gymnasium as gym

    model = make_model()
    model.env.action_space = gym.spaces.Box(-1, 1, (1,))  # e.g. a VecEnv wrapper that changed the space
    with pytest.raises(ValueError, match="needs a Discrete action space"):
        model.learn(100, callback=HyperMetaCallback(CONFIG))
    assert model.num_timesteps == 0


def test_config_from_dict_and_file(tmp_path):
    path = CONFIG.save(tmp_path / "c.yaml")
    assert HyperMetaCallback(path).config == CONFIG
    assert HyperMetaCallback(CONFIG.to_dict()).config == CONFIG
    with pytest.raises(TypeError, match="config must be"):
        HyperMetaCallback(42)
