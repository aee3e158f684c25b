"""Networks as graphs of operators: the IR (:class:`Graph`, :class:`Node`,
:class:`TensorInfo`), the operator rows (``OPS``), the arithmetics a graph runs in, the
one forward engine, and ONNX models read and written (docs/method.md#graphs)."""

from .arithmetic import AccumulationPlan, Arithmetic, Emulated, Native, Site, SiteRecord
from .engine import Context, GraphRun, forward, make_arithmetic, run_graph
from .float32 import Float32
from .ir import FLOAT, INT, Graph, Node, TensorInfo
from .ops import OPS, Op
from .onnx_export import graph_to_onnx
from .onnx_import import graph_from_onnx
from .patterns import PATTERNS, fuse_patterns

__all__ = [
    "AccumulationPlan", "Arithmetic", "Context", "Emulated", "FLOAT", "Float32", "Graph", "GraphRun", "INT", "Native",
    "Node", "OPS", "Op", "PATTERNS", "Site", "SiteRecord", "TensorInfo", "forward", "fuse_patterns",
    "graph_from_onnx", "graph_to_onnx", "make_arithmetic", "run_graph",
]
