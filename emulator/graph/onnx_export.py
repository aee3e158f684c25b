"""Graphs as ONNX models (docs/method.md#onnx-export): :func:`graph_to_onnx` writes a
:class:`~emulator.graph.ir.Graph` as an ``onnx.ModelProto`` that onnxruntime runs and
that :func:`~emulator.graph.onnx_import.graph_from_onnx` reads back into a graph that
evaluates to the same numbers (bit for bit in float64).

* Every node becomes the ONNX node of its operator, with its name, tensors and
  attributes (the rows of ``OPS`` follow ONNX semantics and attribute names). Attribute
  forms of older opsets become the inputs opsets 18 to 21 read (Clip bounds, Pad pads and
  value, Squeeze / Unsqueeze / Reduce* axes, Split sizes; a Split without sizes gets
  ``num_outputs``); LayerNormalization's ``stash_type`` is the export type (every float
  is computed in it); the mixacc-only ``Activation`` becomes its ONNX operator
  (:data:`ACTIVATION_EXPORTS`) and ``Silu`` becomes x * Sigmoid(x).
* Types: floats in the export type (float64, or float32 with ``dtype``), integers int64,
  booleans where ONNX has them (Equal, a Cast to bool, Dropout's mask). Where the engine
  converts implicitly (an integer operand of a float operation is lifted, a 0/1 integer
  is a condition) a Cast is inserted, named after the node it feeds.
* Initialisers and constants in the export type (float32: rounded to nearest, finite
  values beyond its range saturated to +-max) or int64; float attributes must be float32
  numbers (ONNX stores them as float32; the importer reads them back as the shortest
  decimal, so 0.01 or 1e-12 go through, 1/3 is refused); graph inputs with their dtypes
  and shapes (as stated: a graph input of shape (None,) is one axis), the batch axis
  named ``batch``; outputs with the types and shapes ONNX shape inference finds.

:func:`onnxruntime_session` opens onnxruntime's CPU session of a written model (graph
optimisations off by default: the kernels of the nodes as written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ..errors import ModelFileError
from ..optional import require
from ..registry import Registry
from .float32 import as_float32
from .ir import FLOAT, INT, Graph, Node
from .onnx_import import snap_float32
from .ops.shape import _BOOL, _FLOAT_TYPES, constant_value

__all__ = ["graph_to_onnx", "onnxruntime_session", "EXPORTS", "ACTIVATION_EXPORTS", "EXPORT_OPSETS", "Export",
           "ActivationExport"]

EXPORT_OPSETS = (18, 21)
"""The default-domain opsets written (every attribute-to-input change of ONNX is done by 18)."""

BOOL = "bool"
BATCH = "batch"
_NEEDS = "Writing ONNX models"


def _onnx():
    return require("onnx", _NEEDS)


# ---- how each operator is written --------------------------------------------------------

@dataclass(frozen=True)
class Export:
    """How one operator type is written. ``inputs`` gives the type role of each input (the
    last letter repeats): F float, I int64, B bool, X as it is, S as input 0, N one
    numeric type shared by every N input (float if one is, else int64), A likewise but
    bool when all are. ``outputs`` gives each output's type (the last repeats): F, I, B,
    G the shared type, X input 0's. ``moved``: (attribute, input position) of attributes
    that are inputs in the written opsets. ``write`` replaces the generic writer."""

    op: str
    inputs: str = "F"
    outputs: str = "F"
    moved: tuple[tuple[str, int], ...] = ()
    write: "Callable | None" = field(default=None, repr=False)

    def role(self, k: int) -> str:
        return self.inputs[min(k, len(self.inputs) - 1)]

    def output(self, k: int) -> str:
        return self.outputs[min(k, len(self.outputs) - 1)]


@dataclass(frozen=True)
class ActivationExport:
    """An activation (its ``emulator.activations`` name without parameter) as the ONNX
    operator written for it, its fixed attributes and the attribute that takes the
    name's ``:value``."""

    name: str
    op: str
    attrs: Mapping = field(default_factory=dict)
    parameter: str = ""


