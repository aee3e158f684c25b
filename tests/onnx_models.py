"""Small ONNX models for the tests: a declarative :class:`Case` (nodes, data inputs,
constants, opset) built with ``onnx.helper`` in float64 or float32, run in onnxruntime and
in ``emulator.graph`` (float64)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

FLOAT, INT, BOOL, POSITIVE = "float", "int", "bool", "positive"
TO_FLOAT = "to-float"  # a Cast target: the case's float type
IR_VERSION = 10  # understood by every onnxruntime that runs opsets 13 to 21


def helpers():
    onnx = pytest.importorskip("onnx")
    return onnx, onnx.helper, onnx.numpy_helper, onnx.TensorProto


def model_of(nodes, inputs, outputs, initializers=None, opset: int = 18, name: str = "case"):
    """A checked ModelProto: ``nodes`` are NodeProtos, ``inputs`` ValueInfoProtos,
    ``outputs`` names (their types inferred), ``initializers`` name -> array."""
    onnx, helper, numpy_helper, _ = helpers()
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(nodes, name, inputs, [onnx.ValueInfoProto(name=o) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model


def _const(value, dtype):
    a = np.asarray(value)
    return a.astype(dtype) if a.dtype.kind == "f" else a.astype(np.int64) if a.dtype.kind in "iu" else a


@dataclass(frozen=True)
class Case:
    """One test graph: ``nodes`` as (op, inputs, outputs, attrs[, name]); ``inputs`` name ->
    (kind, shape) with kind FLOAT, POSITIVE (floats in [0.5, 2.5)), INT (-5..5) or BOOL;
    ``consts`` name -> array (float arrays take the case's float type; those no node reads
    are left out); ``double`` False
    compares with onnxruntime in float32 only (where its float64 kernel is less accurate)."""

    id: str
    nodes: tuple
    inputs: dict
    outputs: tuple = ("y",)
    consts: dict = field(default_factory=dict)
    opset: int = 18
    double: bool = True

    def model(self, dtype=np.float64):
        onnx, helper, _, tp = helpers()
        elem = {FLOAT: tp.DOUBLE if dtype == np.float64 else tp.FLOAT, INT: tp.INT64, BOOL: tp.BOOL}
        elem[POSITIVE] = elem[FLOAT]
        nodes = [helper.make_node(op, list(ins), list(outs), name=(name or [f"n{k}"])[0], **self._attrs(attrs, dtype))
                 for k, (op, ins, outs, attrs, *name) in enumerate(self.nodes)]
        inputs = [helper.make_tensor_value_info(n, elem[kind], list(shape)) for n, (kind, shape) in self.inputs.items()]
        read = {t for _, ins, *_ in self.nodes for t in ins}
        consts = {k: _const(v, dtype) for k, v in self.consts.items() if k in read}
        return model_of(nodes, inputs, list(self.outputs), consts, self.opset, self.id)

    @staticmethod
    def _attrs(attrs: dict, dtype) -> dict:
        """Array attributes as tensors of the case's float type; TO_FLOAT as that type."""
        onnx, _, numpy_helper, tp = helpers()
        out = {}
        for key, value in attrs.items():
            if isinstance(value, np.ndarray):
                value = numpy_helper.from_array(_const(value, dtype))
            elif isinstance(value, str) and value == TO_FLOAT:
                value = tp.DOUBLE if dtype == np.float64 else tp.FLOAT
            out[key] = value
        return out

    def feeds(self, dtype=np.float64, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        out = {}
        for name, (kind, shape) in self.inputs.items():
            if kind == INT:
                out[name] = rng.integers(-5, 6, size=shape).astype(np.int64)
            elif kind == BOOL:
                out[name] = rng.random(shape) < 0.5
            elif kind == POSITIVE:
                out[name] = (0.5 + 2 * rng.random(shape)).astype(dtype)
            else:
                out[name] = rng.standard_normal(shape).astype(dtype)
        return out


def ort_session(model):
    """An onnxruntime CPU session of ``model``, its graph optimisations (fusions) off: the
    reference is onnxruntime's kernels for the nodes as written."""
    pytest.importorskip("onnxruntime")
    from emulator.graph.onnx_export import onnxruntime_session

    return onnxruntime_session(model)


def run_ort(model, feeds: dict) -> list[np.ndarray]:
    return ort_session(model).run(None, feeds)


def ort_runs_double(case: Case) -> bool:
    """True when onnxruntime implements every node of ``case`` in float64 (and the case
    asks for it)."""
    return case.double and _double_session(lambda: case.model(np.float64)) is not None


def _double_session(build):
    """The session of the float64 model ``build()`` gives, or None when onnxruntime has no
    float64 kernel for one of its nodes."""
    ort = pytest.importorskip("onnxruntime")
    try:
        return ort_session(build())
    except (ort.capi.onnxruntime_pybind11_state.NotImplemented, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
        if "implementation" in str(exc).lower() or "NOT_IMPLEMENTED" in str(exc):
            return None
        raise


def exported_session(graph, double: bool = True):
    """(session, dtype): onnxruntime's session of ``graph_to_onnx(graph)`` with float64
    tensors where it implements every node in float64 (and ``double``), else float32."""
    from emulator.graph.onnx_export import graph_to_onnx

    session = _double_session(lambda: graph_to_onnx(graph)) if double else None
    if session is not None:
        return session, np.float64
    return ort_session(graph_to_onnx(graph, dtype=np.float32)), np.float32


def run_ours(model, feeds: dict, **options) -> list[np.ndarray]:
    """The graph's outputs, in order, evaluated by ``emulator.graph.forward``."""
    from emulator.graph import forward
    from emulator.graph.onnx_import import graph_from_onnx

    graph = graph_from_onnx(model)
    run = forward(graph, feeds, **options)
    return [run.outputs[o] for o in graph.outputs]


def assert_matches_ort(ours: list, theirs: list, double: bool, label: str) -> None:
    """Integer and boolean outputs equal; float outputs within float64 rounding of a
    float64 onnxruntime result, or within float32 rounding (64 units, relative to the
    output's largest magnitude) of a float32 one."""
    assert len(ours) == len(theirs), label
    for k, (a, b) in enumerate(zip(ours, theirs)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, f"{label} output {k}: shape {a.shape} != {b.shape}"
        if b.dtype.kind in "biu":
            assert a.dtype.kind in "iu", f"{label} output {k}: dtype {a.dtype}, onnxruntime gives {b.dtype}"
            np.testing.assert_array_equal(a, b.astype(np.int64), err_msg=f"{label} output {k}")
            continue
        scale = max(1.0, float(np.max(np.abs(b[np.isfinite(b)]), initial=0.0)))
        tol = 1e-12 if double else 64 * 2.0 ** -24
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=f"{label} output {k}: non-finite")
        np.testing.assert_allclose(a, b.astype(np.float64), rtol=tol, atol=tol * scale, err_msg=f"{label} output {k}")


def without_package(monkeypatch, package: str) -> None:
    """Imports of ``package`` (and its submodules) through ``emulator.optional`` fail, as
    if it were not installed."""
    import importlib

    from emulator import optional

    real = importlib.import_module

    def blocked(name, *args):
        if name.split(".")[0] == package:
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(optional.importlib, "import_module", blocked)
