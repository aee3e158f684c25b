"""emulator.linear against the exact oracle of ``oracles.accumulate``, bit for bit.

The oracle follows docs/method.md#accumulation-models literally, one component at a time,
in rational arithmetic (``Fraction``), every rounding exact-then-rounded-once from the
formats' definitions (held in test_oracles against every encoding decoded by numpy /
ml_dtypes). Stochastic rounding is given the same random bits (SplitMix64 of seed,
sample, component and the event's tag, as ``emulator._accumulate`` documents) and rounds
|v| up when |v| - lo > (bits >> 11) 2^(q-53).
"""

from __future__ import annotations

import importlib
import math
import zlib
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from emulator import _accumulate as K
from emulator.accumulation import parse_accumulation
from emulator.errors import DataError, MixaccError, ShapeError, UnknownNameError
from emulator.linear import linear, linear_slow

from oracles import DECODED, accumulate, accumulate_matrix, decoded_values, neighbours, round_fraction

linear_module = importlib.import_module("emulator.linear")  # the package exports the function as emulator.linear


def _kernel_format(a):
    """The kernels' constants for rounding into a's accumulator format."""
    return K.kernel_format(a.fmt, a.rounding, a.saturate, a.subnormals)


def same(a, b):
    return np.array_equal(a, b, equal_nan=True)


def check(x, W, b, spec):
    y, ovf = linear(x, W, b, spec, return_overflow=True)
    y_ref, ovf_ref = accumulate_matrix(x, W, b, spec)
    bad = ~((y == y_ref) | (np.isnan(y) & np.isnan(y_ref)))
    assert not bad.any(), f"{spec}: {np.argwhere(bad)[:3].tolist()} got {y[bad][:3]} want {y_ref[bad][:3]}"
    assert same(ovf, ovf_ref), f"{spec}: overflow masks differ at {np.argwhere(ovf != ovf_ref)[:3].tolist()}"


# ---------------------------------------------------------------- linear == oracle

