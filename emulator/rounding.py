"""Correct rounding of float64 values (or of an exact value known as ``x`` plus the sign
of ``exact - x``) to any :class:`~emulator.formats.Format`.

``round_F(v)`` is computed on the significand as an integer: |v| = S 2^(e-52) is split at
the format's quantum 2^q, q = max(e, emin) - p + 1, into ``trunc`` and a remainder that
decides the rounding (ties to even, directed, or stochastic with probability equal to the
remainder's share of the quantum). The result is (trunc + up) 2^q, then the overflow and
flush-to-zero rules of the format. The input is rounded once: no intermediate format.

``sigma`` lets callers round an exact value they hold as ``x`` (a faithful float64
approximation) plus the sign of the remaining error: every breakpoint of a format with
p <= 52 is a float64, so ``(x, sigma)`` determines the rounding (for p = 53, ``x`` must be
the round-to-nearest float64 of the exact value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit

from ._bits import bits_f64, f64_bits
from .arrays import real_array
from .errors import MixaccError
from .formats import Format, get_format
from .registry import Registry

__all__ = ["RoundingMode", "ROUNDING_MODES", "NEAREST", "ZERO", "UP", "DOWN", "STOCHASTIC", "get_rounding", "round_to",
           "RoundingParams", "kernel_params", "overflow_magnitude", "round_scalar", "stream_bits"]

# the integer codes of the rounding modes, the one definition every kernel and the
# exact twin compare against (module constants: numba compiles them in as literals)
NEAREST, ZERO, UP, DOWN, STOCHASTIC = range(5)


@dataclass(frozen=True)
class RoundingMode:
    """A rounding mode: its name, the integer code the kernels use, what it does."""

    name: str
    code: int
    description: str
    deterministic: bool = True


ROUNDING_MODES: Registry[RoundingMode] = Registry("rounding mode")
for _m in (
    RoundingMode("nearest", NEAREST, "round to nearest, ties to even"),
    RoundingMode("zero", ZERO, "toward zero (truncation)"),
    RoundingMode("up", UP, "toward +inf"),
    RoundingMode("down", DOWN, "toward -inf"),
    RoundingMode("stochastic", STOCHASTIC, "up with probability equal to the distance to the lower neighbour, in ulps",
                 False),
):
    ROUNDING_MODES.add(_m.name, _m)


def get_rounding(name: "str | RoundingMode") -> RoundingMode:
    """The rounding mode called ``name`` (see ``ROUNDING_MODES``)."""
    return name if isinstance(name, RoundingMode) else ROUNDING_MODES.get(name)


class RoundingParams(NamedTuple):
    """What ``round_scalar`` reads about a format (a record numba passes by value)."""

    p: int  # significand bits, the hidden bit included
    emin: int  # exponent of the smallest normal
    maxval: float  # largest finite value
    overflow: float  # |result| of an overflow away from zero, and of an infinite input
    ftz: bool  # results below the smallest normal flush to zero
    minnormal: float  # smallest normal


@lru_cache(maxsize=256)
def kernel_params(fmt: Format, saturate: bool = False, subnormals: bool = True) -> RoundingParams:
    """The constants the kernels read, derived once. The overflow magnitude is inf
    (formats with inf), NaN (formats with NaN only) or max (``saturate``, or formats with
    neither)."""
    return RoundingParams(p=int(fmt.p), emin=int(fmt.emin), maxval=float(fmt.max),
                          overflow=overflow_magnitude(fmt, saturate), ftz=not subnormals,
                          minnormal=float(fmt.min_normal))


def overflow_magnitude(fmt: Format, saturate: bool = False) -> float:
    """|result| of an overflow that rounds away from zero: max (``saturate``, or formats
    with neither inf nor NaN), inf (formats with inf) or NaN (formats with NaN only)."""
    if saturate or fmt.specials == "finite":
        return float(fmt.max)
    return math.inf if fmt.has_inf else math.nan


_ABS_MASK = np.uint64(0x7FFFFFFFFFFFFFFF)
_FRAC_MASK = np.int64((1 << 52) - 1)
_HIDDEN = np.int64(1 << 52)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _pow2(q):
    """2.0**q exactly, for -1074 <= q <= 1023 (branch-free: both encodings, then a select)."""
    normal = bits_f64(np.uint64(max(q, -1022) + 1023) << np.uint64(52))
    subnormal = bits_f64(np.uint64(1) << np.uint64(min(max(q + 1074, 0), 63)))
    return normal if q >= -1022 else subnormal


@njit(cache=True, inline="always")
def round_scalar(x, sigma, params, mode, rbits):
    """round_F(x + sigma*epsilon) for an infinitesimal epsilon > 0 (sigma in {-1, 0, 1}).

    |x| = S 2^(e-52) is cut at the quantum 2^q, q = max(e, emin) - p + 1, into
    trunc = floor(S / 2^k), k = q - e + 52, and a remainder that decides the rounding;
    the result is (trunc + up) 2^q, then the overflow and flush-to-zero rules. Stochastic
    rounding ignores sigma and rounds the magnitude up when ``rbits`` (uniform uint64) <
    remainder 2^(64-k), i.e. with probability remainder / 2^k. Written with selects, not
    branches, so that loops over it vectorise; ``mode`` should be a compile-time constant
    there.
    """
    p, emin = params.p, params.emin
    b = f64_bits(x)
    neg = (b >> np.uint64(63)) != 0
    a = np.int64(b & _ABS_MASK)
    efield = a >> 52
    S = (a & _FRAC_MASK) | (_HIDDEN if efield != 0 else np.int64(0))
    e = max(efield, np.int64(1)) - 1023
    direction = -sigma if neg else sigma  # sign of (exact magnitude - |x|)
    tiny = a == 0 and sigma != 0  # exact value nonzero, below every float64 breakpoint
    neg = (sigma < 0) if tiny else neg
    direction = 1 if tiny else direction
    below_power = direction < 0 and S == _HIDDEN and e > emin  # exact value in the binade below |x|
    S = S << 1 if below_power else S
    e = e - 1 if below_power else e
    q = max(e, emin) - p + 1
    k = q - e + 52
    if mode == STOCHASTIC:
        trunc = S >> min(k, 63)
        rem = np.uint64(S - (trunc << min(k, 63)))
        threshold = (rem << np.uint64(min(64 - k, 63))) if k <= 64 else (np.uint64(S) >> np.uint64(min(k - 64, 63)))
        up = rbits < threshold
    else:
        R = ((min(S, np.int64(1)) if k > 60 else S) << 2) + direction  # 2 guard bits; sticky beyond 60
        K = min(k, 60) + 2
        trunc = R >> K
        rem = R & ((np.int64(1) << K) - 1)
        if mode == NEAREST:
            half = np.int64(1) << (K - 1)
            up = rem > half or (rem == half and (trunc & 1) == 1)
        elif mode == UP:
            up = rem != 0 and not neg
        elif mode == DOWN:
            up = rem != 0 and neg
        else:
            up = False
    mag = float(trunc + up) * _pow2(q)
    toward_zero = mode == ZERO or (mode == UP and neg) or (mode == DOWN and not neg)
    mag = (params.maxval if toward_zero else params.overflow) if mag > params.maxval else mag
    mag = 0.0 if (params.ftz and mag < params.minnormal) else mag
    mag = params.overflow if efield == 2047 else mag  # ±inf input
    result = -mag if neg else mag
    return x if x != x else result


@njit(cache=True, inline="always")
def stream_bits(key, i):
    """The i-th output (i >= 0) of SplitMix64 seeded with ``key`` (Steele, Lea, Flood
    2014): a counter-based stream, so element i's random bits do not depend on how the
    work is split."""
    z = key + (np.uint64(i) + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _round_loop(x, out, params, mode, key):
    for i in range(x.size):
        out[i] = round_scalar(x[i], 0, params, mode, stream_bits(key, i) if mode == STOCHASTIC else np.uint64(0))


@njit(cache=True)
def _round_array(x, out, params, mode, key):
    # one loop per mode, each with the mode as a constant, so that it vectorises
    if mode == NEAREST:
        _round_loop(x, out, params, NEAREST, key)
    elif mode == ZERO:
        _round_loop(x, out, params, ZERO, key)
    elif mode == UP:
        _round_loop(x, out, params, UP, key)
    elif mode == DOWN:
        _round_loop(x, out, params, DOWN, key)
    else:
        _round_loop(x, out, params, STOCHASTIC, key)


def _stream_key(rng, mode_code: int) -> np.uint64:
    if mode_code != STOCHASTIC:
        return np.uint64(0)
    try:
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    except (TypeError, ValueError):
        raise MixaccError(
            f"rng == {rng!r}, must be a numpy.random.Generator, a non-negative integer seed or None.") from None
    return np.uint64(gen.integers(0, 2**64, dtype=np.uint64))


def round_to(x, fmt: "str | Format", rounding: "str | RoundingMode" = "nearest", *, saturate: bool = False,
             subnormals: bool = True, rng: "np.random.Generator | int | None" = None):
    """Round ``x`` (scalar or array of any shape, converted to float64) once to ``fmt``.

    Returns float64 values exactly representable in ``fmt`` (same shape; a numpy scalar
    for scalar input). NaN stays NaN. Overflow gives ±inf where the format has inf, NaN
    where it has NaN only, ±max with ``saturate`` (and always for formats with neither);
    directed modes that round toward zero give ±max as IEEE 754 says; an infinite input
    stays ±inf where the format has inf (±max when saturating, NaN otherwise).
    ``subnormals=False`` flushes results below the smallest normal to ±0. Stochastic
    rounding draws one key from ``rng`` (a ``numpy.random.Generator`` or a seed) and
    element i uses the i-th output of the SplitMix64 stream of that key.
    """
    f = get_format(fmt)
    mode = get_rounding(rounding)
    arr = real_array(x, "round_to input")
    flat = arr.reshape(-1)
    out = np.empty_like(flat)
    _round_array(flat, out, kernel_params(f, saturate, subnormals), mode.code, _stream_key(rng, mode.code))
    if arr.ndim == 0:
        return out[0]
    return out.reshape(arr.shape)
