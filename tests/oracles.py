"""Exact oracles the tests hold mixacc against, in rational arithmetic (``Fraction``,
Python ints) from the definitions. They read the formats' constants
(``emulator.formats``) and parse accumulation specs (``emulator.accumulation``); nothing
of mixacc rounds, sums or draws random bits for them.

* Rounding: :func:`round_fraction` rounds a rational v once to a format: find v's two
  neighbours k Q <= |v| < (k + 1) Q on the grid of the quantum Q = 2^(max(e, emin) - p + 1)
  (2^e <= |v| < 2^(e+1)), pick one by the mode's rule, then the overflow rule (an
  unbounded-exponent result beyond max overflows: inf, NaN or max) and flush to zero.
* Accumulation: :func:`accumulate` evaluates one component of W x + b as an accumulation
  model says (every order, product format, bias placement), each rounding exact-then-
  rounded-once, stochastic rounding fed the random bits the kernels draw for that event
  (SplitMix64 written here, held in test_oracles against ``emulator.rounding.stream_bits``).
* Exact values: :func:`fraction`, :func:`exact_dot`, :func:`exact_affine`, round to
  nearest float64 :func:`rn64` (CPython's correctly rounded int division),
  :func:`rn_affine`, :func:`dd_split`; the binomial law :func:`binomial_cdf`.
* :func:`decoded_values`: every value of the small formats, decoded by numpy / ml_dtypes
  (the table test_oracles holds the rounding against).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Callable, NamedTuple

import ml_dtypes
import mpmath
import numpy as np

from emulator.accumulation import Accumulation, parse_accumulation
from emulator.formats import Format, get_format

# ---------------------------------------------------------------- exact values


def fraction(v) -> Fraction:
    """The exact value of a finite float, int, numpy scalar, mpmath number, exact python-flint
    arb or Fraction."""
    if isinstance(v, Fraction):
        return v
    if isinstance(v, mpmath.mpf):
        sign, man, exp, _ = v._mpf_
        return Fraction(-int(man) if sign else int(man)) * Fraction(2) ** int(exp)
    if hasattr(v, "man_exp"):  # an exact python-flint arb (a midpoint or a radius)
        man, exp = v.man_exp()
        return Fraction(int(man)) * Fraction(2) ** int(exp)
    return Fraction(float(v))


def exact_dot(w, x, b=None) -> Fraction:
    """sum_j w_j x_j + b, exactly."""
    return sum((fraction(wj) * fraction(xj) for wj, xj in zip(w, x)), Fraction(0) if b is None else fraction(b))


def exact_affine(W, x, b=None) -> list[Fraction]:
    """W x + b, exactly, one Fraction per row of W."""
    return [exact_dot(row, x, None if b is None else b[i]) for i, row in enumerate(W)]


def rn64(q: Fraction) -> float:
    """q rounded to the nearest float64, ties to even (float(Fraction) divides the integers
    with correct rounding); +-inf beyond the overflow threshold."""
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


def rn_affine(x, W, b=None) -> np.ndarray:
    """RN(W x + b) per sample: x (N, n) -> (N, m), x (n,) -> (m,)."""
    rows = np.atleast_2d(x)
    out = np.array([[rn64(v) for v in exact_affine(W, row, b)] for row in rows])
    return out[0] if np.ndim(x) == 1 else out


def dd_split(q: Fraction) -> tuple[float, float]:
    """The double-double (h, l) = (RN(q), RN(q - h))."""
    h = rn64(q)
    return h, rn64(q - Fraction(h))


# ---------------------------------------------------------------- formats, decoded elsewhere

DECODED = {  # name: (numpy / ml_dtypes type of the same format, storage bits)
    "fp16": (np.float16, 16), "bf16": (ml_dtypes.bfloat16, 16), "fp8-e4m3fn": (ml_dtypes.float8_e4m3fn, 8),
    "fp8-e5m2": (ml_dtypes.float8_e5m2, 8), "e4m3": (ml_dtypes.float8_e4m3, 8),
    "fp6-e2m3": (ml_dtypes.float6_e2m3fn, 6), "fp4-e2m1": (ml_dtypes.float4_e2m1fn, 4),
}


@functools.cache
def decoded_values(name: str) -> tuple[float, ...]:
    """Every finite value >= 0 of a format in ``DECODED``, increasing, listed by decoding
    every non-negative encoding with numpy / ml_dtypes (encoding order is value order)."""
    dtype, bits = DECODED[name]
    codes = np.arange(2 ** (bits - 1), dtype=np.uint16 if bits > 8 else np.uint8)
    with np.errstate(invalid="ignore"):
        vals = codes.view(dtype).astype(np.float64)
    finite = vals[: np.argmax(~np.isfinite(vals))] if not np.isfinite(vals).all() else vals
    return tuple(float(v) for v in finite)


# ---------------------------------------------------------------- rounding to a format


def binade(a: Fraction) -> int:
    """floor(log2 a) for a = n / d > 0: e = bitlength(n) - bitlength(d) or one less."""
    n, d = a.numerator, a.denominator
    e = n.bit_length() - d.bit_length()
    return e if (n >= d << e if e >= 0 else n << -e >= d) else e - 1


def _quantum_exponent(a: Fraction, fmt: "Format | str") -> int:
    f = get_format(fmt)
    return max(binade(a), f.emin) - f.p + 1


def quantum(a: Fraction, fmt: "Format | str") -> Fraction:
    """The spacing of fmt's values at a > 0, 2^(max(binade(a), emin) - p + 1) (the
    exponent range unbounded above)."""
    return Fraction(2) ** _quantum_exponent(a, fmt)


def neighbours(a: Fraction, fmt: "Format | str") -> tuple[Fraction, Fraction, int]:
    """(lo, hi, k): a's neighbours lo = k Q <= a < hi = (k + 1) Q among fmt's values with
    an unbounded exponent range (hi, even lo, may lie beyond max), Q = quantum(a, fmt)."""
    qe = _quantum_exponent(a, fmt)
    n, d = a.numerator, a.denominator
    k = (n << -qe) // d if qe < 0 else n // (d << qe)
    q = Fraction(2) ** qe
    return k * q, (k + 1) * q, k


def overflow_value(fmt: "Format | str", saturate: bool = False) -> float:
    """|result| of an overflow away from zero: max when saturating or for formats without
    inf and NaN, else inf where the format has it, else NaN."""
    f = get_format(fmt)
    if saturate or f.specials == "finite":
        return float(f.max)
    return math.inf if f.has_inf else math.nan


def stochastic_up_linear(f: Fraction, rbits: int) -> bool:
    """Stochastic rounding of the accumulation (``emulator.linear``): away from zero iff
    |v| - |RZ(v)| > (rbits >> 11) 2^(q-53), i.e. f > (rbits >> 11) 2^-53, f the fraction of
    the quantum 2^q."""
    return f > Fraction(rbits >> 11, 2**53)


def stochastic_up_round_to(f: Fraction, rbits: int) -> bool:
    """Stochastic rounding of ``round_to`` / ``round_scalar``: away from zero iff
    rbits < floor(f 2^64)."""
    return rbits < math.floor(f * 2**64)


StochasticRule = Callable[[Fraction, int], bool]

_AWAY = {  # mode: (fraction f of the quantum above lo, k, negative, rule, bits) -> |v| goes to hi
    "nearest": lambda f, k, neg, rule, bits: f > Fraction(1, 2) or (f == Fraction(1, 2) and k % 2 == 1),
    "zero": lambda f, k, neg, rule, bits: False,
    "up": lambda f, k, neg, rule, bits: f > 0 and not neg,
    "down": lambda f, k, neg, rule, bits: f > 0 and neg,
    "stochastic": lambda f, k, neg, rule, bits: rule(f, bits),
}


class Rounded(NamedTuple):
    """A rounded value (float64, a value of the format or inf/NaN) and whether it
    overflowed (the unbounded-exponent rounding is beyond max, or the input was inf/NaN)."""

    value: float
    overflow: bool


def round_fraction(v: "Fraction | float", fmt: "Format | str", mode: str = "nearest", *, saturate: bool = False,
                   subnormals: bool = True, rbits: int = 0, stochastic: StochasticRule = stochastic_up_linear,
                   zero_sign: float = 1.0) -> Rounded:
    """v rounded once to ``fmt`` in ``mode`` (nearest even, zero, up, down, stochastic with
    the random bits ``rbits`` read by the rule ``stochastic``). Beyond max: max when
    rounding toward zero, else :func:`overflow_value`; ``subnormals=False`` flushes results
    below the smallest normal to zero. A float v is taken exactly (-0.0 stays -0.0; inf
    overflows, NaN stays NaN); an exact zero given as a Fraction gets the sign of
    ``zero_sign``; other results keep v's sign, also when they vanish."""
    f = get_format(fmt)
    if isinstance(v, float):
        if not math.isfinite(v):
            return Rounded(v if v != v else math.copysign(overflow_value(f, saturate), v), True)
        zero_sign, v = math.copysign(1.0, v), Fraction(v)
    if v == 0:
        return Rounded(math.copysign(0.0, zero_sign), False)
    neg, a = v < 0, abs(v)
    lo, hi, k = neighbours(a, f)
    mag = hi if _AWAY[mode]((a - lo) / (hi - lo), k, neg, stochastic, rbits) else lo
    if mag > Fraction(f.max):
        toward_zero = mode == "zero" or (mode == "up" and neg) or (mode == "down" and not neg)
        value = float(f.max) if toward_zero else overflow_value(f, saturate)
        return Rounded(-value if neg else value, True)
    if not subnormals and mag < Fraction(f.min_normal):
        mag = Fraction(0)
    return Rounded(-float(mag) if neg else float(mag), False)


