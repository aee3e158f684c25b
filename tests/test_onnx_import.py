"""ONNX models as graphs: tensors and attributes, inputs and outputs, external data, opsets,
refusals, the fusion of decomposed LayerNorm / GELU / SiLU, the MLP rule of load_model,
models exported by torch, and bad input (one line, status 2 from the CLI)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from emulator.errors import DataError, ModelFileError
from onnx_models import FLOAT, Case, assert_matches_ort, model_of, ort_runs_double, run_ort, run_ours, without_package

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from emulator.graph import Graph, TensorInfo, forward  # noqa: E402
from emulator.graph.onnx_import import OPSETS, attribute_value, graph_from_onnx, snap_float32, tensor_array  # noqa: E402


def _relu_model(inputs=None, opset=18, initializers=None, extra_nodes=()):
    """x -> Relu -> y (plus ``extra_nodes``), float64, batch dimension named."""
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 4])]
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"), *extra_nodes]
    return model_of(nodes, inputs, ["y"], initializers, opset)


# ---- tensors and attributes ---------------------------------------------------------------

FLOAT_TYPES = [("FLOAT16", "fp16"), ("BFLOAT16", "bf16"), ("FLOAT", "fp32"), ("DOUBLE", "fp64"),
               ("FLOAT8E4M3FN", "fp8-e4m3fn"), ("FLOAT8E5M2", "fp8-e5m2")]


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed field"])
@pytest.mark.parametrize("type_name, fmt", FLOAT_TYPES, ids=[t for t, _ in FLOAT_TYPES])
def test_float_tensors_convert_exactly_to_float64(type_name, fmt, raw):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from emulator.rounding import round_to

    values = round_to(np.array([1 / 3, -2.75, 0.0123, 200.0, -0.0, 5e-3]), fmt)
    data_type = getattr(TensorProto, type_name)
    if raw:
        numpy_type = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16, "fp32": np.float32, "fp64": np.float64,
                      "fp8-e4m3fn": ml_dtypes.float8_e4m3fn, "fp8-e5m2": ml_dtypes.float8_e5m2}[fmt]
        tensor = helper.make_tensor("t", data_type, [2, 3], values.astype(numpy_type).tobytes(), raw=True)
    else:
        tensor = helper.make_tensor("t", data_type, [2, 3], values.tolist())
    got = tensor_array(tensor)
    assert got.dtype == np.float64 and got.shape == (2, 3)
    np.testing.assert_array_equal(got.ravel(), values)
    assert np.signbit(got.ravel()[4])


INT_TYPES = ["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL"]


def test_integer_and_boolean_initialisers_become_int64():
    values = {name: ([1, 0, 1, 1] if name == "BOOL" else [0, 7, 100, 1] if name.startswith("U") else [-3, 0, 5, 127])
              for name in INT_TYPES}
    inits = [helper.make_tensor(f"c_{n}", getattr(TensorProto, n), [4], v) for n, v in values.items()]
    model = _relu_model()
    model.graph.initializer.extend(inits)
    graph = graph_from_onnx(model)
    for name, v in values.items():
        got = graph.initializers[f"c_{name}"]
        assert got.dtype == np.int64, name
        np.testing.assert_array_equal(got, v, err_msg=name)


def test_uint64_beyond_int64_is_refused():
    model = _relu_model()
    model.graph.initializer.append(numpy_helper.from_array(np.array([2 ** 63 + 5], dtype=np.uint64), "big"))
    with pytest.raises(DataError, match="initialiser 'big' has integers beyond int64"):
        graph_from_onnx(model)


def test_string_tensors_are_refused():
    with pytest.raises(ModelFileError, match="tensor 's' has type STRING; only numbers are supported"):
        tensor_array(helper.make_tensor("s", TensorProto.STRING, [1], [b"a"]))


def test_attribute_types():
    tensor = numpy_helper.from_array(np.array([[1.5, -2.0]], dtype=np.float32), "t")
    cases = [
        (helper.make_attribute("f", 0.1), 0.1),
        (helper.make_attribute("i", -3), -3),
        (helper.make_attribute("s", "SAME_UPPER"), "SAME_UPPER"),
        (helper.make_attribute("fs", [0.1, 0.25, 1e-5]), (0.1, 0.25, 1e-5)),
        (helper.make_attribute("is", [1, -2]), (1, -2)),
        (helper.make_attribute("ss", ["a", "bc"]), ("a", "bc")),
    ]
    for attr, expected in cases:
        assert attribute_value(attr) == expected, attr.name
    np.testing.assert_array_equal(attribute_value(helper.make_attribute("t", tensor)), [[1.5, -2.0]])
    # the value of a Constant is its exact float32 value, not snapped
    assert float(attribute_value(helper.make_attribute("value_float", 0.1), exact=True)) == float(np.float32(0.1))
    with pytest.raises(ModelFileError, match="attribute 'g' of type GRAPH is not supported"):
        attribute_value(helper.make_attribute("g", helper.make_graph([], "sub", [], [])))


def test_snapped_float32_rounds_back_to_the_same_float32():
    bits = np.random.default_rng(0).integers(0, 2 ** 31 - 2 ** 23, size=2000, dtype=np.uint32)  # finite, positive
    values = bits.view(np.float32)
    snapped = np.array([snap_float32(float(v)) for v in values])
    np.testing.assert_array_equal(snapped.astype(np.float32), values)
    assert snap_float32(float(np.float32(1e-5))) == 1e-5 and snap_float32(float(np.float32(0.01))) == 0.01


def test_float_attributes_are_snapped_and_agree_with_onnxruntime_within_their_float32_rounding():
    """LeakyRelu alpha=0.2 and LayerNormalization epsilon=1e-3 are read as 0.2 and 1e-3;
    onnxruntime uses float32(0.2) and float32(1e-3): the results differ by no more than
    that rounding of the attribute explains."""
    case = Case("attrs", (("LeakyRelu", ("x",), ("h",), {"alpha": 0.2}),
                          ("LayerNormalization", ("h", "s"), ("y",), {"epsilon": 1e-3})),
                {"x": (FLOAT, (3, 6))}, consts={"s": np.ones(6)})
    graph = graph_from_onnx(case.model())
    assert graph.node("n0").attrs["alpha"] == 0.2 and graph.node("n1").attrs["epsilon"] == 1e-3
    feeds = case.feeds()
    x = feeds["x"]
    h = np.where(x > 0, x, 0.2 * x)
    mean = h.mean(axis=-1, keepdims=True)
    var = ((h - mean) ** 2).mean(axis=-1, keepdims=True)
    expected = (h - mean) / np.sqrt(var + 1e-3)
    ours = run_ours(case.model(), feeds)[0]
    np.testing.assert_allclose(ours, expected, rtol=1e-13, atol=1e-14)
    theirs = run_ort(case.model(), feeds)[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-7)
    assert np.max(np.abs(ours - theirs)) > 1e-12  # the float32 attribute really is read differently


# ---- inputs, outputs, constants -----------------------------------------------------------

def test_inputs_outputs_initialisers_listed_as_inputs_and_constant_nodes():
    w = np.arange(12.0).reshape(4, 3) / 7
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Gather", ["E", "ids"], ["e"], name="embed"),
             helper.make_node("Constant", [], ["two"], name="two", value=numpy_helper.from_array(np.array(2.0))),
             helper.make_node("Mul", ["e", "two"], ["z"], name="double"),
             helper.make_node("Identity", ["h"], ["y"], name="out")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 4]),
              helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("W", TensorProto.DOUBLE, [4, 3])]
    model = model_of(nodes, inputs, ["y", "z"], {"W": w, "E": np.eye(5)}, 18)
    model.graph.value_info.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [7]))  # ignored
    graph = graph_from_onnx(model, name="two outputs")
    assert graph.name == "two outputs" and graph.outputs == ("y", "z")
    assert graph.inputs == (TensorInfo("x", "float", (None, 4)), TensorInfo("ids", "int", (None, None)))
    assert graph.node("two").op == "Constant" and set(graph.initializers) == {"W", "E"}
    x, ids = np.random.default_rng(1).standard_normal((2, 4)), np.array([[0, 4, 1], [3, 3, 2]])
    run = forward(graph, {"x": x, "ids": ids})
    np.testing.assert_array_equal(run.outputs["y"], x @ w)
    np.testing.assert_array_equal(run.outputs["z"], 2 * np.eye(5)[ids])
    with pytest.raises(DataError, match=r"needs the data input\(s\) ids \(given: x\)"):
        forward(graph, {"x": x})


def test_unnamed_and_repeated_node_names_become_unique():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"], name="same"),
             helper.make_node("Abs", ["b"], ["y"], name="same")]
    model = model_of(nodes, [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 2])], ["y"])
    assert [n.name for n in graph_from_onnx(model).nodes] == ["Relu_0", "same", "same_1"]


# ---- external data ------------------------------------------------------------------------

def _external_model(folder, location="weights.bin"):
    """A MatMul model whose weight lives in ``folder / location``; returns (path, weight)."""
    folder.mkdir(parents=True, exist_ok=True)
    w = np.random.default_rng(2).standard_normal((4, 3))
    model = model_of([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                     [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 4])], ["y"], {"W": w})
    path = folder / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
              size_threshold=0)
    return path, w


def _relocate(path, location):
    """Point the model's external tensor at ``location``."""
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, str(path))


