"""round_to and round_scalar against exact oracles written here, bit for bit.

Two oracles, both independent of the kernel:

* ``oracles.round_fraction`` rounds a ``Fraction`` from the definition of the format (find
  the binade, the quantum 2^(e-p+1), the two neighbours, pick one by the mode's rule, then
  the overflow and flush-to-zero rules); slow, used on thousands of points;
* ``fast_round`` rounds float64 arrays with integer arithmetic on ``frexp``'s significand
  (``divmod`` by the quantum), vectorised with numpy; it is held against ``round_fraction``
  and then used on 10^6 points per format.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from emulator.errors import FormatSpecError, MixaccError, UnknownNameError
from emulator.formats import get_format
from emulator.rounding import ROUNDING_MODES, kernel_params, round_scalar, round_to

from oracles import quantum, round_fraction, stochastic_up_round_to

DIRECTED = ("nearest", "zero", "up", "down")
MODE_CODE = {m.name: m.code for m in ROUNDING_MODES.rows()}
HEADLINE = ("fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2", "e4m3")
SMALL = ("fp8-e4m3fn", "fp8-e5m2", "fp16", "bf16", "fp6-e2m3", "fp6-e3m2", "fp4-e2m1", "e4m3", "e3m4", "e2m1",
         "e5m2")
WIDE = ("fp32", "tf32", "fp64", "e8m7", "e5m10", "e11m10", "e11m51", "e3m1", "e6m20")
ALL = SMALL + WIDE


# ---------------------------------------------------------------- the vectorised oracle

@np.errstate(over="ignore")
def fast_round(x, fmt, mode: str = "nearest", *, saturate: bool = False, subnormals: bool = True,
               neighbours: bool = False):
    """Vectorised exact rounding of float64 ``x`` by integer division of frexp's
    significand; with ``neighbours`` returns the signed (toward-zero, away-from-zero)
    neighbours instead (both equal x when x is representable)."""
    f = get_format(fmt)
    x = np.asarray(x, dtype=np.float64)
    m, E = np.frexp(np.abs(x))  # |x| = m 2^E, 1/2 <= m < 1
    E = E.astype(np.int64)  # frexp gives int32; shifts below must be int64 under every numpy's promotion rules
    M = np.ldexp(np.where(np.isfinite(x), m, 0.0), 53).astype(np.int64)  # |x| = M 2^(E-53), M < 2^53
    qe = np.maximum(E - 1, f.emin) - f.p + 1  # exponent of the quantum
    k = qe - (E - 53)
    far = k > 60  # then M < 2^53 < quantum / 2^7
    quantum = np.left_shift(np.int64(1), np.minimum(k, 60))
    n, r = np.divmod(M, quantum)
    n, r = np.where(far, 0, n), np.where(far, M, r)
    twice = 2 * r
    above_half = ~far & (twice > quantum)
    at_half = ~far & (twice == quantum)
    neg = np.signbit(x)
    if neighbours:
        lo = np.copysign(np.ldexp(n.astype(np.float64), qe), x)
        hi = np.copysign(np.ldexp((n + (r != 0)).astype(np.float64), qe), x)
        return np.where(np.isfinite(x), lo, x), np.where(np.isfinite(x), hi, x)
    if mode == "nearest":
        up = above_half | (at_half & (n % 2 == 1))
    elif mode == "zero":
        up = np.zeros_like(neg)
    else:
        up = (r != 0) & (~neg if mode == "up" else neg)
    mag = np.ldexp((n + up).astype(np.float64), qe)
    over = mag > f.max
    toward_zero = (mode == "zero") | ((mode == "up") & neg) | ((mode == "down") & ~neg)
    if saturate or f.specials == "finite":
        overflow_value = f.max
    else:
        overflow_value = np.inf if f.has_inf else np.nan
    mag = np.where(over, np.where(toward_zero, f.max, overflow_value), mag)
    if not subnormals:
        mag = np.where(mag < f.min_normal, 0.0, mag)
    mag = np.where(np.isinf(x), overflow_value, mag)
    out = np.where(neg, -mag, mag)
    return np.where(np.isnan(x), x, out)


def same(a, b) -> bool:
    """Bitwise equality of float64 arrays, all NaNs alike (signed zeros distinguished)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    return a.shape == b.shape and bool(np.array_equal(nan_a, nan_b)) and bool(
        np.array_equal(a.view(np.int64)[~nan_a], b.view(np.int64)[~nan_b]))


