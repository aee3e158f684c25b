"""Numba kernels of the accumulation emulator (``emulator.linear``).

Every rounding event rounds an exact value v, known as float64 terms whose exact sum is
v, once to a format F. A lane (one sample, one output component) goes through up to
three tiers, each of which either proves its answer or leaves the lane to the next:

1. QUICK PASS (round to nearest; ``_quick_pass``): one rounding gives h = RN(v) for a sum
   s + w x (one FMA) or a + b, h is rounded to F's grid with a magic constant, and a
   comparison or two prove the result; about 13 vector operations per lane.
2. FAST PATH (every mode, every sum; ``fast_round``): TwoSum and FMA give v exactly as
   h + rho, rounded with the same magic constant and checked against the nearest
   breakpoint.
3. EXACT PATH (scalar, the lanes left): ``sum_rn`` and ``round_scalar``.

Loops over components vectorise (AVX2 or AVX-512); a step writes its results into a
buffer other than its inputs, so the quick pass stores nothing but results and a lane it
leaves is redone from its intact inputs. Kernels adapt: when the quick pass leaves many
lanes (exact data full of ties) they skip it for a while.

Rounding on F's grid. With h in the binade [2^e, 2^(e+1)) (e raised to emin in F's
subnormal range) the quantum of F is Q = 2^(e-p+1); C = 1.5 * 2^(e+53-p) has ulp(C) = Q
and |h| < C / 3 (p <= 51), so y = (h + C) - C is round-to-nearest-even of h on the grid
Q Z (exact float64 steps); d = h - y is exact and |d| <= Q/2.

Quick pass, the proof. F's midpoints are float64 numbers (p + 1 <= 53 bits, at least
2^(emin-p) >= 2^-1074), and h = RN(v) means that no float64 other than h lies between v
and h. So unless h is itself a midpoint (|d| = Q/2), no midpoint of F separates v from h
and round_F(v) = round_F(h) = y, provided y is F's rounding: |h| < 2^floor(log2 max) (no
overflow) and, with ftz, |h| >= F's smallest normal. The four shapes of sums:

* LEAF s + w x (w x exact), one FMA: proven when |d| < Q/2.
* SUM a + b: proven when |d| < Q/2, or when h is exact, a tie then going to even as y
  does: h - a = b and h - b = a (the difference with the larger operand is exact).
* JOIN a + b, both values of F with p <= 25 (pairwise joins): a tie of h is always exact.
  With |a| >= |b| and Q_a the quantum at a, an inexact float64 sum spans more than 53 bit
  positions, so the lowest bit of b lies below 2^(e_a - 51) and |b| < 2^(2p-53) Q_a <=
  Q_a/8: h is then within Q_a/8 + ulp(h) of the F value a, no midpoint. Every h in range
  is proven.
* PAIR w1 x1 + w2 x2 (pairwise leaves): p = fl(w1 x1) and h = fl(p + w2 x2) (one FMA)
  give |v - h| <= B = 2^-53 (|p| + |h|) + 2^-1074 <= 2^-53 |p| + 2^-52 E + 2^-1074 (h in
  binade E, |h| < 2E), and the test |d| + fl(2^-51 |p| + 2^-1072) < E (2^-p - 2^-50)
  gives |d| + 2B < Q/2: then |v - y| < Q/2 - B, and when y is a power of two with
  |h| >= |y| (the grid below y is finer) v lies within B < Q/4 of the binade above.

Fast path, the proof. The caller gives h = fl(sum of the high parts) and the residual
rho = v - h through a float ``r`` (sign(r) = sign(rho) when r != 0; r = 0 with A2 > 0
means the sign is unknown) and a bound ``A2``: |rho| < A2, or rho = 0 when A2 = 0. For one sum
s + p of two exact terms with TwoSum error e and product error pl, r = fl(e + pl) and
A2 = 2|r| satisfy this, since |rho| = |e + pl| <= |r| / (1 - 2^-53). y and d as above:

* nearest: the breakpoints nearest y are its midpoints y +- Q/2, except y - Q/4 when y
  is a power of two 2^e above F's smallest normal with |h| >= 2^e (if |y| > |h|, h's
  binade lies below y with quantum Q). If A2 <= Q/2 - |d| and A2 <= Q/4, then
  |v - y| < |d| + A2 <= Q/2 and, in the second case, v > y - Q/4: v lies strictly
  between the midpoints around y and round_F(v) = y. A tie of h (|d| = Q/2) passes only
  when rho = 0 (A2 = 0), and y is then the even neighbour.
* directed: v = y + delta, delta = d + rho, whose sign is sign(d) when A2 <= |d| and
  sign(r) when d = 0. With A2 <= Q/4, v lies within half a step of y, so the result is y
  or its neighbour in the direction the mode asks (one quantum, or Q/2 stepping toward
  zero from a power of two 2^e with |h| >= 2^e, where the grid below is finer).
* stochastic: a = the F value toward zero from v (y, or y - Q when |h| < |y|), with
  c = |v| - |a| in [0, Q). The result is |a| + Q when c > tau, with
  tau = (bits >> 11) * 2^(q-53) (q = log2 Q) from the lane's random bits, else |a|;
  c0 = (|h| - |a|) and c0 - tau are exact, and the decision of h is that of v when
  A2 <= |c0 - tau| (and h lies at least A2 inside the cell).

Overflow: the proven y is the rounding of v with unbounded exponent range, so
|y| > max means overflow (IEEE 754's definition); the value becomes the format's rule
(inf, NaN, or max when saturating or when rounding toward zero).

Exact path (flagged lanes, scalar): the exact terms are summed by ``sum_rn`` into
(h = RN(v), sigma = sign(v - h)), rounded by ``round_scalar``; overflow is detected by
rounding again into the same format with one more exponent bit. Stochastic rounding
compares |v| - |RZ(v)| with tau exactly (a sign of a sum of float64 terms). Nonzero
products must lie within [2^-969, 2^990) in magnitude (their FMA error terms are then
exact) and partial sums below 2^990; a lane that needs anything else is marked DEAD and
finished by the Python twin in ``emulator.linear``.

Random bits: SplitMix64 (Steele, Lea, Flood 2014) as a counter-based hash:
key(sample, component) = stream(stream(mix(seed), sample), component) and the bits of a
rounding event are stream(key, tag), the tag naming the event (see ``TAG_*``), so
results do not depend on batch size or thread count.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit

from ._bits import bits_f64, f64_bits, fma
from .eft import MIN_EXACT_PRODUCT, sum_rn
from .formats import Format
from .rounding import DOWN, NEAREST, STOCHASTIC, UP, ZERO, RoundingMode, RoundingParams, kernel_params, \
    overflow_magnitude, round_scalar
from .rounding import stream_bits as stream

MAX_TERMS_LOG2 = 23  # at most 2^23 inputs: an exact sum has at most 2^24 + 3 terms
BIG = 2.0**990  # terms on the exact path stay below: sums of 2^24 + 3 of them stay finite
BIG_FAST = 2.0**900  # largest |h| on the fast path (keeps C finite)
FEW_SHIFT = 8  # the quick pass leaving <= m / 2^FEW_SHIFT lanes sends them straight to the exact path
SLOW_STEPS, MAX_SLOW_STEPS = 16, 1024  # steps without the quick pass after it left more
#                                        lanes: 2 SLOW_STEPS, doubling while it keeps failing
SIGN_TOL = 2.0**-24  # |r| > A SIGN_TOL: sign(r) is that of the exact sum of m <= 2^27 residuals,
#                      as |r - rho| <= 2 m 2^-53 A for recursive summation

# tags (typed np.int64, not literals, so that numba compiles each helper once)
TAG_PRODUCT = np.int64(1 << 56)  # | j: rounding of product j to the product format
TAG_BIAS = np.int64(2 << 56)  # rounding of the bias to the starting accumulator
TAG_SUM = np.int64(3 << 56)  # | lo << 28 | hi: a sum over products lo..hi-1 (with what it started from)
TAG_OUTER = np.int64(4 << 56)  # | hi: the outer accumulator after the block ending at product hi
TAG_BIAS_LAST = np.int64(5 << 56)  # the final addition of the bias
_TWO, _THREE, _FOUR = np.int64(2), np.int64(3), np.int64(4)
_NO = np.bool_(False)

_EXPONENT = np.uint64(0x7FF0000000000000)
_MANT = np.uint64(0xFFFFFFFFFFFFF)


class KernelFormat(NamedTuple):
    """A format as the kernels round into it under one accumulation's rounding mode,
    overflow rule and subnormal handling (built once by ``kernel_format``)."""

    params: RoundingParams  # ``round_scalar``'s constants of F
    wide: RoundingParams  # F with one more exponent bit: rounding into it tells overflow
    wide_rz: RoundingParams  # the same keeping subnormals (stochastic rounding's RZ(v))
    mode: int  # the rounding mode's code
    exact_only: bool  # p >= 52 or quanta below float64's normal range: exact path only
    quick: bool  # round to nearest with a fast path: the quick pass applies
    c_mul: float  # 1.5 * 2^(53-p): C = 2^e c_mul has ulp(C) = F's quantum in binade e
    hq_mul: float  # 2^-p: half F's quantum in binade e is 2^e hq_mul
    pair_hq_mul: float  # 2^-p - 2^-50: the same less the share of |h| in the quick pass's bound for pairs
    joins: bool  # the quick pass applies to sums of two values of F without a tie test (p <= 25)
    quick_max: float  # largest binade 2^e the quick pass answers: 2^(e+1) <= max
    quick_min: float  # smallest binade it answers: F's smallest normal with ftz, else 0
    ovf_pos: float  # the result of an overflow of v > 0 (mode and overflow rule)
    ovf_neg: float  # the same for v < 0


def _widened(fmt: Format) -> Format:
    """F with one more exponent bit (same p, same emin): rounding into it is F's rounding
    with an exponent range wide enough to tell overflow."""
    ebits = min(fmt.ebits + 1, 11)
    return Format(f"{fmt.name}+", ebits, fmt.mbits, fmt.bias, "ieee")


@lru_cache(maxsize=256)
def kernel_format(fmt: Format, rounding: RoundingMode, saturate: bool, subnormals: bool) -> KernelFormat:
    """The constants the kernels read for rounding into ``fmt``, derived once."""
    mode = rounding.code
    ovf = overflow_magnitude(fmt, saturate)
    top = float(fmt.max)
    exact_only = fmt.p >= 52 or fmt.emin + 1023 - fmt.p < 1
    quick = mode == NEAREST and not exact_only
    wide = _widened(fmt)
    return KernelFormat(
        params=kernel_params(fmt, saturate, subnormals), wide=kernel_params(wide, False, subnormals),
        wide_rz=kernel_params(wide, False, True), mode=mode, exact_only=exact_only, quick=quick,
        c_mul=1.5 * 2.0 ** (53 - fmt.p), hq_mul=2.0**-fmt.p, pair_hq_mul=2.0**-fmt.p - 2.0**-50,
        joins=quick and fmt.p <= 25, quick_max=2.0 ** (math.frexp(top)[1] - 2),
        quick_min=0.0 if subnormals else float(fmt.min_normal), ovf_pos=top if mode in (ZERO, DOWN) else ovf,
        ovf_neg=-(top if mode in (ZERO, UP) else ovf))


# ---------------------------------------------------------------------------------------
# one lane: F's grid, the quick test, the fast path


@njit(cache=True, inline="always")
def _on_grid(h, fc):
    """(y, d, E, e0): e0 = 2^e for |h| in [2^e, 2^(e+1)) (0 below float64's normal
    range, inf for inf and NaN), E = max(e0, F's smallest normal) the binade of F's
    quantum at h, y = h rounded to nearest-even on that grid, d = h - y (exact)."""
    e0 = bits_f64(f64_bits(h) & _EXPONENT)
    E = max(e0, fc.params.minnormal)
    c = E * fc.c_mul
    y = (h + c) - c
    return y, h - y, E, e0


@njit(cache=True, inline="always")
def _in_quick_range(E, e0, fc):
    """F's rounding is the rounding on the grid: no overflow, and no flush with ftz."""
    return (E <= fc.quick_max) & (e0 >= fc.quick_min)


@njit(cache=True, inline="always")
def quick_leaf(s, w, x, fc):
    """(round_F(s + w x), proven), w x exact: h = RN(s + w x) by one FMA."""
    y, d, E, e0 = _on_grid(fma(w, x, s), fc)
    return y, (abs(d) < E * fc.hq_mul) & _in_quick_range(E, e0, fc)


@njit(cache=True, inline="always")
def quick_sum(a, b, fc):
    """(round_F(a + b), proven) for two float64 values; a tie of h is proven when the sum
    is exact: h - a = b and h - b = a (the difference with the larger operand is exact)."""
    h = a + b
    y, d, E, e0 = _on_grid(h, fc)
    exact = (h - a == b) & (h - b == a)
    return y, ((abs(d) < E * fc.hq_mul) | exact) & _in_quick_range(E, e0, fc)


@njit(cache=True, inline="always")
def quick_join(a, b, fc):
    """(round_F(a + b), proven) for two values of F with p <= 25 (``fc.joins``): every h
    in range is proven."""
    y, _, E, e0 = _on_grid(a + b, fc)
    return y, _in_quick_range(E, e0, fc)


@njit(cache=True, inline="always")
def quick_pair(w1, x1, w2, x2, fc):
    """(round_F(w1 x1 + w2 x2), proven), both products exact: p = fl(w1 x1), h =
    fl(p + w2 x2), proven when |d| + 2B < Q/2 (module docstring)."""
    p = w1 * x1
    y, d, E, e0 = _on_grid(fma(w2, x2, p), fc)
    return y, (abs(d) + fma(abs(p), 2.0**-51, 2.0**-1072) < E * fc.pair_hq_mul) & _in_quick_range(E, e0, fc)


LEAF, SUM, JOIN, PAIR = range(4)  # what a quick step adds (compile-time constants)


@njit(cache=True, inline="always")
def _quick(op, u, v, x1, x2, fc):
    """One lane of a quick step: LEAF u + v x1, SUM u + v, JOIN u + v (values of F), PAIR
    u x1 + v x2."""
    if op == LEAF:
        return quick_leaf(u, v, x1, fc)
    if op == SUM:
        return quick_sum(u, v, fc)
    if op == JOIN:
        return quick_join(u, v, fc)
    return quick_pair(u, x1, v, x2, fc)


@njit(cache=True)
def fast_round(h, r, A2, fc, kind, rb):
    """(round_F(v), proven, overflowed) for v = h + rho described as in the module
    docstring; ``kind`` 0 nearest, 1 directed, 2 stochastic (a compile-time constant)."""
    minnormal = fc.params.minnormal
    y, d, E, _ = _on_grid(h, fc)
    hq = E * fc.hq_mul
    q = hq + hq
    ad = abs(d)
    ay = abs(y)
    ah = abs(h)
    mant0 = (f64_bits(y) & _MANT) == 0
    ok = (ah < BIG_FAST) & (not fc.exact_only)
    if kind == 0:
        ok = ok & (A2 <= hq - ad) & (A2 <= 0.5 * hq)
        res = y
    elif kind == 1:
        sdelta = (d > 0.0) - (d < 0.0) if d != 0.0 else (r > 0.0) - (r < 0.0)
        known = (A2 <= ad) | ((d == 0.0) & (r != 0.0))
        ok = ok & known & (A2 <= 0.25 * q)
        if fc.mode == UP:
            step = np.int64(sdelta > 0)
        elif fc.mode == DOWN:
            step = -np.int64(sdelta < 0)
        else:
            step = np.int64((sdelta > 0) & (y < 0.0)) - np.int64((sdelta < 0) & (y > 0.0))
        toward_zero = (step != 0) & ((step > 0) == (y < 0.0)) & (y != 0.0)
        fine = toward_zero & mant0 & (ay <= ah) & (ay > minnormal)
        res = y + float(step) * (hq if fine else q)
    else:
        dm = ah - ay
        below = dm < 0.0
        a = ay - q if below else ay
        c0 = q + dm if below else dm
        tau = float(rb >> np.uint64(11)) * (q * 1.1102230246251565e-16)
        dd = c0 - tau
        rm = -r if h < 0.0 else r
        cell = (ad >= A2) | ((dm == 0.0) & (rm > 0.0))
        decided = (abs(dd) >= A2) | ((dd == 0.0) & (rm != 0.0))
        ok = ok & cell & decided & (A2 <= 0.25 * q) & (q >= 2.0**-1021) & ((h != 0.0) | (A2 == 0.0))
        up = (dd > 0.0) | ((dd == 0.0) & (rm > 0.0))
        mag = a + q if up else a
        res = -mag if h < 0.0 else mag
    ares = abs(res)
    over = ares > fc.params.maxval
    res = (fc.ovf_neg if res < 0.0 else fc.ovf_pos) if over else res
    res = 0.0 if fc.params.ftz & (ares < minnormal) else res
    return res, ok, over


# ---------------------------------------------------------------------------------------
# exact path


@njit(cache=True)
def _round_scalar(h, sigma, params, mode):
    """``round_scalar`` compiled once (deterministic modes), called from the exact path."""
    return round_scalar(h, sigma, params, mode, np.uint64(0))


@njit(cache=True)
def round_terms(buf, nbuf, work, fc, rb):
    """(round_F(exact sum of buf[:nbuf]), overflowed): finite terms of magnitude < BIG.
    ``work`` is scratch of length >= 2 * nbuf + 4."""
    mode, maxval, minnormal = fc.mode, fc.params.maxval, fc.params.minnormal
    h, sigma = sum_rn(buf, nbuf, work)
    if mode != STOCHASTIC:
        y = _round_scalar(h, sigma, fc.params, mode)
        over = False
        if not abs(y) < maxval:
            over = not abs(_round_scalar(h, sigma, fc.wide, mode)) <= maxval
        return y, over
    if h == 0.0 and sigma == 0:
        return 0.0, False
    neg = h < 0.0 or (h == 0.0 and sigma < 0)
    a = abs(_round_scalar(h, sigma, fc.wide_rz, np.int64(ZERO)))
    qe = (math.frexp(a)[1] - 1 if a >= minnormal else fc.params.emin) - fc.params.p + 1
    kk = rb >> np.uint64(11)
    te = qe - 53
    if te < -1074:
        kk = kk >> np.uint64(min(-1074 - te, 63))
        te = -1074
    tau = float(kk) * math.ldexp(1.0, te)
    ext = work[nbuf + 2:]
    for t in range(nbuf):
        ext[t] = -buf[t] if neg else buf[t]
    ext[nbuf] = -a
    ext[nbuf + 1] = -tau
    diff, _ = sum_rn(ext, nbuf + 2, work)
    mag = a + math.ldexp(1.0, qe) if diff > 0.0 else a
    over = mag > maxval
    if over:
        mag = fc.params.overflow
    elif fc.params.ftz and mag < minnormal:
        mag = 0.0
    return (-mag if neg else mag), over


@njit(cache=True)
def round_special(h, fc):
    """round_F of a non-finite float64 h (IEEE arithmetic has produced it)."""
    return _round_scalar(h, np.int64(0), fc.params, fc.mode if fc.mode != STOCHASTIC else np.int64(NEAREST))


@njit(cache=True, inline="always")
def finite(v):
    return abs(v) < math.inf


@njit(cache=True, inline="always")
def product_in_range(w, x, pr):
    """The exact product w x is pr + fma error and lies in the exact path's range."""
    if w == 0.0 or x == 0.0:
        return True
    return MIN_EXACT_PRODUCT <= abs(pr) < BIG


@njit(cache=True)
def exact_leaf(w, x, fcp, has_p, rbp, buf, work):
    """The exact product w x (``buf[0] + buf[1]``) or its rounding to P (``buf[0]``,
    ``buf[1] = 0``); returns (status, overflowed): status 0 finite, 1 non-finite (buf[0]
    holds the IEEE value), 2 out of range (dead lane)."""
    pr = w * x
    if not (finite(w) and finite(x)):
        buf[0] = round_special(pr, fcp) if has_p and not finite(pr) else pr
        buf[1] = 0.0
        return 1, True
    if not product_in_range(w, x, pr):
        return 2, False
    pl = fma(w, x, -pr)
    if not has_p:
        buf[0], buf[1] = pr, pl
        return 0, False
    buf[0], buf[1] = pr, pl
    p, over = round_terms(buf, _TWO, work, fcp, rbp)
    buf[0], buf[1] = p, 0.0
    return (0 if finite(p) else 1), over


@njit(cache=True)
def exact_add_leaf(s, w, x, fcf, rbs, buf, work):
    """round_F(s + w x) exactly: (value, overflowed, dead)."""
    if s != s:
        return s, False, False
    status, over = exact_leaf(w, x, fcf, _NO, np.uint64(0), buf, work)
    if status == 2 or abs(s) >= BIG and finite(s):
        return s, False, True
    if status == 1 or not finite(s):
        return round_special(s + buf[0], fcf) if not finite(s + buf[0]) else s + buf[0], True, False
    buf[2] = s
    y, over2 = round_terms(buf, _THREE, work, fcf, rbs)
    return y, over or over2, False


@njit(cache=True)
def exact_add(a, b, fcf, rbs, buf, work):
    """round_F(a + b) exactly for two float64 values: (value, overflowed, dead)."""
    if not (finite(a) and finite(b)):
        h = a + b
        return (round_special(h, fcf) if not finite(h) else h), True, False
    if abs(a) >= BIG or abs(b) >= BIG:
        return a, False, True
    buf[0], buf[1] = a, b
    y, over = round_terms(buf, _TWO, work, fcf, rbs)
    return y, over, False


@njit(cache=True)
def exact_add4(a, al, b, bl, fc, rb, buf, work):
    """round_F(a + al + b + bl) exactly: (value, overflowed, dead)."""
    if not (finite(a) and finite(b)):
        h = a + b
        return (round_special(h, fc) if not finite(h) else h), True, False
    if abs(a) >= BIG or abs(b) >= BIG:
        return a, False, True
    buf[0], buf[1], buf[2], buf[3] = a, al, b, bl
    y, over = round_terms(buf, _FOUR, work, fc, rb)
    return y, over, False


@njit(cache=True)
def exact_pair(w1, x1, w2, x2, fc, buf, work):
    """round_F(w1 x1 + w2 x2) exactly (exact products, deterministic modes): (value,
    overflowed, dead). ``buf`` has length >= 6."""
    leaf = buf[4:6]
    status1, over1 = exact_leaf(w1, x1, fc, _NO, np.uint64(0), leaf, work)
    a, al = leaf[0], leaf[1]
    status2, over2 = exact_leaf(w2, x2, fc, _NO, np.uint64(0), leaf, work)
    if status1 == 2 or status2 == 2:
        return 0.0, False, True
    y, over, gone = exact_add4(a, al, leaf[0], leaf[1], fc, np.uint64(0), buf, work)
    return y, over or over1 or over2, gone


# ---------------------------------------------------------------------------------------
# vector steps (one sample, all components): out[i] = round(...) from inputs that ``out``
# does not alias; ``kind``, ``has_p`` and ``op`` are compile-time constants


@njit(cache=True)
def _leaf_fast(w, x, xzero, fcp, has_p, kind, rbp):
    pr = w * x
    pl = fma(w, x, -pr)
    ok = (abs(pr) >= MIN_EXACT_PRODUCT) | (w == 0.0) | xzero
    over = False
    if has_p:
        p, okp, over = fast_round(pr, pl, 2.0 * abs(pl), fcp, kind, rbp)
        return p, 0.0, ok & okp, over
    return pr, pl, ok, over


@njit(cache=True, inline="always")
def _bits_for(keys, i, tag, kind):
    return stream(keys[i], tag) if kind == 2 else np.uint64(0)


@njit(cache=True, inline="always")
def _quick_pass(out, u, v, x1, x2, op, fc):
    """out[i] = the quick pass's lane i (``_quick``; op a constant), round to nearest,
    where proven; returns the number of lanes it leaves, whose out[i] is meaningless."""
    left = 0
    for i in range(out.shape[0]):
        y, ok = _quick(op, u[i], v[i], x1, x2, fc)
        out[i] = y
        left += not ok
    return left


@njit(cache=True, inline="always")
def _quick_marks(u, v, x1, x2, op, flags, fc):
    """flags[i] = ``_quick_pass`` leaves lane i; returns their number."""
    left = 0
    for i in range(flags.shape[0]):
        _, ok = _quick(op, u[i], v[i], x1, x2, fc)
        flags[i] = not ok
        left += not ok
    return left


@njit(cache=True)
def quick_leaves(out, acc, wrow, x, fc):
    """The quick pass of out = round_F(acc + w x) (``_quick_pass``)."""
    return _quick_pass(out, acc, wrow, x, 0.0, LEAF, fc)


@njit(cache=True)
def quick_sums(out, a, b, fc):
    """The quick pass of out = round_X(a + b)."""
    return _quick_pass(out, a, b, 0.0, 0.0, SUM, fc)


@njit(cache=True)
def quick_joins(out, a, b, fc):
    """The quick pass of out = round_F(a + b), a and b values of F (``fc.joins``)."""
    return _quick_pass(out, a, b, 0.0, 0.0, JOIN, fc)


@njit(cache=True)
def quick_pairs(out, w1, w2, x1, x2, fc):
    """The quick pass of out = round_F(w1 x1 + w2 x2)."""
    return _quick_pass(out, w1, w2, x1, x2, PAIR, fc)


@njit(cache=True)
def mark_leaves(acc, wrow, x, flags, fc):
    """flags[i] = ``quick_leaves`` leaves lane i; returns their number."""
    return _quick_marks(acc, wrow, x, 0.0, LEAF, flags, fc)


@njit(cache=True)
def mark_sums(a, b, flags, fc):
    """flags[i] = ``quick_sums`` leaves lane i; returns their number."""
    return _quick_marks(a, b, 0.0, 0.0, SUM, flags, fc)


@njit(cache=True)
def mark_pairs(w1, w2, x1, x2, flags, fc):
    """flags[i] = ``quick_pairs`` leaves lane i; returns their number."""
    return _quick_marks(w1, w2, x1, x2, PAIR, flags, fc)


@njit(cache=True, inline="always")
def step_add_leaf(out, acc, wrow, x, keys, flags, ovf, tag_s, fcf, kind):
    """out[i] = round_F(acc[i] + w_i x), w_i x exact, on every lane the fast path proves;
    returns the number of lanes it leaves (flags[i] = True)."""
    xzero = x == 0.0
    nflag = 0
    for i in range(out.shape[0]):
        s = acc[i]
        w = wrow[i]
        p = w * x
        pl = fma(w, x, -p)
        okl = (abs(p) >= MIN_EXACT_PRODUCT) | (w == 0.0) | xzero
        h = s + p
        bb = h - s
        r = ((s - (h - bb)) + (p - bb)) + pl
        y, ok, over = fast_round(h, r, 2.0 * abs(r), fcf, kind, _bits_for(keys, i, tag_s, kind))
        ok = ok & okl
        out[i] = y
        ovf[i] |= ok & over
        flags[i] = not ok
        nflag += not ok
    return nflag


@njit(cache=True)
def fix_add_leaf(out, acc, wrow, x, keys, flags, ovf, dead, tag_s, fcf, stochastic, buf, work):
    for i in range(out.shape[0]):
        if flags[i]:
            rbs = stream(keys[i], tag_s) if stochastic else np.uint64(0)
            y, over, gone = exact_add_leaf(acc[i], wrow[i], x, fcf, rbs, buf, work)
            out[i] = y
            ovf[i] |= over
            dead[i] |= gone


@njit(cache=True)
def finish_add_leaf(out, acc, wrow, x, keys, flags, ovf, dead, tag_s, fcf, kind, left, buf, work):
    """Complete out = round_F(acc + W[:, j] x_j) after the quick pass left ``left`` lanes
    (-1: it did not run): a few go straight to the exact path, more to the fast path
    first (every lane), then the exact path."""
    if 0 < left <= out.shape[0] >> FEW_SHIFT:
        nflag = mark_leaves(acc, wrow, x, flags, fcf)
    elif kind == 0:
        nflag = step_add_leaf(out, acc, wrow, x, keys, flags, ovf, tag_s, fcf, 0)
    elif kind == 1:
        nflag = step_add_leaf(out, acc, wrow, x, keys, flags, ovf, tag_s, fcf, 1)
    else:
        nflag = step_add_leaf(out, acc, wrow, x, keys, flags, ovf, tag_s, fcf, 2)
    if nflag:
        fix_add_leaf(out, acc, wrow, x, keys, flags, ovf, dead, tag_s, fcf, kind == 2, buf, work)


@njit(cache=True, inline="always")
def step_add(out, a, b, keys, flags, ovf, tag, fc, kind):
    """out[i] = round_X(a[i] + b[i]) (two float64 values) where the fast path proves it."""
    nflag = 0
    for i in range(out.shape[0]):
        s = a[i]
        t = b[i]
        h = s + t
        bb = h - s
        r = (s - (h - bb)) + (t - bb)
        y, ok, over = fast_round(h, r, 2.0 * abs(r), fc, kind, _bits_for(keys, i, tag, kind))
        out[i] = y
        ovf[i] |= ok & over
        flags[i] = not ok
        nflag += not ok
    return nflag


@njit(cache=True)
def fix_add(out, a, b, keys, flags, ovf, dead, tag, fc, stochastic, buf, work):
    for i in range(out.shape[0]):
        if flags[i]:
            rb = stream(keys[i], tag) if stochastic else np.uint64(0)
            y, over, gone = exact_add(a[i], b[i], fc, rb, buf, work)
            out[i] = y
            ovf[i] |= over
            dead[i] |= gone


@njit(cache=True)
def finish_add(out, a, b, keys, flags, ovf, dead, tag, fc, kind, left, buf, work):
    """Complete out = round_X(a + b) after the quick pass left ``left`` lanes (-1: it did
    not run), as ``finish_add_leaf``."""
    if 0 < left <= out.shape[0] >> FEW_SHIFT:
        nflag = mark_sums(a, b, flags, fc)
    elif kind == 0:
        nflag = step_add(out, a, b, keys, flags, ovf, tag, fc, 0)
    elif kind == 1:
        nflag = step_add(out, a, b, keys, flags, ovf, tag, fc, 1)
    else:
        nflag = step_add(out, a, b, keys, flags, ovf, tag, fc, 2)
    if nflag:
        fix_add(out, a, b, keys, flags, ovf, dead, tag, fc, kind == 2, buf, work)


@njit(cache=True)
def add_vectors(out, a, b, keys, flags, ovf, dead, tag, fc, kind, quick, buf, work):
    """out = round_X(a + b), lane by lane, through the tiers (the quick pass when
    ``quick``: round to nearest only); returns the number of lanes it left (-1 without)."""
    left = quick_sums(out, a, b, fc) if quick else -1
    if left:
        finish_add(out, a, b, keys, flags, ovf, dead, tag, fc, kind, left, buf, work)
    return left


@njit(cache=True, inline="always")
def step_leaves(th, tl, wrow, x, keys, flags, ovf, tag_p, fcp, has_p, kind):
    """(th, tl)[i] = the exact product w_i x as two terms, or its rounding to P."""
    xzero = x == 0.0
    nflag = 0
    for i in range(th.shape[0]):
        p, pl, ok, over = _leaf_fast(wrow[i], x, xzero, fcp, has_p, kind, _bits_for(keys, i, tag_p, kind))
        th[i] = p
        tl[i] = pl
        ovf[i] |= ok & over
        flags[i] = not ok
        nflag += not ok
    return nflag


@njit(cache=True)
def fix_leaves(th, tl, wrow, x, keys, flags, ovf, dead, tag_p, fcp, has_p, stochastic, buf, work):
    for i in range(th.shape[0]):
        if flags[i]:
            rbp = stream(keys[i], tag_p) if stochastic else np.uint64(0)
            status, over = exact_leaf(wrow[i], x, fcp, has_p, rbp, buf, work)
            th[i], tl[i] = buf[0], buf[1]
            ovf[i] |= over
            dead[i] |= status == 2


@njit(cache=True)
def leaves(th, tl, wrow, x, keys, flags, ovf, dead, tag_p, fcp, has_p, kind, buf, work):
    """The leaves of one input column, lane by lane, fast path then exact fixes."""
    if has_p:
        if kind == 0:
            nflag = step_leaves(th, tl, wrow, x, keys, flags, ovf, tag_p, fcp, True, 0)
        elif kind == 1:
            nflag = step_leaves(th, tl, wrow, x, keys, flags, ovf, tag_p, fcp, True, 1)
        else:
            nflag = step_leaves(th, tl, wrow, x, keys, flags, ovf, tag_p, fcp, True, 2)
    else:
        nflag = step_leaves(th, tl, wrow, x, keys, flags, ovf, tag_p, fcp, False, 0)
    if nflag:
        fix_leaves(th, tl, wrow, x, keys, flags, ovf, dead, tag_p, fcp, has_p, kind == 2, buf, work)


@njit(cache=True)
def add_product(out, acc, wrow, x, th, tl, keys, flags, ovf, dead, j, tag_s, fcf, fcp, has_p, kind, quick, buf, work):
    """out = round_F(acc + p_j), p_j = W[:, j] x_j exact or rounded to P (into th first),
    lane by lane through the tiers; returns the number of lanes the quick pass left."""
    if has_p:
        leaves(th, tl, wrow, x, keys, flags, ovf, dead, TAG_PRODUCT | j, fcp, True, kind, buf, work)
        return add_vectors(out, acc, th, keys, flags, ovf, dead, tag_s, fcf, kind, quick, buf, work)
    left = quick_leaves(out, acc, wrow, x, fcf) if quick else -1
    if left:
        finish_add_leaf(out, acc, wrow, x, keys, flags, ovf, dead, tag_s, fcf, kind, left, buf, work)
    return left


@njit(cache=True, inline="always")
def step_add4(out, ah, al, bh, bl, keys, flags, ovf, tag, fc, kind):
    """out[i] = round_F(ah + al + bh + bl) where the fast path proves it."""
    nflag = 0
    for i in range(out.shape[0]):
        a = ah[i]
        b = bh[i]
        h = a + b
        bb = h - a
        e = (a - (h - bb)) + (b - bb)
        rs = (e + al[i]) + bl[i]
        aa = (abs(e) + abs(al[i])) + abs(bl[i])
        r = rs if abs(rs) > aa * SIGN_TOL else 0.0
        y, ok, over = fast_round(h, r, aa + aa, fc, kind, _bits_for(keys, i, tag, kind))
        out[i] = y
        ovf[i] |= ok & over
        flags[i] = not ok
        nflag += not ok
    return nflag


@njit(cache=True)
def add4(out, ah, al, bh, bl, keys, flags, ovf, dead, tag, fc, kind, buf, work):
    """out = round_F(ah + al + bh + bl) lane by lane (two raw leaves)."""
    if kind == 0:
        nflag = step_add4(out, ah, al, bh, bl, keys, flags, ovf, tag, fc, 0)
    elif kind == 1:
        nflag = step_add4(out, ah, al, bh, bl, keys, flags, ovf, tag, fc, 1)
    else:
        nflag = step_add4(out, ah, al, bh, bl, keys, flags, ovf, tag, fc, 2)
    if nflag:
        for i in range(out.shape[0]):
            if flags[i]:
                rb = stream(keys[i], tag) if kind == 2 else np.uint64(0)
                y, over, gone = exact_add4(ah[i], al[i], bh[i], bl[i], fc, rb, buf, work)
                out[i] = y
                ovf[i] |= over
                dead[i] |= gone


@njit(cache=True)
def finish_pair(out, w1, x1, w2, x2, lh, ll, th, tl, keys, flags, ovf, dead, j, tag, fcf, fcp, has_p, kind, left,
                buf, work):
    """Complete out = round_F(p_{j-1} + p_j) after the quick pass left ``left`` lanes
    (-1: it did not run): a few go to the exact path, else every lane goes through the
    leaves (into lh, ll and th, tl) and the fast path."""
    if 0 < left <= out.shape[0] >> FEW_SHIFT:
        mark_pairs(w1, w2, x1, x2, flags, fcf)
        for i in range(out.shape[0]):
            if flags[i]:
                y, over, gone = exact_pair(w1[i], x1, w2[i], x2, fcf, buf, work)
                out[i] = y
                ovf[i] |= over
                dead[i] |= gone
        return
    leaves(lh, ll, w1, x1, keys, flags, ovf, dead, TAG_PRODUCT | (j - 1), fcp, has_p, kind, buf, work)
    leaves(th, tl, w2, x2, keys, flags, ovf, dead, TAG_PRODUCT | j, fcp, has_p, kind, buf, work)
    if has_p:
        add_vectors(out, lh, th, keys, flags, ovf, dead, tag, fcf, kind, kind == 0 and fcf.quick, buf, work)
    else:
        add4(out, lh, ll, th, tl, keys, flags, ovf, dead, tag, fcf, kind, buf, work)


@njit(cache=True, inline="always")
def step_fused_leaf(hh, rs, aa, okc, wrow, x):
    """Add w_i x (exact) to each lane's exact running sum h + rho (TwoSum, FMA)."""
    xzero = x == 0.0
    for i in range(hh.shape[0]):
        w = wrow[i]
        p = w * x
        pl = fma(w, x, -p)
        ok = (abs(p) >= MIN_EXACT_PRODUCT) | (w == 0.0) | xzero
        hv = hh[i]
        h = hv + p
        bb = h - hv
        e = (hv - (h - bb)) + (p - bb)
        hh[i] = h
        rs[i] += e + pl
        aa[i] += abs(e) + abs(pl)
        okc[i] &= ok


@njit(cache=True, inline="always")
def step_fused_finish(acc, hh, rs, aa, okc, keys, flags, ovf, tag, fc, kind):
    nflag = 0
    for i in range(acc.shape[0]):
        a = aa[i]
        r = rs[i] if abs(rs[i]) > a * SIGN_TOL else 0.0
        y, ok, over = fast_round(hh[i], r, a + a, fc, kind, _bits_for(keys, i, tag, kind))
        ok = ok & okc[i]
        acc[i] = y if ok else acc[i]
        ovf[i] |= ok & over
        flags[i] = not ok
        nflag += not ok
    return nflag


@njit(cache=True)
def exact_fused(s, wt, xrow, c0, c1, fcf, fcp, has_p, key, stochastic, buf, work):
    """round_F(s + sum of the leaves of columns c0..c1-1) exactly: (value, overflowed, dead)."""
    if s != s:
        return s, False, False
    nb = 0
    special = 0.0
    nonfinite = not finite(s)
    over = False
    leaf = buf[buf.shape[0] - 2:]
    for j in range(c0, c1):
        x = xrow[j]
        rbp = stream(key, TAG_PRODUCT | j) if stochastic else np.uint64(0)
        status, ov = exact_leaf(wt[j], x, fcp, has_p, rbp, leaf, work)
        over |= ov
        if status == 2:
            return s, False, True
        if status == 1:
            nonfinite = True
            special += leaf[0]
        else:
            buf[nb], buf[nb + 1] = leaf[0], leaf[1]
            nb += 2
    if nonfinite:
        h = s + special
        return (round_special(h, fcf) if not finite(h) else h), True, False
    if abs(s) >= BIG:
        return s, False, True
    buf[nb] = s
    rb = stream(key, TAG_SUM | c1) if stochastic else np.uint64(0)
    y, ov = round_terms(buf, nb + 1, work, fcf, rb)
    return y, over or ov, False


@njit(cache=True)
def fused_chunk(acc, hh, rs, aa, okc, th, tl, wt, xrow, colfinite, c0, c1, keys, flags, ovf, dead, fcf, fcp, has_p,
                kind, buf, work):
    """acc = round_F(acc + leaves of columns c0..c1-1), one rounding per lane."""
    hh[:] = acc
    rs[:] = 0.0
    aa[:] = 0.0
    okc[:] = True
    for j in range(c0, c1):
        x = xrow[j]
        if x == 0.0 and colfinite[j]:
            continue
        if has_p:
            leaves(th, tl, wt[j], x, keys, flags, ovf, dead, TAG_PRODUCT | j, fcp, has_p, kind, buf, work)
            step_fused_leaf(hh, rs, aa, okc, th, 1.0)
        else:
            step_fused_leaf(hh, rs, aa, okc, wt[j], x)
    tag = TAG_SUM | c1
    if kind == 0:
        nflag = step_fused_finish(acc, hh, rs, aa, okc, keys, flags, ovf, tag, fcf, 0)
    elif kind == 1:
        nflag = step_fused_finish(acc, hh, rs, aa, okc, keys, flags, ovf, tag, fcf, 1)
    else:
        nflag = step_fused_finish(acc, hh, rs, aa, okc, keys, flags, ovf, tag, fcf, 2)
    if nflag:
        for i in range(acc.shape[0]):
            if flags[i]:
                key = keys[i] if kind == 2 else np.uint64(0)
                y, over, gone = exact_fused(acc[i], wt[:, i], xrow, c0, c1, fcf, fcp, has_p, key, kind == 2, buf, work)
                acc[i] = y
                ovf[i] |= over
                dead[i] |= gone


# ---------------------------------------------------------------------------------------
# kernels: groups of samples sharing each row of W, components vectorised; they release
# the GIL, and ``emulator.linear`` runs one per thread on separate rows. Steps are calls
# taking their rows as arguments (inlined steps would cost reference counting per step).


@njit(cache=True)
def _init_keys(keys, seedkey, row):
    base = stream(seedkey, row)
    for i in range(keys.shape[0]):
        keys[i] = stream(base, i)


@njit(cache=True, inline="always")
def _pace(slow, backoff, left, m):
    """(slow, backoff) of a sample after a step: count down its steps without the quick
    pass, or start such a spell (doubling its length) when the quick pass left more than
    a few lanes."""
    if slow > 0:
        return slow - 1, backoff
    if left > m >> FEW_SHIFT:
        backoff = min(2 * backoff, MAX_SLOW_STEPS)
        return backoff, backoff
    return slow, SLOW_STEPS


@njit(cache=True, nogil=True)
def kernel_blocked(x, wt, bias, has_bias, bias_last, colfinite, fcf, fcp, fco, has_p, kind, block, outer, seedkey,
                   row0, group, out, ovf, dead):
    """recursive (outer False: one accumulator in F from round_F(b)), blocked:B and
    promote:B:G (outer True: blocks of B summed in F from 0, each block sum added into
    an accumulator in the outer format from round(b)); bias_last: from 0, then
    round(acc + b) in the output format. The running sums of sample g alternate between
    inner[0, g] and inner[1, g] (``cur[g]`` holds them)."""
    nsamp, n = x.shape
    m = wt.shape[1]
    stochastic = kind == 2
    quick_ok = kind == 0 and fcf.quick
    fcs = fco if outer else fcf  # the format of the result
    zeros = np.zeros(m)
    ngroups = (nsamp + group - 1) // group
    for gi in range(ngroups):
        r0 = gi * group
        r1 = min(nsamp, r0 + group)
        inner = np.zeros((2, r1 - r0, m))
        cur = np.zeros(r1 - r0, dtype=np.int64)
        outer_acc = np.zeros((r1 - r0, m if outer else 0))
        tmp = np.zeros(m)
        keys = np.zeros((r1 - r0, m if stochastic else 1), dtype=np.uint64)
        flags = np.zeros(m, dtype=np.bool_)
        th = np.zeros(m)
        tl = np.zeros(m)
        buf = np.zeros(8)
        work = np.zeros(24)
        slow = np.zeros(r1 - r0, dtype=np.int64)  # steps left without the quick pass
        backoff = np.full(r1 - r0, SLOW_STEPS, dtype=np.int64)
        for g in range(r1 - r0):
            if stochastic:
                _init_keys(keys[g], seedkey, row0 + r0 + g)
            if has_bias and not bias_last:
                add_vectors(outer_acc[g] if outer else inner[0, g], bias, zeros, keys[g], flags, ovf[r0 + g],
                            dead[r0 + g], TAG_BIAS, fcs, kind, kind == 0 and fcs.quick, buf, work)
        for j in range(n):
            wrow = wt[j]
            lo = (j // block) * block if outer else 0
            tag_s = TAG_SUM | (lo << 28) | (j + 1)
            flush = outer and ((j + 1) % block == 0 or j == n - 1)
            for g in range(r1 - r0):
                xv = x[r0 + g, j]
                if not (xv == 0.0 and colfinite[j]):
                    c = cur[g]
                    quick = quick_ok and slow[g] == 0
                    if has_p or not quick:
                        left = add_product(inner[1 - c, g], inner[c, g], wrow, xv, th, tl, keys[g], flags, ovf[r0 + g],
                                           dead[r0 + g], j, tag_s, fcf, fcp, has_p, kind, quick, buf, work)
                    else:  # add_product's path, its quick pass called here: a call of few arguments
                        left = quick_leaves(inner[1 - c, g], inner[c, g], wrow, xv, fcf)
                        if left:
                            finish_add_leaf(inner[1 - c, g], inner[c, g], wrow, xv, keys[g], flags, ovf[r0 + g],
                                            dead[r0 + g], tag_s, fcf, kind, left, buf, work)
                    cur[g] = 1 - c
                    slow[g], backoff[g] = _pace(slow[g], backoff[g], left, m)
                if flush:
                    add_vectors(tmp, outer_acc[g], inner[cur[g], g], keys[g], flags, ovf[r0 + g], dead[r0 + g],
                                TAG_OUTER | (j + 1), fco, kind, kind == 0 and fco.quick, buf, work)
                    outer_acc[g] = tmp
                    inner[cur[g], g] = 0.0
        for g in range(r1 - r0):
            if has_bias and bias_last:
                add_vectors(out[r0 + g], outer_acc[g] if outer else inner[cur[g], g], bias, keys[g], flags,
                            ovf[r0 + g], dead[r0 + g], TAG_BIAS_LAST, fcs, kind, kind == 0 and fcs.quick, buf, work)
            else:
                out[r0 + g] = outer_acc[g] if outer else inner[cur[g], g]


@njit(cache=True, nogil=True)
def kernel_fused(x, wt, bias, has_bias, bias_last, colfinite, fcf, fcp, has_p, kind, k, seedkey, row0, group, out,
                 ovf, dead):
    """fused:K: s = round_F(s + p_{c+1} + ... + p_{c+K}) exactly, chunk by chunk, from
    round_F(b) (or 0, then round_F(s + b) with bias_last)."""
    nsamp, n = x.shape
    m = wt.shape[1]
    stochastic = kind == 2
    quick = kind == 0 and fcf.quick
    zeros = np.zeros(m)
    ngroups = (nsamp + group - 1) // group
    for gi in range(ngroups):
        r0 = gi * group
        r1 = min(nsamp, r0 + group)
        acc = np.zeros((r1 - r0, m))
        keys = np.zeros((r1 - r0, m if stochastic else 1), dtype=np.uint64)
        flags = np.zeros(m, dtype=np.bool_)
        hh = np.zeros(m)
        rs = np.zeros(m)
        aa = np.zeros(m)
        okc = np.zeros(m, dtype=np.bool_)
        th = np.zeros(m)
        tl = np.zeros(m)
        buf = np.zeros(2 * k + 4)
        work = np.zeros(4 * k + 12)
        for g in range(r1 - r0):
            if stochastic:
                _init_keys(keys[g], seedkey, row0 + r0 + g)
            if has_bias and not bias_last:
                add_vectors(acc[g], bias, zeros, keys[g], flags, ovf[r0 + g], dead[r0 + g], TAG_BIAS, fcf, kind, quick,
                            buf, work)
        for c0 in range(0, n, k):
            c1 = min(n, c0 + k)
            for g in range(r1 - r0):
                fused_chunk(acc[g], hh, rs, aa, okc, th, tl, wt, x[r0 + g], colfinite, c0, c1, keys[g], flags,
                            ovf[r0 + g], dead[r0 + g], fcf, fcp, has_p, kind, buf, work)
        for g in range(r1 - r0):
            if has_bias and bias_last:
                add_vectors(out[r0 + g], acc[g], bias, keys[g], flags, ovf[r0 + g], dead[r0 + g], TAG_BIAS_LAST, fcf,
                            kind, quick, buf, work)
            else:
                out[r0 + g] = acc[g]


@njit(cache=True)
def join_stack(stack, g, d, level, land, top, keys, flags, ovf, dead, j, fc, kind, quick, buf, work):
    """Join the node in stack[g, d] with the subtrees stack[g, level .. land-1] through the
    tiers (the node alternating between stack[g, top] and stack[g, top + 1]), the last
    join landing in stack[g, land]."""
    for lev in range(level, land):
        e = land if lev == land - 1 else 2 * top + 1 - d
        add_vectors(stack[g, e], stack[g, d], stack[g, lev], keys, flags, ovf, dead,
                    TAG_SUM | ((j + 1 - (2 << lev)) << 28) | (j + 1), fc, kind, quick, buf, work)
        d = e


@njit(cache=True, nogil=True)
def kernel_pairwise(x, wt, bias, has_bias, fcf, fcp, has_p, kind, seedkey, row0, group, out, ovf, dead):
    """pairwise: the balanced tree of adjacent pairs (level by level, an odd last element
    carried up), built as a binary counter: the pair of leaves j-1, j joins the stacked
    subtrees of equal size; at the end the stack is merged from the right. Sample g keeps
    its subtree of 2^l leaves in stack[g, l] and the node being built in stack[g, top]
    and stack[g, top + 1] alternately (rows named by index: no views held); stack[g, 0]
    stays zero."""
    nsamp, n = x.shape
    m = wt.shape[1]
    stochastic = kind == 2
    quick_ok = kind == 0 and fcf.quick
    levels = 1
    while (1 << levels) <= n:
        levels += 1
    top = levels + 1
    ngroups = (nsamp + group - 1) // group
    for gi in range(ngroups):
        r0 = gi * group
        r1 = min(nsamp, r0 + group)
        keys = np.zeros((r1 - r0, m if stochastic else 1), dtype=np.uint64)
        stack = np.zeros((r1 - r0, top + 2, m))
        lh = np.zeros(m)
        ll = np.zeros(m)
        th = np.zeros(m)
        tl = np.zeros(m)
        flags = np.zeros(m, dtype=np.bool_)
        buf = np.zeros(8)
        work = np.zeros(24)
        slow = np.zeros(r1 - r0, dtype=np.int64)
        backoff = np.full(r1 - r0, SLOW_STEPS, dtype=np.int64)
        for g in range(r1 - r0):
            if stochastic:
                _init_keys(keys[g], seedkey, row0 + r0 + g)
        for j in range(1, n, 2):
            w1 = wt[j - 1]
            w2 = wt[j]
            land = 1  # the pair joins the subtrees stack[1 .. land-1] and lands in stack[land]
            while ((j + 1) & (1 << land)) == 0:
                land += 1
            tag_pair = TAG_SUM | ((j - 1) << 28) | (j + 1)
            for g in range(r1 - r0):
                quick = quick_ok and slow[g] == 0
                x1 = x[r0 + g, j - 1]
                x2 = x[r0 + g, j]
                d = 1 if land == 1 else top
                # the quick passes called here, the tiers only for lanes they leave: calls of few arguments
                left = quick_pairs(stack[g, d], w1, w2, x1, x2, fcf) if quick and not has_p else -1
                if left:
                    finish_pair(stack[g, d], w1, x1, w2, x2, lh, ll, th, tl, keys[g], flags, ovf[r0 + g], dead[r0 + g],
                                j, tag_pair, fcf, fcp, has_p, kind, left, buf, work)
                slow[g], backoff[g] = _pace(slow[g], backoff[g], left, m)
                level = 1  # joins by the quick pass until one leaves lanes (the tiers' call out of this loop)
                while level < land and quick:
                    e = land if level == land - 1 else 2 * top + 1 - d
                    if (quick_joins(stack[g, e], stack[g, d], stack[g, level], fcf) if fcf.joins else
                            quick_sums(stack[g, e], stack[g, d], stack[g, level], fcf)):
                        break
                    d = e
                    level += 1
                if level < land:
                    join_stack(stack, g, d, level, land, top, keys[g], flags, ovf[r0 + g], dead[r0 + g], j, fcf, kind,
                               quick, buf, work)
        for g in range(r1 - r0):
            d = top  # stack[g, d] holds the merged right part
            stack[g, d] = 0.0
            pending = 1 if n % 2 == 1 else 0  # 1: the raw leaf n-1 alone, 2: a rounded node in stack[g, d]
            for level in range(1, levels + 1):
                if n & (1 << level):
                    tag = TAG_SUM | (((n >> (level + 1)) << (level + 1)) << 28) | n
                    if pending == 0:
                        stack[g, d] = stack[g, level]
                    elif pending == 1:
                        add_product(stack[g, d], stack[g, level], wt[n - 1], x[r0 + g, n - 1], th, tl, keys[g], flags,
                                    ovf[r0 + g], dead[r0 + g], n - 1, tag, fcf, fcp, has_p, kind, quick_ok, buf, work)
                    else:
                        add_vectors(stack[g, 2 * top + 1 - d], stack[g, level], stack[g, d], keys[g], flags,
                                    ovf[r0 + g], dead[r0 + g], tag, fcf, kind, quick_ok, buf, work)
                        d = 2 * top + 1 - d
                    pending = 2
            if pending == 1:
                add_product(stack[g, d], stack[g, 0], wt[0], x[r0 + g, 0], th, tl, keys[g], flags, ovf[r0 + g],
                            dead[r0 + g], 0, TAG_SUM | 1, fcf, fcp, has_p, kind, quick_ok, buf, work)
            if has_bias:
                add_vectors(out[r0 + g], stack[g, d], bias, keys[g], flags, ovf[r0 + g], dead[r0 + g], TAG_BIAS_LAST,
                            fcf, kind, quick_ok, buf, work)
            else:
                out[r0 + g] = stack[g, d]
