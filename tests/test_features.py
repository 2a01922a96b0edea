from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from hypermeta import FEATURE_DOCS, FEATURE_NAMES, probe_features

TASKS = ["cartpole", "acrobot", "mountaincar", "lunarlander", "CartPole-v1", "FrozenLake-v1"]


@pytest.mark.parametrize("task", TASKS)
def test_named_fixed_length_finite_and_deterministic(task):
    a, b = probe_features(task, seed=7), probe_features(task, seed=7)
    assert a.names == FEATURE_NAMES == tuple(FEATURE_DOCS)
    assert a.values.shape == (len(FEATURE_NAMES),) and np.all(np.isfinite(a.values))
    np.testing.assert_array_equal(a.values, b.values)


def test_seed_matters():
    assert not np.array_equal(probe_features("cartpole", seed=0).values, probe_features("cartpole", seed=1).values)


@pytest.mark.parametrize("family,context,changed", [
    ("cartpole", "gravity=19,length=1", ["log_obs_delta"]),
    ("acrobot", "link_length_1=2,link_mass_2=2", ["log_obs_std", "log_obs_absmax"]),
    ("mountaincar", "force=0.002,max_speed=0.14", ["log_obs_std"]),
    ("lunarlander", "gravity=-4,wind_power=15", ["random_return_mean", "log_episode_length"]),
])
def test_contexts_of_one_family_get_different_features(family, context, changed):
    """Averaged over probe seeds, the named features move by more than 5x their seed-to-seed spread."""
    def stats(task):
        values = np.array([probe_features(task, seed=s).values for s in range(3)])
        return values.mean(0), values.std(0)

    (m0, s0), (m1, s1) = stats(family), stats(f"{family}:{context}")
    for name in changed:
        i = FEATURE_NAMES.index(name)
        assert abs(m1[i] - m0[i]) > 5 * max(s0[i], s1[i], 1e-3), name


def test_bool_and_discrete_observations():
    class BitFlip(gym.Env):
        observation_space = gym.spaces.Box(0, 1, (6,), dtype=bool)
        action_space = gym.spaces.Discrete(6)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.state, self.t = self.np_random.integers(0, 2, 6).astype(bool), 0
            return self.state.copy(), {}

        def step(self, a):
            self.state[a] ^= True
            self.t += 1
            done = bool(self.state.all())
            return self.state.copy(), float(done), done, self.t >= 20, {}

    f = probe_features(BitFlip(), seed=0)
    assert f["obs_is_binary"] == 1.0 and f["log_obs_dim"] == pytest.approx(np.log(6))
    assert probe_features("FrozenLake-v1")["obs_is_binary"] == 1.0


def test_unsupported_spaces_are_refused():
    with pytest.raises(ValueError, match="needs a Discrete action space"):
        probe_features("Pendulum-v1")
    env = gym.wrappers.TransformObservation(
        gym.make("CartPole-v1"), lambda o: {"x": o},
        gym.spaces.Dict({"x": gym.make("CartPole-v1").observation_space}))
    with pytest.raises(ValueError, match="FlattenObservation"):
        probe_features(env)


@pytest.mark.parametrize("bad", ["obs", "reward"])
def test_non_finite_values_are_refused(bad):
    class Broken(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (2,))
        action_space = gym.spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.zeros(2, dtype=np.float32), {}

        def step(self, a):
            self.t += 1
            broken = self.t == 5
            obs = np.array([np.nan if broken and bad == "obs" else 0.0, 1.0], dtype=np.float32)
            return obs, np.inf if broken and bad == "reward" else 1.0, False, self.t >= 10, {}

    with pytest.raises(ValueError, match="non-finite observation or reward at step 5"):
        probe_features(Broken())
