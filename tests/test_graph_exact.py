"""The exact arithmetic of the graph engine: the fast path's balls hold the mpmath path's
300-bit intervals (so the exact value, and every radius is certified), operator by
operator, on edge cases, on a transformer block and a conv block; the kernels against
mpmath at 400 bits and the contractions against Fraction sums; an MLP as a graph
against the MLP reference."""

from __future__ import annotations

import functools
import math
import operator

import mpmath
import numpy as np
import pytest
from mpmath import libmp

from emulator.errors import UnknownNameError
from emulator.graph import Graph, Node, TensorInfo, forward, make_arithmetic
from emulator.graph.arbs import ArbMath
from emulator.graph.ball import Ball
from emulator.graph.ballmath import BallMath
from emulator.graph.convert import layer_tensors, network_to_graph
from emulator.graph.exact import ARB_START, Exact, exact_values
from emulator.graph.intervals import IntervalMath, Intervals
from emulator.graph.math import MATH_FUNCTIONS
from emulator.network import Layer, Network
from emulator.reference import exact_forward

from oracles import exact_dot, fraction

MP = 300
ORACLE_BITS = 400


# ---------------------------------------------------------------------------------------
# helpers


def _ends(ball: Ball):
    """Exact (low, high) raw ends of every element of a ball."""
    hi, lo, rad = (np.ravel(p) for p in ball.parts())
    out = []
    for h, l, r in zip(hi.tolist(), lo.tolist(), rad.tolist()):
        if not math.isfinite(h):
            out.append((libmp.from_float(h), libmp.from_float(h)) if r == 0 else (libmp.fninf, libmp.finf))
            continue
        c = libmp.mpf_add(libmp.from_float(h), libmp.from_float(l))
        out.append((libmp.mpf_sub(c, libmp.from_float(r)), libmp.mpf_add(c, libmp.from_float(r))))
    return out


SLACK = libmp.from_man_exp(1, -1066)  # the mpmath path's own absolute padding of results near 0


def assert_holds(ball: Ball, intervals: Intervals, where: str, narrow: bool = True) -> None:
    """Every mpmath interval, but for 2^-1066 at each end (the mpmath path pads what it
    computes near 0 by that much), lies inside the ball: the exact value is in the
    interval, so the ball's radius covers the true error. A ball that claims an exact
    value (radius 0, as Arb's exact operations give) must lie in the interval (the mpmath
    path widens even exact results by its 2^-precision trust). With ``narrow`` the interval
    is at most 2^-200 relative (or 2^-1000) wide (a meaningful oracle)."""
    assert ball.shape == intervals.shape, where
    for k, ((a, b), (lo, hi)) in enumerate(zip(intervals.ends(), _ends(ball))):
        a_in = libmp.mpf_add(a, SLACK, 2200, libmp.round_floor)  # rounded inward: a stricter test
        b_in = libmp.mpf_sub(b, SLACK, 2200, libmp.round_ceiling)
        if libmp.mpf_eq(lo, hi):
            assert libmp.mpf_le(a, lo) and libmp.mpf_le(hi, b), (where, k, libmp.to_str(a, 20), libmp.to_str(lo, 20))
            continue
        assert libmp.mpf_le(lo, a_in) and libmp.mpf_le(b_in, hi), (where, k, libmp.to_str(a, 20),
                                                                   libmp.to_str(lo, 20), libmp.to_str(hi, 20))
        if narrow and a != b:
            width = libmp.to_float(libmp.mpf_sub(b, a, 64, libmp.round_ceiling), rnd=libmp.round_ceiling)
            scale = max(abs(libmp.to_float(a)), abs(libmp.to_float(b)))
            assert width <= 2.0**-200 * scale + 2.0**-1000, (where, k, width, scale)


PATHS = ("fast", "arb")  # the paths held against the definition


def _acc(path: str):
    return "exact" if path == "fast" else Exact(256, path=path)


def _both(graph: Graph, feeds: dict, path: str = "fast", **kw):
    fast = forward(graph, feeds, acc=_acc(path), keep=True, **kw)
    slow = forward(graph, feeds, acc=Exact(MP, path="mpmath"), keep=True, **kw)
    return fast, slow


def assert_paths_agree(graph: Graph, feeds: dict, narrow: bool = True, path: str = "fast", **kw):
    """Every float tensor of the ``path`` pass holds the mpmath pass's; where that path
    certifies RN, its value is RN of the interval."""
    fast, slow = _both(graph, feeds, path, **kw)
    fv, sv = exact_values(fast), exact_values(slow)
    checked = 0
    for name, t in fast.values.items():
        if isinstance(t, np.ndarray):
            continue
        assert_holds(t, slow.values[name], name, narrow)
        rounded = fv[name].rounded & sv[name].rounded
        assert np.array_equal(fv[name].value[rounded], sv[name].value[rounded]), name
        checked += 1
    assert checked
    return fast, slow


