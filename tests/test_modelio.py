"""Model files and importers: round trips, agreement between scikit-learn, PyTorch, ONNX,
skops and the native files, refusal of bad or pickle-bearing files (never executed), and
the bundled models (their recorded accuracy and deterministic rebuild)."""

from __future__ import annotations

import json
import pickle
import tomllib
from pathlib import Path

import numpy as np
import pytest

from emulator.data import load_data
from emulator.errors import DataError, ModelFileError, ShapeError, UnknownNameError
from emulator.modelio import BUNDLED_DIR, bundled_models, from_sklearn, load_model, save_model
from emulator.network import Layer, Network

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ("digits-relu", "digits-tanh", "mnist1d-relu", "mnist1d-tanh", "paper-mlp", "paper-mlp-mnist")
BUNDLED_GRAPHS = ("digits-cnn", "digits-transformer")


def toy_network() -> Network:
    rng = np.random.default_rng(11)
    layers = [
        Layer(rng.standard_normal((5, 4)), rng.standard_normal(5), "leaky_relu:0.2"),
        Layer(rng.standard_normal((3, 5)), None, "tanh"),
        Layer(rng.standard_normal((2, 3)), rng.standard_normal(2), "sympy:y*tanh(y)"),
    ]
    return Network(layers, "toy", {"default_data": "random:8", "classes": [3, 7], "note": "é"})


