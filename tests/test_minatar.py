"""MinAtar games as task families: contexts reach the game, plain gymnasium ids work, features of boolean
images, MinAtar's reference CNN through SB3, the engine's refusal, and the committed reference returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hypermeta import DQNConfig, get_family, make_env, probe_features
from hypermeta.experiments.measurement import reference_return
from hypermeta.experiments.sb3 import build_model
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


def test_the_batched_engine_refuses_images_in_one_line():
    from hypermeta.experiments.engine import BatchedRunner
    from hypermeta.experiments.measurement import Measurement
    from hypermeta.experiments.runner import Job

    with pytest.raises(ValueError, match="no CNN.*--runner sb3"):
        BatchedRunner().run(Job("minatar-breakout", "base", DQNConfig(), Measurement(100), 0))


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
