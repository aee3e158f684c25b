"""Adversarial inputs at the accumulation sites of graphs: a convolution and the two
attention products (Q K^T and P V) are fed operands with mixed exponents whose products
are the stagnating sums of tests/adversarial.py (a leading 1 and terms just below half an
ulp of it, laid out for the summation order), so every addition of the emulated sum
rounds the same way. The validation of the graph must then find, at that site, a
component whose measured error is within a stated factor of its local bound (and never
above it: 0 violations)."""

from __future__ import annotations

import numpy as np
import pytest

from adversarial import stagnation
from analysis.graph_validation import validate_graph
from emulator.graph import Graph, Node, TensorInfo, forward

RNG = np.random.default_rng(20)

# (spec, sum length n, factor): the local bound is at most `factor` times the measured error
# (measured: 1.08, 1.05, 1.68, 1.48, 3.46 and 1.82, the same at the three sites; fp8 sums of
# 16 terms are where the constant (1 + u)^k - 1 of k roundings is far above k u: vacuous, c >= 1)
CASES = [("fp16", 64, 1.1), ("bf16:pairwise", 64, 1.1), ("fp16:blocked:32", 256, 1.7),
         ("bf16:products=bf16", 64, 1.5), ("fp8-e4m3fn", 16, 3.5), ("fp8-e5m2:pairwise", 16, 1.9)]


def _mixed_exponents(n: int) -> np.ndarray:
    """Weights 2^e, e in [-4, 4]: dividing by them leaves every product unchanged."""
    return 2.0 ** RNG.integers(-4, 5, size=n)


def _closest(result, site: str) -> float:
    summary = next(s for s in result.sites if s.name == site).local
    assert summary.violations == 0
    return summary.closest["measured_over_bound"]


@pytest.mark.parametrize("spec, n, factor", CASES)
def test_adversarial_convolution(spec, n, factor):
    channels = n // 16
    x, _ = stagnation(spec, n)
    weights = RNG.standard_normal((2, channels, 4, 4))
    weights[0] = _mixed_exponents(n).reshape(channels, 4, 4)
    data = RNG.standard_normal((2, channels, 6, 6)) / 8
    data[0, :, :4, :4] = x.reshape(channels, 4, 4) / weights[0]  # the window of output (0, 0): im2col order
    g = Graph([Node("conv", "Conv", ("x", "W"), ("y",))], [TensorInfo("x", "float", (None, channels, 6, 6))], ["y"],
              {"W": weights}, "conv")
    ratio = _closest(validate_graph(g, {"x": data}, spec), "conv")
    assert 1 / factor <= ratio <= 1, (spec, ratio)


def _attention(heads: int, tokens: int, width: int) -> Graph:
    nodes = [Node("keys", "Transpose", ("k",), ("kt",), {"perm": (0, 1, 3, 2)}),
             Node("scores", "MatMul", ("q", "kt"), ("s",)),
             Node("softmax", "Softmax", ("s",), ("p",), {"axis": -1}),
             Node("context", "MatMul", ("p", "v"), ("out",))]
    shape = (None, heads, tokens, width)
    return Graph(nodes, [TensorInfo(name, "float", shape) for name in ("q", "k", "v")], ["out"], {}, "attention")


@pytest.mark.parametrize("spec, n, factor", CASES)
def test_adversarial_attention_scores(spec, n, factor):
    # Q K^T at (sample 0, head 1, query 2, key 3): q . k = the stagnating sum over the head width n
    x, _ = stagnation(spec, n)
    q, k, v = (RNG.standard_normal((2, 2, 8, n)) / 8 for _ in range(3))
    k[0, 1, 3] = _mixed_exponents(n)
    q[0, 1, 2] = x / k[0, 1, 3]
    ratio = _closest(validate_graph(_attention(2, 8, n), {"q": q, "k": k, "v": v}, spec), "scores")
    assert 1 / factor <= ratio <= 1, (spec, ratio)


@pytest.mark.parametrize("spec, n, factor", CASES)
def test_adversarial_attention_context(spec, n, factor):
    # P V at (sample 1, head 0, query 5, channel 2), summed over the n keys: the emulated pass's
    # probabilities p (a softmax of emulated scores, so mixed exponents) times v = target / p
    x, _ = stagnation(spec, n)
    q, k, v = (RNG.standard_normal((2, 2, n, 16)) / 2 for _ in range(3))
    g = _attention(2, n, 16)
    p = forward(g, {"q": q, "k": k, "v": v}, spec, keep=["p"]).values["p"][1, 0, 5]
    assert np.ptp(np.floor(np.log2(p))) >= 2
    v[1, 0, :, 2] = x / p
    ratio = _closest(validate_graph(g, {"q": q, "k": k, "v": v}, spec), "context")
    assert 1 / factor <= ratio <= 1, (spec, ratio)
