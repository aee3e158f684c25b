"""Bounds: constants against exact rational arithmetic, the local bound of every
accumulation model against the independent oracle of docs/method.md#accumulation-models in
tests/oracles.py (fractions.Fraction, every rounding exact-then-rounded once), adversarial inputs that
make the rounding errors add up, the propagation through layers against mpmath, and the
probabilistic bound's failure rate under stochastic rounding."""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from analysis.bounds import (
    ACTIVATION_EVAL_ERROR, BoundSpec, Counts, activation_eval_error, failure_probability, gamma, gamma_tilde,
    global_bound, growth, local_bound, model_constant, parse_bound, predicted_relative_error, storage_error,
    underflow_unit, unit_roundoff, upper_abs_matmul,
)
from emulator.accumulation import parse_accumulation
from emulator.activations import ACTIVATIONS, get_activation
from emulator.errors import FormatSpecError, ShapeError
from emulator.formats import get_format
from emulator.linear import linear
from emulator.storage import parse_storage

from adversarial import stagnation
from oracles import accumulate, binomial_cdf, exact_dot


def _check_local(x, W, b, acc, bound="deterministic", sample=0):
    """(measured |ŷ - ỹ| per component, bound per component) as Fractions/floats, ŷ by the
    oracle (stochastic rounding with the random bits of ``sample``); None on overflow."""
    got = local_bound(x, W, b, acc, bound)
    out = []
    for i in range(W.shape[0]):
        bi = None if b is None else b[i]
        y = accumulate(x, W[i], bi, acc, sample, i)
        if y.overflow:
            return None
        out.append((abs(Fraction(y.value) - exact_dot(W[i], x, bi)), got[i]))
    return out


# --------------------------------------------------------------------------- constants


@pytest.mark.parametrize("k, u", [(1, 2.0**-11), (7, 2.0**-8), (64, 2.0**-11), (1000, 2.0**-24), (15, 2.0**-4)])
def test_gamma_and_growth_are_upward_and_tight(k, u):
    want = Fraction(k) * Fraction(u) / (1 - Fraction(k) * Fraction(u))
    g = gamma(k, u)
    assert Fraction(g) >= want and Fraction(math.nextafter(g, 0)) < want
    exact_growth = (1 + Fraction(u)) ** k - 1
    h = growth((k, u))
    assert Fraction(h) >= exact_growth and Fraction(h) <= exact_growth * (1 + Fraction(1, 2**50))
    assert h <= g


@pytest.mark.parametrize("k, u", [(16, 2.0**-4), (2048, 2.0**-11), (3, 0.5)])
def test_gamma_infinite_when_ku_reaches_one(k, u):
    assert gamma(k, u) == math.inf
    assert math.isfinite(growth((k, u)))


def test_growth_of_mixed_formats():
    want = (1 + Fraction(2.0**-11)) ** 5 * (1 + Fraction(2.0**-24)) ** 3 * (1 + Fraction(2.0**-8)) - 1
    got = growth((5, 2.0**-11), (3, 2.0**-24), (1, 2.0**-8))
    assert Fraction(got) >= want and Fraction(math.nextafter(got, 0)) < want * (1 + Fraction(1, 2**200)) + Fraction(1, 2**300)


@pytest.mark.parametrize("k, u, lam", [(64, 2.0**-11, 1.0), (784, 2.0**-8, 4.0), (10, 2.0**-24, 0.5)])
def test_gamma_tilde_against_mpmath(k, u, lam):
    with mpmath.workprec(300):
        want = mpmath.exp(lam * mpmath.sqrt(k) * u + k * mpmath.mpf(u) ** 2 / (1 - mpmath.mpf(u))) - 1
        got = gamma_tilde(k, u, lam)
        assert got >= want and got <= want * (1 + mpmath.ldexp(1, -50))
    assert gamma_tilde(0, u, lam) == 0.0


def test_failure_probability_formula():
    u, lam, terms = 2.0**-11, 4.0, 65
    want = terms * 2 * math.exp(-(lam**2) * (1 - u) ** 2 / 2)
    got = failure_probability(lam, u, terms)
    assert want <= got <= want * (1 + 1e-12)
    assert failure_probability(0.1, u, terms) == 1.0