def test_external_data_inside_the_directory_is_read(tmp_path):
    path, w = _external_model(tmp_path / "m")
    assert not onnx.load(str(path), load_external_data=False).graph.initializer[0].raw_data  # really outside
    graph = graph_from_onnx(path)
    np.testing.assert_array_equal(graph.initializers["W"], w)
    (tmp_path / "m" / "sub").mkdir()
    os.replace(tmp_path / "m" / "weights.bin", tmp_path / "m" / "sub" / "w.bin")
    os.symlink(tmp_path / "m" / "sub" / "w.bin", tmp_path / "m" / "inside.bin")  # a link that stays inside
    _relocate(path, "inside.bin")
    np.testing.assert_array_equal(graph_from_onnx(path).initializers["W"], w)


def _escape_parent(tmp_path):
    path, _ = _external_model(tmp_path / "m")
    os.replace(tmp_path / "m" / "weights.bin", tmp_path / "weights.bin")
    _relocate(path, "../weights.bin")
    return path


def _escape_absolute(tmp_path):
    path, _ = _external_model(tmp_path / "m")
    _relocate(path, str(tmp_path / "m" / "weights.bin"))
    return path


def _escape_symlink(tmp_path):
    path, _ = _external_model(tmp_path / "m")
    os.replace(tmp_path / "m" / "weights.bin", tmp_path / "secret.bin")
    os.symlink(tmp_path / "secret.bin", tmp_path / "m" / "link.bin")
    _relocate(path, "link.bin")
    return path


def _escape_symlinked_folder(tmp_path):
    path, _ = _external_model(tmp_path / "m")
    (tmp_path / "outside").mkdir()
    os.replace(tmp_path / "m" / "weights.bin", tmp_path / "outside" / "weights.bin")
    os.symlink(tmp_path / "outside", tmp_path / "m" / "data")
    _relocate(path, "data/weights.bin")
    return path


def _missing_external(tmp_path):
    path, _ = _external_model(tmp_path / "m")
    os.remove(tmp_path / "m" / "weights.bin")
    return path


def _truncated_external(tmp_path):
    path, _ = _external_model(tmp_path / "m")
    data = (tmp_path / "m" / "weights.bin").read_bytes()
    (tmp_path / "m" / "weights.bin").write_bytes(data[:40])
    return path


EXTERNAL_REFUSALS = [
    ("parent directory", _escape_parent, "external data file '../weights.bin' is outside the model's directory"),
    ("absolute path", _escape_absolute, "is outside the model's directory (refused)"),
    ("symbolic link", _escape_symlink, "'link.bin' leads outside the model's directory through a symbolic link"),
    ("symbolic link folder", _escape_symlinked_folder, "leads outside the model's directory through a symbolic link"),
    ("missing file", _missing_external, "external data file 'weights.bin' does not exist"),
    ("truncated file", _truncated_external, "'weights.bin' is truncated (40 of 96 bytes at offset 0)"),
]


