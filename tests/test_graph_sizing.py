"""The smallest safe accumulators of a graph (docs/method.md#sizing-a-graph): every bundled
graph's sizing checks out by emulation, formats with one bit less fail a check (an exact
rational reach), the search on an activation x activation site is the brute-force
minimum, the enclosures hold every computed operand (random inputs and corners of the
box, through convolutions, pooling, LayerNorm, Softmax, LogSoftmax and GELU), integer
widths of a box of weights against Python ints, the wide-target and integer-input
refusals, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.bounds import local_bound
from analysis.enclosure import interval_ball
from analysis.graph_ranges import RangeMath
from analysis.graph_sizing import size_graph
from analysis.sizing import EXPONENT_BITS, SIGNIFICAND_BITS, InputBox, SizingError, integer_sizing, search, size_layers
from analysis.sizing_checks import check_graph_sizing
from emulator import load_data, load_model
from emulator.accumulation import parse_accumulation
from emulator.formats import get_format
from emulator.graph import Graph, Node, TensorInfo, forward
from emulator.graph.arithmetic import Emulated
from emulator.graph.math import FLOAT64
from emulator.modelio import bundled_models

from oracles import fraction

GRAPHS = [name for name in bundled_models() if isinstance(load_model(name), Graph)]


def _range(graph: Graph, samples: "int | None" = None):
    data = load_data(graph.meta["default_data"]).head(samples)
    return data, {"x": (data.x.min(axis=0), data.x.max(axis=0))}


def _largest_component(x_star: np.ndarray, w_star: np.ndarray, bias) -> "tuple[float, object]":
    """The component of largest float64 a_i and its exact a_i (rationals): x* (groups,
    rows, n) and |w*| (groups, m, n)."""
    sums = np.abs(x_star) @ np.swapaxes(np.abs(w_star), -1, -2)
    g, r, i = np.unravel_index(int(np.argmax(sums)), sums.shape)
    exact = sum(abs(fraction(a) * fraction(b)) for a, b in zip(x_star[g, r], w_star[g, i]))
    return exact + (0 if bias is None else abs(fraction(bias[i])))


def _fails_a_check(fmt: str, box: InputBox, weight, bias, allowed) -> bool:
    """The format certainly fails on the site: its bound at the extreme operands exceeds
    the allowed error somewhere, or a lower estimate of the largest a_i (exact, rationals)
    plus its bound exceeds the format's max."""
    spec = f"{fmt}:recursive"
    if isinstance(weight, InputBox):
        x_star, w_star = box.magnitude, weight.magnitude
    else:
        x_star, w_star = box.extreme[None], np.asarray(weight)[None]
    bound = np.stack([local_bound(x_star[g], w_star[g], bias, spec) for g in range(w_star.shape[0])])
    if np.any(bound > np.reshape(allowed, bound.shape)):
        return True
    return _largest_component(x_star, w_star, bias) + fraction(np.max(bound)) > fraction(get_format(fmt).max)


@pytest.mark.slow
@pytest.mark.parametrize("name", GRAPHS)
@pytest.mark.parametrize("target", [1e-2, 1e-3])
def test_every_bundled_graph_is_sized_and_checks_out(name, target):
    graph = load_model(name)
    data, boxes = _range(graph)
    sites = size_graph(graph, boxes, target)
    assert [s.site.name for s in sites] == list(graph.site_names)
    checks = check_graph_sizing(graph, {"x": data.x[:40]}, sites)
    for site, check in zip(sites, checks):
        assert np.max(site.chosen.bound) <= target
        parse_accumulation(site.chosen.name)
        assert check["outside_box"] == 0 and check["samples"] == 40, site.site.name
        for key in ("overflows", "violations", "above_target"):
            assert check["chosen"][key] == 0 and check["channels"][key] == 0, (site.site.name, key, check)
        for mode in ("wrap", "saturate"):
            assert check["integer"][mode] == {"overflows": 0, "mismatches": 0, "fits_with_one_bit_less": 0}
        assert check["integer"]["inputs_above_range"] == 0
        weight = site.weight if site.weights is None else site.weights
        for smaller in site.smaller:
            assert not smaller.ok.all()
            assert _fails_a_check(smaller.name, site.box, weight, site.bias, site.allowed), (site.site.name,
                                                                                              smaller.name)
        assert len(site.smaller) == (2 if site.chosen.name[1:].split("m")[0] != "2" else 1)


