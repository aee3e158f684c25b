"""Benchmark section 'graphs': the exact pass of a MiniLM-shaped transformer encoder.

The graph is a faithful random stand-in for all-MiniLM-L6-v2 as an ONNX export writes
it: word, position and token-type embeddings and a LayerNorm; 6 layers of self-attention
(MatMul + Add projections, 12 heads, scores scaled by 1/sqrt(32), the additive mask
(1 - mask) * -10000, Softmax, P V), residual Adds and LayerNorms, a 1536-wide FFN with
GELU in its exported erf form (Div, Erf, Add, Mul, Mul); mean pooling over the mask (Mul,
ReduceSum, Clip, Div). 16 sentences of 16 to 128 tokens (padded to 128). The exact pass
(``acc="exact"``, the fast path) is timed against the float64 native pass on the same
graph and data, with its peak traced memory; the target is 60 s on 2 cores and at most
2 GiB for the batch of 16.
"""

from __future__ import annotations

import math
import time
import tracemalloc

import numpy as np

from emulator.graph import Graph, Node, TensorInfo, forward
from emulator.graph.exact import exact_values

from . import Measurement, time_call

TITLE = "graphs"
SHAPE = dict(layers=6, hidden=384, heads=12, ffn=1536, vocab=30522, tokens=128, sentences=16)
QUICK_SHAPE = dict(layers=2, hidden=384, heads=12, ffn=1536, vocab=30522, tokens=64, sentences=4)
TARGET_SECONDS = 60.0
TARGET_BYTES = 2 * 2**30


class _Builder:
    """Nodes and initialisers of a graph, with generated unique names."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[Node] = []
        self.inits: dict[str, np.ndarray] = {}

    def const(self, name: str, value) -> str:
        self.inits[name] = np.asarray(value)
        return name

    def weight(self, name: str, shape, scale: float) -> str:
        return self.const(name, self.rng.standard_normal(shape) * scale)

    def node(self, op: str, inputs, name: str, **attrs) -> str:
        self.nodes.append(Node(name, op, tuple(inputs), (name,), attrs))
        return name

    def linear(self, x: str, n: int, m: int, name: str) -> str:
        w = self.weight(f"{name}.weight", (n, m), 1.0 / math.sqrt(n))
        b = self.weight(f"{name}.bias", (m,), 0.02)
        return self.node("Add", [self.node("MatMul", [x, w], f"{name}/MatMul"), b], f"{name}/Add")

    def layer_norm(self, x: str, width: int, name: str) -> str:
        scale = self.const(f"{name}.weight", 1.0 + 0.1 * self.rng.standard_normal(width))
        bias = self.weight(f"{name}.bias", (width,), 0.02)
        return self.node("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=1e-12)


def minilm_graph(layers: int = 6, hidden: int = 384, heads: int = 12, ffn: int = 1536, vocab: int = 30522,
                 tokens: int = 128, seed: int = 0) -> Graph:
    """The MiniLM-shaped encoder (see the module docstring); inputs ``input_ids`` and
    ``attention_mask`` (int, (batch, tokens)), output ``sentence_embedding`` (batch, hidden)."""
    g = _Builder(np.random.default_rng(seed))
    d = hidden // heads
    words = g.node("Gather", [g.weight("embeddings.word", (vocab, hidden), 1.0), "input_ids"], "emb/words", axis=0)
    positions = g.node("Gather", [g.weight("embeddings.position", (tokens, hidden), 0.1),
                                  g.const("position_ids", np.arange(tokens))], "emb/positions", axis=0)
    x = g.node("Add", [g.node("Add", [words, positions], "emb/add"), g.weight("embeddings.type", (hidden,), 0.1)],
               "emb/add_type")
    x = g.layer_norm(x, hidden, "emb/LayerNorm")
    mask = g.node("Cast", ["attention_mask"], "mask/cast", to=1)
    additive = g.node("Mul", [g.node("Sub", [g.const("one", 1.0), mask], "mask/sub"), g.const("big", -10000.0)],
                      "mask/mul")
    additive = g.node("Unsqueeze", [additive, g.const("mask_axes", np.array([1, 2]))], "mask/unsqueeze")
    split = g.const("split_shape", np.array([0, 0, heads, d]))
    merged = g.const("merged_shape", np.array([0, 0, hidden]))
    for k in range(layers):
        p = f"layer{k}"

        def head(name, perm, src=x, p=p):
            t = g.node("Reshape", [g.linear(src, hidden, hidden, f"{p}/{name}"), split], f"{p}/{name}/reshape")
            return g.node("Transpose", [t], f"{p}/{name}/transpose", perm=perm)

        q, kt, v = head("query", (0, 2, 1, 3)), head("key", (0, 2, 3, 1)), head("value", (0, 2, 1, 3))
        scores = g.node("Div", [g.node("MatMul", [q, kt], f"{p}/scores"), g.const(f"{p}/scale", math.sqrt(d))],
                        f"{p}/scores/div")
        probs = g.node("Softmax", [g.node("Add", [scores, additive], f"{p}/scores/mask")], f"{p}/softmax", axis=-1)
        context = g.node("Transpose", [g.node("MatMul", [probs, v], f"{p}/context")], f"{p}/context/transpose",
                         perm=(0, 2, 1, 3))
        context = g.node("Reshape", [context, merged], f"{p}/context/reshape")
        x = g.layer_norm(g.node("Add", [g.linear(context, hidden, hidden, f"{p}/attention.output"), x],
                                f"{p}/attention/residual"), hidden, f"{p}/attention/LayerNorm")
        h = g.linear(x, hidden, ffn, f"{p}/intermediate")
        erf = g.node("Erf", [g.node("Div", [h, g.const(f"{p}/sqrt2", math.sqrt(2.0))], f"{p}/gelu/div")],
                     f"{p}/gelu/erf")
        gelu = g.node("Mul", [g.node("Mul", [h, g.node("Add", [erf, g.const(f"{p}/one", 1.0)], f"{p}/gelu/add")],
                                     f"{p}/gelu/mul"), g.const(f"{p}/half", 0.5)], f"{p}/gelu/half")
        x = g.layer_norm(g.node("Add", [g.linear(gelu, ffn, hidden, f"{p}/output"), x], f"{p}/output/residual"),
                         hidden, f"{p}/output/LayerNorm")
    weights = g.node("Unsqueeze", [mask, g.const("pool_axes", np.array([2]))], "pool/unsqueeze")
    total = g.node("ReduceSum", [g.node("Mul", [x, weights], "pool/mul"), g.const("token_axis", np.array([1]))],
                   "pool/sum", keepdims=0)
    count = g.node("Clip", [g.node("ReduceSum", [weights, g.const("token_axis2", np.array([1]))], "pool/count",
                                   keepdims=0), g.const("tiny", 1e-9)], "pool/clip")
    g.node("Div", [total, count], "sentence_embedding")
    inputs = [TensorInfo("input_ids", "int", (None, tokens)), TensorInfo("attention_mask", "int", (None, tokens))]
    return Graph(g.nodes, inputs, ["sentence_embedding"], g.inits, name="minilm-shaped")


def minilm_feeds(sentences: int = 16, tokens: int = 128, vocab: int = 30522, seed: int = 1) -> dict[str, np.ndarray]:
    """Token ids and a mask of sentences of 16 to ``tokens`` tokens (one of full length)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min(16, tokens), tokens + 1, sentences)
    lengths[0] = tokens
    mask = (np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(1, vocab, (sentences, tokens)), 0)
    return {"input_ids": ids, "attention_mask": mask}


