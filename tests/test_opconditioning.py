"""Condition numbers of graph operators (analysis.opconditioning) against the definition
kappa_i = sum_j |dy_i/dx_j| |x_j| / |y_i|, each partial derivative taken by mpmath.diff at
40 digits of the operator written here in mpmath (independently of the emulator, except
for pure data movement, whose function is the emulator's own evaluation on mpmath
arrays); outputs passed to the closed forms are the exact ones rounded to float64. Edge
cases: dominant softmax rows, LayerNorm at and near the mean, cancelling sums, zeros,
negative values, negative and fractional powers, Gelu far left, LogSoftmax near 0, masked
scores. An MLP's graph reproduces ``condition_numbers`` and ``activation_condition``
exactly."""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest

from analysis.conditioning import absolute_sums, activation_condition, condition_numbers
from analysis.opconditioning import (
    OP_CONDITIONS, batched_absolute_sums, erf_condition, lamp_relaxed, lamp_strict,
    op_condition, rms_norm_condition, site_absolute_sums,
)
from emulator.errors import ModelFileError
from emulator.graph.arithmetic import Native
from emulator.graph.convert import network_to_graph
from emulator.graph.engine import Context, forward
from emulator.graph.ir import Node
from emulator.graph.ops import OPS
from emulator.modelio import load_model

from oracles import exact_dot, rn64

DPS = 40
REL = 1e-11


# ---------------------------------------------------------------- the oracle


def mp_array(a) -> np.ndarray:
    """A float64 array as an object array of the same mpmath numbers."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(a.shape):
        out[idx] = mpmath.mpf(float(a[idx]))
    return out


def to_float(a) -> np.ndarray:
    """An array of mpmath numbers rounded to float64 (nearest)."""
    a = np.asarray(a, dtype=object)
    out = np.empty(a.shape)
    for idx in np.ndindex(a.shape):
        out[idx] = float(a[idx])
    return out


def sensitivities(fn, inputs, perturbed, dps: int = DPS):
    """(y, M): y = fn(inputs) and M[i][(k, j)] = |dy_i / dx_kj| |x_kj| for the perturbed
    inputs k, each partial by mpmath.diff (fn is evaluated once per step and input
    component, every output read from it)."""
    with mpmath.workdps(dps):
        xs = [mp_array(a) for a in inputs]
        y = np.asarray(fn(*xs), dtype=object)
        rows = {i: {} for i in np.ndindex(y.shape)}
        for k in perturbed:
            for idx in np.ndindex(xs[k].shape):
                x0 = xs[k][idx]
                cache: dict = {}

                def out(t, k=k, idx=idx, cache=cache):
                    if t not in cache:
                        moved = [a.copy() for a in xs]
                        moved[k][idx] = t
                        cache[t] = np.asarray(fn(*moved), dtype=object)
                    return cache[t]

                for i in rows:
                    rows[i][(k, idx)] = abs(mpmath.diff(lambda t: out(t)[i], x0) * x0)
        return y, rows


def mp_kappa(fn, inputs, perturbed, dps: int = DPS):
    """(kappa, y): kappa_i = sum of row i of the sensitivities / |y_i| with 0/0 = 0 and
    c/0 = inf, as float64; y the exact outputs rounded to float64."""
    with mpmath.workdps(dps):
        y, rows = sensitivities(fn, inputs, perturbed, dps)
        kappa = np.empty(y.shape)
        for i, row in rows.items():
            num = mpmath.fsum(row.values())
            kappa[i] = 0.0 if num == 0 else (math.inf if y[i] == 0 else float(num / abs(y[i])))
        return kappa, to_float(y)


def assert_kappa(got, want, rel: float = REL):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert np.array_equal(np.isinf(got), np.isinf(want)), (got, want)
    assert np.array_equal(got == 0, want == 0), (got, want)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=rel, atol=0)


def check_node(node, inputs, fn, perturbed, rel: float = REL, dps: int = DPS, factor: float = 1.0):
    """op_condition at the exact outputs equals the oracle's kappa (times ``factor``)."""
    floats = [a for a in inputs if a is None or np.asarray(a).dtype.kind == "f"]
    want, y = mp_kappa(fn, [a for a in floats if a is not None], perturbed, dps)
    got = op_condition(node, inputs, [y])
    assert_kappa(factor * got, want, rel)
    return got


def vec(fn):
    return np.vectorize(fn, otypes=[object])


mexp, merf, mtanh, msqrt = vec(mpmath.exp), vec(mpmath.erf), vec(mpmath.tanh), vec(mpmath.sqrt)
RNG_SEED = 20250315


