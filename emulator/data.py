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
from typing import Callable

import numpy as np

from .datasets.shipped import read_shipped
from .arrays import real_array
from .errors import DataError
from .registry import Registry

__all__ = ["Dataset", "load_data", "load_model_data", "DATASETS", "SPLITS"]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Dataset:
    """``x`` (N, n) float64 inputs, ``y`` (N,) labels or None, the spec's ``name`` and
    the ``split``."""

    x: np.ndarray
    y: "np.ndarray | None"
    name: str
    split: str

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def n_features(self) -> int:
        return self.x.shape[1]

    def head(self, n: "int | None") -> "Dataset":
        """The first ``n`` samples (all of them for None)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise DataError(f"samples == {n}, must be >= 1.")
        return Dataset(self.x[:n], None if self.y is None else self.y[:n], self.name, self.split)


@dataclass(frozen=True)
class DataSource:
    """A named dataset: ``load(split) -> (x, y)``."""

    name: str
    description: str
    load: Callable[[str], tuple[np.ndarray, np.ndarray]]


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


DATASETS: Registry[DataSource] = Registry("dataset")
for _d in (
    DataSource("digits", "scikit-learn 8x8 digits, pixels/16, 64 features, 10 classes (test: index % 5 == 0)", _digits),
    DataSource("mnist1d", "MNIST-1D (mnist1d package, seed 42, shipped bit-identical), 40 features, 10 classes, 4000 train / 1000 test", _mnist1d),
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


def _load_array_file(path: Path) -> tuple[np.ndarray, "np.ndarray | None"]:
    if not path.exists():
        raise DataError(f"Data file '{path}' does not exist.")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DataError(f"{path}: no array 'x' (found: {', '.join(z.files) or 'none'}).")
            return z["x"], (z["y"] if "y" in z.files else None)
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise DataError(f"{path}: refused: holds pickled data or object arrays, which are never loaded.") from None
        raise DataError(f"{path}: corrupt or truncated ({exc}).") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated ({type(exc).__name__}).") from None


def _checked(x, y, name: str) -> tuple[np.ndarray, "np.ndarray | None"]:
    x = real_array(x, f"Data {name!r}: x", ndim=2, nonempty=True, finite=True, copy=True)
    if y is not None:
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise DataError(f"Data {name!r}: y must hold numbers, got dtype {y.dtype}.")
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise DataError(f"Data {name!r}: y has shape {y.shape} but x has {x.shape[0]} rows.")
    return x, y


def load_data(spec: str, split: str = "test", *, n_inputs: "int | None" = None) -> Dataset:
    """The dataset ``spec`` (see the module docstring), split ``train`` or ``test`` (named
    datasets only). With ``n_inputs`` (the model's input width) a width mismatch raises
    :class:`DataError` here, and ``random:N`` takes its width from it."""
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}. Possible values are: {', '.join(SPLITS)}.")
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise DataError(f"Data spec {spec!r} is empty; expected {', '.join(DATASETS.names())}, random:N[:SEED] or a .npy/.npz path.")
    text = os.fspath(spec).strip()
    y = None
    if isinstance(spec, str) and text in DATASETS:
        x, y = DATASETS.get(text).load(split)
    elif isinstance(spec, str) and text.split(":")[0] == "random":
        x = _random(text, n_inputs)
    elif Path(text).suffix in (".npy", ".npz"):
        x, y = _load_array_file(Path(text))
    else:
        raise DataError(
            f"Unknown data {text!r}. Possible values are: {', '.join(DATASETS.names())}, random:N[:SEED], "
            "or a path to a .npy or .npz file."
        )
    x, y = _checked(x, y, text)
    if n_inputs is not None and x.shape[1] != n_inputs:
        raise DataError(f"Data {text!r} has {x.shape[1]} features but the model takes {n_inputs} inputs.")
    return Dataset(x, y, text, split)


def load_model_data(network, spec: "str | None" = None, split: str = "test") -> Dataset:
    """``spec`` (default: the model's own ``meta["default_data"]``), split ``split``,
    checked against ``network``'s input width."""
    spec = spec or network.meta.get("default_data")
    if not spec:
        raise DataError(f"Model {network.name!r} names no default data; pass --data.")
    return load_data(spec, split, n_inputs=network.n_inputs)
