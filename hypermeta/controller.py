"""Steering lr and epsilon during training from the run's own signals (meta-learner v3).

Every control interval (:data:`CONTROL_FRACTION` of the run's steps) a run computes its signals
(:class:`RunSignals`, :data:`SIGNAL_NAMES`), a controller maps them to two offsets, and until the next control step
the run trains with

* ``lr(t)      = clip(base_lr(t) * 10 ** (LR_SPAN * u_lr), LR_RANGE)``
* ``epsilon(t) = clip(base_eps(t) + EPS_SPAN * u_eps, 0, 1)``

where ``base_lr`` and ``base_eps`` are the configuration's own schedules (best-fixed's, by default) and ``u_lr``,
``u_eps`` in ``(-1, 1)`` are the controller's smoothed outputs: ``u <- (1 - SMOOTHING) * u + SMOOTHING * target``.
Zero offsets are the base schedules exactly, so a controller whose weights are zero *is* the baseline it must beat.

Both runners compute the same signals with the same formulas: the SB3 callback (:class:`hypermeta.HyperMetaCallback`
with ``controller=``) and the batched engine (a :class:`~hypermeta.engine.runner.Job` with ``control=``); the
TD loss and Q-values come from each runner's own networks on the same stored transitions, so the two agree up to
floating-point rounding while their trajectories agree.

Signals (all float64; ``R`` are undiscounted returns of the run's completed training episodes, ``W`` =
:data:`EPISODE_WINDOW`):

===================  =============================================================================================
``progress``         steps done / steps of the run
``learning``         1 once the step count passed ``learning_starts`` (gradient steps have begun), else 0
``return_level``     ``(mean R of the last W episodes - R_random) / scale``, clipped to [-2, 2]; ``R_random`` = the
                     mean return of the episodes that ended within ``learning_starts`` (the uniform random policy;
                     the first episode's return if none did), ``scale = max(R_best - R_random, 1e-3 (1 + |R_random|))``
                     with ``R_best`` the best such mean at any control step so far
``return_trend``     change of that mean since the previous control step, over ``scale``, clipped to [-2, 2]
``length_trend``     ``log`` of the mean length of the last W episodes over its value at the previous control step,
                     clipped to [-2, 2]
``td_level``         ``log10((TD + 1e-8) / (max|r| + 1e-8))``, clipped to [-8, 4]: TD = the mean smooth-L1 TD error
                     (SB3's loss, target network, terminations only) on the last :data:`RECENT` stored transitions;
                     ``max|r|`` = the largest absolute reward seen in the run
``td_trend``         change of ``td_level`` since the previous control step, clipped to [-4, 4]
``q_ratio``          ``max|Q|`` of the online network on those transitions' observations over
                     ``max|r| / (1 - gamma)`` (the guard's bound), clipped to [0, 4]
``u_lr``, ``u_eps``  the offsets in force (the controller's own state)
===================  =============================================================================================

Then the task features (:data:`hypermeta.tasks.features.FEATURE_NAMES`), standardised with the controller's stored
means and standard deviations (the training tasks').
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

#: Share of a run's steps between two control steps (50 control steps per run).
CONTROL_FRACTION = 0.02
#: Episodes averaged in the return and length signals.
EPISODE_WINDOW = 10
#: Stored transitions whose TD error and Q-values make the TD and Q signals (the most recent ones).
RECENT = 256
#: lr = base * 10 ** (LR_SPAN * u_lr): at most 10x up or down.
LR_SPAN = 1.0
#: The search space's lr range (hypermeta.space, lr_initial): the controlled lr never leaves it.
LR_RANGE = (1e-5, 1e-2)
#: epsilon = base + EPS_SPAN * u_eps.
EPS_SPAN = 0.5
#: u <- (1 - SMOOTHING) u + SMOOTHING target: a smooth path between control steps.
SMOOTHING = 0.5

SIGNAL_NAMES = ("progress", "learning", "return_level", "return_trend", "length_trend", "td_level", "td_trend",
                "q_ratio", "u_lr", "u_eps")


# --- the schedules the runners read -----------------------------------------------------------------------------
class ControlledSchedule:
    """A base schedule moved by a controller's offset (``kind`` ``"lr"``: times ``10 ** (LR_SPAN * offset)``, kept in
    :data:`LR_RANGE` (or, where the base lies outside it, no further out than the base); ``"eps"``: plus
    ``EPS_SPAN * offset``, kept in [0, 1]). The run's :class:`RunControl` sets
    ``offset`` at every control step; SB3 calls the schedule as usual (picklable, holds no network).

    >>> s = ControlledSchedule(lambda p: 1e-3, "lr")
    >>> s(0.5), round(s.with_offset(0.5)(0.5), 12)
    (0.001, 0.00316227766)
    """

    def __init__(self, base: Callable[[float], float], kind: str, offset: float = 0.0) -> None:
        if kind not in ("lr", "eps"):
            raise ValueError(f"kind must be 'lr' or 'eps', got {kind!r}")
        self.base, self.kind, self.offset = base, kind, float(offset)

    def __call__(self, progress_remaining: float) -> float:
        value = self.base(progress_remaining)
        if self.offset == 0.0:
            return value
        if self.kind == "lr":  # kept in LR_RANGE, or where the base itself lies outside it, no further out
            low, high = min(LR_RANGE[0], value), max(LR_RANGE[1], value)
            return float(min(max(value * 10.0 ** (LR_SPAN * self.offset), low), high))
        return float(min(max(value + EPS_SPAN * self.offset, 0.0), 1.0))

    def with_offset(self, offset: float) -> ControlledSchedule:
        return ControlledSchedule(self.base, self.kind, offset)

    def __repr__(self) -> str:
        return f"ControlledSchedule({self.base!r}, kind={self.kind!r}, offset={self.offset:+.4f})"


# --- the signals ------------------------------------------------------------------------------------------------
class RunSignals:
    """One run's bookkeeping between control steps: its training episodes (fed step by step), the reward scale
    and the previous control step's values for the trends."""

    def __init__(self, total_steps: int, learning_starts: int, gamma: float) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total, self.learning_starts, self.gamma = int(total_steps), int(learning_starts), float(gamma)
        self.interval = max(1, int(round(CONTROL_FRACTION * total_steps)))
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.random_returns: list[float] = []
        self.episode_return, self.episode_length = 0.0, 0
        self.max_abs_reward = 0.0
        self.best = -math.inf
        self.previous: dict[str, float] = {}

    def on_step(self, step: int, reward: float, done: bool) -> None:
        """Step ``step`` (1-based, the run's step count after it) gave ``reward``; ``done``: its episode ended
        (terminated or truncated)."""
        self.episode_return += float(reward)
        self.episode_length += 1
        self.max_abs_reward = max(self.max_abs_reward, abs(float(reward)))
        if done:
            self.returns.append(self.episode_return)
            self.lengths.append(self.episode_length)
            if step <= self.learning_starts:
                self.random_returns.append(self.episode_return)
            self.episode_return, self.episode_length = 0.0, 0

    def due(self, step: int) -> bool:
        return step % self.interval == 0

    def compute(self, step: int, td_loss: float, q_abs_max: float, u_lr: float, u_eps: float) -> np.ndarray:
        """The signals at control step ``step`` (:data:`SIGNAL_NAMES` order), given the runner's TD loss and
        ``max|Q|`` on the last :data:`RECENT` stored transitions (NaN when nothing is stored)."""
        out = dict.fromkeys(SIGNAL_NAMES, 0.0)
        out["progress"] = min(step / self.total, 1.0)
        out["learning"] = float(step > self.learning_starts)
        out["u_lr"], out["u_eps"] = float(u_lr), float(u_eps)
        if self.returns:
            r_random = float(np.mean(self.random_returns if self.random_returns else self.returns[:1]))
            recent = float(np.mean(self.returns[-EPISODE_WINDOW:]))
            length = float(np.mean(self.lengths[-EPISODE_WINDOW:]))
            self.best = max(self.best, recent)
            scale = max(self.best - r_random, 1e-3 * (1.0 + abs(r_random)))
            out["return_level"] = _clip((recent - r_random) / scale, 2.0)
            if "recent" in self.previous:
                out["return_trend"] = _clip((recent - self.previous["recent"]) / scale, 2.0)
                out["length_trend"] = _clip(math.log(length / self.previous["length"]), 2.0)
            self.previous.update(recent=recent, length=length)
        if math.isfinite(td_loss):
            level = min(max(math.log10((td_loss + 1e-8) / (self.max_abs_reward + 1e-8)), -8.0), 4.0)
            out["td_level"] = level
            if "td" in self.previous:
                out["td_trend"] = _clip(level - self.previous["td"], 4.0)
            self.previous["td"] = level
        if math.isfinite(q_abs_max):
            bound = max(self.max_abs_reward, 1e-8) / (1.0 - self.gamma)
            out["q_ratio"] = min(max(q_abs_max / bound, 0.0), 4.0)
        return np.array([out[n] for n in SIGNAL_NAMES], dtype=np.float64)


