"""The dedicated bound rules of the global bounds (analysis/bound_rules.py): the stated
libm assumption and the outward-rounded helpers against mpmath and Fraction oracles, the
softmax ranges against the exact range over the box, and the rules in graphs against the
exact pass (no violation, finite bounds, the first-order pass below the rigorous one) on
random and adversarial inputs under every format, order, product and storage mode; the
bundled transformer and CNN through the graph validation."""

from __future__ import annotations

import itertools
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from analysis.bound_rules import (BOUND_RULES, exp_bounds, excluded_sums, log1p_bounds, log_bounds,
                                  log_softmax_range, softmax_range)
from analysis.graph_bounds import GlobalBounds
from analysis.graph_validation import validate_graph
from emulator import load_data, load_model
from emulator.graph import Emulated, Graph, Node, TensorInfo, run_graph
from emulator.graph.ball import Ball
from emulator.graph.ballmath import BallMath
from emulator.graph.engine import prepare
from emulator.graph.exact import Exact, exact_values

MP_BITS = 200
FORMATS = ("fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2")
ORDERS = ("recursive", "pairwise", "blocked:32")
STORAGES = (None, "bf16", "fp16")


def _spec(fmt: str, order: str, rounded: bool) -> str:
    spec = fmt if order == "recursive" else f"{fmt}:{order}"
    if rounded:
        spec += ":products=" + ("fp8-e4m3fn" if fmt.startswith("fp8") else "fp16")
    return spec


FULL_GRID = [(_spec(f, o, p), s) for f, o, p, s in itertools.product(FORMATS, ORDERS, (False, True), STORAGES)]
QUICK_GRID = [("fp16", None), ("bf16:pairwise:products=fp16", "bf16"), ("fp8-e4m3fn:blocked:32", "fp16"),
              ("fp8-e5m2:products=fp8-e4m3fn", None), ("fp16:blocked:32:products=fp16", "fp16"),
              ("fp8-e4m3fn:pairwise:products=fp8-e4m3fn", "bf16")]


# ---------------------------------------------------------------------- elementary bounds


def test_the_rules_are_registered():
    assert set(BOUND_RULES.names()) == {"Softmax", "LogSoftmax", "LayerNormalization"}


def _libm_arguments(name: str) -> np.ndarray:
    """Arguments from the underflow threshold to the overflow one, and the edge cases."""
    rng = np.random.default_rng(1)
    if name == "exp":
        return np.concatenate([rng.uniform(-760, 710, 4000), rng.uniform(-1, 1, 500), rng.uniform(-750, -700, 500),
                               [0.0, -0.0, 1e-300, -1e-300, 709.7, -745.1, -745.2, -800.0, -1e308]])
    spread = np.exp(rng.uniform(-740, 709, 3000))
    edges = [0.0, 2.0**-1074, 2.0**-1022, 1e-17, 1.0, 1.0 + 2.0**-52, 1.0 - 2.0**-53, np.finfo(float).max]
    return np.concatenate([spread, 1.0 + rng.uniform(-1e-6, 1e-6, 500), edges])


LIBM = {"exp": (exp_bounds, mpmath.exp), "log": (log_bounds, mpmath.log), "log1p": (log1p_bounds, mpmath.log1p)}


@pytest.mark.parametrize("name", sorted(LIBM))
def test_libm_bounds_hold_the_exact_value(name):
    """LIBM_EVAL_ERROR for numpy's exp, log and log1p against mpmath at 200 bits; the
    bounds are within 2^-40 of the value (not vacuous) above 2^-1000."""
    bounds, exact = LIBM[name]
    y = _libm_arguments(name)
    low, high = bounds(y)
    with mpmath.workprec(MP_BITS):
        for k, v in enumerate(y):
            want = exact(mpmath.mpf(float(v)))
            assert mpmath.mpf(float(low[k])) <= want <= mpmath.mpf(float(high[k])), (v, low[k], high[k])
            if mpmath.isfinite(want) and abs(want) > mpmath.mpf(2) ** -1000:
                assert mpmath.mpf(float(high[k] - low[k])) <= abs(want) * 2.0**-40, v


