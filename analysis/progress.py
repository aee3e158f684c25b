"""Progress bars on stderr, shown only when stderr is a terminal and not ``quiet``."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

__all__ = ["progress", "set_quiet"]

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar on stderr when that is a terminal."""
    if _QUIET or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False)
