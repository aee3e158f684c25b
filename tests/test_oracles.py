"""The shared oracles (tests/oracles.py) against what does not share their arithmetic:
every encoding of the small formats decoded by numpy / ml_dtypes, numpy's and
ml_dtypes' casts, CPython's float(Fraction) against the rounding to fp64, the published
SplitMix64 outputs and the kernels' stream."""

from __future__ import annotations

import bisect
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from emulator.formats import get_format
from emulator.rounding import stream_bits

from oracles import (
    DECODED, GOLDEN, MASK64, TAG_SUM, accumulate, component_key, dd_split, decoded_values, exact_affine, fraction,
    neighbours, rn64, rn_affine, round_fraction, splitmix, stochastic_up_linear, stochastic_up_round_to, stream,
)


@pytest.mark.parametrize("name", list(DECODED))
def test_the_grid_is_the_decoded_table(name):
    """For every pair of consecutive decoded values lo < hi (and the value after max that
    an unbounded exponent range gives): neighbours() brackets lo itself and the point a
    quarter of the way in by exactly (lo, hi), and the parity of k (which breaks ties) is
    the parity of lo's encoding."""
    vals = decoded_values(name)
    assert all(a < b for a, b in zip(vals, vals[1:]))
    top = Fraction(vals[-1]) + (Fraction(vals[-1]) - Fraction(vals[-2]))
    grid = [Fraction(v) for v in vals] + [top]
    for code, (lo, hi) in enumerate(zip(grid, grid[1:])):
        got_lo, got_hi, k = neighbours((3 * lo + hi) / 4, name)
        assert (got_lo, got_hi, k % 2) == (lo, hi, code % 2), (name, float(lo))
        assert code == 0 or neighbours(lo, name)[0] == lo, (name, float(lo))
    assert get_format(name).max == vals[-1]


@pytest.mark.parametrize("name", list(DECODED))
@pytest.mark.parametrize("mode", ["nearest", "zero", "up", "down"])
def test_rounding_against_a_table_lookup(name, mode):
    """round_fraction against rounding by bisection in the decoded table (ties to the even
    encoding), on values, midpoints, points next to them and beyond the largest value."""
    vals = decoded_values(name)
    grid = [Fraction(v) for v in vals]
    rng = np.random.default_rng(len(name))
    picks = rng.integers(0, len(vals) - 1, 400)
    points = [grid[i] + (grid[i + 1] - grid[i]) * Fraction(int(t), 8) for i, t in zip(picks, rng.integers(0, 8, 400))]
    gap = grid[-1] - grid[-2]
    points += [grid[-1] + gap * Fraction(t, 4) for t in range(1, 12)] + [Fraction(1, 2**300)]
    for a in points:
        for v in (a, -a):
            i = bisect.bisect_right(grid, a) - 1
            lo, hi = grid[i], (grid[i + 1] if i + 1 < len(grid) else grid[-1] + gap)
            ahead = {"nearest": a - lo > hi - a or (a - lo == hi - a and (i + 1) % 2 == 0), "zero": False,
                     "up": v > 0, "down": v < 0}[mode] and a != lo
            mag = hi if ahead else lo
            got = round_fraction(v, name, mode)
            if mag > grid[-1] or a >= grid[-1] + gap:  # beyond the grid: overflow, whatever the direction
                assert got.overflow and (math.isnan(got.value) or abs(got.value) >= float(grid[-1])), (name, float(v))
            else:
                assert got == (math.copysign(float(mag), v), False), (name, mode, float(v))


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2", "e4m3"])
def test_nearest_is_the_numpy_and_ml_dtypes_cast_of_float32_values(name):
    """Casts from float32 round once (float32 holds every input exactly)."""
    rng = np.random.default_rng(1)
    vals = decoded_values(name)
    x = np.concatenate([rng.standard_normal(300) * 2.0 ** rng.integers(-30, 20, 300),
                        np.array(vals[-3:]) * 1.0009, np.array(vals[1:40]) * 1.5]).astype(np.float32)
    with np.errstate(over="ignore"):
        cast = x.astype(DECODED[name][0]).astype(np.float64)
    for v, want in zip(x.astype(np.float64), cast):
        got = round_fraction(float(v), name).value
        assert got == want or (math.isnan(got) and math.isnan(want)), (name, v, got, want)


def test_overflow_rules():
    assert round_fraction(Fraction(70000), "fp16") == (math.inf, True)
    assert round_fraction(Fraction(-70000), "fp16", saturate=True) == (-65504.0, True)
    assert round_fraction(Fraction(70000), "fp16", "zero") == (65504.0, True)
    assert round_fraction(Fraction(65510), "fp16", "zero") == (65504.0, False)  # RZ of 65510 is 65504: no overflow
    assert round_fraction(Fraction(-65510), "fp16", "up") == (-65504.0, False)
    assert round_fraction(Fraction(-65510), "fp16", "down") == (-math.inf, True)
    assert math.isnan(round_fraction(Fraction(465), "fp8-e4m3fn").value)
    assert round_fraction(Fraction(464), "fp8-e4m3fn") == (448.0, False)  # the tie goes to 448's even encoding
    assert round_fraction(Fraction(7), "fp4-e2m1") == (6.0, True)  # the tie goes to 8: saturated
    assert round_fraction(math.inf, "fp8-e4m3fn", saturate=True) == (448.0, True)
    assert math.isnan(round_fraction(math.nan, "fp16").value)


