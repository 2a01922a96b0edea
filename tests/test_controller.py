"""The in-run controller (meta-learner v3): its bounds, the zero controller is the base schedule, the engine and the
SB3 callback compute the same signals and decisions on one job, and the callback composes with SB3's machinery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hypermeta.controller import (EPS_SPAN, LR_RANGE, SIGNAL_NAMES, ControlledSchedule, HandRule, LinearController,
                                  RunSignals, get_controller)
from hypermeta.engine.measurement import Measurement
from hypermeta.engine.runner import Job
from hypermeta.schedules import ShapedSchedule
from hypermeta.space import DQNConfig

CONFIG = DQNConfig.from_dict(dict(net_arch="small", batch_size=32, train_freq=4, target_update_interval=100,
                                  learning_starts=100, gamma=0.99, buffer_size=10000))


def random_linear(seed: int = 0, scale: float = 0.5) -> LinearController:
    rng = np.random.default_rng(seed)
    return LinearController(rng.normal(0, scale, (2, len(SIGNAL_NAMES) + 1)))


@pytest.mark.parametrize("offset", [-50.0, -1.0, -0.3, 0.0, 0.4, 1.0, 50.0])
def test_controlled_schedules_stay_in_the_search_space(offset):
    lr = ControlledSchedule(ShapedSchedule(1e-3, 1e-5, "linear"), "lr", offset)
    eps = ControlledSchedule(ShapedSchedule(1.0, 0.0, "linear"), "eps", offset)
    for p in np.linspace(1, 0, 11):
        assert LR_RANGE[0] <= lr(p) <= LR_RANGE[1] and 0.0 <= eps(p) <= 1.0
    if offset == 0.0:  # no offset: the base schedule exactly
        assert lr(0.3) == ShapedSchedule(1e-3, 1e-5, "linear")(0.3)
    assert math.isclose(ControlledSchedule(lambda p: 0.5, "eps", 0.2)(1.0), 0.5 + EPS_SPAN * 0.2)


def test_linear_controller_outputs_are_bounded_and_zero_weights_give_zero():
    ctl = random_linear(scale=100.0)
    x = np.random.default_rng(1).normal(0, 10, len(SIGNAL_NAMES))
    assert all(-1.0 <= u <= 1.0 for u in ctl.targets(x, {}))
    assert LinearController.zeros().targets(x, {}) == (0.0, 0.0)
    with pytest.raises(ValueError, match="weights must have shape"):
        LinearController(np.zeros((2, 3)))


def test_signals_follow_their_formulas():
    s = RunSignals(total_steps=1000, learning_starts=100, gamma=0.9)
    assert s.interval == 20
    for step in range(1, 101):  # random-policy episodes of 10 steps, return 10
        s.on_step(step, 1.0, step % 10 == 0)
    x = dict(zip(SIGNAL_NAMES, s.compute(100, td_loss=0.5, q_abs_max=5.0, u_lr=0.1, u_eps=-0.2)))
    assert x["progress"] == 0.1 and x["learning"] == 0.0 and x["return_level"] == 0.0
    assert math.isclose(x["td_level"], math.log10(0.5 / 1.0), rel_tol=1e-6)
    assert math.isclose(x["q_ratio"], 5.0 / (1.0 / (1 - 0.9)))
    assert (x["u_lr"], x["u_eps"]) == (0.1, -0.2)
    for step in range(101, 201):  # episodes of 20 steps: return 20, twice the random policy's
        s.on_step(step, 1.0, (step - 100) % 20 == 0)
    x = dict(zip(SIGNAL_NAMES, s.compute(200, td_loss=2.0, q_abs_max=50.0, u_lr=0.0, u_eps=0.0)))
    assert x["learning"] == 1.0 and x["return_level"] == 1.0  # the best so far is this mean
    assert math.isclose(x["td_trend"], math.log10(4.0), rel_tol=1e-6) and x["q_ratio"] == 4.0  # clipped
    assert math.isclose(x["length_trend"], math.log(np.mean([10] * 5 + [20] * 5) / 10.0))


def test_hand_rule_halves_lr_on_a_td_blow_up_and_raises_epsilon_while_nothing_is_learned():
    rule, state = HandRule(), {}
    x = dict.fromkeys(SIGNAL_NAMES, 0.0)
    x.update(learning=1.0, return_level=0.0, td_trend=math.log10(3.0))
    u_lr, u_eps = rule.targets(np.array([x[n] for n in SIGNAL_NAMES]), state)
    assert math.isclose(u_lr, -math.log10(2.0)) and u_eps == 0.2
    x.update(return_level=1.0, td_trend=0.0, return_trend=0.1)
    u_lr, u_eps = rule.targets(np.array([x[n] for n in SIGNAL_NAMES]), state)
    assert math.isclose(u_lr, -math.log10(2.0)) and u_eps == 0.0


@pytest.mark.parametrize("task", ["cartpole", "frozenlake"])  # Box and Discrete (one-hot) observations
@pytest.mark.parametrize("controller", [HandRule(), random_linear()], ids=["rule", "linear"])
def test_engine_and_sb3_make_the_same_decisions_on_one_job(controller, task, monkeypatch):
    """Same job, same controller: the same control steps, signals and offsets (to rounding) while the curves agree."""
    import hypermeta.callback as callback
    import hypermeta.engine.batched as engine
    from hypermeta.engine.sb3 import SB3Runner

    job = Job(task, "x", CONFIG, Measurement(2000, 2, 2), 3, control=controller)
    logs = {}
    close = engine._Agents.close
    monkeypatch.setattr(engine._Agents, "close", lambda a: logs.setdefault("engine", a.control[0].log) and close(a))
    start = callback.HyperMetaCallback._start_control
    monkeypatch.setattr(callback.HyperMetaCallback, "_start_control",
                        lambda self: start(self) or logs.setdefault("sb3", self.control.log))
    torch.set_num_threads(1)
    curve_engine = engine.train_group([job])[0]
    curve_sb3 = SB3Runner().run(job)
    assert curve_sb3.returns == curve_engine.returns
    sb3, eng = logs["sb3"], logs["engine"]
    assert [s for s, *_ in sb3] == [s for s, *_ in eng] == list(range(40, 2001, 40))
    assert max(np.abs(a[1] - b[1]).max() for a, b in zip(sb3, eng)) < 1e-4
    assert max(abs(a[2] - b[2]) + abs(a[3] - b[3]) for a, b in zip(sb3, eng)) < 1e-4
    assert any(abs(u) + abs(e) > 0.01 for _, _, u, e in sb3)  # it did steer


def test_the_zero_controller_trains_exactly_like_no_controller():
    import hypermeta.engine.batched as engine

    plain = engine.train_group([Job("cartpole", "x", CONFIG, Measurement(1500, 2, 2), 4)])[0]
    zero = engine.train_group([Job("cartpole", "x", CONFIG, Measurement(1500, 2, 2), 4, control="zero")])[0]
    assert plain.returns == zero.returns


def test_controller_weights_round_trip_through_safetensors(tmp_path):
    ctl = random_linear(2)
    path = ctl.save(tmp_path / "ctl")
    again = get_controller(str(path))
    assert np.array_equal(again.weights, ctl.weights) and again.key == ctl.key
    with pytest.raises(ValueError, match="unknown controller"):
        get_controller(str(tmp_path / "ctl.pt"))


def test_default_controller_says_why_none_is_shipped(tmp_path, monkeypatch):
    import json

    import hypermeta.controller as controller

    monkeypatch.setattr(controller, "SHIPPED_CONTROLLER", tmp_path / "controller.safetensors")
    with pytest.raises(ValueError, match="no meta-learned controller is shipped .meta-learner v3's evaluation has not "
                                         "decided yet.; use controller='rule'"):
        get_controller("default")
    conditions = {"heldout_contexts": {"met": False}, "heldout_family": {"met": True}}
    (tmp_path / "v3.provenance.json").write_text(json.dumps({"controller": {"conditions": conditions}}))
    with pytest.raises(ValueError, match="missed the plan's shipping rule on heldout_contexts: studies/reports/v3"):
        get_controller("default")
    random_linear(4).save(tmp_path / "controller")
    assert get_controller("default").key == random_linear(4).key


def test_callback_with_a_controller_survives_save_load_evalcallback_and_a_second_learn(tmp_path):
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.monitor import Monitor

    from hypermeta import HyperMetaCallback
    from hypermeta.engine.sb3 import build_model
    from hypermeta.tasks.families import make_env

    model = build_model("cartpole", CONFIG, seed=0)
    model.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    cb = HyperMetaCallback(CONFIG, controller="rule")
    evaluate = EvalCallback(Monitor(make_env("cartpole")), eval_freq=300, n_eval_episodes=1, verbose=0)
    model.learn(1000, callback=[cb, evaluate], log_interval=1)
    assert len(cb.control.log) == 50 and evaluate.n_calls == 1000
    model.learn(500, callback=[cb], reset_num_timesteps=False)  # the same run goes on: its signals persist
    assert cb.control.signals.total == 1500 and len(cb.control.log) == 50 + sum(s % 30 == 0 for s in range(1001, 1501))
    logged = (tmp_path / "log" / "progress.csv").read_text().splitlines()[0]
    assert "hypermeta/signal/td_level" in logged and "hypermeta/learning_rate" in logged
    model.save(tmp_path / "m.zip")  # pickles the controlled schedules (cloudpickle)
    loaded = DQN.load(tmp_path / "m.zip", env=model.get_env())  # SB3 rebuilds its default schedules here
    again = HyperMetaCallback(CONFIG, controller="rule")
    loaded.learn(300, callback=again, reset_num_timesteps=False)
    assert type(loaded.lr_schedule).__name__ == "ControlledSchedule" and len(again.control.log) >= 1


def test_a_controller_refuses_more_than_one_env():
    from hypermeta import HyperMetaCallback
    from hypermeta.engine.sb3 import build_model

    model = build_model("cartpole", CONFIG, seed=0, n_envs=2)
    with pytest.raises(ValueError, match="train with one env, got n_envs=2"):
        model.learn(20, callback=HyperMetaCallback(CONFIG, controller="rule"))