def test_libm_bounds_of_infinite_values_are_exact():
    assert exp_bounds(np.array([-np.inf]))[1][0] == 0.0
    assert log_bounds(np.array([0.0]))[0][0] == -np.inf == log_bounds(np.array([0.0]))[1][0]
    assert log1p_bounds(np.array([np.inf]))[0][0] == np.inf


@pytest.mark.parametrize("upward", [True, False])
def test_excluded_sums_against_fractions(upward):
    rng = np.random.default_rng(4)
    rows = [rng.exponential(size=7), np.array([1.0, 1e-300, 3e-320, 0.0]), np.array([5.0]), np.zeros(3),
            np.array([1.0, 2.0**-60, 2.0**-60, 1.0]), rng.exponential(size=300) * np.exp(rng.uniform(-50, 50, 300))]
    for v in rows:
        got = excluded_sums(v[None, :], upward)[0]
        for i in range(v.size):
            exact = sum(Fraction(float(t)) for j, t in enumerate(v) if j != i)
            assert (Fraction(float(got[i])) >= exact) if upward else (Fraction(float(got[i])) <= exact)
            assert abs(Fraction(float(got[i])) - exact) <= exact * Fraction(v.size * 2 + 2, 2**52) + Fraction(2.0**-1074)


# ---------------------------------------------------------------------- softmax ranges


def _mp_softmax(x, log: bool):
    """softmax / log-softmax of a list of mpf (-inf allowed) at the working precision."""
    top = max(x)
    first = x.index(top)
    e = [mpmath.exp(v - top) if v != -mpmath.inf else mpmath.mpf(0) for v in x]
    rest = mpmath.fsum(t for j, t in enumerate(e) if j != first)
    if log:
        return [v - top - mpmath.log1p(rest) if v != -mpmath.inf else -mpmath.inf for v in x]
    return [t / (1 + rest) for t in e]


def _exact_range(low, high, log: bool):
    """The exact range of (log-)softmax_i over the box, at its corners."""
    lows, highs = [], []
    for i in range(len(low)):
        small = [mpmath.mpf(float(high[j])) if j != i else mpmath.mpf(float(low[i])) for j in range(len(low))]
        large = [mpmath.mpf(float(low[j])) if j != i else mpmath.mpf(float(high[i])) for j in range(len(low))]
        lows.append(_mp_softmax(small, log)[i])
        highs.append(_mp_softmax(large, log)[i])
    return lows, highs


def _boxes():
    rng = np.random.default_rng(5)
    big = np.finfo(float).min
    centres = [rng.normal(size=6), np.array([40.0, 0.0, 0.5, -1.0]), np.array([0.0, -np.inf, 1.0, -np.inf]),
               np.array([0.0, big, 1.0, big]), np.array([700.0, -700.0, 0.0]), np.array([1e-300, -1e-300, 0.0]),
               np.array([3.0]), rng.normal(scale=30.0, size=8), np.array([1e4, -1e4, 1e4 - 1.0])]
    for c in centres:
        for r in (0.0, 1e-12, 1e-3, 0.7):
            rad = np.where(np.isinf(c), 0.0, r * (1 + rng.uniform(size=c.size)))
            with np.errstate(invalid="ignore"):
                yield np.where(np.isinf(c), c, c - rad), np.where(np.isinf(c), c, c + rad)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_range_is_the_exact_range(log):
    """The computed range holds the exact one (its corners, at 200 bits) and is within
    2^-40 relative (or 2^-1000) of it: rounding outward only."""
    fn = log_softmax_range if log else softmax_range
    checked = 0
    for low, high in _boxes():
        lo_got, hi_got = fn(low[None, :], high[None, :])
        with mpmath.workprec(MP_BITS):
            lows, highs = _exact_range(low, high, log)
            for i in range(low.size):
                a, b = lows[i], highs[i]
                assert mpmath.mpf(float(lo_got[0, i])) <= a and b <= mpmath.mpf(float(hi_got[0, i])), (low, high, i)
                for got, want in ((lo_got[0, i], a), (hi_got[0, i], b)):
                    if mpmath.isinf(want):
                        assert got == want
                    elif abs(want) < mpmath.mpf(float(np.finfo(float).max)):
                        assert abs(mpmath.mpf(float(got)) - want) <= abs(want) * 2.0**-40 + 2.0**-1000, (low, high, i)
                checked += 1
    assert checked > 100


