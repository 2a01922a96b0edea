"""One search space, one source of truth.

Every field of :class:`DQNConfig` is described once, by a :class:`Param`. That single description
drives validation, SB3 ``DQN`` keyword arguments, Optuna ``suggest_*`` calls, the bounded vector
encoding used by the meta-learner, and YAML/JSON/rl-zoo export.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from hypermeta.schedules import ShapedSchedule

#: Bumped whenever a field, a range or the encoding changes: weights trained on another version are refused.
SPACE_VERSION = "1"

NET_ARCHS: dict[str, list[int]] = {"small": [64, 64], "medium": [256, 256], "big": [400, 300]}


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type, valid range, encoding and documentation.

    ``kind`` is ``float``, ``int`` or ``choice``. Numbers live on a ``linear``, ``log`` or ``log1m``
    (``log(1 - x)``, for discount factors) scale; that scale is used both by Optuna and by the
    network encoding. Choices are ``ordered`` (encoded as one number) or not (encoded one-hot).
    ``group`` says which search space tunes it: ``schedule`` (always), ``full`` (only in the full
    space) or ``base`` (never tuned, part of the base configuration).
    """

    name: str
    kind: Literal["float", "int", "choice"]
    default: Any
    doc: str
    group: Literal["schedule", "full", "base"] = "schedule"
    low: float | None = None
    high: float | None = None
    scale: Literal["linear", "log", "log1m"] = "linear"
    choices: tuple = ()
    ordered: bool = False

    @property
    def optuna_name(self) -> str:
        return f"one_minus_{self.name}" if self.scale == "log1m" else self.name

    @property
    def encoded_names(self) -> list[str]:
        if self.kind == "choice" and not self.ordered:
            return [f"{self.name}={c}" for c in self.choices]
        return [self.name]

    def range_text(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return f"[{self.low:g}, {self.high:g}]" + (f" ({self.scale} scale)" if self.scale != "linear" else "")

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ``ValueError`` naming the field."""
        if self.kind == "choice":
            for c in self.choices:
                if value == c and type(value) is not bool:
                    return c
            raise ValueError(f"{self.name} must be {self.range_text()}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{self.name} must be a number in {self.range_text()}, got {value!r}")
        if self.kind == "int":
            if float(value) != int(value):
                raise ValueError(f"{self.name} must be an integer in {self.range_text()}, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError(f"{self.name} must be in {self.range_text()}, got {value!r}")
        return value

    # --- scale transforms used by the encoding -------------------------------------------------
    def _to_unit(self, value: float) -> float:
        lo, hi, v = self.low, self.high, value
        if self.scale == "log":
            lo, hi, v = math.log(lo), math.log(hi), math.log(v)
        elif self.scale == "log1m":
            lo, hi, v = math.log(1 - hi), math.log(1 - lo), math.log(1 - v)
            return (hi - v) / (hi - lo)  # larger gamma -> larger code
        return (v - lo) / (hi - lo)

    def _from_unit(self, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if self.scale == "log":
            value = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        elif self.scale == "log1m":
            lo, hi = math.log(1 - self.high), math.log(1 - self.low)
            value = 1 - math.exp(hi - u * (hi - lo))
        else:
            value = self.low + u * (self.high - self.low)
        value = min(max(value, self.low), self.high)
        # 12 significant digits: exact round trips of typed-in values, far below any effect on training.
        return int(round(value)) if self.kind == "int" else float(f"{value:.12g}")

    def encode(self, value: Any) -> list[float]:
        if self.kind == "choice":
            idx = self.choices.index(value)
            if self.ordered:
                return [idx / (len(self.choices) - 1)]
            return [1.0 if i == idx else 0.0 for i in range(len(self.choices))]
        return [self._to_unit(value)]

    def decode(self, codes: Sequence[float]) -> Any:
        if self.kind == "choice":
            if self.ordered:
                u = min(max(float(codes[0]), 0.0), 1.0)
                return self.choices[int(round(u * (len(self.choices) - 1)))]
            return self.choices[int(np.argmax(np.asarray(codes, dtype=float)))]
        return self._from_unit(codes[0])

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter (``log1m`` parameters are sampled as ``one_minus_*``)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.scale == "log1m":
            return 1.0 - trial.suggest_float(self.optuna_name, 1.0 - self.high, 1.0 - self.low, log=True)
        suggest = trial.suggest_int if self.kind == "int" else trial.suggest_float
        return suggest(self.name, self.low, self.high, log=self.scale == "log")

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.scale == "log1m":
            return FloatDistribution(1.0 - self.high, 1.0 - self.low, log=True)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.scale == "log")
        return FloatDistribution(self.low, self.high, log=self.scale == "log")

    def to_optuna(self, value: Any) -> Any:
        return 1.0 - value if self.scale == "log1m" else value

    def from_optuna(self, value: Any) -> Any:
        return 1.0 - value if self.scale == "log1m" else value


PARAMS: tuple[Param, ...] = (
    # --- the schedule space: what the callback controls during training -----------------------------
    Param("lr_initial", "float", 6.3e-4, "Learning rate at the start of training.", low=1e-5, high=1e-2, scale="log"),
    Param("lr_final_ratio", "float", 1.0, "Final learning rate divided by the initial one (ignored by the "
          "constant shape).", low=0.01, high=1.0, scale="log"),
    Param("lr_shape", "choice", "constant", "How the learning rate moves from initial to final over all of "
          "training.", choices=("constant", "linear", "cosine", "exponential")),
    Param("eps_initial", "float", 1.0, "Exploration rate (epsilon) once learning starts.", low=0.2, high=1.0),
    Param("eps_final", "float", 0.05, "Exploration rate at the end of the decay window.", low=0.0, high=0.2),
    Param("eps_fraction", "float", 0.1, "Fraction of training over which epsilon decays.", low=0.01, high=0.6),
    Param("eps_shape", "choice", "linear", "How epsilon decays over its window.",
          choices=("linear", "cosine", "exponential")),
    # --- the full space adds the rl-baselines3-zoo DQN space -----------------------------------------
    Param("gamma", "float", 0.99, "Discount factor (sampled as log(1 - gamma), like rl-zoo).", group="full",
          low=0.97, high=0.9999, scale="log1m"),
    Param("batch_size", "choice", 64, "Minibatch size of each gradient step.", group="full",
          choices=(16, 32, 64, 128, 256, 512), ordered=True),
    Param("train_freq", "int", 4, "Environment steps between two training phases.", group="full",
          low=1, high=256, scale="log"),
    Param("subsample_steps", "choice", 4, "gradient_steps = max(train_freq // subsample_steps, 1) (rl-zoo).",
          group="full", choices=(1, 2, 4, 8), ordered=True),
    Param("target_update_interval", "int", 250, "Environment steps between target-network updates.",
          group="full", low=1, high=20000, scale="log"),
    Param("learning_starts", "choice", 1000, "Uniformly random steps collected before learning.", group="full",
          choices=(0, 100, 1000, 5000), ordered=True),
    Param("net_arch", "choice", "medium", "Q-network size: small [64, 64], medium [256, 256], big [400, 300].",
          group="full", choices=("small", "medium", "big"), ordered=True),
    # --- base configuration, never tuned -------------------------------------------------------------
    Param("buffer_size", "int", 50_000, "Replay buffer capacity.", group="base", low=1_000, high=10_000_000),
)
PARAMS_BY_NAME = {p.name: p for p in PARAMS}


@dataclass(frozen=True)
class DQNConfig:
    """A complete DQN configuration: the lr and epsilon schedules on top of the base DQN settings.

    Every field is validated against :data:`PARAMS` (``hypermeta space`` prints them); the defaults are
    hypermeta's documented *base* configuration. ``DQNConfig()`` is that base with a constant learning
    rate of 6.3e-4 and epsilon decaying linearly from 1.0 to 0.05 over the first 10% of training.

    >>> cfg = DQNConfig(lr_initial=1e-3, lr_final_ratio=0.1, lr_shape="linear")
    >>> round(cfg.lr_schedule()(0.0), 8), cfg.exploration_schedule()(1.0)
    (0.0001, 1.0)
    >>> DQNConfig(eps_final=0.5)
    Traceback (most recent call last):
    ...
    ValueError: eps_final must be in [0, 0.2], got 0.5
    """

    lr_initial: float = PARAMS_BY_NAME["lr_initial"].default
    lr_final_ratio: float = PARAMS_BY_NAME["lr_final_ratio"].default
    lr_shape: str = PARAMS_BY_NAME["lr_shape"].default
    eps_initial: float = PARAMS_BY_NAME["eps_initial"].default
    eps_final: float = PARAMS_BY_NAME["eps_final"].default
    eps_fraction: float = PARAMS_BY_NAME["eps_fraction"].default
    eps_shape: str = PARAMS_BY_NAME["eps_shape"].default
    gamma: float = PARAMS_BY_NAME["gamma"].default
    batch_size: int = PARAMS_BY_NAME["batch_size"].default
    train_freq: int = PARAMS_BY_NAME["train_freq"].default
    subsample_steps: int = PARAMS_BY_NAME["subsample_steps"].default
    target_update_interval: int = PARAMS_BY_NAME["target_update_interval"].default
    learning_starts: int = PARAMS_BY_NAME["learning_starts"].default
    net_arch: str = PARAMS_BY_NAME["net_arch"].default
    buffer_size: int = PARAMS_BY_NAME["buffer_size"].default

    def __post_init__(self) -> None:
        # eps_final <= 0.2 <= eps_initial by their ranges, so every box point is a decaying schedule.
        for p in PARAMS:
            object.__setattr__(self, p.name, p.validate(getattr(self, p.name)))

    # --- schedules ----------------------------------------------------------------------------------
    def lr_schedule(self) -> ShapedSchedule:
        """The learning-rate schedule, spanning all of training."""
        return ShapedSchedule(self.lr_initial, self.lr_initial * self.lr_final_ratio, self.lr_shape, 1.0)

    def exploration_schedule(self) -> ShapedSchedule:
        """The epsilon schedule: decays over ``eps_fraction`` of training, then stays at ``eps_final``."""
        return ShapedSchedule(self.eps_initial, self.eps_final, self.eps_shape, self.eps_fraction)

    @property
    def gradient_steps(self) -> int:
        return max(self.train_freq // self.subsample_steps, 1)

    # --- SB3 ------------------------------------------------------------------------------------------
    def sb3_kwargs(self, observation_space: Any = None) -> dict[str, Any]:
        """Keyword arguments for ``stable_baselines3.DQN``.

        The exploration arguments are SB3's linear schedule; they are exact for ``eps_shape="linear"``.
        Pass a :class:`~hypermeta.HyperMetaCallback` to ``learn`` to get every shape exactly (it also
        re-installs the schedules after ``DQN.load``). With the env's ``observation_space``, image observations
        get MinAtar's CNN as ``policy_kwargs`` (as hypermeta's runners build them), others ``net_arch``'s MLP.
        """
        if observation_space is not None:
            from hypermeta.networks import policy_kwargs_for

            return {**self.sb3_kwargs(), "policy_kwargs": policy_kwargs_for(observation_space, self)}
        return {
            "learning_rate": self.lr_schedule(),
            "buffer_size": self.buffer_size,
            "learning_starts": self.learning_starts,
            "batch_size": self.batch_size,
            "gamma": self.gamma,
            "train_freq": self.train_freq,
            "gradient_steps": self.gradient_steps,
            "target_update_interval": self.target_update_interval,
            "exploration_fraction": self.eps_fraction,
            "exploration_initial_eps": self.eps_initial,
            "exploration_final_eps": self.eps_final,
            "policy_kwargs": {"net_arch": list(NET_ARCHS[self.net_arch])},
        }

    # --- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> DQNConfig:
        return dataclasses.replace(self, **changes)

    def with_schedules(self, source: DQNConfig) -> DQNConfig:
        """This configuration's DQN settings under ``source``'s lr and epsilon schedules (the fields of the
        ``schedule`` search space), as a plan's portfolio applies a schedule over its fixed settings."""
        return self.replace(**{p.name: getattr(source, p.name) for p in get_space("schedule").params})

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "configuration") -> DQNConfig:
        """Build from a (possibly partial) mapping; missing fields take the base values."""
        if not isinstance(data, dict):
            raise ValueError(f"{source} must be a mapping of field: value, got {type(data).__name__}")
        unknown = sorted(set(data) - set(PARAMS_BY_NAME))
        if unknown:
            raise ValueError(
                f"{source} has unknown field(s) {unknown}; valid fields are {sorted(PARAMS_BY_NAME)}"
            )
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (``.yml``/``.yaml``) or JSON (any other suffix)."""
        import yaml

        path = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False) if path.suffix in (".yml", ".yaml") else (
            json.dumps(self.to_dict(), indent=2) + "\n"
        )
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DQNConfig:
        """Read a YAML or JSON file written by :meth:`save` (or by hand, with any subset of fields)."""
        from hypermeta.files import read_yaml

        path = Path(path)
        data = read_yaml(path, "schedule file")
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"schedule file {str(path)!r} must be a mapping of DQNConfig fields, got a "
                             f"{type(data).__name__}")
        try:
            return cls.from_dict(data if data is not None else {}, source=f"schedule file {str(path)!r}")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"schedule file {str(path)!r}: {exc}") from None

    def to_zoo(self, env_id: str, n_timesteps: int, policy_kwargs: str | None = None) -> dict[str, Any]:
        """An rl-baselines3-zoo ``dqn.yml`` entry: zoo's own keys, plus the callback that applies the
        exact schedules (rl-zoo instantiates entries of ``callback`` with their keyword arguments).
        ``policy_kwargs`` replaces the MLP's (e.g. :func:`hypermeta.networks.zoo_policy_kwargs` for images)."""
        kw = self.sb3_kwargs()
        entry: dict[str, Any] = {
            "n_timesteps": int(n_timesteps),
            "policy": "MlpPolicy",
            "learning_rate": self.lr_initial,
        }
        for key in ("batch_size", "buffer_size", "learning_starts", "gamma", "target_update_interval",
                    "train_freq", "gradient_steps", "exploration_fraction", "exploration_initial_eps",
                    "exploration_final_eps"):
            entry[key] = kw[key]
        entry["policy_kwargs"] = policy_kwargs or f"dict(net_arch={NET_ARCHS[self.net_arch]})"
        entry["callback"] = [{"hypermeta.HyperMetaCallback": {"config": self.to_dict()}}]
        return {env_id: entry}