def _graph(nodes, inputs, outputs, inits=None, name="t") -> Graph:
    return Graph(nodes, inputs, outputs, inits or {}, name=name)


def _pre(src="x", dst="xin"):
    """x / 3: an inexact ball (nonzero lo and radius) to feed an operator."""
    return Node("pre", "Div", (src, "three"), (dst,))


RNG = np.random.default_rng(20)


# ---------------------------------------------------------------------------------------
# namespaces


@pytest.mark.parametrize("namespace", [BallMath(), IntervalMath(), ArbMath()])
def test_every_math_function_is_provided(namespace):
    missing = [f for f in (*MATH_FUNCTIONS, "contract", "lift") if not callable(getattr(namespace, f, None))]
    assert not missing


def test_make_arithmetic_and_paths():
    arith = make_arithmetic("exact:200")
    assert isinstance(arith, Exact) and arith.precision == 200 and arith.path == "fast"
    assert Exact(path="mpmath").path == "mpmath"
    with pytest.raises(UnknownNameError):
        Exact(path="quad")


# ---------------------------------------------------------------------------------------
# operators, one by one: fast path inside the 300-bit mpmath path


def _unary(op, **attrs):
    return lambda: ([_pre(), Node("op", op, ("xin",), ("y",), attrs)], {})


def _binary(op, other):
    return lambda: ([_pre(), Node("op", op, ("xin", "c"), ("y",))], {"c": other})


ELEMENTWISE = {
    "Add": _binary("Add", RNG.standard_normal(4)),
    "Sub": _binary("Sub", RNG.standard_normal(4)),
    "Mul": _binary("Mul", RNG.standard_normal(4)),
    "Div": _binary("Div", RNG.uniform(0.5, 2.0, 4)),
    "Pow2": _binary("Pow", np.array(2.0)),
    "Pow3": _binary("Pow", np.array(3.0)),
    "PowMinus1": _binary("Pow", np.array(-1.0)),
    "PowHalf": lambda: ([_pre(), Node("abs", "Abs", ("xin",), ("a",)), Node("op", "Pow", ("a", "c"), ("y",))],
                        {"c": np.array(0.5)}),
    "PowGeneral": lambda: ([_pre(), Node("abs", "Abs", ("xin",), ("a",)), Node("op", "Pow", ("a", "c"), ("y",))],
                           {"c": np.array(1.7)}),
    "Neg": _unary("Neg"),
    "Abs": _unary("Abs"),
    "Exp": _unary("Exp"),
    "Erf": _unary("Erf"),
    "Sqrt": lambda: ([_pre(), Node("abs", "Abs", ("xin",), ("a",)), Node("op", "Sqrt", ("a",), ("y",))], {}),
    "Reciprocal": _unary("Reciprocal"),
    "Max": _binary("Max", RNG.standard_normal(4)),
    "Min": _binary("Min", RNG.standard_normal(4)),
    "Clip": lambda: ([_pre(), Node("op", "Clip", ("xin", "lo", "hi"), ("y",))], {"lo": np.array(-0.3), "hi": np.array(0.4)}),
    "Relu": _unary("Relu"),
    "Tanh": _unary("Tanh"),
    "Sigmoid": _unary("Sigmoid"),
    "Silu": _unary("Silu"),
    "Softplus": _unary("Softplus"),
    "LeakyRelu": _unary("LeakyRelu", alpha=0.2),
    "Elu": _unary("Elu", alpha=0.7),
    "Gelu": _unary("Gelu"),
    "GeluTanh": _unary("Gelu", approximate="tanh"),
    "PRelu": _binary("PRelu", np.array([0.1, -0.2, 0.3, 0.25])),
    "Where": lambda: ([_pre(), Node("op", "Where", ("mask", "xin", "c"), ("y",))],
                      {"mask": np.array([1, 0, 1, 0]), "c": RNG.standard_normal(4)}),
    "ReduceSum": lambda: ([_pre(), Node("op", "ReduceSum", ("xin", "axes"), ("y",), {"keepdims": 0})],
                          {"axes": np.array([1])}),
    "ReduceMean": lambda: ([_pre(), Node("op", "ReduceMean", ("xin", "axes"), ("y",))], {"axes": np.array([1])}),
    "ReduceMax": lambda: ([_pre(), Node("op", "ReduceMax", ("xin", "axes"), ("y",))], {"axes": np.array([1])}),
    "Softmax": _unary("Softmax", axis=-1),
    "LogSoftmax": _unary("LogSoftmax", axis=-1),
    "LayerNormalization": lambda: ([_pre(), Node("op", "LayerNormalization", ("xin", "s", "b"), ("y",), {"epsilon": 1e-5})],
                                   {"s": RNG.standard_normal(4), "b": RNG.standard_normal(4)}),
    "Gemm": lambda: ([_pre(), Node("op", "Gemm", ("xin", "w", "b"), ("y",), {"transB": 1})],
                     {"w": RNG.standard_normal((3, 4)), "b": RNG.standard_normal(3)}),
    "MatMul": lambda: ([_pre(), Node("op", "MatMul", ("xin", "w"), ("y",))], {"w": RNG.standard_normal((4, 5))}),
    "MatMulBatched": lambda: ([_pre(), Node("t", "Transpose", ("xin",), ("xt",), {"perm": (1, 0)}),
                               Node("r", "Reshape", ("xin", "s3"), ("x3",)), Node("r2", "Reshape", ("xt", "s3t"), ("x3t",)),
                               Node("op", "MatMul", ("x3", "x3t"), ("y",))],
                              {"s3": np.array([1, 3, 4]), "s3t": np.array([1, 4, 3])}),
    "Einsum": lambda: ([_pre(), Node("op", "Einsum", ("xin", "w"), ("y",), {"equation": "bi,oi->bo"})],
                       {"w": RNG.standard_normal((2, 4))}),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(ELEMENTWISE))
