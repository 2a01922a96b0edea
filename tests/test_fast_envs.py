"""The engine's faster classic-control envs return exactly what gymnasium's own code returns."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hypermeta.engine.fast_envs import make_fast_env
from hypermeta.tasks.families import make_env


@pytest.fixture(autouse=True)
def _gymnasiums_own_time_limit(monkeypatch):
    """rl_zoo3, once imported (the rl-zoo integration test may run first in this process), replaces gymnasium's
    TimeLimit with its subclass everywhere; make_fast_env then rightly keeps gymnasium's stack. These tests are
    about gymnasium's own TimeLimit, so they get it back for their duration."""
    import gymnasium.wrappers
    import gymnasium.wrappers.common as common

    from hypermeta.engine import fast_envs

    original = next(c for c in gymnasium.wrappers.TimeLimit.__mro__
                    if c.__module__ == "gymnasium.wrappers.common" and c.__name__ == "TimeLimit")
    for module in (gymnasium.wrappers, common, fast_envs):
        monkeypatch.setattr(module, "TimeLimit", original)


@pytest.mark.parametrize("task", ["CartPole-v1", "frozenlake:success_rate=0.6", "MountainCar-v0", "minatar-breakout"])
def test_the_action_spaces_accept_the_same_actions_as_gymnasiums(task):
    fast, plain = make_fast_env(task).unwrapped.action_space, make_env(task).unwrapped.action_space
    assert "contains" in vars(fast) and "contains" not in vars(plain)  # the shortcut is installed on one
    values = [np.int64(v) for v in range(-2, plain.n + 2)] + [0, 1, plain.n, -1, np.int32(1), np.uint8(0),
                                                              1.0, np.float64(1.0), np.array(1), np.array([1]), "1"]
    for value in values:
        assert fast.contains(value) == plain.contains(value), repr(value)
    pickle.dumps(fast)  # the env can still be pickled (e.g. sent to a worker)


def test_only_int64_spaces_of_the_env_itself_get_the_shortcut(monkeypatch):
    import gymnasium as gym

    shared = gym.spaces.Discrete(3)
    narrow = make_env("CartPole-v1")
    narrow.unwrapped.action_space = gym.spaces.Discrete(2, dtype=np.int32)  # int64 values are not its members
    monkeypatch.setattr("hypermeta.engine.fast_envs.make_env", lambda task: narrow)
    assert "contains" not in vars(make_fast_env("x").unwrapped.action_space)
    one, two = make_env("CartPole-v1"), make_env("CartPole-v1")
    one.unwrapped.action_space = two.unwrapped.action_space = shared  # a space shared by two envs ...
    monkeypatch.setattr("hypermeta.engine.fast_envs.make_env", lambda task: one)
    assert "contains" in vars(make_fast_env("x").unwrapped.action_space)
    assert "contains" not in vars(shared) and two.unwrapped.action_space is shared  # ... is left alone


def test_other_gymnasium_code_keeps_its_own_steps(monkeypatch):
    from hypermeta.engine import fast_envs

    monkeypatch.setitem(fast_envs.CHECKED_SOURCES, "MountainCarEnv.step", "another version")
    fast_envs._unchanged.cache_clear()
    try:
        assert "step" not in vars(make_fast_env("MountainCar-v0").unwrapped)
        assert "step" in vars(make_fast_env("Acrobot-v1").unwrapped)
        overridden = make_env("Acrobot-v1")
        overridden.unwrapped._dsdt = overridden.unwrapped._dsdt  # an instance override of a method the fast step inlines
        monkeypatch.setattr(fast_envs, "make_env", lambda task: overridden)
        assert "step" not in vars(make_fast_env("x").unwrapped)
    finally:
        fast_envs._unchanged.cache_clear()