@pytest.mark.parametrize(
    "fmt, mode, subnormals, u, eta",
    [
        ("fp16", "nearest", True, 2.0**-11, 2.0**-25), ("fp16", "up", True, 2.0**-10, 2.0**-24),
        ("bf16", "stochastic", True, 2.0**-7, 2.0**-133), ("fp16", "nearest", False, 2.0**-11, 2.0**-14),
        ("fp8-e4m3fn", "zero", True, 2.0**-3, 2.0**-9), ("fp64", "nearest", True, 2.0**-53, 2.0**-1074),
    ],
)
def test_unit_roundoff_and_underflow_unit(fmt, mode, subnormals, u, eta):
    assert unit_roundoff(fmt, mode) == u
    assert underflow_unit(fmt, mode, subnormals) == eta


# Path counts (F, G, P) of the longest product path and of a representable bias: the
# derivations in analysis.bounds.STRUCTURES, pinned.
@pytest.mark.parametrize(
    "spec, n, has_bias, product, bias",
    [
        ("fp16", 64, True, Counts(F=64), Counts(F=64)),
        ("fp16", 64, False, Counts(F=64), Counts(F=64)),
        ("fp16:bias=last", 64, True, Counts(F=65), Counts(F=1)),
        ("fp16:pairwise", 64, True, Counts(F=7), Counts(F=1)),
        ("fp16:pairwise", 100, False, Counts(F=7), Counts(F=1)),
        ("fp16:pairwise", 1, False, Counts(F=1), Counts(F=1)),
        ("fp16:pairwise", 1, True, Counts(F=2), Counts(F=1)),
        ("fp16:blocked:32", 100, True, Counts(F=36), Counts(F=4)),
        ("fp16:blocked:32", 10, True, Counts(F=11), Counts(F=1)),
        ("fp16:fused:4", 64, True, Counts(F=16), Counts(F=16)),
        ("fp16:fused:4:bias=last", 63, True, Counts(F=17), Counts(F=1)),
        ("e4m3:promote:32:fp32", 100, True, Counts(F=32, G=4), Counts(G=4)),
        ("fp16:products=fp8-e4m3fn", 10, True, Counts(F=10, P=1), Counts(F=10)),
        ("exact", 500, True, Counts(F=1), Counts(F=1)),
    ],
)
def test_model_paths(spec, n, has_bias, product, bias):
    c = model_constant(spec, n, has_bias)
    assert (c.product_path, c.bias_path) == (product, bias)
    acc = parse_accumulation(spec)
    fmt = get_format("fp64") if acc.is_exact else acc.fmt
    u = unit_roundoff(fmt, "nearest")
    assert c.first_order >= product.F * u


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("probabilistic", "lambda '' is not a number"), ("probabilistic:abc", "lambda 'abc' is not a number"),
        ("probabilistic:-1", "must be a finite number > 0"), ("probabilistic:inf", "must be a finite number > 0"),
        ("worstcase", "Unknown bound 'worstcase'. Possible values are: deterministic, probabilistic:LAMBDA"),
        ("deterministic:3", "Unknown bound"),
    ],
)
def test_parse_bound_errors(bad, fragment):
    with pytest.raises(FormatSpecError, match=fragment.replace("(", r"\(")):
        parse_bound(bad)


def test_parse_bound_ok():
    assert parse_bound("deterministic") == BoundSpec("deterministic")
    assert parse_bound("probabilistic:4").lam == 4.0
    with pytest.raises(ShapeError, match="n == 0"):
        model_constant("fp16", 0)


# ----------------------------------------------------------- upward float64 evaluation


def test_upper_abs_matmul_never_below_exact():
    rng = np.random.default_rng(3)
    for scale in (1.0, 2.0**-540, 2.0**-1000, 2.0**500):
        v = np.abs(rng.normal(size=(4, 33))) * scale
        W = rng.normal(size=(5, 33)) * rng.choice([1.0, 2.0**-60, 2.0**-30], size=(5, 33))
        got = upper_abs_matmul(v, W)
        for s in range(4):
            for i in range(5):
                want = sum(Fraction(float(abs(W[i, j]))) * Fraction(float(v[s, j])) for j in range(33))
                assert Fraction(got[s, i]) >= want
                if want > Fraction(2.0**-1000):
                    assert Fraction(got[s, i]) <= want * (1 + Fraction(70, 2**52))
    assert upper_abs_matmul(np.array([np.inf, 1.0]), np.array([[0.0, 1.0]]))[0] == np.inf


# ------------------------------------------------------------------ local bound: random

