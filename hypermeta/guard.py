"""The online divergence guard of :class:`~hypermeta.HyperMetaCallback` (``guard=True``).

Every ``check_every`` environment steps it checks the DQN being trained: the last TD loss and the network
weights must be finite, and the Q-values of recent replay-buffer observations must stay below
``q_factor * max|reward seen| / (1 - gamma)`` (no return can exceed ``max|r| / (1 - gamma)`` in absolute
value, so twice that is divergence, not learning). A healthy check snapshots the Q-network and its target.
An unhealthy one *intervenes*: both networks go back to the last healthy snapshot, the learning-rate
schedule is multiplied by ``lr_cut`` for the rest of training, Adam's moments are reset, and the
intervention is logged (``hypermeta/guard_interventions``). After ``max_interventions`` interventions the
next unhealthy check stops training with :class:`DivergenceError`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, network weight, Q-value or return (or the guard gave up)."""


@dataclass
class GuardSettings:
    check_every: int = 250
    q_factor: float = 2.0
    lr_cut: float = 0.1
    max_interventions: int = 3

    def __post_init__(self) -> None:
        if self.check_every < 1 or self.max_interventions < 0:
            raise ValueError(f"check_every must be >= 1 and max_interventions >= 0, got {self.check_every}, "
                             f"{self.max_interventions}")
        if not (self.q_factor >= 1 and 0 < self.lr_cut < 1):
            raise ValueError(f"need q_factor >= 1 and 0 < lr_cut < 1, got {self.q_factor}, {self.lr_cut}")


def health(model: Any, q_factor: float, sample: int = 256) -> str | None:
    """``None`` if the DQN ``model`` looks healthy, else the reason it does not."""
    import torch

    loss = model.logger.name_to_value.get("train/loss")
    if loss is not None and not math.isfinite(loss):
        return f"non-finite TD loss ({loss})"
    for name, param in model.q_net.named_parameters():
        if not torch.isfinite(param).all():
            return f"non-finite weights in q_net.{name}"
    buffer = model.replay_buffer
    if buffer is None or buffer.size() == 0:
        return None
    n = min(buffer.size(), sample)
    end = buffer.pos if buffer.pos >= n else buffer.size()  # the most recent observations
    obs = buffer.observations[end - n:end]
    with torch.no_grad():
        obs_t, _ = model.policy.obs_to_tensor(obs.reshape(n * buffer.n_envs, *model.observation_space.shape))
        q = model.q_net(obs_t)
    if not torch.isfinite(q).all():
        return "non-finite Q-values"
    r_max = float(abs(buffer.rewards[: buffer.size()]).max())
    bound = q_factor * max(r_max, 1e-8) / (1.0 - model.gamma)
    q_max = float(q.abs().max())
    if q_max > bound:
        return f"|Q| reached {q_max:.3g}, above {bound:.3g} = {q_factor:g} x max|reward| {r_max:.3g} / (1 - gamma)"
    return None


class DivergenceGuard:
    """The guard's state over one or several ``learn`` calls (see the module docstring)."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.interventions: list[tuple[int, str]] = []
        self.lr_scale = 1.0
        self._snapshot: tuple[dict, dict] | None = None

    def snapshot(self, model: Any) -> None:
        self._snapshot = (copy.deepcopy(model.q_net.state_dict()), copy.deepcopy(model.q_net_target.state_dict()))

    def _roll_back(self, model: Any) -> None:
        if self._snapshot is not None:
            model.q_net.load_state_dict(self._snapshot[0])
            model.q_net_target.load_state_dict(self._snapshot[1])

    def check(self, model: Any, step: int) -> None:
        """Check ``model``; snapshot it when healthy, intervene (or raise) when not."""
        reason = health(model, self.settings.q_factor)
        if reason is None:
            self.snapshot(model)
            return
        self._roll_back(model)
        if len(self.interventions) >= self.settings.max_interventions:  # the model keeps the healthy networks
            history = "; ".join(f"step {s}: {r}" for s, r in self.interventions)
            raise DivergenceError(
                f"training diverged again at step {step} ({reason}) after {len(self.interventions)} guard "
                f"interventions ({history}); lower lr_initial or raise target_update_interval")
        self.interventions.append((step, reason))
        self.lr_scale *= self.settings.lr_cut
        model.policy.optimizer.state.clear()  # Adam's moments carry the divergence: start them afresh
        model.logger.record("hypermeta/guard_interventions", len(self.interventions))
        model.logger.log(f"hypermeta guard: step {step}: {reason}; rolled back to the last healthy networks, lr "
                         f"schedule x{self.lr_scale:g}, optimizer moments reset")