def data(kind: str, seed: int, shape=(3, 4, 19), fmt="fp16"):
    rng = np.random.default_rng(seed)
    nsamp, m, n = shape
    if kind == "random":
        return rng.standard_normal((nsamp, n)), rng.standard_normal((m, n)) / 4, rng.standard_normal(m)
    if kind == "format_values":  # values of the format: exact products, many exact ties
        vals = np.array(decoded_values(fmt))
        pick = lambda size: rng.choice(vals[: max(8, len(vals) // 2)], size) * rng.choice([-1, 1], size)
        return pick((nsamp, n)), pick((m, n)), pick(m)
    if kind == "wide_range":
        scale = lambda size: 2.0 ** rng.integers(-20, 12, size) * rng.choice([-1, 1], size)
        return rng.random((nsamp, n)) * scale((nsamp, n)), rng.random((m, n)) * scale((m, n)), scale(m)
    raise ValueError(kind)


SPECS = [
    "fp16", "fp16:bias=last", "bf16", "fp8-e4m3fn", "fp8-e5m2", "e4m3:saturate", "fp4-e2m1", "fp16:ftz",
    "fp16:rounding=zero", "bf16:rounding=up", "fp8-e5m2:rounding=down", "fp16:rounding=stochastic:seed=5",
    "bf16:rounding=stochastic:bias=last:seed=-2",
    "fp16:products=fp8-e4m3fn", "bf16:products=bf16:rounding=down", "fp16:products=e4m3:rounding=stochastic:seed=1",
    "fp16:pairwise", "bf16:pairwise:rounding=up", "fp8-e5m2:pairwise:products=fp8-e5m2",
    "fp16:pairwise:rounding=stochastic:seed=9", "fp16:blocked:4", "bf16:blocked:5:bias=last:rounding=zero",
    "fp8-e4m3fn:blocked:3:rounding=stochastic", "fp16:fused:4", "bf16:fused:3:rounding=down:bias=last",
    "fp16:fused:7:products=fp16:rounding=stochastic:seed=4", "e4m3:promote:4:fp16", "fp8-e4m3fn:promote:5:fp32",
    "fp16:promote:3:fp32:rounding=up:bias=last", "e4m3:promote:4:bf16:rounding=stochastic:saturate",
    "fp32", "fp32:rounding=down", "fp32:pairwise:rounding=stochastic",
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("kind", ["random", "format_values", "wide_range"])
def test_linear_matches_oracle(spec, kind):
    fmt = parse_accumulation(spec).fmt.name
    x, W, b = data(kind, zlib.crc32(f"{spec}/{kind}".encode()), fmt=fmt if fmt in DECODED else "fp16")
    check(x, W, b, spec)
    check(x, W, None, spec)


def test_edge_sizes():
    rng = np.random.default_rng(3)
    for spec in ("fp16", "fp16:pairwise", "fp16:fused:3", "fp16:blocked:2", "e4m3:promote:2:fp16"):
        for n in (0, 1, 2, 3, 5, 8, 11, 13):
            x, W, b = rng.standard_normal((2, n)), rng.standard_normal((3, n)), rng.standard_normal(3)
            check(x, W, b, spec)
            check(x, W, None, spec)
    assert linear(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    assert linear(np.zeros((2, 4)), np.ones((0, 4))).shape == (2, 0)
    assert linear(np.ones(4), np.ones((3, 4)), np.zeros(3)).shape == (3,)


# ---------------------------------------------------------------- kernel structure

STRUCTURE_SPECS = ["fp16", "fp8-e4m3fn:bias=last", "fp16:pairwise", "fp16:blocked:7", "e4m3:promote:5:fp16",
                   "bf16:pairwise:products=bf16:rounding=up"]


@pytest.mark.parametrize("spec", STRUCTURE_SPECS)
@pytest.mark.parametrize("kind", ["random", "format_values"])
def test_kernels_at_vector_widths_and_block_boundaries(spec, kind):
    """Widths around the vector lengths, with tails (m = 37, 259), n odd and around powers
    of two (pairwise joins), blocks of 7 with a short last one, zero inputs (columns
    skipped: the running sums stay in their buffer), more samples than a group; format
    values bring ties everywhere, so the quick pass leaves many lanes and, over n = 36
    steps, is paced out and back."""
    fmt = parse_accumulation(spec).fmt.name
    for nsamp, m, n in ((2, 259, 9), (5, 37, 36)) if kind == "format_values" else ((2, 259, 9), (5, 37, 12)):
        x, W, b = data(kind, zlib.crc32(f"{spec}/{kind}/{m}".encode()), shape=(nsamp, m, n), fmt=fmt)
        x[:, 3::5] = 0.0
        check(x, W, b, spec)


def few_ties_data():
    """Integer x and two integer rows of W (0 and 311 of 520), the other rows random: the
    sums of the two rows tie now and then (in fp16 above 2048), the rest never."""
    rng = np.random.default_rng(7)
    x = rng.integers(1, 17, (1, 24)).astype(np.float64)
    W = rng.standard_normal((520, 24))
    W[[0, 311]] = rng.integers(1, 129, (2, 24))
    return x, W, rng.standard_normal(520)


def test_few_ties_data_leaves_a_few_lanes():
    """The data of the next test: at some steps of the recursive sum, and at some pairs of
    the pairwise sum, the quick pass leaves lanes, never more than m / 2^FEW_SHIFT."""
    x, W, _ = few_ties_data()
    fc = _kernel_format(parse_accumulation("fp16"))
    flags = np.zeros(520, dtype=np.bool_)
    steps = [K.mark_leaves(linear(x[0, :k], W[:, :k], None, "fp16"), W[:, k], float(x[0, k]), flags, fc)
             for k in range(1, 24)]
    pairs = [K.mark_pairs(W[:, j - 1], W[:, j], float(x[0, j - 1]), float(x[0, j]), flags, fc)
             for j in range(1, 24, 2)]
    for left in (steps, pairs):
        assert 1 <= max(left) <= 520 >> K.FEW_SHIFT


@pytest.mark.parametrize("spec", ["fp16", "fp16:pairwise", "bf16:blocked:8:bias=last"])
def test_a_few_lanes_left_by_the_quick_pass(spec):
    """Lanes the quick pass leaves, a few at a time: they go straight to the exact path."""
    x, W, b = few_ties_data()
    check(x, W, b, spec)


# ---------------------------------------------------------------- adversarial data

def tie_walk(fmt: str, n: int, seed: int, nudge: float = 0.0):
    """x_j such that every partial sum s_{j-1} + x_j (w = 1, start 1.5) is a midpoint of
    fmt (unless it leaves the binade; nudge = 0), or a hair off it that float64 cannot see."""
    rng = np.random.default_rng(seed)
    s, xs = Fraction(3, 2), []
    for _ in range(n):
        lo, hi, *_ = neighbours(abs(s) + Fraction(1, 2**60), fmt)
        gap = hi - lo
        step = (rng.integers(0, 3) + Fraction(1, 2)) * gap * (1 if rng.random() < 0.6 else -1)
        xs.append(float(step))
        s = Fraction(round_fraction(s + step, fmt).value)
    x = np.array(xs)
    w = np.ones(n)
    if nudge:  # w x = x (1 + nudge)(1 - nudge) = x (1 - nudge^2): below the tie, by less than float64 resolves
        w = w * (1 + nudge)
        x = x * (1 - nudge)
    return x, w


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8-e5m2", "fp8-e4m3fn"])
@pytest.mark.parametrize("nudge", [0.0, 2.0**-30])
@pytest.mark.parametrize("mode", ["nearest", "zero", "up", "down", "stochastic"])
def test_ties_at_every_step(fmt, nudge, mode):
    """Component k sums the first k + 1 steps of a tie walk (zero weights after), so
    every partial sum is checked, not only the last."""
    x, w = tie_walk(fmt, 24, seed=len(fmt), nudge=nudge)
    W = np.tril(np.ones((24, 24))) * w
    for order in ("recursive", "fused:2", "blocked:4", "pairwise"):
        check(x[None, :], W, np.full(24, 1.5), f"{fmt}:{order}:rounding={mode}:seed=3")


def test_tie_nudges_are_invisible_to_float64():
    ties, _ = tie_walk("fp16", 10, seed=1)
    x, w = tie_walk("fp16", 10, seed=1, nudge=2.0**-30)
    assert np.all(w * x == ties)  # the float64 products are the ties themselves
    b = np.array([1.5])
    y = linear(x, w[None, :], b, "fp16")
    assert y[0] == accumulate(x, w, b[0], "fp16").value
    prefixes = [(linear(x[:k], w[None, :k], b, "fp16")[0], linear(ties[:k], np.ones((1, k)), b, "fp16")[0])
                for k in range(1, 11)]
    assert any(nudged != tied for nudged, tied in prefixes)


@pytest.mark.parametrize("spec", ["fp16", "fp32", "bf16:fused:4", "fp16:pairwise:rounding=down",
                                  "fp32:rounding=stochastic"])
def test_catastrophic_cancellation(spec):
    rng = np.random.default_rng(7)
    big = 2.0 ** rng.integers(5, 15, 16) * (1 + rng.random(16))
    x = np.concatenate([big, -big * (1 - 2.0**-40), rng.standard_normal(8) * 2.0**-20])
    order = rng.permutation(len(x))
    W = np.vstack([np.ones(len(x)), 1 + 2.0 ** -rng.integers(20, 50, len(x))])
    check(np.vstack([x, x[order]]), W, None, spec)


@pytest.mark.parametrize("spec", ["fp16", "fp16:saturate", "fp16:rounding=zero", "fp16:rounding=up",
                                  "fp16:rounding=down", "fp16:rounding=stochastic", "fp8-e4m3fn",
                                  "fp8-e4m3fn:saturate", "e4m3", "fp16:pairwise", "fp16:fused:2",
                                  "e4m3:promote:2:fp16", "fp16:products=fp8-e4m3fn", "fp16:products=e4m3:saturate"])
def test_near_overflow(spec):
    """Sums around the largest finite value: 65504 + 16 is the tie that overflows fp16,
    448 + 16 the tie that stays 448 in e4m3fn (docs/method.md#overflow)."""
    top = {"fp16": 65504.0, "fp8-e4m3fn": 448.0, "e4m3": 240.0}[spec.split(":")[0]]
    half = {"fp16": 16.0, "fp8-e4m3fn": 16.0, "e4m3": 8.0}[spec.split(":")[0]]
    steps = np.array([[half, 0.0, 1.0], [half, half, -half], [-half, 2 * half, 0.5], [half * 1.0001, 0, 0],
                      [half * 0.9999, half * 0.9999, -3 * half], [3 * half, -top, -top]])
    for sign in (1.0, -1.0):
        check(sign * steps, np.ones((2, 3)) * [[1], [1.5]], sign * np.array([top, top - 2 * half]), spec)


@pytest.mark.parametrize("spec", ["fp16", "fp16:ftz", "fp16:rounding=up", "fp16:rounding=down:ftz",
                                  "fp16:rounding=stochastic", "fp8-e4m3fn", "fp8-e5m2:ftz", "bf16:pairwise",
                                  "fp16:fused:3:ftz"])
def test_subnormal_range(spec):
    rng = np.random.default_rng(11)
    tiny = 2.0 ** rng.integers(-30, -12, (3, 21)) * rng.standard_normal((3, 21))
    check(tiny, rng.standard_normal((4, 21)), 2.0**-20 * rng.standard_normal(4), spec)


@pytest.mark.parametrize("spec", ["fp32", "fp32:rounding=up", "fp32:pairwise", "fp32:fused:5", "bf16",
                                  "fp16:promote:4:fp32", "fp64", "fp64:rounding=zero", "fp64:fused:3",
                                  "fp32:rounding=stochastic:seed=8"])
def test_huge_dynamic_range_mixed_signs(spec):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 25)) * 2.0 ** rng.integers(-60, 60, (3, 25))
    W = rng.standard_normal((3, 25)) * 2.0 ** rng.integers(-40, 40, (3, 25))
    check(x, W, rng.standard_normal(3) * 2.0**30, spec)


@pytest.mark.parametrize("spec", ["fp16", "fp16:rounding=zero", "fp16:rounding=up", "fp16:pairwise",
                                  "fp16:fused:2", "fp32:rounding=down", "fp16:rounding=stochastic",
                                  "fp64:rounding=stochastic:seed=3", "e11m10:rounding=stochastic:seed=3"])
def test_products_outside_the_kernel_range(spec):
    """Products below 2^-969 or above 2^990 leave the fast kernels; the exact twin
    finishes those components (with stochastic rounding in fp64's subnormal range, where
    the threshold K 2^(q-53) lies below float64's resolution)."""
    x = np.array([[1e-160, 1.0, 3.0], [1e200, 1e-200, 2.0]])
    W = np.array([[1e-160, 0.5, -1.0], [1e200, -1e-200, 0.25], [-1e-170, 1e-170, 1.0]])
    check(x, W, np.array([0.0, 1.0, -2.0]), spec)


@pytest.mark.parametrize("spec", ["fp64:rounding=stochastic:seed=1", "fp64:fused:2:rounding=stochastic:seed=2"])
def test_stochastic_rounding_below_float64_resolution(spec):
    """The product 3 2^-1075 lies halfway between fp64's 2^-1074 and 2^-1073, where the
    threshold K 2^(q-53) is no float64: over 2000 independent samples (the exact twin's
    components) it goes up with probability 1/2, bit for bit as the oracle says."""
    x = np.full((2000, 2), 2.0**-537)
    W = np.array([[3 * 2.0**-538, 0.0]])
    y = linear(x, W, None, spec)[:, 0]
    check(x[:64], W, None, spec)
    assert set(np.unique(y).tolist()) == {2.0**-1074, 2.0**-1073}
    assert abs(np.mean(y == 2.0**-1073) - 0.5) < 5 * 0.5 / np.sqrt(2000)


# ---------------------------------------------------------------- hypothesis

SMALL_SPECS = ["fp16", "bf16:rounding=up", "fp8-e4m3fn:saturate", "fp8-e5m2:rounding=down:ftz", "e4m3",
               "fp16:pairwise", "fp16:fused:2:rounding=zero", "bf16:blocked:2:bias=last",
               "e4m3:promote:2:fp16:rounding=stochastic:seed=1", "fp16:products=fp8-e5m2:rounding=stochastic",
               "fp16:fused:3:products=fp16", "fp8-e4m3fn:pairwise:rounding=up", "fp4-e2m1"]


def _value_strategy():
    fmt_values = st.sampled_from([v for name in ("fp16", "fp8-e4m3fn", "fp8-e5m2") for v in decoded_values(name)[::7]])
    return st.one_of(
        st.builds(lambda v, s, e: v * s * 2.0**e, fmt_values, st.sampled_from([1.0, -1.0]), st.integers(-3, 3)),
        st.floats(-600, 600, allow_nan=False, width=64),
        st.sampled_from([0.0, -0.0, 1.0, 0.5, 2.0**-24, 65504.0, 448.0, math.inf, -math.inf, math.nan]),
    )


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.sampled_from(SMALL_SPECS), n=st.integers(0, 7), m=st.integers(1, 3), nsamp=st.integers(1, 2),
       has_bias=st.booleans(), data=st.data())
def test_hypothesis_small_cases(spec, n, m, nsamp, has_bias, data):
    vals = data.draw(st.lists(_value_strategy(), min_size=nsamp * n + m * n + m, max_size=nsamp * n + m * n + m))
    arr = np.array(vals, dtype=np.float64)
    x = arr[: nsamp * n].reshape(nsamp, n)
    W = arr[nsamp * n: nsamp * n + m * n].reshape(m, n)
    b = arr[nsamp * n + m * n:] if has_bias else None
    check(x, W, b, spec)


# ---------------------------------------------------------------- independent arithmetic

def test_fp16_products_fp16_equals_numpy_float16_loop():
    """numpy float16 arithmetic computes in float32 and rounds once to fp16, which is
    correct rounding for + and * (float32 has p >= 2 * 11 + 2, Figueroa 1995)."""
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((64, 150)) * 4).astype(np.float16)
    W = (rng.standard_normal((40, 150)) / 3).astype(np.float16)
    b = rng.standard_normal(40).astype(np.float16)
    acc = np.broadcast_to(b, (64, 40)).copy()
    for k in range(x.shape[1]):
        acc = acc + x[:, k:k + 1] * W[:, k][None, :]
    y = linear(x, W, b, "fp16:products=fp16")
    assert same(y, acc.astype(np.float64))


def test_bf16_products_bf16_equals_ml_dtypes_loop():
    rng = np.random.default_rng(22)
    bf = ml_dtypes.bfloat16
    x = (rng.standard_normal((32, 120)) * 4).astype(bf)
    W = (rng.standard_normal((24, 120)) / 3).astype(bf)
    acc = np.zeros((32, 24), dtype=bf)
    for k in range(x.shape[1]):
        acc = acc + x[:, k:k + 1] * W[:, k][None, :]
    assert same(linear(x.astype(np.float64), W.astype(np.float64), None, "bf16:products=bf16"),
                acc.astype(np.float64))


def test_fp32_products_fp32_equals_numpy_float32_loop():
    rng = np.random.default_rng(23)
    x = (rng.standard_normal((64, 200)) * 2.0 ** rng.integers(-10, 10, (64, 200))).astype(np.float32)
    W = rng.standard_normal((48, 200)).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    acc = np.broadcast_to(b, (64, 48)).copy()
    for k in range(x.shape[1]):
        acc = acc + x[:, k:k + 1] * W[:, k][None, :]
    assert same(linear(x, W, b, "fp32:products=fp32"), acc.astype(np.float64))


def test_fp32_exact_products_equal_float32_loop_on_short_integers():
    """With 11-bit integers the products are exact in float32, so a float32 loop is fp32
    accumulation with exact products."""
    rng = np.random.default_rng(24)
    x = rng.integers(-2**11, 2**11, (16, 60)).astype(np.float32)
    W = rng.integers(-2**11, 2**11, (8, 60)).astype(np.float32)
    acc = np.zeros((16, 8), dtype=np.float32)
    for k in range(x.shape[1]):
        acc = acc + x[:, k:k + 1] * W[:, k][None, :]
    assert same(linear(x, W, None, "fp32"), acc.astype(np.float64))


# ---------------------------------------------------------------- stochastic rounding

def test_stochastic_is_reproducible_and_independent_of_batching(monkeypatch):
    rng = np.random.default_rng(31)
    x, W, b = rng.standard_normal((21, 30)), rng.standard_normal((9, 30)), rng.standard_normal(9)
    for spec in ("bf16:rounding=stochastic:seed=17", "fp16:pairwise:rounding=stochastic:seed=17",
                 "bf16:fused:4:rounding=stochastic:seed=17:products=e4m3"):
        y = linear(x, W, b, spec)
        assert same(y, linear(x, W, b, spec))
        assert not same(y, linear(x, W, b, spec.replace("seed=17", "seed=18")))
        monkeypatch.setattr(linear_module, "BATCH", 5)
        monkeypatch.setattr(linear_module, "GROUP", 3)
        assert same(y, linear(x, W, b, spec))
        monkeypatch.setattr(linear_module, "GROUP", 1)
        assert same(y, linear(x, W, b, spec))
        monkeypatch.undo()


@pytest.mark.parametrize("spec", ["fp8-e5m2:rounding=stochastic:seed=2", "bf16:pairwise:rounding=stochastic",
                                  "fp8-e4m3fn:fused:3:rounding=stochastic:seed=4"])
def test_stochastic_mean_converges_to_the_exact_sum(spec):
    """Each sample row has its own random stream, so 4000 copies of one input are 4000
    independent runs; stochastic rounding is unbiased, so their mean is the exact sum
    within a few standard errors."""
    rng = np.random.default_rng(41)
    x = rng.random(40) + 0.5
    W = rng.random((3, 40)) / 8
    y = linear(np.tile(x, (4000, 1)), W, None, spec)
    exact = np.array([float(sum(Fraction(float(w)) * Fraction(float(v)) for w, v in zip(row, x))) for row in W])
    mean, stderr = y.mean(axis=0), y.std(axis=0) / np.sqrt(len(y))
    assert np.all(stderr > 0)
    assert np.all(np.abs(mean - exact) < 5 * stderr)


# ---------------------------------------------------------------- specials, errors, exact

SPECIALS = [  # (x, W row, b, spec, expected, overflow)
    ([math.inf, 1.0], [1.0, 1.0], None, "fp16", math.inf, True),
    ([math.inf, 1.0], [0.0, 1.0], None, "fp16", math.nan, True),
    ([math.inf, -math.inf], [1.0, 1.0], None, "fp16", math.nan, True),
    ([math.inf, 1.0], [1.0, 1.0], None, "fp8-e4m3fn", math.nan, True),
    ([math.inf, 1.0], [1.0, 1.0], None, "fp16:saturate", 65504.0, True),
    ([-math.inf, 1.0], [1.0, 1.0], None, "fp4-e2m1", -4.0, True),  # -6 (saturated) + 1 = -5, a tie: 4
    ([1.0, 2.0], [1.0, 1.0], math.nan, "fp16", math.nan, True),
    ([math.nan, 2.0], [0.0, 1.0], 1.0, "bf16:pairwise", math.nan, True),
    ([60000.0, 60000.0, -60000.0], [1.0, 1.0, 1.0], None, "fp16", math.inf, True),
    ([60000.0, 60000.0, -60000.0], [1.0, 1.0, 1.0], None, "fp16:saturate", 5504.0, True),
    ([60000.0, 60000.0, -60000.0], [1.0, 1.0, 1.0], None, "fp16:rounding=zero", 5504.0, True),
    ([60000.0, 60000.0, -60000.0], [1.0, 1.0, 1.0], None, "fp16:fused:3", 60000.0, False),
    ([1.0, 2.0], [1.0, 1.0], None, "fp16", 3.0, False),
]


@pytest.mark.parametrize("x, w, b, spec, expected, overflow", SPECIALS)
def test_nan_and_inf_follow_ieee_arithmetic(x, w, b, spec, expected, overflow):
    y, ovf = linear(np.array(x), np.array([w]), None if b is None else np.array([b]), spec, return_overflow=True)
    assert same(y, np.array([expected])) and ovf[0] == overflow
    check(np.array([x]), np.array([w]), None if b is None else np.array([b]), spec)


ERRORS = [  # (x, W, b, acc, exception, message fragment)
    (np.ones((2, 3)) * 1j, np.ones((2, 3)), None, "fp16", DataError, "x in linear(x, W, b) must hold real numbers, got dtype complex128"),
    (np.array([["a", "b"]]), np.ones((2, 2)), None, "fp16", DataError, "x in linear(x, W, b) must hold real numbers"),
    (np.ones((2, 3)), np.ones(3), None, "fp16", ShapeError, "W in linear(x, W, b) must have 2 dimensions, got shape (3,)"),
    (np.ones((2, 3, 1)), np.ones((2, 3)), None, "fp16", ShapeError, "x in linear(x, W, b) must have 1 or 2 dimensions, got shape (2, 3, 1)"),
    (np.ones((2, 3)), np.ones((2, 4)), None, "fp16", ShapeError, "x has 3 inputs but W has 4 columns"),
    (np.ones(4), np.ones((2, 3)), None, "fp16", ShapeError, "x has 4 inputs but W has 3 columns"),
    (np.ones((2, 3)), np.ones((2, 3)), np.ones(3), "fp16", ShapeError, "b must have shape (2,)"),
    (np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 1)), "fp16", ShapeError, "b in linear(x, W, b) must have 1 dimension, got shape (2, 1)"),
    (np.array([[2**60 + 1, 0]]), np.ones((1, 2)), None, "fp16", DataError, "x in linear(x, W, b) has values that float64 cannot hold exactly (first at [0, 0]"),
    (np.ones((1, 2)), np.ones((1, 2)), np.array(["x"]), "fp16", DataError, "b in linear(x, W, b) must hold real numbers"),
    (np.ones((1, 2)), np.ones((1, 2)), None, "fp9", UnknownNameError, "Unknown format 'fp9'"),
    (np.ones((1, 2)), np.ones((1, 2)), None, "fp16:zigzag", UnknownNameError, "Unknown accumulation order"),
]


