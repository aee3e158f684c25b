"""Condition numbers of a layer z = sigma(W x + b) (docs/method.md#condition-numbers;
El Arar, Filip, Mary, Riccietti, arXiv 2503.15568).

* Inner product: the absolute sums a_i = |b_i| + sum_j |w_ij| |x_j| and the condition
  numbers kappa_i = a_i / |y_i| (0/0 = 0, c/0 = inf).
* Activation: sigma'(y) and kappa_sigma(y) = |y sigma'(y) / sigma(y)| from each row's
  closed form (``Activation.df``, ``Activation.kappa``); their symbolic twins
  d sigma/dy and |y sigma' / sigma| come from ``sympy.diff`` of the row's ``expr``.
* The largest |sigma'| on an interval [lo, hi], as a rigorous upper bound: the maximum of
  a C^1 function's |sigma'| on an interval is reached at an end, at a zero of sigma'' or
  at a kink; rows that know those points (``critical_points``) are evaluated there in
  float64 with a margin; rows that do not (``critical_points is None``) are enclosed by
  interval arithmetic (mpmath.iv) on a grid of cells, gathered in cached dyadic blocks.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import mpmath
import numpy as np
import sympy
from mpmath import iv

from emulator.activations import Activation, Y, get_activation
from emulator.arrays import real_array
from emulator.errors import ShapeError
from emulator.metrics import ratio

__all__ = [
    "ratio", "absolute_sums", "condition_numbers", "activation_derivative", "activation_condition",
    "symbolic_derivative", "symbolic_condition", "max_abs_derivative", "DERIVATIVE_MARGIN",
]

DERIVATIVE_MARGIN = 2.0**-40
"""Relative and absolute margin added to |sigma'| evaluated in float64 by a row's closed
form. Those forms are a handful of float64 operations and libm calls, each within a few
ulps, so their absolute error is below 2^-48 max(1, |sigma'|); 2^-40 covers it 250 times."""

_CELL = 2.0**-4  # width of the interval-arithmetic cells (units of y)
_REFINED_LEVEL = 10  # dyadic blocks up to 2^10 cells are bounded cell by cell (cached)
_MAX_CELL_INDEX = 2**40  # intervals reaching beyond are enclosed directly, in _WIDE_PIECES pieces
_WIDE_PIECES = 16


def _as_layer_arrays(x, W, b):
    x = real_array(x, "x", ndim=(1, 2))
    W = real_array(W, "W", ndim=2)
    if x.shape[-1] != W.shape[1]:
        raise ShapeError(f"x of shape {x.shape} does not fit W of shape {W.shape} (need x (N, n) or (n,), W (m, n)).")
    if b is not None:
        b = real_array(b, "b", ndim=1)
        if b.shape != (W.shape[0],):
            raise ShapeError(f"b of shape {b.shape} does not fit W of shape {W.shape} (need ({W.shape[0]},)).")
    return x, W, b


def absolute_sums(x, W, b=None) -> np.ndarray:
    """a_i = |b_i| + sum_j |w_ij| |x_j| in float64: shape (N, m) for x (N, n), (m,) for x (n,).

    Every term is nonnegative, so the float64 result is within a relative
    (1 - 2^-53)^-(n+1) of the exact sum (see :func:`analysis.bounds.upper` for the
    rigorous use)."""
    x, W, b = _as_layer_arrays(x, W, b)
    with np.errstate(over="ignore"):
        a = np.abs(x) @ np.abs(W).T
        return a if b is None else a + np.abs(b)


def condition_numbers(x, W, b=None, y=None) -> np.ndarray:
    """kappa_i = a_i / |y_i| (0/0 = 0, c/0 = inf); ``y`` defaults to the float64 W x + b
    (pass the exact or the computed y to get kappa at that value)."""
    x, W, b = _as_layer_arrays(x, W, b)
    if y is None:
        with np.errstate(over="ignore", invalid="ignore"):
            y = x @ W.T + (0.0 if b is None else b)
    return ratio(absolute_sums(x, W, b), y)


def activation_derivative(activation, y) -> np.ndarray:
    """sigma'(y) elementwise, from the activation's closed form (sympy-derived for
    ``sympy:`` activations)."""
    act = get_activation(activation)
    return np.asarray(act.df(np.asarray(y, dtype=np.float64)), dtype=np.float64)


def activation_condition(activation, y) -> np.ndarray:
    """kappa_sigma(y) = |y sigma'(y) / sigma(y)| elementwise (0/0 = 0), closed form."""
    act = get_activation(activation)
    return np.asarray(act.kappa(np.asarray(y, dtype=np.float64)), dtype=np.float64)


def symbolic_derivative(activation) -> sympy.Expr:
    """d sigma / dy of the activation's sympy expression (in ``emulator.activations.Y``)."""
    return sympy.diff(get_activation(activation).expr, Y)


def symbolic_condition(activation) -> sympy.Expr:
    """|y sigma'(y) / sigma(y)| as a sympy expression (pieces folded; nan where sigma = 0)."""
    act = get_activation(activation)
    return sympy.Abs(sympy.piecewise_fold(Y * sympy.diff(act.expr, Y) / act.expr))


def _next_up(v: np.ndarray) -> np.ndarray:
    return np.nextafter(v, np.inf)


@lru_cache(maxsize=128)
def _candidates(act: Activation) -> tuple[tuple[float, float], ...]:
    """(point, |sigma'| there) for the zeros of sigma'' and, at each kink of a piecewise
    sigma, the largest one-sided |sigma'| (every piece's derivative at the kink)."""
    out = [(float(c), float(np.abs(act.df(np.array([float(c)]))[0]))) for c in act.critical_points or ()]
    for pw in act.expr.atoms(sympy.Piecewise):
        pieces = [sympy.diff(e, Y) for e, _ in pw.args]
        for _, cond in pw.args:
            if isinstance(cond, sympy.core.relational.Relational):
                for k in sympy.solve(sympy.Eq(cond.lhs, cond.rhs), Y):
                    if k.is_real:
                        slope = max(abs(float(d.subs(Y, k))) for d in pieces)
                        out.append((float(k), slope))
    return tuple(out)


def _monotone(fn: Callable, increasing: bool = True) -> Callable:
    """An interval extension of a monotone function: its values at the ends, evaluated
    with mpmath 40 bits above the interval precision and widened outward."""

    def wrapped(x):
        x = iv.mpf(x)
        lo, hi = (mpmath.mpf(v) for v in x._mpi_)
        with mpmath.workprec(iv.prec + 40):
            a, b = fn(lo), fn(hi)
            if not increasing:
                a, b = b, a
            pad = mpmath.ldexp(1, -iv.prec - 10)
            a, b = a - abs(a) * pad - mpmath.ldexp(1, -1070), b + abs(b) * pad + mpmath.ldexp(1, -1070)
        return iv.mpf([a, b])

    return wrapped


def _iv_cosh(x):
    x = iv.mpf(x)
    lo, hi = (mpmath.mpf(v) for v in x._mpi_)
    top = _monotone(mpmath.cosh)(max(abs(lo), abs(hi)))
    bottom = iv.mpf(1) if lo <= 0 <= hi else _monotone(mpmath.cosh)(min(abs(lo), abs(hi)))
    return iv.mpf([bottom.a, top.b])


def _iv_abs(x):
    x = iv.mpf(x)
    lo, hi = (mpmath.mpf(v) for v in x._mpi_)
    if lo >= 0:
        return x
    if hi <= 0:
        return -x
    return iv.mpf([0, max(-lo, hi)])


def _iv_sign(x):
    x = iv.mpf(x)
    lo, hi = (mpmath.mpf(v) for v in x._mpi_)
    return iv.mpf([-1 if lo < 0 else (0 if lo == 0 else 1), 1 if hi > 0 else (0 if hi == 0 else -1)])


_INTERVAL_FUNCTIONS = {
    "tanh": _monotone(mpmath.tanh), "sinh": _monotone(mpmath.sinh), "atan": _monotone(mpmath.atan),
    "erf": _monotone(mpmath.erf), "erfc": _monotone(mpmath.erfc, increasing=False), "cosh": _iv_cosh,
    "Abs": _iv_abs, "sign": _iv_sign, "exp": iv.exp, "log": iv.log, "sqrt": iv.sqrt, "sin": iv.sin,
    "cos": iv.cos, "pi": iv.pi, "E": iv.e, "e": iv.e, "mpf": lambda x: iv.mpf(mpmath.mpf(x)),
}


@lru_cache(maxsize=64)
def _interval_derivative(act: Activation) -> Callable:
    """sigma' as a function of an mpmath.iv interval (sympy.diff of the row's expr)."""
    return sympy.lambdify(Y, sympy.diff(act.expr, Y), modules=[_INTERVAL_FUNCTIONS, "mpmath"])


def _enclosure_sup(act: Activation, lo: float, hi: float) -> float:
    """An upper bound on sup |sigma'| over [lo, hi] by one interval evaluation (inf when
    the interval evaluation fails, e.g. a log of an interval reaching 0)."""
    try:
        with np.errstate(all="ignore"):
            enc = iv.mpf(_interval_derivative(act)(iv.mpf([lo, hi])))
        a, b = (mpmath.mpf(v) for v in enc._mpi_)
        top = max(abs(a), abs(b))
        if not mpmath.isfinite(top):
            return math.inf
        value = float(top)
        return value if value >= top else math.nextafter(value, math.inf)
    except (ZeroDivisionError, ValueError, TypeError, ArithmeticError, mpmath.libmp.NoConvergence):
        return math.inf


@lru_cache(maxsize=1 << 17)
def _block_sup(act: Activation, level: int, k: int) -> float:
    """An upper bound on sup |sigma'| over the dyadic block [k 2^level, (k + 1) 2^level)
    of cells: one enclosure per cell, the maximum of the two halves up to _REFINED_LEVEL
    (so as tight as the cells), one enclosure of the whole block above it."""
    if level == 0 or level > _REFINED_LEVEL:
        width = _CELL * 2.0**level
        return _enclosure_sup(act, k * width, (k + 1) * width)
    return max(_block_sup(act, level - 1, 2 * k), _block_sup(act, level - 1, 2 * k + 1))


def _dyadic_cover(k_lo: int, k_hi: int):
    """The fewest aligned dyadic blocks (level, index) that tile the cells k_lo..k_hi."""
    k = k_lo
    while k <= k_hi:
        level = 0
        while k % (2 << level) == 0 and k + (2 << level) - 1 <= k_hi:
            level += 1
        yield level, k >> level
        k += 1 << level


def _interval_sup(act: Activation, lo: float, hi: float) -> float:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return math.inf
    k_lo, k_hi = math.floor(lo / _CELL), math.floor(hi / _CELL)
    if max(abs(k_lo), abs(k_hi)) < _MAX_CELL_INDEX:
        return max(_block_sup(act, level, k) for level, k in _dyadic_cover(k_lo, k_hi))
    edges = np.linspace(lo, hi, _WIDE_PIECES + 1)
    edges[0], edges[-1] = lo, hi
    return max(_enclosure_sup(act, float(np.nextafter(a, -np.inf)), float(np.nextafter(b, np.inf)))
               for a, b in zip(edges[:-1], edges[1:]))


def max_abs_derivative(activation, lo, hi) -> np.ndarray:
    """A rigorous upper bound on max |sigma'(t)| over t in [lo, hi], elementwise.

    Known critical points: max(|sigma'(lo)|, |sigma'(hi)|, |sigma'(c)| for zeros c of
    sigma'' in [lo, hi], one-sided |sigma'| at kinks in [lo, hi]) times (1 + m) plus m,
    m = :data:`DERIVATIVE_MARGIN`, rounded up (the listed points are within an ulp of
    the zeros of sigma'', which moves |sigma'| by far less than m). Unknown critical
    points: the maximum of interval enclosures of sigma' over grid cells of width 1/16
    covering [lo, hi], taken over the aligned dyadic blocks that tile them (each cached:
    the cells' maximum up to 2^10 cells, one enclosure of the block beyond).
    Non-finite ends give inf.
    """
    act = get_activation(activation)
    lo, hi = np.broadcast_arrays(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))
    if np.any(lo > hi):
        raise ShapeError("max_abs_derivative needs lo <= hi elementwise.")
    finite = np.isfinite(lo) & np.isfinite(hi)
    if act.critical_points is None:
        out = np.full(lo.shape, np.inf)
        pairs, inverse = np.unique(np.stack([lo[finite], hi[finite]], axis=-1).reshape(-1, 2), axis=0, return_inverse=True)
        sups = np.array([_interval_sup(act, float(a), float(b)) for a, b in pairs])
        out[finite] = sups[inverse.reshape(-1)] if sups.size else np.empty(0)
        return out
    with np.errstate(all="ignore"):
        out = np.maximum(np.abs(act.df(np.where(finite, lo, 0.0))), np.abs(act.df(np.where(finite, hi, 0.0))))
    for point, slope in _candidates(act):
        out = np.where((lo <= point) & (point <= hi), np.maximum(out, slope), out)
    out = np.where(np.isnan(out), np.inf, out)
    out = _next_up(_next_up(out * (1.0 + DERIVATIVE_MARGIN)) + DERIVATIVE_MARGIN)
    return np.where(finite, out, np.inf)