def first_mismatch(x, got, want) -> str:
    bad = ~((got.view(np.int64) == want.view(np.int64)) | (np.isnan(got) & np.isnan(want)))
    i = int(np.flatnonzero(bad)[0])
    return (f"{int(bad.sum())} mismatches; first x={x.flat[i]!r} ({float(x.flat[i]).hex()}): "
            f"got {got.flat[i]!r}, want {want.flat[i]!r}")


def random_doubles(fmt, n: int, seed: int) -> np.ndarray:
    """n doubles spanning the format's subnormals to beyond its overflow threshold: 3/4
    with uniform random exponent and significand bits, 1/4 at or one float64 ulp from
    the format's midpoints (ties)."""
    f = get_format(fmt)
    rng = np.random.default_rng(seed)
    n_ties = n // 4 if f.p <= 52 else 0
    n_rand = n - n_ties
    lo, hi = max(f.emin - f.p - 3, -1075), min(f.emax + 3, 1023)
    E = rng.integers(lo, hi + 1, n_rand)
    mant = rng.integers(0, 2**52, n_rand, dtype=np.int64)
    bits = np.where(E >= -1022, ((E + 1023) << 52) | mant, mant >> np.minimum(-1022 - E, 63))
    vals = bits.view(np.float64)
    qe = rng.integers(f.emin - f.p + 1, f.emax - f.p + 2, n_ties)
    sig = rng.integers(0, 2 ** min(f.p, 52), n_ties, dtype=np.int64)
    ties = np.ldexp((2 * sig + 1).astype(np.float64), qe - 1)
    nudge = rng.integers(-1, 2, n_ties)
    ties = np.where(nudge > 0, np.nextafter(ties, np.inf), np.where(nudge < 0, np.nextafter(ties, 0), ties))
    out = np.concatenate([vals, ties])
    return np.where(rng.random(n) < 0.5, -out, out)


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 2.2250738585072014e-308,
                     1.7976931348623157e308, -1.7976931348623157e308, 1.0, -1.0])


@njit(cache=True)
def _round_with_sigma(xs, sigmas, params, mode, rbits):
    out = np.empty_like(xs)
    for i in range(xs.size):
        out[i] = round_scalar(xs[i], sigmas[i], params, mode, rbits[i])
    return out


def round_sigma(xs, sigmas, fmt, mode, *, saturate=False, subnormals=True, rbits=None):
    xs = np.asarray(xs, dtype=np.float64)
    rb = np.zeros(xs.size, dtype=np.uint64) if rbits is None else np.asarray(rbits, dtype=np.uint64)
    params = kernel_params(get_format(fmt), saturate, subnormals)
    return _round_with_sigma(xs, np.asarray(sigmas, dtype=np.int64), params, MODE_CODE[mode], rb)


def all_values(fmt) -> np.ndarray:
    """Every encoding's value (Format.decode, held against ml_dtypes and IEEE in test_formats)."""
    f = get_format(fmt)
    return f.decode(np.arange(2**f.bits))


# ---------------------------------------------------------------- the oracles agree

@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2", "fp4-e2m1", "fp6-e3m2", "e3m4", "fp64",
                                 "e11m10", "tf32"])
@pytest.mark.parametrize("mode", DIRECTED)
def test_fast_oracle_matches_fraction_oracle(fmt, mode):
    x = np.concatenate([random_doubles(fmt, 1500, seed=7), SPECIALS[np.isfinite(SPECIALS)]])
    want = np.array([round_fraction(float(v), fmt, mode).value for v in x])
    assert same(fast_round(x, fmt, mode), want), first_mismatch(x, fast_round(x, fmt, mode), want)
    sat = np.array([round_fraction(float(v), fmt, mode, saturate=True, subnormals=False).value for v in x])
    assert same(fast_round(x, fmt, mode, saturate=True, subnormals=False), sat)


# ---------------------------------------------------------------- every encoding

@pytest.mark.parametrize("fmt", SMALL)
@pytest.mark.parametrize("mode", DIRECTED + ("stochastic",))
def test_every_encoding_round_trips(fmt, mode):
    v = all_values(fmt)
    got = round_to(v, fmt, mode, rng=0)
    assert same(got, v), first_mismatch(v, got, v)


