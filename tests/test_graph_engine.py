"""The graph engine: accumulation plans, sites summed bit for bit as ``linear`` sums, the
storage rule (every operator's output rounded once, sums left in their accumulator
format), batches joined, and an MLP run as a graph."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.errors import DataError, ModelFileError, UnknownNameError
from emulator.graph import AccumulationPlan, Emulated, Graph, Node, Site, TensorInfo, forward
from emulator.linear import linear
from emulator.network import Layer, Network
from emulator.rounding import round_to

RNG = np.random.default_rng(3)


def _attention() -> Graph:
    w = RNG.standard_normal((4, 6))
    nodes = [
        Node("proj", "MatMul", ("x", "w"), ("q",)),
        Node("t", "Transpose", ("q",), ("qt",), {"perm": (0, 2, 1)}),
        Node("scores", "MatMul", ("q", "qt"), ("s",)),
        Node("softmax", "Softmax", ("s",), ("p",), {"axis": -1}),
        Node("context", "MatMul", ("p", "q"), ("c",)),
        Node("mean", "ReduceMean", ("c",), ("m",), {"axes": (1,), "keepdims": 0}),
    ]
    return Graph(nodes, [TensorInfo("x", "float", (None, 5, 4))], ["m"], {"w": w}, "attention")


def test_plan_resolution():
    plan = AccumulationPlan({"MatMul": "fp16", "*softmax*": "fp32", "*": "bf16"})
    assert plan.resolve(Site("scores", "MatMul")).spec == "fp16:recursive"
    assert plan.resolve(Site("softmax", "Softmax", "sum")).spec == "fp32:recursive"
    assert plan.resolve(Site("mean", "ReduceMean")).spec == "bf16:recursive"
    assert AccumulationPlan(None).resolve(Site("a", "MatMul")) is None
    assert AccumulationPlan({"scores": None, "*": "fp16"}).resolve(Site("scores", "MatMul")) is None
    with pytest.raises(UnknownNameError, match="Unknown format 'fp9'"):
        AccumulationPlan({"MatMul": "fp9"})


@pytest.mark.parametrize("spec", ["fp16", "bf16:pairwise", "fp8-e4m3fn:blocked:4", "fp16:promote:2:fp32",
                                  "fp16:products=fp8-e5m2:bias=last", "fp16:rounding=down"])
def test_every_site_is_summed_as_linear_sums(spec):
    """Shared and batched contractions and one-output sums (rows go in as components) give
    linear's results bit for bit at the operands the site saw."""
    graph = _attention()
    arith = Emulated(spec, record=True)
    from emulator.graph.engine import run_graph

    run_graph(graph, {"x": RNG.standard_normal((3, 5, 4))}, arith)
    assert [r.site.name for r in arith.records] == ["proj", "scores", "softmax.sum", "context", "mean"]
    for r in arith.records:
        groups = [(r.x[g], r.w[g], r.y[g]) for g in range(r.x.shape[0])] if r.batched else [(r.x, r.w, r.y)]
        for x, w, y in groups:
            np.testing.assert_array_equal(y, linear(x, w, r.bias, spec))


def test_storage_rounds_every_output_but_sums():
    graph = _attention()
    x = RNG.standard_normal((2, 5, 4))
    run = forward(graph, {"x": x}, "fp16", storage="bf16", keep=True)
    for name in ("p", "qt"):  # computed outputs: bf16 values
        np.testing.assert_array_equal(run.values[name], round_to(run.values[name], "bf16"))
    q = run.values["q"]  # a sum: a value of fp16, not rounded to bf16
    assert not np.array_equal(q, round_to(q, "bf16"))
    np.testing.assert_array_equal(q, round_to(q, "fp16"))


def test_batches_join_and_overflow_masks():
    graph = _attention()
    x = RNG.standard_normal((7, 5, 4))
    whole = forward(graph, {"x": x}, "fp16")
    parts = forward(graph, {"x": x}, "fp16", batch_size=3)
    np.testing.assert_array_equal(whole.outputs["m"], parts.outputs["m"])
    assert parts.overflow["scores"].shape == whole.overflow["scores"].shape == (7, 5, 5)


def test_a_network_runs_as_its_graph():
    rng = np.random.default_rng(0)
    net = Network([Layer(rng.standard_normal((6, 4)), rng.standard_normal(6), "tanh"),
                   Layer(rng.standard_normal((3, 6)), None, "identity")], "mlp")
    x = rng.standard_normal((5, 4))
    for spec in (None, "bf16", "fp8-e4m3fn:pairwise"):
        run = forward(net.graph, {"x": x}, spec, storage="fp16")
        np.testing.assert_array_equal(run.outputs["layer1.out"], net.forward(x, acc=spec, storage="fp16"))
    y0 = linear(round_to(x, "fp16"), round_to(net[0].weight, "fp16"), round_to(net[0].bias, "fp16"), "bf16")
    np.testing.assert_array_equal(net.forward(x, acc="bf16", storage="fp16", return_all=True).preactivations[0], y0)


def test_feeds_are_checked():
    graph = _attention()
    with pytest.raises(DataError, match="needs the data input"):
        forward(graph, {}, None)
    with pytest.raises(DataError, match="has no input named"):
        forward(graph, {"x": np.zeros((1, 5, 4)), "y": np.zeros(1)}, None)
    with pytest.raises(ModelFileError, match="unsupported op 'Hardmax' \\(node 'h'\\)"):
        Graph([Node("h", "Hardmax", ("x",), ("y",))], [TensorInfo("x")], ["y"])


def test_a_graph_exported_with_a_fixed_batch_of_one_runs_sample_by_sample():
    w = RNG.standard_normal((3, 2))
    fixed = Graph([Node("fc", "MatMul", ("x", "w"), ("y",)), Node("r", "Reshape", ("y", "shape"), ("z",))],
                  [TensorInfo("x", "float", (1, 3))], ["z"], {"w": w, "shape": np.array([1, 2])}, "old-export")
    x = RNG.standard_normal((5, 3))
    np.testing.assert_array_equal(forward(fixed, {"x": x}, "fp16").outputs["z"], linear(x, w.T, None, "fp16"))
    other = Graph(fixed.nodes, [TensorInfo("x", "float", (4, 3))], ["z"], fixed.initializers, "batch-of-four")
    with pytest.raises(ModelFileError, match="exported with a fixed batch of 4"):
        forward(other, {"x": x}, None)