def rng(k: int = 0):
    return np.random.default_rng(RNG_SEED + k)


def node(op: str, n_in: int = 1, n_out: int = 1, **attrs) -> Node:
    return Node(f"{op.lower()}0", op, tuple(f"in{k}" for k in range(n_in)), tuple(f"out{k}" for k in range(n_out)), attrs)


# ---------------------------------------------------------------- the registry


def test_every_emulator_operator_has_a_row():
    assert set(OP_CONDITIONS.names()) == set(OPS.names())
    assert {r.op for r in OP_CONDITIONS.rows() if r.site} == {
        "Gemm", "MatMul", "Einsum", "Conv", "ReduceSum", "ReduceMean", "AveragePool", "GlobalAveragePool"}


def test_unknown_op_raises_one_line():
    with pytest.raises(ModelFileError, match=r"^unsupported op 'Frobnicate' \(node 'f'\)") as err:
        op_condition(Node("f", "Frobnicate", ("a",), ("b",)), [np.ones(2)], [np.ones(2)])
    assert "\n" not in str(err.value)
    with pytest.raises(ModelFileError, match="not an accumulation site"):
        site_absolute_sums(node("Add", 2), [np.ones(2), np.ones(2)])
    with pytest.raises(ModelFileError, match="no condition number for output 1"):
        op_condition(node("LayerNormalization", 2, 3), [np.arange(3.0), np.ones(3)], [np.ones(3), np.ones(1), np.ones(1)],
                     output=1)


def test_integer_outputs_and_integer_ops_have_none():
    assert op_condition(node("Shape"), [np.ones((2, 3))], [np.array([2, 3])]) is None
    assert op_condition(node("Add", 2), [np.array([1, 2]), np.array([3, 4])], [np.array([4, 6])]) is None
    assert op_condition(node("Dropout", 1, 2), [np.ones(3)], [np.ones(3), np.ones(3, dtype=np.int64)], output=1) is None


# ---------------------------------------------------------------- accumulation sites


