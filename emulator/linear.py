"""Emulated y = W x + b with every addition rounded as an accumulation model says.

``linear(x, W, b, acc)`` follows docs/method.md#accumulation-models for component i, with
p_j = w_ij x_j exact (``products="exact"``: the product enters the sum unrounded) or
p_j = round_P(w_ij x_j):

* recursive: s_0 = round_F(b_i) (0 without bias), s_j = round_F(s_{j-1} + p_j);
* pairwise: adjacent pairs level by level, (p_1 + p_2), (p_3 + p_4), ..., an odd last
  element carried up unrounded to the next level, every sum rounded to F (a single
  product is rounded on its own); the bias is always added last;
* blocked:B: t = recursive sum in F of p_{kB+1} .. p_{(k+1)B} from 0; S_0 = round_F(b_i),
  S_{k+1} = round_F(S_k + t_k);
* fused:K: s_0 = round_F(b_i), s_{k+1} = round_F(s_k + p_{kK+1} + ... + p_{(k+1)K}), the
  K products and s_k added exactly and rounded once;
* promote:B:G: blocks of B summed in F from 0 as in blocked, each block sum added into an
  accumulator in the wide format G that starts from round_G(b_i); the output is in G.

With ``bias="last"`` the accumulator starts from 0 and y = round(s + b_i) in the output
format. Each rounding rounds the exact real sum once, in the mode of ``acc.rounding``
(products too), with the format's overflow rule (inf, NaN, or ±max when saturating) and
flush-to-zero when asked. Stochastic rounding rounds |v| up to the next value when
|v| - |RZ(v)| > tau = K 2^(q-53), 2^q the quantum at v and K the top 53 of 64 random bits
(SplitMix64 of the seed (None meaning 0), the sample's row in x, the component's row in
W and the rounding event), so the probability is the exact fraction to within 2^-53 and
results do not depend on batch size or threads. Non-finite inputs follow IEEE
arithmetic: inf * 0 = NaN, inf - inf = NaN, and a non-finite partial sum is rounded by
the format's rule (inf, NaN, or ±max). Values are compared as numbers: a zero may come
out as -0.0 or +0.0.

Implementation: ``emulator._accumulate`` (numba, vectorised over components with an
exact fallback); components that leave its range (products below 2^-969 or above 2^990)
are finished by :func:`linear_slow`, the exact twin in rational arithmetic.
Block-FMA rows (``tensorcore:``, ``blockfma:``; docs/method.md#tensor-core-accumulation)
go to ``emulator.tensorcore_linear``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numba
import numpy as np

from . import _accumulate as K
from .accumulation import Accumulation, parse_accumulation
from .arrays import real_array
from .errors import DataError, ShapeError
from .formats import Format
from .rounding import DOWN, NEAREST, STOCHASTIC, UP, ZERO, overflow_magnitude, stream_bits
from .tensorcore_linear import emulate_blockfma

__all__ = ["linear", "linear_slow"]

BATCH = 4096  # samples converted to float64 and processed per kernel call
GROUP = 2  # samples sharing a pass over W: their running sums and a row of W fit a 32 KiB L1 (m <= 800)
MAX_INPUTS = 1 << K.MAX_TERMS_LOG2
_MASK64 = (1 << 64) - 1


def linear(x, W, b=None, acc: "str | Accumulation" = "fp16", *, return_overflow: bool = False, first_row: int = 0):
    """Emulated W x + b under the accumulation model ``acc`` (a spec string such as
    ``"fp16"``, ``"bf16:pairwise"``, ``"fp16:promote:128:fp32"``, or an
    :class:`~emulator.accumulation.Accumulation`; see the module docstring).

    Parameters
    ----------
    x : array (N, n) or (n,) of real numbers
    W : array (m, n)
    b : array (m,) or None
    acc : the accumulation model; ``"exact"`` / ``"exact:BITS"`` gives the correctly
        rounded (nearest) float64 of the exact W x + b (``emulator.reference``).
    return_overflow : also return a bool mask, True where a partial sum overflowed
        (or saturated) or the result is not finite.
    first_row : the global index of x's first row, the row that keys stochastic rounding
        bits (rows of one data set split into batches draw the bits of the whole).

    Returns
    -------
    float64 array (N, m) (or (m,) for 1-D x) of values of the output format, and the mask
    when asked.
    """
    a = parse_accumulation(acc)
    xs, w, bias, single = _checked(x, W, b)
    if a.is_exact:
        from .reference import exact_linear

        y = np.asarray(exact_linear(xs, w, bias, a.precision), dtype=np.float64).reshape(xs.shape[0], w.shape[0])
        ovf = ~np.isfinite(y)
    else:
        y, ovf = _emulate(xs, w, bias, a, _first_row(first_row))
    if single:
        y, ovf = y[0], ovf[0]
    return (y, ovf) if return_overflow else y


# ---------------------------------------------------------------------------------------
# validation


def _checked(x, W, b):
    w = real_array(W, "W in linear(x, W, b)", ndim=2)
    m, n = w.shape
    xs = real_array(x, "x in linear(x, W, b)", ndim=(1, 2))
    single = xs.ndim == 1
    xs = xs.reshape(1, -1) if single else xs
    if xs.shape[1] != n:
        raise ShapeError(f"x has {xs.shape[1]} inputs but W has {n} columns (W shape {w.shape}) in linear(x, W, b).")
    if n > MAX_INPUTS:
        raise ShapeError(f"n == {n} inputs, must be <= 2^{K.MAX_TERMS_LOG2} in linear(x, W, b).")
    bias = None
    if b is not None:
        bias = real_array(b, "b in linear(x, W, b)", ndim=1)
        if bias.shape != (m,):
            raise ShapeError(f"b must have shape ({m},) to match W {w.shape}, got {bias.shape} in linear(x, W, b).")
    return xs, w, bias, single


# ---------------------------------------------------------------------------------------
# the numba path


MIN_THREAD_WORK = 1 << 16  # products below which a second thread costs more than it saves
_POOLS: "dict[int, ThreadPoolExecutor]" = {}  # the process's worker threads, by their number


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="mixacc-linear")
    return _POOLS[threads]


def _in_threads(run, nsamp: int, products_per_row: int) -> None:
    """run(r0, r1) over [0, nsamp) in batches of BATCH rows, each split between threads
    (the kernels release the GIL) when every thread gets at least MIN_THREAD_WORK products."""
    threads = max(1, min(numba.get_num_threads(), nsamp // (2 * GROUP),
                         nsamp * max(products_per_row, 1) // MIN_THREAD_WORK))
    for r0 in range(0, nsamp, BATCH):
        r1 = min(nsamp, r0 + BATCH)
        if threads == 1:
            run(r0, r1)
            continue
        step = -(-(r1 - r0) // threads)
        step += -step % GROUP
        cuts = [(s, min(r1, s + step)) for s in range(r0, r1, step)]
        list(_pool(threads).map(lambda c: run(*c), cuts))


def _kernel_format(fmt: Format, a: Accumulation) -> K.KernelFormat:
    return K.kernel_format(fmt, a.rounding, a.saturate, a.subnormals)


def _kind(a: Accumulation) -> int:
    code = a.rounding.code
    return 0 if code == NEAREST else 2 if code == STOCHASTIC else 1


def _seed_key(a: Accumulation) -> int:
    return _mix64((a.seed or 0) & _MASK64)


def _first_row(first_row) -> int:
    if isinstance(first_row, bool) or not isinstance(first_row, (int, np.integer)) or first_row < 0:
        raise DataError(f"first_row == {first_row!r}, must be a non-negative integer.")
    return int(first_row)


def _emulate(x: np.ndarray, w: np.ndarray, bias, a: Accumulation, first_row: int = 0):
    if a.hardware is not None:
        return emulate_blockfma(x, w, bias, a, _in_threads)
    nsamp, m = x.shape[0], w.shape[0]
    y = np.empty((nsamp, m))
    ovf = np.zeros((nsamp, m), dtype=np.bool_)
    dead = np.zeros((nsamp, m), dtype=np.bool_)
    if nsamp == 0 or m == 0:
        return y, ovf
    wt = np.ascontiguousarray(w.T)
    has_bias = bias is not None
    b = np.ascontiguousarray(bias) if has_bias else np.zeros(m)
    colfinite = np.isfinite(w).all(axis=0)
    fcf = _kernel_format(a.fmt, a)
    has_p = a.products != "exact"
    fcp = _kernel_format(a.products, a) if has_p else fcf
    kind = _kind(a)
    seedkey = np.uint64(_seed_key(a))
    if a.order == "pairwise":
        kernel, args = K.kernel_pairwise, (b, has_bias, fcf, fcp, has_p, kind, seedkey)
    elif a.order == "fused":
        k = min(a.block, max(x.shape[1], 1))
        kernel, args = K.kernel_fused, (b, has_bias, a.bias == "last", colfinite, fcf, fcp, has_p, kind, k, seedkey)
    else:
        fco = _kernel_format(a.wide, a) if a.order == "promote" else fcf
        kernel, args = K.kernel_blocked, (b, has_bias, a.bias == "last", colfinite, fcf, fcp, fco, has_p, kind,
                                          max(a.block, 1), a.order != "recursive", seedkey)

    def run(r0: int, r1: int) -> None:
        kernel(np.ascontiguousarray(x[r0:r1]), wt, *args, first_row + r0, GROUP, y[r0:r1], ovf[r0:r1], dead[r0:r1])

    _in_threads(run, nsamp, m * x.shape[1])
    for r, i in zip(*np.nonzero(dead)):
        y[r, i], ovf[r, i] = _component_slow(x[r], w[i], None if bias is None else bias[i], a, first_row + int(r),
                                             int(i))
    ovf |= ~np.isfinite(y)
    return y, ovf


# ---------------------------------------------------------------------------------------
# the exact twin: the same semantics in rational arithmetic, one rounding at a time


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _stream(key: int, counter: int) -> int:
    """The kernels' counter-based stream (``rounding.stream_bits``), as a Python int."""
    return int(stream_bits(np.uint64(key), np.int64(counter)))