# ------------------------------------------------------------------- graphs: the rules


def _graph(op: str, t: int, k: int, attrs: dict, rng, fill: float = -np.inf) -> Graph:
    """x (B, R, k) @ w (k, t) (an accumulation site, so the operator's input carries an
    error), plus an offset input and an additive mask (where(keep, 0, fill), as BERT
    builds it from an integer mask), then ``op`` over the last axis (LayerNormalization
    with a scale and a bias)."""
    init = {"w": rng.normal(size=(k, t)) / np.sqrt(k)}
    inputs = ["masked"]
    if op == "LayerNormalization":
        init["scale"] = rng.uniform(0.5, 1.5, t) * rng.choice([-1.0, 1.0], t)
        init["bias"] = rng.normal(scale=0.3, size=t)
        inputs += ["scale", "bias"]
    nodes = [Node("scores", "MatMul", ("x", "w"), ("scores",)), Node("add", "Add", ("scores", "offset"), ("shifted",)),
             Node("zero", "Constant", (), ("zero",), {"value": np.array(0.0)}),
             Node("fill", "Constant", (), ("fill",), {"value": np.array(fill)}),
             Node("mask", "Where", ("keep", "zero", "fill"), ("mask",)),
             Node("masking", "Add", ("shifted", "mask"), ("masked",)),
             Node("out", op, tuple(inputs), ("out",), {"axis": -1, **attrs})]
    return Graph(nodes, [TensorInfo("x", "float", (None, 3, k)), TensorInfo("offset", "float", (None, 3, t)),
                         TensorInfo("keep", "int", (None, 3, t))], ["out"], init, name=f"{op.lower()}-rule")


T = 10


def _softmax_cases():
    """(name, x scale, offset of one (R, T) sample, keep mask, mask fill)."""
    rng = np.random.default_rng(15)
    zeros, ones = np.zeros((3, T)), np.ones((3, T), dtype=np.int64)
    dominant = zeros.copy()
    dominant[:, 2] = 40.0
    keep = ones.copy()
    keep[0, 3:] = 0
    keep[1, ::2] = 0
    keep[2, 1:] = 0
    underflow = zeros.copy()
    underflow[:, ::3] = -3e4
    spread = np.linspace(-700.0, 20.0, T)[None, :].repeat(3, 0)
    return [("random", 1.0, zeros, ones, -np.inf), ("dominant", 1.0, dominant, ones, -np.inf),
            ("masked -inf", 1.0, rng.normal(size=(3, T)), keep, -np.inf),
            ("masked finfo.min", 1.0, rng.normal(size=(3, T)), keep, float(np.finfo(float).min)),
            ("masked underflow", 1.0, underflow, ones, -np.inf), ("tiny", 1e-30, np.full((3, T), 1e-30), ones, -np.inf),
            ("huge", 3.0, spread, ones, -np.inf), ("large", 8.0, zeros, ones, -np.inf)]