CONFIGS = [
    "fp16", "bf16", "tf32", "fp8-e4m3fn", "fp8-e5m2", "e4m3", "fp16:bias=last", "bf16:pairwise",
    "fp16:pairwise", "fp16:blocked:8", "bf16:blocked:8:bias=last", "fp16:fused:4", "e4m3:fused:4:bias=last",
    "e4m3:promote:8:fp32", "fp8-e5m2:promote:8:fp16", "fp16:products=fp16", "bf16:pairwise:products=bf16",
    "e4m3:promote:8:fp32:products=e4m3", "fp16:rounding=up", "bf16:rounding=down", "fp16:rounding=zero",
    "fp8-e4m3fn:blocked:8:rounding=zero", "fp16:rounding=stochastic:seed=1", "fp16:ftz", "bf16:fused:4:ftz",
    "fp16:pairwise:rounding=stochastic", "exact",
]


@pytest.mark.parametrize("spec", CONFIGS)
def test_local_bound_holds_on_random_layers(spec):
    rng = np.random.default_rng(zlib.crc32(spec.encode()))
    acc = parse_accumulation(spec)
    small = 2.0 ** (acc.fmt.emin - 3) if not acc.is_exact else 1.0
    checked = 0
    for trial in range(6):
        n = int(rng.integers(1, 40))
        scale = [1.0, 0.25, small, small * 2.0**-4, 1.0, 3.0][trial]
        W = rng.normal(size=(3, n)) * np.where(rng.random((3, n)) < 0.2, 2.0**-12, 1.0)
        x = rng.normal(size=n) * scale
        b = None if trial % 3 == 2 else rng.normal(size=3) * scale
        result = _check_local(x, W, b, acc, sample=trial)
        if result is None:
            continue
        for measured, bound in result:
            assert measured <= Fraction(bound), (spec, trial, float(measured), bound)
            checked += 1
    assert checked >= 9


def test_underflow_terms_are_needed():
    # 32 products of 2^-26 each round to 0 in fp16 (half its smallest subnormal is 2^-25)
    n = 32
    x, W = np.full(n, 2.0**-13), np.ones((1, n))
    W[0] *= 2.0**-13
    exact = n * Fraction(2.0**-26)
    y = accumulate(x, W[0], None, "fp16")
    assert y == (0.0, False)
    c = model_constant("fp16", n, False)
    assert Fraction(c.product) * exact < exact  # the relative part alone would be violated
    assert exact <= Fraction(float(local_bound(x, W, None, "fp16")[0]))
    yf = Fraction(accumulate(x, W[0], None, "fp16:ftz").value)
    assert abs(yf - exact) <= Fraction(float(local_bound(x, W, None, "fp16:ftz")[0]))


# --------------------------------------------------------- local bound: adversarial inputs


ADVERSARIAL = [
    ("fp16", 64, 1.1), ("bf16", 64, 1.5), ("fp16", 512, 1.5), ("fp16:pairwise", 64, 1.05),
    ("bf16:pairwise", 256, 1.1), ("fp16:fused:4", 64, 1.05), ("fp16:blocked:32", 256, 1.7),
    ("fp16:promote:32:fp32", 256, 1.2), ("tf32", 128, 1.15),
]


@pytest.mark.parametrize("spec, n, factor", ADVERSARIAL)
def test_adversarial_inputs_reach_the_local_bound(spec, n, factor):
    x, W = stagnation(spec, n)
    (measured, bound), = _check_local(x, W, None, spec)
    ratio = Fraction(bound) / measured
    assert 1 <= ratio <= factor, (spec, n, float(ratio))


# ---------------------------------------------------------------- probabilistic bound


def test_probabilistic_bound_failure_rate_under_stochastic_rounding():
    n, lam = 128, 4.0
    acc = parse_accumulation("bf16:rounding=stochastic")
    spec = f"probabilistic:{lam}"
    c = model_constant(acc, n, False, spec)
    rng = np.random.default_rng(11)
    x, W = np.abs(rng.normal(size=n)) + 1.0, np.ones((1, n))
    bound = float(local_bound(x, W, None, acc, spec)[0])
    det = float(local_bound(x, W, None, acc)[0])
    exact = exact_dot(W[0], x)
    trials = 300
    fails = sum(abs(Fraction(accumulate(x, W[0], None, acc, sample=t).value) - exact) > Fraction(bound)
                for t in range(trials))
    assert bound < det / 2  # a real improvement on the deterministic bound
    assert c.failure < 0.1  # and a stated probability that says something
    assert fails / trials <= c.failure, (fails, c.failure)


