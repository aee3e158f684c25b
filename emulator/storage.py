"""Storage formats: where values are kept between operations (docs/method.md#storage-formats).
A storage spec is ``FMT`` or ``FMT:saturate``; rounding to it is always to nearest, ties
to even, with subnormals. An MX format (``mxfp8-e4m3``, ... ``mxint8``;
docs/method.md#mx-block-scaled-formats) is a storage row with a block rule: every tensor
is quantised in blocks of 32 along its last axis (weights (m, n) along n, activations
along their features: the reduction axis of the next product), saturating. The flag
``:sums`` (``FMT:sums``, ``FMT:saturate:sums``, ``MX:sums``) also stores the outputs of a
graph's sum operators (docs/method.md#graphs)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .errors import FormatSpecError
from .formats import Format, get_format
from .mx import MX_FORMATS, MXFormat, get_mx
from .rounding import round_to

__all__ = ["Storage", "parse_storage"]


@dataclass(frozen=True)
class Storage:
    """A storage format: values are rounded to nearest in ``fmt``; overflow saturates to
    ±max when ``saturate`` is set (the authors' e4m3 preset), else follows the format.
    With ``mx`` (an MX format; ``fmt`` is then its element format) values are quantised
    in blocks along the last axis instead. With ``sums`` a graph also rounds the outputs
    of its sum operators (Gemm, MatMul, Conv, reductions) to it, as a GPU kernel writes
    its accumulator to memory; without, they stay values of the accumulator format."""

    fmt: Format
    saturate: bool = False
    mx: "MXFormat | None" = None
    sums: bool = False

    @property
    def spec(self) -> str:
        base = self.mx.name if self.mx is not None else self.fmt.name + (":saturate" if self.saturate else "")
        return f"{base}:sums" if self.sums else base

    def storing_sums(self) -> "Storage":
        """This storage with ``sums`` set."""
        return replace(self, sums=True)

    def round(self, x: np.ndarray) -> np.ndarray:
        """round_FMT(x), once, to nearest (ties to even); MX: the block quantisation."""
        if self.mx is not None:
            return self.mx.quantise(x, refuse=False)
        return round_to(x, self.fmt, saturate=self.saturate)

    def round_finite(self, x: np.ndarray, where: str) -> np.ndarray:
        """round_FMT(x), refusing values that overflow the format (inf or NaN)."""
        if self.mx is not None:
            return self.mx.quantise(x, where=where)
        r = self.round(x)
        bad = ~np.isfinite(r)
        if bad.any():
            hint = "" if self.saturate else f"; use {self.fmt.name}:saturate to clamp to ±{self.fmt.max:g}"
            raise FormatSpecError(
                f"{where}: {int(bad.sum())} values overflow storage format {self.fmt.name} "
                f"(largest |value| {float(np.max(np.abs(x))):g}){hint}."
            )
        return r


def parse_storage(spec: "str | Format | Storage | None") -> "Storage | None":
    """``None``, a format (name or row), ``"FMT:saturate"``, an MX format name, each
    optionally followed by ``:sums``, or a :class:`Storage`."""
    if spec is None or isinstance(spec, Storage):
        return spec
    if isinstance(spec, Format):
        return Storage(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise FormatSpecError(f"Storage spec {spec!r} is empty; expected a format such as fp16 or e4m3:saturate.")
    name, *flags = [t.strip() for t in spec.strip().split(":")]
    sums = flags[-1:] == ["sums"]
    flags = flags[:-1] if sums else flags
    if name in MX_FORMATS:
        if flags:
            raise FormatSpecError(f"Storage spec {spec!r}: an MX format takes no flags but :sums (it always "
                                  "saturates).")
        mx = get_mx(name)
        return Storage(mx.element, saturate=True, mx=mx, sums=sums)
    if flags not in ([], ["saturate"]):
        raise FormatSpecError(f"Storage spec {spec!r}: takes the form FMT or FMT:saturate, optionally followed "
                              "by :sums.")
    return Storage(get_format(name), saturate=bool(flags), sums=sums)