def _clip(x: float, bound: float) -> float:
    return float(min(max(x, -bound), bound))


def recent_rows(stored: int, capacity: int, n: int = RECENT) -> np.ndarray:
    """Buffer rows of the last ``min(n, stored)`` transitions of a ring buffer of ``capacity`` rows holding
    ``stored`` transitions so far, oldest first.

    >>> recent_rows(5, 4, 3).tolist(), recent_rows(2, 8).tolist()
    ([2, 3, 0], [0, 1])
    """
    n = min(n, stored)
    return np.arange(stored - n, stored) % capacity


# --- controllers --------------------------------------------------------------------------------------------------
class Controller:
    """Base of the controllers: ``targets(x, state)`` maps the inputs of one control step (the run signals, then the
    standardised task features) to the target offsets ``(u_lr, u_eps)`` in [-1, 1]; ``state`` is a dict the run keeps
    for the controller between its control steps. ``key`` names the controller's behaviour (stored with the runs)."""

    key: str = "controller"
    uses_features: bool = False

    def targets(self, x: np.ndarray, state: dict[str, Any]) -> tuple[float, float]:
        raise NotImplementedError

    def features_input(self, features: np.ndarray | None) -> np.ndarray:
        return np.zeros(0)


@dataclass(eq=False)
class LinearController(Controller):
    """``targets = tanh(W [signals, standardised features] + b)``: the meta-learned controller. ``weights`` is
    ``[2, n_inputs + 1]`` (the last column the bias); all zeros is the base schedule exactly."""

    weights: np.ndarray
    feature_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    feature_std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float64)
        self.feature_mean = np.asarray(self.feature_mean, dtype=np.float64)
        self.feature_std = np.asarray(self.feature_std, dtype=np.float64)
        n_inputs = len(SIGNAL_NAMES) + len(self.feature_mean)
        if self.weights.shape != (2, n_inputs + 1):
            raise ValueError(f"controller weights must have shape (2, {n_inputs + 1}) for {len(SIGNAL_NAMES)} signals "
                             f"and {len(self.feature_mean)} task features, got {self.weights.shape}")
        if self.feature_std.shape != self.feature_mean.shape or (self.feature_std <= 0).any():
            raise ValueError("feature_std must be positive and shaped like feature_mean")
        self.uses_features = len(self.feature_mean) > 0

    @property
    def key(self) -> str:  # type: ignore[override]  # (computed when asked: the weights may be changed in place)
        return "linear-" + hashlib.sha1(np.concatenate([self.weights.ravel(), self.feature_mean,
                                                        self.feature_std]).tobytes()).hexdigest()[:12]

    @classmethod
    def zeros(cls, feature_mean: Sequence[float] = (), feature_std: Sequence[float] = ()) -> LinearController:
        n = len(SIGNAL_NAMES) + len(feature_mean)
        return cls(np.zeros((2, n + 1)), np.asarray(feature_mean, float), np.asarray(feature_std, float))

    def features_input(self, features: np.ndarray | None) -> np.ndarray:
        if not self.uses_features:
            return np.zeros(0)
        if features is None or len(features) != len(self.feature_mean):
            raise ValueError(f"this controller needs the {len(self.feature_mean)} task features")
        return (np.asarray(features, dtype=np.float64) - self.feature_mean) / self.feature_std

    def targets(self, x: np.ndarray, state: dict[str, Any]) -> tuple[float, float]:
        u = np.tanh(self.weights[:, :-1] @ x + self.weights[:, -1])
        return float(u[0]), float(u[1])

    def save(self, path: str | Path) -> Path:
        """``PATH.safetensors`` (weights, feature standardisation) and ``PATH.json`` (metadata)."""
        from hypermeta.files import save_arrays

        return save_arrays(path, {"weights": self.weights, "feature_mean": self.feature_mean,
                                  "feature_std": self.feature_std},
                           {"kind": "linear", "signals": list(SIGNAL_NAMES), **self.meta})

    @classmethod
    def load(cls, path: str | Path) -> LinearController:
        """Weights saved by :meth:`save` (safetensors: loading runs no code)."""
        from hypermeta.files import load_arrays

        tensors, meta = load_arrays(path, "controller weights")
        if meta.get("signals", list(SIGNAL_NAMES)) != list(SIGNAL_NAMES):
            raise ValueError(f"{path} was trained on other signals ({meta['signals']}) than this hypermeta's")
        meta.pop("kind", None)
        meta.pop("signals", None)
        return cls(tensors["weights"], tensors["feature_mean"], tensors["feature_std"], meta)