@pytest.mark.parametrize("fmt", SMALL)
def test_every_midpoint_rounds_to_even_and_neighbours_away(fmt):
    f = get_format(fmt)
    codes = np.arange(2 ** (f.bits - 1))  # non-negative encodings, in increasing order of value
    v = f.decode(codes)
    ok = np.isfinite(v)
    codes, v = codes[ok], v[ok]
    assert np.all(np.diff(v) > 0)
    mid = (v[:-1] + v[1:]) / 2  # exact: p <= 24 here
    even = np.where(codes[:-1] % 2 == 0, v[:-1], v[1:])
    for sign in (1.0, -1.0):
        assert same(round_to(sign * mid, fmt), sign * even)
        assert same(round_to(sign * np.nextafter(mid, np.inf), fmt), sign * v[1:])
        assert same(round_to(sign * np.nextafter(mid, 0), fmt), sign * v[:-1])
    directed = {"zero": (v[:-1], -v[:-1]), "up": (v[1:], -v[:-1]), "down": (v[:-1], -v[1:])}
    for mode, (positive, negative) in directed.items():
        for x in (mid, np.nextafter(mid, 0), np.nextafter(mid, np.inf)):
            assert same(round_to(x, fmt, mode), positive), mode
            assert same(round_to(-x, fmt, mode), negative), mode


@pytest.mark.parametrize("fmt", SMALL + ("fp32", "tf32", "e8m7"))
def test_beyond_the_largest_value(fmt):
    """max + half an ulp is a tie that goes up (odd max, ieee) or to max (fn's max is even)."""
    f = get_format(fmt)
    half_ulp = math.ldexp(1.0, f.emax - f.p)
    tie = f.max + half_ulp
    overflow = f.max if f.specials == "finite" else (math.inf if f.has_inf else math.nan)
    want_tie = f.max if f.specials == "fn" or f.specials == "finite" else overflow
    assert same(round_to(tie, fmt), want_tie)
    assert same(round_to(np.nextafter(tie, 0), fmt), f.max)
    assert same(round_to(np.nextafter(tie, np.inf), fmt), overflow)
    assert same(round_to(-np.nextafter(tie, np.inf), fmt), -overflow)
    assert same(round_to(np.nextafter(tie, np.inf), fmt, saturate=True), f.max)


# ---------------------------------------------------------------- 10^6 random doubles

@pytest.mark.parametrize("fmt", HEADLINE)
@pytest.mark.parametrize("mode", DIRECTED)
def test_a_million_random_doubles_match_the_oracle(fmt, mode):
    x = np.concatenate([random_doubles(fmt, 10**6, seed=sum(map(ord, fmt + mode))), SPECIALS])
    got, want = round_to(x, fmt, mode), fast_round(x, fmt, mode)
    assert same(got, want), first_mismatch(x, got, want)


@pytest.mark.parametrize("fmt", ALL)
@pytest.mark.parametrize("mode", DIRECTED)
@pytest.mark.parametrize("saturate, subnormals", [(False, True), (True, True), (False, False), (True, False)])
def test_every_format_mode_and_option_matches_the_oracle(fmt, mode, saturate, subnormals):
    x = np.concatenate([random_doubles(fmt, 2 * 10**4, seed=11), SPECIALS])
    got = round_to(x, fmt, mode, saturate=saturate, subnormals=subnormals)
    want = fast_round(x, fmt, mode, saturate=saturate, subnormals=subnormals)
    assert same(got, want), first_mismatch(x, got, want)


# ---------------------------------------------------------------- float32 inputs vs ml_dtypes

ML_DTYPES = {
    "fp8-e4m3fn": ml_dtypes.float8_e4m3fn, "fp8-e5m2": ml_dtypes.float8_e5m2, "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16, "e4m3": ml_dtypes.float8_e4m3, "e3m4": ml_dtypes.float8_e3m4,
    "fp6-e2m3": ml_dtypes.float6_e2m3fn, "fp6-e3m2": ml_dtypes.float6_e3m2fn, "fp4-e2m1": ml_dtypes.float4_e2m1fn,
}