ACTIVATION_EXPORTS: Registry[ActivationExport] = Registry("exportable activation")
for _row in (
    ActivationExport("relu", "Relu"), ActivationExport("tanh", "Tanh"), ActivationExport("sigmoid", "Sigmoid"),
    ActivationExport("leaky_relu", "LeakyRelu", parameter="alpha"), ActivationExport("elu", "Elu", parameter="alpha"),
    ActivationExport("gelu", "Gelu"), ActivationExport("gelu_tanh", "Gelu", {"approximate": "tanh"}),
    ActivationExport("silu", "Silu"), ActivationExport("softplus", "Softplus"),
    ActivationExport("identity", "Identity"),
):
    ACTIVATION_EXPORTS.add(_row.name, _row)


def _kind_of_value(value) -> str:
    return FLOAT if np.asarray(value).dtype.kind == "f" else INT


def _shared_kind(kinds: list[str], keep_bool: bool) -> str:
    if FLOAT in kinds:
        return FLOAT
    return BOOL if keep_bool and kinds and all(k == BOOL for k in kinds) else INT


def _write_node(w: "_Writer", node: Node, row: Export, attrs: "dict | None" = None, op: "str | None" = None) -> None:
    """The generic writer: moved attributes become constant inputs, every input is cast to
    its role's type, the outputs get theirs."""
    attrs = dict(node.attrs if attrs is None else attrs)
    inputs = list(node.inputs)
    moved: dict[int, tuple[str, object]] = {}
    for key, position in row.moved:
        value = attrs.pop(key, None)
        if value is not None and not (position < len(inputs) and inputs[position]):
            moved[position] = (key, value)
    inputs += [""] * (max([len(inputs), *(p + 1 for p in moved)]) - len(inputs))
    given = {k: w.kind(t) for k, t in enumerate(inputs) if t and k not in moved}
    given.update({k: _kind_of_value(value) for k, (_, value) in moved.items()})
    members = [given[k] for k in given if row.role(k) in "NA"]
    shared = _shared_kind(members, keep_bool=all(row.role(k) == "A" for k in given if row.role(k) in "NA"))
    fixed = {"F": FLOAT, "I": INT, "B": BOOL, "N": shared, "A": shared}
    first = fixed.get(row.role(0), given.get(0, FLOAT))
    typed = []
    for k, tensor in enumerate(inputs):
        role = row.role(k)
        kind = fixed.get(role, first if role == "S" else given.get(k))
        if k in moved:
            key, value = moved[k]
            typed.append(w.constant(f"{node.name}.{key}", value, kind))
        else:
            typed.append(w.coerce(tensor, kind, node.name) if tensor else "")
    while typed and not typed[-1]:
        typed.pop()
    outputs = {"F": FLOAT, "I": INT, "B": BOOL, "G": shared, "X": first}
    kinds = [outputs[row.output(k)] for k in range(len(node.outputs))]
    w.emit(op or node.op, typed, node.outputs, node.name, attrs, kinds)


def _write_cast(w: "_Writer", node: Node, row: Export) -> None:
    """Floating-point targets become the export type, integer targets int64 (every
    integer is held in int64), bool stays bool."""
    to = int(node.attr("to"))
    kind = FLOAT if to in _FLOAT_TYPES else BOOL if to == _BOOL else INT
    w.emit("Cast", [node.inputs[0]], node.outputs, node.name, {"to": w.elem(kind)}, [kind])


def _write_constant(w: "_Writer", node: Node, row: Export) -> None:
    """Every form of value (``value``, ``value_float(s)``, ``value_int(s)``) as a ``value`` tensor."""
    value = constant_value(node)
    kind = _kind_of_value(value)
    w.emit("Constant", [], node.outputs, node.name, {"value": w.tensor(value, kind)}, [kind])


def _write_constant_of_shape(w: "_Writer", node: Node, row: Export) -> None:
    """The fill value written explicitly (ONNX's default is a float32 zero)."""
    value = np.asarray(node.attr("value", np.zeros(1))).ravel()[:1]
    value = value if value.size else np.zeros(1)
    kind = _kind_of_value(value)
    shape = w.coerce(node.inputs[0], INT, node.name)
    w.emit("ConstantOfShape", [shape], node.outputs, node.name, {"value": w.tensor(value, kind)}, [kind])