@pytest.mark.parametrize("x, W, b, acc, error, message", ERRORS)
def test_bad_inputs(x, W, b, acc, error, message):
    with pytest.raises(error) as info:
        linear(x, W, b, acc)
    assert message in str(info.value) and isinstance(info.value, MixaccError)


def test_integer_and_float32_inputs_are_exact():
    x = np.array([[3, -5, 7]], dtype=np.int32)
    W = np.array([[0.5, 0.25, 1.5]], dtype=np.float32)
    assert linear(x, W, None, "fp16")[0, 0] == accumulate(x[0].astype(float), W[0].astype(float), None, "fp16").value


def test_exact_delegates_to_the_reference():
    reference = pytest.importorskip("emulator.reference")
    rng = np.random.default_rng(51)
    x, W, b = rng.standard_normal((3, 7)), rng.standard_normal((2, 7)), rng.standard_normal(2)
    y, ovf = linear(x, W, b, "exact", return_overflow=True)
    assert same(y, np.asarray(reference.exact_linear(x, W, b, 113))) and not ovf.any()


def test_linear_slow_is_the_twin():
    rng = np.random.default_rng(52)
    x, W, b = rng.standard_normal((2, 9)), rng.standard_normal((3, 9)), rng.standard_normal(3)
    for spec in ("fp16:rounding=stochastic:seed=3", "bf16:pairwise:rounding=down", "e4m3:promote:2:fp16:bias=last"):
        y, ovf = linear_slow(x, W, b, spec)
        assert same(y, linear(x, W, b, spec)) and same(y, accumulate_matrix(x, W, b, spec)[0])
    with pytest.raises(DataError, match="use linear"):
        linear_slow(x, W, b, "exact")