def assert_same_network(a: Network, b: Network, meta: bool = True) -> None:
    assert len(a) == len(b)
    for la, lb in zip(a.layers, b.layers):
        assert la.weight.dtype == lb.weight.dtype == np.float64
        np.testing.assert_array_equal(la.weight, lb.weight)
        assert (la.bias is None) == (lb.bias is None)
        if la.bias is not None:
            np.testing.assert_array_equal(la.bias, lb.bias)
        assert la.activation.name == lb.activation.name
    if meta:
        assert a.meta == b.meta and a.name == b.name


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_round_trip_native_formats(tmp_path, suffix):
    net = toy_network()
    path = save_model(net, tmp_path / f"m{suffix}")
    back = load_model(path)
    assert_same_network(net, back)
    x = np.random.default_rng(0).standard_normal((4, 4))
    np.testing.assert_array_equal(net.forward(x), back.forward(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m{suffix}"]  # no temporary left behind


def test_save_replaces_atomically_and_refuses_other_suffixes(tmp_path):
    path = tmp_path / "m.npz"
    save_model(toy_network(), path)
    small = Network([Layer(np.eye(2), None, "relu")], "small")
    save_model(small, path)
    assert_same_network(load_model(path), small)
    with pytest.raises(ModelFileError, match=r"Cannot save to '.onnx' files. Possible values are: .npz, .safetensors"):
        save_model(small, tmp_path / "m.onnx")


def test_name_defaults_to_file_stem(tmp_path):
    net = Network([Layer(np.eye(2), None, "relu")])
    assert load_model(save_model(net, tmp_path / "plain.npz")).name == "plain"
    assert load_model(tmp_path / "plain.npz", name="other").name == "other"


# ---- bad files ---------------------------------------------------------------------

class _Touch:
    """Unpickling this creates the marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _savez(path: Path, **arrays) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _layer_file(tmp, **overrides) -> Path:
    arrays = {"layer0.weight": np.ones((3, 2)), "layer0.bias": np.zeros(3), "layer0.activation": np.array("relu"),
              "layer1.weight": np.ones((2, 3)), "layer1.activation": np.array("identity")}
    arrays.update(overrides)
    return _savez(tmp / "m.npz", **{k: v for k, v in arrays.items() if v is not None})


def _truncated(tmp, suffix: str) -> Path:
    path = save_model(toy_network(), tmp / f"t{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _pickle_file(tmp, name: str) -> Path:
    path = tmp / name
    path.write_bytes(pickle.dumps(_Touch(tmp / "EXECUTED")))
    return path


def _object_npz(tmp) -> Path:
    return _savez(tmp / "obj.npz", **{"layer0.weight": np.array([_Touch(tmp / "EXECUTED")], dtype=object)})


def _torch_module_file(tmp) -> Path:
    torch = pytest.importorskip("torch")
    path = tmp / "whole.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path)
    return path


def _torch_malicious(tmp) -> Path:
    torch = pytest.importorskip("torch")
    path = tmp / "evil.pt"
    torch.save({"0.weight": torch.ones(2, 2), "x": _Touch(tmp / "EXECUTED")}, path)
    return path


def _torch_state_dict(tmp) -> Path:
    torch = pytest.importorskip("torch")
    path = tmp / "sd.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)).state_dict(), path)
    return path


def _torch_conv_state_dict(tmp) -> Path:
    torch = pytest.importorskip("torch")
    path = tmp / "bn.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)).state_dict(), path)
    return path


def _onnx_graph(tmp, nodes, initializers, name="g.onnx", out="y") -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 2])],
        [helper.make_tensor_value_info(out, TensorProto.DOUBLE, [None, None])],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float64), k) for k, v in initializers.items()],
    )
    path = tmp / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


def _onnx_hardmax(tmp) -> Path:
    pytest.importorskip("onnx")
    from onnx import helper

    return _onnx_graph(tmp, [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1, name="fc"),
                             helper.make_node("Hardmax", ["h"], ["y"], name="probs")],
                       {"W": np.ones((3, 2)), "b": np.zeros(3)})


def _onnx_bad_bias(tmp) -> Path:
    pytest.importorskip("onnx")
    from onnx import helper

    return _onnx_graph(tmp, [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
                       {"W": np.ones((2, 3)), "b": np.zeros(4)})


def _onnx_nan(tmp) -> Path:
    pytest.importorskip("onnx")
    from onnx import helper

    return _onnx_graph(tmp, [helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], {"W": [[1.0, np.nan]]})


def _onnx_garbage(tmp) -> Path:
    pytest.importorskip("onnx")
    path = tmp / "bad.onnx"
    path.write_bytes(b"\x08\x07\x12\xff\xff\xff\xff this is not protobuf")
    return path


def _onnx_truncated(tmp) -> Path:
    pytest.importorskip("onnx")
    from onnx import helper

    path = _onnx_graph(tmp, [helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)],
                       {"W": np.ones((3, 2)), "b": np.zeros(3)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    return path


def _skops_other(tmp) -> Path:
    sio = pytest.importorskip("skops.io")
    from sklearn.linear_model import LinearRegression

    path = tmp / "lr.skops"
    sio.dump(LinearRegression().fit(np.eye(3), np.arange(3.0)), path)
    return path


BAD_FILES = [
    ("missing file", lambda t: t / "absent.npz", ModelFileError, "does not exist"),
    ("unknown name", lambda t: "no-such-model", ModelFileError, "Unknown model 'no-such-model'"),
    ("directory", lambda t: t, ModelFileError, "is a directory"),
    ("unknown suffix", lambda t: (t / "m.h5").write_bytes(b"x") and t / "m.h5", UnknownNameError,
     "Unknown model file type '.h5'. Possible values are: .npz"),
    ("truncated npz", lambda t: _truncated(t, ".npz"), ModelFileError, "corrupt or truncated npz"),
    ("garbage npz", lambda t: (t / "g.npz").write_bytes(b"hello, world") and t / "g.npz", ModelFileError,
     "not an npz archive"),
    ("truncated safetensors", lambda t: _truncated(t, ".safetensors"), ModelFileError, "corrupt or truncated safetensors"),
    ("missing weight", lambda t: _layer_file(t, **{"layer1.weight": None}), ModelFileError, "missing layer1.weight"),
    ("missing activation", lambda t: _layer_file(t, **{"layer0.activation": None}), ModelFileError,
     "missing layer0.activation"),
    ("unexpected key", lambda t: _layer_file(t, **{"layer0.wieght": np.ones(1)}), ModelFileError,
     "unexpected key 'layer0.wieght'"),
    ("bias length", lambda t: _layer_file(t, **{"layer0.bias": np.zeros(4)}), ShapeError,
     "m.npz: layer0.bias has length 4, but the weight has 3 rows"),
    ("shapes do not chain", lambda t: _layer_file(t, **{"layer1.weight": np.ones((2, 4))}), ShapeError,
     "layer1.weight takes 4 inputs but layer0 gives 3 outputs (shapes do not chain)"),
    ("NaN weight", lambda t: _layer_file(t, **{"layer1.weight": np.array([[1, 2, np.nan]] * 2)}), DataError,
     "layer1.weight contains NaN or Inf (2 entries, first at [0, 2])"),
    ("Inf bias", lambda t: _layer_file(t, **{"layer0.bias": np.array([0, -np.inf, 0])}), DataError,
     "layer0.bias contains NaN or Inf"),
    ("unknown activation", lambda t: _layer_file(t, **{"layer1.activation": np.array("swish9")}), ModelFileError,
     "layer1.activation: Unknown activation 'swish9'. Possible values are: relu"),
    ("activation not a string", lambda t: _layer_file(t, **{"layer1.activation": np.ones(2)}), ModelFileError,
     "layer1.activation must be a string"),
    ("object array npz", _object_npz, ModelFileError, "refused: holds object arrays"),
    ("pickle file", lambda t: _pickle_file(t, "m.pkl"), ModelFileError, "refused: pickle files are never loaded"),
    ("pickle named npz", lambda t: _pickle_file(t, "m.npz"), ModelFileError, "refused: pickle files are never loaded"),
    ("joblib file", lambda t: _pickle_file(t, "m.joblib"), ModelFileError, "refused"),
    ("pickled torch module", _torch_module_file, ModelFileError,
     "refused: it pickles a torch.nn.modules.container.Sequential object, not a plain state dict (only tensors are "
     "loaded, weights_only=True); save module.state_dict() instead."),
    ("malicious torch pickle", _torch_malicious, ModelFileError, "not a plain state dict (only tensors are loaded"),
    ("state dict without activations", _torch_state_dict, ModelFileError, "does not name its activations"),
    ("state dict with batch norm", _torch_conv_state_dict, ModelFileError, "unsupported state-dict entry '1.running_mean'"),
    ("corrupt onnx", _onnx_garbage, ModelFileError, "corrupt or truncated ONNX"),
    ("truncated onnx", _onnx_truncated, ModelFileError, "corrupt or truncated ONNX"),
    ("unsupported onnx op", _onnx_hardmax, ModelFileError, "g.onnx: unsupported op 'Hardmax' (node 'probs')"),
    ("onnx bias length", _onnx_bad_bias, ShapeError, "g: layer0.bias has length 4, but the weight has 3 rows"),
    ("onnx NaN weight", _onnx_nan, DataError, "g.onnx: initialiser 'W' contains NaN or Inf"),
    ("skops of another estimator", _skops_other, ModelFileError, "LinearRegression is not supported"),
]


@pytest.mark.parametrize("build, exc, fragment", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_model_files(tmp_path, build, exc, fragment):
    spec = build(tmp_path)
    with pytest.raises(exc) as info:
        load_model(spec)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message and "\x1b" not in message
    assert not (tmp_path / "EXECUTED").exists(), "a pickle was executed"


def test_marker_payload_really_executes_when_unpickled(tmp_path):
    """Guard for the table above: the payload does create the marker when unpickled."""
    pickle.loads(_pickle_file(tmp_path, "m.pkl").read_bytes())
    assert (tmp_path / "EXECUTED").exists()


# ---- importers agree -----------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted_mlp():
    from sklearn.neural_network import MLPClassifier

    data = load_data("digits", "train").head(300)
    with pytest.warns(Warning):  # stops before convergence on purpose: 30 epochs
        model = MLPClassifier((16, 12), activation="relu", max_iter=30, random_state=0).fit(data.x, data.y)
    return model


@pytest.fixture(scope="module")
def torch_twin(fitted_mlp):
    torch = pytest.importorskip("torch")
    seq = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Identity(), torch.nn.Linear(12, 10)).double()
    linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for lin, coef, intercept in zip(linears, fitted_mlp.coefs_, fitted_mlp.intercepts_):
            lin.weight.copy_(torch.from_numpy(coef.T.copy()))
            lin.bias.copy_(torch.from_numpy(intercept.copy()))
    return seq.eval()


def _variants(fitted_mlp, torch_twin, tmp: Path) -> dict[str, Network]:
    import onnx
    import skops.io as sio
    import torch
    from onnx import helper

    out = {"sklearn": from_sklearn(fitted_mlp), "torch": load_model(torch_twin)}
    out["state dict"] = load_model(torch_twin.state_dict(), activations="relu")
    torch.save(torch_twin.state_dict(), tmp / "sd.pth")
    out[".pth file"] = load_model(tmp / "sd.pth", activations=["relu", "relu", "identity"])
    torch.onnx.export(torch_twin, (torch.zeros(1, 64, dtype=torch.float64),), str(tmp / "gemm.onnx"), dynamo=False)
    out["onnx Gemm export"] = load_model(tmp / "gemm.onnx")
    nodes, inits = [], {}
    cur = "x"
    for k, (coef, intercept) in enumerate(zip(fitted_mlp.coefs_, fitted_mlp.intercepts_)):
        inits[f"W{k}"], inits[f"b{k}"] = coef, intercept
        nodes += [helper.make_node("MatMul", [cur, f"W{k}"], [f"m{k}"]), helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"])]
        cur = f"a{k}"
        if k < 2:
            nodes.append(helper.make_node("Relu", [cur], [f"r{k}"]))
            cur = f"r{k}"
    model = helper.make_model(helper.make_graph(
        nodes, "mm", [helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, [None, 64])],
        [helper.make_tensor_value_info(cur, onnx.TensorProto.DOUBLE, [None, 10])],
        [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]),
        opset_imports=[helper.make_opsetid("", 20)])
    out["onnx MatMul+Add"] = load_model(model)
    sio.dump(fitted_mlp, tmp / "mlp.skops")
    out["skops file"] = load_model(tmp / "mlp.skops")
    save_model(out["sklearn"], tmp / "n.npz")
    out["npz"] = load_model(tmp / "n.npz")
    save_model(out["sklearn"], tmp / "n.safetensors")
    out["safetensors"] = load_model(tmp / "n.safetensors")
    return out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_importers_give_the_same_network_and_bit_identical_outputs(fitted_mlp, torch_twin, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("skops")
    import torch

    nets = _variants(fitted_mlp, torch_twin, tmp_path)
    reference = nets["sklearn"]
    x = load_data("digits", "test").x[:40]
    native = reference.forward(x)
    emulated = reference.forward(x, acc="fp16")
    for label, net in nets.items():
        assert_same_network(reference, net, meta=False)
        np.testing.assert_array_equal(net.forward(x), native, err_msg=label)
        np.testing.assert_array_equal(net.forward(x, acc="fp16"), emulated, err_msg=label)
    # the conversion is the library's own function: scikit-learn's classes, torch's logits
    np.testing.assert_array_equal(reference.predict(x), fitted_mlp.predict(x))
    with torch.no_grad():
        logits = torch_twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(native, logits, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_of_every_supported_activation_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    seq = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.SiLU(), torch.nn.Linear(3, 3), torch.nn.LeakyReLU(0.01),
        torch.nn.Linear(3, 3), torch.nn.GELU(), torch.nn.Linear(3, 3), torch.nn.ELU(0.5),
        torch.nn.Linear(3, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 3), torch.nn.Tanh(),
        torch.nn.Linear(3, 3, bias=False), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(3, 2), torch.nn.Softplus(),
    ).double()
    torch.onnx.export(seq, (torch.zeros(1, 4, dtype=torch.float64),), str(tmp_path / "acts.onnx"), dynamo=False)
    from_t, from_o = load_model(seq), load_model(tmp_path / "acts.onnx")
    assert [l.activation.name for l in from_t] == ["silu", "leaky_relu:0.01", "gelu", "elu:0.5", "sigmoid", "tanh",
                                                   "gelu_tanh", "softplus"]
    assert_same_network(from_t, from_o, meta=False)
    x = np.random.default_rng(0).standard_normal((5, 4))
    with torch.no_grad():
        np.testing.assert_allclose(from_t.forward(x), seq(torch.from_numpy(x)).numpy(), rtol=1e-13, atol=1e-15)


TORCH_ERRORS = [
    (lambda nn: nn.Sequential(nn.Linear(2, 2), nn.Conv1d(1, 1, 1)), ModelFileError, "unsupported PyTorch module Conv1d (module 1)"),
    (lambda nn: nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), ModelFileError, "module 0 ReLU comes before any Linear layer"),
    (lambda nn: nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Tanh()), ModelFileError, "module 2 Tanh follows another activation"),
    (lambda nn: nn.Sequential(nn.Linear(2, 2), nn.Softplus(beta=2.0)), ModelFileError,
     "Softplus with these parameters is not supported"),
    (lambda nn: nn.Sequential(nn.Linear(2, 2), nn.Softmax(dim=1)), ModelFileError, "unsupported PyTorch module Softmax"),
    (lambda nn: nn.LSTM(2, 2), ModelFileError, "PyTorch module LSTM is not supported"),
    (lambda nn: nn.Sequential(nn.Linear(2, 3), nn.Linear(2, 2)), ShapeError, "layer1.weight takes 2 inputs but layer0 gives 3"),
    (lambda nn: nn.Linear(2, 2).state_dict(), ModelFileError, "does not name its activations"),
]


@pytest.mark.parametrize("build, exc, fragment", TORCH_ERRORS)
def test_torch_refusals(build, exc, fragment):
    torch = pytest.importorskip("torch")
    with pytest.raises(exc) as info:
        load_model(build(torch.nn))
    assert fragment in str(info.value)


def test_torch_file_in_the_native_layout(tmp_path):
    """A .pt state dict may carry the native layout, activation names included."""
    torch = pytest.importorskip("torch")
    w = torch.arange(6, dtype=torch.float32).reshape(3, 2) / 8
    torch.save({"layer0.weight": w, "layer0.activation": "tanh", "layer1.weight": torch.ones(1, 3, dtype=torch.float16),
                "layer1.activation": "identity"}, tmp_path / "native.pt")
    net = load_model(tmp_path / "native.pt")
    assert net.name == "native" and [l.activation.name for l in net] == ["tanh", "identity"]
    np.testing.assert_array_equal(net[0].weight, w.double().numpy())
    assert net[0].bias is None and net[1].weight.dtype == np.float64


def test_onnx_attributes_and_refusals(tmp_path):
    """A float32 attribute reads back as the decimal it was written with; Gemm alpha != 1
    is refused; graphs that are not a dense chain load as graphs, not networks."""
    pytest.importorskip("onnx")
    from onnx import helper

    from emulator.graph import Graph

    leaky = _onnx_graph(tmp_path, [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
                                   helper.make_node("LeakyRelu", ["h"], ["y"], alpha=0.3)], {"W": np.eye(2)}, "l.onnx")
    assert load_model(leaky)[0].activation.name == "leaky_relu:0.3"  # float32 attribute read back as 0.3
    with pytest.raises(ModelFileError, match=r"node 'Gemm_0' \(Gemm\): alpha == 2, beta == 1; only 1 is supported"):
        load_model(_onnx_graph(tmp_path, [helper.make_node("Gemm", ["x", "W"], ["y"], alpha=2.0)], {"W": np.eye(2)},
                               "alpha.onnx"))
    not_chains = [
        [helper.make_node("Add", ["x", "W"], ["y"])],
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_node("Gemm", ["x", "W"], ["h"]), helper.make_node("Mul", ["h", "h"], ["y"])],
        [helper.make_node("Gemm", ["x", "x"], ["y"])],
        [helper.make_node("Gemm", ["x", "W"], ["h"]), helper.make_node("Gemm", ["x", "W"], ["y"])],
        [helper.make_node("Gemm", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Tanh", ["r"], ["y"])],
    ]
    for k, nodes in enumerate(not_chains):
        model = load_model(_onnx_graph(tmp_path, nodes, {"W": np.eye(2)}, f"c{k}.onnx"))
        assert isinstance(model, Graph) and model.name == f"c{k}", nodes
        assert [n.op for n in model.nodes] == [n.op_type for n in nodes]


# ---- bundled models ----------------------------------------------------------------

def test_bundled_models_are_listed_with_cards_and_packaged():
    cards = bundled_models()
    assert tuple(cards) == BUNDLED + BUNDLED_GRAPHS
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["emulator.models"]
    assert {"*.npz", "*.md", "*.json"} <= set(patterns)
    for name, card in cards.items():
        assert (BUNDLED_DIR / f"{name}.npz").is_file() and (BUNDLED_DIR / f"{name}.md").is_file()
        assert {"architecture", "default_data", "train_accuracy", "test_accuracy", "seed", "rebuild"} <= set(card)
        assert f"{card['test_accuracy']:.4f}" in (BUNDLED_DIR / f"{name}.md").read_text()
    assert cards["paper-mlp"]["widths"] == [40, 784, 784, 128, 10]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_reproduces_recorded_accuracy_in_float64(name):
    from emulator.models.train import weights_sha256

    net = load_model(name)
    assert net.name == name and net.meta["test_accuracy"] == bundled_models()[name]["test_accuracy"]
    assert weights_sha256(net) == net.meta["weights_sha256"]
    assert [l.activation.name for l in net][-1] == "identity"
    data = load_data(net.meta["default_data"], "test", n_inputs=net.n_inputs)
    assert len(data) == net.meta["test_size"]
    assert float(np.mean(net.predict(data.x) == data.y)) == net.meta["test_accuracy"]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_reproduces_recorded_accuracy_exactly(name):
    """acc="exact" on the whole test split predicts the same classes as float64, so the
    exact network has the recorded test accuracy."""
    net = load_model(name)
    data = load_data(net.meta["default_data"], "test")
    exact = net.predict(data.x, acc="exact")
    np.testing.assert_array_equal(exact, net.predict(data.x))
    assert float(np.mean(exact == data.y)) == net.meta["test_accuracy"]


def test_training_script_rebuilds_a_bundled_model(tmp_path):
    """Retraining reproduces the bundled weights up to what the BLAS leaves to the CPU:
    its kernels sum in CPU-specific orders (differences of 1e-15..1e-12 relative seen
    between AVX-512 and AVX2 builds), so the weights are compared to 1e-6 of their scale
    and the card's measured facts exactly."""
    from emulator.models.train import main

    assert main(["--only", "digits-relu", "--out", str(tmp_path)]) == 0
    rebuilt, bundled = load_model(tmp_path / "digits-relu.npz"), load_model("digits-relu")
    assert len(rebuilt) == len(bundled)
    for a, b in zip(rebuilt.layers, bundled.layers):
        assert a.activation.name == b.activation.name
        for got, want in ((a.weight, b.weight), (a.bias, b.bias)):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.max(np.abs(want)))
    card, recorded = json.loads((tmp_path / "index.json").read_text())["digits-relu"], bundled_models()["digits-relu"]
    same = ("architecture", "n_params", "default_data", "train_size", "test_size", "train_accuracy", "test_accuracy",
            "test_data_sha256", "trainer", "epochs_run", "rebuild")
    assert {k: card[k] for k in same} == {k: recorded[k] for k in same}
    assert card["final_loss"] == pytest.approx(recorded["final_loss"], rel=1e-6)