def test_the_search_on_an_activation_product_is_the_brute_force_minimum():
    rng = np.random.default_rng(3)
    lo = -rng.uniform(0, 3, (2, 3, 5))
    x = InputBox(lo, lo + rng.uniform(0, 6, lo.shape))
    wl = -rng.uniform(0, 2, (2, 4, 5)) * 2.0 ** rng.integers(-3, 4, (2, 4, 1))
    w = InputBox(wl, wl + rng.uniform(0, 4, wl.shape))
    allowed = np.full((2, 3, 4), 1e-3)
    chosen, channels = search("recursive", x, w, None, allowed)
    passing = [(1 + a + b, -b, f"e{a}m{b}") for a in EXPONENT_BITS for b in SIGNIFICAND_BITS
               if not _fails_a_check(f"e{a}m{b}", x, w, None, allowed)]
    assert chosen.name == min(passing)[2]
    for i, fmt in enumerate(channels.formats):
        one = InputBox(w.lo[:, i:i + 1], w.hi[:, i:i + 1])
        ok = [(1 + a + b, -b) for a in EXPONENT_BITS for b in SIGNIFICAND_BITS
              if not _fails_a_check(f"e{a}m{b}", x, one, None, allowed[..., i:i + 1])]
        a, b = (int(v) for v in fmt[1:].split("m"))
        assert (1 + a + b, -b) == min(ok)


def test_integer_widths_of_a_box_of_weights_against_python_ints():
    rng = np.random.default_rng(8)
    x = InputBox(-rng.uniform(0, 3, (2, 3, 6)), rng.uniform(0, 3, (2, 3, 6)))
    w = InputBox(-rng.uniform(0, 5, (2, 4, 6)), rng.uniform(0, 5, (2, 4, 6)))
    sizing = integer_sizing(x, w, None)
    s_x = max(max(abs(fraction(a)), abs(fraction(b))) for a, b in zip(x.lo.ravel(), x.hi.ravel())) / 127
    s_w = max(max(abs(fraction(a)), abs(fraction(b))) for a, b in zip(w.lo.ravel(), w.hi.ravel())) / 127
    assert fraction(sizing.input_scale) == pytest.approx(s_x, rel=1e-15)
    assert fraction(sizing.weight_scale) == pytest.approx(s_w, rel=1e-15)
    for i in range(4):
        reach = max(sum(int(a) * int(b) for a, b in zip(sizing.x_max[g, r], sizing.w_max[g, i]))
                    for g in range(2) for r in range(3))
        bits = int(sizing.bits[i])
        assert reach <= 2 ** (bits - 1) - 1 and reach > 2 ** (bits - 2) - 1
        xw, ww = sizing.worst(i)
        assert sum(int(a) * int(b) for a, b in zip(xw, ww)) == reach
    values = rng.uniform(w.lo, w.hi, (50, *w.lo.shape))
    assert np.all(np.abs(sizing.quantise_weights(values)) <= sizing.w_max)
    ones = integer_sizing(InputBox(np.zeros(4), np.ones(4)), np.ones((1, 4)), None)
    assert ones.weight_scale == 1.0 and ones.w_q.tolist() == [[1, 1, 1, 1]] and ones.bits.tolist() == [10]


