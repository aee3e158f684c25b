"""Progress bars on stderr, shown only when stderr is a terminal and not ``quiet``."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

__all__ = ["progress", "progress_bar", "set_quiet"]

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


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str = ""):
    """A bar advanced by hand (``update(n)``, ``close()``) over ``total`` finished tasks:
    tqdm on stderr when that is a terminal, else one that shows nothing."""
    if _QUIET or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
