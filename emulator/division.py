"""Correctly rounded quotients: ``divide_rounded(num, den, fmt)`` = round_F(num / den) of the
exact quotient, rounded once (the mean of a reduction: the sum, then one rounded division;
docs/method.md#graphs).

q = RN64(num / den) is within half an ulp of the exact quotient, and the residual
r = num - q den is exact as ``fma(-q, den, num)`` when q den does not underflow (Boldo &
Muller, "Exact and approximated error of the FMA", IEEE TC 60(2), 2011: the remainder of
a correctly rounded division is a float64); the exact quotient is q + r / den, so the sign
of (exact - q) is sign(r) sign(den) and ``round_scalar(q, sigma)`` rounds the exact
quotient once. Quotients whose residual could underflow (|num| or |q| < 2^-960) or that are
not finite are finished in rational arithmetic.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numba import njit

from ._bits import fma
from .formats import Format, get_format
from .rounding import get_rounding, kernel_params, round_scalar, round_to

__all__ = ["divide_rounded"]

_SAFE = 2.0**-960


@njit(cache=True)
def _divide(num, den, out, slow, params, mode):
    for i in range(num.shape[0]):
        a, d = num[i], den[i]
        q = a / d
        if not (abs(q) < math.inf) or abs(a) < _SAFE or abs(q) < _SAFE or d == 0.0 or not (abs(d) < math.inf):
            slow[i] = True
            out[i] = q
            continue
        r = fma(-q, d, a)
        sigma = (1 if r > 0.0 else (-1 if r < 0.0 else 0)) * (1 if d > 0.0 else -1)
        out[i] = round_scalar(q, sigma, params, mode, np.uint64(0))


def divide_rounded(num, den, fmt: "str | Format", rounding="nearest", *, saturate: bool = False,
                   subnormals: bool = True) -> np.ndarray:
    """round_F(num / den) elementwise (broadcasting), the exact quotient rounded once in
    a deterministic mode; 0/0 and inf/inf give NaN, c/0 the signed overflow rule."""
    f = get_format(fmt)
    mode = get_rounding(rounding)
    if not mode.deterministic:
        raise ValueError("divide_rounded takes a deterministic rounding mode.")
    a, d = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    shape = a.shape
    a, d = np.ascontiguousarray(a).ravel(), np.ascontiguousarray(d).ravel()
    out = np.empty_like(a)
    slow = np.zeros(a.shape, dtype=np.bool_)
    _divide(a, d, out, slow, kernel_params(f, saturate, subnormals), mode.code)
    for i in np.flatnonzero(slow):
        out[i] = _slow(float(a[i]), float(d[i]), f, mode.name, saturate, subnormals)
    return out.reshape(shape)


def _slow(a: float, d: float, f: Format, rounding: str, saturate: bool, subnormals: bool) -> float:
    """The quotient in rational arithmetic (finite operands), else IEEE's special value
    rounded by the format's rule."""
    if math.isfinite(a) and math.isfinite(d) and d != 0.0:
        q = Fraction(a) / Fraction(d)
        h = float(q)
        sigma = (Fraction(h) < q) - (Fraction(h) > q)
        if sigma == 0 or not math.isfinite(h):
            return float(round_to(h, f, rounding, saturate=saturate, subnormals=subnormals))
        return float(round_scalar_py(h, sigma, f, rounding, saturate, subnormals))
    with np.errstate(all="ignore"):
        special = np.float64(a) / np.float64(d)
    return float(round_to(special, f, rounding, saturate=saturate, subnormals=subnormals))


def round_scalar_py(x: float, sigma: int, f: Format, rounding: str, saturate: bool, subnormals: bool) -> float:
    """round_F(x + sigma eps) from Python (the kernel ``round_scalar``)."""
    return _round_one(x, sigma, kernel_params(f, saturate, subnormals), get_rounding(rounding).code)


@njit(cache=True)
def _round_one(x, sigma, params, mode):
    return round_scalar(x, sigma, params, mode, np.uint64(0))