@pytest.mark.parametrize("name, arity, domain", [
    ("add", 2, (-50, 50)), ("sub", 2, (-50, 50)), ("mul", 2, (-50, 50)), ("div", 2, (0.5, 40)), ("sqrt", 1, (0, 90)),
    ("reciprocal", 1, (0.25, 9)), ("exp", 1, (-40, 30)), ("log", 1, (1e-3, 1e3)), ("erf", 1, (-4, 4)),
    ("tanh", 1, (-6, 6)), ("pow", 2, (0.5, 3)), ("gelu", 1, (-8, 8)), ("sigmoid", 1, (-30, 30)), ("relu", 1, (-5, 5)),
])
def test_range_math_holds_every_float64_value(name, arity, domain):
    """Each function of the float64 namespace at points of random intervals (their ends
    included; half of them single points, whose exact enclosure is tight, so that the
    float64 rounding shows) lies in RangeMath's ball over them (rationals)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    math, native = RangeMath(), FLOAT64
    ends_ = [np.sort(rng.uniform(*domain, (2, 40)), axis=0) for _ in range(arity)]
    for e in ends_:
        e[1, :20] = e[0, :20]
    if name == "pow":
        ends_[1] = np.repeat(rng.choice([2.0, 3.0, 0.5, -1.0, 1.7], (1, 40)), 2, axis=0)
    balls = [interval_ball(lo, hi) for lo, hi in ends_]
    if name in ("gelu", "sigmoid", "relu"):
        enclosure, fn = math.activation(name, balls[0]), (lambda y: native.activation(name, y))
    else:
        enclosure, fn = getattr(math, name)(*balls), getattr(native, name)
    hi, lo, rad = enclosure.parts()
    assert np.all(np.isfinite(hi)) and np.all(np.isfinite(rad))
    centre = [fraction(h) + fraction(l) for h, l in zip(hi, lo)]
    for t in np.linspace(0, 1, 5):
        points = [a + t * (b - a) for a, b in ends_]
        mixed = [ends_[0][0], *(e[1] for e in ends_[1:])]
        for corner in (points, [a for a, _ in ends_], [b for _, b in ends_], mixed):
            v = fn(*corner)
            assert all(abs(fraction(x) - c) <= fraction(r) for x, c, r in zip(v, centre, rad)), name


def _softmax_graph(op: str) -> Graph:
    """x (N, 6) -> Gemm 6 -> 5 -> Softmax / LogSoftmax -> MatMul 5 -> 3."""
    rng = np.random.default_rng(2)
    nodes = [Node("proj", "Gemm", ("x", "W", "b"), ("s",), {"transB": 1}), Node("norm", op, ("s",), ("p",)),
             Node("out", "MatMul", ("p", "V"), ("y",))]
    return Graph(nodes, [TensorInfo("x", "float", (None, 6))], ["y"],
                 {"W": rng.standard_normal((5, 6)) * 3, "b": rng.standard_normal(5), "V": rng.standard_normal((5, 3))},
                 op.lower())


def _layer_norm_graph() -> Graph:
    """x (N, 4, 6) -> LayerNormalization (eps 1e-5) -> Gelu -> MatMul with itself^T
    (an activation x activation product) and a Gemm."""
    rng = np.random.default_rng(4)
    nodes = [Node("norm", "LayerNormalization", ("x", "g", "beta"), ("n",), {"axis": -1, "epsilon": 1e-5}),
             Node("act", "Gelu", ("n",), ("a",)), Node("tr", "Transpose", ("a",), ("at",), {"perm": (0, 2, 1)}),
             Node("gram", "MatMul", ("a", "at"), ("gm",)), Node("fc", "MatMul", ("gm", "V"), ("y",))]
    return Graph(nodes, [TensorInfo("x", "float", (None, 4, 6))], ["y"],
                 {"g": rng.uniform(0.5, 2, 6), "beta": rng.standard_normal(6), "V": rng.standard_normal((4, 2))},
                 "layer-norm")


def _inputs(lo: np.ndarray, hi: np.ndarray, rng) -> np.ndarray:
    """Random points of the box, its corners, and rows that are constant or nearly so
    (a variance near 0)."""
    shape = lo.shape
    uniform = rng.uniform(lo, hi, (200, *shape))
    corners = np.where(rng.random((60, *shape)) < 0.5, lo, hi)
    level = rng.uniform(lo.min(), hi.max(), (60, *shape[:-1], 1))
    flat = np.clip(level + np.where(rng.random((60, *shape)) < 0.2, 1e-7, 0.0), lo, hi)
    return np.concatenate([uniform, corners, flat])


@pytest.mark.parametrize("model", ["digits-cnn", "digits-transformer", "digits-tanh", "softmax", "logsoftmax",
                                   "layer-norm"])
@pytest.mark.parametrize("target", [1e-1, 1e-3])
def test_enclosures_hold_every_computed_operand(model, target):
    """Every site's operands, with every site in its chosen format, lie in the boxes the
    site was sized on, for random inputs and corners of the input box."""
    rng = np.random.default_rng(6)
    graph = {"softmax": lambda: _softmax_graph("Softmax"), "logsoftmax": lambda: _softmax_graph("LogSoftmax"),
             "layer-norm": _layer_norm_graph}.get(model, lambda: load_model(model))()
    graph = graph.graph if hasattr(graph, "graph") else graph
    shape = graph.inputs[0].shape[1:]
    lo, hi = (np.full(shape, -3.0), np.full(shape, 3.0)) if model in ("softmax", "logsoftmax", "layer-norm") else \
        _range(graph)[1]["x"]
    sites = size_graph(graph, {"x": (lo, hi)}, target)
    arith = _Chosen({s.site.name: s.chosen.spec for s in sites})
    forward(graph, {"x": _inputs(lo, hi, rng)}, arith)
    records = {r.site.name: r for r in arith.records}
    for site in sites:
        record = records[site.site.name]
        x = record.x.reshape(-1, *site.box.lo.shape)
        assert np.all((site.box.lo <= x) & (x <= site.box.hi)), site.site.name
        if site.weights is not None:
            w = record.w.reshape(-1, *site.weights.lo.shape)
            assert np.all((site.weights.lo <= w) & (w <= site.weights.hi)), site.site.name
        assert not record.overflow.any(), site.site.name


class _Chosen(Emulated):
    def __init__(self, specs):
        super().__init__(None, record=True)
        self.specs = specs

    def spec(self, site):
        return parse_accumulation(self.specs[site.name])


def test_an_mlp_graph_sizes_its_first_layer_as_the_mlp():
    net = load_model("digits-relu")
    data = load_data("digits")
    lo, hi = data.x.min(axis=0), data.x.max(axis=0)
    layers = size_layers(net, lo, hi, 1e-3)
    sites = size_graph(net.graph, {"x": (lo, hi)}, 1e-3)
    assert len(sites) == len(layers)
    assert sites[0].chosen.name == layers[0].chosen.name
    # the graph's input box is the ball holding [lo, hi], its ends a rounding wider
    assert np.all(sites[0].chosen.bound[0] >= layers[0].chosen.bound)
    np.testing.assert_allclose(sites[0].chosen.bound[0], layers[0].chosen.bound, rtol=1e-14)
    assert sites[0].integer.bits.tolist() == layers[0].integer.bits.tolist()
    assert sites[0].channels.formats == layers[0].channels.formats


def test_a_target_the_softmax_denominator_may_reach_is_refused():
    """With E >= 1 the softmax's denominator (>= 1 exactly) may be computed as 0, so its
    output has no bound and the product that reads it cannot be sized."""
    graph = load_model("digits-transformer")
    _, boxes = _range(graph)
    with pytest.raises(SizingError, match="site 'block0.attention.context': the range of its operand x is not "
                                          "bounded"):
        size_graph(graph, boxes, 2.0)


def test_integer_inputs_are_refused():
    graph = Graph([Node("emb", "Gather", ("table", "ids"), ("e",), {"axis": 0}),
                   Node("fc", "MatMul", ("e", "W"), ("y",))],
                  [TensorInfo("ids", "int", (None, 3))], ["y"], {"table": np.ones((5, 2)), "W": np.ones((2, 2))}, "ids")
    with pytest.raises(SizingError, match="input 'ids' holds integers"):
        size_graph(graph, {}, 1e-3)


def test_cli_size_graphs(run_cli, tmp_path):
    out = tmp_path / "size.json"
    code, stdout, stderr = run_cli("size", "digits-cnn", "--target-error", "1e-3", "--samples", "20", "--per-channel",
                                   "--json", out)
    assert code == 0, stderr
    assert "one bit less fails" in stdout and "site conv1 per channel" in stdout and "GlobalAveragePool" in stdout
    record = json.loads(out.read_text())
    assert [layer["site"] for layer in record["layers"]] == ["conv1", "conv2", "pool2", "classifier"]
    for layer in record["layers"]:
        parse_accumulation(layer["float_format"])
        assert isinstance(layer["integer_bits"], int) and 0 < layer["max_bound"] <= 1e-3
        assert len(layer["channels"]) == layer["outputs"] and layer["op"] in ("Conv", "GlobalAveragePool", "Gemm")
    assert record["failures"] == []
    code, stdout, stderr = run_cli("size", "digits-transformer", "--target-error", "1e-2", "--input-range", "0,1",
                                   "--samples", "6", "--json", out, timeout=300)
    assert code == 0, stderr
    record = json.loads(out.read_text())
    scores = next(layer for layer in record["layers"] if layer["site"] == "block0.attention.scores")
    assert scores["op"] == "MatMul" and scores["groups"] == 4 and "weight_range" in scores
    assert record["input_range"] == "--input-range 0,1" and record["failures"] == []
    code, _, stderr = run_cli("size", "digits-cnn", "--target-error", "1e-2", "--input-range", "0,0.5")
    assert code == 2 and "lie outside it" in stderr and len(stderr.strip().splitlines()) == 1
