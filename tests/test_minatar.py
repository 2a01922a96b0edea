"""MinAtar games as task families: contexts reach the game, plain gymnasium ids work, features of boolean
images, MinAtar's reference CNN through SB3 and the engine (the same actions and weights), and the committed reference returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hypermeta import DQNConfig, get_family, make_env, probe_features
from hypermeta.engine.measurement import reference_return
from hypermeta.engine.sb3 import build_model
from hypermeta.networks import MinAtarCNN
from hypermeta_plugins.minatar_games import GAMES, MAX_EPISODE_STEPS

FAMILIES = [f"minatar-{g.replace('_', '')}" for g in GAMES]


def test_context_reaches_the_game():
    env = make_env("minatar-asterix:sticky_action_prob=0.2,difficulty_ramping=0")
    game = env.unwrapped.game
    assert game.sticky_action_prob == 0.2 and game.env.ramping is False
    assert env.spec.max_episode_steps == MAX_EPISODE_STEPS
    assert make_env("minatar-asterix").unwrapped.game.env.ramping is True
    # Breakout ignores ramping, so it is not offered as its context
    with pytest.raises(ValueError, match="unknown context feature"):
        make_env("minatar-breakout:difficulty_ramping=0")


def test_plain_gymnasium_ids_are_registered_by_the_plugin():
    env = make_env("MinAtar/Freeway-v1")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (10, 10, 7) and obs.dtype == bool and env.action_space.n == 3
    assert env.spec.max_episode_steps == MAX_EPISODE_STEPS  # MinAtar sets none; an unending episode would hang


@pytest.mark.parametrize("family", FAMILIES)
def test_features_of_boolean_images(family):
    f = probe_features(family, seed=0, max_steps=600)
    assert np.all(np.isfinite(f.values)) and f["obs_is_binary"] == 1.0
    channels = make_env(family).observation_space.shape[2]
    assert f["log_obs_dim"] == pytest.approx(np.log(100 * channels))
    assert probe_features(family, seed=0, max_steps=600).values.tolist() == f.values.tolist()


def test_sticky_actions_change_the_features():
    a = probe_features("minatar-breakout:sticky_action_prob=0", seed=0, max_steps=1500)
    b = probe_features("minatar-breakout:sticky_action_prob=0.25", seed=0, max_steps=1500)
    assert not np.allclose(a.values, b.values)


def test_sb3_gets_minatars_reference_cnn_and_learns_a_few_steps():
    model = build_model("minatar-breakout", DQNConfig(learning_starts=100, batch_size=16), seed=0)
    extractor = model.policy.q_net.features_extractor
    assert isinstance(extractor, MinAtarCNN)
    conv = extractor.conv[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (4, 16, (3, 3))
    assert extractor.head[0].out_features == 128 and model.policy.q_net.q_net[0].in_features == 128
    model.learn(160)
    assert model.num_timesteps == 160


def test_the_batched_engine_trains_minatars_cnn_like_sb3(monkeypatch, learn_recording_actions):
    """Same seed -> the engine's agent takes SB3's actions and reaches SB3's weights with MinAtarCNN too."""
    import torch

    import hypermeta.engine.batched as engine
    from hypermeta.engine.measurement import Measurement
    from hypermeta.engine.runner import Job
    from hypermeta.engine.sb3 import SB3Runner

    config = DQNConfig(learning_starts=100, batch_size=16, train_freq=4, target_update_interval=50,
                       lr_initial=1e-3, eps_fraction=0.5)
    job = Job("minatar-breakout", "x", config, Measurement(500, 1, 1), seed=5)
    model = build_model(job.task, config, job.seed)
    initial = [(k, v.clone()) for k, v in model.q_net.state_dict().items()]
    sb3_actions = learn_recording_actions(model, config, 500)

    def as_engine(name: str, theirs: torch.Tensor) -> torch.Tensor:  # conv [16, C, 3, 3], linear [out, in] -> [in, out]
        if theirs.dim() == 1:
            return theirs.view(1, -1)
        return theirs.reshape(theirs.shape[0], -1).T

    agents = engine._Agents([job])
    assert agents.b_obs.dtype == torch.uint8
    for mine, (name, theirs) in zip(agents.layers(agents.flat.detach()), initial):
        assert torch.equal(mine[0], as_engine(name, theirs))  # SB3's init of conv, hidden and Q-head, exactly
    agents.close()
    mine_actions, final = [], []
    act, close = engine._Agents.act, engine._Agents.close
    monkeypatch.setattr(engine._Agents, "act", lambda a, t, active: mine_actions.append(int(act(a, t, active)[0]))
                        or np.array([mine_actions[-1]]))
    monkeypatch.setattr(engine._Agents, "close", lambda a: final.extend(p[0].detach().clone() for p in
                                                                        a.layers(a.flat.detach())) or close(a))
    curve = engine.train_group([job])[0]
    assert mine_actions == sb3_actions
    assert len(final) == len(initial) == 6
    for mine, (name, theirs) in zip(final, model.q_net.state_dict().items()):  # ~100 Adam steps later
        np.testing.assert_allclose(mine, as_engine(name, theirs), atol=1e-4)
    assert curve.returns == SB3Runner().run(job).returns


