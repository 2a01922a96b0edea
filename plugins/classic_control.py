"""Classic-control families with CARL-like physics contexts (names and ranges follow CARL)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from hypermeta import ContextParam, TaskFamily


class CartPoleFamily(TaskFamily):
    """``CartPole-v1`` with varied physics (CARL ``CARLCartPole`` names)."""

    name = "cartpole"
    env_id = "CartPole-v1"
    description = "Balance a pole on a cart; reward 1 per step, at most 500 steps."
    context_space = {
        "gravity": ContextParam(9.8, 4.9, 19.6, "gravitational acceleration (m/s^2)", hard_low=0.01),
        "masscart": ContextParam(1.0, 0.5, 2.0, "cart mass (kg)", hard_low=0.01),
        "masspole": ContextParam(0.1, 0.05, 0.2, "pole mass (kg)", hard_low=0.001),
        "length": ContextParam(0.5, 0.25, 1.0, "half the pole length (m)", hard_low=0.01),
        "force_mag": ContextParam(10.0, 5.0, 20.0, "force of one push (N)", hard_low=0.01),
        "tau": ContextParam(0.02, 0.01, 0.04, "seconds between state updates", hard_low=0.001, hard_high=0.1),
    }

    def apply_context(self, env: gym.Env, context: dict[str, float]) -> None:
        for key, value in context.items():
            setattr(env, key, value)
        env.total_mass = env.masspole + env.masscart  # derived quantities the dynamics read
        env.polemass_length = env.masspole * env.length


class AcrobotFamily(TaskFamily):
    """``Acrobot-v1`` with varied link geometry, masses and torque noise (CARL ``CARLAcrobot`` names)."""

    name = "acrobot"
    env_id = "Acrobot-v1"
    description = "Swing a two-link pendulum above a line; reward -1 per step, at most 500 steps."
    context_space = {
        "link_length_1": ContextParam(1.0, 0.5, 2.0, "length of link 1 (m)", hard_low=0.05),
        "link_length_2": ContextParam(1.0, 0.5, 2.0, "length of link 2 (m)", hard_low=0.05),
        "link_mass_1": ContextParam(1.0, 0.5, 2.0, "mass of link 1 (kg)", hard_low=0.01),
        "link_mass_2": ContextParam(1.0, 0.5, 2.0, "mass of link 2 (kg)", hard_low=0.01),
        "link_com_1": ContextParam(0.5, 0.25, 0.75, "centre of mass of link 1 (m)", hard_low=0.0),
        "link_com_2": ContextParam(0.5, 0.25, 0.75, "centre of mass of link 2 (m)", hard_low=0.0),
        "link_moi": ContextParam(1.0, 0.5, 2.0, "moment of inertia of both links", hard_low=0.01),
        "torque_noise_max": ContextParam(0.0, 0.0, 0.4, "uniform noise added to the torque", hard_high=5.0),
    }
    _ATTRS = {
        "link_length_1": "LINK_LENGTH_1", "link_length_2": "LINK_LENGTH_2", "link_mass_1": "LINK_MASS_1",
        "link_mass_2": "LINK_MASS_2", "link_com_1": "LINK_COM_POS_1", "link_com_2": "LINK_COM_POS_2",
        "link_moi": "LINK_MOI", "torque_noise_max": "torque_noise_max",
    }

    def apply_context(self, env: gym.Env, context: dict[str, float]) -> None:
        for key, value in context.items():
            setattr(env, self._ATTRS[key], value)  # instance attributes shadow the class constants


class MountainCarFamily(TaskFamily):
    """``MountainCar-v0`` with varied engine force, gravity, speed limit and goal (CARL names)."""

    name = "mountaincar"
    env_id = "MountainCar-v0"
    description = "Drive an underpowered car up a hill; reward -1 per step, at most 200 steps."
    context_space = {
        "force": ContextParam(0.001, 0.0005, 0.002, "engine force", hard_low=1e-6, log=True),
        "gravity": ContextParam(0.0025, 0.00125, 0.005, "gravity", hard_low=1e-6, log=True),
        "max_speed": ContextParam(0.07, 0.035, 0.14, "speed limit", hard_low=1e-3),
        "goal_position": ContextParam(0.5, 0.3, 0.55, "x position of the goal", hard_low=-1.2, hard_high=0.6),
    }

    def apply_context(self, env: gym.Env, context: dict[str, float]) -> None:
        for key, value in context.items():
            setattr(env, key, value)
        env.low = np.array([env.min_position, -env.max_speed], dtype=np.float32)
        env.high = np.array([env.max_position, env.max_speed], dtype=np.float32)
        env.observation_space = gym.spaces.Box(env.low, env.high, dtype=np.float32)