@pytest.mark.parametrize("build, fragment", [r[1:] for r in EXTERNAL_REFUSALS], ids=[r[0] for r in EXTERNAL_REFUSALS])
def test_external_data_outside_the_directory_is_refused(tmp_path, build, fragment):
    path = build(tmp_path)
    with pytest.raises(ModelFileError) as info:
        graph_from_onnx(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_external_data_of_a_model_in_memory_is_refused(tmp_path):
    path, _ = _external_model(tmp_path / "m")
    with pytest.raises(ModelFileError, match="tensor 'W' keeps its data in an external file; load the model from its path"):
        graph_from_onnx(onnx.load(str(path), load_external_data=False))


# ---- opsets -------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", range(OPSETS[0], OPSETS[1] + 1))
def test_supported_opsets_load_as_they_are(opset):
    graph = graph_from_onnx(_relu_model(opset=opset))
    assert graph.meta["opset"] == opset


@pytest.mark.parametrize("opset, converted", [(9, 13), (11, 13), (22, 21), (23, 21)])
def test_other_opsets_are_converted(opset, converted):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1, name="fc"),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    model = model_of(nodes, [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 2])], ["y"],
                     {"W": np.array([[1.0, -2.0], [0.5, 0.25]]), "b": np.array([0.1, -0.2])}, opset)
    graph = graph_from_onnx(model)
    assert graph.meta["opset"] == converted
    x = np.array([[1.0, 2.0], [-1.0, 3.0]])
    np.testing.assert_array_equal(forward(graph, {"x": x}).outputs["y"],
                                  np.maximum(x @ np.array([[1.0, -2.0], [0.5, 0.25]]).T + [0.1, -0.2], 0))


# (old form, new form): the attribute an opset turned into an input, both read by the same row
OPSET_FORMS = [
    Case("ReduceSum axes attribute (11)", (("ReduceSum", ("x",), ("y",), {"axes": [1], "keepdims": 0}),),
         {"x": (FLOAT, (3, 4, 2))}, opset=11),
    Case("ReduceSum axes input (13)", (("ReduceSum", ("x", "a"), ("y",), {"keepdims": 0}),),
         {"x": (FLOAT, (3, 4, 2))}, consts={"a": np.array([1])}, opset=13),
    Case("ReduceMean axes attribute (17)", (("ReduceMean", ("x",), ("y",), {"axes": [-1]}),), {"x": (FLOAT, (3, 4))},
         opset=17),
    Case("ReduceMean axes input (18)", (("ReduceMean", ("x", "a"), ("y",), {}),), {"x": (FLOAT, (3, 4))},
         consts={"a": np.array([-1])}, opset=18),
    Case("ReduceMax axes attribute (17)", (("ReduceMax", ("x",), ("y",), {"axes": [0, 1], "keepdims": 1}),),
         {"x": (FLOAT, (3, 4))}, opset=17),
    Case("ReduceProd axes input (18)", (("ReduceProd", ("x", "a"), ("y",), {}),), {"x": (FLOAT, (3, 4))},
         consts={"a": np.array([1])}, opset=18),
    Case("Split attribute (11)", (("Split", ("x",), ("y", "z"), {"axis": 1, "split": [1, 3]}),),
         {"x": (FLOAT, (3, 4))}, ("y", "z"), opset=11),
    Case("Split input (13)", (("Split", ("x", "s"), ("y", "z"), {"axis": 1}),), {"x": (FLOAT, (3, 4))}, ("y", "z"),
         consts={"s": np.array([3, 1])}, opset=13),
    Case("Squeeze attribute (11)", (("Squeeze", ("x",), ("y",), {"axes": [1]}),), {"x": (FLOAT, (3, 1, 4))}, opset=11),
    Case("Squeeze input (13)", (("Squeeze", ("x", "a"), ("y",), {}),), {"x": (FLOAT, (3, 1, 4))},
         consts={"a": np.array([1])}, opset=13),
    Case("Unsqueeze input (13)", (("Unsqueeze", ("x", "a"), ("y",), {}),), {"x": (FLOAT, (3, 4))},
         consts={"a": np.array([-1, 1])}, opset=13),
    Case("Pad attribute (10)", (("Pad", ("x",), ("y",), {"pads": [0, 1, 0, 2], "value": 0.5}),),
         {"x": (FLOAT, (3, 4))}, opset=10),
    Case("Pad input (13)", (("Pad", ("x", "p", "v"), ("y",), {}),), {"x": (FLOAT, (3, 4))},
         consts={"p": np.array([0, 1, 0, 2]), "v": np.array(0.5)}, opset=13),
    Case("Clip attributes (6)", (("Clip", ("x",), ("y",), {"min": -0.5, "max": 0.5}),), {"x": (FLOAT, (3, 4))},
         opset=6),
    Case("Clip inputs (13)", (("Clip", ("x", "lo", "hi"), ("y",), {}),), {"x": (FLOAT, (3, 4))},
         consts={"lo": np.array(-0.5), "hi": np.array(0.5)}, opset=13),
]


@pytest.mark.parametrize("case", OPSET_FORMS, ids=[c.id for c in OPSET_FORMS])
def test_attribute_and_input_forms_across_opsets(case):
    dtype = np.float64 if case.opset > 6 else np.float32
    model, feeds = case.model(dtype), case.feeds(dtype)
    assert_matches_ort(run_ours(model, feeds), run_ort(model, feeds), dtype == np.float64, case.id)


# ---- refusals -----------------------------------------------------------------------------

def _one_node(op, attrs=None, inputs=("x",), domain="", opset=18, consts=None, outputs=("y",)):
    node = helper.make_node(op, list(inputs), list(outputs), name="the_node", domain=domain, **(attrs or {}))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 3, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.DOUBLE, [None]) for o in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 10
    return model