def test_probabilistic_bound_on_the_worst_input_for_stochastic_rounding():
    """The input that brings stochastic rounding closest to the probabilistic bound, and
    why no input brings the failure rate near the stated probability.

    x = (1, Q/2, ..., Q/2), w = 1, n = 64, fp16 with stochastic rounding (Q = 2^-10 = u,
    the quantum of [1, 2)): every addition lands exactly halfway between two fp16 values
    at the bottom of a binade, so each rounding error is +-Q/2 with probability 1/2: the
    widest range (Q <= u |v|, nearly equal here) and the largest variance a mean-zero
    rounding error can have. The error of the sum is (N - 63/2) Q with
    N ~ Binomial(63, 1/2), so the exact failure probability of every lambda is a binomial
    tail.

    The stated probability, n 2 exp(-lambda^2 (1 - u)^2 / 2), is Azuma's inequality for
    errors in [-u, u] |v| (range 2u) and a union over the n terms. A stochastic rounding
    error lies in an interval of length Q <= u |v|, for which Azuma-Hoeffding gives about
    2 exp(-2 lambda^2) for the same event of a recursive sum, whatever the input: four
    times the exponent. The stated probability is below 1 only from lambda = 3.12
    (n = 64), where the true one is below 2 exp(-2 * 3.12^2) < 10^-8 (here 4e-16 at
    lambda = 3.5, stated 0.28): no measured rate can be a visible fraction of a
    non-trivial stated probability.

    So the test holds the emulator (4000 independent runs: one random stream per sample
    row) to the exact law where failures are frequent (lambda 0.5, 1: exact two-sided
    binomial test at level 10^-6; correlated or biased random bits fail it), checks at
    every lambda that the stated probability bounds the exact one and is not rejected by
    the measured rate (exact binomial upper tail), and that the bound at a stated 0.28 is
    within a factor 3 of the largest error seen.
    """
    n, runs, level = 64, 4000, Fraction(1, 10**6)
    acc = parse_accumulation("fp16:rounding=stochastic:seed=7")
    q = Fraction(2) ** (1 - acc.fmt.p)
    x, W = np.full(n, float(q / 2)), np.ones((1, n))
    x[0] = 1.0
    exact = exact_dot(W[0], x)
    errors = [Fraction(float(v)) - exact for v in linear(np.tile(x, (runs, 1)), W, None, acc)[:, 0]]
    assert all((2 * e / q).denominator == 1 and abs(2 * e / q) <= n - 1 for e in errors)  # sums of +-Q/2
    m = n - 1
    for lam, stated_range in [(0.5, (1, 1)), (1, (1, 1)), (2, (1, 1)), (3.5, (0.01, 0.5)), (4, (0.01, 0.5))]:
        spec = f"probabilistic:{lam}"
        stated = Fraction(model_constant(acc, n, False, spec).failure)
        bound = Fraction(float(local_bound(x, W, None, acc, spec)[0]))
        law = sum((Fraction(math.comb(m, k), 2**m) for k in range(m + 1) if abs(2 * k - m) * q / 2 > bound), Fraction(0))
        fails = sum(abs(e) > bound for e in errors)
        assert stated_range[0] <= stated <= stated_range[1], (lam, float(stated))
        assert law <= stated and law <= 2 * math.exp(-2 * lam**2), (lam, float(law))
        assert binomial_cdf(fails, runs, law) >= level and 1 - binomial_cdf(fails - 1, runs, law) >= level, \
            (lam, fails, float(law))
        assert 1 - binomial_cdf(fails - 1, runs, stated) >= level, (lam, fails, float(stated))
        if lam == 3.5:
            assert 3 * max(abs(e) for e in errors) >= bound


def test_round_to_nearest_stagnation_breaks_the_probabilistic_model():
    # RN errors are not random: on stagnating sums they add up like the worst case
    x, W = stagnation("fp16", 256)
    (measured, bound), = _check_local(x, W, None, "fp16", bound="probabilistic:3")
    assert measured > Fraction(bound)


# ------------------------------------------------------------------- global bound


def _mp_layer(x_mp, W, b, act):
    y = [sum((mpmath.mpf(float(W[i, j])) * x_mp[j] for j in range(W.shape[1])), mpmath.mpf(0))
         + (0 if b is None else mpmath.mpf(float(b[i]))) for i in range(W.shape[0])]
    return y, [act.mp(v) for v in y]


