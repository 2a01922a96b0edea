"""The batched engine's environments: what ``make_env(task)`` makes, with the hot paths of gymnasium's classic
control envs made cheaper **without changing what they return**.

In the engine, stepping K environments in Python is the other half of the time next to the batched network
(at 64 agents, evaluations included: ~30% on CartPole, ~45% on MountainCar, ~65% on Acrobot). Five
replacements, each installed on one env instance only (never on gymnasium's classes), each compared by a test
with gymnasium's own code on long trajectories (observations byte for byte, rewards, flags, internal state):

- ``gym.make``'s wrapper stack, ``TimeLimit(OrderEnforcing(PassiveEnvChecker(env)))``, as one object
  (:class:`_Steps`) that makes the same calls on the env and returns the same values (TimeLimit's truncation,
  OrderEnforcing's error), without three wrapper calls per step. PassiveEnvChecker's one-time checks of the first
  reset and step only warn, and pass on these envs (the tests run them), so they are skipped;
- ``CartPoleEnv.step`` on Python floats: the same float64 operations in the same order as gymnasium's on NumPy
  float64 scalars (``np.square(x)`` is ``x * x``; ``cos``/``sin`` stay NumPy's);

- ``Discrete`` action spaces of dtype int64 (a copy, installed on the env) answer ``contains`` for a NumPy
  ``int64`` (what the engine passes, as SB3's ``DummyVecEnv`` does) with one range check instead of
  gymnasium's generic dtype checks (CartPole, MountainCar and FrozenLake assert it every step: ~12% of a
  CartPole batch); any other value goes to gymnasium's check;
- ``MountainCarEnv.step`` with ``min``/``max`` for ``np.clip`` on two scalars (the same float64 values without
  NumPy's dispatch: ~17% of a MountainCar batch);
- ``AcrobotEnv.step`` with its one Runge-Kutta step unrolled over NumPy float64 scalars (the same operations in
  the same order as gymnasium's ``rk4`` over arrays, and NumPy's own ``cos``/``sin``): ~40% less time per step.

The steps and the wrapper stack replace gymnasium's only where its source is the one they were checked against
(a hash of ``inspect.getsource``; another gymnasium version keeps its own code, only slower), for envs of exactly
these classes without a ``render_mode`` or instance overrides of the methods they inline.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import math
import types
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import acrobot
from gymnasium.envs.classic_control.acrobot import AcrobotEnv
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.mountain_car import MountainCarEnv
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv
from gymnasium.error import ResetNeeded
from gymnasium.wrappers.common import OrderEnforcing, PassiveEnvChecker, TimeLimit

from hypermeta.tasks.families import make_env


#: the first 16 hex digits of the sha256 of ``inspect.getsource`` of the gymnasium code each replacement was
#: checked against (gymnasium 1.4.0)
CHECKED_SOURCES = {
    "MountainCarEnv.step": "d542dda464772e84",
    "AcrobotEnv.step": "11db3a5b05811469",
    "AcrobotEnv._dsdt": "6213d5f3c4fa8680",
    "rk4": "3cefe74ee81295a9",
    "CartPoleEnv.step": "36d99482f4772b6c",
    "TimeLimit.step": "0bfbc864eafd8da6",
    "TimeLimit.reset": "bb5cd22ad4866225",
    "OrderEnforcing.step": "5a866315a10049e3",
    "OrderEnforcing.reset": "1aa721b0a6196325",
    "PassiveEnvChecker.step": "c1795d3e80ba2e8b",
    "PassiveEnvChecker.reset": "936258c3186ea10f",
    "Wrapper.step": "3152fb2e0c06a7d1",
    "Wrapper.reset": "9889fb3af80479ac",
}

#: the envs whose wrapper stack :class:`_Steps` replaces: gymnasium's passive checks pass on them (the tests)
STEPPED_CLASSES = (CartPoleEnv, AcrobotEnv, MountainCarEnv, FrozenLakeEnv)


@functools.cache
def _unchanged(*functions: Any) -> bool:
    """Whether gymnasium's functions are, to the character, the ones the replacements were checked against."""
    return all(hashlib.sha256(inspect.getsource(f).encode()).hexdigest()[:16] == CHECKED_SOURCES.get(f.__qualname__)
               for f in functions)


class _Int64Contains:
    """``Discrete.contains`` for an int64 space: a NumPy int64 by one range check, anything else by gymnasium's."""

    def __init__(self, space: gym.spaces.Discrete) -> None:
        self.low, self.high, self.general = int(space.start), int(space.start + space.n), space.contains

    def __call__(self, x: Any) -> bool:
        return bool(self.low <= x < self.high) if type(x) is np.int64 else self.general(x)