@pytest.mark.parametrize("fmt", list(ML_DTYPES))
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_float32_inputs_agree_with_ml_dtypes(fmt):
    rng = np.random.default_rng(3)
    f = get_format(fmt)
    x32 = rng.integers(0, 2**32, 10**6, dtype=np.uint64).astype(np.uint32).view(np.float32)
    v = all_values(fmt)  # and every midpoint of the format, nudged by one float32 ulp each way
    v = v[np.isfinite(v)]
    mids = np.unique(((v[:-1] + np.diff(np.sort(v)) / 2)).astype(np.float32))
    near = rng.normal(0, 4 * f.max, 10**5).astype(np.float32)
    x32 = np.concatenate([x32, mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
                          near, SPECIALS.astype(np.float32)])
    if f.specials == "finite":  # ml_dtypes maps NaN to a finite value in formats without NaN
        x32 = x32[~np.isnan(x32)]
    want = x32.astype(ML_DTYPES[fmt]).astype(np.float64)
    got = round_to(x32.astype(np.float64), fmt)
    assert same(got, want), first_mismatch(x32, got, want)


# ---------------------------------------------------------------- pitfalls of published emulators

@pytest.mark.parametrize("fmt", [name for name in ALL if get_format(name).emax + 2 <= 1024])  # 2^(emax+1) is a float64
@pytest.mark.parametrize("mode", DIRECTED + ("stochastic",))
def test_values_just_above_the_range_overflow_not_vanish(fmt, mode):
    f = get_format(fmt)
    x = np.array([math.ldexp(1.0, f.emax + 1), math.ldexp(1.5, f.emax + 1),
                  np.nextafter(math.ldexp(1.0, f.emax + 2), 0)])
    x = np.concatenate([x, -x])
    got = round_to(x, fmt, mode, rng=1)
    toward_zero = {"zero": [True] * 6, "up": [False] * 3 + [True] * 3, "down": [True] * 3 + [False] * 3}
    overflow = f.max if f.specials == "finite" else (math.inf if f.has_inf else math.nan)
    want = np.array([f.max if tz else overflow for tz in toward_zero.get(mode, [False] * 6)]) * np.sign(x)
    assert same(got, want)
    assert same(round_to(x, fmt, mode, saturate=True, rng=1), f.max * np.sign(x))


@pytest.mark.parametrize("fmt", ALL)
def test_round_down_just_below_a_power_of_two(fmt):
    """The predecessor of 2^k lies in the binade below: 2^k - 2^(k-p), not 2^k - 2^(k-p+1)."""
    f = get_format(fmt)
    ks = np.arange(f.emin + 1, f.emax + 1)
    powers = np.ldexp(1.0, ks)
    pred = powers - np.ldexp(1.0, ks - f.p)
    just_below = np.nextafter(powers, 0)
    for mode, sign in (("down", 1.0), ("zero", 1.0), ("up", -1.0), ("zero", -1.0)):
        got = round_to(sign * just_below, fmt, mode)
        assert same(got, sign * pred), first_mismatch(sign * just_below, got, sign * pred)
        # the same exact value given as (2^k, sigma = -sign) to round_scalar
        assert same(round_sigma(sign * powers, np.full(ks.size, -int(sign)), fmt, mode), sign * pred)


@pytest.mark.parametrize("fmt, x, want", [
    ("fp16", 1 + 2.0**-11, 1.0), ("fp16", 1 + 3 * 2.0**-11, 1 + 2.0**-9), ("fp16", 2049.0, 2048.0),
    ("fp16", 2051.0, 2052.0), ("fp16", -2049.0, -2048.0), ("bf16", 1 + 2.0**-8, 1.0), ("bf16", 257.0, 256.0),
    ("bf16", 259.0, 260.0), ("fp8-e4m3fn", 464.0, 448.0), ("fp8-e4m3fn", 17.0, 16.0), ("fp8-e4m3fn", 19.0, 20.0),
    ("fp8-e5m2", 2.25, 2.0), ("fp8-e5m2", 2.75, 3.0), ("fp8-e5m2", 3.75, 4.0), ("fp8-e5m2", 61440.0, math.inf),
    ("e4m3", 248.0, math.inf),
    ("fp16", 2.0**-25, 0.0), ("fp16", 3 * 2.0**-25, 2.0**-23), ("fp4-e2m1", 0.25, 0.0), ("fp4-e2m1", 2.5, 2.0),
    ("fp4-e2m1", 5.0, 4.0), ("fp4-e2m1", 7.0, 6.0), ("fp32", 1 + 2.0**-24, 1.0), ("tf32", 1 + 2.0**-11, 1.0),
])
def test_ties_go_to_even_not_away(fmt, x, want):
    assert same(round_to(x, fmt), want)
    assert same(round_to(-x, fmt), -want)