class HandRule(Controller):
    """The hand-written adaptive rule, a baseline that needs no meta-training (once gradient steps have begun):

    * lr: halved (``u_lr`` lowered by ``log10(2)``) when the TD loss more than doubled since the last control
      step or ``q_ratio`` exceeds 1 (a blow-up), and when the returns have plateaued (``|return_trend| < 0.02`` at 5
      control steps in a row while ``return_level < 0.9``; the count then restarts);
    * epsilon: raised by 0.2 of its span per control step while the returns have not moved from the random
      policy's (``return_level < 0.1``), and brought back by 0.2 per step once they have.
    """

    key = "hand-rule"

    def targets(self, x: np.ndarray, state: dict[str, Any]) -> tuple[float, float]:
        s = dict(zip(SIGNAL_NAMES, x[:len(SIGNAL_NAMES)]))
        u_lr, u_eps = state.setdefault("u_lr", 0.0), state.setdefault("u_eps", 0.0)
        if s["learning"]:
            plateau = abs(s["return_trend"]) < 0.02 and s["return_level"] < 0.9
            state["flat"] = state.get("flat", 0) + 1 if plateau else 0
            if s["td_trend"] > math.log10(2.0) or s["q_ratio"] > 1.0 or state["flat"] >= 5:
                u_lr = max(u_lr - math.log10(2.0) / LR_SPAN, -1.0)
                state["flat"] = 0 if state["flat"] >= 5 else state["flat"]
            u_eps = min(u_eps + 0.2, 1.0) if s["return_level"] < 0.1 else max(u_eps - 0.2, 0.0)
        state["u_lr"], state["u_eps"] = u_lr, u_eps
        return u_lr, u_eps


