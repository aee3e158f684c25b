"""Fusion of decomposed operators (docs/method.md#pattern-fusion): one pass over a
:class:`~emulator.graph.ir.Graph` that replaces each recognised pattern by the single
operator it computes, as if the exporter had written that operator:

* LayerNorm: ReduceMean - Sub - Pow(2) (or Mul(d, d)) - ReduceMean - Add(eps) - Sqrt - Div,
  optionally followed by Mul(scale) and Add(bias) -> ``LayerNormalization`` (``axis``,
  ``epsilon``); the reductions keep their dims and run over the trailing axes, given
  negatively (-k .. -1);
* GELU: x * 0.5 * (1 + Erf(x / sqrt 2)) (Div by sqrt 2 or Mul by 1/sqrt 2; the three
  factors multiplied in any order) -> ``Gelu``; and the tanh form
  x * 0.5 * (1 + Tanh(sqrt(2/pi) (x + 0.044715 x^3))) (x^3 as Pow(x, 3) or Mul(x, Mul(x, x)))
  -> ``Gelu`` with ``approximate="tanh"``;
* SiLU: x * Sigmoid(x) -> ``Silu``.

A pattern fuses only when every tensor it computes on the way is read by nothing else
(and is not a graph output), and its constants are exactly the right values: the value
rounded to nearest in float64, float32, float16 or bfloat16 (exporters store constants
in the model's type). The fused node reads the pattern's input (and the LayerNorm's
constant scale and bias) and writes the pattern's last tensor, so the rest of the graph
is unchanged; constants only the pattern read are dropped.

Naming: the fused node is named after the scope its nodes share, as an exporter names
the fused operator: nodes ``/layers.0/norm1/ReduceMean``, ``/layers.0/norm1/Sub``, ...
give ``/layers.0/norm1/LayerNormalization`` (the longest common ``/``-separated prefix of
the nodes' scopes, then ``/`` and the op type). When a node name has no ``/``, the fused
node takes the name of the pattern's first node. A name already used gets ``_1``, ``_2``
... appended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..registry import Registry
from .ir import Graph, Node

__all__ = ["Fusion", "Pattern", "PATTERNS", "fuse_patterns", "matches_constant"]


def matches_constant(value: float, target: float) -> bool:
    """value is ``target`` rounded to nearest in float64, float32, float16 or bfloat16."""
    from ..rounding import round_to

    return value == target or any(value == float(round_to(target, fmt)) for fmt in ("fp32", "fp16", "bf16"))


@dataclass(frozen=True)
class Fusion:
    """A matched pattern: its nodes, and the fused node's op, inputs, output and attributes."""

    nodes: tuple[Node, ...]
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Pattern:
    """A decomposed operator: the op type of the node its matcher starts from (``anchor``)
    and the matcher, ``match(view, node) -> Fusion | None``, which checks that every
    tensor the pattern computes on the way is read only by the pattern's next node."""

    name: str
    op: str
    anchor: str
    match: Callable = field(repr=False)