REFUSALS = [
    ("unsupported op", _one_node("Hardmax"), "unsupported op 'Hardmax' (node 'the_node')"),
    ("custom domain", _one_node("FusedMatMul", domain="com.microsoft", inputs=("x", "x")),
     "unsupported op 'FusedMatMul' of domain 'com.microsoft' (node 'the_node')"),
    ("Gemm alpha", _one_node("Gemm", {"alpha": 0.5}, inputs=("x", "W"), consts={"W": np.eye(4)}),
     "node 'the_node' (Gemm): alpha == 0.5, beta == 1; only 1 is supported"),
    ("Gemm beta", _one_node("Gemm", {"beta": 2.0}, inputs=("x", "W", "b"), consts={"W": np.eye(4), "b": np.ones(4)}),
     "node 'the_node' (Gemm): alpha == 1, beta == 2; only 1 is supported"),
    ("Einsum trace", _one_node("Einsum", {"equation": "bii,bj->bj"}, inputs=("x", "x")),
     "node 'the_node' (Einsum): repeated letters"),
    ("Einsum one operand", _one_node("Einsum", {"equation": "bij->bj"}), "is not a two-operand contraction"),
    ("Einsum implicit output", _one_node("Einsum", {"equation": "bij,bjk"}, inputs=("x", "x")),
     "is not a two-operand contraction with an explicit output"),
    ("Einsum ellipsis", _one_node("Einsum", {"equation": "...ij,...jk->...ik"}, inputs=("x", "x")),
     "is not a two-operand contraction"),
    ("Einsum one-sided sum", _one_node("Einsum", {"equation": "bij,bkl->bj"}, inputs=("x", "x")),
     "sums a letter of one operand only"),
    ("MaxPool ceil_mode", _one_node("MaxPool", {"kernel_shape": [2], "ceil_mode": 1}),
     "node 'the_node' (MaxPool): ceil_mode is not supported"),
    ("MaxPool indices", _one_node("MaxPool", {"kernel_shape": [2]}, outputs=("y", "i")),
     "node 'the_node' (MaxPool): the Indices output is not supported"),
    ("Cast to string", _one_node("Cast", {"to": TensorProto.STRING}), "node 'the_node' (Cast): target type 8"),
    ("Pad mode", _one_node("Pad", {"mode": "mirror"}, inputs=("x", "p"), consts={"p": np.zeros(6, np.int64)}),
     "node 'the_node' (Pad): mode 'mirror' is not one of constant, reflect, edge, wrap"),
    ("Gelu approximate", _one_node("Gelu", {"approximate": "fast"}, opset=20),
     "node 'the_node' (Gelu): approximate 'fast' is not none or tanh"),
    ("Constant string", _one_node("Constant", {"value_string": "hello"}, inputs=()),
     "node 'the_node' (Constant): only numeric values are supported (attributes: value_string)"),
    ("BatchNormalization training", _one_node("BatchNormalization", {"training_mode": 1}, inputs=("x", "s", "s", "s", "s"),
                                              consts={"s": np.ones(3)}, outputs=("y", "m", "v"), opset=15),
     "node 'the_node' (BatchNormalization): training mode is not supported"),
    ("invalid attribute", _one_node("Relu", {"bogus": 1}), "invalid ONNX model (Unrecognized attribute: bogus"),
]