def mp_conv(x, w, b, strides, pads, dilations, group):
    """Direct convolution of object arrays: x (N, C, *S), w (M, C/group, *K)."""
    d = x.ndim - 2
    xp = np.pad(x, ((0, 0), (0, 0), *((pads[i], pads[i + d]) for i in range(d))), constant_values=mpmath.mpf(0))
    kernel = w.shape[2:]
    out_sizes = [(xp.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(d)]
    cin, cout_g = w.shape[1], w.shape[0] // group
    y = np.empty((x.shape[0], w.shape[0], *out_sizes), dtype=object)
    for n, co, *pos in itertools.product(range(x.shape[0]), range(w.shape[0]), *map(range, out_sizes)):
        g = co // cout_g
        total = mpmath.mpf(0) if b is None else b[co]
        for ci, *k in itertools.product(range(cin), *map(range, kernel)):
            at = tuple(pos[i] * strides[i] + k[i] * dilations[i] for i in range(d))
            total += xp[(n, g * cin + ci, *at)] * w[(co, ci, *k)]
        y[(n, co, *pos)] = total
    return y


def mp_average_pool(x, kernel, strides, pads):
    """Mean over each window of the in-bounds cells (padding excluded)."""
    d = x.ndim - 2
    sizes = x.shape[2:]
    out_sizes = [(sizes[i] + pads[i] + pads[i + d] - kernel[i]) // strides[i] + 1 for i in range(d)]
    y = np.empty((*x.shape[:2], *out_sizes), dtype=object)
    for n, c, *pos in itertools.product(*map(range, x.shape[:2]), *map(range, out_sizes)):
        cells = []
        for k in itertools.product(*map(range, kernel)):
            at = [pos[i] * strides[i] + k[i] - pads[i] for i in range(d)]
            if all(0 <= at[i] < sizes[i] for i in range(d)):
                cells.append(x[(n, c, *at)])
        y[(n, c, *pos)] = mpmath.fsum(cells) / len(cells)
    return y


def _sites():
    r = rng(1)
    x, W, b = r.standard_normal((3, 4)), r.standard_normal((2, 4)), r.standard_normal(2)
    A = r.standard_normal((4, 3))
    C = r.standard_normal((3, 2))
    x3, W2 = r.standard_normal((2, 3, 4)), r.standard_normal((4, 5))
    q, k = r.standard_normal((2, 3, 4)), r.standard_normal((2, 4, 3))
    e1, e2 = r.standard_normal((2, 3, 4)), r.standard_normal((2, 5, 4))
    xc, wc, bc = r.standard_normal((1, 4, 5, 5)), r.standard_normal((4, 2, 3, 3)), r.standard_normal(4)
    x1, w1 = r.standard_normal((2, 2, 7)), r.standard_normal((3, 2, 2))
    xr = r.standard_normal((2, 3, 4))
    xp = r.standard_normal((1, 2, 4, 3))
    conv_attrs = dict(group=2, pads=(1, 0, 0, 1), strides=(2, 1))
    return [
        # (id, node, inputs, mp function of the float inputs, perturbed, factor)
        ("gemm", node("Gemm", 3, transB=1), [x, W, b], lambda x, W, b: x @ W.T + b, [0, 2], 1),
        ("gemm-transA-C-after", node("Gemm", 3, transA=1, transB=1), [A, W, C], lambda A, W, C: A.T @ W.T + C, [0, 2], 1),
        ("matmul-shared", node("MatMul", 2), [x3, W2], lambda x, W: x @ W, [0], 1),
        ("matmul-batched-first", node("MatMul", 2), [q, k], lambda q, k: q @ k, [0], 1),
        ("matmul-batched-both", node("MatMul", 2), [q, k], lambda q, k: q @ k, [0, 1], 2),
        ("einsum-batched-both", node("Einsum", 2, equation="bij,bkj->bik"), [e1, e2],
         lambda a, c: np.einsum("bij,bkj->bik", a, c), [0, 1], 2),
        ("einsum-shared", node("Einsum", 2, equation="tj,ij->ti"), [x, W], lambda x, W: np.einsum("tj,ij->ti", x, W), [0], 1),
        ("conv2d-groups", node("Conv", 3, **conv_attrs), [xc, wc, bc],
         lambda x, w, b: mp_conv(x, w, b, (2, 1), (1, 0, 0, 1), (1, 1), 2), [0, 2], 1),
        ("conv1d-dilated", node("Conv", 2, dilations=(2,)), [x1, w1],
         lambda x, w: mp_conv(x, w, None, (1,), (0, 0), (2,), 1), [0], 1),
        ("reduce-sum", node("ReduceSum", 2, keepdims=0), [xr, np.array([0, 2])], lambda x: np.sum(x, axis=(0, 2)), [0], 1),
        ("reduce-mean", node("ReduceMean", 1, axes=(-1,)), [xr], lambda x: np.sum(x, axis=-1, keepdims=True) / 4, [0], 1),
        ("average-pool", node("AveragePool", 1, kernel_shape=(2, 2), pads=(1, 1, 0, 0)), [xp],
         lambda x: mp_average_pool(x, (2, 2), (1, 1), (1, 1, 0, 0)), [0], 1),
        ("global-average-pool", node("GlobalAveragePool"), [xp], lambda x: np.sum(x, axis=(2, 3), keepdims=True) / 12,
         [0], 1),
    ]


@pytest.mark.parametrize("case", _sites(), ids=lambda c: c[0])
def test_site_is_the_terms_condition_number(case):
    """Weights constant: perturbing the activation operand (and the bias) gives exactly
    sum |terms| / |sum|; both operands of activation x activation products: exactly twice."""
    _, nd, inputs, fn, perturbed, factor = case
    check_node(nd, inputs, fn, perturbed, factor=factor)


def test_site_with_both_operands_perturbed_is_at_most_twice_kappa():
    """Every input of a Gemm perturbed: (2 sum |w x| + |b|) / |y|, between kappa and 2 kappa."""
    _, nd, inputs, fn, _, _ = _sites()[0]
    want, y = mp_kappa(fn, inputs, [0, 1, 2])
    kappa = op_condition(nd, inputs, [y])
    bias_part = np.abs(inputs[2]) / np.abs(y)
    np.testing.assert_allclose(want, 2 * kappa - bias_part, rtol=REL)
    assert np.all(want <= 2 * kappa) and np.all(want >= kappa)


def test_batched_absolute_sums_exact():
    r = rng(2)
    q, k, b = r.standard_normal((2, 1, 3, 5)), r.standard_normal((3, 4, 5)), r.standard_normal(4)
    got = batched_absolute_sums(q, k, b)
    assert got.shape == (2, 3, 3, 4)
    for g, h, t, i in np.ndindex(got.shape):
        exact = rn64(exact_dot(np.abs(q[g, 0, t]), np.abs(k[h, i]), abs(b[i])))
        assert abs(got[g, h, t, i] - exact) <= 8 * 2.0**-53 * exact


def test_cancelling_sums_and_zeros():
    add, sub = node("Add", 2), node("Sub", 2)
    a = np.array([1.5, -2.0, 0.0, 3.0])
    assert op_condition(add, [a, -a], [np.zeros(4)]).tolist() == [np.inf, np.inf, 0.0, np.inf]
    assert op_condition(sub, [a, a], [np.zeros(4)]).tolist() == [np.inf, np.inf, 0.0, np.inf]
    gemm = node("Gemm", 2, transB=1)
    x, W = np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([[1.0, -1.0], [2.0, 0.0]])
    assert op_condition(gemm, [x, W], [x @ W.T]).tolist() == [[np.inf, 1.0], [0.0, 0.0]]


# ---------------------------------------------------------------- elementwise


def _elementwise():
    r = rng(3)
    a, b = r.standard_normal((2, 3)), r.standard_normal(3)
    pos = r.uniform(0.1, 3.0, (2, 3))
    cond = np.array([[1, 0, 1], [0, 0, 1]], dtype=np.int64)
    return [
        ("add-broadcast", node("Add", 2), [a, b], lambda a, b: a + b, [0, 1]),
        ("sub-negative", node("Sub", 2), [a, -np.abs(b)], lambda a, b: a - b, [0, 1]),
        ("mul", node("Mul", 2), [a, b], lambda a, b: a * b, [0, 1]),
        ("div", node("Div", 2), [a, b], lambda a, b: a / b, [0, 1]),
        ("neg", node("Neg"), [a], lambda a: -a, [0]),
        ("abs", node("Abs"), [a], lambda a: abs(a), [0]),
        ("pow-cube-negative-base", node("Pow", 2), [a, np.array(3.0)], lambda a, p: a**p, [0]),
        ("pow-minus-two", node("Pow", 2), [a, np.array(-2.0)], lambda a, p: a**p, [0]),
        ("pow-minus-one-and-half", node("Pow", 2), [pos, np.array(-1.5)], lambda a, p: a**p, [0]),
        ("pow-half", node("Pow", 2), [pos, np.array(0.5)], lambda a, p: a**p, [0]),
        ("pow-integer-exponent", node("Pow", 2), [a, np.array(2)], lambda a: a**2, [0]),
        ("sqrt", node("Sqrt"), [pos], msqrt, [0]),
        ("reciprocal", node("Reciprocal"), [a], lambda a: 1 / a, [0]),
        ("exp", node("Exp"), [4 * a], mexp, [0]),
        ("erf", node("Erf"), [np.array([-3.0, -0.5, -1e-9, 2e-8, 0.7, 2.5, 6.0])], merf, [0]),
        ("max", node("Max", 3), [a, b, 0.5 * a], lambda *t: np.maximum(np.maximum(t[0], t[1]), t[2]), [0, 1, 2]),
        ("min", node("Min", 2), [a, b], np.minimum, [0, 1]),
        ("clip-inputs", node("Clip", 3), [a, np.array(-0.5), np.array(0.8)], lambda a, lo, hi: np.minimum(np.maximum(a, lo), hi),
         [0]),
        ("clip-attribute", node("Clip", 1, min=-0.3), [a], lambda a: np.maximum(a, mpmath.mpf(-0.3)), [0]),
        ("where", node("Where", 3), [cond, a, b], lambda a, b: np.where(cond.astype(bool), a, b), [0, 1]),
    ]


@pytest.mark.parametrize("case", _elementwise(), ids=lambda c: c[0])
def test_elementwise_against_mpmath(case):
    _, nd, inputs, fn, perturbed = case
    check_node(nd, inputs, fn, perturbed)


def test_elementwise_constants_and_where_undefined():
    assert op_condition(node("Div", 2), [np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 4.0])], [np.ones(3)]).tolist() \
        == [np.inf, np.inf, 2.0]
    pow_node = node("Pow", 2)
    base = np.array([-2.0, -2.0, 0.0, 0.0, 0.0, 4.0])
    assert op_condition(pow_node, [base, np.array(0.5)], [np.ones(6)]).tolist() == [np.inf, np.inf, 0.5, 0.5, 0.5, 0.5]
    assert op_condition(pow_node, [base, np.array(-1.0)], [np.ones(6)]).tolist() == [1.0, 1.0, np.inf, np.inf, np.inf, 1.0]
    assert op_condition(node("Sqrt"), [np.array([-1.0, 0.0, 4.0])], [np.ones(3)]).tolist() == [np.inf, 0.5, 0.5]
    assert op_condition(node("Reciprocal"), [np.array([0.0, -4.0])], [np.ones(2)]).tolist() == [np.inf, 1.0]
    assert op_condition(node("Mul", 2), [np.array([np.nan, 0.0, np.inf]), np.ones(3)], [np.ones(3)]).tolist() \
        == [np.inf, 2.0, np.inf]
    assert op_condition(node("Clip", 3), [np.array([-2.0, 0.0, 2.0, np.inf]), np.array(-1.0), np.array(1.0)],
                        [np.array([-1.0, 0.0, 1.0, 1.0])]).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_erf_near_zero_and_large():
    with mpmath.workdps(DPS):
        for x in (0.0, 1e-300, -1e-12, 1e-4, 4.0, -9.0, 26.0):
            t = mpmath.mpf(x)
            want = 1.0 if x == 0 else float(abs(t * 2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-t * t) / mpmath.erf(t)))
            got = erf_condition(np.array([x]))[0]
            assert got == want or abs(got - want) <= 1e-13 * want, (x, got, want)