def test_operator_fast_path_holds_the_definition(case, path):
    nodes, inits = ELEMENTWISE[case]()
    g = _graph(nodes, [TensorInfo("x", "float", (None, 4))], ["y"], {"three": np.array(3.0), **inits})
    x = RNG.standard_normal((3, 4)) * 2.0
    x[0, 1] = 0.0
    assert_paths_agree(g, {"x": x}, path=path)


@pytest.mark.parametrize("path", PATHS)
def test_shape_operators_move_every_part(path):
    """Concat, Split, Slice, Pad (constant, reflect, edge), Expand, Squeeze, Unsqueeze,
    Flatten, Transpose, Gather on inexact balls: the moved parts are the interval's."""
    nodes = [
        _pre(),
        Node("cat", "Concat", ("xin", "c"), ("cat",), {"axis": 1}),
        Node("split", "Split", ("cat",), ("s0", "s1"), {"axis": 1}),
        Node("slice", "Slice", ("s1", "starts", "ends", "axes", "steps"), ("sl",)),
        Node("padc", "Pad", ("sl", "pads"), ("pc",)),
        Node("padr", "Pad", ("pc", "pads"), ("pr",), {"mode": "reflect"}),
        Node("pade", "Pad", ("pr", "pads"), ("pe",), {"mode": "edge"}),
        Node("unsq", "Unsqueeze", ("pe", "ax"), ("u",)),
        Node("exp", "Expand", ("u", "shape"), ("e",)),
        Node("sq", "Squeeze", ("u", "ax"), ("q",)),
        Node("flat", "Flatten", ("e",), ("f",)),
        Node("tr", "Transpose", ("f",), ("t",), {"perm": (1, 0)}),
        Node("gather", "Gather", ("t", "idx"), ("y",), {"axis": 0}),
    ]
    inits = {"three": np.array(3.0), "c": RNG.standard_normal((1, 2)),
             "starts": np.array([0]), "ends": np.array([3]), "axes": np.array([1]), "steps": np.array([2]),
             "pads": np.array([0, 1, 0, 1]), "ax": np.array([1]), "shape": np.array([1, 2, 1]),
             "idx": np.array([0, 2, 2, 1])}
    g = _graph(nodes, [TensorInfo("x", "float", (None, 4))], ["y", "s0", "q"], inits)
    x = RNG.standard_normal((1, 4))
    assert_paths_agree(g, {"x": x}, path=path)


def _conv_graph() -> Graph:
    nodes = [
        _pre(),
        Node("conv", "Conv", ("xin", "w", "b"), ("c",), {"pads": (1, 1, 1, 1), "strides": (1, 1), "group": 2}),
        Node("bn", "BatchNormalization", ("c", "s", "bb", "m", "v"), ("n",), {"epsilon": 1e-5}),
        Node("relu", "Relu", ("n",), ("r",)),
        Node("pool", "MaxPool", ("r",), ("p",), {"kernel_shape": (2, 2), "strides": (1, 1)}),
        Node("avg", "AveragePool", ("p",), ("a",), {"kernel_shape": (2, 2), "pads": (1, 1, 0, 0)}),
        Node("gap", "GlobalAveragePool", ("a",), ("g",)),
        Node("flat", "Flatten", ("g",), ("f",)),
        Node("fc", "Gemm", ("f", "fw", "fb"), ("logits",), {"transB": 1}),
        Node("sm", "Softmax", ("logits",), ("y",), {"axis": -1}),
    ]
    inits = {"three": np.array(3.0), "w": RNG.standard_normal((4, 1, 3, 3)) / 3, "b": RNG.standard_normal(4),
             "s": RNG.uniform(0.5, 1.5, 4), "bb": RNG.standard_normal(4), "m": RNG.standard_normal(4) * 0.1,
             "v": RNG.uniform(0.5, 2, 4), "fw": RNG.standard_normal((3, 4)), "fb": RNG.standard_normal(3)}
    return _graph(nodes, [TensorInfo("x", "float", (None, 2, 5, 5))], ["y"], inits, name="conv")