def _layer_norm_cases():
    """(name, x scale, offset of one (R, T) sample, epsilon)."""
    ramp = np.linspace(-1.0, 1.0, T)[None, :].repeat(3, 0)
    zeros = np.zeros((3, T))
    return [("random", 1.0, zeros, 1e-5), ("random eps=1e-12", 1.0, zeros, 1e-12),
            ("near mean", 1e-6, np.full((3, T), 100.0), 1e-5), ("near mean eps=1e-12", 1e-3, np.full((3, T), 10.0), 1e-12),
            ("constant", 0.0, np.full((3, T), 7.0), 1e-5), ("constant eps=1e-12", 0.0, np.full((3, T), -3.0), 1e-12),
            ("offset ramp", 0.1, 100.0 + ramp, 1e-5)]


def _feeds(x_scale: float, offset: np.ndarray, rng, keep: "np.ndarray | None" = None, samples: int = 4) -> dict:
    k = 40
    keep = np.ones(offset.shape, dtype=np.int64) if keep is None else keep
    return {"x": x_scale * rng.normal(size=(samples, 3, k)), "offset": np.repeat(offset[None], samples, axis=0),
            "keep": np.repeat(keep[None], samples, axis=0)}


def _passes(graph: Graph, feeds: dict, acc: str, storage):
    """(emulated values, exact values, rigorous bounds, first-order bounds) of one batch."""
    prepared, data, st = prepare(graph, feeds, storage)
    emulated = Emulated(acc, st, record=True)
    run = run_graph(prepared, data, emulated, keep=True)
    exact = exact_values(run_graph(prepared, data, Exact(), keep=True))
    rigorous = run_graph(prepared, data, GlobalBounds(run.values, emulated.records), keep=True).values
    predicted = run_graph(prepared, data, GlobalBounds(run.values, emulated.records, first_order=True), keep=True).values
    return run.values, exact, rigorous, predicted


def _check_output(graph: Graph, feeds: dict, acc: str, storage, *, finite=True) -> np.ndarray:
    """No certain violation at the rule's output; the exact pass certifies it (a check that
    can fail); bounds finite (where ``finite``: True, or a mask) and the first-order pass
    no larger. Returns bound / measured where the measured error is nonzero."""
    values, exact, rigorous, predicted = _passes(graph, feeds, acc, storage)
    computed, ref = np.asarray(values["out"]), exact["out"]
    assert np.isfinite(ref.radius).all(), "the exact pass does not certify this case"
    bound = rigorous["out"].rad
    with np.errstate(invalid="ignore"):
        lower = np.nextafter(np.nextafter(np.abs(computed - ref.value), -np.inf) - ref.radius, -np.inf)
    ok = np.where(np.isnan(computed) & np.isnan(ref.value), True, ~(lower > bound))
    assert ok.all(), (acc, storage, np.argwhere(~ok)[:3], bound[~ok][:3], lower[~ok][:3])
    assert np.isfinite(bound[np.broadcast_to(finite, bound.shape) & np.isfinite(computed)]).all(), (acc, storage)
    assert (predicted["out"].rad <= bound * (1 + 2.0**-40) + 2.0**-1060).all()
    err = np.abs(computed - ref.value)
    nz = err > 0
    return bound[nz] / err[nz]


def _run_softmax_grid(grid, op):
    rng = np.random.default_rng(7)
    for (name, scale, offset, keep, fill), (acc, storage) in itertools.product(_softmax_cases(), grid):
        # the log-softmax of a score at finfo.min is below -finfo.max: no finite bound
        finite = keep.astype(bool) if op == "LogSoftmax" and np.isfinite(fill) else True
        _check_output(_graph(op, T, 40, {}, rng, fill), _feeds(scale, offset, rng, keep), acc, storage, finite=finite)


def _run_layer_norm_grid(grid):
    rng = np.random.default_rng(8)
    for (name, scale, offset, eps), (acc, storage) in itertools.product(_layer_norm_cases(), grid):
        graph = _graph("LayerNormalization", T, 40, {"epsilon": eps}, rng)
        _check_output(graph, _feeds(scale, offset, rng), acc, storage)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_rules_quick_grid(op):
    _run_softmax_grid(QUICK_GRID, op)


