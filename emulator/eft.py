"""Error-free transformations in float64 (numba-compiled scalars).

* ``two_sum(a, b) = (s, e)``: s = fl(a + b) and s + e = a + b exactly (Knuth) when s is
  finite and no intermediate overflows, e.g. when |a| >= |b| or |a|, |b| <= 2^1023
  (beyond, s - a can overflow: two_sum(-1.5 * 2^971, max) has e = NaN).
* ``fast_two_sum(a, b) = (s, e)``: the same when |a| >= |b| or a = 0 (Dekker).
* ``two_prod(a, b) = (p, e)``: p = fl(a b) and e = fl(a b - p) by one fused multiply-add;
  p + e = a b exactly when ``two_prod_exact_ok(a, b, p)``: a zero operand, or
  2^-969 <= |p| < inf (then a b - p is a multiple of 2^-1074 of at most 53 bits).
* ``grow_expansion(x, partials, m)``: adds x exactly to the nonoverlapping expansion
  ``partials[:m]`` (increasing magnitudes; Shewchuk 1997), returns its new length.
* ``expansion_rn(partials, m) = (h, sigma)``: h = RN(sum of the expansion), sigma =
  sign(exact - h).
* ``sum_rn(vals, n, partials) = (h, sigma)``: h = RN(sum of vals[:n]) and
  sigma = sign(exact sum - h), from the expansion (the algorithm behind Python's
  ``math.fsum``); ``partials`` is caller-owned scratch of length >= n.
"""

from __future__ import annotations

import math

from numba import njit

from ._bits import fma

__all__ = ["two_sum", "fast_two_sum", "two_prod", "two_prod_exact_ok", "grow_expansion", "expansion_rn", "sum_rn"]

MIN_EXACT_PRODUCT = 2.0**-969  # smallest nonzero product whose FMA error term is exact


@njit(cache=True, inline="always", error_model="numpy")
def two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(cache=True, inline="always", error_model="numpy")
def fast_two_sum(a, b):
    s = a + b
    return s, b - (s - a)


@njit(cache=True, inline="always", error_model="numpy")
def two_prod(a, b):
    p = a * b
    return p, fma(a, b, -p)


@njit(cache=True, inline="always", error_model="numpy")
def two_prod_exact_ok(a, b, p):
    if a == 0.0 or b == 0.0:
        return True
    return MIN_EXACT_PRODUCT <= abs(p) < math.inf


@njit(cache=True, inline="always", error_model="numpy")
def grow_expansion(x, partials, m):
    i = 0
    for j in range(m):
        y = partials[j]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            partials[i] = lo
            i += 1
        x = hi
    partials[i] = x
    return i + 1


@njit(cache=True, inline="always", error_model="numpy")
def expansion_rn(partials, m):
    """(RN(sum of partials[:m]), sign(exact - RN)) for a nonoverlapping expansion in
    increasing magnitudes, ties to even."""
    j = m - 1
    hi = partials[j] if m > 0 else 0.0
    lo = 0.0
    while j > 0:
        x = hi
        j -= 1
        y = partials[j]
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            break
    if lo == 0.0:
        return hi, 0
    sigma = 1 if lo > 0.0 else -1
    # exactly half an ulp with the rest of the same sign: the sum is past the tie
    if j > 0 and (lo < 0.0) == (partials[j - 1] < 0.0) and partials[j - 1] != 0.0:
        y = lo * 2.0
        x = hi + y
        if x - hi == y:
            return x, -sigma
    return hi, sigma


@njit(cache=True, error_model="numpy")
def sum_rn(vals, n, partials):
    m = 0
    for t in range(n):
        m = grow_expansion(vals[t], partials, m)
    return expansion_rn(partials, m)