def _round_value(v, fmt: Format, a: Accumulation, rbits: int):
    """(round_fmt(v), overflowed) for a Fraction v, or IEEE specials (float inf/NaN)."""
    if isinstance(v, float):
        if v != v:
            return v, True
        return math.copysign(overflow_magnitude(fmt, a.saturate), v), True
    if v == 0:
        return 0.0, False
    mode = a.rounding.code
    neg = v < 0
    mag = -v if neg else v
    e = mag.numerator.bit_length() - mag.denominator.bit_length()
    if Fraction(2) ** e > mag:
        e -= 1
    q = max(e, fmt.emin) - fmt.p + 1
    quantum = Fraction(2) ** q
    trunc = math.floor(mag / quantum)
    rem = mag - trunc * quantum
    if mode == NEAREST:
        up = 2 * rem > quantum or (2 * rem == quantum and trunc % 2 == 1)
    elif mode == STOCHASTIC:
        # tau exact: the kernels floor it to a multiple of 2^-1074, exact only for their float64 terms
        up = rem > (rbits >> 11) * Fraction(2) ** (q - 53)
    else:
        up = rem > 0 and ((mode == UP and not neg) or (mode == DOWN and neg))
    result = (trunc + up) * quantum
    over = result > Fraction(fmt.max)
    if over:
        toward_zero = mode == ZERO or (mode == UP and neg) or (mode == DOWN and not neg)
        value = float(fmt.max) if toward_zero else overflow_magnitude(fmt, a.saturate)
    elif not a.subnormals and result < Fraction(fmt.min_normal):
        value = 0.0
    else:
        value = float(result)
    return (-value if neg else value), over


