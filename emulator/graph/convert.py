"""An MLP (``emulator.network.Network``) as a graph: layer k is a Gemm node ``layer{k}``
(the accumulation site, weights (m, n) shared, bias in the sum) reading ``layer{k-1}.out``
(``x`` for k = 0) and writing ``layer{k}.pre``, then an ``Activation`` node
``layer{k}.act`` writing ``layer{k}.out``."""

from __future__ import annotations

from .ir import Graph, Node, TensorInfo

__all__ = ["network_to_graph", "layer_tensors"]


def layer_tensors(k: int) -> tuple[str, str]:
    """(pre-activation, output) tensor names of layer k."""
    return f"layer{k}.pre", f"layer{k}.out"


def network_to_graph(network) -> Graph:
    """The graph of an MLP: Gemm + Activation per layer (see the module docstring)."""
    nodes, inits = [], {}
    previous = "x"
    for k, layer in enumerate(network.layers):
        pre, out = layer_tensors(k)
        inputs = [previous, f"layer{k}.weight"]
        inits[f"layer{k}.weight"] = layer.weight
        if layer.bias is not None:
            inputs.append(f"layer{k}.bias")
            inits[f"layer{k}.bias"] = layer.bias
        nodes.append(Node(f"layer{k}", "Gemm", tuple(inputs), (pre,), {"transB": 1}))
        nodes.append(Node(f"layer{k}.act", "Activation", (pre,), (out,), {"name": layer.activation.name}))
        previous = out
    return Graph(nodes, [TensorInfo("x", "float", (None, network.n_inputs))], [previous], inits, network.name,
                 dict(network.meta))
