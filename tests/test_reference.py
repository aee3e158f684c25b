"""The exact reference against oracles: exact rational sums (``Fraction``, rounded by
CPython's correctly rounded int division; tests/oracles.py) for linear layers, and a forward
pass at 500 bits (exact rational inner products, activations in their textbook mpmath
forms, not the module's) for everything else.

Each returned value v with radius r is checked as |v - exact| <= r, and, where the
module says the value is certified, r <= ulp(v)/2 + 2^-60 |exact| (the contract: the
final rounding to float64 plus the tolerance)."""

from __future__ import annotations

import math
import types
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator import _exactdot as K
from emulator.activations import get_activation
from emulator.errors import DataError, FormatSpecError, ModelFileError, ShapeError, UnknownNameError
from emulator.reference import (DEFAULT_TOL, FAST_TOL_MIN, ExactForward, _model, _mp_enclose, exact_forward,
                                exact_layer, exact_linear)

from oracles import dd_split, exact_affine, fraction, rn_affine

ORACLE_BITS = 500


# ---------------------------------------------------------------- oracles

def _sigmoid(y):
    return 1 / (1 + mpmath.exp(-y))


TEXTBOOK = {  # the activations as written in papers, evaluated at 500 bits
    "relu": lambda y, a: y if y > 0 else mpmath.mpf(0),
    "identity": lambda y, a: y,
    "leaky_relu": lambda y, a: y if y > 0 else mpmath.mpf(a) * y,
    "tanh": lambda y, a: mpmath.tanh(y),
    "sigmoid": lambda y, a: _sigmoid(y),
    "silu": lambda y, a: y * _sigmoid(y),
    "softplus": lambda y, a: mpmath.log(1 + mpmath.exp(y)),
    "elu": lambda y, a: y if y > 0 else mpmath.mpf(a) * (mpmath.exp(y) - 1),
    "gelu": lambda y, a: y / 2 * (1 + mpmath.erf(y / mpmath.sqrt(2))),
    "gelu_tanh": lambda y, a: y / 2 * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi)
                                                       * (y + mpmath.mpf(44715) / 10**6 * y**3))),
    "sympy:y*exp(-y*y/4) + y/3": lambda y, a: y * mpmath.exp(-y * y / 4) + y / 3,
}
DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}


def textbook(name: str):
    """sigma at the caller's precision (500 bits): evaluated at 3000 bits first, so the
    cancellations of the textbook forms (1 + erf, exp - 1, 1 + tanh) cost nothing."""
    base, _, arg = name.partition(":")
    if base == "sympy":
        form, alpha = TEXTBOOK[name], None
    else:
        form, alpha = TEXTBOOK[base], float(arg) if arg else DEFAULT_ALPHA.get(base)

    def f(y):
        with mpmath.workprec(3000):
            v = form(y, alpha)
        return +v

    return f


def oracle_forward(net, x) -> list[tuple[list, list]]:
    """Per layer, (pre-activations, outputs) of one sample as 500-bit mpmath numbers; the
    inner products exact in Fractions."""
    out = []
    with mpmath.workprec(ORACLE_BITS):
        z = [fraction(v) for v in x]
        for layer in net.layers:
            f = textbook(layer.activation if isinstance(layer.activation, str) else layer.activation.name)
            b = np.zeros(len(layer.weight)) if layer.bias is None else layer.bias
            pre = exact_affine(layer.weight, z, b)
            pre_mp = [mpmath.mpf(p.numerator) / p.denominator for p in pre]
            outs = [f(p) for p in pre_mp]
            out.append((pre_mp, outs))
            z = [fraction(v) for v in outs]
    return out


def ulp(v: float) -> float:
    v = abs(v)
    return np.nextafter(v, math.inf) - v if math.isfinite(v) else math.inf