def test_layer_norm_rule_quick_grid():
    _run_layer_norm_grid(QUICK_GRID)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_rules_full_grid(op):
    _run_softmax_grid(FULL_GRID, op)


@pytest.mark.slow
def test_layer_norm_rule_full_grid():
    _run_layer_norm_grid(FULL_GRID)


def _linearised(op: str, x: np.ndarray, d: np.ndarray, scale) -> np.ndarray:
    """|J(x)| d of the exact operator at x, rows along the last axis: log-softmax
    sum_j |delta_ij - a_j| d_j = (1 - a_i) d_i + sum_{j != i} a_j d_j, softmax a_i times
    that, layer norm |g| sum_j |delta_ij - 1/n - y_i y_j / n| d_j / sigma (eps 1e-5)."""
    a = np.exp(x - x.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    log_jac = d + (a * d).sum(-1, keepdims=True) - 2 * a * d
    if op == "Softmax":
        return a * log_jac
    if op == "LogSoftmax":
        return log_jac
    n = x.shape[-1]
    mu = x.mean(-1, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    y = (x - mu) / sigma
    jac = np.abs(np.eye(n) - 1.0 / n - y[..., :, None] * y[..., None, :] / n) / sigma[..., None]
    return np.abs(scale) * np.einsum("...ij,...j->...i", jac, d)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "LayerNormalization"])
def test_rules_follow_the_linearised_propagation(op):
    """With the sums inside the operator exact, what the rule adds to its input's bound D
    is the propagation: close to |J(x)| D (the first-order propagation, from the exact
    input), between 0.9 and 3 times it at the median (no dependency loss; interval
    arithmetic alone is infinite or orders of magnitude above for the softmax)."""
    rng = np.random.default_rng(9)
    graph = _graph(op, T, 40, {}, rng)
    values, exact, rigorous, _ = _passes(graph, _feeds(1.0, np.zeros((3, T)), rng, samples=16),
                                         {"MatMul": "fp16", "*": "exact"}, None)
    d = rigorous["masked"].rad
    assert np.median(d) > 1e-3
    linear = _linearised(op, exact["masked"].value, d, graph.initializers.get("scale"))
    ratio = rigorous["out"].rad / linear
    assert 0.9 <= np.median(ratio) <= 3.0, np.median(ratio)


def test_interval_evaluation_alone_is_vacuous_for_the_softmax():
    """Why the rule exists: evaluating the softmax operator on the balls loses the
    dependency of numerator and denominator (the bound is infinite or above the value)."""
    rng = np.random.default_rng(10)
    graph = _graph("Softmax", T, 40, {}, rng)
    prepared, data, _ = prepare(graph, _feeds(3.0, np.zeros((3, T)), rng), None)
    emulated = Emulated("fp16", record=True)
    run = run_graph(prepared, data, emulated, keep=True)
    plain = GlobalBounds(run.values, emulated.records)
    plain.evaluate = lambda op, ctx, args: op.evaluate(ctx, args)
    generic = run_graph(prepared, data, plain, keep=True).values["out"].rad
    ruled = run_graph(prepared, data, GlobalBounds(run.values, emulated.records), keep=True).values["out"].rad
    assert np.median(ruled) * 10 < np.median(generic)


def test_log_softmax_without_the_emulated_input_falls_back():
    """Without the emulated input the LogSoftmax rule declines before consuming its site;
    the interval evaluation takes the node and the next site still matches its record."""
    rng = np.random.default_rng(11)
    graph = _graph("LogSoftmax", T, 40, {}, rng)
    prepared, data, _ = prepare(graph, _feeds(1.0, np.zeros((3, T)), rng), None)
    emulated = Emulated("fp16", record=True)
    run = run_graph(prepared, data, emulated, keep=True)
    values = {k: v for k, v in run.values.items() if k != "masked"}
    bounds = GlobalBounds(values, emulated.records)
    out = run_graph(prepared, data, bounds, keep=True).values["out"]
    assert out.shape == run.values["out"].shape and bounds._next == len(emulated.records)


