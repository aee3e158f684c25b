"""ONNX models as graphs (docs/method.md#onnx-import).

:func:`graph_from_onnx` reads a model (a path, its bytes or an ``onnx.ModelProto``) into a
:class:`~emulator.graph.ir.Graph` and fuses the decomposed operators it recognises
(:func:`emulator.graph.patterns.fuse_patterns`):

* every node must be an operator of the default ONNX domain that ``OPS`` implements, with
  attribute values its row implements; anything else is refused with one line naming
  the op type and the node;
* tensors (initialisers, tensor attributes, ``Constant`` values) of every floating-point
  type are converted exactly to float64, integer and boolean ones to int64;
* float attributes (stored as float32) are snapped to the shortest decimal that rounds
  to the same float32 (``1e-05``, ``0.01``: the value the model was written with);
* graph inputs keep their names, dtypes and shapes (named or unknown dimensions become
  None; the first axis is the batch); initialisers listed as inputs are constants;
* external data is read only from files inside the model's own directory;
* opsets 13 to 21 are read as they are; older and newer models are first converted to
  the nearest of these by ``onnx.version_converter``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from ..errors import DataError, ModelFileError, ShapeError
from ..optional import require
from .ir import FLOAT, INT, Graph, Node, TensorInfo
from .ops import OPS
from .patterns import fuse_patterns

__all__ = ["graph_from_onnx", "read_onnx", "tensor_array", "attribute_value", "snap_float32", "OPSETS"]

OPSETS = (13, 21)
"""The default-domain opsets whose operator semantics the rows implement."""

_DEFAULT_DOMAINS = ("", "ai.onnx")
_NEEDS = "Reading ONNX models"


def snap_float32(value: float) -> float:
    """A float32 attribute as the shortest decimal that gives it (0.01f -> 0.01): the
    value the model was written with; it rounds back to the same float32."""
    return float(str(np.float32(value)))


def _onnx():
    return require("onnx", _NEEDS)


def _dtype_kind(data_type: int) -> "str | None":
    """FLOAT, INT or None (strings, complex numbers) for an ONNX element type."""
    t = _onnx().TensorProto
    floats = ("FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
              "FLOAT8E5M2FNUZ", "FLOAT4E2M1")
    ints = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL", "INT4", "UINT4")
    if data_type in {getattr(t, k) for k in floats if hasattr(t, k)}:
        return FLOAT
    if data_type in {getattr(t, k) for k in ints if hasattr(t, k)}:
        return INT
    return None


def _type_name(data_type: int) -> str:
    try:
        return _onnx().TensorProto.DataType.Name(data_type)
    except ValueError:
        return str(data_type)


def tensor_array(tensor, where: str = "onnx") -> np.ndarray:
    """An ONNX TensorProto (raw or typed storage) as float64 (every float type, exactly)
    or an integer array (every integer type and bool, as numpy integers)."""
    onnx = _onnx()
    kind = _dtype_kind(tensor.data_type)
    if kind is None:
        raise ModelFileError(f"{where}: tensor {tensor.name!r} has type {_type_name(tensor.data_type)}; "
                             "only numbers are supported.")
    try:
        a = onnx.numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{where}: tensor {tensor.name!r} is malformed ({str(exc).splitlines()[0]}).") from None
    if kind == FLOAT:
        return np.asarray(a, dtype=np.float64)
    return a if a.dtype.kind in "biu" else np.asarray(a, dtype=np.int64)


# ---- reading the file -------------------------------------------------------------------

def read_onnx(source) -> tuple[object, "Path | None", str]:
    """The ``ModelProto`` of ``source`` (a path, bytes or a ModelProto), the directory its
    external data may be read from (None in memory) and the name it goes by (the file's
    stem). The file is parsed without its external data."""
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    if isinstance(source, onnx.ModelProto):
        return source, None, ""
    if isinstance(source, (bytes, bytearray)):
        where, directory, stem = "ONNX bytes", None, ""
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ModelFileError(f"ONNX file '{path}' does not exist.")
        where, directory, stem = str(path), path.parent, path.stem
    else:
        raise ModelFileError(f"An ONNX model is a path, bytes or an onnx.ModelProto, got {type(source).__name__}.")
    try:
        if directory is None:
            model = onnx.load_model_from_string(bytes(source))
        else:
            model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{where}: corrupt or truncated ONNX file ({type(exc).__name__}).") from None
    if not model.HasField("graph"):
        raise ModelFileError(f"{where}: corrupt or truncated ONNX file (no graph).")
    return model, directory, stem


def _node_names(nodes) -> list[str]:
    """Unique node names: the exporter's, ``OpType_k`` (k its index) for unnamed nodes,
    ``_1``, ``_2`` ... appended to repeats."""
    given = {n.name for n in nodes if n.name}
    seen: set[str] = set()
    out = []
    for k, n in enumerate(nodes):
        base = n.name or f"{n.op_type}_{k}"
        name, j = base, 1
        while name in seen or (not n.name and name in given):
            name, j = f"{base}_{j}", j + 1
        seen.add(name)
        out.append(name)
    return out


def _check_operators(model, where: str) -> None:
    """Every node is a default-domain operator ``OPS`` implements."""
    for name, node in zip(_node_names(model.graph.node), model.graph.node):
        if node.domain not in _DEFAULT_DOMAINS:
            raise ModelFileError(f"{where}: unsupported op {node.op_type!r} of domain {node.domain!r} (node {name!r}); "
                                 "only the default ONNX domain is supported.")
        if node.op_type not in OPS:
            raise ModelFileError(f"{where}: unsupported op {node.op_type!r} (node {name!r}).")


def _stored_tensors(graph):
    """Every tensor a graph stores: initialisers and tensor attributes of its nodes."""
    onnx = _onnx()
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors


def _external_bytes(tensor, directory: Path, where: str) -> bytes:
    """The bytes of an externally stored tensor, read only from a file inside
    ``directory`` (no absolute path, no ``..``, no symbolic link leading out of it)."""
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    what = f"{where}: tensor {tensor.name!r}: external data file {location!r}"
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if not location or os.path.isabs(location) or PureWindowsPath(location).is_absolute() or ".." in parts:
        raise ModelFileError(f"{what} is outside the model's directory (refused).")
    root = directory.resolve()
    target = (root / location).resolve()
    if not target.is_relative_to(root):
        raise ModelFileError(f"{what} leads outside the model's directory through a symbolic link (refused).")
    if not target.is_file():
        raise ModelFileError(f"{what} does not exist.")
    try:
        offset, length = int(info.get("offset", 0)), (int(info["length"]) if "length" in info else -1)
    except ValueError:
        raise ModelFileError(f"{what}: malformed offset or length.") from None
    with open(target, "rb") as fh:
        fh.seek(offset)
        data = fh.read(length)
    if length >= 0 and len(data) != length:
        raise ModelFileError(f"{what} is truncated ({len(data)} of {length} bytes at offset {offset}).")
    return data


def _inline_external_data(model, directory: "Path | None", where: str):
    """The model with every external tensor's bytes read in (a copy when any is)."""
    onnx = _onnx()
    external = [t for t in _stored_tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return model
    if directory is None:
        raise ModelFileError(f"{where}: tensor {external[0].name!r} keeps its data in an external file; load the "
                             "model from its path.")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in _stored_tensors(copy.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            tensor.raw_data = _external_bytes(tensor, directory, where)
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
    return copy


def _opset(model) -> int:
    versions = [imp.version for imp in model.opset_import if imp.domain in _DEFAULT_DOMAINS]
    return int(versions[0]) if versions else 0


def _at_supported_opset(model, where: str):
    """The model itself when its opset is in ``OPSETS``, else converted to the nearest one."""
    onnx = _onnx()
    version = _opset(model)
    low, high = OPSETS
    if low <= version <= high:
        return model
    target = min(max(version, low), high)
    from onnx import version_converter

    failures = (RuntimeError, ValueError, onnx.checker.ValidationError,
                getattr(onnx.onnx_cpp2py_export.version_converter, "ConvertError", RuntimeError))
    try:
        return version_converter.convert_version(model, target)
    except failures as exc:
        raise ModelFileError(f"{where}: opset {version} is outside {low}..{high} and converting it to opset {target} "
                             f"failed ({str(exc).strip().splitlines()[0]}).") from None


# ---- the graph ----------------------------------------------------------------------------

def attribute_value(attr, where: str = "onnx", exact: bool = False):
    """An ONNX AttributeProto as a plain value: ints, str, tuples, float64 / integer
    arrays for tensors; float attributes snapped (see :func:`snap_float32`), or, with
    ``exact`` (the value of a Constant), float64 arrays of their exact float32 values."""
    kinds = _onnx().AttributeProto
    real = (lambda v: float(v)) if exact else snap_float32
    if attr.type == kinds.FLOAT:
        return np.array(real(attr.f)) if exact else real(attr.f)
    if attr.type == kinds.INT:
        return int(attr.i)
    if attr.type == kinds.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if attr.type == kinds.FLOATS:
        return np.array([real(v) for v in attr.floats]) if exact else tuple(real(v) for v in attr.floats)
    if attr.type == kinds.INTS:
        return tuple(int(v) for v in attr.ints)
    if attr.type == kinds.STRINGS:
        return tuple(s.decode("utf-8", errors="replace") for s in attr.strings)
    if attr.type == kinds.TENSOR:
        return tensor_array(attr.t, where)
    if attr.type == kinds.TENSORS:
        return tuple(tensor_array(t, where) for t in attr.tensors)
    raise ModelFileError(f"{where}: attribute {attr.name!r} of type {kinds.AttributeType.Name(attr.type)} is not "
                         "supported.")


def _input_info(value_info, where: str) -> TensorInfo:
    """A graph input: float or int dtype; fixed dimensions as ints, others None."""
    name = value_info.name
    if not value_info.type.HasField("tensor_type"):
        raise ModelFileError(f"{where}: input {name!r} is not a tensor.")
    tensor_type = value_info.type.tensor_type
    dtype = _dtype_kind(tensor_type.elem_type)
    if dtype is None:
        raise ModelFileError(f"{where}: input {name!r} has type {_type_name(tensor_type.elem_type)}; only "
                             "numbers are supported.")
    if not tensor_type.HasField("shape"):
        return TensorInfo(name, dtype, (None,))
    shape = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    if not shape:
        raise ModelFileError(f"{where}: input {name!r} is a scalar; graph inputs need a leading batch axis.")
    return TensorInfo(name, dtype, shape)


def _graph(model, name: str, where: str) -> Graph:
    g = model.graph
    if len(g.sparse_initializer):
        raise ModelFileError(f"{where}: sparse initialiser {g.sparse_initializer[0].values.name!r} is not supported.")
    initializers = {t.name: tensor_array(t, where) for t in g.initializer}
    inputs = [_input_info(v, where) for v in g.input if v.name not in initializers]
    nodes = []
    for node_name, node in zip(_node_names(g.node), g.node):
        at = f"{where}: node {node_name!r} ({node.op_type})"
        attrs = {a.name: attribute_value(a, at, node.op_type == "Constant") for a in node.attribute}
        nodes.append(Node(node_name, node.op_type, tuple(node.input), tuple(node.output), attrs))
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    meta = {"source": "onnx", "opset": _opset(model), **({"producer": producer} if producer else {})}
    try:
        return Graph(nodes, inputs, [o.name for o in g.output], initializers, name, meta)
    except (DataError, ShapeError, ModelFileError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


def graph_from_onnx(model_or_path, name: str = "", *, fuse: bool = True) -> Graph:
    """The :class:`Graph` of an ONNX model (a path, bytes or an ``onnx.ModelProto``),
    named ``name`` (default: the file's stem), with the decomposed LayerNorm, GELU and
    SiLU patterns fused unless ``fuse`` is False (see the module docstring)."""
    onnx = _onnx()
    model, directory, stem = read_onnx(model_or_path)
    where = str(model_or_path) if directory is not None else (name or model.graph.name or "onnx")
    _check_operators(model, where)
    model = _inline_external_data(model, directory, where)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelFileError(f"{where}: invalid ONNX model ({str(exc).strip().splitlines()[0]}).") from None
    model = _at_supported_opset(model, where)
    _check_operators(model, where)
    graph = _graph(model, name or stem, where)
    return fuse_patterns(graph) if fuse else graph
