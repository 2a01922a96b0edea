"""The batched engine's environments: what ``make_env(task)`` makes, with the hot paths of gymnasium's classic
control envs made cheaper **without changing what they return**.

In the engine, stepping K environments in Python is the other half of the time next to the batched network
(at 64 agents, evaluations included: ~30% on CartPole, ~45% on MountainCar, ~65% on Acrobot). Three
replacements, each installed on one env instance only (never on gymnasium's classes), each compared by a test
with gymnasium's own code on long trajectories (observations byte for byte, rewards, flags, internal state):

- ``Discrete`` action spaces of dtype int64 (a copy, installed on the env) answer ``contains`` for a NumPy
  ``int64`` (what the engine passes, as SB3's ``DummyVecEnv`` does) with one range check instead of
  gymnasium's generic dtype checks (CartPole, MountainCar and FrozenLake assert it every step: ~12% of a
  CartPole batch); any other value goes to gymnasium's check;
- ``MountainCarEnv.step`` with ``min``/``max`` for ``np.clip`` on two scalars (the same float64 values without
  NumPy's dispatch: ~17% of a MountainCar batch);
- ``AcrobotEnv.step`` with its one Runge-Kutta step unrolled over NumPy float64 scalars (the same operations in
  the same order as gymnasium's ``rk4`` over arrays, and NumPy's own ``cos``/``sin``): ~40% less time per step.

The two steps replace gymnasium's only where its source is the one they were checked against (a hash of
``inspect.getsource``; another gymnasium version keeps its own steps, only slower), for envs of exactly these
classes without a ``render_mode`` or instance overrides of the methods they inline.
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
from gymnasium.envs.classic_control.mountain_car import MountainCarEnv

from hypermeta.tasks.families import make_env


#: the first 16 hex digits of the sha256 of ``inspect.getsource`` of the gymnasium code each replacement was
#: checked against (gymnasium 1.4.0)
CHECKED_SOURCES = {
    "MountainCarEnv.step": "d542dda464772e84",
    "AcrobotEnv.step": "11db3a5b05811469",
    "AcrobotEnv._dsdt": "6213d5f3c4fa8680",
    "rk4": "3cefe74ee81295a9",
}


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
    return env


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
