from __future__ import annotations

import pickle

import cloudpickle
import numpy as np
import pytest

from hypermeta import ShapedSchedule
from hypermeta.schedules import SHAPES


@pytest.mark.parametrize("shape", SHAPES)
def test_endpoints_and_monotone(shape):
    s = ShapedSchedule(1.0, 0.1, shape, end_fraction=0.5)
    assert s(1.0) == pytest.approx(1.0)
    values = [s(p) for p in np.linspace(1.0, 0.0, 101)]
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:])), "a decaying schedule must never rise"
    if shape == "constant":
        assert values[-1] == pytest.approx(1.0)
    else:
        assert s(0.5) == pytest.approx(0.1) and s(0.0) == pytest.approx(0.1)


def test_shapes_differ_midway():
    mids = {shape: ShapedSchedule(1.0, 0.0, shape)(0.7) for shape in SHAPES}
    assert mids["constant"] == 1.0
    assert mids["linear"] == pytest.approx(0.7)
    assert mids["cosine"] > mids["linear"] > mids["exponential"]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_picklable_with_repr(dumps):
    s = ShapedSchedule(3e-4, 3e-5, "cosine", 0.8)
    assert pickle.loads(dumps(s)) == s
    assert repr(s) == "ShapedSchedule(start=0.0003, end=3e-05, shape='cosine', end_fraction=0.8)"


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="shape must be one of"):
        ShapedSchedule(1.0, 0.0, "step")
    with pytest.raises(ValueError, match="end_fraction must be in"):
        ShapedSchedule(1.0, 0.0, "linear", end_fraction=0.0)