# ---------------------------------------------------------------- the fast path, alone

@njit
def _fast_many(h, r, a2, fc, kind, rb, out, ok):
    for i in range(h.size):
        y, good, _ = K.fast_round(h[i], r[i], a2[i], fc, kind, rb[i])
        out[i] = y
        ok[i] = good


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8-e4m3fn", "fp4-e2m1"])
@pytest.mark.parametrize("mode", ["nearest", "zero", "up", "down", "stochastic"])
def test_fast_path_is_right_whenever_it_answers(fmt, mode):
    """h on every kind of breakpoint (values, midpoints, powers of two, the subnormal
    range, beyond max) with residuals from 0 to far beyond the grid: when the fast path
    claims an answer it is the rounding of every v with |v - h| < A2 and sign(v - h) =
    sign(r) (r = 0: unknown sign); a midpoint with a nonzero residual is never answered
    in round-to-nearest."""
    rng = np.random.default_rng(61)
    vals = np.array(decoded_values(fmt))
    mids = (vals[1:] + vals[:-1]) / 2
    gap = vals[-1] - vals[-2]
    beyond = vals[-1] + gap * np.array([0.25, 0.5, 0.75, 1.0, 3.0])
    base = np.concatenate([vals, mids, vals[1:] - (vals[1:] - vals[:-1]) / 4, beyond])
    base = rng.choice(base, 3000) * rng.choice([-1, 1], 3000)
    ulp = np.spacing(np.abs(base)) + 2.0**-1074
    size = 2.0 ** rng.integers(-3, 60, 3000)
    r = rng.choice([-1.0, 0.0, 1.0], 3000) * ulp * size
    a2 = np.where(rng.random(3000) < 0.2, 0.0, np.abs(r) * (1.001 + rng.random(3000) * 3))
    r = np.where(a2 == 0.0, 0.0, r)
    a2 = np.where((a2 == 0.0) & (rng.random(3000) < 0.5), ulp * size, a2)  # unknown sign
    h = base
    bits = rng.integers(0, 2**63, 3000, dtype=np.uint64) * np.uint64(2)
    a = parse_accumulation(f"{fmt}:rounding={mode}")
    out, ok = np.empty(3000), np.zeros(3000, dtype=np.bool_)
    _fast_many(h, r, a2, _kernel_format(a), {"nearest": 0, "stochastic": 2}.get(mode, 1), bits, out, ok)
    assert ok.mean() > 0.2
    for i in np.flatnonzero(ok):
        hv, bound = Fraction(float(h[i])), Fraction(float(a2[i]))
        probes = [hv] if bound == 0 else [hv + bound * t for t in (Fraction(-999, 1000), Fraction(-1, 10**9),
                                                                    Fraction(1, 10**9), Fraction(999, 1000))
                                          if r[i] == 0 or (t > 0) == (r[i] > 0)]
        probes += [hv + Fraction(float(r[i]))] if r[i] != 0 else []
        for v in probes:
            want = round_fraction(v, fmt, mode, rbits=int(bits[i])).value
            assert out[i] == want or (math.isnan(want) and math.isnan(out[i])), (h[i], r[i], a2[i], v, out[i], want)
    if mode == "nearest":
        at_mid = np.isin(np.abs(h), mids) & (a2 > 0)
        assert at_mid.any() and not ok[at_mid].any()


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8-e4m3fn", "fp32", "fp64"])
@pytest.mark.parametrize("mode", ["nearest", "zero", "up", "down", "stochastic"])
def test_exact_path_rounds_sums_of_terms(fmt, mode):
    """round_terms (TwoSum partials, then round_scalar / the stochastic comparison) on
    sums with heavy cancellation, against the oracle."""
    rng = np.random.default_rng(71)
    a = parse_accumulation(f"{fmt}:rounding={mode}")
    fc = _kernel_format(a)
    buf, work = np.zeros(6), np.zeros(16)
    for _ in range(150):
        t = rng.standard_normal(5) * 2.0 ** rng.integers(-30, 30, 5)
        t[1] = -t[0] * (1 + rng.integers(-3, 4) * 2.0**-52)
        bits = int(rng.integers(0, 2**63)) * 2 + 1
        buf[:5] = t
        got, over = K.round_terms(buf, 5, work, fc, np.uint64(bits))
        want, want_over = round_fraction(sum(Fraction(float(v)) for v in t), fmt, mode, rbits=bits)
        assert (got == want or (math.isnan(got) and math.isnan(want))) and over == want_over, (t, got, want)