def test_no_float32_detour():
    """One rounding from float64: 222.5 + 2^-20 lies above a bf16 midpoint; through
    float32 it would become the midpoint itself and go to the even 222."""
    x = 222.5 + 2.0**-20
    assert round_to(x, "bf16") == 223.0 == round_fraction(Fraction(x), get_format("bf16")).value
    assert round_to(round_to(x, "fp32"), "bf16") == 222.0  # what the float32 detour gives: a tie, then even
    assert round_to(1 + 2.0**-8 + 2.0**-40, "bf16") == 1 + 2.0**-7
    assert round_to(1 + 2.0**-11 + 2.0**-40, "fp16") == 1 + 2.0**-10
    assert round_to(1 + 2.0**-4 + 2.0**-40, "fp8-e4m3fn") == 1 + 2.0**-3


def test_the_e4m3fn_nan_pattern_is_never_480():
    f = get_format("fp8-e4m3fn")
    assert np.isnan(f.decode(0x7F)) and f.decode(0x7E) == 448.0
    assert not np.any(round_to(np.linspace(-1000, 1000, 20001), f, "nearest") == 480.0)
    for x in (465.0, 470.0, 480.0, 481.0, 1e6, math.inf):
        assert np.isnan(round_to(x, f)) and np.isnan(round_to(-x, f))
        assert round_to(x, f, saturate=True) == 448.0
    assert round_to(500.0, f, "zero") == 448.0 and round_to(-500.0, f, "up") == -448.0
    assert np.isnan(round_to(449.0, f, "up")) and round_to(449.0, f, "down") == 448.0


@pytest.mark.parametrize("fmt, x", [
    ("bf16", 1e-40), ("bf16", 9.2e-41), ("bf16", 4.6e-41), ("bf16", 5e-41), ("e8m7", 1e-40), ("fp32", 1e-45),
    ("fp32", 1e-40), ("fp64", 5e-324), ("fp64", 1e-310), ("e11m10", 1e-310), ("e11m10", 3e-316), ("e11m51", 1.5e-323),
])
def test_no_floor_on_tiny_magnitudes(fmt, x):
    for mode in DIRECTED:
        for v in (x, -x):
            assert same(round_to(v, fmt, mode), round_fraction(v, fmt, mode).value)
    assert round_to(x, fmt, "up") > 0.0


def test_tiny_values_pinned():
    assert round_to(1e-40, "bf16") == 2.0**-133  # 1e-40 = 1.089 x 2^-133, bf16's smallest subnormal
    assert round_to(1.4e-40, "bf16") == 2.0**-132
    assert round_to(1e-40, "bf16", "zero") == 2.0**-133 and round_to(1e-40, "bf16", "up") == 2.0**-132
    assert round_to(5e-324, "fp64") == 5e-324 and round_to(-5e-324, "fp64", "zero") == -5e-324
    assert round_to(5e-324, "e11m51") == 0.0 and round_to(5e-324, "e11m51", "up") == 2.0**-1073
    assert round_to(1.5e-323, "e11m51") == 2.0**-1072  # 3 x 2^-1074: a tie between 2^-1073 and 2^-1072, even


# ---------------------------------------------------------------- round_scalar with sigma

def _sigma_points(fmt, seed):
    f = get_format(fmt)
    rng = np.random.default_rng(seed)
    v = random_doubles(fmt, 300, seed)
    q = rng.integers(f.emin - f.p + 1, f.emax - f.p + 2, 100)
    representable = np.ldexp(rng.integers(0, 2 ** min(f.p, 52), 100).astype(np.float64), q)
    powers = np.ldexp(1.0, rng.integers(f.emin - f.p + 1, f.emax + 1, 50))
    x = np.concatenate([v, representable, -representable, powers, -powers, [0.0, -0.0, f.max, -f.max,
                        f.min_normal, f.min_subnormal, f.max + math.ldexp(1.0, f.emax - f.p)]])
    return x[np.isfinite(x)]


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2", "fp4-e2m1", "e3m4", "fp32", "fp64",
                                 "e11m10"])
