"""Networks as graphs of operators: the IR (:class:`Graph`, :class:`Node`,
:class:`TensorInfo`), the operator rows (``OPS``), the arithmetics a graph runs in and the
one forward engine (docs/method.md#graphs)."""

from .arithmetic import AccumulationPlan, Arithmetic, Emulated, Native, Site, SiteRecord
from .engine import Context, GraphRun, forward, make_arithmetic, run_graph
from .ir import FLOAT, INT, Graph, Node, TensorInfo
from .ops import OPS, Op
from .onnx_import import graph_from_onnx
from .patterns import PATTERNS, fuse_patterns

__all__ = [
    "AccumulationPlan", "Arithmetic", "Context", "Emulated", "FLOAT", "Graph", "GraphRun", "INT", "Native", "Node",
    "OPS", "Op", "PATTERNS", "Site", "SiteRecord", "TensorInfo", "forward", "fuse_patterns", "graph_from_onnx",
    "make_arithmetic", "run_graph",
]