def make_fast_env(task: str) -> gym.Env:
    """``make_env(task)`` with the replacements above installed where they apply."""
    env = make_env(task)
    inner = env.unwrapped
    space = inner.action_space
    if type(space) is gym.spaces.Discrete and space.dtype == np.int64:
        space = inner.action_space = copy.copy(space)  # this env's own, whatever else shares gymnasium's
        space.contains = _Int64Contains(space)
    if inner.render_mode is None:
        if type(inner) is MountainCarEnv and "step" not in vars(inner) and _unchanged(MountainCarEnv.step):
            inner.step = types.MethodType(_mountaincar_step, inner)
        elif (type(inner) is AcrobotEnv and not {"step", "_dsdt"} & set(vars(inner))
              and _unchanged(AcrobotEnv.step, AcrobotEnv._dsdt, acrobot.rk4)):
            inner.step = types.MethodType(_acrobot_step, inner)
        elif type(inner) is CartPoleEnv and "step" not in vars(inner) and _unchanged(CartPoleEnv.step):
            inner.step = types.MethodType(_cartpole_step, inner)
    return _Steps(env) if _plain_stack(env) else env


def _plain_stack(env: gym.Env) -> bool:
    """Whether ``env`` is ``gym.make``'s ``TimeLimit(OrderEnforcing(PassiveEnvChecker(env)))`` around one of
    :data:`STEPPED_CLASSES`, with gymnasium's checked wrapper code and no instance overrides."""
    stack = [env, getattr(env, "env", None), getattr(getattr(env, "env", None), "env", None)]
    return ([type(w) for w in stack] == [TimeLimit, OrderEnforcing, PassiveEnvChecker]
            and stack[2].env is env.unwrapped and type(env.unwrapped) in STEPPED_CLASSES
            and not any({"step", "reset"} & set(vars(w)) for w in stack)
            and _unchanged(TimeLimit.step, TimeLimit.reset, OrderEnforcing.step, OrderEnforcing.reset,
                           PassiveEnvChecker.step, PassiveEnvChecker.reset, gym.Wrapper.step, gym.Wrapper.reset))


class _Steps:
    """``gym.make``'s ``TimeLimit(OrderEnforcing(PassiveEnvChecker(env)))`` as one object: the same calls reach
    ``env`` (the unwrapped one) and the same values come back: ``truncated`` once ``max_episode_steps`` steps
    have passed since the last reset, ``ResetNeeded`` for a step before any reset. What the engine uses of an env
    (its spaces, ``unwrapped``, ``close``) is the wrapped env's; anything else is looked up on it."""

    def __init__(self, env: TimeLimit) -> None:
        self.env, self.unwrapped = env, env.unwrapped
        self.action_space, self.observation_space = env.action_space, env.observation_space
        self._max_episode_steps = env._max_episode_steps
        self._elapsed_steps: int | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        self._elapsed_steps = 0
        return self.unwrapped.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        if self._elapsed_steps is None:
            raise ResetNeeded("Cannot call env.step() before calling env.reset()")
        observation, reward, terminated, truncated, info = self.unwrapped.step(action)
        self._elapsed_steps += 1
        if self._elapsed_steps >= self._max_episode_steps:
            truncated = True
        return observation, reward, terminated, truncated, info

    def render(self) -> Any:
        return self.unwrapped.render()

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "env":  # copy and pickle probe before ``env`` exists
            raise AttributeError(name)
        return getattr(self.env, name)