@pytest.mark.parametrize("mode", DIRECTED)
def test_sigma_rounds_the_exact_value(fmt, mode):
    """round_scalar(x, sigma) == round_F(x + sigma * eps), eps = 2^-1200 (below every quantum)."""
    x = _sigma_points(fmt, 5)
    eps = Fraction(1, 2**1200)
    for sigma in (-1, 0, 1):
        got = round_sigma(x, np.full(x.size, sigma), fmt, mode)
        want = np.array([round_fraction(Fraction(v) + sigma * eps, fmt, mode, zero_sign=math.copysign(1, v)).value
                         for v in x])
        assert same(got, want), (sigma, first_mismatch(x, got, want))
        got = round_sigma(x, np.full(x.size, sigma), fmt, mode, saturate=True, subnormals=False)
        want = np.array([round_fraction(Fraction(v) + sigma * eps, fmt, mode, saturate=True, subnormals=False,
                                        zero_sign=math.copysign(1, v)).value for v in x])
        assert same(got, want), (sigma, first_mismatch(x, got, want))


def test_sigma_on_zero_gives_the_sign_of_the_exact_value():
    got = round_sigma([0.0, 0.0, -0.0, -0.0], [1, -1, 1, -1], "fp16", "nearest")
    assert same(got, [0.0, -0.0, 0.0, -0.0])
    assert same(round_sigma([0.0, 0.0], [1, -1], "fp16", "up"), [2.0**-24, -0.0])
    assert same(round_sigma([0.0, 0.0], [1, -1], "fp16", "down"), [0.0, -2.0**-24])


# ---------------------------------------------------------------- stochastic rounding

@pytest.mark.parametrize("fmt", HEADLINE + ("fp4-e2m1", "fp64", "e11m10"))
def test_stochastic_returns_one_of_the_two_neighbours(fmt):
    x = np.concatenate([random_doubles(fmt, 2 * 10**5, seed=2), SPECIALS])
    got = round_to(x, fmt, "stochastic", rng=5)
    toward, away = fast_round(x, fmt, neighbours=True)
    ok = same(got[np.isnan(x)], x[np.isnan(x)])
    finite_in_range = np.isfinite(x) & (np.abs(away) <= get_format(fmt).max)
    hit = (got == toward) | (got == away)
    assert ok and np.all(hit[finite_in_range])
    inexact = finite_in_range & (toward != away)
    if inexact.any():  # fp64 holds every double
        assert 0.2 < np.mean(got[inexact] == away[inexact]) < 0.8


def test_stochastic_is_reproducible_from_a_seed_or_generator():
    x = np.random.default_rng(0).standard_normal(1000)
    a = round_to(x, "bf16", "stochastic", rng=42)
    assert same(a, round_to(x, "bf16", "stochastic", rng=42))
    assert same(a, round_to(x, "bf16", "stochastic", rng=np.random.default_rng(42)))
    assert not same(a, round_to(x, "bf16", "stochastic", rng=43))
    g = np.random.default_rng(7)
    first, second = round_to(x, "bf16", "stochastic", rng=g), round_to(x, "bf16", "stochastic", rng=g)
    assert not same(first, second)
    g = np.random.default_rng(7)
    assert same(first, round_to(x, "bf16", "stochastic", rng=g))


