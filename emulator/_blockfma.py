"""Numba kernel of block-FMA accumulation (``emulator.tensorcore``; semantics in
docs/method.md#tensor-core-accumulation), vectorised over output components.

Exactness. Every product a b of the supported operands is exact in float64 (at most 26
significant bits each). One step with largest term exponent M scales each term by
2^(F - M), a power of two, and truncates: trunc(t 2^(F - M)) is the term's truncation
to a multiple of 2^(M - F) in units of that quantum, an integer below 2^(F + 2) (2^(F + 10)
for a group of 16 fp4 products), exact unless t 2^(F - M) underflows, where it is
below 1 and truncates to 0 either way. The step's integer sum stays below 2^53
(``tensorcore.MAX_SUM_BITS``), so float64 additions are exact; V = sum 2^(M - F) is exact
and is rounded once to the output format by scaling to its quantum and trunc / rint.

Operand exponents E (int32, ``ZERO_EXP`` for zeros) come from the driver; an all-zero
step has M = ``M_FLOOR``, below every real exponent. Non-finite operands follow
MMA-Sim: the result of a step is the float64 sum of C and the products when that sum is
not finite (inf, or NaN for inf - inf and 0 * inf).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._bits import bits_f64, f64_bits
from .rounding import round_scalar

ZERO_EXP = np.int32(-30000)  # exponent of a zero operand (sums of two stay far below M_FLOOR)
M_FLOOR = np.int32(-960)  # a step's M is at least this (2^(F - M) and 2^(M - F) stay normal for F <= 50)
LANES = 256  # components per tile
SAMPLES = 4  # samples sharing one pass over a tile of W


@njit(cache=True, inline="always")
def _pow2(q):
    return bits_f64(np.uint64(q + 1023) << np.uint64(52))


@njit(cache=True, inline="always")
def _exponent(v, emin):
    """max(floor(log2 |v|), emin) of a nonzero float64 v (normal in float64), ZERO_EXP for 0."""
    e = np.int32((f64_bits(v) >> np.uint64(52)) & np.uint64(0x7FF)) - np.int32(1023)
    return max(e, np.int32(emin)) if v != 0.0 else np.int32(ZERO_EXP)


@njit(cache=True, inline="always")
def _round_out(s, m, frac, out_frac, out_emin, out_max, nearest):
    """The output rounding of V = s 2^(m - frac) (exact): to out_frac fraction bits at
    exponent max(floor(log2 |V|), out_emin), toward zero or to nearest even; beyond
    out_max it is ±inf. Returns (value, overflowed); a zero is +0."""
    v = s * _pow2(m - frac)
    a = abs(v)
    e = max(np.int64((f64_bits(a) >> np.uint64(52)) & np.uint64(0x7FF)) - 1023, out_emin)
    t = a * _pow2(out_frac - e)
    t = np.rint(t) if nearest else np.trunc(t)
    r = t * _pow2(e - out_frac)
    over = r > out_max
    r = math.inf if over else r
    return (-r if v < 0 else r) + 0.0, over


@njit(cache=True, nogil=True)
def kernel_blockfma(x, ex, wt, ewt, c0, acc0, step, group, frac, out_frac, out_emin, out_max, nearest, promote,
                    specials, p32, r0, r1, y, ovf):
    """y[r - r0, i] for samples r0 <= r < r1 of x (N, n) against wt = W^T (n, m): steps of
    ``step`` products (``group`` products per truncated term) from C = c0, or from 0 in
    each of the ``promote``-product intervals summed into acc (from acc0) rounded to fp32
    (``p32`` its ``round_scalar`` params). ``specials``: some operand may be non-finite."""
    n, m = wt.shape
    width = promote if promote > 0 else max(n, 1)
    c = np.empty((SAMPLES, LANES))
    acc = np.empty((SAMPLES, LANES))
    big = np.empty((SAMPLES, LANES), dtype=np.int32)
    scale = np.empty((SAMPLES, LANES))
    total = np.empty((SAMPLES, LANES))
    naive = np.empty((SAMPLES, LANES))
    term = np.empty(LANES)
    flag = np.zeros((SAMPLES, LANES), dtype=np.bool_)
    for rg in range(r0, r1, SAMPLES):
        g = min(SAMPLES, r1 - rg)
        for i0 in range(0, m, LANES):
            lanes = min(LANES, m - i0)
            for q in range(g):
                for i in range(lanes):
                    c[q, i] = 0.0 if promote > 0 else c0[i0 + i]
                    acc[q, i] = acc0[i0 + i]
                    flag[q, i] = False
            for lo in range(0, n, width):
                hi = min(n, lo + width)
                for j0 in range(lo, hi, step):
                    j1 = min(hi, j0 + step)
                    for q in range(g):
                        for i in range(lanes):
                            big[q, i] = _exponent(c[q, i], out_emin)
                    for j in range(j0, j1, group):
                        ew = ewt[j, i0:i0 + lanes]
                        for q in range(g):
                            exj = ex[rg + q, j]
                            for i in range(lanes):
                                big[q, i] = max(big[q, i], exj + ew[i])
                    for q in range(g):
                        for i in range(lanes):
                            mm = min(max(big[q, i], M_FLOOR), 1023)
                            big[q, i] = mm
                            scale[q, i] = _pow2(frac - mm)
                            total[q, i] = np.trunc(c[q, i] * scale[q, i])
                            naive[q, i] = c[q, i]
                    for j in range(j0, j1, group):
                        if group == 1:
                            w = wt[j, i0:i0 + lanes]
                            for q in range(g):
                                xj = x[rg + q, j]
                                for i in range(lanes):
                                    total[q, i] += np.trunc(xj * w[i] * scale[q, i])
                                if specials:
                                    for i in range(lanes):
                                        naive[q, i] += xj * w[i]
                        else:
                            for q in range(g):
                                for i in range(lanes):
                                    term[i] = 0.0
                                for jj in range(j, min(j + group, j1)):
                                    xj = x[rg + q, jj]
                                    for i in range(lanes):
                                        term[i] += xj * wt[jj, i0 + i]
                                for i in range(lanes):
                                    total[q, i] += np.trunc(term[i] * scale[q, i])
                                    naive[q, i] += term[i]
                    for q in range(g):
                        for i in range(lanes):
                            value, over = _round_out(total[q, i], np.int64(big[q, i]), frac, out_frac, out_emin,
                                                     out_max, nearest)
                            value = value if math.isfinite(c[q, i]) else c[q, i]
                            value = value if math.isfinite(naive[q, i]) else naive[q, i]
                            flag[q, i] |= over
                            c[q, i] = value
                if promote > 0:
                    for q in range(g):
                        for i in range(lanes):
                            h = acc[q, i] + c[q, i]
                            bb = h - acc[q, i]
                            err = (acc[q, i] - (h - bb)) + (c[q, i] - bb)
                            sigma = 0 if err == 0.0 or not math.isfinite(h) else (1 if err > 0.0 else -1)
                            rounded = round_scalar(h, sigma, p32, 0, np.uint64(0))
                            flag[q, i] |= abs(rounded) > 3.4028234663852886e38
                            acc[q, i] = rounded
                            c[q, i] = 0.0
            for q in range(g):
                for i in range(lanes):
                    out = acc[q, i] if promote > 0 else c[q, i]
                    y[rg - r0 + q, i0 + i] = out
                    ovf[rg - r0 + q, i0 + i] = flag[q, i] or not math.isfinite(out)