class GraphView:
    """Producers, consumers and constant values of a graph's tensors, for the matchers."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producers = graph.producers()
        self.consumers = {t: list({n.name: n for n in users}.values()) for t, users in graph.consumers().items()}
        self.outputs = set(graph.outputs)

    def producer(self, tensor: "str | None", *ops: str) -> "Node | None":
        node = self.producers.get(tensor) if tensor else None
        return node if node is not None and node.op in ops else None

    def sole_consumer(self, tensor: "str | None", *ops: str) -> "Node | None":
        """The one node that reads ``tensor``, when it is of one of ``ops`` and the tensor
        is not a graph output."""
        users = self.consumers.get(tensor, []) if tensor else []
        if len(users) != 1 or tensor in self.outputs or users[0].op not in ops:
            return None
        return users[0]

    def constant(self, tensor: "str | None") -> "np.ndarray | None":
        """The value of an initialiser or of a Constant node's output; None otherwise."""
        from .ops.shape import constant_value

        if not tensor:
            return None
        if tensor in self.graph.initializers:
            return self.graph.initializers[tensor]
        node = self.producer(tensor, "Constant")
        return None if node is None else constant_value(node)

    def float_constant(self, tensor: "str | None") -> bool:
        value = self.constant(tensor)
        return value is not None and value.dtype == np.float64

    def scalar(self, tensor: "str | None") -> "float | None":
        """The value of a one-element float constant (shape () or (1,))."""
        value = self.constant(tensor)
        if value is None or value.dtype != np.float64 or value.size != 1 or value.ndim > 1:
            return None
        return float(value.ravel()[0])

    def is_scalar(self, tensor: "str | None", target: float) -> bool:
        value = self.scalar(tensor)
        return value is not None and matches_constant(value, target)

    @staticmethod
    def other(node: "Node | None", tensor: str) -> "str | None":
        """The other operand of a binary node one of whose operands is ``tensor``."""
        if node is None or len(node.inputs) != 2:
            return None
        a, b = node.inputs
        return b if a == tensor else a if b == tensor else None


# ---- LayerNorm --------------------------------------------------------------------------

def _trailing_mean_axes(view: GraphView, node: Node) -> "tuple[int, ...] | None":
    """The axes of a ReduceMean that keeps its dims and reduces the trailing axes -k..-1."""
    if int(node.attr("keepdims", 1)) != 1 or int(node.attr("noop_with_empty_axes", 0)):
        return None
    axes = node.attr("axes")
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = view.constant(node.inputs[1])
        if axes is None or axes.dtype != np.int64:
            return None
    if axes is None:
        return None
    axes = tuple(sorted(int(a) for a in np.atleast_1d(axes)))
    return axes if axes and axes == tuple(range(-len(axes), 0)) else None


def _squares(view: GraphView, node: Node, d: str) -> bool:
    """node computes d^2: Pow(d, 2) or Mul(d, d)."""
    if node.op == "Pow":
        return node.inputs[0] == d and view.is_scalar(node.inputs[1], 2.0)
    return node.op == "Mul" and tuple(node.inputs) == (d, d)


def _layer_norm(view: GraphView, mean: Node) -> "Fusion | None":
    axes = _trailing_mean_axes(view, mean)
    if axes is None:
        return None
    x = mean.inputs[0]
    sub = view.sole_consumer(mean.outputs[0], "Sub")
    if sub is None or tuple(sub.inputs) != (x, mean.outputs[0]):
        return None
    d = sub.outputs[0]
    users = view.consumers.get(d, [])
    square = next((u for u in users if _squares(view, u, d)), None)
    div = next((u for u in users if u.op == "Div" and u.inputs[0] == d), None)
    if len(users) != 2 or square is None or div is None or d in view.outputs:
        return None
    var = view.sole_consumer(square.outputs[0], "ReduceMean")
    if var is None or _trailing_mean_axes(view, var) != axes:
        return None
    add = view.sole_consumer(var.outputs[0], "Add")
    eps = view.scalar(view.other(add, var.outputs[0]))
    if eps is None or not eps >= 0:
        return None
    sqrt = view.sole_consumer(add.outputs[0], "Sqrt")
    if sqrt is None or view.sole_consumer(sqrt.outputs[0], "Div") is not div or div.inputs[1] != sqrt.outputs[0]:
        return None
    nodes, out, affine = [mean, sub, square, var, add, sqrt, div], div.outputs[0], {}
    for op, role in (("Mul", "scale"), ("Add", "bias")):
        step = view.sole_consumer(out, op)
        if step is not None and view.float_constant(view.other(step, out)):
            affine[role] = view.other(step, out)
            nodes.append(step)
            out = step.outputs[0]
    scale, bias = affine.get("scale", ""), affine.get("bias", "")
    inputs = (x, scale, bias) if bias else (x, scale) if scale else (x,)
    return Fusion(tuple(nodes), "LayerNormalization", inputs, out, {"axis": axes[0], "epsilon": eps})


# ---- GELU -------------------------------------------------------------------------------

