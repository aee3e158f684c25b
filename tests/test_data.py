"""Datasets: digits and mnist1d against their generators, the mnist1d cache, random data,
array files and the errors (a table)."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from emulator.data import Dataset, load_data
from emulator.errors import DataError, ShapeError
from emulator.modelio import bundled_models


def test_digits_is_sklearn_digits_over_16_split_by_index():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    test, train = load_data("digits", "test"), load_data("digits", "train")
    assert (len(test), len(train), test.n_features) == (360, 1437, 64)
    np.testing.assert_array_equal(test.x * 16, bunch.data[::5])
    np.testing.assert_array_equal(test.y, bunch.target[::5])
    keep = np.arange(len(bunch.target)) % 5 != 0
    np.testing.assert_array_equal(train.x * 16, bunch.data[keep])
    assert test.x.dtype == np.float64 and test.x.min() == 0.0 and test.x.max() == 1.0
    assert (test.name, test.split) == ("digits", "test")


def test_mnist1d_is_shipped_bit_identical_and_checked():
    """The splits come from the package, with the sha256 recorded for every array."""
    from emulator.datasets.shipped import array_sha256, shipped_index

    train, test = load_data("mnist1d", "train"), load_data("mnist1d", "test")
    assert (len(train), len(test), test.n_features) == (4000, 1000, 40)
    recorded = shipped_index()["mnist1d"]["sha256"]
    got = {"x_train": train.x, "y_train": train.y, "x_test": test.x, "y_test": test.y}
    assert {k: array_sha256(v) for k, v in got.items()} == recorded


def test_mnist1d_rebuild_agrees_with_the_shipped_splits():
    """The generator reproduces the shipped data up to the last bits its floating-point
    kernels leave to the CPU (different SIMD paths give differences of a few ulps), and
    leaves the caller's global random states alone."""
    pytest.importorskip("mnist1d")
    from emulator.datasets.build import generate

    np.random.seed(1234)
    random.seed(99)
    before_np, before_py = np.random.random(), random.random()
    np.random.seed(1234)
    random.seed(99)
    rebuilt = generate("mnist1d")
    assert (np.random.random(), random.random()) == (before_np, before_py), "global random state was disturbed"
    for split in ("train", "test"):
        shipped = load_data("mnist1d", split)
        np.testing.assert_array_equal(rebuilt[f"y_{split}"], shipped.y)
        np.testing.assert_allclose(rebuilt[f"x_{split}"], shipped.x, rtol=0, atol=1e-12)


def test_altered_shipped_data_is_refused(tmp_path, monkeypatch):
    from emulator.datasets import shipped

    index = shipped.shipped_index()
    arrays = dict(shipped.read_shipped("mnist1d"))
    arrays["x_test"] = arrays["x_test"].copy()
    arrays["x_test"][3, 7] = np.nextafter(arrays["x_test"][3, 7], np.inf)
    np.savez_compressed(tmp_path / "mnist1d.npz", **arrays)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    shipped.read_shipped.cache_clear()
    try:
        with pytest.raises(DataError, match="x_test does not match its recorded sha256"):
            load_data("mnist1d")
        (tmp_path / "mnist1d.npz").write_bytes(b"PK\x03\x04 truncated")
        shipped.read_shipped.cache_clear()
        with pytest.raises(DataError, match="unreadable"):
            load_data("mnist1d")
    finally:
        shipped.read_shipped.cache_clear()
    assert index == shipped.shipped_index()


def test_mnist1d_returns_copies():
    a = load_data("mnist1d")
    a.x[0, 0] = 1e6
    assert load_data("mnist1d").x[0, 0] != 1e6


def test_data_matches_the_bundled_model_cards():
    """The bundled accuracies were measured on exactly this data (sha256 of the test inputs)."""
    from emulator.models.train import data_sha256

    for name, card in bundled_models().items():
        assert data_sha256(load_data(card["default_data"], "test").x) == card["test_data_sha256"], name


def test_random_data_is_seeded_standard_normal():
    a = load_data("random:50:7", n_inputs=3)
    np.testing.assert_array_equal(a.x, np.random.default_rng(7).standard_normal((50, 3)))
    assert a.y is None and a.name == "random:50:7"
    np.testing.assert_array_equal(load_data("random:4", n_inputs=2).x, np.random.default_rng(0).standard_normal((4, 2)))
    assert not np.array_equal(load_data("random:4:1", n_inputs=2).x, load_data("random:4:2", n_inputs=2).x)


def test_array_files(tmp_path):
    x = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "a.npy", x)
    got = load_data(str(tmp_path / "a.npy"), n_inputs=3)
    np.testing.assert_array_equal(got.x, x)
    assert got.y is None
    np.savez(tmp_path / "b.npz", x=x.astype(np.float32), y=np.array([0, 1, 1, 0]))
    got = load_data(tmp_path / "b.npz")
    assert got.x.dtype == np.float64 and list(got.y) == [0, 1, 1, 0]


