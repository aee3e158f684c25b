"""Upward-rounded arithmetic for rigorous bounds: every function returns a float64 no
smaller than the exact value it bounds (docs/method.md#rigorous-evaluation-in-float64).
Scalars go through exact integers and rationals; arrays through one step up from
round-to-nearest (:func:`up_add`, :func:`up_mul`) and the inflated matrix product
:func:`upper_abs_matmul`."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from emulator.errors import ShapeError

__all__ = ["float_up", "growth", "next_up", "next_down", "up_add", "up_mul", "upper_abs_matmul", "upper_sum", "lower_sum",
           "TINY64"]

TINY64 = 2.0**-1074


def float_up(q: Fraction) -> float:
    """The smallest float64 >= q (inf when q overflows)."""
    try:
        v = float(q)
    except OverflowError:
        return math.inf
    return v if Fraction(v) >= q else math.nextafter(v, math.inf)


_SCALE = 256  # bits of the upward fixed-point arithmetic below


def _pow_up(u: float, k: int) -> int:
    """An integer M >= (1 + u)^k 2^_SCALE (u a power of two), by squaring with every
    product rounded up."""
    one = 1 << _SCALE
    q = Fraction(u)
    base = one + -((-q.numerator * one) // q.denominator)
    result = one
    while k:
        if k & 1:
            result = -((-result * base) >> _SCALE)
        base = -((-base * base) >> _SCALE)
        k >>= 1
    return result


def growth(*factors: tuple[int, float]) -> float:
    """prod (1 + u)^k - 1 over the (k, u) pairs, rounded up: the bound on |theta| for a
    path of k roundings with |delta| <= u in each format (<= gamma_k(u) when k u < 1)."""
    one = 1 << _SCALE
    m = one
    for k, u in factors:
        if k:
            m = -((-m * _pow_up(u, int(k))) >> _SCALE)
    return float_up(Fraction(m - one, one))


def next_up(value) -> np.ndarray:
    """The next float64 above ``value``, the round-to-nearest result of one operation: no
    smaller than that operation's exact result (NaN stays NaN)."""
    return np.nextafter(value, np.inf)


def next_down(value) -> np.ndarray:
    """The next float64 below ``value`` (see :func:`next_up`): no larger than the exact
    result."""
    return np.nextafter(value, -np.inf)


def up_add(a, b) -> np.ndarray:
    """A float64 >= a + b elementwise (NaN becomes inf)."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.nextafter(np.add(a, b), np.inf)
    return np.where(np.isnan(out), np.inf, out)


def up_mul(a, b) -> np.ndarray:
    """A float64 >= a b elementwise, a, b >= 0 (NaN, e.g. 0 * inf, becomes inf)."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.nextafter(np.multiply(a, b), np.inf)
    return np.where(np.isnan(out), np.inf, out)


def upper_abs_matmul(v, W) -> np.ndarray:
    """An upper bound on |W| v for v >= 0 ((N, n) or (n,)): the float64 product times
    phi = 1 + (n + 1) 2^-52, plus (n + 1) 2^-1074, rounded up.

    Proof. Each term |w_ij| v_j >= 0 passes at most d = n roundings in the float64 matmul
    (one product, n - 1 additions, in any order, with or without FMA), each of relative
    error <= u = 2^-53; a product may also lose eta <= 2^-1075 to underflow, additions of
    nonnegative numbers lose nothing to it. So the computed S satisfies
    S >= s (1 - u)^n - n eta, i.e. s <= (S + n eta)(1 - u)^-n <= S (1 - u)^-n + 2 n eta.
    fl(S phi) >= S phi (1 - u) - eta >= S (1 - u)^-n - eta because
    phi (1 - u)^(n+1) >= (1 + 2(n+1)u)(1 - (n+1)u) >= 1 while 2(n+1)u <= 1. Hence
    s <= fl(S phi) + (2n + 1) eta <= fl(S phi) + (n + 1) 2^-1074, and one rounding up of
    that sum keeps it above. phi is a float64 (1 + an integer times 2^-52).
    """
    v = np.asarray(v, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[1]
    if v.shape[-1] != n:
        raise ShapeError(f"v of shape {v.shape} does not fit W of shape {W.shape}.")
    with np.errstate(invalid="ignore", over="ignore"):
        s = v @ np.abs(W).T
        s = np.where(np.isnan(s), np.inf, s)
        phi = 1.0 + (n + 1) * 2.0**-52
        return up_add(s * phi, (n + 1) * TINY64)


def upper_sum(v) -> np.ndarray:
    """An upper bound on the sum of v >= 0 along the last axis (keeping it, size 1): the
    bound of :func:`upper_abs_matmul` with weights 1."""
    v = np.asarray(v, dtype=np.float64)
    return upper_abs_matmul(v, np.ones((1, v.shape[-1])))


def lower_sum(v) -> np.ndarray:
    """A lower bound on the sum of v >= 0 along the last axis (keeping it, size 1): the
    float64 sum S times 1 - n 2^-52, rounded down, and never below 0.

    Proof. Each term passes at most n - 1 roundings (additions in any order), each of
    relative error <= u = 2^-53, and additions of nonnegative numbers lose nothing to
    underflow; so S <= s (1 + u)^(n-1), i.e. s >= S (1 + u)^-(n-1) >= S (1 - (n - 1) u)
    >= S (1 - n 2^-52). An overflowed S gives 0."""
    v = np.asarray(v, dtype=np.float64)
    n = v.shape[-1]
    with np.errstate(invalid="ignore", over="ignore"):
        s = np.sum(v, axis=-1, keepdims=True)
        low = np.maximum(next_down(s * (1.0 - n * 2.0**-52)), 0.0)
    return np.where(np.isfinite(s), low, 0.0)