def test_layer_norm_with_statistics_outputs_falls_back():
    """A LayerNormalization that also outputs its mean and inverse deviation is left to
    interval arithmetic (the rule covers the normalised output alone)."""
    rng = np.random.default_rng(12)
    graph = _graph("LayerNormalization", T, 40, {}, rng)
    node = graph.nodes[-1]
    nodes = [*graph.nodes[:-1], Node(node.name, node.op, node.inputs, ("out", "mean", "inv"), node.attrs)]
    graph = Graph(nodes, graph.inputs, ["out"], graph.initializers, name="ln-stats")
    prepared, data, _ = prepare(graph, _feeds(1.0, np.zeros((3, T)), rng), None)
    emulated = Emulated("fp16", record=True)
    run = run_graph(prepared, data, emulated, keep=True)
    bounds = GlobalBounds(run.values, emulated.records)
    values = run_graph(prepared, data, bounds, keep=True).values
    assert {"mean", "inv"} <= set(values) and bounds._next == len(emulated.records)


# ------------------------------------------------------- the exact pass the rules rely on


def test_ball_max_ignores_elements_far_below():
    """The maximum of balls lies in [c* - r*, max (c_j + r_j)]: a masked element with a
    huge radius does not widen it; and random balls' maxima stay inside."""
    m = BallMath()
    big = np.finfo(float).min
    row = Ball(np.array([[0.3, 1.2, big, big]]), np.array([[0.0, 0.0, -8.6e273, 8.6e273]]),
               np.array([[0.0, 1e-20, 8.6e273, 8.6e273]]))
    top = m.max(row, -1, keepdims=True)
    assert top.hi[0, 0] == 1.2 and top.rad[0, 0] == 1e-20
    rng = np.random.default_rng(13)
    for _ in range(200):
        hi = rng.normal(size=5)
        rad = rng.exponential(size=5) * rng.choice([0.0, 1e-3, 1.0])
        ball = m.max(Ball(hi, None, rad), 0)
        for _ in range(20):
            point = hi + rad * rng.uniform(-1, 1, 5)
            assert abs(Fraction(float(np.max(point))) - Fraction(float(ball.hi))) <= Fraction(float(ball.rad))


def test_exact_pass_certifies_a_masked_softmax():
    rng = np.random.default_rng(14)
    graph = _graph("Softmax", T, 40, {}, rng, float(np.finfo(float).min))
    keep = (rng.uniform(size=(3, T)) < 0.5).astype(np.int64)
    keep[:, 0] = 1
    prepared, data, _ = prepare(graph, _feeds(1.0, np.zeros((3, T)), rng, keep), None)
    exact = exact_values(run_graph(prepared, data, Exact(), keep=True), ["out"])["out"]
    assert (exact.radius <= 2.0**-50 * np.abs(exact.value) + 2.0**-1000).all()


# ----------------------------------------------------------------- the bundled models


def _validate_grid(model: str, samples: int, grid) -> int:
    graph = load_model(model)
    data = load_data("digits").head(samples)
    checked = 0
    for acc in grid:
        v = validate_graph(graph, data, acc)
        assert v.violations == 0, (model, acc, v.violations_local, v.violations_global)
        assert all(t.global_.max_bound is not None and np.isfinite(t.global_.max_bound) for t in v.tensors), acc
        checked += len(v.tensors)
    return checked


def test_digits_transformer_bounds_are_finite_and_hold():
    assert _validate_grid("digits-transformer", 32, ["fp16", "fp8-e4m3fn:pairwise:products=fp8-e4m3fn"]) > 0
