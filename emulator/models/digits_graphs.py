"""The bundled graph models' architectures on the 8x8 digits (input ``x`` (N, 64), output
``logits`` (N, 10)): their shapes, and their graphs built with the IR from trained
weights (a mapping of PyTorch state-dict names to float64 arrays, which become the
initialisers of the same names, copied exactly).

Every matrix product is an accumulation site: linear layers are ``Gemm`` nodes (bias in
the sum) on 2-D operands, convolutions ``Conv`` nodes, attention's Q K^T and P V batched
``MatMul`` nodes; softmax denominators, layer-norm means and variances and the poolings
are sites of their own (docs/method.md#graphs). The PyTorch modules these weights come
from are in ``emulator.models.torch_nets`` (``module_for(shape)``), which only the
training script imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..graph.ir import FLOAT, Graph, Node, TensorInfo

__all__ = ["GraphBuilder", "CnnShape", "TransformerShape", "cnn_graph", "transformer_graph", "INPUT", "OUTPUT"]

INPUT, OUTPUT = "x", "logits"
SIDE = 8
"""The digits are SIDE x SIDE images, flattened row by row into 64 features."""


class GraphBuilder:
    """Nodes and initialisers, collected in order; each node writes one tensor named after
    the node (or ``output``)."""

    def __init__(self, state: Mapping[str, np.ndarray]):
        self.state = state
        self.nodes: list[Node] = []
        self.initializers: dict[str, np.ndarray] = {}

    def weight(self, name: str) -> str:
        """The trained tensor ``name`` as an initialiser of the same name, float64, exact."""
        self.initializers[name] = np.asarray(self.state[name], dtype=np.float64)
        return name

    def constant(self, name: str, value) -> str:
        """A constant (a shape, axes, a scale); one name holds one value."""
        value = np.asarray(value)
        if name in self.initializers and not np.array_equal(self.initializers[name], value):
            raise ValueError(f"constant {name!r} is given two values")
        self.initializers[name] = value
        return name

    def add(self, op: str, name: str, *inputs: str, output: str = "", **attrs) -> str:
        self.nodes.append(Node(name, op, inputs, (output or name,), attrs))
        return output or name

    def reshape(self, name: str, x: str, shape: tuple[int, ...]) -> str:
        target = self.constant(f"shape({','.join(map(str, shape))})", np.array(shape, np.int64))
        return self.add("Reshape", name, x, target)

    def gemm(self, name: str, x: str, output: str = "") -> str:
        """x W^T + b with the trained ``name.weight`` (out x in) and ``name.bias``."""
        return self.add("Gemm", name, x, self.weight(f"{name}.weight"), self.weight(f"{name}.bias"), output=output, transB=1)

    def graph(self, name: str, meta: "dict | None" = None) -> Graph:
        """The graph; every trained tensor must have become an initialiser."""
        unused = sorted(set(self.state) - set(self.initializers))
        if unused:
            raise ValueError(f"graph {name!r} leaves trained tensors unused: {', '.join(unused)}")
        return Graph(self.nodes, [TensorInfo(INPUT, FLOAT, (None, SIDE * SIDE))], [OUTPUT], self.initializers, name,
                     meta)


@dataclass(frozen=True)
class CnnShape:
    """Conv(channels[0], kernel, pad kernel // 2) + Relu + MaxPool(pool) + Conv(channels[1],
    kernel, no pad) + Relu + GlobalAveragePool + Gemm to ``classes`` logits."""

    channels: tuple[int, int] = (8, 16)
    kernel: int = 3
    pool: int = 2
    classes: int = 10

    @property
    def structure(self) -> str:
        (c1, c2), k, p = self.channels, self.kernel, self.pool
        return (f"x (N, 64) -> image (N, 1, 8, 8) -> conv1 {c1}@{k}x{k} pad {k // 2} -> relu1 -> pool1 max {p}x{p} -> "
                f"conv2 {c2}@{k}x{k} -> relu2 -> pool2 global average -> flatten -> classifier {c2} -> {self.classes}")

    def graph(self, state: Mapping[str, np.ndarray], name: str) -> Graph:
        return cnn_graph(state, self, name)


@dataclass(frozen=True)
class TransformerShape:
    """The 8 image rows as 8 tokens of 8 features: a linear embedding to ``d_model`` plus
    learned position embeddings, ``layers`` pre-norm encoder blocks (x + attention(norm1 x),
    then x + ffn(norm2 x); ``heads``-head self-attention, a GELU feed-forward of width
    ``ffn``), a final LayerNorm, the mean over the tokens and a Gemm to ``classes`` logits."""

    d_model: int = 32
    heads: int = 4
    ffn: int = 64
    layers: int = 2
    classes: int = 10
    epsilon: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def scale(self) -> float:
        """The attention scale 1 / sqrt(head_dim), a float64 constant."""
        return float(self.head_dim) ** -0.5

    @property
    def structure(self) -> str:
        return (f"x (N, 64) -> tokens (8 image rows of 8 pixels) -> embed 8 -> {self.d_model} + position -> "
                f"{self.layers} pre-norm encoder blocks (norm1 -> attention {self.heads} heads of {self.head_dim}, "
                f"softmax(Q K^T / sqrt({self.head_dim})) V -> residual1; norm2 -> ffn.fc1 {self.d_model} -> {self.ffn} "
                f"-> gelu -> ffn.fc2 -> residual2) -> norm -> pool mean over tokens -> classifier "
                f"{self.d_model} -> {self.classes}")

    def graph(self, state: Mapping[str, np.ndarray], name: str) -> Graph:
        return transformer_graph(state, self, name)


def cnn_graph(state: Mapping[str, np.ndarray], shape: CnnShape, name: str = "") -> Graph:
    """The CNN as a graph: image, conv1, relu1, pool1, conv2, relu2, pool2, flatten, classifier."""
    b = GraphBuilder(state)
    k, pad = shape.kernel, shape.kernel // 2
    h = b.reshape("image", INPUT, (-1, 1, SIDE, SIDE))
    h = b.add("Conv", "conv1", h, b.weight("conv1.weight"), b.weight("conv1.bias"), kernel_shape=(k, k),
              pads=(pad, pad, pad, pad))
    h = b.add("Relu", "relu1", h)
    h = b.add("MaxPool", "pool1", h, kernel_shape=(shape.pool, shape.pool), strides=(shape.pool, shape.pool))
    h = b.add("Conv", "conv2", h, b.weight("conv2.weight"), b.weight("conv2.bias"), kernel_shape=(k, k))
    h = b.add("Relu", "relu2", h)
    h = b.add("GlobalAveragePool", "pool2", h)
    h = b.add("Flatten", "flatten", h, axis=1)
    b.gemm("classifier", h, output=OUTPUT)
    return b.graph(name)


def transformer_graph(state: Mapping[str, np.ndarray], shape: TransformerShape, name: str = "") -> Graph:
    """The encoder as a graph. The residual stream is (N * 8, d_model), one row per token,
    so that every linear layer is a 2-D Gemm; attention reshapes it to (N, heads, 8,
    head_dim). Node names follow the modules: ``embed``, ``position``,
    ``block{i}.norm1``, ``block{i}.attention.{query,key,value}``,
    ``block{i}.attention.scores`` (Q K^T), ``.scale``, ``.softmax``, ``.context`` (P V),
    ``.output``, ``block{i}.residual1``, ``block{i}.norm2``, ``block{i}.ffn.{fc1,gelu,fc2}``,
    ``block{i}.residual2``, ``norm``, ``pool``, ``classifier``."""
    b = GraphBuilder(state)
    d, heads, hd = shape.d_model, shape.heads, shape.head_dim
    rows = b.reshape("tokens", INPUT, (-1, SIDE))
    h = b.reshape("embed.sequences", b.gemm("embed", rows), (-1, SIDE, d))
    h = b.add("Add", "position", h, b.weight("position.weight"))
    h = b.reshape("embed.rows", h, (-1, d))
    scale = b.constant("attention.scale", np.float64(shape.scale))
    for i in range(shape.layers):
        p = f"block{i}"
        x = b.add("LayerNormalization", f"{p}.norm1", h, b.weight(f"{p}.norm1.weight"), b.weight(f"{p}.norm1.bias"),
                  axis=-1, epsilon=shape.epsilon)
        q, k, v = (b.reshape(f"{p}.attention.{r}.heads", b.gemm(f"{p}.attention.{r}", x), (-1, SIDE, heads, hd))
                   for r in ("query", "key", "value"))
        q = b.add("Transpose", f"{p}.attention.query.transpose", q, perm=(0, 2, 1, 3))
        k = b.add("Transpose", f"{p}.attention.key.transpose", k, perm=(0, 2, 3, 1))
        v = b.add("Transpose", f"{p}.attention.value.transpose", v, perm=(0, 2, 1, 3))
        s = b.add("MatMul", f"{p}.attention.scores", q, k)
        s = b.add("Mul", f"{p}.attention.scale", s, scale)
        s = b.add("Softmax", f"{p}.attention.softmax", s, axis=-1)
        c = b.add("MatMul", f"{p}.attention.context", s, v)
        c = b.add("Transpose", f"{p}.attention.context.transpose", c, perm=(0, 2, 1, 3))
        c = b.reshape(f"{p}.attention.context.rows", c, (-1, d))
        h = b.add("Add", f"{p}.residual1", h, b.gemm(f"{p}.attention.output", c))
        x = b.add("LayerNormalization", f"{p}.norm2", h, b.weight(f"{p}.norm2.weight"), b.weight(f"{p}.norm2.bias"),
                  axis=-1, epsilon=shape.epsilon)
        f = b.add("Gelu", f"{p}.ffn.gelu", b.gemm(f"{p}.ffn.fc1", x))
        h = b.add("Add", f"{p}.residual2", h, b.gemm(f"{p}.ffn.fc2", f))
    h = b.add("LayerNormalization", "norm", h, b.weight("norm.weight"), b.weight("norm.bias"), axis=-1,
              epsilon=shape.epsilon)
    h = b.reshape("pool.sequences", h, (-1, SIDE, d))
    h = b.add("ReduceMean", "pool", h, b.constant("pool.axes", np.array([1], np.int64)), keepdims=0)
    b.gemm("classifier", h, output=OUTPUT)
    return b.graph(name)