def _factors(view: GraphView, last: Node) -> tuple[list[str], list[Node]]:
    """The factors of a product of Muls ending at ``last``, expanding operands that are
    Muls read only by it (one level)."""
    leaves, nodes = [], [last]
    for t in last.inputs:
        inner = view.producer(t, "Mul")
        if inner is not None and view.sole_consumer(t, "Mul") is last and len(set(last.inputs)) == 2:
            leaves.extend(inner.inputs)
            nodes.append(inner)
        else:
            leaves.append(t)
    return leaves, nodes


def _erf_argument(view: GraphView, erf: Node, x: str) -> "list[Node] | None":
    """x / sqrt 2 (Div) or x * (1 / sqrt 2) (Mul), read only by ``erf``."""
    scaled = view.producer(erf.inputs[0], "Div", "Mul")
    if scaled is None or view.sole_consumer(scaled.outputs[0], "Erf") is not erf:
        return None
    if scaled.op == "Div":
        ok = scaled.inputs[0] == x and view.is_scalar(scaled.inputs[1], math.sqrt(2.0))
    else:
        ok = view.is_scalar(view.other(scaled, x), 1.0 / math.sqrt(2.0))
    return [scaled] if ok else None


def _cube(view: GraphView, tensor: str, x: str, reader: Node) -> "list[Node] | None":
    """x^3 as Pow(x, 3) or Mul(x, Mul(x, x)) (either order), read only by ``reader``."""
    node = view.producer(tensor, "Pow", "Mul")
    if node is None or view.sole_consumer(tensor, reader.op) is not reader:
        return None
    if node.op == "Pow":
        return [node] if node.inputs[0] == x and view.is_scalar(node.inputs[1], 3.0) else None
    square = view.producer(view.other(node, x), "Mul")
    if square is None or tuple(square.inputs) != (x, x) or view.sole_consumer(square.outputs[0], "Mul") is not node:
        return None
    return [square, node]


def _tanh_argument(view: GraphView, tanh: Node, x: str) -> "list[Node] | None":
    """sqrt(2/pi) * (x + 0.044715 * x^3), each step read only by the next."""
    outer = view.producer(tanh.inputs[0], "Mul")
    if outer is None or view.sole_consumer(outer.outputs[0], "Tanh") is not tanh:
        return None
    beta = next((t for t in outer.inputs if view.is_scalar(t, math.sqrt(2.0 / math.pi))), None)
    inner = view.producer(view.other(outer, beta), "Add")
    if beta is None or inner is None or view.sole_consumer(inner.outputs[0], "Mul") is not outer:
        return None
    scaled = view.producer(view.other(inner, x), "Mul")
    if scaled is None or view.sole_consumer(scaled.outputs[0], "Add") is not inner:
        return None
    kappa = next((t for t in scaled.inputs if view.is_scalar(t, 0.044715)), None)
    cube = _cube(view, view.other(scaled, kappa), x, scaled) if kappa is not None else None
    return None if cube is None else [outer, inner, scaled, *cube]


_GELU_FORMS = {"Erf": ("none", _erf_argument), "Tanh": ("tanh", _tanh_argument)}


def _gelu(view: GraphView, last: Node) -> "Fusion | None":
    leaves, products = _factors(view, last)
    if len(leaves) != 3:
        return None
    for k, half in enumerate(leaves):
        if not view.is_scalar(half, 0.5):
            continue
        rest = leaves[:k] + leaves[k + 1:]
        for one_plus, x in (rest, rest[::-1]):
            found = _gelu_tail(view, one_plus, x, products)
            if found is not None:
                approximate, nodes = found
                return Fusion(tuple(products + nodes), "Gelu", (x,), last.outputs[0], {"approximate": approximate})
    return None


