"""Q-networks for observations an MLP does not suit, as SB3 ``policy_kwargs``.

:class:`MinAtarCNN` is MinAtar's reference network (Young & Tian 2019; kenjyoung/MinAtar ``examples/dqn.py``):
one 3x3 convolution with 16 channels (stride 1, ReLU) over the channel-last ``10x10xC`` boolean frame, then 128
hidden units (ReLU); SB3's Q-head maps them to the actions. :func:`policy_kwargs_for` picks it for any
3-dimensional Box observation (``hypermeta train``/``study``/``tune`` with the SB3 runner do so), else the
configuration's MLP ``net_arch``. In your own code::

    from hypermeta.networks import MinAtarCNN
    DQN("MlpPolicy", env, policy_kwargs=dict(features_extractor_class=MinAtarCNN, net_arch=[]))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

if TYPE_CHECKING:  # DQNConfig.sb3_kwargs(observation_space) imports this module
    from hypermeta.space import DQNConfig


class MinAtarCNN(BaseFeaturesExtractor):
    """Conv(3x3, ``channels``) -> ReLU -> flatten -> Linear(``hidden``) -> ReLU, on channel-last images."""

    def __init__(self, observation_space: gym.spaces.Box, channels: int = 16, hidden: int = 128) -> None:
        super().__init__(observation_space, features_dim=hidden)
        h, w, c = observation_space.shape
        if h < 3 or w < 3:
            raise ValueError(f"MinAtarCNN needs images of at least 3x3 (channel-last), got {observation_space.shape}")
        self.conv = nn.Sequential(nn.Conv2d(c, channels, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(channels * (h - 2) * (w - 2), hidden), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(observations.float().permute(0, 3, 1, 2)))


def is_image(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3


def zoo_policy_kwargs(space: gym.Space, config: DQNConfig) -> str | None:
    """rl-zoo's ``policy_kwargs`` string for image observations (None: the configuration's MLP). rl-zoo evaluates
    the string in its own namespace, so the class must be importable there: use a Python hyperparameter file
    (``-conf``) that does ``from hypermeta.networks import MinAtarCNN``."""
    return "dict(features_extractor_class=MinAtarCNN, net_arch=[])" if is_image(space) else None


def policy_kwargs_for(space: gym.Space, config: DQNConfig) -> dict[str, Any]:
    """SB3 ``policy_kwargs``: MinAtar's CNN for 3-D (image) observations, else ``config``'s MLP layers."""
    if is_image(space):
        return {"features_extractor_class": MinAtarCNN, "net_arch": []}
    return dict(config.sb3_kwargs()["policy_kwargs"])
