"""The mpmath path of the exact arithmetic, its definition (docs/method.md#the-exact-arithmetic):
every tensor an :class:`Intervals` (an object array of ``mpmath.iv`` intervals), every
operator evaluated on intervals at ``precision`` bits.

* sums (contractions, reductions): the ends of each product of intervals exact (mpmath's
  ``libmp`` at precision 0), their sums rounded outward at twice ``precision`` (exact
  sums would need a 2^1000-bit integer for 1 + e^-finfo.max), the result rounded outward
  once more to ``precision``;
* +, -, *, /, sqrt, exp, log are mpmath's interval functions (outward rounding); sqrt
  and log of an interval that reaches below 0 are taken on its part in the domain (the
  exact value is assumed to be in it, as interval arithmetic does), an interval wholly
  outside the domain, a division by an interval that holds 0 or an unbounded interval
  give the undefined interval [-inf, +inf];
* erf (increasing) at the two ends, and the activations by the reference's enclosure
  (``emulator.reference._mp_enclose``: sigma at both ends of the interval, unimodal
  ones lowered by a Lipschitz bound), evaluated by mpmath at ``precision + 24`` bits and
  trusted to 2^-precision relative: the one assumption of this path, as of the
  reference's mpmath path.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import cmp_to_key

import mpmath
import numpy as np
from mpmath import iv, libmp

from ..activations import get_activation
from ..reference import _model, _mp_enclose, _up
from .arithmetic import Site, contraction_shapes
from .enclosures import ScalarMath, object_array, reduce_objects

__all__ = ["Intervals", "IntervalMath"]

GUARD_BITS = 24
_FLOOR, _CEIL = libmp.round_floor, libmp.round_ceiling


@contextmanager
def _precision(bits: int):
    old = iv.prec
    iv.prec = bits
    try:
        yield
    finally:
        iv.prec = old


def _interval(low, high):
    """The interval of two raw mpmath numbers (exact; [-inf, +inf] when an end is NaN)."""
    if low == libmp.fnan or high == libmp.fnan:
        return UNDEFINED
    return iv.make_mpf((low, high))


UNDEFINED = iv.make_mpf((libmp.fninf, libmp.finf))


def _point(v: float):
    raw = libmp.from_float(float(v))
    return _interval(raw, raw)


class Intervals:
    """An enclosure tensor of the mpmath path: ``values`` is an object array of
    ``mpmath.iv`` intervals, each holding the exact value."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray):
        self.values = values

    def __repr__(self) -> str:
        return f"Intervals(shape={self.shape})"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    @property
    def size(self) -> int:
        return self.values.size

    def map(self, fn) -> "Intervals":
        return Intervals(fn(self.values))

    @staticmethod
    def join(tensors: list, fn) -> "Intervals":
        return Intervals(fn([t.values for t in tensors]))

    def padded(self, pad_width, mode: str, value: float) -> "Intervals":
        if mode == "constant":
            return Intervals(np.pad(self.values, pad_width, mode="constant", constant_values=_point(value)))
        return Intervals(np.pad(self.values, pad_width, mode=mode))

    def ends(self) -> list:
        """The raw (low, high) of every element, in C order."""
        return [x._mpi_ for x in self.values.reshape(-1)]

    def value(self) -> np.ndarray:
        """RN of each interval's midpoint (NaN for an unbounded one); the midpoint is
        exact, or, for ends 2^MID_BITS apart in scale, a point between them."""
        return np.array([_mid_float(a, b) for a, b in self.ends()]).reshape(self.shape)

    def radius(self) -> np.ndarray:
        """An upward bound on the distance from ``value`` to every point of the interval."""
        out = []
        for (a, b), v in zip(self.ends(), self.value().reshape(-1)):
            if not math.isfinite(v):
                out.append(0.0 if a == b and libmp.mpf_eq(a, libmp.from_float(v)) else math.inf)
                continue
            c = libmp.from_float(v)
            out.append(_up(max(libmp.mpf_sub(c, a, 64, _CEIL), libmp.mpf_sub(b, c, 64, _CEIL), key=_ORDER)))
        return np.array(out).reshape(self.shape)

    def rounded(self) -> np.ndarray:
        """Both ends of the interval round (RN) to the same float64."""
        return np.array([_rn(a) == _rn(b) for a, b in self.ends()]).reshape(self.shape)