@pytest.mark.parametrize("path", PATHS)
def test_conv_block(path):
    assert_paths_agree(_conv_graph(), {"x": RNG.standard_normal((2, 2, 5, 5))}, path=path)


def _transformer():
    from analysis.benchmarks.graphs import minilm_feeds, minilm_graph

    graph = minilm_graph(layers=1, hidden=8, heads=2, ffn=16, vocab=40, tokens=5, seed=3)
    return graph, minilm_feeds(sentences=2, tokens=5, vocab=40, seed=4)


@pytest.mark.parametrize("path", PATHS)
def test_transformer_block(path):
    """Embeddings, LayerNorm, attention with a -1e4 mask, erf GELU, mean pooling."""
    graph, feeds = _transformer()
    feeds["attention_mask"][1, 3:] = 0
    assert_paths_agree(graph, feeds, path=path)


def test_batches_join_to_the_same_enclosures():
    graph, feeds = _transformer()
    whole = forward(graph, feeds, acc="exact")
    split = forward(graph, feeds, acc="exact", batch_size=1)
    a, b = whole.outputs["sentence_embedding"], split.outputs["sentence_embedding"]
    assert all(np.array_equal(p, q) for p, q in zip(a.parts(), b.parts()))


# ---------------------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("path", PATHS)
def test_softmax_with_one_dominant_score_and_masks(path):
    """A dominant score, an additive -1e4 mask, a -inf mask (exact zeros out), an additive
    -finfo.max mask (its sums beyond the fast path's kernels, on the arb path; its
    exponentials flushed there to a ball around 0 of radius 2^-2^30)."""
    nodes = [
        _pre(),
        Node("scale", "Mul", ("xin", "big"), ("s",)),
        Node("sm", "Softmax", ("s",), ("p",), {"axis": -1}),
        Node("cast", "Cast", ("mask",), ("mf",), {"to": 1}),
        Node("inv", "Sub", ("one", "mf"), ("im",)),
        Node("add", "Mul", ("im", "minus"), ("am",)),
        Node("masked", "Add", ("xin", "am"), ("sa",)),
        Node("sm2", "Softmax", ("sa",), ("q",), {"axis": -1}),
        Node("ninf", "Constant", (), ("neg_inf",), {"value": np.array(-np.inf)}),
        Node("where", "Where", ("mask", "xin", "neg_inf"), ("si",)),
        Node("sm3", "Softmax", ("si",), ("r",), {"axis": -1}),
        Node("lowest", "Mul", ("im", "fmin"), ("al",)),
        Node("masked_lowest", "Add", ("xin", "al"), ("sl",)),
        Node("sm4", "Softmax", ("sl",), ("t",), {"axis": -1}),
    ]
    inits = {"three": np.array(3.0), "big": np.array([40.0, 1.0, 1.0, 1.0]), "one": np.array(1.0),
             "minus": np.array(-1e4), "fmin": np.array(np.finfo(np.float64).min)}
    g = Graph(nodes, [TensorInfo("x", "float", (None, 4)), TensorInfo("mask", "int", (None, 4))],
              ["p", "q", "r", "t"], inits)
    feeds = {"x": RNG.standard_normal((3, 4)), "mask": np.array([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]])}
    fast, _ = assert_paths_agree(g, feeds, path=path)
    assert not fast.values["am"].radius().any()  # (1 - mask) * -1e4: float64 sums and products, exact
    r = fast.outputs["r"]
    zero = feeds["mask"] == 0
    assert np.all(r.hi[zero] == 0) and np.all(r.radius()[zero] == 0)
    assert np.all(exact_values(fast)["q"].value[zero] == 0)
    t = exact_values(fast)["t"]
    assert np.all(t.value[zero] == 0) and t.rounded[~zero].all()