def _exact(v: float):
    return Fraction(v) if math.isfinite(v) else v


def _plus(u, v):
    if isinstance(u, float) or isinstance(v, float):
        specials = [t for t in (u, v) if isinstance(t, float)]
        return specials[0] + specials[1] if len(specials) == 2 else specials[0]
    return u + v


def _times(w: float, x: float):
    if math.isfinite(w) and math.isfinite(x):
        return Fraction(w) * Fraction(x)
    return w * x


def _pairwise_slow(leaves: list, rnd) -> object:
    """Level by level: adjacent pairs rounded, an odd last element carried up."""
    if not leaves:
        return Fraction(0)
    if len(leaves) == 1:
        return rnd(leaves[0][0], K.TAG_SUM | 1)
    level = leaves
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level) - 1, 2):
            (u, lo, _), (v, _, hi) = level[k], level[k + 1]
            nxt.append((rnd(_plus(u, v), K.TAG_SUM | (lo << 28) | hi), lo, hi))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0][0]


def _component_slow(x: np.ndarray, w: np.ndarray, bias, a: Accumulation, row: int, comp: int):
    """(y_i, overflowed) for one sample and one component, exactly as specified."""
    key = _stream(_stream(_seed_key(a), row), comp)
    overflowed = False

    def rnd(v, tag, fmt=a.fmt):
        nonlocal overflowed
        value, over = _round_value(v, fmt, a, _stream(key, tag))
        overflowed |= over
        return _exact(value)

    def leaf(j):
        p = _times(float(w[j]), float(x[j]))
        overflowed_before = isinstance(p, float)
        nonlocal overflowed
        overflowed |= overflowed_before
        return p if a.products == "exact" else rnd(p, K.TAG_PRODUCT | j, a.products)

    n = len(x)
    out_fmt = a.wide if a.order == "promote" else a.fmt
    b = None if bias is None else _exact(float(bias))
    first = b is not None and a.bias == "first" and a.order != "pairwise"
    if a.order == "pairwise":
        s = _pairwise_slow([(leaf(j), j, j + 1) for j in range(n)], rnd)
    elif a.order == "fused":
        s = rnd(b, K.TAG_BIAS) if first else Fraction(0)
        for c0 in range(0, n, a.block):
            c1 = min(n, c0 + a.block)
            total = s
            for j in range(c0, c1):
                total = _plus(total, leaf(j))
            s = rnd(total, K.TAG_SUM | c1)
    elif a.order == "recursive":
        s = rnd(b, K.TAG_BIAS) if first else Fraction(0)
        for j in range(n):
            s = rnd(_plus(s, leaf(j)), K.TAG_SUM | (j + 1))
    else:
        s = rnd(b, K.TAG_BIAS, out_fmt) if first else Fraction(0)
        for lo in range(0, n, a.block):
            hi = min(n, lo + a.block)
            t = Fraction(0)
            for j in range(lo, hi):
                t = rnd(_plus(t, leaf(j)), K.TAG_SUM | (lo << 28) | (j + 1))
            s = rnd(_plus(s, t), K.TAG_OUTER | hi, out_fmt)
    if b is not None and (a.bias == "last" or a.order == "pairwise"):
        s = rnd(_plus(s, b), K.TAG_BIAS_LAST, out_fmt)
    y = float(s)
    return y, overflowed or not math.isfinite(y)


def linear_slow(x, W, b=None, acc: "str | Accumulation" = "fp16", *, first_row: int = 0):
    """The exact twin of :func:`linear` (same arguments, returns (y, overflow mask)):
    every rounding computed from the exact rational value, one component at a time.
    For small cases and for components the fast kernels cannot hold."""
    a = parse_accumulation(acc)
    xs, w, bias, single = _checked(x, W, b)
    if a.is_exact or a.hardware is not None:
        raise DataError(f"linear_slow emulates the rounding of a format, not {a.spec!r}; use linear(..., acc=...).")
    y = np.empty((xs.shape[0], w.shape[0]))
    ovf = np.zeros(y.shape, dtype=np.bool_)
    for r in range(xs.shape[0]):
        for i in range(w.shape[0]):
            y[r, i], ovf[r, i] = _component_slow(xs[r], w[i], None if bias is None else bias[i], a,
                                                 _first_row(first_row) + r, i)
    return (y[0], ovf[0]) if single else (y, ovf)