MID_BITS = 2200  # beyond the float64 range's 2098 bits


def _mid_float(a, b) -> float:
    if a == b:
        return _rn(a)
    if a in (libmp.fninf, libmp.finf) or b in (libmp.fninf, libmp.finf):
        return math.nan
    return _rn(libmp.mpf_shift(libmp.mpf_add(a, b, MID_BITS, _FLOOR), -1))


def _rn(raw) -> float:
    """RN(raw) to float64 (ties to even; +-inf beyond the range)."""
    return libmp.to_float(raw, rnd=libmp.round_nearest)


_ORDER = cmp_to_key(libmp.mpf_cmp)


def _product(x, w):
    """The ends of the product of two intervals (raw pairs), exact."""
    (xa, xb), (wa, wb) = x, w
    if wa == wb:
        cands = (libmp.mpf_mul(xa, wa), libmp.mpf_mul(xb, wa))
    else:
        cands = (libmp.mpf_mul(xa, wa), libmp.mpf_mul(xa, wb), libmp.mpf_mul(xb, wa), libmp.mpf_mul(xb, wb))
    if any(c == libmp.fnan for c in cands):
        return libmp.fnan, libmp.fnan
    return min(cands, key=_ORDER), max(cands, key=_ORDER)


class IntervalMath(ScalarMath):
    """The mpmath path's namespace at ``precision`` bits (see the module docstring)."""

    name = "intervals"
    tensor = Intervals

    @staticmethod
    def lift(array) -> Intervals:
        a = np.asarray(array, dtype=np.float64)
        return Intervals(object_array(np.frompyfunc(_point, 1, 1)(a), a.shape))

    def exact_scalar(self, t) -> "float | None":
        ends = self._as(t).ends()
        if not ends or any(a != b for a, b in ends) or len({a for a, _ in ends}) != 1:
            return None
        value = _rn(ends[0][0])
        return value if libmp.mpf_eq(libmp.from_float(value), ends[0][0]) else None

    def _map(self, fn, *tensors) -> Intervals:
        arrays = [self._as(t).values for t in tensors]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        with _precision(self.precision):
            return Intervals(object_array(np.frompyfunc(fn, len(arrays), 1)(*arrays), shape))

    def div(self, a, b):
        return self._map(_divide, a, b)

    def neg(self, a):
        return self._map(lambda x: -x, a)

    def abs(self, a):
        return self._map(abs, a)

    def exp(self, a):
        return self._map(iv.exp, a)

    def sqrt(self, a):
        return self._map(lambda x: _in_domain(x, iv.sqrt, libmp.fzero), a)

    def log(self, a):
        return self._map(lambda x: _in_domain(x, iv.log, libmp.fninf), a)

    def erf(self, a):
        prec = self.precision
        return self._map(lambda x: _increasing(mpmath.erf, x, prec), a)

    def activation(self, name, y) -> Intervals:
        """The reference's enclosure of sigma over each interval (midpoint and
        half-width, ``_mp_enclose``)."""
        act = get_activation(name)
        model = _model(act)
        prec = self.precision

        def one(x):
            a, b = x._mpi_
            if not (_finite(a) and _finite(b)):
                return UNDEFINED
            mid = libmp.mpf_shift(libmp.mpf_add(a, b), -1)
            centre, rad = _mp_enclose(act, model, mid, _up(libmp.mpf_shift(libmp.mpf_sub(b, a), -1)), prec)
            r = libmp.from_float(rad)
            return _interval(libmp.mpf_sub(centre, r), libmp.mpf_add(centre, r))

        return self._map(one, y)

    def maximum(self, a, b):
        return self._map(lambda x, y: _interval(max(x._mpi_[0], y._mpi_[0], key=_ORDER),
                                                max(x._mpi_[1], y._mpi_[1], key=_ORDER)), a, b)

    def max(self, a, axis, keepdims: bool = False):
        """[max of the low ends, max of the high ends] along ``axis``."""
        return Intervals(reduce_objects(self._as(a).values, axis, keepdims,
                                        lambda x, y: _interval(max(x._mpi_[0], y._mpi_[0], key=_ORDER),
                                                               max(x._mpi_[1], y._mpi_[1], key=_ORDER))))

    def where(self, condition, a, b):
        a, b = self._as(a), self._as(b)
        cond = np.asarray(condition, dtype=bool)
        shape = np.broadcast_shapes(cond.shape, a.shape, b.shape)
        return Intervals(object_array(np.where(cond, a.values, b.values), shape))

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False) -> Intervals:
        """Sums of the products' ends (plus the bias) rounded outward at twice the
        precision, then to the precision."""
        x, w = self._as(x), self._as(w)
        bias = None if bias is None else self._as(bias)
        x, w, bias, lead = contraction_shapes(self, site, x, w, bias, batched)
        xs, ws = x.values, w.values
        if not batched:
            xs, ws = xs[None], ws[None]
        m, n = ws.shape[1], ws.shape[2]
        xe, we = _ends_array(xs), _ends_array(ws)
        bias_ends = [(libmp.fzero, libmp.fzero)] * m if bias is None else bias.ends()
        out = np.empty((xs.shape[0], xs.shape[1], m), dtype=object)
        wide = 2 * self.precision
        for g in range(xs.shape[0]):
            for t in range(xs.shape[1]):
                for i in range(m):
                    low, high = bias_ends[i]
                    for j in range(n):
                        pa, pb = _product(xe[g, t, j], we[g, i, j])
                        low, high = libmp.mpf_add(low, pa, wide, _FLOOR), libmp.mpf_add(high, pb, wide, _CEIL)
                    out[g, t, i] = _interval(libmp.mpf_pos(low, self.precision, _FLOOR),
                                             libmp.mpf_pos(high, self.precision, _CEIL))
        return Intervals(out.reshape(*lead, m))


