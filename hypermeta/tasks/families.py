"""Task families (environments whose physics or rules vary) and task ids.

A *task* is a family plus a context, written as a string id usable wherever hypermeta takes an env id::

    cartpole                          # the family's default context
    cartpole:gravity=15,length=0.8    # other values; unnamed ones keep their defaults
    CartPole-v1                       # any plain gymnasium id works too

Families are found through the ``hypermeta.plugins`` entry-point group (built-in ones included), so a
package can add a game without forking hypermeta; see the README, "Writing a task-family plugin".
"""

from __future__ import annotations

import difflib
import math
import os
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, ClassVar, Mapping

import gymnasium as gym
import numpy as np

ENTRY_POINT_GROUP = "hypermeta.plugins"

#: Episodes of an environment without a time limit (no ``max_episode_steps`` in its spec and no ``TimeLimit``
#: wrapper, e.g. ``CliffWalking-v1``) end after this many steps, as truncated (never terminal): else a greedy
#: evaluation episode of a policy that walks into a wall never ends. The environment variable
#: :data:`MAX_EPISODE_STEPS_VAR` (which ``--max-episode-steps`` sets, so worker processes see it too) overrides it.
DEFAULT_MAX_EPISODE_STEPS = 1000
MAX_EPISODE_STEPS_VAR = "HYPERMETA_MAX_EPISODE_STEPS"
_CAP_WARNED_VAR = "HYPERMETA_EPISODE_CAP_WARNED"  # ids already warned about, in this process and its children


class EpisodeCapWarning(UserWarning):
    """hypermeta capped the episodes of an environment that has no time limit of its own."""


# shown every time it is issued: cap_episodes itself says it once per environment id (Python's default "once per
# code location" would hide it for every id after the first)
warnings.simplefilter("always", EpisodeCapWarning)


@dataclass(frozen=True)
class ContextParam:
    """One context feature of a family.

    ``low``/``high`` is the documented sampling range (what :meth:`TaskFamily.sample_contexts` draws
    from, uniformly, or log-uniformly when ``log``); values outside it but inside ``hard_low``/
    ``hard_high`` are allowed (extrapolation), values outside those are physically invalid.
    """

    default: float
    low: float
    high: float
    doc: str
    hard_low: float = 0.0
    hard_high: float = math.inf
    log: bool = False

    def __post_init__(self) -> None:
        if not (self.hard_low <= self.low <= self.default <= self.high <= self.hard_high):
            raise ValueError(f"need hard_low <= low <= default <= high <= hard_high, got {self}")


class TaskFamily:
    """Base class of a task family. Subclasses set ``name``, ``env_id``, ``context_space`` and
    override :meth:`apply_context` (or :meth:`make_env` when the context goes into ``gym.make``).

    Call order: ``make_env(context)`` validates the context, calls ``gym.make(env_id)``, then
    ``apply_context(env.unwrapped, context)``.
    """

    name: ClassVar[str]
    env_id: ClassVar[str]
    context_space: ClassVar[Mapping[str, ContextParam]]
    description: ClassVar[str] = ""

    # --- contexts --------------------------------------------------------------------------------------
    def default_context(self) -> dict[str, float]:
        return {k: p.default for k, p in self.context_space.items()}

    def validate_context(self, context: Mapping[str, Any]) -> dict[str, float]:
        """Complete a partial context with defaults; raise ``ValueError`` naming a bad key or value."""
        unknown = sorted(set(context) - set(self.context_space))
        if unknown:
            raise ValueError(
                f"unknown context feature(s) {unknown} for family {self.name!r}; "
                f"valid ones are {sorted(self.context_space)}"
            )
        full = self.default_context()
        for key, value in context.items():
            p = self.context_space[key]
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{self.name}: context {key} must be a number, got {value!r}") from None
            if not (math.isfinite(value) and p.hard_low <= value <= p.hard_high):
                raise ValueError(
                    f"{self.name}: context {key}={value!r} is outside its valid range "
                    f"[{p.hard_low:g}, {p.hard_high:g}] (sampling range [{p.low:g}, {p.high:g}])"
                )
            full[key] = value
        return full

    def sample_contexts(self, n: int, seed: int, features: list[str] | None = None) -> list[dict[str, float]]:
        """``n`` contexts drawn from the sampling ranges with ``numpy.random.default_rng(seed)``.

        Only ``features`` are varied (all by default); the others keep their defaults.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        names = list(self.context_space) if features is None else list(features)
        unknown = sorted(set(names) - set(self.context_space))
        if unknown:
            raise ValueError(f"unknown context feature(s) {unknown} for family {self.name!r}; "
                             f"valid ones are {sorted(self.context_space)}")
        rng = np.random.default_rng(seed)
        contexts = []
        for _ in range(n):
            ctx = self.default_context()
            for k in names:
                p = self.context_space[k]
                if p.log:
                    ctx[k] = float(np.exp(rng.uniform(np.log(p.low), np.log(p.high))))
                else:
                    ctx[k] = float(rng.uniform(p.low, p.high))
                ctx[k] = float(f"{ctx[k]:.4g}")  # short, exactly reproducible task ids
            contexts.append(ctx)
        return contexts

    def task(self, context: Mapping[str, Any] | None = None) -> Task:
        return Task(self, self.validate_context(context or {}))

    # --- environments ----------------------------------------------------------------------------------
    def make_env(self, context: Mapping[str, Any] | None = None, **make_kwargs: Any) -> gym.Env:
        context = self.validate_context(context or {})
        env = gym.make(self.env_id, **make_kwargs)
        self.apply_context(env.unwrapped, context)
        return env

    def apply_context(self, env: gym.Env, context: dict[str, float]) -> None:
        """Set the context on the unwrapped environment (override in subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} must override apply_context or make_env")