def _write_layer_norm(w: "_Writer", node: Node, row: Export) -> None:
    _write_node(w, node, row, {**node.attrs, "stash_type": w.elem(FLOAT)})


def _write_split(w: "_Writer", node: Node, row: Export) -> None:
    """Without sizes, opsets 18+ need ``num_outputs`` (the last part may be smaller, as
    the engine splits)."""
    sized = node.attr("split") is not None or (len(node.inputs) > 1 and node.inputs[1])
    _write_node(w, node, row, node.attrs if sized else {**node.attrs, "num_outputs": len(node.outputs)})


def _write_gelu(w: "_Writer", node: Node, row: Export) -> None:
    if w.opset < 20:
        raise ModelFileError(f"node {node.name!r} (Gelu): ONNX has Gelu from opset 20; export with opset >= 20.")
    _write_node(w, node, row)


def _write_silu(w: "_Writer", node: Node, row: Export) -> None:
    """x * Sigmoid(x): the importer fuses the pair back into Silu."""
    x = w.coerce(node.inputs[0], FLOAT, node.name)
    gate = w.fresh(f"{node.outputs[0]}/sigmoid")
    w.emit("Sigmoid", [x], [gate], w.fresh(f"{node.name}/Sigmoid"), {}, [FLOAT])
    w.emit("Mul", [x, gate], node.outputs, node.name, {}, [FLOAT])


def _write_activation(w: "_Writer", node: Node, row: Export) -> None:
    """The node of the ONNX operator of its activation (see :data:`ACTIVATION_EXPORTS`)."""
    name = str(node.attr("name"))
    base, _, parameter = name.partition(":")
    found = ACTIVATION_EXPORTS.get(base) if base in ACTIVATION_EXPORTS else None
    if found is None or (parameter and not found.parameter):
        raise ModelFileError(f"node {node.name!r} (Activation): {name!r} has no ONNX operator; only "
                             f"{', '.join(ACTIVATION_EXPORTS.names())} (and leaky_relu:A, elu:A) can be exported.")
    attrs = dict(found.attrs)
    if parameter:
        attrs[found.parameter] = float(parameter)
    as_op = Node(node.name, found.op, node.inputs, node.outputs, attrs)
    w.write(as_op)


