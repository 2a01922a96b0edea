"""A meta-learned Q-network start for a task family (issue 30): the artifact, and loading it into either runner.

An artifact is ``NAME.safetensors`` (the Q-network's parameters, named as SB3's ``model.q_net.state_dict()`` names
them: ``q_net.0.weight``, ``q_net.0.bias``, ...) and ``NAME.json`` (its manifest: the family, the net, the
observation size and number of actions, the method that made it, the contexts it was trained on and their
features, the commit). Loading runs no code (safetensors).

SB3: ``HyperMetaCallback(config, init=PATH)`` loads it into ``q_net`` and ``q_net_target`` at the first training
start of a model that has not trained yet (a ``learn`` after ``DQN.load`` or ``reset_num_timesteps=False`` keeps
the trained weights). The engine: ``Job(..., init=PATH)`` overwrites the agent's initial weights (after SB3's own
initialisation has drawn from the seeded generator, as the callback does, so every other random stream is
unchanged). MLP Q-networks only (flat observations).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(eq=False)
class QStart:
    """A Q-network's initial parameters (SB3 naming, float32) with their manifest."""

    state: dict[str, np.ndarray]
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.state.items()}
        names = list(self.state)
        if not names or len(names) % 2 or not all(n.startswith("q_net.") for n in names):
            raise ValueError(f"a Q-network start holds q_net.<i>.weight/bias pairs, got {names[:4]}")
        digest = hashlib.sha1()
        for name in sorted(self.state):  # files store their tensors in their own order
            digest.update(name.encode() + self.state[name].tobytes())
        self.key = "init-" + digest.hexdigest()[:12]

    @property
    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight ``[out, in]``, bias ``[out]``) of each linear layer, input first."""
        order = sorted({int(n.split(".")[1]) for n in self.state})
        return [(self.state[f"q_net.{i}.weight"], self.state[f"q_net.{i}.bias"]) for i in order]

    @property
    def obs_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    @property
    def n_actions(self) -> int:
        return int(self.layers[-1][0].shape[0])

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(int(w.shape[0]) for w, _ in self.layers[:-1])

    # --- the engine's flat layout (x @ W with W stored [in, out], then the bias, layer by layer) ---------------
    def to_flat(self) -> np.ndarray:
        return np.concatenate([np.concatenate([w.T.reshape(-1), b]) for w, b in self.layers])

    @classmethod
    def from_flat(cls, flat: np.ndarray, sizes: list[int], manifest: dict[str, Any] | None = None) -> QStart:
        """From the engine's flat parameters of an MLP with layer sizes ``[obs, *hidden, actions]``."""
        state, offset = {}, 0
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = np.asarray(flat[offset:offset + fan_in * fan_out]).reshape(fan_in, fan_out).T
            offset += fan_in * fan_out
            state[f"q_net.{2 * i}.weight"], state[f"q_net.{2 * i}.bias"] = w, np.asarray(flat[offset:offset + fan_out])
            offset += fan_out
        if offset != len(flat):
            raise ValueError(f"{len(flat)} parameters do not make an MLP of sizes {sizes}")
        return cls(state, dict(manifest or {}))

    # --- files ---------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from hypermeta.files import save_arrays

        manifest = {**self.manifest, "obs_dim": self.obs_dim, "n_actions": self.n_actions, "hidden": list(self.hidden)}
        return save_arrays(path, self.state, manifest)

    @classmethod
    def load(cls, path: str | Path) -> QStart:
        from hypermeta.files import load_arrays

        return cls(*load_arrays(path, "a Q-network start"))

    # --- checks ----------------------------------------------------------------------------------------------------
    def check(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...], where: str) -> None:
        """A one-line ``ValueError`` naming the difference when the start does not fit a Q-network."""
        have, want = (self.obs_dim, self.n_actions, self.hidden), (obs_dim, n_actions, tuple(hidden))
        if have != want:
            raise ValueError(f"the Q-network start (family {self.manifest.get('family', '?')!r}) fits observations "
                             f"of size {have[0]}, {have[1]} actions and hidden layers {list(have[2])}; {where} has "
                             f"{want[0]}, {want[1]} and {list(want[2])}: use a start made for this env and net "
                             "(`hypermeta meta-init FAMILY`)")


#: The package's folder of shipped starts (``FAMILY.safetensors``, copied by ``hypermeta meta-eval PLAN --ship`` for
#: each family whose start met meta-learner v3's pre-registered target).
SHIPPED_STARTS = Path(__file__).parent / "weights" / "starts"


def shipped_families() -> list[str]:
    return sorted(p.stem for p in SHIPPED_STARTS.glob("*.safetensors"))


def _none_shipped() -> str:
    """Why no start is shipped: meta-learner v3's recorded decision (``--ship``), or that it is still to come."""
    if (SHIPPED_STARTS.parent / "v3.provenance.json").is_file():
        return "none: no family's start met meta-learner v3's target, studies/reports/v3/report.md"
    return "none yet: meta-learner v3's evaluation has not decided"


def get_start(init: str | Path | QStart, family: str | None = None) -> QStart:
    """A start from a ``.safetensors`` path, a :class:`QStart`, or ``"default"``: the start shipped for ``family``
    (a one-line ``ValueError`` naming the shipped families when there is none)."""
    if isinstance(init, QStart):
        return init
    if str(init) == "default":
        if family is None or family not in shipped_families():
            shipped = ", ".join(shipped_families()) or _none_shipped()
            where = "this env's family is unknown" if family is None else f"none is shipped for family {family!r}"
            raise ValueError(f"init='default' loads the Q-network start shipped for the env's family, but {where} "
                             f"(shipped: {shipped}); give a start's .safetensors (`hypermeta meta-init FAMILY`) "
                             "or no init")
        return QStart.load(SHIPPED_STARTS / f"{family}.safetensors")
    return QStart.load(init)


def load_into_sb3(model: Any, start: QStart, family: str | None = None) -> None:
    """Copy ``start`` into ``model.q_net`` and ``model.q_net_target`` (an SB3 DQN with an MLP policy). Warns when the
    env's family (``family``, when known) is not the start's."""
    import warnings

    import torch

    net = model.q_net
    hidden = tuple(int(m.out_features) for m in net.q_net if isinstance(m, torch.nn.Linear))[:-1]
    obs_dim = int(net.features_dim)
    start.check(obs_dim, int(model.action_space.n), hidden, "this model")
    if family is not None and start.manifest.get("family") not in (None, family):
        warnings.warn(f"the Q-network start was learned on family {start.manifest['family']!r}, this env is "
                      f"{family!r}: it fits the shapes, but it may not help", UserWarning, stacklevel=3)
    state = {k: torch.as_tensor(v) for k, v in start.state.items()}
    with torch.no_grad():
        for target in (model.q_net, model.q_net_target):
            target.load_state_dict(state, strict=False)  # Flatten has no parameters
            for name, value in state.items():
                if not torch.equal(target.state_dict()[name], value):
                    raise ValueError(f"loading the Q-network start left {name} different")
