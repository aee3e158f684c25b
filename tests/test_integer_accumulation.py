"""Integer registers of a fixed width (docs/method.md#accumulator-sizing): wrap-around and
saturation against a Python-int oracle that adds term by term."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.errors import FormatSpecError, ShapeError
from emulator.integer_accumulation import integer_linear


def _oracle(x, w, b, bits: int, mode: str) -> tuple[int, bool]:
    """One component: s = b, then s + w_j x_j for each j, each result reduced or clamped."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    s, out = int(b), False

    def fix(v: int) -> int:
        nonlocal out
        if lo <= v <= hi:
            return v
        out = True
        return max(lo, min(hi, v)) if mode == "saturate" else (v - lo) % (1 << bits) + lo

    s = fix(s)
    for wj, xj in zip(w, x):
        s = fix(s + int(wj) * int(xj))
    return s, out


@pytest.mark.parametrize("mode", ["wrap", "saturate"])
@pytest.mark.parametrize("bits", [4, 7, 12, 16])
def test_integer_linear_matches_the_term_by_term_oracle(mode, bits):
    rng = np.random.default_rng(bits)
    scale = 2 ** ((bits - 1) // 2)  # sums of 9 products reach the register's range on some rows only
    x = rng.integers(-scale, scale + 1, (40, 9))
    w = rng.integers(-scale, scale + 1, (7, 9))
    b = rng.integers(-2 ** (bits - 3), 2 ** (bits - 3), 7)
    y, overflow = integer_linear(x, w, b, bits, mode)
    for r in range(x.shape[0]):
        for i in range(w.shape[0]):
            assert (int(y[r, i]), bool(overflow[r, i])) == _oracle(x[r], w[i], b[i], bits, mode)
    exact = x @ w.T + b
    np.testing.assert_array_equal(y[~overflow], exact[~overflow])
    assert overflow.any() and (~overflow).any()
    if mode == "wrap":
        span = 1 << bits
        np.testing.assert_array_equal((y - exact) % span, 0)


def test_a_register_that_holds_every_partial_sum_is_exact():
    rng = np.random.default_rng(1)
    x, w = rng.integers(-127, 128, (30, 50)), rng.integers(-127, 128, (5, 50))
    reach = np.abs(w) @ np.full(50, 127)
    bits = int(reach.max()).bit_length() + 1
    for mode in ("wrap", "saturate"):
        y, overflow = integer_linear(x, w, None, bits, mode)
        assert not overflow.any()
        np.testing.assert_array_equal(y, x @ w.T)


@pytest.mark.parametrize("args, exc, fragment", [
    ((np.zeros((1, 2), int), np.zeros((1, 2), int), None, 1, "wrap"), FormatSpecError, "bits == 1"),
    ((np.zeros((1, 2), int), np.zeros((1, 2), int), None, 8, "clip"), FormatSpecError, "Unknown integer overflow"),
    ((np.zeros((1, 2)), np.zeros((1, 2), int), None, 8, "wrap"), ShapeError, "integer array"),
    ((np.zeros((1, 3), int), np.zeros((1, 2), int), None, 8, "wrap"), ShapeError, "do not fit"),
    ((np.full((1, 2), 2**40), np.full((1, 2), 2**40), None, 8, "wrap"), ShapeError, "headroom"),
])
def test_refusals(args, exc, fragment):
    with pytest.raises(exc, match=fragment):
        integer_linear(*args)
