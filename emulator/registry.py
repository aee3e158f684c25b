"""A registry maps names to frozen rows (formats, rounding modes, orders, activations).

Names are resolved once, at the boundary; kernels receive rows. Unknown names raise
:class:`~emulator.errors.UnknownNameError` listing every registered name.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """An ordered, name-keyed table of rows of one kind (``kind`` names it in errors)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._rows: dict[str, T] = {}

    def add(self, name: str, row: T) -> T:
        if name in self._rows:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._rows[name] = row
        return row

    def get(self, name: str, extra_possible: tuple[str, ...] = ()) -> T:
        try:
            return self._rows[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, name, [*self._rows, *extra_possible]) from None

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def names(self) -> list[str]:
        return list(self._rows)

    def rows(self) -> list[T]:
        return list(self._rows.values())