def _format_value(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Task:
    """A family plus a full context. ``Task.id`` round-trips through :func:`get_task`."""

    family: TaskFamily
    context: dict[str, float]

    @property
    def id(self) -> str:
        changed = {k: v for k, v in self.context.items() if v != self.family.context_space[k].default}
        if not changed:
            return self.family.name
        return self.family.name + ":" + ",".join(f"{k}={_format_value(v)}" for k, v in changed.items())

    def make_env(self, **make_kwargs: Any) -> gym.Env:
        env = self.family.make_env(self.context, **make_kwargs)
        # the task id travels with the env (through any wrapper, vec env or process: SB3's get_attr finds it),
        # so a fresh copy can be made for probing without touching the training env
        env.unwrapped.hypermeta_task_id = self.id
        return env

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and self.id == other.id

    def __repr__(self) -> str:
        return f"Task({self.id!r})"


# --- the registry ---------------------------------------------------------------------------------------
_FAMILIES: dict[str, TaskFamily] = {}
_ENTRY_POINTS_LOADED = False


def register_family(family: TaskFamily | type[TaskFamily], *, overwrite: bool = False) -> TaskFamily:
    """Register a family (instance or class) by its ``name``; entry points do this for installed plugins."""
    if isinstance(family, type):
        family = family()
    if not isinstance(family, TaskFamily):
        raise TypeError(f"a task family must subclass hypermeta.TaskFamily, got {type(family).__name__}")
    for attr in ("name", "env_id", "context_space"):
        if not hasattr(family, attr):
            raise TypeError(f"task family {type(family).__name__} must define {attr!r}")
    if ":" in family.name or "," in family.name:
        raise ValueError(f"family name must not contain ':' or ',', got {family.name!r}")
    if family.name in _FAMILIES and not overwrite and type(_FAMILIES[family.name]) is not type(family):
        raise ValueError(f"a task family named {family.name!r} is already registered; pass overwrite=True")
    _FAMILIES[family.name] = family
    return family


def load_plugins(reload: bool = False) -> None:
    """Import every ``hypermeta.plugins`` entry point and register the families it provides.

    An entry point may name a ``TaskFamily`` subclass or instance, or a callable returning a list of them.
    """
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED and not reload:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if isinstance(obj, TaskFamily) or (isinstance(obj, type) and issubclass(obj, TaskFamily)):
            register_family(obj, overwrite=True)
        elif callable(obj):
            for fam in obj():
                register_family(fam, overwrite=True)
        else:
            raise TypeError(f"entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP!r} is not a family")


def families() -> dict[str, TaskFamily]:
    """All registered families by name (loads entry points on first use)."""
    load_plugins()
    return dict(_FAMILIES)


def get_family(name: str) -> TaskFamily:
    fams = families()
    if name not in fams:
        close = difflib.get_close_matches(name, list(fams), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"unknown task family {name!r}{hint} Registered families: {sorted(fams)}")
    return fams[name]


def parse_task_id(task_id: str) -> tuple[str, dict[str, float]]:
    """Split ``family:key=value,...`` into the family name and the context values it names."""
    name, _, rest = task_id.partition(":")
    context: dict[str, float] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"malformed task id {task_id!r}: expected key=value after ':', got {item!r}")
        try:
            context[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"malformed task id {task_id!r}: {key}={value!r} is not a number") from None
    return name, context


def get_task(task_id: str | Task) -> Task:
    """Resolve a family task id (``cartpole:gravity=15``) into a :class:`Task`."""
    if isinstance(task_id, Task):
        return task_id
    name, context = parse_task_id(task_id)
    return get_family(name).task(context)


def is_family_task(task_id: str) -> bool:
    return task_id.partition(":")[0] in families()


def family_of_env_id(env_id: str) -> TaskFamily | None:
    """The registered family whose ``env_id`` is this gymnasium id (e.g. ``MinAtar/Breakout-v1``), if any."""
    return next((f for f in families().values() if f.env_id == env_id), None)


def family_name(env_id: str) -> str | None:
    """The name of the family of a task id (``cartpole:gravity=12``) or of a family's gymnasium id, if any."""
    if is_family_task(env_id):
        return env_id.partition(":")[0]
    family = family_of_env_id(env_id)
    return None if family is None else family.name