def _same_trajectories(tasks, episodes, policy, visits, start=None, setup=None):
    """Step a fast and a plain env of each task with the same actions; every return value and the internal
    state must be equal. ``visits(env, step_result)`` counts the branches of the step the test reached;
    ``start(episode)`` may give a state to start an episode from instead of the reset's; ``setup(task, env)``
    may change an env's attributes first."""
    rng = np.random.default_rng(0)
    for task in tasks:
        fast, plain = make_fast_env(task), make_env(task)
        assert "step" in vars(fast.unwrapped) and "step" not in vars(plain.unwrapped)
        if setup is not None:
            setup(task, fast.unwrapped), setup(task, plain.unwrapped)
        for episode in range(episodes):
            a, b = fast.reset(seed=episode), plain.reset(seed=episode)
            assert np.array_equal(a[0], b[0])
            if start is not None and start(episode) is not None:
                fast.unwrapped.state, plain.unwrapped.state = start(episode), start(episode)
            done = False
            while not done:
                action = np.int64(policy(plain.unwrapped, rng))
                a, b = fast.step(action), plain.step(action)
                assert a[0].dtype == b[0].dtype and a[0].tobytes() == b[0].tobytes(), (task, episode, a, b)
                assert a[1:4] == b[1:4] and type(a[1]) is type(b[1]), (task, episode, a, b)
                assert np.array_equal(np.asarray(fast.unwrapped.state), np.asarray(plain.unwrapped.state))
                visits(plain.unwrapped, b)
                done = b[2] or b[3]


def test_mountaincar_steps_exactly_like_gymnasiums():
    seen = {"speed limit": 0, "wall": 0, "goal": 0}

    def visits(env, result):
        position, velocity = env.state
        seen["speed limit"] += abs(velocity) == env.max_speed
        seen["wall"] += position == env.min_position
        seen["goal"] += result[2]

    def policy(env, rng):  # half random, half "push along the velocity" (reaches the goal and the speed limit)
        return rng.integers(3) if rng.random() < 0.5 else 2 * (env.state[1] > 0)

    _same_trajectories(["MountainCar-v0", "mountaincar:force=0.002,max_speed=0.035",
                        "mountaincar:force=0.0006,gravity=0.004,goal_position=0.3"], 30, policy, visits)
    assert min(seen.values()) > 0, seen  # every branch of the step was exercised


def test_acrobot_steps_exactly_like_gymnasiums():
    seen = {"velocity bound": 0, "goal": 0, "noise": 0, "nips": 0}

    def visits(env, result):
        seen["velocity bound"] += abs(env.state[2]) == env.MAX_VEL_1 or abs(env.state[3]) == env.MAX_VEL_2
        seen["goal"] += result[2]
        seen["noise"] += env.torque_noise_max > 0
        seen["nips"] += env.book_or_nips == "nips"

    def setup(task, env):  # the paper's dynamics (an instance attribute gymnasium reads) on one task
        if "link_moi" in task:
            env.book_or_nips = "nips"

    def policy(env, rng):  # swing with the second link's velocity half the time: it reaches the goal
        return rng.integers(3) if rng.random() < 0.3 else 2 * (env.state[3] > 0)

    def start(episode):  # some episodes start spinning beyond the velocity bounds (4 pi, 9 pi), which clip them
        return np.array([0.1, -0.2, 30.0, 0.0]) if episode % 3 == 2 else None

    _same_trajectories(["Acrobot-v1", "acrobot:link_length_1=1.3,torque_noise_max=0.2",
                        "acrobot:link_mass_2=2.5,link_length_2=0.4,link_moi=0.5"], 6, policy, visits, start, setup)
    assert min(seen.values()) > 0, seen


def test_cartpole_steps_exactly_like_gymnasiums():
    seen = {"terminated": 0, "truncated": 0, "euler": 0, "sutton-barto": 0}

    def visits(env, result):
        seen["terminated"] += result[2]
        seen["truncated"] += result[3]
        seen["euler"] += env.kinematics_integrator == "euler"
        seen["sutton-barto"] += env._sutton_barto_reward

    def setup(task, env):  # the other integrator and reward (attributes gymnasium reads) on one task each
        if "gravity" in task:
            env.kinematics_integrator = "euler"
        if "tau" in task:
            env._sutton_barto_reward = True

    def policy(env, rng):  # mostly balancing (episodes reach the 500-step limit), sometimes random (they fall)
        theta, theta_dot = env.state[2], env.state[3]
        return rng.integers(2) if rng.random() < 0.15 else int(theta + 0.5 * theta_dot > 0)

    _same_trajectories(["CartPole-v1", "cartpole:gravity=12,length=0.7,masspole=0.15",
                        "cartpole:masscart=1.5,force_mag=8,tau=0.025"], 12, policy, visits, setup=setup)
    assert min(seen.values()) > 0, seen