@pytest.mark.parametrize("path", PATHS)
def test_layer_norm_of_constant_rows_and_cancelling_residuals(path):
    nodes = [
        _pre(),
        Node("tile", "Mul", ("xcol", "ones"), ("rows",)),
        Node("pre2", "Div", ("rows", "three"), ("r3",)),
        Node("ln", "LayerNormalization", ("r3", "s", "b"), ("y",), {"epsilon": 1e-5}),
        Node("neg", "Neg", ("xin",), ("nx",)),
        Node("cancel", "Add", ("xin", "nx"), ("zero",)),
        Node("cancel2", "Sub", ("xin", "xin"), ("zero2",)),
        Node("res", "Add", ("zero", "y"), ("out",)),
    ]
    inits = {"three": np.array(3.0), "ones": np.ones(4), "s": RNG.standard_normal(4), "b": RNG.standard_normal(4)}
    g = Graph(nodes, [TensorInfo("x", "float", (None, 4)), TensorInfo("xcol", "float", (None, 1))], ["out", "zero2"],
              inits)
    feeds = {"x": RNG.standard_normal((2, 4)), "xcol": RNG.standard_normal((2, 1))}
    fast, _ = assert_paths_agree(g, feeds, narrow=False, path=path)
    zero = fast.values["zero"]
    assert np.all(zero.hi == 0) and np.all(zero.radius() < 1e-30)
    y = exact_values(fast)["y"]  # the rows are constant: centred to 0 exactly, y = b
    assert np.all(np.abs(y.value - g.initializers["b"]) <= y.radius) and np.all(y.radius < 1e-25)


def test_zeros_and_exact_values():
    """Zero inputs give exact zeros through sums and relu; integer tensors are exact."""
    nodes = [Node("mm", "MatMul", ("x", "w"), ("y",)), Node("relu", "Relu", ("y",), ("z",)),
             Node("shape", "Shape", ("z",), ("s",))]
    g = _graph(nodes, [TensorInfo("x", "float", (None, 3))], ["z", "s"], {"w": RNG.standard_normal((3, 2))})
    run = forward(g, {"x": np.zeros((2, 3))}, acc="exact", keep=True)
    v = exact_values(run)
    assert np.all(v["z"].value == 0) and np.all(v["z"].radius < 1e-300) and v["z"].rounded.all()
    assert np.array_equal(v["s"].value, [2, 2]) and not v["s"].radius.any()


def test_arb_fallback_for_elements_out_of_the_kernels_range():
    """exp of -700 (below exp_core's range, above its zero cut) goes to the arb path, once."""
    nodes = [Node("e", "Exp", ("x",), ("y",))]
    g = _graph(nodes, [TensorInfo("x", "float", (None, 3))], ["y"])
    x = np.array([[-700.0, 1.0, -800.0]])
    fast, slow = _both(g, {"x": x})
    assert fast.arith.math.fallbacks == 1
    assert_holds(fast.outputs["y"], slow.outputs["y"], "y", narrow=False)


def test_sums_at_the_top_of_the_range_are_rescaled():
    """A ball plus or minus -finfo.max (an attention mask): the kernel on operands scaled
    by 2^-64, no fallback, and each ball holds the exact sum (Fractions) from the centre
    and both ends of the input ball; parts too small to scale exactly, and a sum that
    overflows, go to the arb path."""
    top = np.finfo(np.float64).max
    m = BallMath()
    a = Ball(np.array([0.9, -3.5, 1e-5, 2.0 ** -890, top / 2, 0.5]), np.array([3e-17, 1e-16, 0, 0, 0, 2.0**-1000]),
             np.array([1e-20, 0, 1e-30, 0, 0, 0]))
    for sign, op in ((1, m.add), (-1, m.sub)):
        before = m.fallbacks
        out = op(a, Ball(np.array([-top, -top, top, -top, sign * top, -top])))
        assert m.fallbacks - before == 3  # 2^-890 (below the range once scaled), the overflow, lo = 2^-1000
        b = [-top, -top, top, -top, sign * top, -top]
        for k in range(3):
            centre = fraction(a.hi[k]) + fraction(a.lo[k])
            zh, zl, zr = (float(p[k]) for p in out.parts())
            for v in (centre - fraction(a.rad[k]), centre, centre + fraction(a.rad[k])):
                assert abs(v + sign * fraction(b[k]) - fraction(zh) - fraction(zl)) <= fraction(zr), (sign, k)
            assert zr <= a.rad[k] + 2.0**-100 * top, (sign, k, zr)
        assert np.isnan(out.hi[4]) or not np.isfinite(out.radius()[4])


# ---------------------------------------------------------------------------------------
# refinement: samples the fast path does not pin down run again on the arb path


def _cancelling_graph() -> Graph:
    """(x/3 + 2^60) - 2^60: the double-double sum keeps x/3 only to about 2^-46."""
    nodes = [_pre(), Node("up", "Add", ("xin", "big"), ("u",)), Node("down", "Sub", ("u", "big"), ("y",))]
    return _graph(nodes, [TensorInfo("x", "float", (None, 2))], ["y"], {"three": np.array(3.0), "big": np.array(2.0**60)})