@pytest.mark.parametrize("model, fragment", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_op_and_the_node(model, fragment):
    with pytest.raises(ModelFileError) as info:
        graph_from_onnx(model)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# ---- fusion of decomposed operators -------------------------------------------------------

SQRT2, BETA = math.sqrt(2.0), math.sqrt(2.0 / math.pi)
GELU_CONSTS = {"sqrt2": np.array(SQRT2), "inv_sqrt2": np.array(1 / SQRT2), "one": np.array(1.0), "half": np.array(0.5),
               "beta": np.array(BETA), "kappa": np.array(0.044715), "three": np.array(3.0)}


def _layer_norm(scope="/enc/norm", square="Pow", scale=True, bias=True, opset=18, eps=1e-5, axes=(-1,),
                constant_nodes=False, extra=(), outputs=("y",), x_shape=(3, 4, 6)):
    """The LayerNorm an exporter decomposes: ReduceMean, Sub, Pow(2) (or Mul(d, d)),
    ReduceMean, Add(eps), Sqrt, Div, [Mul(scale)], [Add(bias)]."""
    axes_in, axes_attr = (("axes",), {}) if opset >= 18 else ((), {"axes": list(axes)})
    last = "y" if not (scale or bias) else "n"
    nodes = [("ReduceMean", ("x", *axes_in), ("mean",), axes_attr, f"{scope}/ReduceMean"),
             ("Sub", ("x", "mean"), ("d",), {}, f"{scope}/Sub"),
             ("Pow", ("d", "two"), ("d2",), {}, f"{scope}/Pow") if square == "Pow"
             else ("Mul", ("d", "d"), ("d2",), {}, f"{scope}/Mul_1"),
             ("ReduceMean", ("d2", *axes_in), ("var",), axes_attr, f"{scope}/ReduceMean_1"),
             ("Add", ("var", "eps"), ("ve",), {}, f"{scope}/Add"),
             ("Sqrt", ("ve",), ("sd",), {}, f"{scope}/Sqrt"),
             ("Div", ("d", "sd"), (last,), {}, f"{scope}/Div")]
    if scale:
        nodes.append(("Mul", ("n", "gamma"), ("y" if not bias else "ns",), {}, f"{scope}/Mul"))
    if bias:
        nodes.append(("Add", ("ns" if scale else "n", "beta"), ("y",), {}, f"{scope}/Add_1"))
    gen = np.random.default_rng(5)
    consts = {"gamma": gen.standard_normal(x_shape[-len(axes):]), "beta": gen.standard_normal(x_shape[-len(axes):]),
              "axes": np.array(axes), "two": np.array(2.0), "eps": np.array(eps)}
    for key, used in (("gamma", scale), ("beta", bias), ("two", square == "Pow"), ("axes", opset >= 18)):
        if not used:
            consts.pop(key)
    if constant_nodes:
        nodes = [("Constant", (), ("two",), {"value": consts.pop("two")}, f"{scope}/Constant"),
                 ("Constant", (), ("eps",), {"value": consts.pop("eps")}, f"{scope}/Constant_1"), *nodes]
    return Case(f"layernorm {scope}", (*nodes, *extra), {"x": (FLOAT, x_shape)}, outputs, consts, opset)


def _gelu_erf(scope="/act", scaling="Div", order="torch", x="x", out="y", extra=()):
    """0.5 x (1 + erf(x / sqrt 2)) as exporters write it."""
    scaled = ("Div", (x, "sqrt2"), (f"{out}_s",), {}, f"{scope}/Div") if scaling == "Div" \
        else ("Mul", ("inv_sqrt2", x), (f"{out}_s",), {}, f"{scope}/Mul_2")
    nodes = [scaled, ("Erf", (f"{out}_s",), (f"{out}_e",), {}, f"{scope}/Erf"),
             ("Add", (f"{out}_e", "one"), (f"{out}_a",), {}, f"{scope}/Add")]
    if order == "torch":
        nodes += [("Mul", (x, f"{out}_a"), (f"{out}_m",), {}, f"{scope}/Mul"),
                  ("Mul", (f"{out}_m", "half"), (out,), {}, f"{scope}/Mul_1")]
    else:
        nodes += [("Mul", ("half", x), (f"{out}_h",), {}, f"{scope}/Mul"),
                  ("Mul", (f"{out}_h", f"{out}_a"), (out,), {}, f"{scope}/Mul_1")]
    return (*nodes, *extra)


def _gelu_tanh(scope="/act", cube="Mul"):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) as torch (x x x) or by hand (Pow)."""
    cubed = [("Mul", ("x", "x"), ("x2",), {}, f"{scope}/Mul"), ("Mul", ("x", "x2"), ("x3",), {}, f"{scope}/Mul_1")] \
        if cube == "Mul" else [("Pow", ("x", "three"), ("x3",), {}, f"{scope}/Pow")]
    return (*cubed, ("Mul", ("kappa", "x3"), ("k",), {}, f"{scope}/Mul_2"), ("Add", ("x", "k"), ("i",), {}, f"{scope}/Add"),
            ("Mul", ("beta", "i"), ("u",), {}, f"{scope}/Mul_3"), ("Tanh", ("u",), ("t",), {}, f"{scope}/Tanh"),
            ("Add", ("one", "t"), ("a",), {}, f"{scope}/Add_1"), ("Mul", ("x", "a"), ("m",), {}, f"{scope}/Mul_4"),
            ("Mul", ("half", "m"), ("y",), {}, f"{scope}/Mul_5"))


def _silu(scope="/act"):
    return (("Sigmoid", ("x",), ("s",), {}, f"{scope}/Sigmoid"), ("Mul", ("x", "s"), ("y",), {}, f"{scope}/Mul"))


X34 = {"x": (FLOAT, (3, 4, 6))}
# (case, float type, fused op types in order, name of the fused node, its attributes); the erf
# forms in float32, onnxruntime having no float64 Erf
FUSIONS = [
    (_layer_norm(), np.float64, ["LayerNormalization"], "/enc/norm/LayerNormalization", {"axis": -1, "epsilon": 1e-5}),
    (_layer_norm(square="Mul", opset=13), np.float64, ["LayerNormalization"], "/enc/norm/LayerNormalization",
     {"axis": -1, "epsilon": 1e-5}),
    (_layer_norm(scale=False, bias=False, eps=0.0), np.float64, ["LayerNormalization"], "/enc/norm/LayerNormalization",
     {"axis": -1, "epsilon": 0.0}),
    (_layer_norm(bias=False, axes=(-2, -1)), np.float64, ["LayerNormalization"], "/enc/norm/LayerNormalization",
     {"axis": -2, "epsilon": 1e-5}),
    (_layer_norm(constant_nodes=True, opset=14), np.float32, ["LayerNormalization"], "/enc/norm/LayerNormalization",
     {"axis": -1, "epsilon": float(np.float32(1e-5))}),
    (Case("gelu erf torch", _gelu_erf(), X34, consts=GELU_CONSTS), np.float32, ["Gelu"], "/act/Gelu",
     {"approximate": "none"}),
    (Case("gelu erf float32", _gelu_erf(), X34, consts=GELU_CONSTS), np.float32, ["Gelu"], "/act/Gelu",
     {"approximate": "none"}),
    (Case("gelu erf half first", _gelu_erf(scaling="Mul", order="half"), X34, consts=GELU_CONSTS), np.float32, ["Gelu"],
     "/act/Gelu", {"approximate": "none"}),
    (Case("gelu tanh torch", _gelu_tanh(), X34, consts=GELU_CONSTS), np.float64, ["Gelu"], "/act/Gelu",
     {"approximate": "tanh"}),
    (Case("gelu tanh pow", _gelu_tanh(cube="Pow"), X34, consts=GELU_CONSTS), np.float32, ["Gelu"], "/act/Gelu",
     {"approximate": "tanh"}),
    (Case("silu", _silu(), X34), np.float64, ["Silu"], "/act/Silu", {}),
    (Case("gelu in a block", (("MatMul", ("x", "W"), ("h",), {}, "/blk/fc/MatMul"), *_gelu_erf("/blk/act", x="h", out="g"),
                              ("Add", ("g", "h"), ("y",), {}, "/blk/Add")),
          X34, consts={**GELU_CONSTS, "W": np.random.default_rng(3).standard_normal((6, 6)).astype(np.float32)}), np.float32,
     ["MatMul", "Gelu", "Add"], "/blk/act/Gelu", {"approximate": "none"}),
]


@pytest.mark.parametrize("case, dtype, ops, name, attrs", FUSIONS, ids=[f"{f[0].id} {f[1].__name__}" for f in FUSIONS])
def test_decomposed_patterns_fuse_into_one_node(case, dtype, ops, name, attrs):
    model, feeds = case.model(dtype), case.feeds(dtype)
    graph, unfused = graph_from_onnx(model), graph_from_onnx(model, fuse=False)
    assert [n.op for n in graph.nodes] == ops
    fused = graph.node(name)
    assert dict(fused.attrs) == attrs
    assert not [k for k, v in graph.initializers.items() if v.size == 1]  # the pattern's constants are gone
    ours = forward(graph, feeds).outputs["y"]
    if fused.op == "LayerNormalization":  # the same operations, epsilon as stored (numpy's power and
        # reduction kernels differ by an ulp between versions, so not bit for bit)
        np.testing.assert_allclose(ours, forward(unfused, feeds).outputs["y"], rtol=1e-15, atol=1e-300)
    else:  # the activation itself: the decomposition with float64 constants
        exact = graph_from_onnx(case.model(np.float64), fuse=False)
        np.testing.assert_allclose(ours, forward(exact, feeds).outputs["y"], rtol=1e-13, atol=1e-15)
    assert_matches_ort([ours], run_ort(model, feeds), dtype == np.float64, case.id)


NOT_FUSED = [
    ("mean also an output", _layer_norm(outputs=("y", "mean")), "ReduceMean"),
    ("centred value read elsewhere", _layer_norm(extra=(("Relu", ("d",), ("r",), {}, "other"),), outputs=("y", "r")),
     "ReduceMean"),
    ("cube instead of square", Case("ln pow 3", _layer_norm().nodes, X34, consts={**_layer_norm().consts, "two": np.array(3.0)}),
     "ReduceMean"),
    ("negative epsilon", _layer_norm(eps=-1e-5), "ReduceMean"),
    ("positive axes", Case("ln axes 2", _layer_norm().nodes, X34, consts={**_layer_norm().consts, "axes": np.array([2])}),
     "ReduceMean"),
    ("different axes", Case("ln mixed", (*_layer_norm().nodes[:3], ("ReduceMean", ("d2", "axes2"), ("var",), {}, "m2"),
                                          *_layer_norm().nodes[4:]), X34,
                            consts={**_layer_norm().consts, "axes2": np.array([-2, -1])}), "ReduceMean"),
    ("half is not 0.5", Case("gelu 0.49", _gelu_erf(), X34, consts={**GELU_CONSTS, "half": np.array(0.49)}), "Erf"),
    ("sqrt 2 rounded to 5 digits", Case("gelu 1.4142", _gelu_erf(), X34, consts={**GELU_CONSTS, "sqrt2": np.array(1.4142)}),
     "Erf"),
    ("erf read elsewhere", Case("gelu shared", _gelu_erf(extra=(("Neg", ("y_e",), ("z",), {}, "other"),)), X34,
                                ("y", "z"), GELU_CONSTS), "Erf"),
    ("kappa wrong", Case("gelu tanh kappa", _gelu_tanh(), X34, consts={**GELU_CONSTS, "kappa": np.array(0.0447)}), "Tanh"),
    ("sigmoid of another tensor", Case("silu other", (("Neg", ("x",), ("nx",), {}, "neg"),
                                                      ("Sigmoid", ("nx",), ("s",), {}, "sig"),
                                                      ("Mul", ("x", "s"), ("y",), {}, "mul")), X34), "Sigmoid"),
    ("sigmoid also an output", Case("silu out", _silu(), X34, ("y", "s")), "Sigmoid"),
]


@pytest.mark.parametrize("case, kept", [r[1:] for r in NOT_FUSED], ids=[r[0] for r in NOT_FUSED])
def test_patterns_with_shared_tensors_or_other_constants_stay_decomposed(case, kept):
    double = ort_runs_double(case)
    model, feeds = case.model(np.float64 if double else np.float32), case.feeds(np.float64 if double else np.float32)
    graph = graph_from_onnx(model)
    assert kept in graph.op_types and [n.op for n in graph.nodes] == [n.op for n in graph_from_onnx(model, fuse=False).nodes]
    assert_matches_ort(run_ours(model, feeds), run_ort(model, feeds), double, case.id)


def test_layer_norm_scale_must_be_a_constant():
    """A Mul by a data tensor after the normalisation is not its scale: the LayerNorm
    fuses without it and the Mul stays."""
    base = _layer_norm(scale=False, bias=False)
    nodes = (*[n[:4] + (n[4],) for n in base.nodes[:-1]], ("Div", ("d", "sd"), ("n",), {}, "/enc/norm/Div"),
             ("Mul", ("n", "g"), ("y",), {}, "/enc/norm/Mul"))
    case = Case("ln data scale", nodes, {"x": (FLOAT, (3, 4, 6)), "g": (FLOAT, (3, 4, 6))}, consts=base.consts)
    graph = graph_from_onnx(case.model())
    assert [n.op for n in graph.nodes] == ["LayerNormalization", "Mul"]
    assert graph.node("/enc/norm/LayerNormalization").inputs == ("x",)


def test_fused_names_follow_the_scope_the_first_node_and_avoid_collisions():
    two = Case("two gelus", (*_gelu_erf("/blk", out="g1"), *_gelu_erf("/blk", x="g1", out="y")), X34, consts=GELU_CONSTS)
    graph = graph_from_onnx(two.model())
    assert [n.name for n in graph.nodes] == ["/blk/Gelu", "/blk/Gelu_1"]
    taken = Case("taken", (*_silu("/blk"), ("Identity", ("y",), ("z",), {}, "/blk/Silu")), X34, ("z",))
    assert [n.name for n in graph_from_onnx(taken.model()).nodes] == ["/blk/Silu_1", "/blk/Silu"]
    plain = Case("plain", (("Sigmoid", ("x",), ("s",), {}, "gate"), ("Mul", ("x", "s"), ("y",), {}, "times")), X34)
    assert [n.name for n in graph_from_onnx(plain.model()).nodes] == ["gate"]
    mixed = Case("mixed scopes", (("Sigmoid", ("x",), ("s",), {}, "/a/b/gate"), ("Mul", ("x", "s"), ("y",), {}, "/a/c/mul")),
                 X34)
    assert [n.name for n in graph_from_onnx(mixed.model()).nodes] == ["/a/Silu"]


def test_constants_read_outside_the_pattern_are_kept():
    case = _layer_norm(extra=(("Add", ("y", "eps"), ("z",), {}, "after"),), outputs=("z",))
    graph = graph_from_onnx(case.model())
    assert "eps" in graph.initializers and "two" not in graph.initializers
    assert [n.op for n in graph.nodes] == ["LayerNormalization", "Add"]


# ---- networks or graphs -------------------------------------------------------------------

def _chain(nodes, inits, shape=(None, 4), inputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.DOUBLE, list(shape))]
    return model_of(nodes, inputs, ["y"], inits, 18)


W1, B1, W2 = (np.random.default_rng(9).standard_normal(s) for s in ((5, 4), (5,), (3, 5)))
CHAINS = [
    ("Gemm", [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("Tanh", ["h"], ["a"]),
              helper.make_node("Gemm", ["a", "W2"], ["y"], transB=1)], ["tanh", "identity"]),
    ("MatMul Add", [helper.make_node("MatMul", ["x", "W1t"], ["m"]), helper.make_node("Add", ["b1", "m"], ["h"]),
                    helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Mul", ["h", "s"], ["a"]),
                    helper.make_node("Dropout", ["a"], ["d"]), helper.make_node("MatMul", ["d", "W2t"], ["y"])],
     ["silu", "identity"]),
    ("Flatten Identity", [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "W1", "b1"], ["h"], transB=1),
                          helper.make_node("Identity", ["h"], ["i"]), helper.make_node("LeakyRelu", ["i"], ["a"], alpha=0.1),
                          helper.make_node("Gemm", ["a", "W2"], ["y"], transB=1)], ["leaky_relu:0.1", "identity"]),
]
INITS = {"W1": W1, "b1": B1, "W2": W2, "W1t": W1.T.copy(), "W2t": W2.T.copy()}


@pytest.mark.parametrize("nodes, activations", [c[1:] for c in CHAINS], ids=[c[0] for c in CHAINS])
def test_dense_chains_load_as_networks_with_the_graphs_numbers(nodes, activations):
    from emulator import load_model
    from emulator.network import Network

    model = _chain(nodes, {k: v for k, v in INITS.items() if any(k in n.input for n in nodes)})
    net, graph = load_model(model), graph_from_onnx(model)
    assert isinstance(net, Network) and [l.activation.name for l in net] == activations
    x = np.random.default_rng(4).standard_normal((6, 4))
    np.testing.assert_array_equal(net.forward(x), forward(graph, {"x": x}).outputs["y"])
    if "MatMul" not in graph.op_types:  # a separate Add is not in the graph's sum, as the network's bias is
        for acc in ("fp16", "bf16:pairwise"):
            np.testing.assert_array_equal(net.forward(x, acc=acc), forward(graph, {"x": x}, acc=acc).outputs["y"])


NOT_CHAINS = [
    ("Softmax at the end", [helper.make_node("Gemm", ["x", "W1"], ["h"], transB=1), helper.make_node("Softmax", ["h"], ["y"])],
     None),
    ("transA", [helper.make_node("Gemm", ["x", "W1t"], ["y"], transA=1)], None),
    ("image input", [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W1"], ["y"], transB=1)],
     (None, 2, 2)),
    ("two activations", [helper.make_node("Gemm", ["x", "W1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
                         helper.make_node("Tanh", ["r"], ["y"])], None),
    ("bias of a full matrix", [helper.make_node("MatMul", ["x", "W1t"], ["m"]), helper.make_node("Add", ["m", "C"], ["y"])],
     (6, 4)),
]


@pytest.mark.parametrize("nodes, shape", [c[1:] for c in NOT_CHAINS], ids=[c[0] for c in NOT_CHAINS])
def test_other_graphs_load_as_graphs(nodes, shape):
    from emulator import load_model

    inits = {**INITS, "C": np.ones((6, 5))}
    model = _chain(nodes, {k: v for k, v in inits.items() if any(k in n.input for n in nodes)}, shape or (None, 4))
    assert isinstance(load_model(model), Graph)


def test_load_model_reads_onnx_files_as_graphs(tmp_path):
    from emulator import load_model

    case = _layer_norm()
    onnx.save(case.model(), str(tmp_path / "ln.onnx"))
    graph = load_model(tmp_path / "ln.onnx")
    assert isinstance(graph, Graph) and graph.name == "ln" and graph.op_types == ["LayerNormalization"]
    assert graph.meta["source"] == "onnx" and load_model(tmp_path / "ln.onnx", name="other").name == "other"


# ---- models exported by torch -------------------------------------------------------------

def _export(module, args, opset, names, dynamic=None):
    torch = pytest.importorskip("torch")
    import io
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset, input_names=names,
                          dynamic_axes=dynamic or {n: {0: "batch"} for n in names})
    return buffer.getvalue()


def _close_to_torch(ours: np.ndarray, reference: np.ndarray, rtol: float) -> None:
    assert ours.shape == reference.shape
    assert np.max(np.abs(ours - reference)) <= rtol * np.max(np.abs(reference)), np.max(np.abs(ours - reference))


def _conv_nets(nn):
    net1 = nn.Sequential(nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.BatchNorm1d(6),
                         nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False), nn.Conv1d(6, 6, 3, groups=6),
                         nn.Tanh(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(6, 3))
    net2 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.MaxPool2d(2, padding=1),
                         nn.Conv2d(8, 8, 3, stride=2, dilation=1, groups=4, padding=(1, 0)), nn.GELU(), nn.BatchNorm2d(8),
                         nn.AvgPool2d(2, count_include_pad=True, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5), nn.LeakyReLU(0.1), nn.Linear(5, 2))
    return [(net1, (2, 4, 20)), (net2, (2, 3, 12, 10))]


@pytest.mark.parametrize("index", [0, 1], ids=["conv1d", "conv2d"])
def test_exported_conv_nets_agree_with_torch_in_float64(index):
    torch = pytest.importorskip("torch")
    torch.manual_seed(index)
    net, shape = _conv_nets(torch.nn)[index]
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    net = net.double().eval()
    x = torch.randn(*shape, dtype=torch.float64)
    graph = graph_from_onnx(_export(net, (x,), 17, ["x"]))
    assert {"Conv", "Gemm", "BatchNormalization", "MaxPool", "AveragePool"} <= set(graph.op_types)
    assert graph.inputs[0].shape == (None, *shape[1:])
    assert {"Silu", "Gelu"} <= set(graph.op_types) if index else not {"Sigmoid", "Erf"} & set(graph.op_types)
    with torch.no_grad():
        reference = net(x).numpy()
    _close_to_torch(forward(graph, {"x": x.numpy()}).outputs[graph.outputs[0]], reference, 1e-13)
    more = torch.randn(5, *shape[1:], dtype=torch.float64)  # the batch is dynamic
    with torch.no_grad():
        _close_to_torch(forward(graph, {"x": more.numpy()}).outputs[graph.outputs[0]], net(more).numpy(), 1e-13)


def _encoder(torch, activation, dtype, seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True,
                                             activation=activation)
    return torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).to(dtype).eval()


ENCODERS = [  # (opset, activation, padding mask): opset 14 decomposes LayerNorm and GELU, 20 writes them fused
    (14, "gelu", False), (20, "gelu", False), (14, "relu", False), (14, "gelu", True), (20, "relu", True),
]


@pytest.mark.parametrize("opset, activation, mask", ENCODERS, ids=[f"opset{o}-{a}{'-mask' if m else ''}" for o, a, m in ENCODERS])
def test_exported_transformer_encoder_agrees_with_torch_in_float64(opset, activation, mask):
    """The encoder exported in float64 (in float32 with a padding mask: the exporter only
    takes float32 masks) and evaluated in float64 agrees with torch's float64 forward pass
    of the same weights; the exporter's LayerNorm and GELU are single nodes."""
    torch = pytest.importorskip("torch")
    encoder = _encoder(torch, activation, torch.float32 if mask else torch.float64)
    x = torch.randn(3, 5, 8, dtype=encoder.layers[0].linear1.weight.dtype)
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[0, 3:], padding[2, 4] = True, True
    args, names = ((x, None, padding), ["x", "mask"]) if mask else ((x,), ["x"])
    graph = graph_from_onnx(_export(encoder, args, opset, names))
    ops = [n.op for n in graph.nodes]
    assert ops.count("LayerNormalization") == 4 and "ReduceMean" not in ops and "Erf" not in ops
    assert ops.count("Gelu") == (2 if activation == "gelu" else 0)
    assert graph.node("/layers.0/norm1/LayerNormalization").attrs["axis"] == -1  # fused or exported: one name
    feeds = {"x": x.double().numpy(), **({"mask": padding.numpy()} if mask else {})}
    with torch.no_grad():
        reference = encoder.double()(x.double(), src_key_padding_mask=padding if mask else None).numpy()
    _close_to_torch(forward(graph, feeds).outputs[graph.outputs[0]], reference, 1e-12)


