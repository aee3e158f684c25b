"""Reading the shipped datasets: ``read_shipped(name)`` returns the arrays of
``<name>.npz`` after checking each one's sha256 against ``index.json``;
``read_shipped_text(name)`` the lines of a text file (``<name>.txt``) after checking the
sha256 of its text (UTF-8, lines joined by ``\n``, so line endings do not matter)."""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["SHIPPED_DIR", "INDEX", "SPLIT_KEYS", "TEXT_KEY", "array_sha256", "text_sha256", "read_shipped",
           "read_shipped_text", "shipped_index"]

SHIPPED_DIR = Path(__file__).resolve().parent
INDEX = SHIPPED_DIR / "index.json"
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
TEXT_KEY = "lines"


def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's values: float64 (or int64 for integers), little-endian, C order."""
    a = np.asarray(a)
    dtype = "<i8" if a.dtype.kind in "iub" else "<f8"
    return hashlib.sha256(np.ascontiguousarray(a, dtype=dtype).tobytes()).hexdigest()


def text_sha256(lines) -> str:
    """sha256 of lines of text: UTF-8, each line followed by ``\n``."""
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def shipped_index() -> dict:
    """``index.json``: per dataset its file, source, per-array sha256 and rebuild command."""
    return json.loads(INDEX.read_text(encoding="utf-8")) if INDEX.exists() else {}


def _entry(name: str) -> dict:
    entry = shipped_index().get(name)
    if entry is None:
        raise DataError(f"No shipped dataset {name!r}. Shipped: {', '.join(shipped_index()) or 'none'}.")
    return entry


@lru_cache(maxsize=4)
def read_shipped(name: str) -> dict[str, np.ndarray]:
    """The read-only arrays of the shipped dataset ``name``, each checked against its
    recorded sha256 (a corrupt or altered file raises :class:`DataError`)."""
    entry = _entry(name)
    path = SHIPPED_DIR / entry["file"]
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in SPLIT_KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: shipped data is unreadable ({type(exc).__name__}); reinstall mixacc.") from None
    for key, a in arrays.items():
        if array_sha256(a) != entry["sha256"][key]:
            raise DataError(f"{path}: {key} does not match its recorded sha256 (altered or corrupt); reinstall mixacc.")
        a.setflags(write=False)
    return arrays


@lru_cache(maxsize=4)
def read_shipped_text(name: str) -> tuple[str, ...]:
    """The lines of the shipped text file of ``name``, checked against its recorded
    sha256 (a corrupt or altered file raises :class:`DataError`)."""
    entry = _entry(name)
    path = SHIPPED_DIR / entry["file"]
    try:
        lines = tuple(path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: shipped data is unreadable ({type(exc).__name__}); reinstall mixacc.") from None
    if text_sha256(lines) != entry["sha256"][TEXT_KEY]:
        raise DataError(f"{path}: does not match its recorded sha256 (altered or corrupt); reinstall mixacc.")
    return lines