def test_the_batched_engine_refuses_images_it_has_no_network_for():
    import gymnasium as gym

    from hypermeta.engine.batched import _image_shape

    with pytest.raises(ValueError, match="boolean images.*--runner sb3"):
        _image_shape(gym.spaces.Box(0, 255, (84, 84, 3), np.uint8))
    assert _image_shape(make_env("minatar-freeway").observation_space) == (10, 10, 7)


def test_reference_returns_are_the_committed_measurement():
    """A family's reference return is the committed base mean where the base clearly beats random, else none
    (normalising then needs an explicit reference, and says so)."""
    from pathlib import Path

    path = Path(__file__).parent.parent / "studies" / "reports" / "minatar" / "reference.csv"
    table = pd.read_csv(path).set_index("family")
    assert set(table.index) == set(FAMILIES)
    for family in FAMILIES:
        row = table.loc[family]
        if row["beats_random"]:
            assert get_family(family).reference_return == pytest.approx(row["base_final_mean"], abs=1e-9)
            assert reference_return(get_family(family).env_id) == get_family(family).reference_return
        else:
            assert get_family(family).reference_return is None
            with pytest.raises(ValueError, match="--reference"):
                reference_return(family)


def test_cnn_jobs_group_by_frame_shape_whatever_net_arch_in_batches_of_at_most_16():
    from hypermeta.engine.batched import MAX_AGENTS, BatchedRunner
    from hypermeta.engine.measurement import Measurement
    from hypermeta.engine.runner import Job

    jobs = [Job("minatar-breakout", "x", DQNConfig(net_arch=("small", "medium")[s % 2]), Measurement(100), s)
            for s in range(40)] + [Job("minatar-freeway", "x", DQNConfig(), Measurement(100), 0)]
    assert MAX_AGENTS["cnn"] == 16
    assert [len(b) for b in BatchedRunner().batches(jobs)] == [16, 16, 8, 1]
    assert [len(b) for b in BatchedRunner(max_agents=64).batches(jobs)] == [16, 16, 8, 1]  # a larger value caps nothing
    assert [len(b) for b in BatchedRunner(max_agents=10).batches(jobs)] == [10, 10, 10, 10, 1]


def test_reference_report_marks_the_budgets_where_the_base_does_not_beat_random(monkeypatch):
    """The learning-curve table of `bench minatar`: mean +/- s.e. per evaluation, marked where the mean is not
    more than 2 s.e. above the random policy (here 1.0): 1.00 +/- 0.00 is not; 6.00 +/- 0.58 is."""
    import hypermeta.engine.measurement as measurement
    from hypermeta.lab.bench import _curve_table
    from hypermeta.engine.measurement import Measurement

    monkeypatch.setattr(measurement, "random_return", lambda game: 1.0)
    runs = pd.DataFrame({"task": ["minatar-breakout"] * 3 + ["other"],
                         "curve": ["[1.0, 5.0]", "[1.0, 7.0]", [1.0, 6.0], "[99.0, 99.0]"]})
    lines = _curve_table(runs, ["minatar-breakout"], Measurement(100, n_evals=2))
    assert lines[4] == "| family | 50 steps | 100 steps |"
    assert lines[-1] == "| minatar-breakout | 1.00 +/- 0.00 *not above random* | 6.00 +/- 0.58 |"
    one = _curve_table(runs.iloc[:1], ["minatar-breakout"], Measurement(100, n_evals=2))
    assert one[-1] == "| minatar-breakout | 1.00 | 5.00 |"  # one seed: no s.e., no mark