# ---------------------------------------------------------------- the kernels' random bits

MASK64 = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15

# the tag of each rounding event of a component: TAG_PRODUCT | j, TAG_BIAS,
# TAG_SUM | lo << 28 | hi (a sum over products lo..hi-1), TAG_OUTER | hi, TAG_BIAS_LAST
TAG_PRODUCT, TAG_BIAS, TAG_SUM, TAG_OUTER, TAG_BIAS_LAST = (k << 56 for k in range(1, 6))


def splitmix(z: int) -> int:
    """The SplitMix64 output function of the 64-bit integer z (Steele, Lea, Flood 2014)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def stream(key: int, counter: int) -> int:
    """The counter-th output (counter >= 0) of SplitMix64 seeded with ``key``."""
    return splitmix((key + (counter + 1) * GOLDEN) & MASK64)


def component_key(seed: "int | None", sample: int, component: int) -> int:
    """The key of one (sample, component): stream(stream(splitmix(seed), sample), component)."""
    return stream(stream(splitmix((seed or 0) & MASK64), sample), component)


# ---------------------------------------------------------------- accumulation


def _plus(u, v):
    """u + v: exact for Fractions, IEEE for inf and NaN (floats)."""
    if isinstance(u, float) or isinstance(v, float):
        return float(u if isinstance(u, float) else 0) + float(v if isinstance(v, float) else 0)
    return u + v


def _exact_or_special(v: float):
    return Fraction(v) if math.isfinite(v) else float(v)


def accumulate(x, w, b, acc: "str | Accumulation", sample: int = 0, component: int = 0) -> Rounded:
    """One component y = sum_j w_j x_j + b accumulated under ``acc``: p_j = w_j x_j exact
    or rounded to the product format; recursive s_j = round(s_{j-1} + p_j) from round(b);
    blocked / promote: recursive blocks from 0, each block sum added into an accumulator
    (in the wide format for promote) that starts from round(b); fused: K products and the
    running sum added exactly, rounded once; pairwise: adjacent pairs level by level, an
    odd last element carried up unrounded, a lone product rounded on its own, the bias
    added last; ``bias=last``: from 0, y = round(s + b). Stochastic rounding reads
    stream(component_key(seed, sample, component), tag of the event). Non-finite inputs
    follow IEEE arithmetic and overflow. ``exact``: RN(exact sum) to float64."""
    a = parse_accumulation(acc)
    if a.is_exact:
        y = rn64(exact_dot(w, x, b))
        return Rounded(y, not math.isfinite(y))
    key = component_key(a.seed, sample, component)
    overflowed = False
    out_fmt = a.wide if a.order == "promote" else a.fmt

    def rnd(v, tag, fmt=a.fmt):
        nonlocal overflowed
        r = round_fraction(v, fmt, a.rounding.name, saturate=a.saturate, subnormals=a.subnormals,
                           rbits=stream(key, tag))
        overflowed |= r.overflow
        return _exact_or_special(r.value)

    def product(j):
        nonlocal overflowed
        wj, xj = float(w[j]), float(x[j])
        p = Fraction(wj) * Fraction(xj) if math.isfinite(wj) and math.isfinite(xj) else wj * xj
        overflowed |= isinstance(p, float)
        return p if a.products == "exact" else rnd(p, TAG_PRODUCT | j, a.products)

    n = len(x)
    bias = None if b is None else _exact_or_special(float(b))
    start = Fraction(0) if bias is None or a.bias == "last" or a.order == "pairwise" else None
    if a.order == "recursive":
        s = start if start is not None else rnd(bias, TAG_BIAS)
        for j in range(n):
            s = rnd(_plus(s, product(j)), TAG_SUM | (j + 1))
    elif a.order in ("blocked", "promote"):
        s = start if start is not None else rnd(bias, TAG_BIAS, out_fmt)
        for lo in range(0, n, a.block):
            t = Fraction(0)
            for j in range(lo, min(n, lo + a.block)):
                t = rnd(_plus(t, product(j)), TAG_SUM | (lo << 28) | (j + 1))
            s = rnd(_plus(s, t), TAG_OUTER | min(n, lo + a.block), out_fmt)
    elif a.order == "fused":
        s = start if start is not None else rnd(bias, TAG_BIAS)
        for lo in range(0, n, a.block):
            hi = min(n, lo + a.block)
            total = s
            for j in range(lo, hi):
                total = _plus(total, product(j))
            s = rnd(total, TAG_SUM | hi)
    else:  # pairwise: nodes (value, first product, one past the last)
        level = [(product(j), j, j + 1) for j in range(n)]
        if len(level) == 1:
            level = [(rnd(level[0][0], TAG_SUM | 1), 0, 1)]
        while len(level) > 1:
            pairs = [(rnd(_plus(level[k][0], level[k + 1][0]), TAG_SUM | (level[k][1] << 28) | level[k + 1][2]),
                      level[k][1], level[k + 1][2]) for k in range(0, len(level) - 1, 2)]
            level = pairs + (level[-1:] if len(level) % 2 else [])
        s = level[0][0] if level else Fraction(0)
    if bias is not None and (a.bias == "last" or a.order == "pairwise"):
        s = rnd(_plus(s, bias), TAG_BIAS_LAST, out_fmt)
    y = float(s)
    return Rounded(y, overflowed or not math.isfinite(y))


def accumulate_matrix(x, W, b, acc: "str | Accumulation") -> tuple[np.ndarray, np.ndarray]:
    """(y, overflow) of :func:`accumulate` for every sample (row of x, its index the
    sample) and component (row of W): (N, m) for x (N, n), (m,) for x (n,)."""
    rows = np.atleast_2d(x)
    y = np.empty((rows.shape[0], len(W)))
    over = np.zeros(y.shape, dtype=bool)
    for r, row in enumerate(rows):
        for i, wrow in enumerate(W):
            y[r, i], over[r, i] = accumulate(row, wrow, None if b is None else b[i], acc, r, i)
    return (y[0], over[0]) if np.ndim(x) == 1 else (y, over)


# ---------------------------------------------------------------- probability


def binomial_cdf(k: int, trials: int, p: Fraction) -> Fraction:
    """P(X <= k) for X ~ Binomial(trials, p), exactly: with p = a / d and b = d - a,
    b^(trials - k) sum_{j <= k} C(trials, j) a^j b^(k - j) / d^trials (Horner in b)."""
    if k < 0:
        return Fraction(0)
    if k >= trials:
        return Fraction(1)
    p = Fraction(p)
    a, d = p.numerator, p.denominator
    b = d - a
    total, power, choose = 0, 1, 1
    for j in range(k + 1):
        total = total * b + choose * power
        power *= a
        choose = choose * (trials - j) // (j + 1)
    return Fraction(total * b ** (trials - k), d**trials)

