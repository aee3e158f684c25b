"""Bounds: constants against exact rational arithmetic, the local bound of every
accumulation model against an independent oracle of docs/method.md#accumulation-models written here
with fractions.Fraction (every rounding exact-then-rounded once), adversarial inputs that
make the rounding errors add up, the propagation through layers against mpmath, and the
probabilistic bound's failure rate under stochastic rounding."""

from __future__ import annotations

import math
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
from emulator.network import parse_storage

# ------------------------------------------------------------------ the oracle (Fractions)


def round_frac(q: Fraction, fmt, mode: str = "nearest", subnormals: bool = True, rng=None) -> Fraction:
    """q rounded once to ``fmt`` (exact rational arithmetic); OverflowError beyond max."""
    fmt = get_format(fmt)
    if q == 0:
        return Fraction(0)
    neg, a = q < 0, abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    quantum = Fraction(2) ** (max(e, fmt.emin) - fmt.p + 1)
    scaled = a / quantum
    low = scaled.numerator // scaled.denominator
    rem = scaled - low
    if mode == "nearest":
        up = rem > Fraction(1, 2) or (rem == Fraction(1, 2) and low % 2 == 1)
    elif mode == "zero":
        up = False
    elif mode == "up":
        up = rem > 0 and not neg
    elif mode == "down":
        up = rem > 0 and neg
    else:
        up = rem > 0 and Fraction(rng.random()) < rem
    mag = (low + up) * quantum
    if mag > Fraction(fmt.max):
        raise OverflowError
    if not subnormals and mag < Fraction(fmt.min_normal):
        mag = Fraction(0)
    return -mag if neg else mag


def oracle(x, w, b, acc, rng=None) -> Fraction:
    """ŷ = sum_j w_j x_j + b accumulated as docs/method.md#accumulation-models says."""
    acc = parse_accumulation(acc)
    if acc.is_exact:
        total = sum((Fraction(float(wj)) * Fraction(float(xj)) for wj, xj in zip(w, x)), Fraction(0))
        return round_frac(total + (0 if b is None else Fraction(float(b))), "fp64")
    mode, sub = acc.rounding.name, acc.subnormals

    def R(q, fmt=acc.fmt):
        return round_frac(q, fmt, mode, sub, rng)

    prods = [Fraction(float(wj)) * Fraction(float(xj)) for wj, xj in zip(w, x)]
    if acc.products != "exact":
        prods = [R(p, acc.products) for p in prods]
    bias = None if b is None else Fraction(float(b))
    first = bias is not None and acc.bias == "first"
    last = bias is not None and acc.bias == "last"
    order, n = acc.order, len(prods)
    if order == "pairwise":  # adjacent pairs level by level, an odd last one carried up unrounded
        level = prods if n > 1 else [R(prods[0])]
        while len(level) > 1:
            pairs = [R(level[k] + level[k + 1]) for k in range(0, len(level) - 1, 2)]
            level = pairs + level[len(pairs) * 2:]
        return R(level[0] + bias) if bias is not None else level[0]
    wide = acc.wide if order == "promote" else acc.fmt
    t = R(bias, wide) if first else Fraction(0)
    if order == "recursive":
        for p in prods:
            t = R(t + p)
    else:
        size = acc.block
        for k in range(0, n, size):
            group = prods[k:k + size]
            if order == "fused":
                t = R(t + sum(group))
                continue
            s = Fraction(0)
            for p in group:
                s = R(s + p)
            t = R(t + s, wide)
    return R(t + bias, wide) if last else t


def _check_local(x, W, b, acc, rng=None, bound="deterministic"):
    """(measured |ŷ - ỹ| per component, bound per component) as Fractions/floats; None on overflow."""
    got = local_bound(x, W, b, acc, bound)
    out = []
    for i in range(W.shape[0]):
        exact = sum((Fraction(float(wj)) * Fraction(float(xj)) for wj, xj in zip(W[i], x)), Fraction(0))
        if b is not None:
            exact += Fraction(float(b[i]))
        try:
            y = oracle(x, W[i], None if b is None else b[i], acc, rng)
        except OverflowError:
            return None
        out.append((abs(y - exact), got[i]))
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
    rng = np.random.default_rng(abs(hash(spec)) % 2**32)
    acc = parse_accumulation(spec)
    small = 2.0 ** (acc.fmt.emin - 3) if not acc.is_exact else 1.0
    checked = 0
    for trial in range(6):
        n = int(rng.integers(1, 40))
        scale = [1.0, 0.25, small, small * 2.0**-4, 1.0, 3.0][trial]
        W = rng.normal(size=(3, n)) * np.where(rng.random((3, n)) < 0.2, 2.0**-12, 1.0)
        x = rng.normal(size=n) * scale
        b = None if trial % 3 == 2 else rng.normal(size=3) * scale
        result = _check_local(x, W, b, acc, np.random.default_rng(trial))
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
    y = oracle(x, W[0], None, "fp16")
    assert y == 0
    c = model_constant("fp16", n, False)
    assert Fraction(c.product) * exact < exact  # the relative part alone would be violated
    assert exact <= Fraction(float(local_bound(x, W, None, "fp16")[0]))
    yf = oracle(x, W[0], None, "fp16:ftz")
    assert abs(yf - exact) <= Fraction(float(local_bound(x, W, None, "fp16:ftz")[0]))


# --------------------------------------------------------- local bound: adversarial inputs


def _stagnation(acc, n):
    """Inputs that lose nearly u of the running sum at every rounding: a leading 1 and
    terms just below half an ulp of 1 (w = 1), laid out for the model's tree or blocks."""
    acc = parse_accumulation(acc)
    u = unit_roundoff(acc.fmt)
    tiny = u * (1 - 2.0**-6)
    x = np.zeros(n)
    x[0] = 1.0
    if acc.order == "pairwise":  # one nonzero leaf in each right subtree along the leftmost path
        k = 1
        while k < n:
            x[k] = tiny
            k *= 2
    elif acc.order == "fused":  # K products per rounding: each group sums to just below u
        x[1:] = tiny / acc.block
        x[1:acc.block] = tiny / (acc.block - 1)
    else:
        x[1:] = tiny
    return x, np.ones((1, n))


ADVERSARIAL = [
    ("fp16", 64, 1.1), ("bf16", 64, 1.5), ("fp16", 512, 1.5), ("fp16:pairwise", 64, 1.05),
    ("bf16:pairwise", 256, 1.1), ("fp16:fused:4", 64, 1.05), ("fp16:blocked:32", 256, 1.7),
    ("fp16:promote:32:fp32", 256, 1.2), ("tf32", 128, 1.15),
]


@pytest.mark.parametrize("spec, n, factor", ADVERSARIAL)
def test_adversarial_inputs_reach_the_local_bound(spec, n, factor):
    x, W = _stagnation(spec, n)
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
    exact = sum(Fraction(float(v)) for v in x)
    trials = 300
    fails = sum(abs(oracle(x, W[0], None, acc, np.random.default_rng(1000 + t)) - exact) > Fraction(bound)
                for t in range(trials))
    assert bound < det / 2  # a real improvement on the deterministic bound
    assert c.failure < 0.1  # and a stated probability that says something
    assert fails / trials <= c.failure, (fails, c.failure)


def test_round_to_nearest_stagnation_breaks_the_probabilistic_model():
    # RN errors are not random: on stagnating sums they add up like the worst case
    x, W = _stagnation("fp16", 256)
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
                y_hat = np.array([float(oracle(x_hat, W[i], b[i], spec)) for i in range(W.shape[0])])
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