@pytest.mark.parametrize("fmt, x", [
    ("fp16", 1 + 0.3 * 2.0**-10), ("fp16", -(1 + 0.7 * 2.0**-10)), ("fp16", 1 + 2.0**-20), ("fp16", 1 + 2.0**-11),
    ("fp16", 3.3e-8), ("fp16", -1.234e-6), ("bf16", 1e-40), ("bf16", math.pi), ("fp8-e4m3fn", 100.5),
    ("fp8-e4m3fn", 0.0013), ("fp8-e5m2", 1e-5), ("e4m3", 3.14159), ("e11m10", 1.1e-310), ("fp4-e2m1", -2.2),
])
def test_stochastic_is_unbiased(fmt, x):
    """E[round(x)] = x: over N = 10^5 draws the number of roundings away from zero is
    within 5 standard deviations sqrt(N f (1 - f)) of N f, f = (x - toward) / (away - toward)
    computed exactly; equivalently the mean is within 5 standard errors of x."""
    n = 10**5
    got = round_to(np.full(n, x), fmt, "stochastic", rng=2024)
    toward, away = (float(v[0]) for v in fast_round(np.array([x]), fmt, neighbours=True))
    assert toward != away and set(np.unique(got).tolist()) <= {toward, away}
    f = float((Fraction(x) - Fraction(toward)) / (Fraction(away) - Fraction(toward)))
    n_away = int(np.count_nonzero(got == away))
    assert abs(n_away - n * f) <= 5 * math.sqrt(n * f * (1 - f)), (n_away, n * f)


@pytest.mark.parametrize("fmt, x, exact", [
    ("fp16", 1 + 2.0**-20, True), ("fp16", -(1 + 0.375 * 2.0**-10), True), ("fp16", 3.3e-8, True),
    ("bf16", 1e-40, True), ("bf16", -7e-39, True), ("e11m10", 2.0**-1074, True), ("fp8-e4m3fn", 1e-300, False),
    ("fp8-e5m2", -1e-200, False),
])
def test_stochastic_threshold_is_exact(fmt, x, exact):
    """With random bits r (uint64), the magnitude goes up iff r < floor(f 2^64), f the
    fraction of the quantum: P(up) = f exactly when the quantum is at most 2^64 float64
    ulps of x (``exact``), and within 2^-64 of f otherwise."""
    toward, away = (Fraction(float(v[0])) for v in fast_round(np.array([x]), fmt, neighbours=True))
    t = (Fraction(x) - toward) / (away - toward) * 2**64
    assert 0 < t < 2**64 and (t.denominator == 1) == exact
    threshold = math.floor(t)
    rbits = [min(max(r, 0), 2**64 - 1) for r in (0, threshold - 1, threshold, threshold + 1, 2**64 - 1)]
    got = round_sigma(np.full(5, x), np.zeros(5), fmt, "stochastic", rbits=np.array(rbits, dtype=np.uint64))
    want = [float(away) if r < threshold else float(toward) for r in rbits]
    assert same(got, np.copysign(want, x))
    assert same(got, [round_fraction(x, fmt, "stochastic", rbits=r, stochastic=stochastic_up_round_to).value
                      for r in rbits])


# ---------------------------------------------------------------- special values, zeros, shapes

@pytest.mark.parametrize("fmt", ALL)
@pytest.mark.parametrize("mode", DIRECTED + ("stochastic",))
def test_nan_inf_and_signed_zeros(fmt, mode):
    f = get_format(fmt)
    got = round_to(np.array([np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-320, -1e-320]), fmt, mode, rng=0)
    assert np.isnan(got[:2]).all()
    assert same(got[2:4], [0.0, -0.0])
    inf = math.inf if f.has_inf else (f.max if f.specials == "finite" else math.nan)
    assert same(got[4:6], [inf, -inf])
    assert same(round_to(np.array([np.inf, -np.inf]), fmt, mode, saturate=True, rng=0), [f.max, -f.max])
    assert np.signbit(got[6:8]).tolist() == [False, True]  # tiny values keep their sign, also when they vanish
    assert same(round_to(np.array([-1e-320, 1e-320]), fmt, mode, subnormals=False, rng=0), [-0.0, 0.0])


@pytest.mark.parametrize("x, shape", [
    (1.5, ()), (np.float32(1.5), ()), (3, ()), (True, ()), ([1.0, 2.0], (2,)), (np.ones((2, 3, 4)), (2, 3, 4)),
    (np.zeros((0, 3)), (0, 3)), (np.arange(24.0).reshape(4, 6)[:, ::2], (4, 3)), (np.ones(5, dtype=np.int8), (5,)),
    (np.float64(2.0), ()), (np.array(7.0), ()),
])
def test_scalars_and_arbitrary_shapes(x, shape):
    got = round_to(x, "fp16")
    assert np.shape(got) == shape and np.asarray(got).dtype == np.float64
    assert same(np.asarray(got), fast_round(np.asarray(x, dtype=np.float64), "fp16"))
    if shape == ():
        assert isinstance(got, np.float64)


