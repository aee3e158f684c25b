"""OCP Microscaling (MX v1.0) block-scaled formats (docs/method.md#mx-block-scaled-formats).

A block of K = 32 consecutive values along the reduction axis shares one E8M0 scale 2^s
(s an integer in [-127, 127]); each value is stored as an element e_j of a small format,
and stands for e_j 2^s. Quantising a block v_1..v_K (OCP MX v1.0, section 6.3):

    s   = clamp(floor(log2 max_j |v_j|) - emax_elem, -127, 127)   (an all-zero block: -127)
    e_j = round_elem(v_j / 2^s)   to nearest, ties to even, normal overflow saturating to ±max_elem

and the value kept is e_j 2^s, exactly representable in float64. A scale above 127
(|v| >= 2^(128 + emax_elem)) does not exist in E8M0 and is refused, as are inf and NaN.
MXINT8's element is the 8-bit two's complement integer k times 2^-6 with |k| <= 127
(emax_elem = 0): held here as a 7-bit-precision format with one binade, emin = emax = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import real_array
from .errors import FormatSpecError
from .formats import Format, get_format
from .registry import Registry
from .rounding import round_to

__all__ = ["MXFormat", "MX_FORMATS", "get_mx", "block_scales", "SCALE_MIN", "SCALE_MAX", "BLOCK"]

BLOCK = 32
SCALE_MIN, SCALE_MAX = -127, 127  # E8M0 scales 2^-127 .. 2^127 (the code 0xFF is NaN)


@dataclass(frozen=True)
class MXFormat:
    """An MX format: element format ``element``, ``block`` values per shared E8M0 scale."""

    name: str
    element: Format
    block: int = BLOCK

    def scales(self, x: np.ndarray) -> np.ndarray:
        """The shared exponent s of every block of ``x`` (blocks along the last axis),
        repeated over the block's values: same shape as ``x``."""
        return block_scales(x, self.element, self.block)

    def quantise(self, x, axis: int = -1, where: str = "", refuse: bool = True) -> np.ndarray:
        """The MX values e_j 2^s of ``x`` (float64, same shape), blocks of ``block``
        consecutive values along ``axis``. A block holding inf or NaN, or needing a scale
        above 2^127, is refused (``refuse``) or becomes NaN (E8M0's NaN scale)."""
        arr = real_array(x, where or f"{self.name} input")
        moved = np.moveaxis(arr.reshape(-1) if arr.ndim == 0 else arr, axis, -1)
        finite = np.isfinite(moved)
        if refuse and not finite.all():
            idx = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise FormatSpecError(f"{where or 'MX input'}: value {moved[idx]} at index {idx} cannot be stored in "
                                  f"{self.name} (MX scales have no inf or NaN).")
        s = block_scales(np.where(finite, moved, 0.0), self.element, self.block, where, refuse)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            elements = round_to(np.ldexp(np.where(finite, moved, 0.0), -s), self.element, saturate=True)
            out = np.ldexp(elements, np.minimum(s, SCALE_MAX))
        bad = (s > SCALE_MAX) | ~_blocks_all(finite, self.block)
        out = np.where(bad, np.nan, out)
        return np.moveaxis(out, -1, axis).reshape(np.shape(x))

    def describe(self) -> dict:
        return {"name": self.name, "element": self.element.name, "block": self.block,
                "emax_element": self.element.emax, "scale": "E8M0"}


def block_scales(x: np.ndarray, element: Format, block: int = BLOCK, where: str = "", refuse: bool = True) -> np.ndarray:
    """s = clamp(floor(log2 max |v|) - emax_elem, -127, 127) per block of ``block`` values
    along the last axis (-127 for an all-zero block), as an int64 array of x's shape.
    A block that needs s > 127 raises :class:`FormatSpecError` (with ``refuse=False``
    its s is returned unclamped above)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1] if x.ndim else 1
    nb = -(-n // block)
    padded = np.zeros(x.shape[:-1] + (nb * block,))
    padded[..., :n] = np.abs(x)
    amax = padded.reshape(x.shape[:-1] + (nb, block)).max(axis=-1)
    _, e = np.frexp(amax)
    s = np.where(amax > 0, e.astype(np.int64) - 1 - element.emax, SCALE_MIN)
    if refuse and np.any(s > SCALE_MAX):
        idx = tuple(int(i) for i in np.argwhere(s > SCALE_MAX)[0])
        raise FormatSpecError(f"{where or 'MX input'}: block {idx} has largest |value| {amax[idx]:g}, beyond the "
                              f"E8M0 scale range (needs 2^{int(s[idx])} > 2^{SCALE_MAX}).")
    s = np.maximum(s, SCALE_MIN)
    return np.repeat(s, block, axis=-1)[..., :n]


def _blocks_all(flags: np.ndarray, block: int) -> np.ndarray:
    """Per value: whether every flag of its block (along the last axis) is set."""
    n = flags.shape[-1]
    nb = -(-n // block)
    padded = np.ones(flags.shape[:-1] + (nb * block,), dtype=bool)
    padded[..., :n] = flags
    every = padded.reshape(flags.shape[:-1] + (nb, block)).all(axis=-1)
    return np.repeat(every, block, axis=-1)[..., :n]


MX_FORMATS: Registry[MXFormat] = Registry("MX format")
for _name, _element in (
    ("mxfp8-e4m3", get_format("fp8-e4m3fn")),
    ("mxfp8-e5m2", get_format("fp8-e5m2")),
    ("mxfp6-e3m2", get_format("fp6-e3m2")),
    ("mxfp6-e2m3", get_format("fp6-e2m3")),
    ("mxfp4-e2m1", get_format("fp4-e2m1")),
    ("mxint8", Format("int8", 1, 6, 1, "finite")),
):
    MX_FORMATS.add(_name, MXFormat(_name, _element))


def get_mx(name: "str | MXFormat") -> MXFormat:
    """The MX format called ``name`` (see ``MX_FORMATS``)."""
    return name if isinstance(name, MXFormat) else MX_FORMATS.get(name)
