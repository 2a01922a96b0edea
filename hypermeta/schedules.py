"""Schedules as Stable-Baselines3 expects them: picklable callables of *progress remaining* (1 -> 0)."""

from __future__ import annotations

import math

SHAPES = ("constant", "linear", "cosine", "exponential")

#: Rate of the normalised exponential shape: 1 - exp(-5) = 99.3% of the way after the decay window.
EXPONENTIAL_RATE = 5.0


def shape_weight(shape: str, t: float) -> float:
    """Fraction of the way from ``start`` to ``end`` after a fraction ``t`` of the decay window.

    >>> shape_weight("linear", 0.25), shape_weight("constant", 0.9), round(shape_weight("cosine", 0.5), 12)
    (0.25, 0.0, 0.5)
    >>> round(shape_weight("exponential", 1.0), 6)
    1.0
    """
    t = min(max(t, 0.0), 1.0)
    if shape == "constant":
        return 0.0
    if shape == "linear":
        return t
    if shape == "cosine":
        return (1.0 - math.cos(math.pi * t)) / 2.0
    if shape == "exponential":
        return (1.0 - math.exp(-EXPONENTIAL_RATE * t)) / (1.0 - math.exp(-EXPONENTIAL_RATE))
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


class ShapedSchedule:
    """Moves from ``start`` to ``end`` over the first ``end_fraction`` of training, then stays at ``end``.

    Like SB3's ``LinearSchedule`` it maps *progress remaining* (1 at the start of ``learn``, 0 at the
    end) to a value, so it can be assigned to ``model.lr_schedule`` or ``model.exploration_schedule``
    and pickled by ``model.save``. ``shape`` is one of ``constant``, ``linear``, ``cosine`` (half a cosine
    wave) or ``exponential`` (``1 - exp(-5 t)``, normalised to reach ``end`` exactly at ``t = 1``).

    >>> s = ShapedSchedule(1e-3, 1e-4, "linear")
    >>> s(1.0), round(s(0.5), 8), s(0.0)
    (0.001, 0.00055, 0.0001)
    >>> ShapedSchedule(1.0, 0.05, "cosine", end_fraction=0.2)(0.5)
    0.05
    """

    def __init__(self, start: float, end: float, shape: str = "linear", end_fraction: float = 1.0) -> None:
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        if not 0.0 < end_fraction <= 1.0:
            raise ValueError(f"end_fraction must be in (0, 1], got {end_fraction}")
        self.start = float(start)
        self.end = float(end)
        self.shape = shape
        self.end_fraction = float(end_fraction)

    def __call__(self, progress_remaining: float) -> float:
        w = shape_weight(self.shape, (1.0 - progress_remaining) / self.end_fraction)
        return float(self.start * (1.0 - w) + self.end * w)  # exactly start at w=0 and end at w=1

    def __repr__(self) -> str:
        return (
            f"ShapedSchedule(start={self.start}, end={self.end}, shape={self.shape!r}, "
            f"end_fraction={self.end_fraction})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShapedSchedule) and vars(self) == vars(other)


class ScaledSchedule:
    """Another schedule times a constant factor (the divergence guard cuts the lr schedule with it).

    >>> ScaledSchedule(ShapedSchedule(1e-3, 1e-4), 0.1)(1.0)
    0.0001
    """

    def __init__(self, schedule: ShapedSchedule | ScaledSchedule, factor: float) -> None:
        if not factor > 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        self.schedule, self.factor = schedule, float(factor)

    def __call__(self, progress_remaining: float) -> float:
        return self.factor * self.schedule(progress_remaining)

    def __repr__(self) -> str:
        return f"ScaledSchedule({self.schedule!r}, factor={self.factor:g})"