@dataclass(frozen=True)
class SearchSpace:
    """The tuned subset of :data:`PARAMS` (``schedule`` or ``full``) over a base configuration.

    >>> space = get_space("schedule")
    >>> cfg = DQNConfig(lr_initial=2e-3, eps_shape="cosine")
    >>> space.decode(space.encode(cfg)) == cfg
    True
    >>> space.dim, get_space("full").dim
    (12, 19)
    """

    name: str
    params: tuple[Param, ...]
    base: DQNConfig = field(default_factory=DQNConfig)

    @property
    def encoded_names(self) -> list[str]:
        return [n for p in self.params for n in p.encoded_names]

    @property
    def dim(self) -> int:
        return len(self.encoded_names)

    def encode(self, config: DQNConfig) -> np.ndarray:
        """Bounded code in ``[0, 1]^dim`` (one-hot blocks for unordered choices)."""
        return np.array([c for p in self.params for c in p.encode(getattr(config, p.name))], dtype=np.float64)

    def decode(self, code: Sequence[float], base: DQNConfig | None = None) -> DQNConfig:
        """Nearest valid configuration to a code (values are clipped into range)."""
        code = np.asarray(code, dtype=np.float64)
        if code.shape != (self.dim,):
            raise ValueError(f"code must have shape ({self.dim},) for the {self.name!r} space, got {code.shape}")
        values, i = {}, 0
        for p in self.params:
            n = len(p.encoded_names)
            values[p.name] = p.decode(code[i : i + n])
            i += n
        return (base or self.base).replace(**values)

    def suggest(self, trial: Any, base: DQNConfig | None = None) -> DQNConfig:
        """Sample a configuration from an Optuna trial."""
        values = {p.name: p.suggest(trial) for p in self.params}
        return (base or self.base).replace(**values)

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions keyed by Optuna parameter name (for ``create_trial``/``add_trial``)."""
        return {p.optuna_name: p.distribution() for p in self.params}

    def to_optuna_params(self, config: DQNConfig) -> dict[str, Any]:
        """Parameters for ``study.enqueue_trial`` that reproduce ``config`` inside this space."""
        return {p.optuna_name: p.to_optuna(getattr(config, p.name)) for p in self.params}

    def untuned(self, config: DQNConfig) -> dict[str, Any]:
        """The fields of ``config`` this space does not search (a study over it keeps them fixed).

        >>> fixed = get_space("schedule").untuned(DQNConfig())
        >>> "batch_size" in fixed, "lr_initial" in fixed
        (True, False)
        """
        tuned = {p.name for p in self.params}
        return {k: v for k, v in config.to_dict().items() if k not in tuned}

    def from_optuna_params(self, params: dict[str, Any], base: DQNConfig | None = None) -> DQNConfig:
        """The configuration of a finished trial (``trial.params``)."""
        values = {p.name: p.from_optuna(params[p.optuna_name]) for p in self.params if p.optuna_name in params}
        return (base or self.base).replace(**values)


SPACES: dict[str, SearchSpace] = {
    "schedule": SearchSpace("schedule", tuple(p for p in PARAMS if p.group == "schedule")),
    "full": SearchSpace("full", tuple(p for p in PARAMS if p.group in ("schedule", "full"))),
}


def get_space(name: str) -> SearchSpace:
    """Return the ``schedule`` or ``full`` search space."""
    try:
        return SPACES[name]
    except KeyError:
        raise ValueError(f"space must be one of {sorted(SPACES)}, got {name!r}") from None