class RunControl:
    """One run under a controller: its signals, the offsets in force and the two schedules the runner reads.

    Call :meth:`on_step` after every environment step, then, when :meth:`due`, :meth:`control` with the runner's
    TD loss and ``max|Q|`` (:func:`recent_rows` names the transitions); the schedules then carry the new offsets.
    ``log`` keeps ``(step, signals, lr offset, eps offset)`` of every control step."""

    def __init__(self, controller: Controller, lr_schedule: Callable[[float], float],
                 eps_schedule: Callable[[float], float], total_steps: int, learning_starts: int, gamma: float,
                 features: np.ndarray | None = None) -> None:
        self.controller = controller
        self.signals = RunSignals(total_steps, learning_starts, gamma)
        self.features = controller.features_input(features)
        self.lr_schedule = ControlledSchedule(lr_schedule, "lr")
        self.eps_schedule = ControlledSchedule(eps_schedule, "eps")
        self.state: dict[str, Any] = {}
        self.u_lr = self.u_eps = 0.0
        self.log: list[tuple[int, np.ndarray, float, float]] = []

    def on_step(self, step: int, reward: float, done: bool) -> None:
        self.signals.on_step(step, reward, done)

    def due(self, step: int) -> bool:
        return self.signals.due(step)

    def control(self, step: int, td_loss: float, q_abs_max: float) -> tuple[float, float]:
        x = self.signals.compute(step, td_loss, q_abs_max, self.u_lr, self.u_eps)
        t_lr, t_eps = self.controller.targets(np.concatenate([x, self.features]), self.state)
        if isinstance(self.controller, HandRule):  # the rule sets its offsets itself, in steps
            self.u_lr, self.u_eps = t_lr, t_eps
        else:
            self.u_lr = (1.0 - SMOOTHING) * self.u_lr + SMOOTHING * t_lr
            self.u_eps = (1.0 - SMOOTHING) * self.u_eps + SMOOTHING * t_eps
        self.lr_schedule.offset, self.eps_schedule.offset = self.u_lr, self.u_eps
        self.log.append((step, x, self.u_lr, self.u_eps))
        return self.u_lr, self.u_eps