def _quick_many(out, acc, wrow, x, flags, fc):
    """The quick pass over many lanes; the lanes it leaves are flagged by its twin test."""
    left = K.quick_leaves(out, acc, wrow, x, fc)
    assert K.mark_leaves(acc, wrow, x, flags, fc) == left
    return left


@pytest.mark.parametrize("ftz", [False, True])
@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8-e4m3fn", "e4m3", "fp4-e2m1"])
def test_quick_pass_is_right_whenever_it_answers(fmt, ftz):
    """The round-to-nearest pass without error-free transformations (one FMA, then the
    midpoint test): running sums on and next to every breakpoint (subnormals and the top
    binade included), products from far below an ulp to far above the sum (cancellation);
    every lane it answers is round_F(s + w x) exactly, and it leaves the exact ties."""
    rng = np.random.default_rng(81)
    vals = np.array(decoded_values(fmt))
    mids = (vals[1:] + vals[:-1]) / 2
    s = rng.choice(np.concatenate([vals, mids, vals * (1 + 2.0**-40)]), 4000) * rng.choice([-1, 1], 4000)
    w = rng.standard_normal(4000) * 2.0 ** rng.integers(-60, 8, 4000)
    w[:400] = 0.0
    x = float(1 + 2.0**-30)
    a = parse_accumulation(fmt + (":ftz" if ftz else ""))
    acc, out, flags = s.copy(), np.empty(4000), np.zeros(4000, dtype=np.bool_)
    left = _quick_many(out, acc, w, x, flags, _kernel_format(a))
    assert left == flags.sum() and 0 < left < 4000
    for i in np.flatnonzero(~flags):
        v = Fraction(float(s[i])) + Fraction(float(w[i])) * Fraction(x)
        assert out[i] == round_fraction(v, fmt, subnormals=not ftz).value, (s[i], w[i])
    assert np.array_equal(acc, s)
    ties = np.isin(np.abs(s), mids) & (w == 0.0)
    assert ties.any() and flags[ties].all()


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8-e4m3fn", "e4m3", "fp4-e2m1"])
def test_quick_sum_is_right_whenever_it_answers(fmt):
    """The quick pass for the sum of two float64 values (pairwise joins, blocks, bias):
    sums of two values of F (exact in float64, half of them ties), F values plus a hair
    (a midpoint in float64 that is not the exact sum), and cancelling pairs; every lane it
    answers is round_F(a + b), exact ties included, and it leaves the inexact midpoints.
    For two values of F the join test answers every sum in range, rightly."""
    rng = np.random.default_rng(85)
    vals = np.array(decoded_values(fmt))
    a = rng.choice(vals, 4000) * rng.choice([-1, 1], 4000)
    b = rng.choice(vals, 4000) * rng.choice([-1, 1], 4000)
    gap = np.array([neighbours(abs(Fraction(float(v))) + Fraction(1, 2**80), fmt)[1] - abs(Fraction(float(v)))
                    for v in a[:400]], dtype=np.float64)
    b[:400] = np.sign(a[:400]) * (gap / 2 + np.abs(a[:400]) * 2.0**-54)  # a + b: a float64 midpoint, inexact
    b[400:800] = -a[400:800] * (1 + rng.integers(-4, 5, 400) * 2.0**-52)
    out, flags = np.empty(4000), np.zeros(4000, dtype=np.bool_)
    fc = _kernel_format(parse_accumulation(fmt))
    left = K.quick_sums(out, a, b, fc)
    assert K.mark_sums(a, b, flags, fc) == left == flags.sum() and 0 < left < 4000
    for i in np.flatnonzero(~flags):
        v = Fraction(float(a[i])) + Fraction(float(b[i]))
        assert out[i] == round_fraction(v, fmt).value, (a[i], b[i])
    mids = (vals[1:] + vals[:-1]) / 2
    inexact_mid = np.isin(np.abs(a[:400] + b[:400]), mids) & ((a[:400] + b[:400]) - a[:400] != b[:400])
    assert inexact_mid.any() and flags[:400][inexact_mid].all()
    exact_ties = np.isin(np.abs(a + b), mids) & ((a + b) - a == b) & ((a + b) - b == a)
    exact_ties &= np.abs(a + b) < 2 * fc.quick_max  # below the top binade, left for the overflow test
    assert exact_ties.any() and not flags[exact_ties].any()
    # values of F (from lane 800 on): the join test proves every sum below the top binade
    a, b = a[800:], b[800:]
    y = np.empty(len(a))
    in_range = np.abs(a + b) < 2 * fc.quick_max
    assert fc.joins and K.quick_joins(y, a, b, fc) == (~in_range).sum()
    for i in np.flatnonzero(in_range):
        v = Fraction(float(a[i])) + Fraction(float(b[i]))
        assert y[i] == round_fraction(v, fmt).value, (a[i], b[i])