def test_cartpole_steps_after_termination_like_gymnasiums():
    fast, plain = make_fast_env("CartPole-v1").unwrapped, make_env("CartPole-v1").unwrapped
    fast.reset(seed=3), plain.reset(seed=3)
    with pytest.warns(UserWarning, match="already returned terminated") as caught:  # falls, then steps on
        results = [(fast.step(np.int64(1)), plain.step(np.int64(1))) for _ in range(40)]
    assert len(caught) == 2  # gymnasium warns once per env, and so does the fast step
    assert any(b[2] for _, b in results) and plain.steps_beyond_terminated > 1
    for a, b in results:
        assert a[0].tobytes() == b[0].tobytes() and a[1:4] == b[1:4]
    assert fast.steps_beyond_terminated == plain.steps_beyond_terminated


def test_the_wrapper_stack_is_replaced_only_where_it_is_gymnasiums_plain_one(monkeypatch):
    from gymnasium.error import ResetNeeded

    from hypermeta.engine import fast_envs

    env = make_fast_env("CartPole-v1")
    assert type(env).__name__ == "_Steps" and env.spec.id == "CartPole-v1"  # other attributes: the wrapped env's
    with pytest.raises(ResetNeeded):  # as OrderEnforcing
        env.step(np.int64(0))
    assert type(make_fast_env("lunarlander")).__name__ == "TimeLimit"  # not one of the checked classes
    import gymnasium.wrappers

    original = gymnasium.wrappers.TimeLimit

    class Patched(original):  # e.g. rl_zoo3's PatchedTimeLimit: another step, kept as it is
        pass

    monkeypatch.setattr(gymnasium.wrappers, "TimeLimit", Patched)
    assert type(make_fast_env("CartPole-v1")) is Patched
    monkeypatch.setattr(gymnasium.wrappers, "TimeLimit", original)
    overridden = make_env("CartPole-v1")
    overridden.step = overridden.step  # an instance override of a wrapper's step
    monkeypatch.setattr(fast_envs, "make_env", lambda task: overridden)
    assert make_fast_env("x") is overridden
    monkeypatch.setitem(fast_envs.CHECKED_SOURCES, "TimeLimit.step", "another version")
    fast_envs._unchanged.cache_clear()
    try:
        monkeypatch.setattr(fast_envs, "make_env", make_env)
        assert type(make_fast_env("CartPole-v1")).__name__ == "TimeLimit"
    finally:
        fast_envs._unchanged.cache_clear()


def test_cartpole_parameters_of_other_types_take_gymnasiums_step():
    for value in (np.float32(2.4), np.longdouble(2.4)):  # NumPy would compare / compute in another precision
        fast, plain = make_fast_env("CartPole-v1").unwrapped, make_env("CartPole-v1").unwrapped
        for env in (fast, plain):
            env.reset(seed=0)
            env.x_threshold = value
            env.state = np.array([float(np.float32(2.4)) + 1e-9, 0.0, 0.0, 0.0])
        assert fast.step(np.int64(1))[2] == plain.step(np.int64(1))[2]
        assert np.array_equal(fast.state, plain.state)


@pytest.mark.parametrize("task", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "frozenlake:success_rate=0.6"])
def test_the_skipped_passive_checks_pass_on_these_envs(task):
    import warnings

    env = make_env(task)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning of the checker's first reset and step fails the test
        env.reset(seed=0)
        env.step(np.int64(0))


def test_frozenlake_episodes_through_the_one_object_stack_are_gymnasiums():
    import copy

    fast, plain = make_fast_env("frozenlake:success_rate=0.6"), make_env("frozenlake:success_rate=0.6")
    assert type(fast).__name__ == "_Steps"
    rng, terminated = np.random.default_rng(1), 0
    for episode in range(40):
        assert fast.reset(seed=episode) == plain.reset(seed=episode)
        done = False
        while not done:
            action = np.int64(rng.integers(2, 4) if rng.random() < 0.9 else rng.integers(4))  # down/right mostly
            a, b = fast.step(action), plain.step(action)
            assert a == b, (episode, a, b)
            done, terminated = b[2] or b[3], terminated + b[2]
    assert terminated > 0
    fast.reset(seed=0), plain.reset(seed=0)
    for step in range(100):  # "up" forever: slips only along the first row (no holes), truncated at the limit
        a, b = fast.step(np.int64(3)), plain.step(np.int64(3))
        assert a == b and (b[2], b[3]) == (False, step == 99)
    clone = copy.deepcopy(fast)  # copies (and the engine's attribute lookups) still work
    assert clone.step(np.int64(0))[3] and fast.render() is None