def _unknown_env_error(env_id: str) -> ValueError:
    candidates = list(gym.registry) + list(families())
    close = difflib.get_close_matches(env_id, candidates, n=3, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(env_id.lower(), [c.lower() for c in candidates], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ValueError(
        f"unknown environment or task id {env_id!r}.{hint} Use a gymnasium id (e.g. CartPole-v1) or a "
        f"task id family[:key=value,...] with a family from `hypermeta families`: {sorted(families())}"
    )


def max_episode_steps() -> int:
    """The episode cap of environments without a time limit: :data:`MAX_EPISODE_STEPS_VAR` if set, else
    :data:`DEFAULT_MAX_EPISODE_STEPS`."""
    text = os.environ.get(MAX_EPISODE_STEPS_VAR)
    if text is None:
        return DEFAULT_MAX_EPISODE_STEPS
    try:
        return check_max_episode_steps(int(text))
    except ValueError:
        raise ValueError(f"{MAX_EPISODE_STEPS_VAR} must be an integer >= 1, got {text!r}: fix or unset it") from None


def check_max_episode_steps(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"max_episode_steps must be an integer >= 1, got {n!r}")
    return int(n)


def set_max_episode_steps(n: int | None) -> None:
    """Set the episode cap of environments without a time limit for this process and the worker processes it
    starts (None: back to :data:`DEFAULT_MAX_EPISODE_STEPS`). Environments with a time limit keep their own."""
    if n is None:
        os.environ.pop(MAX_EPISODE_STEPS_VAR, None)
    else:
        os.environ[MAX_EPISODE_STEPS_VAR] = str(check_max_episode_steps(n))


def has_time_limit(env: gym.Env) -> bool:
    """Whether ``env``'s episodes end by themselves after a number of steps: a ``TimeLimit`` wrapper in its
    stack or a ``max_episode_steps`` in its spec."""
    inner: Any = env
    while isinstance(inner, gym.Wrapper):
        if isinstance(inner, gym.wrappers.TimeLimit):
            return True
        inner = inner.env
    return env.spec is not None and env.spec.max_episode_steps is not None


class EpisodeCap(gym.wrappers.TimeLimit):
    """gymnasium's ``TimeLimit`` that hypermeta put on an environment without a time limit: it says so once per
    environment id (:class:`EpisodeCapWarning`), at the first reset, so an environment refused before it runs (its
    spaces) makes no noise. A capped episode ends as truncated, never as terminal: SB3's replay buffer
    (``handle_timeout_termination``) and the engine then bootstrap from its last observation."""

    def __init__(self, env: gym.Env, max_episode_steps: int, name: str) -> None:
        super().__init__(env, max_episode_steps)
        self.name = name

    def reset(self, **kwargs: Any):
        if self.name is not None:
            warned = set(filter(None, os.environ.get(_CAP_WARNED_VAR, "").split("\n")))
            if self.name not in warned:
                warnings.warn(f"{self.name} has no time limit: hypermeta ends its episodes after "
                              f"{self._max_episode_steps} steps, as truncated (--max-episode-steps N to change it)",
                              EpisodeCapWarning, stacklevel=2)
                os.environ[_CAP_WARNED_VAR] = "\n".join(sorted(warned | {self.name}))
            self.name = None
        return super().reset(**kwargs)


def cap_episodes(env: gym.Env, name: str) -> gym.Env:
    """``env`` itself when it has a time limit, else ``EpisodeCap(env, max_episode_steps())``, which warns once per
    ``name`` in this process and the worker processes it starts."""
    return env if has_time_limit(env) else EpisodeCap(env, max_episode_steps(), name)


def make_env(env_id: str | Task, **make_kwargs: Any) -> gym.Env:
    """Create an environment from a task id, a :class:`Task` or a plain gymnasium id. An environment without a
    time limit gets one (:func:`cap_episodes`), so that every episode hypermeta runs ends."""
    env = _make_env(env_id, **make_kwargs)
    return cap_episodes(env, env_id.id if isinstance(env_id, Task) else env_id)


def _make_env(env_id: str | Task, **make_kwargs: Any) -> gym.Env:
    if isinstance(env_id, Task):
        return env_id.make_env(**make_kwargs)
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env id must be a non-empty string, got {env_id!r}")
    if is_family_task(env_id):
        return get_task(env_id).make_env(**make_kwargs)
    family_name, _, rest = env_id.partition(":")
    if "=" in rest:  # looks like a family task id, but the family is unknown
        raise _unknown_env_error(family_name)
    try:
        return gym.make(env_id, **make_kwargs)
    except gym.error.Error as exc:
        if isinstance(exc, (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound,
                            gym.error.UnregisteredEnv)):
            raise _unknown_env_error(env_id) from None
        if isinstance(exc, gym.error.DeprecatedEnv):  # e.g. Taxi-v3: the message names the current version
            raise ValueError(f"cannot create {env_id!r}: {exc}") from None
        raise
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot create {env_id!r}: {exc}. Install the package that provides it.") from None


def env_factory(env_id: str | Task, **make_kwargs: Any) -> Callable[[], gym.Env]:
    """A zero-argument callable creating the environment, for SB3's ``make_vec_env``."""
    return lambda: make_env(env_id, **make_kwargs)