def test_from_torch_exports_any_module_with_an_example():
    torch = pytest.importorskip("torch")
    from emulator import from_torch
    from emulator.network import Network

    encoder = _encoder(torch, "gelu", torch.float64)
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    padding = torch.zeros(2, 4, dtype=torch.bool)
    graph = from_torch(encoder, x, name="encoder")
    assert isinstance(graph, Graph) and graph.name == "encoder" and [t.name for t in graph.inputs] == ["src"]
    assert graph.inputs[0].shape == (None, 4, 8) and graph.op_types.count("LayerNormalization") == 1
    with torch.no_grad():
        _close_to_torch(forward(graph, {"src": x.numpy()}).outputs["output"], encoder(x).numpy(), 1e-13)
    masked = from_torch(_encoder(torch, "relu", torch.float32), (x.float(), None, padding))
    assert [t.name for t in masked.inputs] == ["src", "src_key_padding_mask"]

    class TwoLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(4, 6), torch.nn.Linear(6, 2)

        def forward(self, features):
            return self.fc2(torch.nn.functional.silu(self.fc1(features)))

    module = TwoLayers().double()
    net = from_torch(module, torch.zeros(1, 4, dtype=torch.float64))
    assert isinstance(net, Network) and [l.activation.name for l in net] == ["silu", "identity"]
    assert module.training  # the exporter's evaluation mode is undone
    sequential = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    assert isinstance(from_torch(sequential), Network) and isinstance(from_torch(sequential.state_dict(), activations="relu"),
                                                                     Network)
    with pytest.raises(ModelFileError, match=r"or an example input to export it \(from_torch\(module, example\)\)"):
        from_torch(module)


