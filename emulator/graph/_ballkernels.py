"""Numba kernels of the exact graph arithmetic's fast path (docs/method.md#the-exact-arithmetic):
operations on *balls*. A ball is a double-double centre hi + lo, normalised (hi =
RN(hi + lo), so |lo| <= u |hi|), and a radius rad: the exact value lies within rad of
the centre.

Each kernel evaluates the operation at the centres with the double-double algorithms of
``emulator._exactdot`` (JMP17 add / mul / div, ``exp_core``, ``erfcx_core``, whose
relative error bounds REL_* are proven there) and adds the propagation of the input radii
(a bound on how much the function moves over the input balls). Radii are rounded upward:
a radius computed in a handful of float64 operations is multiplied by INFLATE = 1 +
2^-50 and gets MIN_SUBNORMAL per term that may underflow. The proofs need operands and
results in [2^-900, 2^1000] or exactly zero (``_in_range``), finite radii, and the
domain conditions each kernel states; elsewhere the kernel sets ``OK`` False and leaves
the element to its caller. Loops are over flat arrays, in parallel (``prange``).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from numba import njit, prange

from .. import _exactdot as K
from .._bits import fma
from ..eft import fast_two_sum, two_prod, two_sum

U, U2 = K.U, K.U2
MIN_SUBNORMAL = 2.0**-1074
INFLATE = 1.0 + 2.0**-50
SLACK = 1.0 + 2.0**-40
ABS = 16 * MIN_SUBNORMAL  # absolute slack of a double-double result whose low word may be subnormal
LOW, HIGH = 2.0**-900, 2.0**1000
REL_SQRT = 8 * U2
EXP_ZERO = -747.0  # e^v < 2^-1077 for v <= -747: exp gives 0 with radius MIN_SUBNORMAL
ERF_STEP = 32  # Taylor expansions of erf at the nodes j / ERF_STEP
ERF_ONE = 9.0  # erfc(9) < 2^-120: erf = +-1 beyond
ERF_DEGREE = 16
ERF_DD_TERMS = 10  # terms n < 10 in double-double, the others in float64
ERF_COEFF_ERROR = 2.0**-369  # error of the 400-bit coefficients (at most 2 in size, the recurrence loses < 25 bits)
CRAMER = 1.086435  # |H_n(x)| e^(-x^2/2) <= CRAMER 2^(n/2) sqrt(n!) (Abramowitz & Stegun 22.14.17)


def _erf_tables():
    """Taylor coefficients c_n = erf^(n)(x0) / n! at x0 = j / ERF_STEP, j = 0 ..
    ERF_ONE ERF_STEP, as dd (arrays (ERF_DEGREE + 1, nodes)): c_0 = erf(x0), c_n = d_(n-1) /
    n with d_m = g^(m)(x0) / m!, g = erf' = (2/sqrt(pi)) e^(-x^2), from d_(m+1) = -2 (x0
    d_m + d_(m-1)) / (m + 1) (g' = -2 x g differentiated), at 400 bits. The remainder
    after degree N is at most max |erf^(N+1)| / (N+1)! |h|^(N+1) <= (2/sqrt(pi)) CRAMER
    2^(N/2) sqrt(N!) / (N+1)! |h|^(N+1) (erf^(N+1) = g^(N) = (-1)^N H_N g)."""
    nodes = int(ERF_ONE * ERF_STEP) + 1
    hi = np.empty((ERF_DEGREE + 1, nodes))
    lo = np.empty((ERF_DEGREE + 1, nodes))
    with mpmath.workprec(400):
        c = 2 / mpmath.sqrt(mpmath.pi)
        for j in range(nodes):
            x0 = mpmath.mpf(j) / ERF_STEP
            d = [c * mpmath.exp(-x0 * x0)]
            d.append(-2 * x0 * d[0])
            for m in range(1, ERF_DEGREE):
                d.append(-2 * (x0 * d[m] + d[m - 1]) / (m + 1))
            coeffs = [mpmath.erf(x0)] + [d[n - 1] / n for n in range(1, ERF_DEGREE + 1)]
            for n, v in enumerate(coeffs):
                hi[n, j], lo[n, j] = K._dd_const(v)
        n = ERF_DEGREE
        rem = c * mpmath.mpf(CRAMER) * mpmath.mpf(2) ** (mpmath.mpf(n) / 2) * mpmath.sqrt(mpmath.factorial(n))
        rem = rem / mpmath.factorial(n + 1)
        return hi, lo, float(rem) * (1.0 + 2.0**-20), _upward(c)


def _upward(v) -> float:
    """A float64 >= v > 0."""
    return float(np.nextafter(float(v), np.inf))


_ERF_HI, _ERF_LO, _ERF_REMAINDER, TWO_OVER_SQRT_PI = _erf_tables()
_ERF_ABS = np.abs(_ERF_HI)
_ERF_NODE_MAX = _ERF_HI.shape[1] - 1


@njit(cache=True, inline="always", error_model="numpy")
def _in_range(x):
    a = abs(x)
    return (a == 0.0) | ((a >= LOW) & (a <= HIGH))


@njit(cache=True, inline="always", error_model="numpy")
def _known(h, r):
    """A finite centre and a finite radius (NaN fails both tests)."""
    return (abs(h) < math.inf) & (r < math.inf)


@njit(cache=True, inline="always", error_model="numpy")
def _err(zh, rel):
    """rel |z| for z = zh + zl, plus the absolute slack."""
    return rel * abs(zh) * SLACK + ABS


OK, RANGE, WIDE = 0, 1, 2


@njit(cache=True, inline="always", error_model="numpy")
def _status(ok, wide):
    return np.int8(OK if ok else (WIDE if wide else RANGE))


@njit(cache=True, inline="always", error_model="numpy")
def _zero(h, l):
    """A centre that is exactly 0 (the dd operations on it are exact)."""
    return (h == 0.0) & (l == 0.0)


# ---------------------------------------------------------------------------------------
# arithmetic


@njit(cache=True, parallel=True, error_model="numpy")
def ball_add(AH, AL, AR, BH, BL, BR, sign, ZH, ZL, ZR, OK):
    """a + sign b (sign +-1): dd + dd (4 u^2 of the exact sum of the centres, JMP17
    Alg. 6, which holds with cancellation; exact when a centre is 0 or both are float64
    numbers, lo = 0: TwoSum); the radii add."""
    for k in prange(AH.shape[0]):
        zh, zl = K.dd_add(AH[k], AL[k], sign * BH[k], sign * BL[k])
        ZH[k] = zh
        ZL[k] = zl
        exact = _zero(AH[k], AL[k]) | _zero(BH[k], BL[k]) | ((AL[k] == 0.0) & (BL[k] == 0.0))
        ZR[k] = (AR[k] + BR[k] + K._select(exact, 0.0, _err(zh, K.REL_ADD))) * INFLATE
        OK[k] = _status(_known(AH[k], AR[k]) & _known(BH[k], BR[k]) & _in_range(AH[k]) & _in_range(BH[k])
                        & _in_range(zh), False)


@njit(cache=True, parallel=True, error_model="numpy")
def ball_mul(AH, AL, AR, BH, BL, BR, ZH, ZL, ZR, OK):
    """a b: dd * dd (8 u^2, JMP17 Alg. 12; exact when a centre is 0, or for two float64
    numbers whose product is at least 2^-969: TwoProd); for a' within ra of a and b'
    within rb of b, |a'b' - ab| <= |a| rb + |b| ra + ra rb with |a| <= |ah| + |al| (3
    products that may underflow when a radius is nonzero)."""
    for k in prange(AH.shape[0]):
        ah, al, ar, bh, bl, br = AH[k], AL[k], AR[k], BH[k], BL[k], BR[k]
        zh, zl = K.dd_mul(ah, al, bh, bl)
        spread = (abs(ah) + abs(al)) * br + (abs(bh) + abs(bl)) * ar + ar * br
        exact = _zero(ah, al) | _zero(bh, bl) | ((al == 0.0) & (bl == 0.0) & (abs(zh) >= 2.0**-969))
        err = K._select(exact, 0.0, _err(zh, K.REL_MUL))
        ZH[k] = zh
        ZL[k] = zl
        ZR[k] = ((spread + err) * INFLATE + K._select((ar > 0.0) | (br > 0.0), 3 * MIN_SUBNORMAL, 0.0)) * INFLATE
        OK[k] = _status(_known(ah, ar) & _known(bh, br) & _in_range(ah) & _in_range(bh) & _in_range(zh), False)


@njit(cache=True, parallel=True, error_model="numpy")
def ball_div(AH, AL, AR, BH, BL, BR, ZH, ZL, ZR, OK):
    """a / b: dd / dd (32 u^2, JMP17 Alg. 17); for a' within ra of a, b' within rb of b
    and |b| > rb, |a'/b' - a/b| <= (ra + |a/b| rb) / (|b| - rb). Needs a ball b that
    excludes 0. A centre a = 0 gives 0 exactly."""
    for k in prange(AH.shape[0]):
        ah, al, ar, bh, bl, br = AH[k], AL[k], AR[k], BH[k], BL[k], BR[k]
        zh, zl = K.dd_div(ah, al, K._select(bh != 0.0, bh, 1.0), bl)
        err = K._select(_zero(ah, al), 0.0, _err(zh, K.REL_DIV))
        gap = abs(bh) * (1.0 - 2.0**-50) - br  # <= |b| - rb
        spread = (ar + (abs(zh) * SLACK + err) * br) / gap * INFLATE
        spread += K._select((ar > 0.0) | ((br > 0.0) & (err > 0.0)), MIN_SUBNORMAL, 0.0)
        ZH[k] = zh
        ZL[k] = zl
        ZR[k] = (spread + err) * INFLATE
        known = _known(ah, ar) & _known(bh, br)
        OK[k] = _status(known & (gap > 0.0) & _in_range(ah) & _in_range(bh) & _in_range(zh) & (abs(bh) > 0.0),
                        known & (gap <= 0.0))


@njit(cache=True, parallel=True, error_model="numpy")
def ball_sqrt(AH, AL, AR, ZH, ZL, ZR, OK):
    """sqrt(a) for a ball of positive numbers (a - ra > 0): s = RN(sqrt(ah)), one Newton
    step z = s + (a - s^2) / (2s) with s^2 = p + e exact (TwoProd), ah - p exact
    (Sterbenz), the correction in float64. Error: (s - sqrt a)^2 / (2s) <= 1.13 u^2
    sqrt(a), the rounding of (ah - p - e) + al <= 5.1 u^2 a, of the quotient <= 1.51 u^2
    sqrt(a): <= 5.2 u^2 sqrt(a) < REL_SQRT. Radius: |sqrt(a') - sqrt(a)| = |a' - a| /
    (sqrt(a') + sqrt(a)) <= ra / sqrt(a)."""
    for k in prange(AH.shape[0]):
        ah, al, ar = AH[k], AL[k], AR[k]
        inside = ah * (1.0 - 2.0**-50) - abs(al) > ar
        ok = _known(ah, ar) & (ah >= LOW) & (ah <= HIGH) & inside
        x = ah if ok else 1.0
        s = math.sqrt(x)
        p, e = two_prod(s, s)
        d = ((x - p) - e) + (al if ok else 0.0)
        zh, zl = fast_two_sum(s, d / (2.0 * s))
        err = _err(zh, REL_SQRT)
        ZH[k] = zh
        ZL[k] = zl
        ZR[k] = (ar / (zh * (1.0 - 2.0**-50)) * INFLATE + MIN_SUBNORMAL + err) * INFLATE
        OK[k] = _status(ok, _known(ah, ar) & (ah * (1.0 - 2.0**-50) - abs(al) <= ar))


@njit(cache=True, parallel=True, error_model="numpy")
def ball_exp(AH, AL, AR, ZH, ZL, ZR, OK):
    """e^a: ``exp_core`` (relative error rel) on [EXP_MIN, EXP_MAX] with ra <= 1; for v
    within ra of a, |e^v - e^a| <= e^a (e^ra - 1) <= e^a ra (1 + ra). Where a + ra <=
    EXP_ZERO, e^v < 2^-1077: the ball (0, MIN_SUBNORMAL)."""
    for k in prange(AH.shape[0]):
        ah, al, ar = AH[k], AL[k], AR[k]
        known = _known(ah, ar)
        zero = known & (ah + abs(al) + ar <= EXP_ZERO)
        inside = known & (ah >= K.EXP_MIN) & (ah <= K.EXP_MAX) & (ar <= 1.0)
        zh, zl, rel = K.exp_core(ah if inside else 0.0, al if inside else 0.0, 0.0)
        err = rel * abs(zh) * SLACK + ABS
        spread = (abs(zh) + err) * (1.0 + 2.0 * U) * ar * (1.0 + ar) * INFLATE + MIN_SUBNORMAL
        ZH[k] = zh if inside else 0.0
        ZL[k] = zl if inside else 0.0
        ZR[k] = (spread + err) * INFLATE if inside else MIN_SUBNORMAL
        OK[k] = _status(zero | inside, known & (ar > 1.0))


with mpmath.workprec(300):
    _LN2_HI, _LN2_LO = K._dd_const(mpmath.log(2))


@njit(cache=True, parallel=True, error_model="numpy")
def ball_log(AH, AL, AR, ZH, ZL, ZR, OK):
    """log(a) for a ball of positive numbers: a = 2^q m exactly (m in [2^-1/2, 2^1/2)),
    z0 = log(mh) in float64 (any accuracy), M = e^-z0 - 1 by ``exp_core`` (relative
    rel_M), delta = m e^-z0 - 1 = (m - 1) + m M (dd + fp 3 u^2 |m - 1|, dd * dd 8 u^2,
    dd + dd 4 u^2 |delta|: err_d, relative to log m as both terms are of its size), log m =
    z0 + log1p(delta) with log1p(delta) = delta - delta^2/2 within |delta|^3 (|delta| <=
    2^-40 is checked; delta^2/2 from the high word, rounded: 4 u of it), then + q ln2 (dd
    ln2 within u^2, dd * fp 3 u^2, two dd sums 3 u^2 and 4 u^2 of their results).
    Radius: |log v - log a| <= ra / (a - ra)."""
    for k in prange(AH.shape[0]):
        ah, al, ar = AH[k], AL[k], AR[k]
        low = ah * (1.0 - 2.0**-50) - abs(al) - ar  # <= a - ra
        ok = _known(ah, ar) & (ah >= LOW) & (ah <= HIGH) & (low > 0.0)
        x, xl = (ah, al) if ok else (1.0, 0.0)
        q = np.floor(np.log2(x * 1.4142135623730951))
        mh, ml = math.ldexp(x, -int(q)), math.ldexp(xl, -int(q))
        z0 = np.log(mh)
        eh, el, rel_m = K.exp_core(-z0, 0.0, 1.0)
        th, tl = K.dd_add_fp(mh, ml, -1.0)
        ph, pl = K.dd_mul(mh, ml, eh, el)
        dh, dl = K.dd_add(th, tl, ph, pl)
        ad = abs(dh) * (1.0 + 2.0 * U)
        err_d = (K.REL_ADD_FP * abs(th) + (rel_m + K.REL_MUL) * abs(ph) + K.REL_ADD * ad) * SLACK + 3 * ABS
        sq = dh * dh * 0.5
        th, tl = K.dd_add_fp(dh, dl, -sq)
        lh, ll = K.dd_add_fp(th, tl, z0)
        qh, ql = K.dd_mul_fp(_LN2_HI, _LN2_LO, q)
        zh, zl = K.dd_add(lh, ll, qh, ql)
        err = (err_d * (1.0 + 2.0**-30) + ad * ad * ad + 4.0 * U * sq + 2 * MIN_SUBNORMAL
               + _err(lh, K.REL_ADD_FP) + abs(qh) * (U2 + K.REL_MUL_FP) * SLACK + _err(zh, K.REL_ADD)) * INFLATE
        ZH[k] = zh
        ZL[k] = zl
        ZR[k] = (ar / low * INFLATE + MIN_SUBNORMAL + err) * INFLATE
        OK[k] = _status(ok & (ad <= 2.0**-40), _known(ah, ar) & (low <= 0.0))


_CHUNK = 1024


@njit(cache=True, parallel=True, error_model="numpy")
def ball_erf(AH, AL, AR, ZH, ZL, ZR, OK):
    """erf(a) (odd) for |a| <= ERF_ONE by the Taylor expansion at the nearest node x0 =
    j / ERF_STEP, h = |a| - x0 (dd + fp: 3 u^2 |h|, |h| <= 1/64); +-1 beyond, within
    erfc(9) < 2^-120. The terms n >= ERF_DD_TERMS are summed by Horner in float64 (T,
    error e_T <= (3 (N - K) + 6) u M_T, M_T = sum |c_n| |h|^(n-K): two roundings a step,
    the coefficient's and the dropped low word of h), the others by Horner in dd from T
    (2K operations of relative error <= 8 u^2: gamma_2K(8 u^2) M with M = sum |c_n| |h|^n,
    plus u^2 M for the dd coefficients); T's error enters times |h|^K. Then the remainder
    bound, the coefficients' own error (sum eps_n |h|^n, with eps_0 = 0 at x0 = 0 where
    erf(0) = 0 exactly) and the argument's ((2/sqrt(pi)) times it).
    Radius: ra times the largest erf' on the input ball: 2/sqrt(pi) in general; for ra <=
    2^-11, erf'(t) = c_1 e^(x0^2 - t^2) <= 1.34 c_1 (|t - x0| <= 1/64 + ra, x0 <= 9, so
    x0^2 - t^2 <= 0.29), and beyond ERF_ONE erf' < 2^-100. erf(0) = 0 exactly. Chunks in
    parallel, each pass vectorised."""
    n = AH.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        a = c * _CHUNK
        size = min(n, a + _CHUNK) - a
        J = np.empty(size, dtype=np.int64)
        buf = np.empty((6, size))
        HH, HL, PH, PL, M, MT = buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]
        for k in range(size):
            ah, al = AH[a + k], AL[a + k]
            inside = _known(ah, AR[a + k]) & (abs(ah) <= ERF_ONE)
            x = K._select(inside, abs(ah), 0.0)
            xl = K._select(inside, K._select(ah < 0.0, -al, al), 0.0)
            j = min(np.int64(x * ERF_STEP + 0.5), _ERF_NODE_MAX)
            J[k] = j
            HH[k], HL[k] = K.dd_add_fp(x, xl, -j / ERF_STEP)
            PH[k] = _ERF_HI[ERF_DEGREE, j]
            MT[k] = _ERF_ABS[ERF_DEGREE, j]
        for m in range(ERF_DEGREE - 1, ERF_DD_TERMS - 1, -1):
            for k in range(size):
                j = J[k]
                PH[k] = PH[k] * HH[k] + _ERF_HI[m, j]
                MT[k] = MT[k] * abs(HH[k]) + _ERF_ABS[m, j]
        for k in range(size):
            PL[k] = 0.0
            M[k] = MT[k]
        for m in range(ERF_DD_TERMS - 1, -1, -1):
            for k in range(size):
                j = J[k]
                ph, pl = K.dd_mul(PH[k], PL[k], HH[k], HL[k])
                PH[k], PL[k] = K.dd_add(ph, pl, _ERF_HI[m, j], _ERF_LO[m, j])
                M[k] = M[k] * abs(HH[k]) + _ERF_ABS[m, j]
        for k in range(size):
            ah, ar = AH[a + k], AR[a + k]
            h = abs(HH[k]) * (1.0 + 2.0 * U)
            tail = (3.0 * (ERF_DEGREE - ERF_DD_TERMS) + 6.0) * U * MT[k] * h**ERF_DD_TERMS
            horner = (2 * ERF_DD_TERMS * K.REL_MUL + U2) * M[k]
            coeffs = ERF_COEFF_ERROR * K._select(J[k] == 0, h, 1.0)
            err = ((tail + horner) * 1.01 + _ERF_REMAINDER * h ** (ERF_DEGREE + 1) + coeffs
                   + TWO_OVER_SQRT_PI * K.REL_ADD_FP * h + ABS) * INFLATE
            one = abs(ah) > ERF_ONE
            sign = K._select(ah < 0.0, -1.0, 1.0)
            ZH[a + k] = sign * K._select(one, 1.0, PH[k])
            ZL[a + k] = sign * K._select(one, 0.0, PL[k])
            narrow = ar <= 2.0**-11
            slope = K._select(narrow, min(TWO_OVER_SQRT_PI, 1.34 * _ERF_HI[1, J[k]]), TWO_OVER_SQRT_PI)
            slope = K._select(one & narrow, 2.0**-100, slope)
            radius = (ar * slope * INFLATE + MIN_SUBNORMAL + K._select(one, 2.0**-119, err)) * INFLATE
            ZR[a + k] = K._select(_zero(ah, AL[a + k]) & (ar == 0.0), 0.0, radius)
            OK[a + k] = _status(_known(ah, ar) & _in_range(ah), False)


@njit(cache=True, parallel=True, error_model="numpy")
def act_chunks(code, alpha, YH, YL, ZH, ZL, E, OK):
    """``_exactdot.act_array`` (sigma at the dd centres, error E) over chunks, in parallel."""
    n = YH.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        a = c * _CHUNK
        b = min(n, a + _CHUNK)
        K.act_array(code, alpha, YH[a:b], YL[a:b], ZH[a:b], ZL[a:b], E[a:b], OK[a:b])


@njit(cache=True, parallel=True, error_model="numpy")
def enclose_chunks(code, alpha, shape, y0, YH, YL, RY, ZH, ZL, RZ, OK):
    """``_exactdot.enclose_activation`` (sigma over each input ball by its values at the
    two ends) over chunks of the flat arrays, in parallel."""
    n = YH.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        a = c * _CHUNK
        b = min(n, a + _CHUNK)
        K.enclose_activation(code, alpha, shape, y0, YH[a:b], YL[a:b], RY[a:b], ZH[a:b], ZL[a:b], RZ[a:b], OK[a:b])


# ---------------------------------------------------------------------------------------
# contractions


ROWS = 4  # rows of x that share one pass over the weights


@njit(cache=True, inline="always", error_model="numpy")
def _dot2_step(s, w, x):
    """(s', err): s' = fl(s + w x) with s' + err = s + w x up to the rounding of err:
    p + e = w x (TwoProd by FMA), s' + t = s + p (TwoSum), err = t + e."""
    p = w * x
    e = fma(w, x, -p)
    sn = s + p
    bb = sn - s
    return sn, (s - (sn - bb)) + (p - bb) + e


@njit(cache=True, inline="always", error_model="numpy")
def _accumulate(S, C, Q, w_row, xh, xl, q, m):
    """One j of the compensated sums of a row: S, C += Dot2 step of w xh, C += w xl,
    Q += |w| q (the weight of this term in the bound)."""
    for i in range(m):
        w = w_row[i]
        S[i], err = _dot2_step(S[i], w, xh)
        C[i] += err + w * xl
        Q[i] += abs(w) * q


@njit(cache=True, inline="always", error_model="numpy")
def _accumulate_pairs(S, C, Q, wh_row, wl_row, qw_row, rw_row, xh, xl, qx, rx, m):
    """One j of the compensated sums of a row for ball weights: as ``_accumulate`` with
    the cross terms wh xl + wl xh in C and Q += |wh| qx + |xh| qw + rx rw."""
    axh = abs(xh)
    for i in range(m):
        w = wh_row[i]
        S[i], err = _dot2_step(S[i], w, xh)
        C[i] += err + (w * xl + wl_row[i] * xh)
        Q[i] += abs(w) * qx + axh * qw_row[i] + rx * rw_row[i]


@njit(cache=True, inline="always", error_model="numpy")
def _start(B, QB, m):
    """The sums of ROWS rows before any term: S = bias, C = 0, Q = k1 |bias|."""
    S = np.empty((ROWS, m))
    C = np.zeros((ROWS, m))
    Q = np.empty((ROWS, m))
    for r in range(ROWS):
        S[r] = B
        Q[r] = QB
    return S, C, Q


@njit(cache=True, inline="always", error_model="numpy")
def _finish(S, C, Q, absolute, YH, YL, YR, OK, row, m):
    """YH + YL = S + C (TwoSum, exact), YR = the bound (Q inflated for its own rounding,
    plus the underflow allowance ``absolute``, 0 for a row of zeros, whose sum is the
    bias exactly), OK where everything is finite."""
    for i in range(m):
        h, l = two_sum(S[i], C[i])
        YH[row, i] = h
        YL[row, i] = l
        YR[row, i] = Q[i] * (1.0 + 2.0**-15) + absolute
        OK[row, i] = (abs(h) < math.inf) & (abs(l) < math.inf) & (Q[i] < math.inf)


def bound_weights(n: int) -> tuple[float, float]:
    """(k1, k2) of the error bound of a compensated sum of n products.

    Dot2 (Ogita, Rump & Oishi 2005) on p_j + e_j = w_j xh_j (TwoProd) and S_j + t_j =
    S_(j-1) + p_j (TwoSum): the value is S_n + C with C the float64 recursive sum of c_j =
    (t_j + e_j) + cross_j (cross_j = w_j xl_j, or wh xl + wl xh for ball weights). Each
    c_j is formed by at most 5 operations and summed with n more, so |C - sum c_j| <=
    gamma_(n+5) (sum |t_j| + |e_j| + |cross_j|), |t_j| <= u |S_j| <= u (1 + u)^(j+1) A_h,
    |e_j| <= u |p_j| (A_h = |b| + sum |w||xh|, A_l = sum |cross terms|): error <= k1 A_h +
    k2 A_l with k1 = ((n + 6)(n + 1) + 2) u^2, k2 = (n + 6) u, up to a factor 1 + 2^-20
    for n <= 2^30 (the + 2 u^2 A_h covers the product wl xl that ball weights drop). The
    kernels fold both terms and the propagated radii into one sum Q and inflate it by
    1 + 2^-15. Underflow: each product that underflows (w xh, the cross terms, the terms
    of Q and of the weights q of Q) errs by at most 2^-1075, times at most max |w| or max
    |x| where it enters Q: the caller's allowance (6 n + 16) 2^-1074 (1 + max |w| + max
    |x|) covers them for a row with a nonzero entry."""
    return ((n + 6.0) * (n + 1.0) + 2.0) * U2, (n + 6.0) * U


@njit(cache=True, parallel=True, error_model="numpy")
def dot_shared(XH, XL, QX, WT, B, QB, ABSOLUTE, YH, YL, YR, OK):
    """Y = X W^T + B for a ball X (XH, XL; QX = k1 |xh| + k2 |xl| + xr per element) and
    exact float64 weights WT (n, m) (W transposed) and bias B; the bound YR >= |YH + YL -
    exact| includes the propagated radii sum |w| xr (QB = k1 |b|). Rows go ROWS at a
    time, in parallel, each pass over WT shared by ROWS rows."""
    N, n = XH.shape
    m = WT.shape[1]
    for blk in prange((N + ROWS - 1) // ROWS):
        s0 = blk * ROWS
        rows = min(ROWS, N - s0)
        S, C, Q = _start(B, QB, m)
        nonzero = np.zeros(ROWS, dtype=np.bool_)
        for j in range(n):
            for r in range(rows):
                xh, xl, q = XH[s0 + r, j], XL[s0 + r, j], QX[s0 + r, j]
                if xh != 0.0 or xl != 0.0 or q != 0.0:
                    nonzero[r] = True
                    _accumulate(S[r], C[r], Q[r], WT[j], xh, xl, q, m)
        for r in range(rows):
            _finish(S[r], C[r], Q[r], K._select(nonzero[r], ABSOLUTE, 0.0), YH, YL, YR, OK, s0 + r, m)


@njit(cache=True, parallel=True, error_model="numpy")
def dot_pairs(XH, XL, QX, XR, WH, WL, QW, WR, B, QB, ABSOLUTE, YH, YL, YR, OK):
    """Y[g] = X[g] W[g]^T + B for balls X (G, T, n) and W given transposed (G, n, m):
    QX = k1 |xh| + k2 |xl| + (1 + 2u) xr, QW = k2 |wl| + (1 + 2u) wr; then Q bounds the
    rounding error and sum |w| xr + |x| wr + xr wr (|w| <= |wh| (1 + u), normalised
    balls). Parallel over groups and blocks of ROWS rows."""
    G, T, n = XH.shape
    m = WH.shape[2]
    blocks = (T + ROWS - 1) // ROWS
    YH2 = YH.reshape(G * T, m)
    YL2 = YL.reshape(G * T, m)
    YR2 = YR.reshape(G * T, m)
    OK2 = OK.reshape(G * T, m)
    for task in prange(G * blocks):
        g = task // blocks
        s0 = (task % blocks) * ROWS
        rows = min(ROWS, T - s0)
        S, C, Q = _start(B, QB, m)
        for j in range(n):
            for r in range(rows):
                _accumulate_pairs(S[r], C[r], Q[r], WH[g, j], WL[g, j], QW[g, j], WR[g, j], XH[g, s0 + r, j],
                                  XL[g, s0 + r, j], QX[g, s0 + r, j], XR[g, s0 + r, j], m)
        for r in range(rows):
            _finish(S[r], C[r], Q[r], ABSOLUTE, YH2, YL2, YR2, OK2, g * T + s0 + r, m)