def _quick_pairs(out, w1, x1, w2, x2, flags, fc):
    left = K.quick_pairs(out, w1, w2, x1, x2, fc)
    assert K.mark_pairs(w1, w2, x1, x2, flags, fc) == left
    return left


@pytest.mark.parametrize("x1", [1 + 2.0**-29, 0.5])
@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8-e4m3fn", "e4m3", "fp4-e2m1"])
def test_quick_pair_is_right_whenever_it_answers(fmt, x1):
    """The quick pass for the sum of two products (pairwise leaves, two roundings in
    float64): first products on and next to every breakpoint of F (and tiny or huge ones),
    second products from far below an ulp to cancelling; every lane it answers is
    round_F(w1 x1 + w2 x2) exactly, and it leaves the exact ties (x1 = 0.5: w1 x1 exact)."""
    rng = np.random.default_rng(83)
    vals = np.array(decoded_values(fmt))
    mids = (vals[1:] + vals[:-1]) / 2
    x2 = float(1 - 2.0**-31)
    base = rng.choice(np.concatenate([vals, mids, vals * (1 + 2.0**-40), [2.0**-1000, 2.0**600]]), 4000)
    w1 = base * rng.choice([-1, 1], 4000) / x1
    w2 = rng.standard_normal(4000) * 2.0 ** rng.integers(-60, 8, 4000)
    w2[:400] = 0.0
    w2[400:800] = -w1[400:800] * x1 / x2 * (1 + rng.integers(-4, 5, 400) * 2.0**-52)
    out, flags = np.empty(4000), np.zeros(4000, dtype=np.bool_)
    left = _quick_pairs(out, w1, x1, w2, x2, flags, _kernel_format(parse_accumulation(fmt)))
    assert left == flags.sum() and 0 < left < 4000
    for i in np.flatnonzero(~flags):
        v = Fraction(float(w1[i])) * Fraction(x1) + Fraction(float(w2[i])) * Fraction(x2)
        assert out[i] == round_fraction(v, fmt).value, (w1[i], w2[i])
    if x1 == 0.5:
        ties = np.isin(np.abs(w1 * x1), mids) & (w2 == 0.0)
        assert ties.any() and flags[ties].all()