def _ends_array(values: np.ndarray) -> np.ndarray:
    """The raw (low, high) pairs of an object array of intervals, same shape."""
    out = np.empty(values.size, dtype=object)
    for k, v in enumerate(values.reshape(-1)):
        out[k] = v._mpi_
    return out.reshape(values.shape)


def _finite(raw) -> bool:
    return raw not in (libmp.finf, libmp.fninf, libmp.fnan)


def _divide(x, y):
    a, b = y._mpi_
    if libmp.mpf_sign(a) <= 0 <= libmp.mpf_sign(b):
        return UNDEFINED
    return x / y


def _in_domain(x, fn, at_zero):
    """fn on the part of x in [0, inf): [fn(0), fn(b)] when x reaches below 0 (``at_zero``
    = fn(0)), undefined when x is wholly below 0."""
    a, b = x._mpi_
    if libmp.mpf_sign(b) < 0:
        return UNDEFINED
    if libmp.mpf_sign(a) <= 0:
        top = fn(_interval(b, b))
        return _interval(at_zero, top._mpi_[1])
    return fn(x)


def _increasing(fn, x, prec: int):
    """An increasing function on an interval: fn at both ends at prec + GUARD_BITS bits,
    each trusted to 2^-prec relative, widened outward by that."""
    a, b = x._mpi_
    w = prec + GUARD_BITS
    with mpmath.workprec(w):
        fa, fb = mpmath.mpf(fn(mpmath.mp.make_mpf(a)))._mpf_, mpmath.mpf(fn(mpmath.mp.make_mpf(b)))._mpf_
    low = libmp.mpf_sub(fa, libmp.mpf_shift(libmp.mpf_abs(fa), -prec), w, _FLOOR)
    high = libmp.mpf_add(fb, libmp.mpf_shift(libmp.mpf_abs(fb), -prec), w, _CEIL)
    return _interval(low, high)