def test_missing_optional_packages_name_their_extra(monkeypatch):
    pytest.importorskip("torch")
    from emulator import from_torch

    without_package(monkeypatch, "onnx")
    import torch

    with pytest.raises(ModelFileError, match=r"Exporting a PyTorch module needs the optional package 'onnx': "
                                             r"pip install 'mixacc\[onnx\]'"):
        from_torch(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(ModelFileError, match=r"Reading ONNX models needs the optional package 'onnx'"):
        graph_from_onnx(b"")


# ---- bad input: one line, status 2 from the CLI -------------------------------------------

def _saved(model, tmp_path, name="bad.onnx"):
    onnx.save(model, str(tmp_path / name))
    return tmp_path / name


def _two_inputs(tmp_path):
    nodes = [helper.make_node("Add", ["x", "mask"], ["y"], name="add")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 3]),
              helper.make_tensor_value_info("mask", TensorProto.DOUBLE, [None, 3])]
    return _saved(model_of(nodes, inputs, ["y"]), tmp_path)


def _nan_initialiser(tmp_path):
    return _saved(_relu_model(extra_nodes=[helper.make_node("Add", ["y", "W"], ["z"], name="add")],
                              initializers={"W": np.array([1.0, np.nan, 0.0, 2.0])}), tmp_path)