def _exact_pass(graph: Graph, feeds, keep) -> tuple[float, int, dict]:
    """(seconds, peak traced bytes, exact values of the output and of ``keep``) of one
    exact pass."""
    tracemalloc.start()
    t0 = time.perf_counter()
    run = forward(graph, feeds, acc="exact", keep=keep)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak, exact_values(run)


def _median_relative_radius(value) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.median(value.radius / np.abs(value.value)))


def run(quick: bool) -> list[Measurement]:
    shape = QUICK_SHAPE if quick else SHAPE
    graph = minilm_graph(**{k: shape[k] for k in ("layers", "hidden", "heads", "ffn", "vocab", "tokens")})
    feeds = minilm_feeds(shape["sentences"], shape["tokens"], shape["vocab"])
    native = time_call(lambda: forward(graph, feeds), repeat=2)
    forward(graph, {k: v[:1] for k, v in feeds.items()}, acc="exact")  # compiles / loads the kernels
    layers = [f"layer{k}/output/LayerNorm" for k in range(shape["layers"])]
    seconds, peak, values = _exact_pass(graph, feeds, layers)
    radii = ", ".join(f"{_median_relative_radius(values[name]):.0e}" for name in layers)
    case = (f"exact pass, MiniLM-shaped {shape['layers']} layers x {shape['hidden']}, {shape['sentences']} x "
            f"{shape['tokens']} tokens (median radius / |value| after each layer: {radii})")
    headline = not quick
    return [
        Measurement(TITLE, case, seconds, "s", {"float64 native pass": native},
                    f"< {TARGET_SECONDS:g} s on 2 cores", seconds < TARGET_SECONDS if headline else None),
        Measurement(TITLE, f"{case}, peak traced memory", peak / 2**20, "MiB", {},
                    f"<= {TARGET_BYTES / 2**30:g} GiB", peak <= TARGET_BYTES if headline else None),
    ]
