"""One array checker for every public entry point: the same dtype rule, the same rule for
integers float64 cannot hold, one error type per cause."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bounds import local_bound
from analysis.conditioning import condition_numbers
from emulator.arrays import real_array
from emulator.errors import DataError, ShapeError
from emulator.linear import linear
from emulator.network import Layer, Network
from emulator.reference import exact_linear
from emulator.rounding import round_to

W = np.ones((2, 3))
NET = Network([Layer(W, None, "relu")])


@pytest.mark.parametrize("value, kwargs, error, message", [
    (np.ones(3) * 1j, {}, DataError, "v must hold real numbers, got dtype complex128"),
    (np.array(["a"]), {}, DataError, "v must hold real numbers, got dtype <U1"),
    (np.array([1, None], dtype=object), {}, DataError, "v must hold real numbers, got dtype object"),
    (np.array([2**53 + 1, 3]), {}, DataError, "v has values that float64 cannot hold exactly (first at [0]"),
    (np.array([2**63 - 1], dtype=np.uint64), {}, DataError, "float64 cannot hold exactly"),
    (np.ones((2, 2)), {"ndim": 1}, ShapeError, "v must have 1 dimension, got shape (2, 2)"),
    (np.ones((2, 0)), {"nonempty": True}, ShapeError, "v is empty (shape (2, 0))"),
    (np.array([1.0, np.inf, np.nan]), {"finite": True}, DataError, "v contains NaN or Inf (2 entries, first at [1])"),
])
def test_rules(value, kwargs, error, message):
    with pytest.raises(error) as info:
        real_array(value, "v", **kwargs)
    assert message in str(info.value)


def test_accepted_values_are_exact_float64():
    assert real_array(np.array([2**53, -7], dtype=np.int64), "v").tolist() == [2.0**53, -7.0]
    assert real_array(np.float32(0.1), "v").dtype == np.float64 and real_array(True, "v") == 1.0
    assert real_array(np.array([np.inf]), "v").tolist() == [np.inf]  # finiteness only when asked
    frozen = real_array([1.0, 2.0], "v", copy=True, readonly=True)
    assert not frozen.flags.writeable and frozen.flags.c_contiguous


ENTRY_POINTS = {
    "linear": lambda bad: linear(bad, W, None, "fp16"),
    "Layer": lambda bad: Layer(bad.reshape(1, -1), None, "relu"),
    "Network.forward": lambda bad: NET.forward(bad),
    "exact_linear": lambda bad: exact_linear(bad, W),
    "round_to": lambda bad: round_to(bad, "fp16"),
    "condition_numbers": lambda bad: condition_numbers(bad, W),
    "local_bound": lambda bad: local_bound(bad, W, None, "fp16"),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("bad, message", [
    (np.ones(3) * 1j, "must hold real numbers, got dtype complex128"),
    (np.array([2**60 + 1, 1, 1]), "has values that float64 cannot hold exactly"),
])
def test_every_entry_point_applies_the_same_rules(entry, bad, message):
    with pytest.raises(DataError) as info:
        ENTRY_POINTS[entry](bad)
    assert message in str(info.value)
