"""Error-free transformations in float64 (numba-compiled scalars).

* ``two_sum(a, b) = (s, e)`` with s = fl(a + b) and s + e = a + b exactly (Knuth).
* ``two_prod(a, b) = (p, e)`` with p = fl(a b) and p + e = a b exactly (Dekker/Veltkamp
  splitting), provided no overflow (|a|, |b| < 2^996) and e_a + e_b >= -969 (no
  underflow of the error term); ``two_prod_exact_ok`` tests this.
* ``sum_rn(vals, n, partials) = (h, sigma)``: h = RN(sum of vals[:n]) and
  sigma = sign(exact sum - h), via Shewchuk's nonoverlapping partials (the algorithm
  behind Python's ``math.fsum``); ``partials`` is caller-owned scratch of length >= n.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = ["two_sum", "two_prod", "two_prod_exact_ok", "sum_rn"]

_SPLITTER = 134217729.0  # 2^27 + 1
_TWO_PROD_MAX = 2.0**995
_TWO_PROD_MIN = 2.0**-969


@njit(cache=True, inline="always")
def two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(cache=True, inline="always")
def _split(a):
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


@njit(cache=True, inline="always")
def two_prod(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@njit(cache=True, inline="always")
def two_prod_exact_ok(a, b, p):
    """True when ``two_prod(a, b)`` is exact: operands small enough to split, and the
    product p = fl(a b) (or zero) far enough from the underflow range."""
    if a == 0.0 or b == 0.0:
        return True
    return abs(a) < _TWO_PROD_MAX and abs(b) < _TWO_PROD_MAX and abs(p) >= _TWO_PROD_MIN and abs(p) < math.inf


@njit(cache=True)
def sum_rn(vals, n, partials):
    m = 0
    for t in range(n):
        x = vals[t]
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
        m = i + 1
    if m == 0:
        return 0.0, 0
    j = m - 1
    hi = partials[j]
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
    if j > 0 and (lo < 0.0) == (partials[j - 1] < 0.0) and partials[j - 1] != 0.0:
        y = lo * 2.0
        x = hi + y
        if x - hi == y:
            return x, -sigma
    return hi, sigma
