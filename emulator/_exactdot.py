"""Numba kernels of the fast exact reference: inner products with certified error bounds,
exactly rounded sums, and double-double ("dd", value = hi + lo) activations with proven
relative error bounds.

Notation: u = 2^-53, eta = 2^-1075 (the largest rounding error of an underflowing
operation). A dd value (h, l) is normalised: h = RN(h + l), so |l| <= u |h|.

dd operations are the algorithms of Joldes, Muller & Popescu, "Tight and rigorous error
bounds for basic building blocks of double-word arithmetic", ACM TOMS 44(2), 2017
(JMP17), with FMA-based TwoProd. The relative error bounds used here (``REL_*``) are the
published ones with a margin, valid away from underflow and overflow (the callers keep
the operands in [2^-900, 2^1000] or exactly zero; what underflows is covered by absolute
terms): dd + fp (Alg. 4) 2u^2 -> 3u^2; dd + dd (Alg. 6) 3u^2/(1-4u) -> 4u^2; dd * fp
(Alg. 9) 2u^2 -> 3u^2; dd * dd (Alg. 12) 4u^2 -> 8u^2; dd / dd (Alg. 17, with the dd * fp
of Alg. 7) 15u^2 + 56u^3 -> 32u^2. Every kernel is also checked against 500-bit mpmath in
tests/test_reference.py.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from numba import njit

from ._bits import bits_f64, fma
from .eft import expansion_rn, fast_two_sum, grow_expansion, two_prod, two_prod_exact_ok, two_sum

U = 2.0**-53
U2 = 2.0**-106
MIN_SUBNORMAL = 2.0**-1074  # the smallest positive float64
REL_ADD_FP = 3 * U2
REL_ADD = 4 * U2
REL_MUL_FP = 3 * U2
REL_MUL = 8 * U2
REL_DIV = 32 * U2
INFLATE = 1.0 + 2.0**-50  # covers the rounding of a handful of float64 operations in a bound
MAX_TERMS = 2**30  # n u <= 2^-23 keeps the (1 + u)^n factors below 1 + 2^-19

EXP_MIN, EXP_MAX = -650.0, 708.0  # range of exp_core: the result and its low word stay normal


@njit(cache=True, inline="always", error_model="numpy")
def dd_add_fp(xh, xl, y):
    sh, sl = two_sum(xh, y)
    return fast_two_sum(sh, xl + sl)


@njit(cache=True, inline="always", error_model="numpy")
def dd_add(xh, xl, yh, yl):
    sh, sl = two_sum(xh, yh)
    th, tl = two_sum(xl, yl)
    vh, vl = fast_two_sum(sh, sl + th)
    return fast_two_sum(vh, tl + vl)


@njit(cache=True, inline="always", error_model="numpy")
def dd_mul_fp(xh, xl, y):
    ch, cl1 = two_prod(xh, y)
    return fast_two_sum(ch, fma(xl, y, cl1))


@njit(cache=True, inline="always", error_model="numpy")
def dd_mul(xh, xl, yh, yl):
    ch, cl1 = two_prod(xh, yh)
    tl1 = fma(xh, yl, xl * yl)
    cl2 = fma(xl, yh, tl1)
    return fast_two_sum(ch, cl1 + cl2)


@njit(cache=True, inline="always", error_model="numpy")
def _dd_mul_fp1(xh, xl, y):
    """JMP17 Alg. 7 (the dd * fp step of Alg. 17)."""
    ch, cl1 = two_prod(xh, y)
    th, tl1 = fast_two_sum(ch, xl * y)
    return fast_two_sum(th, tl1 + cl1)


@njit(cache=True, inline="always", error_model="numpy")
def dd_div(xh, xl, yh, yl):
    th = xh / yh
    rh, rl = _dd_mul_fp1(yh, yl, th)
    d = (xh - rh) + (xl - rl)
    return fast_two_sum(th, d / yh)


@njit(cache=True, inline="always", error_model="numpy")
def _select(cond, a, b):
    return a if cond else b


# ---------------------------------------------------------------------------------------
# inner products


@njit(cache=True, error_model="numpy")
def compensated_dot(XH, XL, XR, WT, b, YH, YL, YE, YR, BAD):
    """For every sample s and output i, the dd value (YH, YL)[s, i] of the compensated
    inner product b_i + sum_j w_ij (xh_sj + xl_sj) (Dot2 of Ogita, Rump & Oishi 2005:
    TwoProd and TwoSum for w xh, the errors and w xl summed in float64) and bounds:

    YE >= |YH + YL - (b + W (xh + xl))|  (rounding of this evaluation),
    YR >= sum_j |w_ij| XR_sj            (propagated input radius),

    with YE = ((n+3)(n+1) u^2 A_h + (n+3) u A_l)(1 + 2^-17) + (2n + 8) 2^-1074 (the last
    term, for underflowing products, only where a product or the bias is nonzero),
    A_h = |b| + sum |w||xh|, A_l = sum |w||xl| (derivation: the TwoSum errors t_j obey
    |t_j| <= u |s_j| <= u (1 + 2^-19) A_h, the FMA product errors |e_j| <= u |w xh|; the
    3n terms t, e, fl(w xl) are summed with error <= (n+3) u times their magnitude).
    BAD marks components that overflowed (then the bounds are meaningless).
    WT is W transposed (n, m), so the inner loop over outputs vectorises."""
    N, n = XH.shape
    m = WT.shape[1]
    S = np.empty(m)
    C = np.empty(m)
    AH = np.empty(m)
    AL = np.empty(m)
    R = np.empty(m)
    NZ = np.empty(m)
    k1 = (n + 3.0) * (n + 1.0) * U2
    k2 = (n + 3.0) * U
    for s in range(N):
        for i in range(m):
            S[i] = b[i]
            C[i] = 0.0
            AH[i] = abs(b[i])
            AL[i] = 0.0
            R[i] = 0.0
            NZ[i] = 0.0
        uncertain = False
        for j in range(n):
            xh = XH[s, j]
            xl = XL[s, j]
            rx = XR[s, j]
            if xh == 0.0 and xl == 0.0 and rx == 0.0:
                continue
            uncertain = uncertain or rx != 0.0
            axh = abs(xh)
            axl = abs(xl)
            for i in range(m):
                w = WT[j, i]
                p = w * xh
                e = fma(w, xh, -p)
                so = S[i]
                sn = so + p
                bb = sn - so
                t = (so - (sn - bb)) + (p - bb)
                S[i] = sn
                C[i] += (t + e) + w * xl
                aw = abs(w)
                AH[i] += aw * axh
                AL[i] += aw * axl
                R[i] += aw * rx
                NZ[i] = max(NZ[i], aw)
        for i in range(m):
            h, l = two_sum(S[i], C[i])
            YH[s, i] = h
            YL[s, i] = l
            absolute = _select((NZ[i] > 0.0) | (b[i] != 0.0), (2.0 * n + 8.0) * MIN_SUBNORMAL, 0.0)
            YE[s, i] = ((k1 * AH[i] + k2 * AL[i]) * (1.0 + 2.0**-17) + absolute) * INFLATE
            YR[s, i] = (R[i] * (1.0 + 2.0**-18) + _select(uncertain, (n + 2.0) * MIN_SUBNORMAL, 0.0)) * INFLATE
            ok = abs(h) < math.inf and abs(l) < math.inf and AH[i] < math.inf and AL[i] < math.inf and R[i] < math.inf
            BAD[s, i] = not ok


@njit(cache=True, inline="always", error_model="numpy")
def _grow_product(w, x, partials, m):
    """Add the exact product w x (an error-free TwoProd pair) to the expansion
    partials[:m]; returns the new length and whether the TwoProd was error-free."""
    if x == 0.0 or w == 0.0:
        return m, True
    p, e = two_prod(w, x)
    m = grow_expansion(p, partials, m)
    if e != 0.0:
        m = grow_expansion(e, partials, m)
    return m, two_prod_exact_ok(w, x, p)


@njit(cache=True, error_model="numpy")
def exact_dot_dd(XH, XL, W, b, rows, cols, YH, YL, YE, OK):
    """For each listed component (s = rows[k], i = cols[k]): the exact value of
    b_i + sum_j w_ij (xh_sj + xl_sj) as an expansion (every product split by an exact
    TwoProd, summed with ``grow_expansion``), returned as the dd (YH, YL)[k] with
    YE[k] >= |YH + YL - exact| = 3 u^2 (number of partials) |YH| (the expansion is
    nonoverlapping, so the partial sums never cancel). OK[k] is False when a product is
    not error-free or the sum overflows."""
    n = W.shape[1]
    partials = np.empty(4 * n + 2)
    for k in range(rows.shape[0]):
        s = rows[k]
        i = cols[k]
        m = grow_expansion(b[i], partials, 0) if b[i] != 0.0 else 0
        ok = True
        for j in range(n):
            w = W[i, j]
            for x in (XH[s, j], XL[s, j]):
                m, exact = _grow_product(w, x, partials, m)
                ok = ok and exact
        h = 0.0
        l = 0.0
        if m > 0:
            h = partials[m - 1]
            for q in range(m - 2, -1, -1):
                h, l = dd_add_fp(h, l, partials[q])
        for q in range(m):
            if not abs(partials[q]) < math.inf:
                ok = False
        YH[k] = h
        YL[k] = l
        YE[k] = REL_ADD_FP * m * abs(h) * (1.0 + 2.0**-40) + 2.0 * m * MIN_SUBNORMAL
        OK[k] = ok and abs(h) < math.inf


@njit(cache=True, error_model="numpy")
def exact_rn(X, W, b, rows, cols, OUT, OK):
    """OUT[k] = RN(b_i + sum_j w_ij x_sj) for s = rows[k], i = cols[k]: exact TwoProd
    splits summed as a nonoverlapping expansion, rounded once with ties to even (the
    final step of math.fsum). OK[k] is False when a product is not error-free or a sum
    overflows (then the caller decides in integers)."""
    n = W.shape[1]
    partials = np.empty(2 * n + 2)
    for k in range(rows.shape[0]):
        s = rows[k]
        i = cols[k]
        m = grow_expansion(b[i], partials, 0) if b[i] != 0.0 else 0
        ok = True
        for j in range(n):
            m, exact = _grow_product(W[i, j], X[s, j], partials, m)
            ok = ok and exact
        for q in range(m):
            if not abs(partials[q]) < math.inf:
                ok = False
        OUT[k] = expansion_rn(partials, m)[0]
        OK[k] = ok and abs(OUT[k]) < math.inf


@njit(cache=True, error_model="numpy")
def rn_certified(H, L, E, OK):
    """OK = the interval [H + L - E, H + L + E] lies strictly inside the rounding
    interval of H, so H is the correctly rounded (RN) value of every point in it. Only
    decided for 2^-1000 <= |H| <= 2^1000 (elsewhere OK is False)."""
    for k in range(H.shape[0]):
        h = H[k]
        a = abs(h)
        if not (2.0**-1000 <= a <= 2.0**1000):
            OK[k] = False
            continue
        gap_up = np.nextafter(h, math.inf) - h
        gap_down = h - np.nextafter(h, -math.inf)
        OK[k] = (L[k] + E[k] < 0.5 * gap_up) and (L[k] - E[k] > -0.5 * gap_down)


# dd elementary functions, branch-free so that the loops over arrays vectorise. Each
# scalar kernel returns (zh, zl, err, ok): |zh + zl - f(x)| <= err for the dd input x
# taken as exact, or ok False where the kernel does not cover x.


def _dd_const(value) -> tuple[float, float]:
    """The dd nearest to the mpmath number ``value`` (|error| <= u^2 |value|); the caller
    computes ``value`` at 300 bits."""
    with mpmath.workprec(300):
        v = mpmath.mpf(value)
        hi = float(v)
        lo = float(v - hi)
    return hi, lo


def _tables():
    """2^(j/1024) as dd (j < 1024), 1/k! as dd, ln2/1024 = c1 + c2 + c3 (c1 of 32 bits,
    so k c1 is exact for |k| < 2^21; the rest below 2^-148)."""
    with mpmath.workprec(300):
        pow2 = np.array([_dd_const(mpmath.mpf(2) ** (mpmath.mpf(j) / 1024)) for j in range(1024)])
        inv_fact = np.array([_dd_const(1 / mpmath.factorial(k)) for k in range(16)])
        ln2 = mpmath.log(2) / 1024
        c1 = float(mpmath.floor(ln2 * 2**42) / 2**42)
        c2 = float(ln2 - c1)
        c3 = float(ln2 - c1 - c2)
        return pow2, inv_fact, (c1, c2, c3, float(1024 / mpmath.log(2)))


_POW2, _INV_FACT, (_LN2_1, _LN2_2, _LN2_3, _INV_LN2) = _tables()
_POW2_HI = np.ascontiguousarray(_POW2[:, 0])
_POW2_LO = np.ascontiguousarray(_POW2[:, 1])
_C2H, _C2L = _INV_FACT[2]
_C3H, _C3L = _INV_FACT[3]
_C4H, _C4L = _INV_FACT[4]
_C5, _C6, _C7, _C8 = (float(_INV_FACT[k, 0]) for k in range(5, 9))
with mpmath.workprec(300):
    SQRT_2_OVER_PI_HI, SQRT_2_OVER_PI_LO = _dd_const(mpmath.sqrt(2 / mpmath.pi))
    GELU_TANH_A_HI, GELU_TANH_A_LO = _dd_const(mpmath.mpf(44715) / 10**6)
_RINT = 1.5 * 2.0**52  # (x + _RINT) - _RINT = rint(x) for |x| < 2^51
REL_P1 = 20 * U2
_SLACK = 1.0 + 2.0**-40
_ABS = 16 * MIN_SUBNORMAL  # absolute slack for results whose low word may be subnormal


@njit(cache=True, inline="always", error_model="numpy")
def _abs_err(zh, rel):
    """An upper bound on rel |z| for z = zh + zl (|z| <= |zh| (1 + u))."""
    return rel * abs(zh) * _SLACK + _ABS


@njit(cache=True, inline="always", error_model="numpy")
def exp_core(xh, xl, minus):
    """(zh, zl, rel): exp(x) - minus (minus 0 or 1) for EXP_MIN <= xh <= EXP_MAX, with
    |zh + zl - (e^x - minus)| <= rel |e^x - minus|.

    x = k ln2/1024 + r, k = rint(x 1024/ln2); r in dd with absolute error dr <= 2^-114
    (0 when k = 0, then r = x exactly); |r| <= 2^-11.5. e^r - 1 = P1 =
    r(1 + r(1/2 + r(1/6 + r(1/24 + r t)))) with t = 1/120 + ... + r^3/8! in float64 (its
    error, 4u relative, weighs r^4/120 < 2^-53 against P1) and dd Horner steps:
    |P1 error| <= REL_P1 |P1| (truncation 2^-110, t 4 u^2, last add 3 u^2, last product
    8 u^2, damped rest). S = 2^(k/1024) = 2^q T_j (T_j a dd table entry, error u^2, exact
    for j = 0);
    e^x - minus = A + B with A = S - minus (dd + fp, 3 u^2 |A|), B = S P1 (8 u^2 + REL_P1).
    rel = ((1.01 u^2 [j != 0] + 2 dr) |S| + 3 u^2 |A| + (8 u^2 + REL_P1) |B|) / |z| + 4 u^2 (the
    final dd sum), evaluated with a 2^-40 relative margin."""
    kf = (xh * _INV_LN2 + _RINT) - _RINT
    sh, e1 = two_sum(xh, -kf * _LN2_1)
    p2, e2 = two_prod(kf, _LN2_2)
    rh, rl = dd_add(sh, e1, -p2, -e2)
    rh, rl = dd_add_fp(rh, rl, xl)
    rh, rl = dd_add_fp(rh, rl, -kf * _LN2_3)
    t = _C5 + rh * (_C6 + rh * (_C7 + rh * _C8))
    ph, pl = dd_mul_fp(rh, rl, t)
    ph, pl = dd_add(ph, pl, _C4H, _C4L)
    ph, pl = dd_mul(ph, pl, rh, rl)
    ph, pl = dd_add(ph, pl, _C3H, _C3L)
    ph, pl = dd_mul(ph, pl, rh, rl)
    ph, pl = dd_add(ph, pl, _C2H, _C2L)
    ph, pl = dd_mul(ph, pl, rh, rl)
    ph, pl = dd_add_fp(ph, pl, 1.0)
    ph, pl = dd_mul(ph, pl, rh, rl)
    ki = np.int64(kf)
    j = ki & 1023
    q = ki >> 10
    scale = bits_f64(np.uint64(q + 1023) << np.uint64(52))
    s_h = _POW2_HI[j] * scale
    s_l = _POW2_LO[j] * scale
    bh, bl = dd_mul(s_h, s_l, ph, pl)
    ah, al = dd_add_fp(s_h, s_l, -minus)
    zh, zl = dd_add(ah, al, bh, bl)
    table = _select(j != 0, 1.01 * U2, 0.0)  # 2^(0/1024) = 1 is exact
    dr = _select(kf != 0.0, 2.0**-113, 0.0)
    num = (table + dr) * abs(s_h) + REL_ADD_FP * abs(ah) + (REL_MUL + REL_P1) * abs(bh)
    rel = _select(zh != 0.0, num * _SLACK / abs(zh) + REL_ADD, 0.0)
    return zh, zl, rel


# Activation kernels in three vectorised passes sharing one exp_core loop: ``*_pre`` maps y
# to the argument of exp_core, ``*_post`` turns its result into (zh, zl, err, ok).


@njit(cache=True, inline="always", error_model="numpy")
def _tanh_pre(yh, yl):
    ah = abs(yh)
    big = ah >= 40.0
    return _select(big, 80.0, 2.0 * ah), _select(big, 0.0, _select(yh < 0.0, -2.0 * yl, 2.0 * yl))


@njit(cache=True, inline="always", error_model="numpy")
def _tanh_post(yh, yl, th, tl, rel_t):
    """tanh = sign(y) t/(t + 2), t = expm1(2|y|): the error of t cancels to first order
    (relative change 2 eps/(t + 2) <= eps); plus dd + fp (3 u^2) and dd / dd (32 u^2).
    |y| >= 40: 1 with error 2 e^-80 < 2^-114. |y| < 2^-500: y, error |y|^3/3."""
    sign = _select(yh < 0.0, -1.0, 1.0)
    ah = abs(yh)
    dh, dl = dd_add_fp(th, tl, 2.0)
    zh, zl = dd_div(th, tl, dh, dl)
    err = _abs_err(zh, rel_t * _SLACK + REL_ADD_FP + REL_DIV)
    big = ah >= 40.0
    tiny = ah < 2.0**-500
    zh = _select(big, 1.0, _select(tiny, ah, zh))
    zl = _select(big, 0.0, _select(tiny, sign * yl, zl))
    err = _select(big, 2.0**-114, _select(tiny, ah * 2.0**-998 + _select(ah > 0.0, MIN_SUBNORMAL, 0.0), err))
    return sign * zh, sign * zl, err, True


@njit(cache=True, inline="always", error_model="numpy")
def _sigmoid_pre(yh, yl):
    """-|y|, clamped at EXP_MIN (an error < e^-650 < 2^-937 of sigmoid for |y| > 650)."""
    clamp = abs(yh) > -EXP_MIN
    return _select(clamp, EXP_MIN, -abs(yh)), _select(clamp, 0.0, _select(yh < 0.0, yl, -yl))


@njit(cache=True, inline="always", error_model="numpy")
def _sigmoid_post(yh, yl, eh, el, rel_e):
    """e = exp(-|y|), D = 1 + e; sigmoid = 1/D (y >= 0) or e/D (y < 0). e's error enters D
    damped by e/(1 + e) and, for y < 0, the numerator: rel <= 2 rel_e + 3 u^2 + 32 u^2.
    y < -650: not handled."""
    clamp = abs(yh) > -EXP_MIN
    dh, dl = dd_add_fp(eh, el, 1.0)
    neg = yh < 0.0
    zh, zl = dd_div(_select(neg, eh, 1.0), _select(neg, el, 0.0), dh, dl)
    rel = (_select(neg, rel_e, 0.0) + rel_e) * _SLACK + REL_ADD_FP + REL_DIV
    err = _abs_err(zh, rel) + _select(clamp, 2.0**-937, 0.0)
    return zh, zl, err, ~(neg & clamp)


@njit(cache=True, inline="always", error_model="numpy")
def _silu_post(yh, yl, eh, el, rel_e):
    """y sigmoid(y): |error| <= |y| err_sigmoid + 8 u^2 |z| (the dd product)."""
    sh, sl, err, ok = _sigmoid_post(yh, yl, eh, el, rel_e)
    zh, zl = dd_mul(yh, yl, sh, sl)
    return zh, zl, abs(yh) * (1.0 + 2.0 * U) * err + _abs_err(zh, REL_MUL), ok


@njit(cache=True, inline="always", error_model="numpy")
def _elu_pre(yh, yl):
    """min(y, 0), clamped at EXP_MIN (an error <= |alpha| e^-650)."""
    keep = (yh < 0.0) & (yh >= EXP_MIN)
    return _select(yh < EXP_MIN, EXP_MIN, _select(keep, yh, 0.0)), _select(keep, yl, 0.0)


@njit(cache=True, inline="always", error_model="numpy")
def _elu_post(yh, yl, th, tl, rel, alpha):
    """y for y >= 0; alpha expm1(y) for y < 0 (rel_expm1 + 3 u^2)."""
    zh, zl = dd_mul_fp(th, tl, alpha)
    err = _abs_err(zh, rel * _SLACK + REL_MUL_FP) + _select(yh < EXP_MIN, abs(alpha) * 2.0**-937, 0.0)
    pos = yh >= 0.0
    return _select(pos, yh, zh), _select(pos, yl, zl), _select(pos, 0.0, err), True


@njit(cache=True, inline="always", error_model="numpy")
def _gelu_tanh_v(yh, yl):
    """2v = 2 c (y + a y^3) in dd, c = sqrt(2/pi), a = 0.044715 (dd constants, error
    u^2): relative error <= 40 u^2 (y^2, y^3, a y^3, a sum of two terms of one sign, c
    times it)."""
    y2h, y2l = dd_mul(yh, yl, yh, yl)
    y3h, y3l = dd_mul(y2h, y2l, yh, yl)
    th, tl = dd_mul(y3h, y3l, GELU_TANH_A_HI, GELU_TANH_A_LO)
    th, tl = dd_add(th, tl, yh, yl)
    vh, vl = dd_mul(th, tl, SQRT_2_OVER_PI_HI, SQRT_2_OVER_PI_LO)
    return 2.0 * vh, 2.0 * vl


@njit(cache=True, inline="always", error_model="numpy")
def _gelu_tanh_post(yh, yl, vh, vl, eh, el, rel_e):
    """y/2 (1 + tanh v) = y sigmoid(2v): an absolute error d <= 40 u^2 |2v| in 2v changes
    sigmoid by a factor within e^(+-d) (|d/ds log sigmoid(s)| <= 1); then the product by
    y (8 u^2). y >= 20: 2v >= 602, so the value is y with relative error < e^-600.
    y <= -20 is not handled (2v < -650 there or close)."""
    d = abs(vh) * 40.0 * U2 * _SLACK
    sh, sl, serr, ok = _sigmoid_post(vh, vl, eh, el, rel_e)
    zh, zl = dd_mul(yh, yl, sh, sl)
    err = abs(yh) * (1.0 + 2.0 * U) * (abs(sh) * (1.0 + U) * d * (1.0 + 2.0 * d) + serr) + _abs_err(zh, REL_MUL)
    big = yh >= 20.0
    err = _select(big, abs(yh) * 2.0**-860, err)
    return _select(big, yh, zh), _select(big, yl, zl), err, yh > -20.0


# softplus = max(y, 0) + log1p(e^-|y|): e^-|y| by exp_core, its log1p by one correction of
# a float64 log1p through exp_core again.

_SOFTPLUS_RANGE = 600.0  # beyond: e^-|y| < 2^-865, below what the correction keeps normal


@njit(cache=True, inline="always", error_model="numpy")
def _softplus_pre(yh, yl):
    """-|y|, clamped at -_SOFTPLUS_RANGE."""
    clamp = abs(yh) > _SOFTPLUS_RANGE
    return _select(clamp, -_SOFTPLUS_RANGE, -abs(yh)), _select(clamp, 0.0, _select(yh < 0.0, yl, -yl))


@njit(cache=True, inline="always", error_model="numpy")
def _softplus_post(yh, yl, xh, xl, rel_x):
    """softplus = max(y, 0) + L, L = log1p(X), X = e^-|y| = xh + xl within rel_x. For any
    float64 L0 (here log1p(xh)), M = expm1(L0) (exp_core, within rel_m) and
    delta = (X - M) / (1 + M) = (1 + X) e^-L0 - 1 give L = L0 + log1p(delta), with
    |log1p(delta) - delta| <= delta^2 for |delta| <= 1/2. Errors of delta: the numerator
    N = X - M carries rel_x X + rel_m M + 4 u^2 |N| (dd + dd); the denominator D = 1 + M
    >= 1 carries rel_m M + 3 u^2 D <= (rel_m + 3 u^2) D, weighed by |delta|; the quotient
    32 u^2. Then L0 + delta (dd + fp, 3 u^2) and y + L for y >= 0 (dd + dd, 4 u^2).
    y > 600: y with error 2^-865 > L; y < -600 (or |delta| > 1/2) is not handled."""
    l0 = np.log1p(xh)
    mh, ml, rel_m = exp_core(l0, 0.0, 1.0)
    nh, nl = dd_add(xh, xl, -mh, -ml)
    dh, dl = dd_add_fp(mh, ml, 1.0)
    qh, ql = dd_div(nh, nl, dh, dl)
    err_n = (rel_x * abs(xh) + rel_m * abs(mh) + REL_ADD * abs(nh)) * _SLACK + _ABS
    delta = (abs(qh) + err_n) * _SLACK  # >= |delta|: the error below is relatively 2^-80 of it
    err_q = (err_n + delta * (rel_m + REL_ADD_FP) + REL_DIV * abs(qh)) * _SLACK + _ABS
    delta = (abs(qh) + err_q) * _SLACK
    lh, ll = dd_add_fp(qh, ql, l0)
    err = err_q + delta * delta * _SLACK + _abs_err(lh, REL_ADD_FP)
    zh, zl = dd_add(yh, yl, lh, ll)
    pos = yh >= 0.0
    err = _select(pos, err + _abs_err(zh, REL_ADD), err)
    big = yh > _SOFTPLUS_RANGE
    zh = _select(big, yh, _select(pos, zh, lh))
    zl = _select(big, yl, _select(pos, zl, ll))
    return zh, zl, _select(big, 2.0**-865, err), (yh >= -_SOFTPLUS_RANGE) & (delta <= 0.5)


# gelu = y Phi(y), Phi(-|y|) = Q = e^(-y^2/2) g(|y|/sqrt2) / 2 with g = erfcx (e^(x^2) erfc x):
# the exponential by exp_core, g by Taylor polynomials at the nodes j/8.

ERFCX_NODES = 8  # nodes per unit of x
ERFCX_DEGREE = 20
GELU_RANGE = 36.0  # beyond: Q < e^-648 / 2 < 2^-935; x = |y|/sqrt2 <= 25.46 inside


def _erfcx_tables():
    """Taylor coefficients c_n = g^(n)(x0) / n! of g = erfcx at x0 = j/8, j <= 208, as dd
    (error u^2), from c_1 = 2 x0 c_0 - 2/sqrt(pi), (n + 1) c_(n+1) = 2 x0 c_n + 2 c_(n-1)
    (g' = 2 x g - 2/sqrt(pi) differentiated) at 300 bits: the recurrence cancels up to
    some 10 bits a step (x0 = 26), leaving the coefficients within 2^-150 relative. And the remainder constant
    2^(N+1) Gamma((N + 2)/2) / (sqrt(pi) (N + 1)!), N the degree, rounded up: for x >= 0,
    g^(n)(x) = (2/sqrt(pi)) int_0^inf (-2t)^n e^(-t^2 - 2xt) dt is at most
    2^n Gamma((n + 1)/2) / sqrt(pi) in size."""
    with mpmath.workprec(300):
        rows = []
        two_over_sqrt_pi = 2 / mpmath.sqrt(mpmath.pi)
        for j in range(26 * ERFCX_NODES + 1):
            x0 = mpmath.mpf(j) / ERFCX_NODES
            c = [mpmath.erfc(x0) * mpmath.exp(x0 * x0)]
            c.append(2 * x0 * c[0] - two_over_sqrt_pi)
            for n in range(1, ERFCX_DEGREE):
                c.append((2 * x0 * c[n] + 2 * c[n - 1]) / (n + 1))
            rows.append([(float(v), float(v - float(v))) for v in c])
        n = ERFCX_DEGREE + 1
        remainder = 2**n * mpmath.gamma(mpmath.mpf(n + 1) / 2) / (mpmath.sqrt(mpmath.pi) * mpmath.factorial(n))
        return np.array(rows), float(remainder) * (1.0 + 2.0**-40)


_ERFCX, _ERFCX_REMAINDER = _erfcx_tables()
_ERFCX_HI = np.ascontiguousarray(_ERFCX[:, :, 0])
_ERFCX_LO = np.ascontiguousarray(_ERFCX[:, :, 1])
with mpmath.workprec(300):
    INV_SQRT2_HI, INV_SQRT2_LO = _dd_const(1 / mpmath.sqrt(2))


@njit(cache=True, inline="always", error_model="numpy")
def erfcx_core(xh, xl, dx):
    """(gh, gl, err): erfcx(x) for 0 <= x <= 26 (the dd x = xh + xl, within dx of the
    argument wanted), with |gh + gl - erfcx(x + d)| <= err for every |d| <= dx.

    x0 = j/8 nearest x, h = x - x0 (dd + fp: 3 u^2 |h|), |h| <= 1/16 + dx. Horner in dd
    of the degree-20 Taylor polynomial: 40 operations of relative error <= 8 u^2 give
    gamma_40(8 u^2) sum |c_n| |h|^n, plus u^2 of it for the dd coefficients; the
    remainder is at most _ERFCX_REMAINDER |h|^21. An argument error d (dx plus the error
    of h) changes g by at most 2 |d| / (x + sqrt2) relative: -g'(x) < (4/sqrt(pi)) /
    (x + sqrt(x^2 + 2))^2 and g(x) > (2/sqrt(pi)) / (x + sqrt(x^2 + 2)) (Abramowitz &
    Stegun 7.1.13). Arguments outside [0, 26] (or NaN) give the value at 0."""
    inside = (xh >= 0.0) & (xh <= 26.0)
    xh, xl = _select(inside, xh, 0.0), _select(inside, xl, 0.0)
    j = np.int64(xh * ERFCX_NODES + 0.5)
    hh, hl = dd_add_fp(xh, xl, -j / ERFCX_NODES)
    ah = abs(hh)
    ph = _ERFCX_HI[j, ERFCX_DEGREE]
    pl = _ERFCX_LO[j, ERFCX_DEGREE]
    m = abs(ph)
    for n in range(ERFCX_DEGREE - 1, -1, -1):
        ph, pl = dd_mul(ph, pl, hh, hl)
        ph, pl = dd_add(ph, pl, _ERFCX_HI[j, n], _ERFCX_LO[j, n])
        m = m * ah + abs(_ERFCX_HI[j, n])
    h_max = (ah + dx) * (1.0 + 4.0 * U)
    d = dx + REL_ADD_FP * ah
    horner = (2 * ERFCX_DEGREE * REL_MUL * 1.01 + U2) * m * _SLACK
    err = horner + _ERFCX_REMAINDER * h_max ** (ERFCX_DEGREE + 1) * _SLACK
    err = (err + abs(ph) * 1.01 * 2.0 * d / (xh + 1.414)) * _SLACK + _ABS
    return ph, pl, err


@njit(cache=True, inline="always", error_model="numpy")
def _gelu_pre(yh, yl):
    """-y^2/2 (dd * dd, 8 u^2), clamped at -648 for |y| > GELU_RANGE."""
    ph, pl = dd_mul(yh, yl, yh, yl)
    clamp = abs(yh) > GELU_RANGE
    return _select(clamp, -648.0, -0.5 * ph), _select(clamp, 0.0, -0.5 * pl)


@njit(cache=True, inline="always", error_model="numpy")
def _gelu_post(yh, yl, eh, el, rel_e, sh):
    """Q = E G / 2, E = e^-s (within rel_e of e^-s for the computed s = -sh, whose error
    8 u^2 s + 2^-1000 (an underflowing y^2) moves e^-s by a factor within 1.01 of it),
    G = erfcx(|y|/sqrt2) (x = |y| 1/sqrt2 in dd: 9 u^2 x) and the dd product (8 u^2).
    gelu = y Q for y < 0, y (1 - Q) for y >= 0 (Q <= 1/2: dd + fp, 3 u^2), times y 8 u^2.
    y > GELU_RANGE: y with error 2^-935 |y|; y < -GELU_RANGE is not handled."""
    ah, al = _select(yh < 0.0, -yh, yh), _select(yh < 0.0, -yl, yl)
    xh, xl = dd_mul(ah, al, INV_SQRT2_HI, INV_SQRT2_LO)
    gh, gl, err_g = erfcx_core(xh, xl, 9.0 * U2 * xh * _SLACK)
    qh, ql = dd_mul(eh, el, gh, gl)
    qh, ql = 0.5 * qh, 0.5 * ql
    rel_q = (rel_e + 1.01 * (8.0 * U2 * abs(sh) + 2.0**-1000) + err_g / gh + REL_MUL) * _SLACK
    neg = yh < 0.0
    ph, pl = dd_add_fp(-qh, -ql, 1.0)
    fh, fl = _select(neg, qh, ph), _select(neg, ql, pl)
    err_f = abs(qh) * rel_q * _SLACK + _select(neg, 0.0, _abs_err(ph, REL_ADD_FP))
    zh, zl = dd_mul(yh, yl, fh, fl)
    err = abs(yh) * (1.0 + 2.0 * U) * err_f + _abs_err(zh, REL_MUL)
    big = yh > GELU_RANGE
    return _select(big, yh, zh), _select(big, yl, zl), _select(big, abs(yh) * 2.0**-935, err), yh >= -GELU_RANGE


(ACT_RELU, ACT_LEAKY, ACT_IDENTITY, ACT_TANH, ACT_SIGMOID, ACT_SILU, ACT_ELU, ACT_GELU_TANH, ACT_GELU,
 ACT_SOFTPLUS) = range(10)


@njit(cache=True, error_model="numpy")
def act_array(code, alpha, YH, YL, ZH, ZL, E, OK):
    """sigma(YH + YL) elementwise: the dd ZH + ZL with |ZH + ZL - sigma| <= E, OK False
    where the kernel does not cover the argument. Piecewise linear kernels are one loop;
    the others are pre / exp_core / post loops (each vectorised)."""
    n = YH.shape[0]
    if code == ACT_RELU or code == ACT_IDENTITY or code == ACT_LEAKY:
        slope = _select(code == ACT_RELU, 0.0, _select(code == ACT_IDENTITY, 1.0, alpha))
        for k in range(n):
            zh, zl = dd_mul_fp(YH[k], YL[k], slope)
            pos = YH[k] > 0.0
            exact = pos | (slope == 0.0) | (slope == 1.0)
            ZH[k] = _select(pos, YH[k], zh)
            ZL[k] = _select(pos, YL[k], zl)
            E[k] = _select(exact, 0.0, _abs_err(zh, REL_MUL_FP))
            OK[k] = True
        return
    buf = np.empty((7, n))
    XH, XL, VH, VL, EH, EL, REL = buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6]
    if code == ACT_TANH:
        for k in range(n):
            XH[k], XL[k] = _tanh_pre(YH[k], YL[k])
    elif code == ACT_ELU:
        for k in range(n):
            XH[k], XL[k] = _elu_pre(YH[k], YL[k])
    elif code == ACT_GELU_TANH:
        for k in range(n):
            VH[k], VL[k] = _gelu_tanh_v(YH[k], YL[k])
            XH[k], XL[k] = _sigmoid_pre(VH[k], VL[k])
    elif code == ACT_GELU:
        for k in range(n):
            XH[k], XL[k] = _gelu_pre(YH[k], YL[k])
    elif code == ACT_SOFTPLUS:
        for k in range(n):
            XH[k], XL[k] = _softplus_pre(YH[k], YL[k])
    else:
        for k in range(n):
            XH[k], XL[k] = _sigmoid_pre(YH[k], YL[k])
    minus = _select((code == ACT_TANH) | (code == ACT_ELU), 1.0, 0.0)
    for k in range(n):
        EH[k], EL[k], REL[k] = exp_core(XH[k], XL[k], minus)
    if code == ACT_TANH:
        for k in range(n):
            ZH[k], ZL[k], E[k], OK[k] = _tanh_post(YH[k], YL[k], EH[k], EL[k], REL[k])
    elif code == ACT_SIGMOID:
        for k in range(n):
            ZH[k], ZL[k], E[k], OK[k] = _sigmoid_post(YH[k], YL[k], EH[k], EL[k], REL[k])
    elif code == ACT_SILU:
        for k in range(n):
            ZH[k], ZL[k], E[k], OK[k] = _silu_post(YH[k], YL[k], EH[k], EL[k], REL[k])
    elif code == ACT_ELU:
        for k in range(n):
            ZH[k], ZL[k], E[k], OK[k] = _elu_post(YH[k], YL[k], EH[k], EL[k], REL[k], alpha)
    elif code == ACT_GELU_TANH:
        for k in range(n):
            ZH[k], ZL[k], E[k], OK[k] = _gelu_tanh_post(YH[k], YL[k], VH[k], VL[k], EH[k], EL[k], REL[k])
    elif code == ACT_GELU:
        for k in range(n):
            ZH[k], ZL[k], E[k], OK[k] = _gelu_post(YH[k], YL[k], EH[k], EL[k], REL[k], XH[k])
    elif code == ACT_SOFTPLUS:
        for k in range(n):
            ZH[k], ZL[k], E[k], OK[k] = _softplus_post(YH[k], YL[k], EH[k], EL[k], REL[k])
    else:
        for k in range(n):
            OK[k] = False


SHAPE_INCREASING, SHAPE_UNIMODAL = 0, 1
_DD_RANGE = 2.0**1000
_CHUNK = 2048


@njit(cache=True, error_model="numpy")
def enclose_activation(code, alpha, shape, y0, YH, YL, RY, ZH, ZL, RZ, OK):
    """Enclosure of sigma over [y - ry, y + ry] (y = YH + YL, ry = RY) as the dd ZH + ZL
    with radius RZ: sigma is monotone on the interval (increasing, or unimodal with its
    minimum in [y0 - 1e-9, y0 + 1e-9] outside the interval), so its range is spanned by
    the values A, B at the ends: centre (A + B)/2, radius |B - A|/2 + the larger
    evaluation error + the rounding of the centre. The ends are widened by the dd + fp
    error (3 u^2 of the result) so that they contain [y - ry, y + ry]. OK is False where
    the kernel does not apply (range, minimum inside the interval)."""
    n = YH.shape[0]
    buf = np.empty((5, 2 * _CHUNK))
    EH, EL, FH, FL, FE = buf[0], buf[1], buf[2], buf[3], buf[4]  # ends (low ends first), sigma at the ends
    FOK = np.empty(2 * _CHUNK, dtype=np.bool_)
    for start in range(0, n, _CHUNK):
        c = min(_CHUNK, n - start)
        for k in range(c):
            yh = YH[start + k]
            yl = YL[start + k]
            ry = RY[start + k]
            wide = _select(ry == 0.0, 0.0, (ry + 4.0 * U2 * (abs(yh) + 2.0 * ry)) * INFLATE + MIN_SUBNORMAL)
            EH[k], EL[k] = dd_add_fp(yh, yl, -wide)
            EH[c + k], EL[c + k] = dd_add_fp(yh, yl, wide)
        act_array(code, alpha, EH[:2 * c], EL[:2 * c], FH[:2 * c], FL[:2 * c], FE[:2 * c], FOK[:2 * c])
        for k in range(c):
            yh = YH[start + k]
            h = c + k
            in_range = (abs(yh) < _DD_RANGE) & (RY[start + k] < _DD_RANGE) & ((yh == 0.0) | (abs(yh) >= 2.0**-900))
            monotone = (shape != SHAPE_UNIMODAL) | (EH[h] < y0 - 1e-9) | (EH[k] > y0 + 1e-9)
            ch, cl = dd_add(FH[k], FL[k], FH[h], FL[h])
            ch *= 0.5
            cl *= 0.5
            spread = (abs(FH[h] - FH[k]) + abs(FL[h] - FL[k])) * INFLATE + MIN_SUBNORMAL
            ZH[start + k] = ch
            ZL[start + k] = cl
            RZ[start + k] = _select((EH[k] == EH[h]) & (EL[k] == EL[h]), FE[k] * INFLATE,
                                    (0.5 * spread + max(FE[k], FE[h]) + REL_ADD * abs(ch) * _SLACK + _ABS) * INFLATE)
            OK[start + k] = FOK[k] & FOK[h] & in_range & monotone