def smooth_l1_mean(q: np.ndarray, target: np.ndarray) -> float:
    """``F.smooth_l1_loss(q, target)`` (beta 1, mean) in float64, the TD signal of both runners."""
    d = np.abs(np.asarray(q, np.float64) - np.asarray(target, np.float64))
    return float(np.mean(np.where(d < 1.0, 0.5 * d * d, d - 0.5)))


#: The package's meta-learned controller (copied by ``hypermeta meta-eval PLAN --ship`` when meta-learner v3's
#: evaluation meets the plan's shipping rule).
SHIPPED_CONTROLLER = Path(__file__).parent / "weights" / "controller.safetensors"


def _not_shipped_reason(weights: Path) -> str:
    """Why the package holds no controller: the v3 evaluation's shipping decision, when it has been made."""
    import json

    record = weights / "v3.provenance.json"
    if not record.is_file():
        return "meta-learner v3's evaluation has not decided yet"
    missed = [name for name, c in json.loads(record.read_text())["controller"]["conditions"].items() if not c["met"]]
    return (f"meta-learner v3's evaluation missed the plan's shipping rule on {', '.join(missed)}: "
            "studies/reports/v3/report.md")


#: Controllers by name: ``rule`` (the hand-written rule) and ``zero`` (the base schedules, through the controller's
#: machinery: a check that control changes nothing by itself). ``default``: the shipped meta-learned controller.
def get_controller(name: str | Path | Controller) -> Controller:
    """A controller from a name (``rule``, ``zero``, ``default``) or a ``.safetensors`` path."""
    if isinstance(name, Controller):
        return name
    if name == "rule":
        return HandRule()
    if name == "zero":
        return LinearController.zeros()
    if name == "default":
        path = SHIPPED_CONTROLLER
        if not path.is_file():
            raise ValueError(f"no meta-learned controller is shipped ({_not_shipped_reason(path.parent)}); use "
                             "controller='rule' (the hand-written rule) or a controller's .safetensors file")
        return LinearController.load(path)
    if Path(name).suffix != ".safetensors":
        raise ValueError(f"unknown controller {str(name)!r}: use 'rule', 'default', 'zero' or a controller's "
                         ".safetensors file")
    return LinearController.load(name)
