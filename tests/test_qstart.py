"""The meta-learned Q-network start (issue 30): the outer steps find known answers, a start loads into SB3 (both
networks) and the engine alike, mismatched starts are refused or warned about, and meta-init resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hypermeta.engine.measurement import Measurement
from hypermeta.engine.runner import Job
from hypermeta.lab.control_training import adam_ascent
from hypermeta.lab.qstart_training import MetaInitSettings, meta_init, reptile_step
from hypermeta.qstart import QStart
from hypermeta.space import DQNConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG = DQNConfig.from_dict(dict(net_arch="small", batch_size=32, train_freq=4, target_update_interval=100,
                                  learning_starts=100, gamma=0.99, buffer_size=10000))
OPTIMA = np.array([[1.0, -2.0], [3.0, 0.0], [2.0, 5.0]])  # task k's loss: |theta - c_k|^2 / 2


def test_reptile_on_quadratic_tasks_converges_to_the_mean_of_their_optima():
    theta = np.zeros(2)
    for i in range(200):
        adapted = [theta - 0.5 * (theta - c) for c in OPTIMA]  # one inner SGD step (lr 0.5) per task
        theta = reptile_step(theta, adapted, 0.5)
    np.testing.assert_allclose(theta, OPTIMA.mean(axis=0), atol=1e-6)


def test_first_order_maml_on_quadratic_tasks_converges_to_the_mean_of_their_optima():
    theta, m, v = np.zeros(2), np.zeros(2), np.zeros(2)
    for t in range(1, 2001):
        adapted = [theta - 0.5 * (theta - c) for c in OPTIMA]
        grad = np.mean([a - c for a, c in zip(adapted, OPTIMA)], axis=0)  # the loss's gradient at the adapted point
        theta, m, v = adam_ascent(theta, -grad, m, v, t, lr=0.01)
    np.testing.assert_allclose(theta, OPTIMA.mean(axis=0), atol=0.02)


def _start_for(task: str, seed: int = 0, shift: float = 0.25) -> QStart:
    from hypermeta.engine.sb3 import build_model

    model = build_model(task, CONFIG, seed)
    return QStart({k: v.numpy() + shift for k, v in model.q_net.state_dict().items()}, {"family": task.split(":")[0]})


def test_the_callback_loads_a_start_into_both_networks_once(tmp_path):
    from stable_baselines3 import DQN

    from hypermeta import HyperMetaCallback
    from hypermeta.engine.sb3 import build_model

    start = _start_for("cartpole")
    path = start.save(tmp_path / "cartpole-test")
    again = QStart.load(path)
    assert again.key == start.key and json.loads(path.with_suffix(".json").read_text())["hidden"] == [64, 64]
    model = build_model("cartpole:gravity=12", CONFIG, seed=3)
    model.learn(50, callback=HyperMetaCallback(CONFIG, init=str(path)))  # before learning_starts: no update
    for net in (model.q_net, model.q_net_target):
        for name, value in start.state.items():
            assert torch.equal(net.state_dict()[name], torch.as_tensor(value))
    with torch.no_grad():  # as if it had trained: a second learn, even resetting its step count, keeps its weights
        for p in model.q_net.parameters():
            p.add_(1.0)
    trained = {k: v.clone() for k, v in model.q_net.state_dict().items()}
    model.learn(20, callback=HyperMetaCallback(CONFIG, init=start))  # reset_num_timesteps=True, SB3's default
    assert all(torch.equal(trained[k], v) for k, v in model.q_net.state_dict().items())
    model.save(tmp_path / "m.zip")
    loaded = DQN.load(tmp_path / "m.zip", env=model.get_env())
    before = {k: v.clone() for k, v in loaded.q_net.state_dict().items()}
    loaded.learn(10, callback=HyperMetaCallback(CONFIG, init=start))  # the mark was saved with it: not again
    assert all(torch.equal(before[k], v) for k, v in loaded.q_net.state_dict().items())


def test_init_default_loads_the_start_shipped_for_the_envs_family(tmp_path, monkeypatch):
    import hypermeta.qstart as qstart
    from hypermeta import HyperMetaCallback
    from hypermeta.tasks.families import family_name
    from hypermeta.engine.sb3 import build_model

    monkeypatch.setattr(qstart, "SHIPPED_STARTS", tmp_path / "starts")
    with pytest.raises(ValueError, match=r"none is shipped for family 'cartpole' \(shipped: none yet"):
        qstart.get_start("default", "cartpole")
    (tmp_path / "v3.provenance.json").write_text("{}")  # once --ship has recorded its decision
    with pytest.raises(ValueError, match=r"\(shipped: none: no family's start met meta-learner v3's target"):
        qstart.get_start("default", "cartpole")
    start = _start_for("cartpole", seed=5)
    start.save(tmp_path / "starts" / "cartpole")
    assert qstart.get_start("default", family_name("CartPole-v1")).key == start.key
    with pytest.raises(ValueError, match=r"this env's family is unknown \(shipped: cartpole\)"):
        qstart.get_start("default", None)
    model = build_model("cartpole:gravity=12", CONFIG, seed=3)
    callback = HyperMetaCallback(CONFIG, init="default")  # resolved at training start, from the env's family
    model.learn(50, callback=callback)
    assert callback.init.key == start.key
    for net in (model.q_net, model.q_net_target):
        assert torch.equal(net.state_dict()["q_net.0.weight"], torch.as_tensor(start.state["q_net.0.weight"]))
    other = build_model("acrobot", CONFIG, seed=3)
    with pytest.raises(ValueError, match="none is shipped for family 'acrobot'"):
        other.learn(10, callback=HyperMetaCallback(CONFIG, init="default"))


def test_a_start_of_other_shapes_is_refused_and_another_family_warns():
    from hypermeta import HyperMetaCallback
    from hypermeta.engine.sb3 import build_model

    start = _start_for("cartpole")
    with pytest.raises(ValueError, match="fits observations of size 4, 2 actions .* this model has 6, 3"):
        build_model("acrobot", CONFIG, 0).learn(5, callback=HyperMetaCallback(CONFIG, init=start))
    start.manifest["family"] = "otherpole"
    with pytest.warns(UserWarning, match="learned on family 'otherpole', this env is 'cartpole'"):
        build_model("cartpole", CONFIG, 0).learn(5, callback=HyperMetaCallback(CONFIG, init=start))
    with pytest.raises(ValueError, match="must be a .safetensors file"):
        HyperMetaCallback(CONFIG, init="start.pt")


def test_engine_and_sb3_train_the_same_from_a_start():
    import hypermeta.engine.batched as engine
    from hypermeta.engine.sb3 import SB3Runner

    start = _start_for("cartpole", seed=9)
    job = Job("cartpole", "x", CONFIG, Measurement(1200, 2, 2), 4, init=start)
    agents = engine._Agents([job])
    assert torch.equal(agents.flat[0].detach(), torch.from_numpy(start.to_flat()))
    assert torch.equal(agents.target[0], agents.flat[0].detach())
    agents.close()
    torch.set_num_threads(1)
    assert engine.train_group([job])[0].returns == SB3Runner().run(job).returns
    plain = Job("cartpole", "x", CONFIG, Measurement(1200, 2, 2), 4)
    from hypermeta.engine.pipeline import job_key

    assert job_key(plain) != job_key(job)  # a start is part of the stored run's key


def test_meta_init_writes_its_artifact_and_resumes(tmp_path):
    plan = ROOT / "studies" / "meta2" / "plan.yaml"
    settings = MetaInitSettings(iterations=2, inner_steps=1200, tasks_per_iteration=3)
    out = tmp_path / "cartpole-reptile"
    first = meta_init("cartpole", "reptile", plan, out, settings)
    state = json.loads(out.with_suffix(".state.json").read_text())
    assert state["iteration"] == 2 and len(state["history"]) == 2
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["family"] == "cartpole" and manifest["method"] == "reptile" and len(manifest["features"]) >= 20
    assert (first.obs_dim, first.hidden, first.n_actions) == (4, (64, 64), 2)
    settings.iterations = 3
    meta_init("cartpole", "reptile", plan, out, settings)
    again = json.loads(out.with_suffix(".state.json").read_text())
    assert again["iteration"] == 3 and again["history"][:2] == state["history"]
    with pytest.raises(ValueError, match="belongs to a reptile run"):
        meta_init("cartpole", "fomaml", plan, out, settings)
