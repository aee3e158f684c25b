"""Correct rounding of float64 values (or of an exact value known as ``x`` plus the sign
of ``exact - x``) to any :class:`~emulator.formats.Format`.

``round_F(v)`` is computed on the significand as an integer: v = S 2^(e-52) is split at
the format's quantum 2^q, q = max(e, emin) - p + 1, into ``trunc`` and a remainder that
decides the rounding (ties to even, directed, or stochastic with probability equal to the
remainder's share of the quantum). The result is ``trunc'`` 2^q, then the overflow rule of
the format. No intermediate rounding happens: the input is rounded once.

``sigma`` lets callers round an exact value they hold as ``x`` (a faithful float64
approximation) plus the sign of the remaining error: every breakpoint of a format with
p <= 52 is a float64, so ``(x, sigma)`` determines the rounding (for p = 53, ``x`` must be
the round-to-nearest float64 of the exact value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ._bits import bits_f64, f64_bits
from .errors import MixaccError
from .formats import Format, get_format
from .registry import Registry

__all__ = ["RoundingMode", "ROUNDING_MODES", "get_rounding", "round_to", "kernel_params", "round_scalar"]

OVF_INF, OVF_NAN, OVF_SAT = 0, 1, 2


@dataclass(frozen=True)
class RoundingMode:
    """A rounding mode: its name, the integer code the kernels use, what it does."""

    name: str
    code: int
    description: str
    deterministic: bool = True


ROUNDING_MODES: Registry[RoundingMode] = Registry("rounding mode")
for _m in (
    RoundingMode("nearest", 0, "round to nearest, ties to even"),
    RoundingMode("zero", 1, "toward zero (truncation)"),
    RoundingMode("up", 2, "toward +inf"),
    RoundingMode("down", 3, "toward -inf"),
    RoundingMode("stochastic", 4, "up with probability equal to the distance to the lower neighbour, in ulps", False),
):
    ROUNDING_MODES.add(_m.name, _m)
NEAREST, ZERO, UP, DOWN, STOCHASTIC = range(5)


def get_rounding(name: "str | RoundingMode") -> RoundingMode:
    """The rounding mode called ``name`` (see ``ROUNDING_MODES``)."""
    return name if isinstance(name, RoundingMode) else ROUNDING_MODES.get(name)


def kernel_params(fmt: Format, saturate: bool = False, subnormals: bool = True) -> tuple:
    """The constants the kernels read, derived once: (p, emin, max, overflow rule, ftz,
    smallest normal). Overflow gives inf (formats with inf), NaN (formats with NaN only)
    or ±max (``saturate``, or formats with neither)."""
    if saturate or fmt.specials == "finite":
        ovf = OVF_SAT
    elif fmt.has_inf:
        ovf = OVF_INF
    else:
        ovf = OVF_NAN
    return (np.int64(fmt.p), np.int64(fmt.emin), float(fmt.max), np.int64(ovf), bool(not subnormals), float(fmt.min_normal))


@njit(cache=True, inline="always")
def _pow2(e):
    """2.0**e exactly, for -1074 <= e <= 1023."""
    if e >= -1022:
        return bits_f64(np.uint64(e + 1023) << np.uint64(52))
    return bits_f64(np.uint64(1) << np.uint64(e + 1074))


@njit(cache=True, inline="always")
def round_scalar(x, sigma, params, mode, rbits):
    """round_F(x + sigma*epsilon) for an infinitesimal epsilon (sigma in {-1, 0, 1});
    ``rbits`` is a uniform random uint64, read only by stochastic rounding."""
    p, emin, maxval, ovf, ftz, minnormal = params
    if x != x:
        return x
    if x == math.inf or x == -math.inf:
        if ovf == OVF_INF:
            return x
        if ovf == OVF_SAT:
            return math.copysign(maxval, x)
        return math.nan
    b = f64_bits(x)
    neg = (b >> np.uint64(63)) != 0
    efield = np.int64((b >> np.uint64(52)) & np.uint64(0x7FF))
    S = np.int64(b & np.uint64(0xFFFFFFFFFFFFF))
    smag = sigma
    if efield == 0:
        e = np.int64(-1022)
        if S == 0:
            if sigma == 0:
                return x
            # the exact value is a nonzero of sign sigma, smaller than any float64 breakpoint
            neg = sigma < 0
            S = np.int64(1)
            smag = 0
    else:
        e = efield - 1023
        S = S | (np.int64(1) << 52)
    if neg:
        smag = -smag
    q = max(e, emin) - (p - 1)
    k = q - (e - 52)
    up = False
    if mode == 4:
        if k >= 63:
            trunc = np.int64(0)
            frac = float(S) * _pow2(max(-k, -1074)) if k <= 1074 else 0.0
        else:
            trunc = S >> k
            frac = float(S & ((np.int64(1) << k) - 1)) * _pow2(-k)
        up = float(rbits >> np.uint64(11)) * 1.1102230246251565e-16 < frac
    else:
        if k > 60:
            S = np.int64(1)
            k = np.int64(60)
        R = (S << 2) + smag
        K = k + 2
        trunc = R >> K
        rem = R & ((np.int64(1) << K) - 1)
        if mode == 0:
            half = np.int64(1) << (K - 1)
            up = rem > half or (rem == half and (trunc & 1) == 1)
        elif mode == 2:
            up = rem != 0 and not neg
        elif mode == 3:
            up = rem != 0 and neg
    mag = float(trunc + up) * _pow2(q)
    if mag > maxval:
        toward_zero = mode == 1 or (mode == 2 and neg) or (mode == 3 and not neg)
        if ovf == OVF_SAT or toward_zero:
            mag = maxval
        elif ovf == OVF_INF:
            mag = math.inf
        else:
            return math.nan
    elif ftz and mag < minnormal:
        mag = 0.0
    return -mag if neg else mag


@njit(cache=True)
def _round_array(x, out, params, mode, rbits):
    for i in range(x.size):
        out[i] = round_scalar(x[i], 0, params, mode, rbits[i % rbits.size])


def _random_bits(rng, size: int, mode_code: int) -> np.ndarray:
    if mode_code != STOCHASTIC:
        return np.zeros(1, dtype=np.uint64)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return gen.bit_generator.random_raw(max(size, 1)).astype(np.uint64, copy=False)


def round_to(x, fmt: "str | Format", rounding: "str | RoundingMode" = "nearest", *, saturate: bool = False,
             subnormals: bool = True, rng: "np.random.Generator | int | None" = None):
    """Round ``x`` (scalar or array of any shape, converted to float64) once to ``fmt``.

    Returns float64 values exactly representable in ``fmt`` (same shape; a numpy scalar
    for scalar input). NaN stays NaN. Overflow gives ±inf where the format has inf, NaN
    where it has NaN only, ±max with ``saturate`` (and always for formats with neither);
    directed modes that round toward zero give ±max as IEEE 754 says.
    ``subnormals=False`` flushes results below the smallest normal to ±0. Stochastic
    rounding draws from ``rng`` (a ``numpy.random.Generator`` or a seed).
    """
    f = get_format(fmt)
    mode = get_rounding(rounding)
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise MixaccError(f"round_to needs real numbers, got an array of dtype {arr.dtype}.")
    flat = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    _round_array(flat, out, kernel_params(f, saturate, subnormals), mode.code, _random_bits(rng, flat.size, mode.code))
    if arr.ndim == 0:
        return out[0]
    return out.reshape(arr.shape)