# ---------------------------------------------------------------- activations


GELU_TANH_A = mpmath.mpf(44715) / 10**6


def mp_activation(name: str, alpha: float = 0.0):
    """The activations written from their definitions (gelu forms without the cancellation
    of 1 + erf and 1 + tanh far left: x Phi(x) = x erfc(-x/sqrt 2)/2, x (1 + tanh t)/2 =
    x / (1 + e^{-2t}))."""
    a = mpmath.mpf(alpha)
    forms = {
        "relu": lambda x: x if x > 0 else mpmath.mpf(0),
        "leaky": lambda x: x if x > 0 else a * x,
        "tanh": mpmath.tanh,
        "sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)),
        "gelu": lambda x: x * mpmath.erfc(-x / mpmath.sqrt(2)) / 2,
        "gelu_tanh": lambda x: x / (1 + mpmath.exp(-2 * mpmath.sqrt(2 / mpmath.pi) * (x + GELU_TANH_A * x**3))),
        "silu": lambda x: x / (1 + mpmath.exp(-x)),
        "softplus": lambda x: mpmath.log(1 + mpmath.exp(x)),
        "elu": lambda x: x if x > 0 else a * mpmath.expm1(x),
    }
    return vec(forms[name])


ACTIVATION_CASES = [
    (node("Relu"), "relu", 0.0), (node("LeakyRelu", alpha=0.2), "leaky", 0.2), (node("LeakyRelu"), "leaky", 0.01),
    (node("Tanh"), "tanh", 0.0), (node("Sigmoid"), "sigmoid", 0.0), (node("Gelu"), "gelu", 0.0),
    (node("Gelu", approximate="tanh"), "gelu_tanh", 0.0), (node("Silu"), "silu", 0.0),
    (node("Softplus"), "softplus", 0.0), (node("Elu", alpha=0.5), "elu", 0.5), (node("Elu"), "elu", 1.0),
    (node("Activation", name="tanh"), "tanh", 0.0), (node("Activation", name="gelu_tanh"), "gelu_tanh", 0.0),
]