def check_enclosure(value, radius, exact, certified=None, tol=DEFAULT_TOL, where=""):
    """|value - exact| <= radius, and radius <= ulp/2 + tol |exact| where certified."""
    with mpmath.workprec(ORACLE_BITS):
        dist = abs(mpmath.mpf(float(value)) - exact)
        assert dist <= mpmath.mpf(float(radius)), f"{where}: |{value!r} - exact| = {mpmath.nstr(dist, 5)} > {radius!r}"
        if certified:
            limit = (mpmath.mpf(ulp(value)) / 2 + tol * abs(exact)) * (1 + mpmath.mpf(2) ** -30)
            limit += mpmath.mpf(2) ** -1060
            assert radius <= limit, f"{where}: radius {radius!r} above ulp/2 + tol|exact| = {mpmath.nstr(limit, 5)}"


def net_of(sizes, acts, seed=0, scale=1.0, bias=True):
    rng = np.random.default_rng(seed)
    layers = []
    for n, m, act in zip(sizes[:-1], sizes[1:], acts):
        W = rng.standard_normal((m, n)) * scale / math.sqrt(n)
        b = 0.3 * rng.standard_normal(m) if bias else None
        layers.append(types.SimpleNamespace(weight=W, bias=b, activation=get_activation(act)))
    return types.SimpleNamespace(layers=layers)


def check_forward(net, x, result: ExactForward, tol=DEFAULT_TOL):
    for s in range(x.shape[0]):
        oracle = oracle_forward(net, x[s])
        for k, (pre, outs) in enumerate(oracle):
            for i in range(len(pre)):
                where = f"sample {s} layer {k} component {i}"
                cert = bool(result.certified[k][s, i])
                check_enclosure(result.preactivations[k][s, i], result.pre_radius[k][s, i], pre[i], cert, tol,
                                where + " pre")
                check_enclosure(result.outputs[k][s, i], result.out_radius[k][s, i], outs[i], cert, tol,
                                where + " out")


# ---------------------------------------------------------------- exact_linear

