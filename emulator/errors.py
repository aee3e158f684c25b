"""Domain exceptions of the emulator. Every one is a ``ValueError`` whose message says
what is wrong, where, and (for names) which values are possible; the CLI prints it on one
line and exits with status 2."""

from __future__ import annotations

__all__ = [
    "MixaccError",
    "UnknownNameError",
    "FormatSpecError",
    "ShapeError",
    "ModelFileError",
    "DataError",
]


class MixaccError(ValueError):
    """Base class of every error mixacc raises on bad input."""


class UnknownNameError(MixaccError):
    """A name (format, rounding mode, order, activation, ...) that is not registered."""

    def __init__(self, kind: str, name: object, possible: list[str]):
        self.kind, self.name, self.possible = kind, name, list(possible)
        super().__init__(f"Unknown {kind} {name!r}. Possible values are: {', '.join(self.possible)}.")


class FormatSpecError(MixaccError):
    """A format or accumulation specification that is malformed or out of range."""


class ShapeError(MixaccError):
    """Arrays whose shapes do not fit together."""


class ModelFileError(MixaccError):
    """A model file or object that cannot be turned into a network."""


class DataError(MixaccError):
    """A data specification or data file that cannot be used."""