@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=lambda c: f"{c[0].op}-{c[1]}-{c[2]}")
def test_activation_against_mpmath(case):
    nd, name, alpha = case
    x = np.array([-6.0, -2.5, -0.7, -1e-3, 1e-3, 0.4, 1.3, 4.0])
    check_node(nd, [x], mp_activation(name, alpha), [0], rel=1e-10)


@pytest.mark.parametrize("op, name", [(node("Gelu"), "gelu"), (node("Gelu", approximate="tanh"), "gelu_tanh")])
def test_gelu_far_left(op, name):
    x = np.array([-20.0, -40.0])
    got = check_node(op, [x], mp_activation(name), [0], rel=1e-9, dps=60)
    if name == "gelu":  # |1 + z phi(z) / Phi(z)| = z^2 - 2/z^2 + ... (Mills ratio)
        assert np.all(np.abs(got / x**2 - 1) < 1e-3)
    else:  # |1 + z (1 - tanh t) t'| with 1 - tanh t -> 2: 6 a sqrt(2/pi) |z|^3 (1 + O(1/z^2))
        assert np.all(np.abs(got / (6 * 0.044715 * np.sqrt(2 / np.pi) * np.abs(x) ** 3) - 1) < 0.03)


def test_prelu_per_channel_slopes():
    x = np.array([[[-1.5, 2.0], [0.5, -0.25]], [[-3.0, 1.0], [-0.5, 0.0]]])
    slope = np.array([0.25, 0.0]).reshape(1, 2, 1)
    got = check_node(node("PRelu", 2), [x, slope], lambda x, a: np.where(x > 0, x, a * x), [0])
    assert got.tolist() == [[[1.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]]  # slope 0 on channel 1


# ---------------------------------------------------------------- softmax, LogSoftmax, LAMP


def mp_softmax(axis: int):
    def fn(s):
        e = mexp(s)
        return e / np.sum(e, axis=axis, keepdims=True)

    return fn


def mp_log_softmax(axis: int):
    def fn(s):
        total = np.sum(mexp(s), axis=axis, keepdims=True)
        return s - vec(mpmath.log)(total)

    return fn


SCORES = {
    "random": (rng(4).standard_normal((2, 5)) * 3, -1),
    "axis-1-of-3d": (rng(5).standard_normal((2, 3, 4)), 1),
    "dominant": (np.array([[40.0, 0.0, -2.0, 1.0], [-3.0, 0.5, 36.0, 0.0]]), -1),
    "with-zero-score": (np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]]), -1),
}