def test_refinement_reruns_only_the_samples_the_fast_path_misses():
    """Rows 0 and 2 (x/3 exact) meet 2^-60 on the fast path; row 1 loses 2^-46 there, is run again at 256 bits, and every kept tensor then
    holds the 300-bit definition and meets 2^-60."""
    x = np.array([[0.0, 0.0], [1.0, -2.0], [3.0, 6.0]])
    fast, _ = assert_paths_agree(_cancelling_graph(), {"x": x}, narrow=False)
    assert fast.arith.refined == 1 and fast.arith.refined_precision == ARB_START
    for name, t in fast.values.items():
        value, _, carried = t.parts()
        assert np.all(carried <= 2.0**-60 * np.abs(value)), name
    y = exact_values(fast)["y"]
    assert y.rounded.all() and np.array_equal(y.value, x / 3.0)
    alone = forward(_cancelling_graph(), {"x": x[[0, 2]]}, acc="exact", keep=True)
    assert alone.arith.refined == 0  # the other rows kept their fast-path balls
    for name, t in alone.values.items():
        assert all(np.array_equal(p, q[[0, 2]]) for p, q in zip(t.parts(), fast.values[name].parts())), name


def test_refinement_batches_agree_with_one_pass():
    x = np.array([[1.0, -2.0], [0.0, 0.0], [5.0, 7.0]])
    whole = forward(_cancelling_graph(), {"x": x}, acc="exact", keep=True)
    split = forward(_cancelling_graph(), {"x": x}, acc="exact", keep=True, batch_size=2)
    for name, t in whole.values.items():
        assert all(np.array_equal(p, q) for p, q in zip(t.parts(), split.values[name].parts())), name


def test_refinement_in_child_processes_agrees_with_one_process():
    """Four samples to refine split between two child processes (python -m
    emulator.graph.processes): the same balls and overflow masks as the pass in this process."""
    x = np.array([[1.0, -2.0], [0.0, 0.0], [5.0, 7.0], [-1.0, 1e300], [2.0, 4.0]])
    here = forward(_cancelling_graph(), {"x": x}, acc=Exact(workers=1), keep=True)
    apart = forward(_cancelling_graph(), {"x": x}, acc=Exact(workers=2), keep=True)
    assert here.arith.refined == apart.arith.refined == 4
    assert here.arith.refined_processes == 1 and apart.arith.refined_processes == 2
    for name, t in here.values.items():
        assert all(np.array_equal(p, q) for p, q in zip(t.parts(), apart.values[name].parts())), name
    assert here.overflow.keys() == apart.overflow.keys()
    assert all(np.array_equal(here.overflow[k], apart.overflow[k]) for k in here.overflow)


def test_child_processes_give_results_in_order_and_failures_come_home():
    """A child's task that fails is run here, after a warning naming the child's error
    (and here it fails the same way)."""
    from emulator.graph.processes import in_processes

    reciprocal = functools.partial(operator.truediv, 1.0)
    assert in_processes(reciprocal, [2.0, 4.0, 8.0]) == [0.5, 0.25, 0.125]
    with pytest.warns(RuntimeWarning, match="ZeroDivisionError"), pytest.raises(ZeroDivisionError):
        in_processes(reciprocal, [2.0, 0.0])


def test_arb_balls_convert_to_enclosing_double_doubles():
    """Every point of each Arb ball (exact rationals of its midpoint and radius) lies
    within the radius of the double-double, which is normalised; exact floats stay
    exact; beyond the float64 range the value is unknown; infinities stay exact."""
    import flint

    from emulator.graph.arbs import Arbs

    old = flint.ctx.prec
    flint.ctx.prec = 300
    try:
        third = flint.arb(1) / 3
        values = [third * (2 ** k) for k in (-1074, -1060, -500, -3, 0, 7, 900)] + \
                 [-third * 5, flint.arb(0.75), flint.arb(0), third.union(flint.arb(0.5))]
        special = [flint.arb(2) ** 1030, flint.arb("-inf"), flint.arb(1) / 0, flint.arb("inf") + third]
        ball = Arbs(values=np.array(values + special, dtype=object)).to_ball()
        for k, v in enumerate(values):
            mid = fraction(v.mid())
            rad = fraction(v.rad())
            h, lo, r = (float(p[k]) for p in ball.parts())
            centre = fraction(h) + fraction(lo)
            assert abs(mid - centre) + rad <= fraction(r), k
            assert float(centre) == h, k
        assert ball.rad[8] == 0 and ball.rad[9] == 0 and ball.lo[9] == 0  # 0.75 and 0 stay exact
        tail = slice(len(values), None)
        assert np.array_equal(ball.rad[tail], [np.inf, 0.0, np.inf, 0.0])
        assert np.array_equal(ball.hi[tail][[1, 3]], [-np.inf, np.inf])
    finally:
        flint.ctx.prec = old