def test_non_contiguous_and_float32_arrays():
    x = np.random.default_rng(1).standard_normal((50, 40))
    assert same(round_to(x.T, "bf16"), fast_round(x.T, "bf16"))
    assert same(round_to(x[::3, 1::2], "fp8-e5m2", "up"), fast_round(x[::3, 1::2], "fp8-e5m2", "up"))
    x32 = x.astype(np.float32)
    assert same(round_to(x32, "fp16"), x32.astype(np.float16).astype(np.float64))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, exc, message", [
    (lambda: round_to(1.0, "fp9"), UnknownNameError, "Unknown format 'fp9'. Possible values are: fp64, fp32"),
    (lambda: round_to(1.0, "fp9"), UnknownNameError, "fp4-e2m1, eXmY"),
    (lambda: round_to(1.0, "e0m3"), FormatSpecError, "Custom format 'e0m3': needs 2 <= X <= 11"),
    (lambda: round_to(1.0, "e12m3"), FormatSpecError, "needs 2 <= X <= 11 exponent bits"),
    (lambda: round_to(1.0, "e4m0"), FormatSpecError, "1 <= Y <= 52 significand bits"),
    (lambda: round_to(1.0, "e4m53"), FormatSpecError, "1 <= Y <= 52 significand bits"),
    (lambda: round_to(1.0, "fp16", "nearest-even"), UnknownNameError,
     "Unknown rounding mode 'nearest-even'. Possible values are: nearest, zero, up, down, stochastic."),
    (lambda: round_to(1.0, "fp16", "RN"), UnknownNameError, "Possible values are: nearest, zero, up, down, stochastic"),
    (lambda: round_to(1 + 2j, "fp16"), MixaccError, "round_to input must hold real numbers, got dtype complex128"),
    (lambda: round_to(["a"], "fp16"), MixaccError, "round_to input must hold real numbers, got dtype <U1"),
    (lambda: round_to(np.array([1.0], dtype=object), "fp16"), MixaccError, "dtype object"),
    (lambda: round_to(1.0, "fp16", "stochastic", rng=-1), MixaccError,
     "rng == -1, must be a numpy.random.Generator, a non-negative integer seed or None."),
    (lambda: round_to(1.0, "fp16", "stochastic", rng="seed"), MixaccError, "rng == 'seed', must be"),
])
def test_bad_input(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- properties

finite_doubles = st.floats(allow_nan=False, allow_infinity=False, width=64)
fmt_names = st.sampled_from(SMALL + WIDE)


def _representable(v: float, fmt) -> bool:
    f = get_format(fmt)
    if not math.isfinite(v) or v == 0:
        return True
    a = Fraction(abs(v))
    return a <= Fraction(f.max) and (a / quantum(a, f)).denominator == 1


@settings(max_examples=150, deadline=None)
@given(fmt_names, st.sampled_from(DIRECTED), finite_doubles, finite_doubles)
def test_monotone(fmt, mode, a, b):
    lo, hi = min(a, b), max(a, b)
    rlo, rhi = round_to(lo, fmt, mode), round_to(hi, fmt, mode)
    assert not (rlo > rhi)


@settings(max_examples=150, deadline=None)
@given(fmt_names, st.sampled_from(DIRECTED + ("stochastic",)), finite_doubles, st.integers(0, 2**32))
def test_result_is_representable_and_rounding_is_idempotent(fmt, mode, x, seed):
    r = round_to(x, fmt, mode, rng=seed)
    assert _representable(float(r), fmt)
    assert same(round_to(r, fmt, mode, rng=seed + 1), r)


@settings(max_examples=150, deadline=None)
@given(fmt_names, finite_doubles)
def test_nearest_is_within_half_an_ulp_and_directed_brackets(fmt, x):
    f = get_format(fmt)
    if abs(x) > f.max:
        return
    r = float(round_to(x, fmt))
    ulp = quantum(abs(Fraction(x)), f) if x else Fraction(f.min_subnormal)
    assert abs(Fraction(r) - Fraction(x)) <= ulp / 2
    down, up = float(round_to(x, fmt, "down")), float(round_to(x, fmt, "up"))
    assert down <= x <= up and r in (down, up)