@pytest.mark.parametrize("key", SCORES)
def test_softmax_against_mpmath(key):
    s, axis = SCORES[key]
    check_node(node("Softmax", axis=axis), [s], mp_softmax(axis), [0])


@pytest.mark.parametrize("key", SCORES)
def test_log_softmax_against_mpmath(key):
    s, axis = SCORES[key]
    check_node(node("LogSoftmax", axis=axis), [s], mp_log_softmax(axis), [0], rel=1e-10)


def test_log_softmax_near_its_zero():
    """l_0 = -log(1 + e^-40 + ...) ~ -4e-18: kappa_0 stays ~ 40 (both sides vanish together)."""
    s = np.array([[40.0, 0.0, -2.0]])
    got = check_node(node("LogSoftmax"), [s], mp_log_softmax(-1), [0], rel=1e-10)
    assert 39 < got[0, 0] < 41


def test_masked_scores_do_not_change_the_others():
    s = np.array([[1.0, -np.inf, 0.5, -2.0]])
    got = op_condition(node("Softmax"), [s], [np.zeros((1, 4))])
    ref = op_condition(node("Softmax"), [s[:, [0, 2, 3]]], [np.zeros((1, 3))])
    assert got[0, 1] == np.inf and np.array_equal(got[:, [0, 2, 3]], ref)
    assert lamp_strict(s)[0, 1] == 0 and lamp_relaxed(s)[0, 1] == 0


@pytest.mark.parametrize("key", SCORES)
def test_lamp_strict_is_the_column_sum_of_the_softmax_jacobian(key):
    """2 a_j (1 - a_j) |s_j| = sum_i |da_i/ds_j| |s_j| (the l1 change of the row)."""
    s, axis = SCORES[key]
    with mpmath.workdps(DPS):
        _, rows = sensitivities(mp_softmax(axis), [s], [0])
        want = np.array([float(mpmath.fsum(row[(0, j)] for row in rows.values())) for j in np.ndindex(s.shape)])
    want = want.reshape(s.shape)
    assert_kappa(lamp_strict(s, axis), want, rel=1e-10)


def test_lamp_relaxed_against_mpmath():
    s = np.array([[800.0, 799.0, -3.0, 0.0, 2.0], [-1.0, -1.5, -0.25, -2.0, -0.75]])
    got = lamp_relaxed(s)
    with mpmath.workdps(DPS):
        g = [[abs(mpmath.mpf(v)) * mpmath.exp(mpmath.mpf(v)) for v in row] for row in s]
        want = np.array([[float(v / max(row)) for v in row] for row in g])
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert lamp_relaxed(np.zeros((1, 3))).tolist() == [[0.0, 0.0, 0.0]]


# ---------------------------------------------------------------- normalisations


def mp_layer_norm(axis: int, eps: float = 1e-5, scaled: bool = True, biased: bool = True):
    def fn(x, *params):
        axes = tuple(range(axis % x.ndim, x.ndim))
        n = int(np.prod([x.shape[a] for a in axes]))
        centred = x - np.sum(x, axis=axes, keepdims=True) / n
        z = centred / msqrt(np.sum(centred * centred, axis=axes, keepdims=True) / n + mpmath.mpf(eps))
        params = list(params)
        if scaled:
            z = z * params.pop(0)
        return z + params.pop(0) if biased else z

    return fn


def _ln_case(x, scale, bias, axis=-1):
    inputs = [x, scale] + ([] if bias is None else [bias])
    return node("LayerNormalization", len(inputs), axis=axis), inputs, mp_layer_norm(axis, biased=bias is not None)