def test_zero_signs_and_flush_to_zero():
    assert math.copysign(1, round_fraction(-0.0, "fp16").value) == -1
    assert math.copysign(1, round_fraction(Fraction(0), "fp16", zero_sign=-1.0).value) == -1
    assert round_fraction(Fraction(-1, 2**30), "fp16", "zero").value == 0 and \
        math.copysign(1, round_fraction(Fraction(-1, 2**30), "fp16", "zero").value) == -1
    assert round_fraction(Fraction(1, 2**15), "fp16").value == 2.0**-15
    assert round_fraction(Fraction(1, 2**15), "fp16", subnormals=False).value == 0.0
    assert round_fraction(Fraction(1, 2**14), "fp16", subnormals=False).value == 2.0**-14


@pytest.mark.parametrize("rule, below, above", [
    (stochastic_up_linear, (2**52 - 1) << 11 | 2047, 2**52 << 11),  # f = 1/2 > K 2^-53 iff K < 2^52
    (stochastic_up_round_to, 2**63 - 1, 2**63),  # rbits < floor(2^63)
])
def test_stochastic_rules_at_one_half(rule, below, above):
    assert rule(Fraction(1, 2), below) and not rule(Fraction(1, 2), above)
    assert not rule(Fraction(0), 0) and rule(Fraction(1, 2**60), 0)


def test_stochastic_rules_differ_below_their_resolution():
    """round_to compares 64 bits (P(up) = floor(f 2^64) 2^-64), the accumulation the top 53
    (P(up) = ceil(f 2^53) 2^-53): f = 2^-70 never goes up in the first, always with zero bits."""
    assert not stochastic_up_round_to(Fraction(1, 2**70), 0) and stochastic_up_linear(Fraction(1, 2**70), 0)
    assert not stochastic_up_linear(Fraction(1, 2**70), 1 << 11)


def test_splitmix_is_the_published_generator_and_the_kernels_stream():
    """SplitMix64 seeded with 0 gives e220a8397b1dcdaf, 6e789e6aa1b965f4, 06c45d188009454f
    (Vigna's reference splitmix64.c); the kernels' stream_bits gives the same words."""
    assert [stream(0, i) for i in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    rng = np.random.default_rng(5)
    for key in [0, 1, MASK64, GOLDEN, *map(int, rng.integers(0, 2**63, 20, dtype=np.int64))]:
        for counter in (0, 1, 7, TAG_SUM | (3 << 28) | 9, 2**62):
            assert stream(key, counter) == int(stream_bits(np.uint64(key), np.int64(counter))), (key, counter)
    assert component_key(None, 2, 3) == component_key(0, 2, 3) == stream(stream(splitmix(0), 2), 3)
    assert component_key(-2, 0, 0) == stream(stream(splitmix(MASK64 - 1), 0), 0)


def test_rn64_is_the_rounding_to_fp64():
    rng = np.random.default_rng(9)
    top = Fraction(get_format("fp64").max)
    half_ulp = Fraction(2) ** 970
    qs = [Fraction(int(n), int(d)) * Fraction(2) ** int(e) for n, d, e in
          zip(rng.integers(1, 2**62, 300), rng.integers(1, 2**62, 300), rng.integers(-1150, 1000, 300))]
    qs += [top, top + half_ulp - Fraction(1, 2**2000), top + half_ulp, Fraction(3, 2**1075), Fraction(1, 2**1075),
           Fraction(1, 2**1076), 1 + Fraction(1, 2**53), 1 + Fraction(3, 2**53)]
    for q in qs:
        for v in (q, -q):
            assert rn64(v) == round_fraction(v, "fp64").value, float(v)
    assert rn64(top + half_ulp) == math.inf and rn64(-top - half_ulp) == -math.inf


def test_exact_values():
    assert fraction(mpmath.mpf(0.1)) == Fraction(0.1) and fraction(np.float32(0.1)) == Fraction(float(np.float32(0.1)))
    with mpmath.workprec(200):
        third = mpmath.mpf(1) / 3
        q = fraction(third)
        assert mpmath.mpf(q.numerator) / q.denominator == third and abs(q - Fraction(1, 3)) < Fraction(1, 2**200)
    W, x, b = np.array([[0.1, 2.0**-600], [1e300, -1e300]]), np.array([3.0, 2.0**-600]), np.array([0.5, 1.0])
    assert exact_affine(W, x, b) == [Fraction(0.1) * 3 + Fraction(2) ** -1200 + Fraction(1, 2),
                                     Fraction(1e300) * 3 - Fraction(1e300) * Fraction(2) ** -600 + 1]
    assert rn_affine(x, W, b).tolist() == [rn64(q) for q in exact_affine(W, x, b)]
    assert rn_affine(np.vstack([x, x]), W, b).shape == (2, 2)
    q = Fraction(1, 3)
    h, l = dd_split(q)
    assert h == 1 / 3 and abs(Fraction(h) + Fraction(l) - q) <= Fraction(1, 2**107)
    assert accumulate([1.0, 2.0**-60], [1.0, 1.0], None, "exact").value == 1.0