def test_arb_path_runs_sympy_activations_piecewise_and_unions():
    """A sympy activation (Abs, a power) and a piecewise one on balls that straddle 0 hold
    the definition."""
    for act in ("sympy:Abs(y)**1.5 - y/3", "elu:0.5", "leaky_relu:0.2"):
        net = Network([Layer(np.array([[1.0, -0.5], [0.25, 2.0]]), None, act)])
        graph = network_to_graph(net)
        x = np.array([[0.3, -1.1], [2.0, 0.5], [0.0, 0.0], [2.0**-30, 0.5 * 2.0**-30]])
        assert_paths_agree(graph, {"x": x}, narrow=False, path="arb")


# ---------------------------------------------------------------------------------------
# against independent oracles


def _random_ball(shape, rel=2.0**-70, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape) * 3
    third = np.asarray(v / 3.0)
    lo = np.asarray((v - third * 3.0) / 3.0)  # a small normalised low word
    hi = third + lo
    lo = (third - hi) + lo
    return Ball(hi, lo, np.abs(hi) * rel * rng.uniform(0, 1, shape))


FUNCTIONS = {
    "exp": (mpmath.exp, lambda m, a: m.exp(a), 3.0),
    "erf": (mpmath.erf, lambda m, a: m.erf(a), 4.0),
    "log": (mpmath.log, lambda m, a: m.log(a), None),
    "sqrt": (mpmath.sqrt, lambda m, a: m.sqrt(a), None),
    "tanh": (mpmath.tanh, lambda m, a: m.tanh(a), 3.0),
    "gelu": (lambda t: t * (1 + mpmath.erf(t / mpmath.sqrt(2))) / 2, lambda m, a: m.activation("gelu", a), 3.0),
    "reciprocal": (lambda t: 1 / t, lambda m, a: m.reciprocal(a), 3.0),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_elementwise_balls_hold_every_point_of_their_input(name):
    """f at the centre and at both ends of each input ball lies in the output ball (400-bit
    mpmath), and the radius is tight: at most 2^-85 |f| beyond the propagated input radius."""
    f, apply, scale = FUNCTIONS[name]
    ball = _random_ball(300, seed=len(name))
    if scale is None:
        ball = Ball(np.exp(ball.hi * 60), ball.lo * 0, np.exp(ball.hi * 60) * 2.0**-70)
    else:
        ball = Ball(ball.hi * scale, ball.lo * scale, ball.rad * scale)
    out = apply(BallMath(), ball)
    with mpmath.workprec(ORACLE_BITS):
        for (h, l, r), (zh, zl, zr) in zip(zip(*(np.ravel(p) for p in ball.parts())),
                                           zip(*(np.ravel(p) for p in out.parts()))):
            c = mpmath.mpf(h) + mpmath.mpf(l)
            centre = mpmath.mpf(zh) + mpmath.mpf(zl)
            for v in (c - r, c, c + r):
                assert abs(f(v) - centre) <= zr, (name, h)
            assert zr <= 2.0**-85 * abs(f(c)) + 1.2 * abs(f(c + r) - f(c - r)) + 2.0**-1000, (name, h, zr)


def test_edge_arguments_of_the_kernels():
    """erf at its node ends, range switches and extremes; exp at its zero cut."""
    xs = np.array([0.0, 2.0**-800, 1 / 64, 1 / 32, 0.5, 8.99, 9.0, 9.01, 30.0, -9.0, -1e300, 1e-5])
    cases = [("erf", mpmath.erf, xs), ("exp", mpmath.exp, np.array([-746.0, -747.0, -649.0, 707.0, 0.0, -1e4])),
             ("log", mpmath.log, np.array([1.0, 1 + 2.0**-40, 1 - 2.0**-40, 2.0**-899, 2.0**999, 0.7071])),
             ("sqrt", mpmath.sqrt, np.array([1.0, 2.0, 2.0**-899, 2.0**999, 0.25]))]
    m = BallMath()
    with mpmath.workprec(ORACLE_BITS):
        for name, f, x in cases:
            out = getattr(m, name)(Ball(x))
            for v, zh, zl, zr in zip(x, *(np.ravel(p) for p in out.parts())):
                assert abs(f(mpmath.mpf(v)) - (mpmath.mpf(zh) + mpmath.mpf(zl))) <= zr, (name, v)
                assert zr <= 2.0**-95 * abs(f(mpmath.mpf(v))) + 2.0**-1065, (name, v, zr)


@pytest.mark.parametrize("batched", [False, True])
def test_contractions_against_fraction_sums(batched):
    """Dot2 balls hold the exact sum at the centre and at a corner of the input balls
    (Fraction oracle), with cancellation (a row that sums to about zero)."""
    m = BallMath()
    x = _random_ball((2, 3, 17), seed=1)
    w = _random_ball((2, 4, 17), seed=2) if batched else Ball(np.random.default_rng(3).standard_normal((4, 17)))
    if not batched:
        xh, xl = x.hi.copy(), x.lo.copy()
        xh[0, 0] = w.hi[1] * 1e-3
        xh[0, 0, -1] = -np.dot(w.hi[1, :-1], xh[0, 0, :-1]) / w.hi[1, -1]
        xl[0, 0] = 0.0
        x = Ball(xh, xl, x.rad)
    y = m.contract(None, x, w, None, batched=batched)
    corner = np.where(np.arange(17) % 2 == 0, 1, -1)
    for g in range(2):
        for t in range(3):
            for i in range(4):
                wv = [(w.hi[g, i, j] if batched else w.hi[i, j], (w.lo[g, i, j] if batched else 0.0),
                       (w.rad[g, i, j] if batched else 0.0)) for j in range(17)]
                xv = [(x.hi[g, t, j], x.lo[g, t, j], x.rad[g, t, j]) for j in range(17)]
                centre = fraction(y.hi[g, t, i]) + fraction(y.lo[g, t, i])
                for sign in (0, 1):
                    xs = [fraction(h) + fraction(l) + sign * int(c) * fraction(r) for (h, l, r), c in zip(xv, corner)]
                    ws = [fraction(h) + fraction(l) - sign * int(c) * fraction(r) for (h, l, r), c in zip(wv, corner)]
                    assert abs(exact_dot(ws, xs) - centre) <= fraction(y.rad[g, t, i]), (g, t, i, sign)


# ---------------------------------------------------------------------------------------
# the MLP case


def _mlp(activations, seed=5):
    rng = np.random.default_rng(seed)
    widths = [6, 9, 7, 5, 4][: len(activations) + 1]
    return Network([Layer(rng.standard_normal((m, n)) / math.sqrt(n), rng.standard_normal(m) * 0.1, act)
                    for n, m, act in zip(widths[:-1], widths[1:], activations)], name="mlp")


@pytest.mark.parametrize("activations", [("tanh", "sigmoid", "identity"), ("relu", "gelu", "silu", "elu:0.5"),
                                         ("leaky_relu:0.2", "softplus", "gelu_tanh")])
def test_mlp_as_a_graph_agrees_with_the_reference(activations):
    net = _mlp(activations)
    x = np.random.default_rng(6).standard_normal((8, 6))
    run = forward(network_to_graph(net), {"x": x}, acc="exact", keep=True)
    ref = exact_forward(net, x)
    values = exact_values(run)
    for k in range(len(net.layers)):
        pre, out = layer_tensors(k)
        for mine, theirs, radius in ((values[pre], ref.preactivations[k], ref.pre_radius[k]),
                                     (values[out], ref.outputs[k], ref.out_radius[k])):
            assert np.all(np.abs(mine.value - theirs) <= mine.radius + radius), k
            assert np.all(mine.radius <= 2.0**-80 * np.abs(theirs) + 2.0**-52 * np.abs(theirs) + 2.0**-1000), k


def test_bundled_mlp_as_a_graph():
    from emulator import load_model
    from emulator.data import load_data

    net = load_model("mnist1d-tanh")
    x = load_data("mnist1d").x[:5]
    values = exact_values(forward(network_to_graph(net), {"x": x}, acc="exact"))
    out = values[layer_tensors(len(net.layers) - 1)[1]]
    ref = exact_forward(net, x)
    assert np.all(np.abs(out.value - ref.outputs[-1]) <= out.radius + ref.out_radius[-1])
    assert out.rounded.mean() > 0.99


def test_sympy_activation_runs_exactly_through_the_arb_path():
    """An activation no kernel covers (a sympy expression) is enclosed by the arb path."""
    net = Network([Layer(np.array([[1.0, -0.5], [0.25, 2.0]]), None, "sympy:y**3 + y")])
    x = np.array([[0.3, -1.1], [2.0, 0.5]])
    values = exact_values(forward(network_to_graph(net), {"x": x}, acc="exact"))
    ref = exact_forward(net, x)
    out = values[layer_tensors(0)[1]]
    assert np.all(np.abs(out.value - ref.outputs[0]) <= out.radius + ref.out_radius[0])
    assert np.all(out.radius <= 2.0**-50 * np.abs(out.value))


# ---------------------------------------------------------------------------------------
# benchmark


def test_graphs_bench_section(monkeypatch):
    from analysis.benchmarks import graphs as bench

    monkeypatch.setattr(bench, "QUICK_STAND_IN", dict(layers=1, hidden=16, heads=2, ffn=32, vocab=50, tokens=8,
                                                      sentences=2))
    monkeypatch.setattr(bench, "_minilm_installed", lambda: False)
    monkeypatch.setattr(bench, "_digits", lambda: [])  # the digits rows: tests/test_graph_float32.py
    rows = bench.run(quick=True)
    assert [r.unit for r in rows] == ["s", "MiB"]
    assert rows[0].value > 0 and "float64 native pass" in rows[0].baselines and rows[0].meets is None