def test_bench_section_reports_every_case(monkeypatch):
    from analysis.benchmarks import accumulation as bench

    monkeypatch.setattr(bench, "QUICK_SIZES", ((8, 16, 12),))
    measured = bench.run(quick=True)
    rows = [r for r in measured if not r.case.startswith("tensorcore ")]
    cores = [r for r in measured if r.case.startswith("tensorcore ")]
    assert [r.case.split(" (")[0] for r in rows] == [f"linear {spec}" for spec in bench.CASES]
    assert [r.case.split(" (")[0] for r in cores] == [f"tensorcore linear {spec}" for spec in bench.TENSOR_CORES]
    for r in cores:
        assert r.unit == "ns/MAC" and r.value > 0 and r.meets is None and "linear fp16 (recursive)" in r.baselines
    fp16 = rows[0].value
    for r in rows:
        assert r.unit == "ns/MAC" and r.value > 0 and r.meets is None and r.target == ""
        fmt = r.case.split()[1].split(":")[0]
        expected = {bench.NATIVE, bench.PLAIN_LOOP, f"numpy loop + round_to({fmt})"}
        if r.case.split()[1] != "fp16":
            expected.add(bench.RECURSIVE_FP16)
            assert r.baselines[bench.RECURSIVE_FP16] == fp16
        assert set(r.baselines) == expected


def test_bench_targets_are_the_stated_ratios():
    from analysis.benchmarks import accumulation as bench

    assert set(bench.TARGETS) == {"fp16", "bf16", "fp8-e4m3fn", "fp16:pairwise", "fp16:blocked:32"}
    fast = f">= 10x faster than {bench.PLAIN_LOOP}, <= 50x {bench.NATIVE}"
    assert bench.target_text("fp16") == bench.target_text("bf16") == fast
    assert bench.target_text("fp16:pairwise") == f"<= 2x {bench.RECURSIVE_FP16}"
    base = {bench.PLAIN_LOOP: 10.0, bench.NATIVE: 0.02, bench.RECURSIVE_FP16: 0.5}
    assert bench.meets("bf16", 1.0, base) and not bench.meets("bf16", 1.01, base)
    assert not bench.meets("fp16", 1.0, {**base, bench.NATIVE: 0.0199})
    assert bench.meets("fp8-e4m3fn", 1.0, base) and not bench.meets("fp16:blocked:32", 1.001, base)