def test_layer_norm_against_mpmath():
    r = rng(6)
    for x, scale, bias, axis in [
        (r.standard_normal((2, 6)) * 2 + 1, r.standard_normal(6), r.standard_normal(6), -1),
        (r.standard_normal((2, 3, 4)), r.standard_normal((3, 4)), r.standard_normal((3, 4)), 1),
        (np.round(r.standard_normal((1, 40)), 1), r.standard_normal(40), None, -1),  # ties in z, n = 40
        (np.array([[1e-3, 5.0, -7.0, 5.0]]), np.ones(4), None, -1),
    ]:
        nd, inputs, fn = _ln_case(x, scale, bias, axis)
        check_node(nd, inputs, fn, list(range(len(inputs))), rel=1e-10)


def test_layer_norm_at_the_mean():
    """x_2 = mean exactly: without bias y_2 = 0 and kappa_2 = inf (c/0, as the definition);
    with a bias the same component is finite and matches the oracle."""
    x = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    nd, inputs, fn = _ln_case(x, np.ones(5), None)
    got = check_node(nd, inputs, fn, [0, 1])
    assert got[0, 2] == np.inf and np.isfinite(got[0, [0, 1, 3, 4]]).all()
    nd, inputs, fn = _ln_case(x, np.full(5, 2.0), np.full(5, 0.5))
    got = check_node(nd, inputs, fn, [0, 1, 2])
    assert np.isfinite(got).all()
    zero = op_condition(node("LayerNormalization", 2), [np.zeros((1, 3)), np.ones(3)], [np.zeros((1, 3))])
    assert zero.tolist() == [[0.0, 0.0, 0.0]]  # 0/0 = 0


def test_layer_norm_near_the_mean_blows_up_like_one_over_the_distance():
    """x_2 = 3 + t: kappa_2 ~ C / |t|, matching the oracle to the accuracy float64 leaves
    in x_2 - mean (about u / |t| relative)."""
    scaled = []
    for t in (1e-2, 1e-5, 1e-8):
        x = np.array([[1.0, 2.0, 3.0 + t, 4.0, 5.0]])
        nd, inputs, fn = _ln_case(x, np.ones(5), None)
        want, y = mp_kappa(fn, inputs, [0, 1])
        got = op_condition(nd, inputs, [y])
        assert_kappa(got, want, rel=1e-12 + 4e-15 / t)
        scaled.append(got[0, 2] * t)
    assert abs(scaled[1] / scaled[2] - 1) < 1e-3 and abs(scaled[0] / scaled[2] - 1) < 0.1


def test_rms_norm_against_mpmath():
    r = rng(7)
    x, g, b = r.standard_normal((2, 5)), r.standard_normal(5), r.standard_normal(5)
    x[1, 3] = 0.0
    eps = 1e-6

    def fn(x, g, b=None):
        z = x / msqrt(np.sum(x * x, axis=-1, keepdims=True) / 5 + mpmath.mpf(eps))
        return z * g if b is None else z * g + b

    for params in ([g, b], [g]):
        want, y = mp_kappa(fn, [x, *params], [0, 1, 2][:1 + len(params)])
        got = rms_norm_condition(x, y, *params, epsilon=eps)
        assert_kappa(got, want)
    assert got[1, 3] == 0.0  # x_i = 0 without bias: 0/0
    want, y = mp_kappa(lambda x: x / msqrt(np.sum(x * x, axis=-1, keepdims=True) / 5 + mpmath.mpf(eps)), [x], [0])
    got = rms_norm_condition(x, y, epsilon=eps)
    assert_kappa(got, want)
    assert np.all(got <= 2.0)


def test_batch_norm_against_mpmath():
    r = rng(8)
    x = r.standard_normal((2, 3, 2, 2))
    scale, bias, mean = r.standard_normal(3), r.standard_normal(3), r.standard_normal(3)
    var = r.uniform(0.5, 2.0, 3)

    def fn(x, s, b, m, v):
        c = (1, 3, 1, 1)
        return (x - m.reshape(c)) / msqrt(v.reshape(c) + mpmath.mpf(1e-5)) * s.reshape(c) + b.reshape(c)

    check_node(node("BatchNormalization", 5), [x, scale, bias, mean, var], fn, [0, 1, 2])


# ---------------------------------------------------------------- data movement and selection


def emulated(nd: Node, fixed: dict):
    """The node's first output by the emulator's own float64 evaluation (mpmath arrays in,
    mpmath arrays out): data movement only. ``fixed`` holds integer inputs by position."""

    def fn(*floats):
        floats = list(floats)
        args = [fixed[k] if k in fixed else floats.pop(0) for k in range(len(nd.inputs))]
        return OPS.get(nd.op).evaluate(Context(Native(), nd), args)[0]

    return fn