@pytest.mark.parametrize("spec, storage, acts", [
    ("fp16", None, ("tanh", "identity")), ("bf16", None, ("sympy:(exp(y) - 1 - y)*1000", "sympy:y*atan(y)")), ("bf16:pairwise", "bf16", ("relu", "sigmoid")),
    ("e4m3:promote:8:fp32", "e4m3:saturate", ("gelu", "identity")), ("fp16:fused:4", "fp16", ("gelu_tanh", "silu")),
])
def test_global_bound_through_two_layers(spec, storage, acts):
    rng = np.random.default_rng(5)
    st = parse_storage(storage)
    Ws = [rng.normal(size=(6, 9)) / 3, rng.normal(size=(4, 6)) / 2]
    bs = [rng.normal(size=6) / 4, rng.normal(size=4) / 4]
    if st is not None:
        Ws, bs = [st.round(w) for w in Ws], [st.round(b) for b in bs]
    act_rows = [get_activation(a) for a in acts]
    for sample in range(3):
        x = rng.normal(size=9)
        if st is not None:
            x = st.round(x)
        with mpmath.workprec(200):
            x_mp = [mpmath.mpf(float(v)) for v in x]
            x_hat, D = x, None
            for W, b, act in zip(Ws, bs, act_rows):
                y_exact, z_exact = _mp_layer(x_mp, W, b, act)
                y_hat = np.array([accumulate(x_hat, W[i], b[i], spec).value for i in range(W.shape[0])])
                z_hat = act.f(y_hat)
                if st is not None:
                    z_hat = st.round(z_hat)
                local = local_bound(x_hat, W, b, spec)
                g = global_bound(y_hat, local, W, act, D, st)
                for i in range(W.shape[0]):
                    assert abs(mpmath.mpf(float(y_hat[i])) - y_exact[i]) <= g.pre[i], (spec, i)
                    assert abs(mpmath.mpf(float(z_hat[i])) - z_exact[i]) <= g.out[i], (spec, i)
                x_mp, x_hat, D = z_exact, z_hat, g.out


def test_sympy_activation_evaluation_error_is_measured():
    # exp(y) - 1 - y cancels in float64 for small y: the a priori 2^-44 (|v| + |y|) would not cover it
    act = get_activation("sympy:(exp(y) - 1 - y)*1000000")
    y = np.array([1e-3, -2e-4, 0.5, 3.0])
    v = act.f(y)
    generic = activation_eval_error(v, y)
    measured = activation_eval_error(v, y, act)
    with mpmath.workprec(300):
        truth = [abs(mpmath.mpf(float(vi)) - (mpmath.exp(mpmath.mpf(float(t))) - 1 - mpmath.mpf(float(t))) * 10**6)
                 for vi, t in zip(v, y)]
    assert all(mi >= ti for mi, ti in zip(measured, truth))
    assert all(mi <= ti * (1 + 1e-9) + 1e-40 for mi, ti in zip(measured, truth))
    assert truth[0] > generic[0]  # why sympy rows are measured
    assert activation_eval_error(np.array([np.nan]), np.array([1.0]), act)[0] == np.inf


def test_storage_overflow_is_not_covered():
    st = parse_storage("e4m3:saturate")
    assert storage_error(np.array([1000.0, 1.0]), st)[0] == np.inf
    assert storage_error(np.array([1000.0, 1.0]), st)[1] > 0


@pytest.mark.parametrize("name", [*ACTIVATIONS.names(), "leaky_relu:0.3", "elu:0.7"])
def test_float64_activation_error_assumption(name):
    act = get_activation(name)
    y = np.concatenate([np.linspace(-40, 40, 161), [-1e-300, -1e-12, 0.0, 1e-12, 1e-300, 700.0, -700.0]])
    v = act.f(y)
    bound = activation_eval_error(v, y)
    with mpmath.workprec(3000):
        for t, vi, bi in zip(y, v, bound):
            assert abs(mpmath.mpf(float(vi)) - act.mp(mpmath.mpf(float(t)))) <= bi, (name, t)
    assert ACTIVATION_EVAL_ERROR == 2.0**-44


def test_predicted_relative_error():
    got = predicted_relative_error([1.0, 0.0, 0.5], [10.0, np.inf, 2.0], 2.0**-11, [0.0, 0.0, 2.0**-11])
    assert got.tolist() == [10 * 2.0**-11, 0.0, 2.0 * 2.0**-11]