def gen_dot(n: int, bits: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """x, w of length n whose exact dot has condition number about 2^bits (Ogita, Rump &
    Oishi 2005, Alg. 6.1): the first half spans exponents 0..bits, the second half is
    chosen so that the running exact sum decays."""
    half = n // 2
    e = np.concatenate([[bits // 2, 0], rng.integers(0, bits // 2 + 1, half - 2)])
    x = list((2.0 * rng.random(half) - 1) * np.exp2(e))
    w = list((2.0 * rng.random(half) - 1) * np.exp2(e))
    exact = sum((Fraction(a) * Fraction(c) for a, c in zip(x, w)), Fraction(0))
    for ei in np.round(np.linspace(bits // 2, 0, n - half)):
        xi = float((2.0 * rng.random() - 1) * 2.0**ei)
        wi = float(((2.0 * rng.random() - 1) * 2.0**ei - float(exact)) / xi)
        x.append(xi)
        w.append(wi)
        exact += Fraction(xi) * Fraction(wi)
    perm = rng.permutation(n)
    return np.array(x)[perm], np.array(w)[perm]


def condition(w, x) -> float:
    total = sum(Fraction(a) * Fraction(c) for a, c in zip(w, x))
    return float(sum(abs(Fraction(a) * Fraction(c)) for a, c in zip(w, x)) / abs(total)) if total else math.inf


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (7, 40), (3, 300)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_random_is_correctly_rounded(shape, bias):
    rng = np.random.default_rng(shape[1])
    m, n = shape
    W = rng.standard_normal((m, n)) * np.exp2(rng.integers(-20, 20, (m, n)))
    x = rng.standard_normal((4, n)) * np.exp2(rng.integers(-20, 20, (4, n)))
    b = rng.standard_normal(m) if bias else None
    assert np.array_equal(exact_linear(x, W, b), rn_affine(x, W, b))
    assert np.array_equal(exact_linear(x[0], W, b), rn_affine(x[0], W, b))
    assert np.array_equal(exact_linear(x, W, b, path="mpmath"), rn_affine(x, W, b))


@pytest.mark.parametrize("bits", [20, 60, 100, 160])
def test_linear_ill_conditioned(bits):
    rng = np.random.default_rng(bits)
    rows = [gen_dot(50, bits, rng) for _ in range(12)]
    conds = [condition(w, x) for x, w in rows]
    assert max(conds) > 2.0 ** (bits * 0.6)  # the generator does make them ill-conditioned
    for x, w in rows:
        got = exact_linear(x, w[None, :])
        assert got[0] == rn_affine(x, w[None, :])[0]


TIES = [  # rows (w, x, b) whose exact value is a tie or next to one
    ([1.0, 2.0**-53], [1.0, 1.0], None, 1.0),
    ([1.0, 3 * 2.0**-53], [1.0, 1.0], None, 1.0 + 2.0**-51),
    ([1.0, 2.0**-53, 2.0**-200], [1.0, 1.0, 1.0], None, 1.0 + 2.0**-52),
    ([1.0, 2.0**-53, -(2.0**-200)], [1.0, 1.0, 1.0], None, 1.0),
    ([1.0, -(2.0**-54)], [1.0, 1.0], None, 1.0 - 2.0**-54),
    ([1.0, -(2.0**-54), -(2.0**-300)], [1.0, 1.0, 1.0], None, 1.0 - 2.0**-53),
    ([1e300, -1e300, 1.0], [1e10, 1e10, 3.0], 2.0**-60, 3.0),
    ([2.0**600, 2.0**600, -(2.0**600)], [2.0**500, 1.0, 2.0**500], None, 2.0**600),
    ([1e200, -1e200, 1.0], [1e200, 1e200, 1.0], None, 1.0),  # products overflow, the sum does not
    ([1e308, 1e308], [1.0, 1.0], None, math.inf),
    ([-1e308, -1e308], [1.0, 1.0], None, -math.inf),
]


@pytest.mark.parametrize("w, x, b, expected", TIES)
def test_linear_ties_and_extremes(w, x, b, expected):
    W = np.array([w])
    bias = None if b is None else np.array([b])
    assert rn_affine(np.array(x), W, bias)[0] == expected
    for path in ("fast", "mpmath"):
        assert exact_linear(np.array(x), W, bias, path=path)[0] == expected


def test_linear_subnormal_products():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((6, 9)) * 2.0**-540
    x = rng.standard_normal((5, 9)) * 2.0**-530
    W[3:, 0] = rng.standard_normal(3) * 2.0**-20  # rows 3-5: a normal product among subnormal ones
    x[1:3, 0] = 2.0**-1000
    b = rng.standard_normal(6) * 2.0**-1060
    got = exact_linear(x, W, b)
    assert np.array_equal(got, rn_affine(x, W, b))
    assert (np.abs(got) < 2.0**-1022).sum() > 10  # subnormal results
    assert np.array_equal(exact_linear(x, W, b, path="mpmath"), got)


wide_floats = st.floats(min_value=-1e200, max_value=1e200, allow_nan=False, allow_subnormal=True).filter(
    lambda v: v == 0 or abs(v) > 1e-200)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(wide_floats, wide_floats), min_size=1, max_size=12), wide_floats)
def test_linear_hypothesis(pairs, bias):
    w = np.array([p[0] for p in pairs])[None, :]
    x = np.array([p[1] for p in pairs])
    assert exact_linear(x, w, np.array([bias]))[0] == rn_affine(x, w, np.array([bias]))[0]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=8),
       st.integers(0, 2**32 - 1))
def test_linear_hypothesis_cancellation(values, seed):
    """x and -x in one row plus a perturbation: exact cancellation of arbitrary floats."""
    rng = np.random.default_rng(seed)
    x = np.array(values + values + [1.0])
    extra = rng.standard_normal() * 2.0 ** int(rng.integers(-1074, 1000))
    w = np.concatenate([np.ones(len(values)), -np.ones(len(values)), [extra]])
    perm = rng.permutation(len(x))
    assert exact_linear(x[perm], w[perm][None, :])[0] == rn_affine(x[perm], w[perm][None, :])[0]


@pytest.mark.parametrize("bits", [0, 40, 90])
def test_compensated_and_exact_dot_bounds(bits):
    """The kernels' dd results against exact Fractions, on dd inputs (hi + lo): the
    compensated bound YE holds and is within a factor 2 of its formula; the exact
    expansion is within its (tiny) bound; the radius term is sum |w| r."""
    rng = np.random.default_rng(bits)
    n, N = 60, 8
    W = np.empty((5, n))
    XH, XL = np.empty((N, n)), np.empty((N, n))
    for i in range(5):
        x, w = gen_dot(n, max(bits, 2), rng)
        W[i] = w
    for s in range(N):
        for j in range(n):
            tail = Fraction(int(rng.integers(1, 2**40)), 2**95)
            XH[s, j], XL[s, j] = dd_split(Fraction(rng.standard_normal()) * (1 + tail))
    XH[:5] = np.array([gen_dot(n, max(bits, 2), rng)[0] for _ in range(5)])  # ill-conditioned rows x samples
    XL[:5] = 0.0
    XR = np.abs(XH) * 2.0**-90
    b = rng.standard_normal(5)
    YH, YL, YE, YR = (np.empty((N, 5)) for _ in range(4))
    BAD = np.empty((N, 5), dtype=np.bool_)
    K.compensated_dot(XH, XL, XR, np.ascontiguousarray(W.T), b, YH, YL, YE, YR, BAD)
    rows, cols = np.nonzero(np.ones((N, 5), dtype=bool))
    h, l, e = (np.empty(rows.shape[0]) for _ in range(3))
    ok = np.empty(rows.shape[0], dtype=np.bool_)
    K.exact_dot_dd(XH, XL, W, b, rows, cols, h, l, e, ok)
    u = Fraction(1, 2**53)
    for k, (s, i) in enumerate(zip(rows, cols)):
        exact = sum((fraction(w) * (fraction(a) + fraction(c)) for w, a, c in zip(W[i], XH[s], XL[s])), fraction(b[i]))
        a_h = abs(fraction(b[i])) + sum(abs(fraction(w) * fraction(a)) for w, a in zip(W[i], XH[s]))
        assert not BAD[s, i] and ok[k]
        assert abs(fraction(YH[s, i]) + fraction(YL[s, i]) - exact) <= fraction(YE[s, i])
        assert fraction(YE[s, i]) <= 2 * (n + 3) * (n + 1) * u * u * a_h + Fraction(2.0**-1000)
        assert abs(fraction(h[k]) + fraction(l[k]) - exact) <= fraction(e[k])
        assert fraction(e[k]) <= Fraction(2.0**-90) * abs(exact) + Fraction(2.0**-1000)
        assert fraction(YR[s, i]) >= sum(abs(fraction(w)) * fraction(r) for w, r in zip(W[i], XR[s]))


def test_forward_ill_conditioned_first_layer():
    """Condition numbers up to about 2^100 in layer 0 (each row cancels for its own
    sample): pre-activations still RN-exact, the activations fed from the exact tier
    certified."""
    rng = np.random.default_rng(11)
    pairs = [gen_dot(40, bits, rng) for bits in (10, 50, 100, 100)]
    x = np.array([p[0] for p in pairs])
    W = np.array([p[1] for p in pairs])
    net = types.SimpleNamespace(layers=[types.SimpleNamespace(weight=W, bias=None, activation=get_activation("tanh")),
                                        types.SimpleNamespace(weight=np.ones((2, 4)), bias=None,
                                                              activation=get_activation("sigmoid"))])
    result = exact_forward(net, x)
    assert np.array_equal(result.preactivations[0], rn_affine(x, W))
    assert all(c.all() for c in result.certified)
    check_forward(net, x, result)


# ---------------------------------------------------------------- dd activation kernels

def dd_inputs(rng, n=400):
    """dd numbers over every region the kernels treat differently."""
    mags = np.concatenate([np.exp2(rng.uniform(-520, -490, 20)), np.exp2(rng.uniform(-60, -5, 60)),
                           rng.uniform(0, 2, 120), rng.uniform(2, 45, 120), rng.uniform(45, 700, 40),
                           [0.0, 2.0**-5, 40.0, 20.0, 650.0, 651.0, 1.0]])
    hi = mags * rng.choice([-1.0, 1.0], mags.shape)
    lo = hi * rng.uniform(-1, 1, hi.shape) * 2.0**-53
    hi, lo = hi + lo, lo - ((hi + lo) - hi)  # normalise
    return hi[:n], lo[:n]


KERNELS = [("relu", K.ACT_RELU, 0.0), ("identity", K.ACT_IDENTITY, 0.0), ("leaky_relu:0.2", K.ACT_LEAKY, 0.2),
           ("leaky_relu:-0.7", K.ACT_LEAKY, -0.7), ("tanh", K.ACT_TANH, 0.0), ("sigmoid", K.ACT_SIGMOID, 0.0),
           ("silu", K.ACT_SILU, 0.0), ("elu", K.ACT_ELU, 1.0), ("elu:0.3", K.ACT_ELU, 0.3),
           ("elu:-1.5", K.ACT_ELU, -1.5), ("gelu_tanh", K.ACT_GELU_TANH, 0.0), ("gelu", K.ACT_GELU, 0.0),
           ("softplus", K.ACT_SOFTPLUS, 0.0)]


@pytest.mark.parametrize("name, code, alpha", KERNELS)
def test_dd_kernels_against_500_bits(name, code, alpha):
    """|dd - sigma| <= err for every covered argument, and err <= 2^-90 |sigma| (plus
    2^-1000): the kernels are rigorous and strong enough for the 2^-60 default."""
    hi, lo = dd_inputs(np.random.default_rng(code))
    zh, zl, err = (np.empty_like(hi) for _ in range(3))
    ok = np.empty(hi.shape, dtype=np.bool_)
    K.act_array(code, alpha, hi, lo, zh, zl, err, ok)
    f = textbook(name)
    covered = 0
    with mpmath.workprec(ORACLE_BITS):
        for h, l, a, b, e, good in zip(hi, lo, zh, zl, err, ok):
            if not good:
                assert h < -19, f"{name} does not cover {h!r}"
                continue
            covered += 1
            exact = f(mpmath.mpf(h) + mpmath.mpf(l))
            dist = abs(mpmath.mpf(a) + mpmath.mpf(b) - exact)
            assert dist <= e, f"{name}({h!r} + {l!r}): error {mpmath.nstr(dist, 5)} > bound {e!r}"
            assert e <= 2.0**-90 * abs(exact) + 2.0**-1000, f"{name}({h!r}): bound {e!r} weak"
    assert covered > 300


def test_exp_core_against_500_bits():
    rng = np.random.default_rng(3)
    xs = np.concatenate([rng.uniform(-650, 708, 300), rng.uniform(-1e-3, 1e-3, 50), np.exp2(rng.uniform(-300, -20, 30)),
                         [0.0, -650.0, 708.0, math.log(2) / 1024, -math.log(2) / 2048]])
    with mpmath.workprec(ORACLE_BITS):
        for x in xs:
            xl = float(x) * 2.0**-60 * rng.uniform(-1, 1)
            xh, xl = x + xl, xl - ((x + xl) - x)
            for minus in (0.0, 1.0):
                zh, zl, rel = K.exp_core(xh, xl, minus)
                exact = mpmath.exp(mpmath.mpf(xh) + mpmath.mpf(xl)) - minus
                dist = abs(mpmath.mpf(zh) + mpmath.mpf(zl) - exact)
                assert dist <= rel * abs(exact) * (1 + 2.0**-40), f"exp({xh!r}) - {minus}"
                assert rel <= 2.0**-94, f"exp({xh!r}) - {minus}: rel {rel!r}"


# ---------------------------------------------------------------- mpmath enclosures (the definition)

MP_ACTS = ["relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "silu", "softplus", "elu", "leaky_relu:-0.5",
           "sympy:y*exp(-y*y/4) + y/3"]


@pytest.mark.parametrize("name", MP_ACTS)
def test_mpmath_enclosure_against_500_bits(name):
    act = get_activation(name)
    model = _model(act)
    f = textbook(name)
    rng = np.random.default_rng(len(name))
    ys = np.concatenate([rng.uniform(-30, 30, 25), [0.0, model.y0, model.y0 + 1e-12, -1e-30, 1e-30]])
    radii = (0.0, 2.0**-70) if model.shape is None else (0.0, 2.0**-70, 1e-3)  # sympy: first order, tiny radii
    for y in ys:
        for ry in radii:
            y_raw = mpmath.mpf(float(y))._mpf_
            c, r = _mp_enclose(act, model, y_raw, ry, 113)
            with mpmath.workprec(ORACLE_BITS):
                centre = mpmath.mp.make_mpf(c)
                for t in (mpmath.mpf(float(y)) - ry, mpmath.mpf(float(y)), mpmath.mpf(float(y)) + ry):
                    assert abs(f(t) - centre) <= r, f"{name} at {y!r} +- {ry!r}"
                if ry == 0.0 and f(mpmath.mpf(float(y))) != 0:
                    assert r <= 2.0**-100 * abs(f(mpmath.mpf(float(y)))) + 2.0**-1060, f"{name} at {y!r}: radius {r!r}"


# ---------------------------------------------------------------- forward passes

FORWARD_NETS = [
    ((6, 9, 7, 3), ("tanh", "tanh", "identity")),
    ((5, 8, 4), ("relu", "sigmoid")),
    ((4, 6, 5), ("silu", "gelu_tanh")),
    ((4, 6, 3), ("gelu", "softplus")),
    ((4, 5, 3), ("elu", "leaky_relu:-0.3")),
    ((3, 5, 2), ("sympy:y*exp(-y*y/4) + y/3", "tanh")),
]


@pytest.mark.parametrize("sizes, acts", FORWARD_NETS)
def test_forward_fast_against_500_bits(sizes, acts):
    net = net_of(sizes, acts, seed=len(acts[0]), scale=2.0)
    x = np.random.default_rng(1).standard_normal((4, sizes[0])) * 2
    result = exact_forward(net, x)
    for k in range(len(acts)):
        assert result.certified[k].all()
    check_forward(net, x, result)
    first = net.layers[0]
    assert np.array_equal(result.preactivations[0], rn_affine(x, first.weight, first.bias))


@pytest.mark.parametrize("sizes, acts", FORWARD_NETS[:3])
def test_mpmath_path_agrees_with_fast_path(sizes, acts):
    net = net_of(sizes, acts, seed=3, scale=2.0)
    x = np.random.default_rng(2).standard_normal((3, sizes[0]))
    fast = exact_forward(net, x)
    slow = exact_forward(net, x, path="mpmath")
    check_forward(net, x, slow)
    for k in range(len(acts)):
        assert slow.certified[k].all() and slow.fallback[k].all() and not fast.fallback[k].any()
        for a, b in (("preactivations", "pre_radius"), ("outputs", "out_radius")):
            gap = np.abs(getattr(fast, a)[k] - getattr(slow, a)[k])
            assert np.all(gap <= getattr(fast, b)[k] + getattr(slow, b)[k])


def test_single_sample_and_exact_layer():
    net = net_of((5, 4, 3), ("tanh", "sigmoid"), seed=9)
    x = np.random.default_rng(4).standard_normal(5)
    one = exact_forward(net, x)
    many = exact_forward(net, x[None, :])
    for k in range(2):
        assert one.outputs[k].shape == (net.layers[k].weight.shape[0],)
        assert np.array_equal(one.outputs[k], many.outputs[k][0])
    pre, pre_r, out, out_r = exact_layer(x, net.layers[0])
    assert np.array_equal(pre, rn_affine(x, net.layers[0].weight, net.layers[0].bias))
    assert np.array_equal(out, one.outputs[0]) and np.array_equal(out_r, one.out_radius[0])
    oracle = oracle_forward(types.SimpleNamespace(layers=net.layers[:1]), x)[0]
    for i in range(len(pre)):
        check_enclosure(pre[i], pre_r[i], oracle[0][i], True)
        check_enclosure(out[i], out_r[i], oracle[1][i], True)


def test_tighter_tolerance_returns_mpmath_numbers():
    net = net_of((4, 5, 3), ("tanh", "identity"), seed=5)
    x = np.random.default_rng(5).standard_normal((2, 4))
    tol = 2.0**-150
    result = exact_forward(net, x, tol=tol)
    assert tol < FAST_TOL_MIN and result.path == "mpmath"
    check_forward(net, x, result, tol)
    for k in range(2):
        assert result.certified[k].all()
        oracle = [oracle_forward(net, x[s])[k][1] for s in range(2)]
        with mpmath.workprec(ORACLE_BITS):
            for s in range(2):
                for i in range(len(oracle[s])):
                    exact = oracle[s][i]
                    dist = abs(result.mp_outputs[k][s, i] - exact)
                    assert dist <= result.mp_out_radius[k][s, i] <= tol * abs(exact) * (1 + 2.0**-30)


def test_fallback_where_the_fast_certificate_is_too_weak():
    """Layer 1 computes tanh(x0) - tanh(x0 + x1): with x1 = 2^-70 it cancels by ~2^70, more
    than the double-double certificate (~2^-100 absolute) can resolve to 2^-60; that
    sample is recomputed by mpmath (at doubled precision), the other is not."""
    first = types.SimpleNamespace(weight=np.array([[1.0, 0.0], [1.0, 1.0]]), bias=None,
                                  activation=get_activation("tanh"))
    second = types.SimpleNamespace(weight=np.array([[1.0, -1.0], [0.5, 0.25]]), bias=None,
                                   activation=get_activation("identity"))
    net = types.SimpleNamespace(layers=[first, second])
    x = np.array([[0.5, 2.0**-70], [0.5, 0.25]])
    result = exact_forward(net, x)
    assert not result.fallback[0].any()
    assert result.fallback[1].tolist() == [[True, True], [False, False]]
    assert result.certified[1].all()
    check_forward(net, x, result)
    assert 2.0**-72 < abs(result.outputs[1][0, 0]) < 2.0**-70


def test_fallback_for_activation_outside_the_kernel():
    """sigmoid below -650 is outside the dd kernel: mpmath evaluates that component."""
    layer = types.SimpleNamespace(weight=np.array([[1.0], [2.0]]), bias=None, activation=get_activation("sigmoid"))
    net = types.SimpleNamespace(layers=[layer])
    x = np.array([[-400.0], [1.0]])
    result = exact_forward(net, x)
    assert result.fallback[0].tolist() == [[False, True], [False, False]]
    assert result.certified[0].all()
    check_forward(net, x, result)


def test_exact_zeros_are_certified_without_fallback():
    """Zero inputs and no bias: every value is exactly 0, certified by the absolute floor
    (the radii only carry the underflow allowance), without any mpmath work."""
    net = net_of((3, 4, 2), ("relu", "tanh"), seed=1, bias=False)
    result = exact_forward(net, np.zeros((2, 3)))
    for k in range(2):
        assert not result.outputs[k].any() and not result.preactivations[k].any()
        assert (result.out_radius[k] <= 2.0**-1060).all() and result.certified[k].all() and not result.fallback[k].any()


def test_batches_give_the_same_pass(monkeypatch):
    from emulator import reference

    net = net_of((5, 7, 3), ("tanh", "identity"), seed=2)
    x = np.random.default_rng(3).standard_normal((9, 5))
    whole = exact_forward(net, x)
    monkeypatch.setattr(reference, "BATCH", 4)
    batched = exact_forward(net, x)
    for name in ("preactivations", "outputs", "pre_radius", "out_radius", "certified", "fallback"):
        assert all(np.array_equal(a, b) for a, b in zip(getattr(whole, name), getattr(batched, name)))


# ---------------------------------------------------------------- bad input

W3 = np.ones((2, 3))
NET = net_of((3, 2), ("tanh",))
BAD = [
    (lambda: exact_linear(np.ones(4), W3), ShapeError, "x has 4 features per sample, the first layer takes 3"),
    (lambda: exact_linear(np.ones((2, 2, 3)), W3), ShapeError, "x must have 1 or 2 dimensions, got shape (2, 2, 3)"),
    (lambda: exact_linear([[1.0, np.nan, 0.0]], W3), DataError, "x contains NaN or Inf (1 entries, first at [0, 1])"),
    (lambda: exact_linear(["a", "b", "c"], W3), DataError, "x must hold real numbers, got dtype <U1"),
    (lambda: exact_linear(np.ones(3), np.ones(3)), ShapeError, "weight must have 2 dimensions, got shape (3,)"),
    (lambda: exact_linear(np.ones(3), np.full((2, 3), np.inf)), DataError, "weight contains NaN or Inf (6 entries, first at [0, 0])"),
    (lambda: exact_linear(np.ones(3), W3, np.ones(3)), ShapeError, "bias has shape (3,), expected (2,)"),
    (lambda: exact_linear(np.ones(3), W3, precision=10), FormatSpecError, "precision == 10, must be between 53"),
    (lambda: exact_linear(np.ones(3), W3, precision=113.5), FormatSpecError, "precision == 113.5, must be an integer"),
    (lambda: exact_linear(np.ones(3), W3, path="fastest"), UnknownNameError, "Possible values are: fast, mpmath"),
    (lambda: exact_forward(NET, np.ones(3), tol=0.0), FormatSpecError, "tol == 0.0, must be in (0, 1)"),
    (lambda: exact_forward(NET, np.ones(3), tol="small"), FormatSpecError, "tol == 'small', must be a number"),
    (lambda: exact_forward(object(), np.ones(3)), ModelFileError, "object has no 'layers'"),
    (lambda: exact_forward(types.SimpleNamespace(layers=[]), np.ones(3)), ModelFileError, "the network has no layers"),
    (lambda: exact_forward(types.SimpleNamespace(layers=[types.SimpleNamespace(bias=None, activation="tanh")]),
                           np.ones(3)), ModelFileError, "layer 0 has no attribute 'weight'"),
    (lambda: exact_forward(types.SimpleNamespace(layers=NET.layers * 2), np.ones(3)), ShapeError,
     "layer 1 takes 3 inputs but layer 0 has 2 outputs"),
    (lambda: exact_forward(types.SimpleNamespace(layers=[types.SimpleNamespace(weight=W3, bias=None,
                                                                                activation="tanhh")]), np.ones(3)),
     UnknownNameError, "Unknown activation 'tanhh'"),
    (lambda: exact_layer(np.ones(2), NET.layers[0]), ShapeError, "x has 2 features per sample"),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_bad_input(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, code", [("gelu", K.ACT_GELU), ("softplus", K.ACT_SOFTPLUS)])
def test_dd_kernels_at_their_range_ends(name, code):
    """Where gelu and softplus switch form (the clamps at 36 and 600), at 0 and tiny |y|."""
    ys = np.array([0.0, 2.0**-800, 2.0**-30, 0.7, 35.99, 36.0, 36.01, 40.0, 599.9, 600.0, 600.1, 1e4])
    hi = np.concatenate([ys, -ys])
    lo = hi * 2.0**-54
    zh, zl, err = (np.empty_like(hi) for _ in range(3))
    ok = np.empty(hi.shape, dtype=np.bool_)
    K.act_array(code, 0.0, hi, lo, zh, zl, err, ok)
    f = textbook(name)
    limit = 36.0 if name == "gelu" else 600.0
    with mpmath.workprec(ORACLE_BITS):
        for h, l, a, b, e, good in zip(hi, lo, zh, zl, err, ok):
            assert good == (h >= -limit), (name, h)
            if good:
                exact = f(mpmath.mpf(h) + mpmath.mpf(l))
                assert abs(mpmath.mpf(a) + mpmath.mpf(b) - exact) <= e, (name, h)
                assert e <= 2.0**-90 * abs(exact) + 2.0**-1000, (name, h)


def test_erfcx_core_against_500_bits():
    """erfcx on [0, 25.5] within its bound, for every argument within dx of the dd given."""
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.uniform(0, 25.5, 200), [0.0, 1 / 16, 1 / 8, 25.46, 2.0**-40]])
    with mpmath.workprec(ORACLE_BITS):
        for x in xs:
            for dx in (0.0, 2.0**-90 * max(x, 1.0)):
                gh, gl, err = K.erfcx_core(x, 0.0, dx)
                for t in {mpmath.mpf(x) - dx, mpmath.mpf(x), mpmath.mpf(x) + dx}:
                    if t >= 0:
                        want = mpmath.erfc(t) * mpmath.exp(t**2)
                        assert abs(mpmath.mpf(gh) + gl - want) <= err, (x, dx, t)
                if dx == 0:
                    assert err <= 2.0**-95 * (mpmath.mpf(gh) + gl) + 2.0**-1000, x
