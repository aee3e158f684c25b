"""A chain of dense layers (``emulator.network.Network``) as a graph of operators: layer k
is a Gemm node ``layer{k}`` (W of shape (m, n), ``transB``; the bias in the sum) writing
the pre-activation ``y{k}``, then the activation's operator ``layer{k}.act`` writing
``z{k}`` (docs/method.md#graphs). The graph's input is ``x`` (batch, n), its output the
last ``z``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ModelFileError
from ..registry import Registry
from .ir import Graph, Node, TensorInfo

__all__ = ["network_to_graph", "ACTIVATION_OPS"]


@dataclass(frozen=True)
class ActivationOp:
    """The operator that computes an activation, and whether it takes the activation's
    parameter (``leaky_relu:a``, ``elu:a``) as the ``alpha`` attribute."""

    op: str
    attrs: dict = field(default_factory=dict)
    alpha: bool = False


ACTIVATION_OPS: Registry[ActivationOp] = Registry("activation operator")
for _name, _row in {
    "relu": ActivationOp("Relu"), "identity": ActivationOp("Identity"), "tanh": ActivationOp("Tanh"),
    "sigmoid": ActivationOp("Sigmoid"), "silu": ActivationOp("Silu"), "softplus": ActivationOp("Softplus"),
    "gelu": ActivationOp("Gelu"), "gelu_tanh": ActivationOp("Gelu", {"approximate": "tanh"}),
    "leaky_relu": ActivationOp("LeakyRelu", alpha=True), "elu": ActivationOp("Elu", alpha=True),
}.items():
    ACTIVATION_OPS.add(_name, _row)

_DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}


def _activation_node(name: str, k: int, src: str, dst: str) -> Node:
    base, _, arg = name.partition(":")
    if base not in ACTIVATION_OPS:
        raise ModelFileError(f"layer {k}: activation {name!r} has no graph operator "
                             f"({', '.join(ACTIVATION_OPS.names())} have).")
    row = ACTIVATION_OPS.get(base)
    attrs = dict(row.attrs)
    if row.alpha:
        attrs["alpha"] = float(arg) if arg else _DEFAULT_ALPHA[base]
    return Node(f"layer{k}.act", row.op, (src,), (dst,), attrs)


def network_to_graph(network) -> Graph:
    """The graph of ``network`` (``.layers`` with ``.weight`` (m, n), ``.bias`` (m,) or
    None, ``.activation``): Gemm and activation nodes per layer, same weights."""
    layers = list(network.layers)
    if not layers:
        raise ModelFileError("the network has no layers.")
    nodes, inits = [], {}
    src = "x"
    for k, layer in enumerate(layers):
        inits[f"layer{k}.weight"] = layer.weight
        inputs = [src, f"layer{k}.weight"]
        if layer.bias is not None:
            inits[f"layer{k}.bias"] = layer.bias
            inputs.append(f"layer{k}.bias")
        nodes.append(Node(f"layer{k}", "Gemm", tuple(inputs), (f"y{k}",), {"transB": 1}))
        nodes.append(_activation_node(layer.activation.name, k, f"y{k}", f"z{k}"))
        src = f"z{k}"
    n = int(layers[0].weight.shape[1])
    return Graph(nodes, [TensorInfo("x", "float", (None, n))], [src], inits, name=getattr(network, "name", ""),
                 meta=dict(getattr(network, "meta", None) or {}))