def _garbage(tmp_path, data=b"\x08\x07\x12\xff\xff\xff\xff not a protobuf"):
    (tmp_path / "bad.onnx").write_bytes(data)
    return tmp_path / "bad.onnx"


BAD_INPUT = [  # (id, file builder, feeds for a forward pass or None, error type, message fragment)
    ("unsupported op", lambda t: _saved(_one_node("Hardmax"), t), None, ModelFileError,
     "bad.onnx: unsupported op 'Hardmax' (node 'the_node')."),
    ("custom domain", lambda t: _saved(_one_node("Attention", domain="com.microsoft", inputs=("x", "x")), t), None,
     ModelFileError, "unsupported op 'Attention' of domain 'com.microsoft' (node 'the_node')"),
    ("second input not given", _two_inputs, {"x": np.ones((2, 3))}, DataError,
     "Graph 'bad' needs the data input(s) mask (given: x)."),
    ("external data escaping", lambda t: _escape_parent(t), None, ModelFileError,
     "external data file '../weights.bin' is outside the model's directory (refused)."),
    ("NaN initialiser", _nan_initialiser, None, DataError,
     "bad.onnx: initialiser 'W' contains NaN or Inf (1 entries, first at [1])."),
    ("corrupt file", _garbage, None, ModelFileError, "bad.onnx: corrupt or truncated ONNX file (DecodeError)."),
    ("empty file", lambda t: _garbage(t, b""), None, ModelFileError,
     "bad.onnx: corrupt or truncated ONNX file (no graph)."),
]


@pytest.mark.parametrize("build, feeds, error, fragment", [r[1:] for r in BAD_INPUT], ids=[r[0] for r in BAD_INPUT])
def test_bad_input_is_one_line_and_status_2(tmp_path, run_cli, build, feeds, error, fragment):
    from emulator import load_model

    path = build(tmp_path)
    with pytest.raises(error) as info:
        model = load_model(path)
        forward(model, feeds)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message
    if feeds is None:  # a bad file: the CLI says so on one line and exits with status 2
        code, out, err = run_cli("models", str(path))
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