def test_head():
    d = load_data("digits")
    h = d.head(10)
    assert isinstance(h, Dataset) and len(h) == 10 and len(h.y) == 10
    assert d.head(None) is d and d.head(10**6) is d
    with pytest.raises(DataError, match="samples == 0, must be >= 1"):
        d.head(0)


class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _file(tmp: Path, name: str, **arrays) -> str:
    path = tmp / name
    if name.endswith(".npy"):
        np.save(path, arrays["x"], allow_pickle=True)
    else:
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return str(path)


def _pickle_npy(tmp: Path) -> str:
    (tmp / "p.npy").write_bytes(pickle.dumps(_Touch(tmp / "EXECUTED")))
    return str(tmp / "p.npy")


DATA_ERRORS = [
    (lambda t: "imagenet", {}, "Unknown data 'imagenet'. Possible values are: digits, mnist1d, mnist5k, random:N[:SEED]"),
    (lambda t: "", {}, "is empty"),
    (lambda t: "digits", {"split": "valid"}, "Unknown split 'valid'. Possible values are: train, test"),
    (lambda t: "digits", {"n_inputs": 40}, "Data 'digits' has 64 features but the model takes 40 inputs"),
    (lambda t: "random:10", {}, "needs the input width"),
    (lambda t: "random:0", {"n_inputs": 2}, "takes the form random:N or random:N:SEED"),
    (lambda t: "random:ten", {"n_inputs": 2}, "takes the form random:N"),
    (lambda t: "random:3:1:2", {"n_inputs": 2}, "takes the form random:N"),
    (lambda t: str(t / "absent.npy"), {}, "does not exist"),
    (lambda t: _file(t, "o.npy", x=np.array([_Touch(t / "EXECUTED")], dtype=object)), {}, "refused"),
    (lambda t: _file(t, "o.npz", x=np.array([_Touch(t / "EXECUTED")], dtype=object)), {}, "refused"),
    (_pickle_npy, {}, "refused"),
    (lambda t: _file(t, "n.npz", y=np.ones(2)), {}, "no input arrays (found: y)"),
    (lambda t: _file(t, "y.npz", x=np.ones((3, 2)), y=np.ones(2)), {}, "y has shape (2,) but x has 3 rows"),
    (lambda t: _file(t, "nan.npz", x=np.array([[1.0, np.nan]])), {}, "x contains NaN or Inf (1 entries, first at [0, 1])"),
    (lambda t: _file(t, "v.npy", x=np.ones(5)), {}, "x must have 2 to 8 dimensions, got shape (5,)"),
    (lambda t: _file(t, "s.npz", x=np.array([["a", "b"]])), {}, "x must hold real numbers"),
    (lambda t: _file(t, "w.npz", x=np.ones((2, 5))), {"n_inputs": 4}, "has 5 features but the model takes 4 inputs"),
    (lambda t: (t / "c.npz").write_bytes(b"PK\x03\x04 broken") and str(t / "c.npz"), {}, "corrupt or truncated"),
]


@pytest.mark.parametrize("build, kwargs, fragment", DATA_ERRORS)
def test_data_errors(tmp_path, build, kwargs, fragment):
    with pytest.raises((DataError, ShapeError)) as info:
        load_data(build(tmp_path), **kwargs)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "EXECUTED").exists()


def test_named_inputs_for_graphs(tmp_path):
    """An .npz whose keys name a graph's inputs: integer ids stay int64, one batch size."""
    ids, mask = np.arange(12).reshape(3, 4), np.ones((3, 4), dtype=bool)
    np.savez(tmp_path / "g.npz", input_ids=ids, attention_mask=mask, y=np.array([0, 1, 1]))
    d = load_data(str(tmp_path / "g.npz"))
    assert list(d.inputs) == ["input_ids", "attention_mask"] and d.x.dtype == np.int64 and len(d) == 3
    assert d.feeds(["attention_mask", "input_ids"])["attention_mask"].dtype == np.int64
    h = d.head(2)
    assert h.inputs["input_ids"].shape == (2, 4) and h.y.tolist() == [0, 1]
    np.savez(tmp_path / "bad.npz", a=np.ones((3, 2)), b=np.ones((4, 2)))
    with pytest.raises(ShapeError, match="different numbers of samples"):
        load_data(str(tmp_path / "bad.npz"))
    images = np.zeros((5, 1, 8, 8))
    np.save(tmp_path / "img.npy", images)
    assert load_data(str(tmp_path / "img.npy")).x.shape == (5, 1, 8, 8)
