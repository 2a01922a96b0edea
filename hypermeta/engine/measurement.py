"""What a study trial and a test run measure: learning curves and normalised scores.

Normalised score of a return ``R`` on a task: ``(R - R_random) / (R_reference - R_random)``, where

* ``R_random`` is the mean return of the uniform random policy over :data:`RANDOM_EPISODES` episodes
  (environment and action sampler seeded with :data:`RANDOM_SEED`), computed on first use per task;
* ``R_reference`` is the family's ``reference_return`` (for the built-in families and plain gymnasium
  ids: the environment spec's ``reward_threshold``, the score at which gymnasium calls the task solved:
  CartPole 475, Acrobot -100, MountainCar -110, LunarLander 200), or a value given explicitly.

0 is the random policy, 1 is "solved"; scores above 1 are possible (CartPole caps at 500).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from hypermeta.engine.defaults import EVAL_EPISODES, N_EVALS
from hypermeta.guard import DivergenceError  # noqa: F401  # re-exported: runs fail with it
from hypermeta.seeds import RANDOM_SEED
from hypermeta.tasks.families import family_of_env_id, get_task, is_family_task, make_env

RANDOM_EPISODES = 100


@lru_cache(maxsize=None)
def random_return(task_id: str) -> float:
    """Mean return of the uniform random policy (see the module docstring)."""
    env = make_env(task_id)
    env.action_space.seed(RANDOM_SEED)
    returns = []
    for episode in range(RANDOM_EPISODES):
        env.reset(seed=RANDOM_SEED if episode == 0 else None)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def reference_return(task_id: str) -> float:
    """The return that counts as 1.0: the family's ``reference_return`` or the spec's ``reward_threshold``."""
    family = get_task(task_id).family if is_family_task(task_id) else family_of_env_id(task_id)
    ref = getattr(family, "reference_return", None)
    if ref is not None:
        return float(ref)
    env = make_env(task_id)
    ref = env.spec.reward_threshold if env.spec is not None else None
    env.close()
    if ref is None:
        raise ValueError(
            f"no reference return for {task_id!r}: its spec has no reward_threshold. Pass one explicitly "
            "(--reference R on the command line, reference=R in Python)."
        )
    return float(ref)


def check_task(task_id: str, reference: float | None = None) -> None:
    """Refuse, in one line and before anything is written or trained, a task id that makes no environment, an
    environment hypermeta cannot train on (its spaces), and a task that has no reference return when
    ``reference`` is None."""
    from hypermeta.tasks.features import check_spaces

    env = make_env(task_id)
    try:
        check_spaces(env)
    finally:
        env.close()
    if reference is None:
        reference_return(task_id)


@dataclass(frozen=True)
class Normalizer:
    """Maps returns of one task to normalised scores."""

    task: str
    random: float
    reference: float

    def __post_init__(self) -> None:
        if not self.reference > self.random:
            raise ValueError(
                f"reference return ({self.reference}) must exceed the random policy's ({self.random}) for {self.task!r}"
            )

    @classmethod
    def for_task(cls, task_id: str, reference: float | None = None) -> Normalizer:
        return cls(task_id, random_return(task_id), reference_return(task_id) if reference is None else reference)

    def __call__(self, returns: float | np.ndarray) -> float | np.ndarray:
        return (np.asarray(returns, dtype=np.float64) - self.random) / (self.reference - self.random)


def check_timesteps(timesteps: int) -> int:
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or timesteps <= 0:
        raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
    return int(timesteps)


@dataclass(frozen=True)
class Measurement:
    """How one training run is measured: ``timesteps`` of training, ``n_evals`` evenly spaced greedy
    evaluations of ``eval_episodes`` episodes each.

    >>> Measurement(10_000).eval_steps
    [2000, 4000, 6000, 8000, 10000]
    """

    timesteps: int
    n_evals: int = N_EVALS
    eval_episodes: int = EVAL_EPISODES

    def __post_init__(self) -> None:
        check_timesteps(self.timesteps)
        if self.n_evals < 1 or self.eval_episodes < 1:
            raise ValueError(f"n_evals and eval_episodes must be >= 1, got {self.n_evals}, {self.eval_episodes}")
        if self.timesteps < self.n_evals:
            raise ValueError(f"timesteps ({self.timesteps}) must be >= n_evals ({self.n_evals})")

    @property
    def eval_steps(self) -> list[int]:
        return [round(self.timesteps * (k + 1) / self.n_evals) for k in range(self.n_evals)]


@dataclass
class Curve:
    """One training run: mean evaluation return at each evaluation step."""

    steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    env_steps: int = 0
    #: a steered run's control steps, ``(step, u_lr, u_eps)``: the offsets in force from that step on (engine runs)
    control: list[tuple[int, float, float]] = field(default_factory=list)

    def auc(self, normalizer: Normalizer) -> float:
        """Normalised area under the curve: the mean normalised score over the (evenly spaced) evaluations."""
        return float(np.mean(normalizer(np.array(self.returns))))