_AXES = (("axes", 1),)
EXPORTS: Registry[Export] = Registry("exported operator")
for _row in (
    Export("Gemm"), Export("MatMul"), Export("Einsum"), Export("Conv"),
    *(Export(op, "N", "G") for op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Neg", "Abs", "Range")),
    *(Export(op) for op in ("Sqrt", "Reciprocal", "Exp", "Erf", "Relu", "Tanh", "Sigmoid", "Softplus", "LeakyRelu",
                            "Elu", "PRelu", "Softmax", "LogSoftmax", "BatchNormalization", "MaxPool", "AveragePool",
                            "GlobalAveragePool")),
    Export("Gelu", write=_write_gelu), Export("Silu", write=_write_silu),
    Export("Activation", write=_write_activation),
    Export("LayerNormalization", write=_write_layer_norm),
    Export("Clip", "N", "G", moved=(("min", 1), ("max", 2))),
    Export("Where", "BA", "G"), Export("Equal", "A", "B"),
    Export("ReduceSum", "NI", "G", _AXES), Export("ReduceMax", "NI", "G", _AXES),
    Export("ReduceProd", "NI", "G", _AXES), Export("ReduceMean", "FI", "F", _AXES),
    Export("Reshape", "XI", "X"), Export("Flatten", "X", "X"), Export("Transpose", "X", "X"),
    Export("Squeeze", "XI", "X", _AXES), Export("Unsqueeze", "XI", "X", _AXES),
    Export("Concat", "A", "G"), Export("Split", "XI", "X", (("split", 1),), _write_split),
    Export("Slice", "XI", "X"), Export("Gather", "XI", "X"), Export("Shape", "X", "I"),
    Export("Expand", "XI", "X"), Export("Pad", "XISI", "X", (("pads", 1), ("value", 2))),
    Export("Identity", "X", "X"), Export("Dropout", "XFB", "XB"),
    Export("Cast", write=_write_cast), Export("Constant", write=_write_constant),
    Export("ConstantOfShape", write=_write_constant_of_shape),
):
    EXPORTS.add(_row.op, _row)


# ---- the writer ---------------------------------------------------------------------------

class _Writer:
    """The nodes, initialisers and tensor types of the model being written."""

    def __init__(self, graph: Graph, opset: int, dtype):
        self.onnx = _onnx()
        self.opset = opset
        self.float32 = dtype == np.float32
        self.kinds: dict[str, str] = {t.name: t.dtype for t in graph.inputs}
        self.kinds.update({k: _kind_of_value(v) for k, v in graph.initializers.items()})
        self.taken = {*self.kinds, *(t for n in graph.nodes for t in (*n.inputs, *n.outputs)), *(n.name for n in graph)}
        self.nodes: list = []
        self.initializers = [self.tensor(v, self.kinds[k], k) for k, v in graph.initializers.items()]
        self.casts: dict[tuple[str, str], str] = {}

    def elem(self, kind: str) -> int:
        tp = self.onnx.TensorProto
        return {FLOAT: tp.FLOAT if self.float32 else tp.DOUBLE, INT: tp.INT64, BOOL: tp.BOOL}[kind]

    def tensor(self, value, kind: str, name: str = ""):
        """A TensorProto of ``value`` in the written type of ``kind``."""
        a = np.asarray(value)
        if kind == FLOAT:
            a = as_float32(a) if self.float32 else np.asarray(a, dtype=np.float64)
        else:
            a = np.asarray(a, dtype=bool if kind == BOOL else np.int64)
        return self.onnx.numpy_helper.from_array(a, name)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def kind(self, tensor: str) -> str:
        return self.kinds[tensor]

    def constant(self, base: str, value, kind: str) -> str:
        """A new initialiser holding ``value``; its name."""
        name = self.fresh(base)
        self.initializers.append(self.tensor(value, kind, name))
        self.kinds[name] = kind
        return name

    def coerce(self, tensor: str, kind: "str | None", reader: str) -> str:
        """``tensor`` as ``kind`` (None: as it is): itself, or the output of a Cast (one per
        tensor and type) named after the node that reads it."""
        if kind is None or self.kinds[tensor] == kind:
            return tensor
        if (tensor, kind) not in self.casts:
            out = self.fresh(f"{tensor}/{kind}")
            self.emit("Cast", [tensor], [out], self.fresh(f"{reader}/Cast_{kind}"), {"to": self.elem(kind)}, [kind])
            self.casts[tensor, kind] = out
        return self.casts[tensor, kind]

    def emit(self, op: str, inputs, outputs, name: str, attrs: Mapping, kinds) -> None:
        where = f"node {name!r} ({op})"
        made = [_attribute(self.onnx, key, value, where, self) for key, value in attrs.items() if value is not None]
        node = self.onnx.helper.make_node(op, list(inputs), list(outputs), name=name)
        node.attribute.extend(made)
        self.nodes.append(node)
        for out, kind in zip(outputs, kinds):
            if out:
                self.kinds[out] = kind

    def write(self, node: Node) -> None:
        row = EXPORTS.get(node.op)
        (row.write or _write_node)(self, node, row)


def _float_attribute(value: float, where: str, key: str) -> float:
    """A float attribute as ONNX stores it (float32): refused unless the importer reads
    the same number back."""
    v = float(value)
    if not np.isfinite(v) or snap_float32(v) != v:
        raise ModelFileError(f"{where}: attribute {key} = {v!r} is not a float32 number (ONNX float attributes are "
                             "float32); it cannot be written exactly.")
    return v


def _attribute(onnx, key: str, value, where: str, w: _Writer):
    """An AttributeProto of a plain value (ints, floats, strings, their tuples, arrays)."""
    kinds = onnx.AttributeProto
    if isinstance(value, onnx.TensorProto):
        return onnx.helper.make_attribute(key, value)
    if isinstance(value, np.ndarray):
        return onnx.helper.make_attribute(key, w.tensor(value, _kind_of_value(value)))
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return onnx.helper.make_attribute(key, int(value))
    if isinstance(value, (float, np.floating)):
        return onnx.helper.make_attribute(key, _float_attribute(value, where, key))
    if isinstance(value, (str, bytes)):
        return onnx.helper.make_attribute(key, value)
    items = list(value)
    if not items:
        return onnx.helper.make_attribute(key, [], attr_type=kinds.INTS)
    if all(isinstance(v, (str, bytes)) for v in items):
        return onnx.helper.make_attribute(key, items)
    if all(isinstance(v, (bool, np.bool_, int, np.integer)) for v in items):
        return onnx.helper.make_attribute(key, [int(v) for v in items])
    return onnx.helper.make_attribute(key, [_float_attribute(v, where, key) for v in items], attr_type=kinds.FLOATS)


def _input_info(onnx, w: _Writer, info):
    """A graph input with its shape as the graph states it (ONNX requires one: (None,) is
    one axis), the batch axis named ``batch`` when it varies."""
    dims = [BATCH if k == 0 and d is None else d for k, d in enumerate(info.shape)]
    return onnx.helper.make_tensor_value_info(info.name, w.elem(info.dtype), dims)


def _with_output_shapes(onnx, model):
    """The outputs' shapes as ONNX shape inference finds them (left out where it cannot),
    their first axis, the batch, named ``batch`` unless it is a fixed number."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError):
        return model  # best effort: the checker decides whether the model is valid
    found = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for out in model.graph.output:
        value = found.get(out.name)
        if value is None or not value.type.tensor_type.HasField("shape"):
            continue
        shape = out.type.tensor_type.shape
        shape.CopyFrom(value.type.tensor_type.shape)
        if shape.dim and not shape.dim[0].HasField("dim_value"):
            shape.dim[0].dim_param = BATCH
    return model


def graph_to_onnx(graph: Graph, opset: int = 20, *, dtype=np.float64):
    """``graph`` as an ``onnx.ModelProto`` of the default-domain ``opset`` (18 to 21),
    floats written in ``dtype`` (``numpy.float64`` or ``numpy.float32``); see the module
    docstring. Operators or attribute values ONNX cannot state are refused with one line
    naming the node."""
    onnx = _onnx()
    dtype = np.dtype(dtype).type
    if dtype not in (np.float64, np.float32):
        raise ModelFileError(f"graph_to_onnx: dtype {np.dtype(dtype).name} is not float64 or float32.")
    low, high = EXPORT_OPSETS
    if not low <= int(opset) <= high:
        raise ModelFileError(f"graph_to_onnx: opset {opset} is outside {low}..{high}.")
    w = _Writer(graph, int(opset), dtype)
    for node in graph.nodes:
        w.write(node)
    helper = onnx.helper
    inputs = [_input_info(onnx, w, t) for t in graph.inputs]
    outputs = [helper.make_tensor_value_info(o, w.elem(w.kind(o)), None) for o in graph.outputs]
    proto = helper.make_graph(w.nodes, graph.name or "mixacc", inputs, outputs, w.initializers)
    opsets = [helper.make_opsetid("", int(opset))]
    model = helper.make_model(proto, opset_imports=opsets, producer_name="mixacc")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    model = _with_output_shapes(onnx, model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelFileError(f"graph_to_onnx: {graph.name!r} gives an invalid ONNX model "
                             f"({str(exc).strip().splitlines()[0]}).") from None
    return model


def onnxruntime_session(model, *, optimize: bool = False):
    """An onnxruntime CPU session of an ONNX model (a ModelProto or its bytes); with
    ``optimize`` False (the default) its graph optimisations are off, so it runs the
    kernels of the nodes as written (extra ``test``)."""
    ort = require("onnxruntime", "Running ONNX models")
    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    options.log_severity_level = 3
    data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
    return ort.InferenceSession(bytes(data), options, providers=["CPUExecutionProvider"])