def _gelu_tail(view: GraphView, one_plus: str, x: str, products: Sequence[Node]):
    """(approximate, nodes) when ``one_plus`` is 1 + Erf(x / sqrt 2) or 1 + Tanh(...)."""
    add = view.producer(one_plus, "Add")
    reader = view.sole_consumer(one_plus, "Mul")
    if add is None or reader is None or reader.name not in {p.name for p in products}:
        return None
    one = next((t for t in add.inputs if view.is_scalar(t, 1.0)), None)
    curve = view.producer(view.other(add, one), *_GELU_FORMS) if one is not None else None
    if curve is None or view.sole_consumer(curve.outputs[0], "Add") is not add:
        return None
    approximate, argument = _GELU_FORMS[curve.op]
    inner = argument(view, curve, x)
    return None if inner is None else (approximate, [add, curve, *inner])


# ---- SiLU -------------------------------------------------------------------------------

def _silu(view: GraphView, mul: Node) -> "Fusion | None":
    if len(mul.inputs) != 2:
        return None
    for x, gate in (mul.inputs, mul.inputs[::-1]):
        sigmoid = view.producer(gate, "Sigmoid")
        if sigmoid is not None and sigmoid.inputs[0] == x and view.sole_consumer(gate, "Mul") is mul:
            return Fusion((sigmoid, mul), "Silu", (x,), mul.outputs[0])
    return None


PATTERNS: Registry[Pattern] = Registry("fusion pattern")
for _p in (
    Pattern("layernorm", "LayerNormalization", "ReduceMean", _layer_norm),
    Pattern("gelu", "Gelu", "Mul", _gelu),
    Pattern("silu", "Silu", "Mul", _silu),
):
    PATTERNS.add(_p.name, _p)


# ---- the pass ---------------------------------------------------------------------------

def _fused_name(nodes: Sequence[Node], op: str, taken: set[str]) -> str:
    """The exporter-style name of a fused node (see the module docstring)."""
    scopes = [n.name.rsplit("/", 1)[0] if "/" in n.name else None for n in nodes]
    if None in scopes:
        base = nodes[0].name
    else:
        common = []
        for column in zip(*(s.split("/") for s in scopes)):
            if len(set(column)) != 1:
                break
            common.append(column[0])
        base = "/".join(common) + "/" + op
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def fuse_patterns(graph: Graph) -> Graph:
    """``graph`` with every recognised pattern replaced by its fused operator (the graph
    itself when none is found). Nodes are tried in topological order; a node belongs to
    one fusion at most."""
    view = GraphView(graph)
    claimed: set[str] = set()
    fusions: list[Fusion] = []
    for node in graph.nodes:
        if node.name in claimed:
            continue
        for pattern in PATTERNS.rows():
            found = pattern.match(view, node) if node.op == pattern.anchor else None
            names = {n.name for n in found.nodes} if found is not None else set()
            if found is not None and not names & claimed:
                fusions.append(found)
                claimed |= names
                break
    if not fusions:
        return graph
    position = {n.name: k for k, n in enumerate(graph.nodes)}
    placed = [(position[n.name], n) for n in graph.nodes if n.name not in claimed]
    taken = {n.name for _, n in placed}
    for fusion in fusions:
        ordered = sorted(fusion.nodes, key=lambda n: position[n.name])
        name = _fused_name(ordered, fusion.op, taken)
        taken.add(name)
        placed.append((position[ordered[-1].name], Node(name, fusion.op, fusion.inputs, (fusion.output,), fusion.attrs)))
    nodes = [n for _, n in sorted(placed, key=lambda item: item[0])]
    nodes, initializers = _without_freed_constants(graph, nodes, {t for f in fusions for n in f.nodes for t in n.inputs})
    return Graph(nodes, graph.inputs, graph.outputs, initializers, graph.name, graph.meta)


def _without_freed_constants(graph: Graph, nodes: list[Node], freed: set[str]):
    """Drop the initialisers and Constant nodes that only removed nodes read."""
    read = {t for n in nodes for t in n.inputs if t} | set(graph.outputs)
    unused = freed - read
    nodes = [n for n in nodes if not (n.op == "Constant" and n.outputs[0] in unused)]
    initializers = {k: v for k, v in graph.initializers.items() if k not in unused}
    return nodes, initializers
