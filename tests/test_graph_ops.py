"""Every operator of ``emulator.graph.OPS`` evaluated in float64 against onnxruntime on
graphs built with ``onnx.helper`` (float64 where onnxruntime implements it, else float32
inputs whose float64 evaluation must agree within float32 rounding), with the attribute
variants exporters use; and the emulated arithmetic of Conv and batched MatMul sites,
bit for bit against ``emulator.linear.linear`` on independently built operands."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_models import BOOL, FLOAT, INT, POSITIVE, TO_FLOAT, Case, assert_matches_ort, ort_runs_double, run_ort, run_ours

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

I64_MAX, I64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
EPS = 2.0 ** -10  # float attributes exact in float32, so that onnxruntime reads the value we do (see
#                  test_float_attributes_are_snapped for the values that are not)
rng = np.random.default_rng(20240611)


def R(*shape):
    """Random float constant (weights, biases)."""
    return rng.standard_normal(shape)


def ints(*values):
    return np.array(values, dtype=np.int64)


def one(op, inputs, consts=None, attrs=None, ins=None, outs=("y",), opset=18, id_="", double=True):
    """A case of a single node reading ``ins`` (default: the data inputs, then the constants)."""
    consts = consts or {}
    ins = tuple(ins if ins is not None else [*inputs, *consts])
    return Case(id_ or op, ((op, ins, outs, attrs or {}),), inputs, tuple(o for o in outs if o), consts, opset, double)


X = {"x": (FLOAT, (3, 4))}
X3 = {"x": (FLOAT, (3, 2, 5))}
IMG = {"x": (FLOAT, (2, 4, 7, 6))}
SEQ = {"x": (FLOAT, (2, 4, 9))}

CASES = [
    # ---- contractions
    one("Gemm", X, {"W": R(5, 4), "b": R(5)}, {"transB": 1}, id_="Gemm transB bias"),
    one("Gemm", X, {"W": R(4, 5)}, id_="Gemm no bias"),
    one("Gemm", {"x": (FLOAT, (4, 3))}, {"W": R(4, 5), "b": R(1, 5)}, {"transA": 1}, id_="Gemm transA row bias"),
    one("Gemm", X, {"W": R(5, 4), "b": R()}, {"transA": 0, "transB": 1}, id_="Gemm scalar bias"),
    one("Gemm", X, {"W": R(4, 5), "b": R(3, 5)}, id_="Gemm full C"),
    one("Gemm", X, {"W": R(4, 5), "b": R(3, 1)}, id_="Gemm column C"),
    one("MatMul", X, {"W": R(4, 5)}, id_="MatMul 2-D"),
    one("MatMul", X3, {"W": R(5, 3)}, id_="MatMul 3-D by matrix"),
    one("MatMul", X, {"v": R(4)}, id_="MatMul by vector"),
    one("MatMul", {"q": (FLOAT, (2, 3, 4, 5)), "k": (FLOAT, (2, 3, 5, 4))}, id_="MatMul batched QK"),
    one("MatMul", {"p": (FLOAT, (2, 3, 4, 4)), "v": (FLOAT, (2, 1, 4, 5))}, id_="MatMul batched broadcast"),
    one("MatMul", {"x": (FLOAT, (3, 1, 2, 5))}, {"W": R(4, 5, 2)}, id_="MatMul broadcast weights"),
    one("Einsum", {"a": (FLOAT, (2, 3, 4)), "b": (FLOAT, (2, 4, 5))}, attrs={"equation": "bij,bjk->bik"}),
    one("Einsum", {"q": (FLOAT, (2, 3, 4, 5)), "k": (FLOAT, (2, 3, 6, 5))}, attrs={"equation": "bhid,bhjd->bhij"},
        id_="Einsum QK"),
    one("Einsum", X, {"W": R(6, 4)}, {"equation": "bi,oi->bo"}, id_="Einsum weights"),
    one("Einsum", X3, {"W": R(5, 3)}, {"equation": "bnd,de->bne"}, id_="Einsum 3-D"),
    one("Einsum", {"a": (FLOAT, (2, 3, 4)), "b": (FLOAT, (2, 4, 5))}, attrs={"equation": "bij,bjk->kbi"},
        id_="Einsum permuted output"),
    one("Einsum", {"a": (FLOAT, (2, 3, 4, 5))}, {"W": R(4, 5, 6)}, {"equation": "bsij,ijk->bsk"},
        id_="Einsum two summed letters"),
    one("Einsum", X, {"v": R(5)}, {"equation": "bi,j->bij"}, id_="Einsum outer"),
    one("Conv", SEQ, {"W": R(6, 4, 3), "b": R(6)}, id_="Conv1d"),
    one("Conv", SEQ, {"W": R(6, 2, 3)}, {"group": 2, "strides": [2], "pads": [1, 2]}, id_="Conv1d groups strides pads"),
    one("Conv", SEQ, {"W": R(4, 1, 3), "b": R(4)}, {"group": 4, "dilations": [2]}, id_="Conv1d depthwise dilated"),
    one("Conv", SEQ, {"W": R(5, 4, 4)}, {"auto_pad": "SAME_UPPER", "strides": [2]}, id_="Conv1d same upper"),
    one("Conv", SEQ, {"W": R(5, 4, 4)}, {"auto_pad": "SAME_LOWER"}, id_="Conv1d same lower"),
    one("Conv", SEQ, {"W": R(5, 4, 4)}, {"auto_pad": "VALID", "strides": [3]}, id_="Conv1d valid"),
    one("Conv", IMG, {"W": R(6, 4, 3, 2), "b": R(6)}, id_="Conv2d"),
    one("Conv", IMG, {"W": R(6, 2, 3, 3), "b": R(6)}, {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1],
                                                       "dilations": [2, 1]}, id_="Conv2d groups strides pads dilations"),
    one("Conv", IMG, {"W": R(8, 1, 3, 3)}, {"group": 4, "auto_pad": "SAME_UPPER", "strides": [2, 2]},
        id_="Conv2d depthwise same"),
    one("Conv", IMG, {"W": R(3, 4, 2, 2)}, {"auto_pad": "SAME_LOWER", "strides": [2, 3]}, id_="Conv2d same lower strided"),
    # ---- elementwise
    one("Add", X3, {"c": R(5)}, id_="Add broadcast"),
    one("Add", {"x": (INT, (3, 4)), "c": (INT, (3, 1))}, id_="Add integers"),
    one("Sub", {"x": (FLOAT, (3, 1, 4)), "c": (FLOAT, (3, 2, 1))}, id_="Sub broadcast"),
    one("Mul", X3, {"c": R(2, 1)}, id_="Mul broadcast"),
    one("Div", X, {"c": R(4) + 3}, id_="Div"),
    one("Div", {"x": (INT, (3, 4))}, {"c": ints(2, -3, 4, 7)}, id_="Div integers truncate"),
    one("Pow", {"x": (POSITIVE, (3, 4))}, {"e": np.array(0.5)}, id_="Pow sqrt"),
    one("Pow", X, {"e": np.array(2.0)}, id_="Pow square"),
    one("Pow", X, {"e": ints(3)}, id_="Pow integer exponent"),
    one("Neg", X), one("Neg", {"x": (INT, (3, 4))}, id_="Neg integers"),
    one("Abs", X), one("Abs", {"x": (INT, (3, 4))}, id_="Abs integers"),
    one("Sqrt", {"x": (POSITIVE, (3, 4))}),
    one("Reciprocal", {"x": (POSITIVE, (3, 4))}),
    one("Exp", X), one("Erf", X),
    one("Max", {"x": (FLOAT, (3, 4)), "y2": (FLOAT, (3, 1))}, {"c": R(4)}, id_="Max three broadcast"),
    one("Min", {"x": (FLOAT, (3, 4)), "y2": (FLOAT, (3, 4))}, id_="Min"),
    one("Max", {"x": (INT, (3, 4)), "y2": (INT, (3, 4))}, id_="Max integers"),
    one("Clip", X, {"lo": np.array(-0.5), "hi": np.array(0.7)}, id_="Clip min max"),
    one("Clip", X, {"hi": np.array(0.2)}, ins=("x", "", "hi"), id_="Clip max only"),
    one("Clip", X, {"lo": np.array(0.1)}, ins=("x", "lo"), id_="Clip min only"),
    one("Clip", X, ins=("x",), id_="Clip no bounds"),
    one("Clip", {"x": (INT, (3, 4))}, {"lo": ints(-2)[0], "hi": ints(3)[0]}, id_="Clip integers"),
    one("Where", {"c": (BOOL, (3, 4)), "a": (FLOAT, (3, 4))}, {"b": R(4)}, id_="Where broadcast"),
    one("Where", {"c": (BOOL, (3, 4)), "a": (INT, (3, 4)), "b": (INT, (3, 4))}, id_="Where integers"),
    one("Mod", {"x": (INT, (3, 4))}, {"d": ints(3, -3, 4, -5)}, id_="Mod integers"),
    one("Mod", {"x": (INT, (3, 4))}, {"d": ints(3, -3, 4, -5)}, {"fmod": 1}, id_="Mod integers fmod"),
    one("Mod", X, {"d": np.array([0.7, -0.3, 1.1, 2.0])}, {"fmod": 1}, id_="Mod floats fmod"),
    one("Equal", {"x": (INT, (3, 4)), "y2": (INT, (3, 4))}, id_="Equal integers"),
    one("Equal", {"x": (INT, (3, 4))}, {"c": ints(1)}, id_="Equal broadcast"),
    # ---- activations
    one("Relu", X), one("Tanh", X), one("Sigmoid", X), one("Softplus", X),
    one("LeakyRelu", X, attrs={"alpha": 0.25}), one("Elu", X, attrs={"alpha": 0.75}),
    one("Gelu", X, opset=20, id_="Gelu erf"), one("Gelu", X, attrs={"approximate": "tanh"}, opset=20, id_="Gelu tanh",
                                               double=False),  # onnxruntime's float64 kernel: ~1e-8 accurate
    one("PRelu", IMG, {"slope": R(4, 1, 1)}, id_="PRelu per channel"),
    one("PRelu", X, {"slope": R(4)}, id_="PRelu vector"),
    # ---- reductions and normalisations
    one("ReduceSum", X3, {"axes": ints(1)}, id_="ReduceSum axis"),
    one("ReduceSum", X3, {"axes": ints(-1, 1)}, {"keepdims": 0}, id_="ReduceSum two negative axes"),
    one("ReduceSum", X3, ins=("x",), id_="ReduceSum all"),
    one("ReduceSum", X3, {"axes": np.zeros(0, np.int64)}, {"noop_with_empty_axes": 1}, id_="ReduceSum noop"),
    one("ReduceSum", {"x": (INT, (3, 4))}, {"axes": ints(1)}, id_="ReduceSum integers"),
    one("ReduceMean", X3, attrs={"axes": [-1]}, opset=13, id_="ReduceMean attribute"),
    one("ReduceMean", X3, {"axes": ints(1, 2)}, {"keepdims": 0}, id_="ReduceMean input"),
    one("ReduceMax", X3, attrs={"axes": [1], "keepdims": 0}, opset=13, id_="ReduceMax attribute"),
    one("ReduceMax", X3, {"axes": ints(-1)}, id_="ReduceMax input"),
    one("ReduceMax", {"x": (INT, (3, 4))}, {"axes": ints(1)}, id_="ReduceMax integers"),
    one("ReduceProd", X3, attrs={"axes": [2]}, opset=13, id_="ReduceProd attribute"),
    one("ReduceProd", {"x": (INT, (3, 4))}, {"axes": ints(0)}, id_="ReduceProd integers"),
    one("Softmax", X3, id_="Softmax last"), one("Softmax", X3, attrs={"axis": 1}, id_="Softmax axis 1"),
    one("LogSoftmax", X3, attrs={"axis": -2}, id_="LogSoftmax"),
    one("LayerNormalization", X3, {"s": R(5), "b": R(5)}, {"epsilon": EPS}, id_="LayerNormalization"),
    one("LayerNormalization", X3, {"s": R(2, 5)}, {"axis": -2, "epsilon": EPS}, id_="LayerNormalization two axes no bias"),
    one("LayerNormalization", X3, {"s": R(5), "b": R(5)}, {"epsilon": EPS}, outs=("y", "mean", "inv"),
        id_="LayerNormalization stats", double=False),  # onnxruntime keeps the statistics in float32 (stash_type)
    one("BatchNormalization", IMG, {"s": R(4), "b": R(4), "m": R(4), "v": 1 + R(4) ** 2}, {"epsilon": EPS},
        id_="BatchNormalization 2-D"),
    one("BatchNormalization", {"x": (FLOAT, (3, 4))}, {"s": R(4), "b": R(4), "m": R(4), "v": 1 + R(4) ** 2},
        {"epsilon": EPS}, id_="BatchNormalization features"),
    one("MaxPool", SEQ, attrs={"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, id_="MaxPool1d"),
    one("MaxPool", IMG, attrs={"kernel_shape": [2, 3], "dilations": [2, 1]}, id_="MaxPool2d dilated"),
    one("MaxPool", IMG, attrs={"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
        id_="MaxPool2d same"),
    one("AveragePool", SEQ, attrs={"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, id_="AveragePool1d pads"),
    one("AveragePool", SEQ, attrs={"kernel_shape": [3], "pads": [2, 1], "count_include_pad": 1},
        id_="AveragePool1d count pads"),
    one("AveragePool", IMG, attrs={"kernel_shape": [2, 2], "strides": [2, 2]}, id_="AveragePool2d"),
    one("AveragePool", IMG, attrs={"kernel_shape": [3, 2], "auto_pad": "SAME_LOWER"}, id_="AveragePool2d same"),
    one("AveragePool", IMG, attrs={"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}, opset=19,
        id_="AveragePool2d dilated"),
    one("GlobalAveragePool", SEQ, id_="GlobalAveragePool1d"), one("GlobalAveragePool", IMG, id_="GlobalAveragePool2d"),
    # ---- shapes and data movement
    one("Reshape", X3, {"s": ints(0, -1)}, id_="Reshape 0 -1"),
    one("Reshape", X3, {"s": ints(-1, 5, 2)}, id_="Reshape"),
    one("Flatten", IMG, attrs={"axis": 2}, id_="Flatten 2"), one("Flatten", IMG, attrs={"axis": -1}, id_="Flatten -1"),
    one("Flatten", IMG, attrs={"axis": 0}, id_="Flatten 0"),
    one("Transpose", IMG, attrs={"perm": [0, 2, 3, 1]}, id_="Transpose"),
    one("Transpose", X3, id_="Transpose reversed"),
    one("Squeeze", {"x": (FLOAT, (3, 1, 4, 1))}, {"a": ints(-1)}, id_="Squeeze axis"),
    one("Squeeze", {"x": (FLOAT, (3, 1, 4, 1))}, id_="Squeeze all"),
    one("Unsqueeze", X, {"a": ints(1, -1)}, id_="Unsqueeze"),
    one("Unsqueeze", X, attrs={"axes": [0, 3]}, opset=11, id_="Unsqueeze attribute (converted)"),
    one("Concat", X3, {"c": R(3, 2, 2)}, {"axis": -1}, id_="Concat"),
    one("Concat", {"x": (INT, (3, 2)), "c": (INT, (3, 1))}, attrs={"axis": 1}, id_="Concat integers"),
    one("Split", {"x": (FLOAT, (3, 6))}, {"s": ints(1, 2, 3)}, {"axis": 1}, outs=("y", "z", "w"), id_="Split sizes"),
    one("Split", {"x": (FLOAT, (3, 6))}, attrs={"axis": -1}, outs=("y", "z"), opset=13, id_="Split even"),
    one("Split", {"x": (FLOAT, (3, 5))}, attrs={"axis": 1, "num_outputs": 3}, outs=("y", "z", "w"),
        id_="Split num_outputs uneven"),
    one("Slice", X3, {"s": ints(1), "e": ints(I64_MAX), "a": ints(-1), "st": ints(2)}, id_="Slice step"),
    one("Slice", X3, {"s": ints(-1, 3), "e": ints(I64_MIN, 0), "a": ints(1, 2), "st": ints(-1, -2)},
        id_="Slice negative steps"),
    one("Slice", X3, {"s": ints(-7), "e": ints(-2)}, ins=("x", "s", "e"), id_="Slice clamped start"),
    one("Slice", X3, {"s": ints(10), "e": ints(-10), "a": ints(2), "st": ints(-3)}, id_="Slice clamped negative"),
    one("Slice", X3, {"s": ints(-9), "e": ints(I64_MIN), "a": ints(2), "st": ints(-1)},
        id_="Slice backwards from before the start"),
    one("Gather", X3, {"i": ints(-1, 0, 1, -2)}, {"axis": 2}, id_="Gather negative indices"),
    one("Gather", X3, {"i": np.array(-1, dtype=np.int64)}, {"axis": 1}, id_="Gather scalar index"),
    one("Gather", {"i": (INT, (3, 4))}, {"table": R(11, 3)}, ins=("table", "i"), id_="Gather embedding"),
    one("Shape", IMG, id_="Shape"), one("Shape", IMG, attrs={"start": 1, "end": -1}, id_="Shape start end"),
    one("Cast", X, attrs={"to": 7}, id_="Cast to int64"), one("Cast", X, attrs={"to": 9}, id_="Cast to bool"),
    one("Cast", {"x": (BOOL, (3, 4))}, attrs={"to": 11}, id_="Cast bool to double"),
    one("Cast", {"x": (INT, (3, 4))}, attrs={"to": 1}, id_="Cast int to float"),
    one("Expand", {"x": (FLOAT, (3, 1, 4))}, {"s": ints(1, 5, 4)}, id_="Expand"),
    one("Expand", {"x": (FLOAT, (3, 1, 4))}, {"s": ints(2, 1)}, id_="Expand fewer dims"),
    one("Pad", X3, {"p": ints(0, 1, 2, 0, 0, 1), "v": np.array(1.5)}, id_="Pad constant"),
    one("Pad", X3, {"p": ints(0, 1, 2, 0, 1, 3)}, {"mode": "reflect"}, id_="Pad reflect"),
    one("Pad", X3, {"p": ints(0, 0, 2, 0, 2, 1)}, {"mode": "edge"}, id_="Pad edge"),
    one("Pad", X3, {"p": ints(0, 1, 3, 0, 1, 2)}, {"mode": "wrap"}, opset=19, id_="Pad wrap"),
    one("Pad", X3, {"p": ints(-1, 2, 1, -2), "a": ints(1, 2)}, ins=("x", "p", "", "a"), id_="Pad negative on axes"),
    one("Identity", X), one("Dropout", X, opset=13),
    Case("Constant", (("Constant", (), ("c",), {"value": np.array([0.1, -2.5, 3.0, 7.25])}),
                      ("Add", ("x", "c"), ("y",), {})), X),
    Case("Constant int", (("Constant", (), ("c",), {"value_ints": [1, -2, 3, 4]}), ("Mul", ("x", "c"), ("y",), {})),
         {"x": (INT, (3, 4))}, opset=18),
    Case("ConstantOfShape", (("Shape", ("x",), ("s",), {}), ("ConstantOfShape", ("s",), ("y",), {})), X3),
    Case("Range integers", (("Range", ("a", "b", "d"), ("r",), {}), ("Add", ("x", "r"), ("y",), {})),
         {"x": (INT, (3, 4))}, consts={"a": ints(7)[0], "b": ints(-1)[0], "d": ints(-2)[0]}),
    Case("Range floats", (("Range", ("a", "b", "d"), ("r",), {}), ("Mul", ("x", "r"), ("y",), {})),
         X, consts={"a": np.array(0.5), "b": np.array(2.0), "d": np.array(0.4)}),
    # ---- chains as exporters write them
    Case("Shape Gather Unsqueeze Concat Reshape", (
        ("Shape", ("x",), ("s",), {}), ("Gather", ("s", "i0"), ("n",), {"axis": 0}),
        ("Unsqueeze", ("n", "zero"), ("n1",), {}), ("Concat", ("n1", "minus1"), ("shape",), {"axis": 0}),
        ("Reshape", ("x", "shape"), ("y",), {})), X3,
        consts={"i0": np.array(0, dtype=np.int64), "zero": ints(0), "minus1": ints(-1)}),
    Case("Shape Cast Sqrt Div (attention scale)", (
        ("Shape", ("x",), ("s",), {}), ("Slice", ("s", "m1", "big"), ("d",), {}),
        ("Cast", ("d",), ("df",), {"to": TO_FLOAT}), ("Sqrt", ("df",), ("sq",), {}),
        ("Div", ("x", "sq"), ("y",), {})), X3, consts={"m1": ints(-1), "big": ints(I64_MAX)}),
    Case("Equal Where mask", (
        ("Equal", ("m", "zero"), ("e",), {}), ("Constant", (), ("ninf",), {"value": np.array(-np.inf)}),
        ("Where", ("e", "ninf", "x"), ("y",), {})), {"x": (FLOAT, (3, 4)), "m": (INT, (3, 4))}, consts={"zero": ints(0)}),
    Case("Range from Shape, Expand, Cast", (
        ("Shape", ("x",), ("s",), {}), ("Gather", ("s", "i1"), ("n",), {"axis": 0}),
        ("Range", ("z", "n", "one"), ("r",), {}), ("Expand", ("r", "s"), ("e",), {}),
        ("Cast", ("e",), ("ef",), {"to": TO_FLOAT}), ("Mul", ("x", "ef"), ("y",), {})), X,
        consts={"i1": np.array(1, dtype=np.int64), "z": np.array(0, dtype=np.int64), "one": np.array(1, dtype=np.int64)}),
    Case("ConstantOfShape value Where Cast bool", (
        ("Shape", ("x",), ("s",), {}), ("ConstantOfShape", ("s",), ("c",), {"value": np.array([2.5])}),
        ("Cast", ("b",), ("bb",), {"to": 9}), ("Where", ("bb", "c", "x"), ("y",), {})),
        {"x": (FLOAT, (3, 4)), "b": (INT, (3, 4))}),
]


def _ids():
    return [c.id for c in CASES]


def test_cases_cover_every_operator():
    from emulator.graph import OPS

    used = {op for case in CASES for op, *_ in case.nodes}
    # no ONNX operator: Silu is tested through fusion (test_onnx_import.py), Activation (an MLP layer's
    # activation by name) through every MLP test, as Network.forward runs on it
    assert set(OPS.names()) - used == {"Silu", "Activation"}
    assert len(set(_ids())) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=_ids())
def test_operator_matches_onnxruntime(case):
    double = ort_runs_double(case)
    dtype = np.float64 if double else np.float32
    model = case.model(dtype)
    feeds = case.feeds(dtype, seed=len(case.id))
    assert_matches_ort(run_ours(model, feeds), run_ort(model, feeds), double, case.id)


# ---- emulated sites, bit for bit -----------------------------------------------------------

SPECS = ["fp16", "bf16:pairwise", "fp16:blocked:4", "bf16:fused:3", "fp8-e4m3fn:promote:4:fp16", "fp8-e5m2",
         "fp16:products=bf16:rounding=zero", "bf16:bias=last"]


def _im2col(x: np.ndarray, kernel, strides, pads, dilations):
    """Independent im2col with explicit index arithmetic: one row per (sample, output
    position) in row-major order, one column per (channel, kernel row, kernel column),
    channel-major; cells in the padding are 0."""
    spatial = len(kernel)
    sizes = x.shape[2:]
    outs = [(sizes[i] + pads[i] + pads[i + spatial] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
            for i in range(spatial)]
    rows = []
    for sample in range(x.shape[0]):
        for position in np.ndindex(*outs):
            row = []
            for channel in range(x.shape[1]):
                for offset in np.ndindex(*kernel):
                    at = [position[i] * strides[i] - pads[i] + offset[i] * dilations[i] for i in range(spatial)]
                    inside = all(0 <= at[i] < sizes[i] for i in range(spatial))
                    row.append(x[(sample, channel, *at)] if inside else 0.0)
            rows.append(row)
    return np.array(rows), outs


CONVS = [  # (input shape, weight shape, group, strides, pads, dilations)
    ((2, 4, 9), (6, 4, 3), 1, (1,), (0, 0), (1,)),
    ((2, 4, 9), (6, 2, 3), 2, (2,), (1, 2), (2,)),
    ((2, 4, 7, 6), (6, 2, 3, 2), 2, (2, 1), (1, 0, 2, 1), (1, 2)),
    ((1, 3, 5, 5), (4, 3, 3, 3), 1, (1, 1), (1, 1, 1, 1), (1, 1)),
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape, wshape, group, strides, pads, dilations", CONVS)
def test_conv_site_is_linear_on_the_im2col_matrix(spec, shape, wshape, group, strides, pads, dilations):
    from emulator.graph import Graph, Node, TensorInfo, forward
    from emulator.linear import linear

    gen = np.random.default_rng(len(spec) + 7 * group + len(shape))
    x, w, b = gen.standard_normal(shape) * 0.7, gen.standard_normal(wshape) * 0.5, gen.standard_normal(wshape[0])
    attrs = {"group": group, "strides": strides, "pads": pads, "dilations": dilations}
    graph = Graph([Node("conv", "Conv", ("x", "w", "b"), ("y",), attrs)], [TensorInfo("x", "float", (None, *shape[1:]))],
                  ["y"], {"w": w, "b": b})
    run = forward(graph, {"x": x}, acc=spec)
    cols, outs = _im2col(x, wshape[2:], strides, pads, dilations)
    cin, cout = wshape[1] * int(np.prod(wshape[2:])), wshape[0] // group
    parts = [linear(cols[:, g * cin:(g + 1) * cin], w[g * cout:(g + 1) * cout].reshape(cout, cin),
                    b[g * cout:(g + 1) * cout], spec) for g in range(group)]
    expected = np.concatenate(parts, axis=1).reshape(shape[0], *outs, wshape[0])
    expected = np.moveaxis(expected, -1, 1)
    np.testing.assert_array_equal(run.outputs["y"], expected)
    sites = {"conv"} if group == 1 else {f"conv.group{g}" for g in range(group)}
    assert set(run.overflow) == sites


@pytest.mark.parametrize("spec", SPECS)
def test_batched_matmul_sites_are_linear_per_batch_and_head(spec):
    """Q K^T (the key transposed by a Transpose node) and P V: one contraction per
    (batch, head), each equal to ``linear`` on that head's matrices."""
    from emulator.graph import Graph, Node, TensorInfo, forward
    from emulator.linear import linear

    gen = np.random.default_rng(len(spec))
    q, k, v = (gen.standard_normal((2, 3, 5, 4)) * 0.6 for _ in range(3))
    nodes = [Node("kt", "Transpose", ("k",), ("k_t",), {"perm": (0, 1, 3, 2)}),
             Node("scores", "MatMul", ("q", "k_t"), ("s",)),
             Node("mix", "MatMul", ("s", "v"), ("y",))]
    inputs = [TensorInfo(n, "float", (None, 3, 5, 4)) for n in ("q", "k", "v")]
    run = forward(Graph(nodes, inputs, ["y"]), {"q": q, "k": k, "v": v}, acc=spec, keep=["s"])
    for batch in range(2):
        for head in range(3):
            scores = linear(q[batch, head], k[batch, head], None, spec)
            np.testing.assert_array_equal(run.values["s"][batch, head], scores)
            np.testing.assert_array_equal(run.outputs["y"][batch, head], linear(scores, v[batch, head].T, None, spec))
