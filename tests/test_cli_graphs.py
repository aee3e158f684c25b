"""The CLI on graphs: bad input (an unsupported operator, a missing data input, data of
the wrong shape, a token id beyond the vocabulary, NaN weights) exits with status 2 and
one line saying what and where, and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.graph import Graph, Node, TensorInfo
from emulator.graph.io import graph_to_arrays


def _unsupported(tmp):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Hardmax", ["x"], ["y"], name="probs")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    path = tmp / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    np.save(tmp / "d.npy", np.ones((2, 3)))
    return [str(path), "--data", str(tmp / "d.npy")]


def _two_inputs(tmp):
    graph = Graph([Node("add", "Add", ("x", "mask"), ("y",))],
                  [TensorInfo("x", "float", (None, 3)), TensorInfo("mask", "float", (None, 3))], ["y"], name="two")
    np.savez(tmp / "m.npz", **graph_to_arrays(graph))
    np.savez(tmp / "d.npz", mask=np.ones((2, 3)))
    return [str(tmp / "m.npz"), "--data", str(tmp / "d.npz")]


def _wrong_width(tmp):
    np.save(tmp / "d.npy", np.ones((4, 63)))
    return ["digits-cnn", "--data", str(tmp / "d.npy")]


def _nan_weights(tmp):
    arrays = graph_to_arrays(Graph([Node("fc", "Gemm", ("x", "W"), ("y",), {"transB": 1})],
                                   [TensorInfo("x", "float", (None, 2))], ["y"], {"W": np.ones((2, 2))}, "nan"))
    w = arrays["init/W"].copy()
    w[1, 0] = np.nan
    arrays["init/W"] = w
    np.savez(tmp / "m.npz", **arrays)
    np.save(tmp / "d.npy", np.ones((2, 2)))
    return [str(tmp / "m.npz"), "--data", str(tmp / "d.npy")]


def _token_beyond_vocabulary(tmp):
    from emulator import load_model
    from emulator.errors import MixaccError

    try:
        load_model("all-minilm-l6-v2")
    except MixaccError:
        pytest.skip("the minilm extra is not installed")
    ids = np.array([[101, 40000, 102]])
    np.savez(tmp / "d.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    return ["all-minilm-l6-v2", "--data", str(tmp / "d.npz")]


BAD = [  # (id, arguments builder, message fragment)
    ("unsupported op", _unsupported, "unsupported op 'Hardmax' (node 'probs')"),
    ("missing data input", _two_inputs, "needs the data input(s) x (given: mask)"),
    ("wrong width", _wrong_width, "has 63 features but the model takes 64 inputs"),
    ("NaN weights", _nan_weights, "initialiser 'W' contains NaN or Inf (1 entries, first at [1, 0])"),
    ("token id beyond the vocabulary", _token_beyond_vocabulary, "index 40000 is outside axis 0 of size 30522"),
]


@pytest.mark.parametrize("build, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_graph_input_is_one_line_status_2_and_writes_nothing(tmp_path, run_cli, build, fragment):
    args = build(tmp_path)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("emulate", *args, "--acc", "fp16", "--json", out / "e.json", "--save-outputs",
                                   out / "o.npz", timeout=300)
    assert code == 2, (stdout, stderr)
    assert fragment in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists()