def _moves():
    r = rng(9)
    x = r.standard_normal((2, 3, 4))
    img = r.standard_normal((1, 2, 4, 4))
    ints = np.array
    return [
        (node("Reshape", 2), [x, ints([2, -1])], {1: ints([2, -1])}),
        (node("Flatten", 1, axis=2), [x], {}),
        (node("Transpose", 1, perm=(2, 0, 1)), [x], {}),
        (node("Squeeze", 2), [x[:, :1], ints([1])], {1: ints([1])}),
        (node("Unsqueeze", 2), [x, ints([0])], {1: ints([0])}),
        (node("Concat", 2, axis=1), [x, -x[:, :2]], {}),
        (node("Slice", 4), [x, ints([1]), ints([4]), ints([2])], {1: ints([1]), 2: ints([4]), 3: ints([2])}),
        (node("Gather", 2, axis=1), [x, ints([[2, 0], [1, 1]])], {1: ints([[2, 0], [1, 1]])}),
        (node("Cast", 1, to=1), [x], {}),
        (node("Expand", 2), [x[:, :1], ints([2, 3, 4])], {1: ints([2, 3, 4])}),
        (node("Identity"), [x], {}),
        (node("Dropout"), [x], {}),
        (node("Pad", 2), [x, ints([0, 1, 0, 0, 2, 1])], {1: ints([0, 1, 0, 0, 2, 1])}),
        (node("Pad", 2, mode="reflect"), [x, ints([0, 1, 1, 0, 1, 1])], {1: ints([0, 1, 1, 0, 1, 1])}),
        (node("ReduceMax", 1, axes=(1,)), [x], {}),
        (node("MaxPool", 1, kernel_shape=(2, 2), strides=(2, 1), pads=(0, 1, 0, 0)), [img], {}),
    ]


@pytest.mark.parametrize("case", _moves(), ids=lambda c: c[0].op + "-" + "-".join(map(str, c[0].attrs.values())))
def test_data_movement_and_selection(case):
    nd, inputs, fixed = case
    floats = [a for k, a in enumerate(inputs) if k not in fixed]
    got = check_node(nd, inputs, emulated(nd, fixed), list(range(len(floats))))
    assert set(np.unique(got)) <= {0.0, 1.0}
    if nd.op == "Pad" and nd.attr("mode") is None:
        assert (got == 0).sum() == got.size - inputs[0].size


def test_split_gives_every_part():
    x = rng(10).standard_normal((2, 5))
    nd = node("Split", 2, 2, axis=1)
    parts = [x[:, :2], x[:, 2:]]
    for k in (0, 1):
        assert op_condition(nd, [x, np.array([2, 3])], parts, output=k).tolist() == np.ones(parts[k].shape).tolist()


def test_reduce_prod_range_and_constants():
    x = rng(11).standard_normal((2, 3, 4))
    check_node(node("ReduceProd", 1, axes=(1, 2), keepdims=0), [x], lambda x: np.prod(x, axis=(1, 2)), [0], rel=1e-10)
    start, delta = np.array(-2.5), np.array(0.75)
    got = op_condition(node("Range", 3), [start, np.array(2.0), delta], [np.arange(-2.5, 2.0, 0.75)])
    want, _ = mp_kappa(lambda s, d: np.array([s + k * d for k in range(6)], dtype=object), [start, delta], [0, 1])
    assert_kappa(got, want)
    assert op_condition(node("Constant", 0, value=np.ones(3)), [], [np.ones(3)]).tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- the MLP case


def test_mlp_graph_reproduces_the_layer_condition_numbers_exactly():
    network = load_model("digits-tanh")
    graph = network_to_graph(network)
    x = rng(12).uniform(0.0, 16.0, (25, network.n_inputs))
    x[0] = 0.0
    run = forward(graph, {"x": x}, keep=True)
    values = {**graph.initializers, "x": x, **run.values}
    for k, layer in enumerate(network.layers):
        gemm, act = graph.node(f"layer{k}"), graph.node(f"layer{k}.act")
        inputs, pre = [values[t] for t in gemm.inputs], values[gemm.outputs[0]]
        assert np.array_equal(op_condition(gemm, inputs, [pre]), condition_numbers(inputs[0], layer.weight, layer.bias, pre))
        assert np.array_equal(site_absolute_sums(gemm, inputs), absolute_sums(inputs[0], layer.weight, layer.bias))
        assert np.array_equal(op_condition(act, [pre], [values[act.outputs[0]]]),
                              activation_condition(layer.activation, pre))
