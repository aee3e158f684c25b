"""The one checker of arrays that enter mixacc's public functions.

Rules, the same for every entry point:

* dtype: booleans, integers and floating point of any width are accepted; anything else
  (complex, strings, objects, dates) raises :class:`DataError`;
* exactness: values are converted to float64, which must hold them exactly (integers
  beyond 2^53 in magnitude, or long doubles with more precision, raise :class:`DataError`
  rather than being rounded silently);
* shape: a wrong number of dimensions, an empty axis or a mismatched length raises
  :class:`ShapeError`;
* finiteness (when asked): NaN or Inf raises :class:`DataError` naming the first entry.

Every message starts with the array's name (``where``), so the CLI's one line says what is
wrong and where.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import DataError, ShapeError

__all__ = ["real_array", "first_bad"]


def first_bad(mask: np.ndarray) -> list[int]:
    """The index (as a list) of the first True entry of ``mask``."""
    return [int(i) for i in np.argwhere(mask)[0]]


def real_array(value, where: str, *, ndim: "int | Sequence[int] | None" = None, finite: bool = False,
               nonempty: bool = False, copy: bool = False, readonly: bool = False) -> np.ndarray:
    """``value`` as a C-contiguous float64 array after the module's checks.

    ``ndim``: the allowed number(s) of dimensions; ``finite``: refuse NaN and Inf;
    ``nonempty``: refuse an axis of length 0; ``copy``: always return a fresh array
    (``readonly`` then freezes it)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where} is not an array of numbers ({exc}).") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where} must hold real numbers, got dtype {arr.dtype}.")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            contiguous = len(allowed) > 2 and list(allowed) == list(range(allowed[0], allowed[-1] + 1))
            dims = f"{allowed[0]} to {allowed[-1]}" if contiguous else " or ".join(str(d) for d in allowed)
            raise ShapeError(f"{where} must have {dims} dimension{'s' if allowed != (1,) else ''}, got shape {arr.shape}.")
    if nonempty and 0 in arr.shape:
        raise ShapeError(f"{where} is empty (shape {arr.shape}).")
    out = np.array(arr, dtype=np.float64, order="C", copy=True) if copy else np.asarray(arr, dtype=np.float64, order="C")
    if arr.dtype.kind in "iu" or arr.dtype.itemsize > 8:
        with np.errstate(invalid="ignore", over="ignore"):
            same = (out.astype(arr.dtype) == arr) | np.isnan(out)
        if not np.all(same):
            bad = first_bad(~same)
            raise DataError(f"{where} has values that float64 cannot hold exactly (first at {bad}: {arr[tuple(bad)]!r}).")
    if finite:
        bad = ~np.isfinite(out)
        if bad.any():
            raise DataError(f"{where} contains NaN or Inf ({int(bad.sum())} entries, first at {first_bad(bad)}).")
    if copy and readonly:
        out.setflags(write=False)
    return out