def _cartpole_step(self: CartPoleEnv, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
    """gymnasium 1.x ``CartPoleEnv.step`` line by line on Python floats: every operation is the float64 one
    gymnasium applies to its NumPy float64 scalars (``np.square(v)`` is ``v * v``; ``cos``/``sin`` are NumPy's).
    A state that is not float64, or a parameter that is not a Python float (a NumPy float32 threshold would be
    compared in float32, a long double computed in extended precision), takes gymnasium's own step."""
    assert self.action_space.contains(action), f"{action!r} ({type(action)}) invalid"
    assert self.state is not None, "Call reset before using step method."
    force_mag, polemass_length, total_mass, masspole = self.force_mag, self.polemass_length, self.total_mass, self.masspole
    tau, gravity, length, x_limit, theta_limit = (self.tau, self.gravity, self.length, self.x_threshold,
                                                  self.theta_threshold_radians)
    if not (type(self.state) is np.ndarray and self.state.dtype == np.float64 and type(force_mag) is float
            and type(polemass_length) is float and type(total_mass) is float and type(masspole) is float
            and type(tau) is float and type(gravity) is float and type(length) is float and type(x_limit) is float
            and type(theta_limit) is float):
        return CartPoleEnv.step(self, action)
    x, x_dot, theta, theta_dot = self.state.tolist()
    force = force_mag if action == 1 else -force_mag
    costheta = float(np.cos(theta))
    sintheta = float(np.sin(theta))
    temp = (force + polemass_length * (theta_dot * theta_dot) * sintheta) / total_mass
    thetaacc = (gravity * sintheta - costheta * temp) / (
        length * (4.0 / 3.0 - masspole * (costheta * costheta) / total_mass))
    xacc = temp - polemass_length * thetaacc * costheta / total_mass
    if self.kinematics_integrator == "euler":
        x = x + tau * x_dot
        x_dot = x_dot + tau * xacc
        theta = theta + tau * theta_dot
        theta_dot = theta_dot + tau * thetaacc
    else:  # semi-implicit euler
        x_dot = x_dot + tau * xacc
        x = x + tau * x_dot
        theta_dot = theta_dot + tau * thetaacc
        theta = theta + tau * theta_dot
    self.state = np.array((x, x_dot, theta, theta_dot), dtype=np.float64)
    terminated = bool(x < -x_limit or x > x_limit or theta < -theta_limit or theta > theta_limit)
    if not terminated:
        reward = 0.0 if self._sutton_barto_reward else 1.0
    elif self.steps_beyond_terminated is None:
        self.steps_beyond_terminated = 0
        reward = -1.0 if self._sutton_barto_reward else 1.0
    else:
        if self.steps_beyond_terminated == 0:
            gym.logger.warn(
                "You are calling 'step()' even though this environment has already returned terminated = True. "
                "You should always call 'reset()' once you receive 'terminated = True' -- any further steps are "
                "undefined behavior.")
        self.steps_beyond_terminated += 1
        reward = -1.0 if self._sutton_barto_reward else 0.0
    return np.array(self.state, dtype=np.float32), reward, terminated, False, {}


def _mountaincar_step(self: MountainCarEnv, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
    """gymnasium 1.x ``MountainCarEnv.step`` line by line, ``np.clip`` on scalars written as ``min``/``max``."""
    assert self.action_space.contains(action), f"{action!r} ({type(action)}) invalid"
    position, velocity = self.state
    velocity += (action - 1) * self.force + math.cos(3 * position) * (-self.gravity)
    velocity = min(max(velocity, -self.max_speed), self.max_speed)
    position += velocity
    position = min(max(position, self.min_position), self.max_position)
    if position == self.min_position and velocity < 0:
        velocity = 0
    terminated = bool(position >= self.goal_position and velocity >= self.goal_velocity)
    self.state = (position, velocity)
    return np.array(self.state, dtype=np.float32), -1.0, terminated, False, {}


def _acrobot_step(self: AcrobotEnv, a: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
    """gymnasium 1.x ``AcrobotEnv.step``: ``rk4(self._dsdt, np.append(s, torque), [0, self.dt])`` computed on
    float64 scalars; the torque's derivative is 0, so it stays ``torque + h * 0.0`` through the stages."""
    s = self.state
    assert s is not None, "Call reset before using AcrobotEnv object."
    torque = self.AVAIL_TORQUE[a]
    if self.torque_noise_max > 0:
        torque += self.np_random.uniform(-self.torque_noise_max, self.torque_noise_max)
    s = np.asarray(s, dtype=np.float64)  # reset leaves float32; np.append(s, torque) makes float64
    y0, torque = (s[0], s[1], s[2], s[3]), np.float64(torque)
    dt = self.dt - 0  # rk4's t[1] - t[0]
    dt2 = dt / 2.0
    k1 = _acrobot_derivs(self, *y0, torque)
    k2 = _acrobot_derivs(self, *[y + dt2 * k for y, k in zip(y0, k1)], torque + dt2 * 0.0)
    k3 = _acrobot_derivs(self, *[y + dt2 * k for y, k in zip(y0, k2)], torque + dt2 * 0.0)
    k4 = _acrobot_derivs(self, *[y + dt * k for y, k in zip(y0, k3)], torque + dt * 0.0)
    ns = [y + dt / 6.0 * (p + 2 * q + 2 * r + w) for y, p, q, r, w in zip(y0, k1, k2, k3, k4)]
    self.state = np.array([acrobot.wrap(ns[0], -np.pi, np.pi), acrobot.wrap(ns[1], -np.pi, np.pi),
                           acrobot.bound(ns[2], -self.MAX_VEL_1, self.MAX_VEL_1),
                           acrobot.bound(ns[3], -self.MAX_VEL_2, self.MAX_VEL_2)])
    terminated = self._terminal()
    return self._get_ob(), -1.0 if not terminated else 0.0, terminated, False, {}


def _acrobot_derivs(self: AcrobotEnv, theta1: Any, theta2: Any, dtheta1: Any, dtheta2: Any,
                    a: Any) -> tuple[Any, Any, Any, Any]:
    """``AcrobotEnv._dsdt`` on scalars, the same expressions (``cos``/``sin`` are NumPy's, as there)."""
    m1, m2, l1 = self.LINK_MASS_1, self.LINK_MASS_2, self.LINK_LENGTH_1
    lc1, lc2, i1, i2, g = self.LINK_COM_POS_1, self.LINK_COM_POS_2, self.LINK_MOI, self.LINK_MOI, 9.8
    cos2, sin2 = np.cos(theta2), np.sin(theta2)
    d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + i1 + i2
    d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + i2
    phi2 = m2 * lc2 * g * np.cos(theta1 + theta2 - np.pi / 2.0)
    phi1 = (-m2 * l1 * lc2 * dtheta2**2 * sin2 - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * g * np.cos(theta1 - np.pi / 2) + phi2)
    if self.book_or_nips == "nips":
        ddtheta2 = (a + d2 / d1 * phi1 - phi2) / (m2 * lc2**2 + i2 - d2**2 / d1)
    else:
        ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * sin2 - phi2) / (m2 * lc2**2 + i2 - d2**2 / d1)
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return dtheta1, dtheta2, ddtheta1, ddtheta2
