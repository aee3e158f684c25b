"""The bundled graph models (digits-cnn, digits-transformer): they load and run without
torch, reproduce their cards' accuracies with the float64 graph forward pass, compute what
their PyTorch modules compute, run under emulated accumulation, and the training script
rebuilds them up to what the CPU's kernels leave open."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emulator.data import load_data
from emulator.graph import Graph, forward
from emulator.metrics import predicted_class
from emulator.modelio import bundled_models, load_model
from emulator.models.cards import data_sha256, weights_sha256
from emulator.rounding import round_to

REPO = Path(__file__).resolve().parents[1]
GRAPHS = ("digits-cnn", "digits-transformer")


@pytest.fixture(scope="module")
def test_set():
    return load_data("digits", "test")


def _logits(graph: Graph, data, acc=None):
    return forward(graph, data.feeds([t.name for t in graph.inputs]), acc=acc).outputs["logits"]


def _accuracy(logits, labels) -> float:
    return float(np.mean(predicted_class(logits) == labels))


def test_bundled_graphs_load_and_run_without_torch():
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is blocked')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from emulator import load_model, load_data\n"
        "from emulator.graph import Graph, forward\n"
        "x = load_data('digits').x[:5]\n"
        "for name in %r:\n"
        "    g = load_model(name)\n"
        "    assert isinstance(g, Graph) and g.name == name\n"
        "    assert forward(g, {'x': x}).outputs['logits'].shape == (5, 10)\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n" % (GRAPHS,)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("name", GRAPHS)
def test_float64_forward_reproduces_the_card(name, test_set):
    graph, card = load_model(name), bundled_models()[name]
    assert isinstance(graph, Graph) and graph.meta["test_accuracy"] == card["test_accuracy"]
    assert weights_sha256(graph) == card["weights_sha256"]
    assert data_sha256(test_set.x) == card["test_data_sha256"] and len(test_set) == card["test_size"]
    assert _accuracy(_logits(graph, test_set), test_set.y) == card["test_accuracy"]
    train_set = load_data("digits", "train")
    assert _accuracy(_logits(graph, train_set), train_set.y) == card["train_accuracy"]
    assert card["test_accuracy"] >= {"digits-cnn": 0.95, "digits-transformer": 0.93}[name]
    assert graph.n_params == card["n_params"] and graph.operators == card["operators"]
    assert graph.architecture == card["architecture"] and len(graph.site_names) == card["accumulation_sites"]


def test_node_and_site_names_follow_the_modules():
    cnn, transformer = load_model("digits-cnn"), load_model("digits-transformer")
    assert [n.name for n in cnn] == ["image", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten",
                                     "classifier"]
    assert cnn.site_names == ["conv1", "conv2", "pool2", "classifier"]
    assert cnn.node("conv1").attrs["pads"] == (1, 1, 1, 1) and cnn.node("pool2").op == "GlobalAveragePool"
    ops = {n.name: n.op for n in transformer}
    for block in ("block0", "block1"):
        assert {ops[f"{block}.attention.{r}"] for r in ("query", "key", "value", "output")} == {"Gemm"}
        assert ops[f"{block}.attention.scores"] == ops[f"{block}.attention.context"] == "MatMul"
        assert ops[f"{block}.attention.softmax"] == "Softmax" and ops[f"{block}.ffn.gelu"] == "Gelu"
        assert ops[f"{block}.ffn.fc1"] == ops[f"{block}.ffn.fc2"] == "Gemm"
        assert ops[f"{block}.norm1"] == ops[f"{block}.norm2"] == "LayerNormalization"
        assert {f"{block}.attention.softmax.sum", f"{block}.norm1.mean", f"{block}.norm1.var",
                f"{block}.attention.scores"} <= set(transformer.site_names)
    assert transformer.initializers["block0.attention.query.weight"].shape == (32, 32)
    assert transformer.initializers["block1.ffn.fc1.weight"].shape == (64, 32)
    assert ops["pool"] == "ReduceMean" and ops["classifier"] == "Gemm" and transformer.outputs == ("logits",)


@pytest.mark.parametrize("name", GRAPHS)
def test_weights_are_float32_values(name):
    """The float64 initialisers are the released float32 weights, copied exactly."""
    graph = load_model(name)
    for key, value in graph.initializers.items():
        if value.dtype == np.float64 and key != "attention.scale":
            np.testing.assert_array_equal(value.astype(np.float32).astype(np.float64), value, err_msg=key)


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_computes_what_the_torch_module_computes(name, test_set):
    """The module of the recipe's shape, loaded with the graph's weights (strictly: every
    parameter named as an initialiser), agrees with the graph in float64 to 1e-10 of the
    largest logit of each sample, and predicts the same classes."""
    torch = pytest.importorskip("torch")
    from emulator.models.train import RECIPES

    graph = load_model(name)
    module = RECIPES.get(name).module().double()
    names = set(module.state_dict())
    module.load_state_dict({k: torch.from_numpy(np.array(graph.initializers[k])) for k in names}, strict=True)
    assert set(graph.initializers) - names <= {"attention.scale", "pool.axes"} | {
        k for k in graph.initializers if k.startswith("shape(")}
    module.eval()
    with torch.no_grad():
        want = module(torch.from_numpy(test_set.x)).numpy()
    got = _logits(graph, test_set)
    scale = np.max(np.abs(want), axis=1, keepdims=True)
    assert np.max(np.abs(got - want) / scale) <= 1e-10
    np.testing.assert_array_equal(predicted_class(got), predicted_class(want))


@pytest.mark.parametrize("name", GRAPHS)
@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8-e4m3fn"])
def test_emulated_accumulation_runs(name, fmt, test_set):
    """Every site accumulated in ``fmt``: the logits (the classifier's sums) are values of
    ``fmt``; fp16 classifies as float64 does, up to a few flips."""
    graph = load_model(name)
    logits = _logits(graph, test_set, acc=fmt)
    assert logits.shape == (len(test_set), 10) and np.all(np.isfinite(logits))
    np.testing.assert_array_equal(round_to(logits, fmt), logits)
    reference = _logits(graph, test_set)
    assert not np.array_equal(logits, reference)
    accuracy, flips = _accuracy(logits, test_set.y), np.mean(predicted_class(logits) != predicted_class(reference))
    if fmt == "fp16":
        assert abs(accuracy - bundled_models()[name]["test_accuracy"]) <= 0.01 and flips <= 0.01
    else:
        assert accuracy >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("name", GRAPHS)
def test_training_script_rebuilds_a_graph_model(name, tmp_path):
    """Retraining gives the bundled weights up to the CPU's kernels (float64 training:
    about 1e-9 relative between AVX2 and AVX-512, which the final rounding to float32 may
    turn into one float32 ulp), so weights are compared to 1e-5 of each tensor's scale,
    accuracies to one sample, and the card's recipe facts exactly."""
    pytest.importorskip("torch")
    from emulator.models.train import main

    assert main(["--only", name, "--out", str(tmp_path)]) == 0
    rebuilt, bundled = load_model(tmp_path / f"{name}.npz"), load_model(name)
    assert [(n.name, n.op, n.inputs, dict(n.attrs)) for n in rebuilt] == \
        [(n.name, n.op, n.inputs, dict(n.attrs)) for n in bundled]
    assert set(rebuilt.initializers) == set(bundled.initializers)
    for key, want in bundled.initializers.items():
        got = rebuilt.initializers[key]
        if want.dtype == np.float64:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.max(np.abs(want)), err_msg=key)
        else:
            np.testing.assert_array_equal(got, want, err_msg=key)
    index = json.loads((tmp_path / "index.json").read_text())
    assert list(index) == [name]
    card, recorded = index[name], bundled_models()[name]
    same = ("architecture", "structure", "operators", "accumulation_sites", "n_params", "default_data", "train_size",
            "test_size", "test_data_sha256", "trainer", "epochs_run", "seed", "rebuild")
    assert {k: card[k] for k in same} == {k: recorded[k] for k in same}
    assert abs(card["test_accuracy"] - recorded["test_accuracy"]) <= 1 / card["test_size"] + 1e-12
    assert abs(card["train_accuracy"] - recorded["train_accuracy"]) <= 1 / card["train_size"] + 1e-12
    assert card["torch_agreement"]["max_relative_difference"] <= 1e-10
    assert (tmp_path / f"{name}.md").read_text().startswith(f"# {name}\n")
