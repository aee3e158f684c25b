"""The arbitrary-precision path of the exact arithmetic (docs/method.md#the-exact-arithmetic):
every tensor an :class:`Arbs` (Arb balls of python-flint: a midpoint of ``precision``
bits and a radius, both rigorous), every operator by Arb's ball functions, contractions
as ``arb_mat`` products.

It is the fast path's escalation: the double-double balls of ``emulator.graph.ballmath``
start at a radius near 2^-106 relative, and every contraction multiplies a relative radius
by about the condition number of its sums, so in a deep network (all-MiniLM-L6-v2: about
2^12 per encoder layer) they no longer pin the float64 values down; the samples they
miss are run again here, the precision doubling until every value does
(:func:`emulator.graph.exact.certify_run`).

Conventions, as on the other paths: sqrt and log of a ball that reaches below 0 are taken
on its part in the domain; a division by a ball that holds 0, a ball wholly outside a
domain and an overflowing value are unknown (Arb's NaN ball), a float64 value with an
infinite radius. Activations are their sympy definitions (``Activation.expr``) evaluated
in ball arithmetic; a ``Piecewise`` branch is taken where its condition certainly holds,
and the union of the branches where the ball straddles the boundary.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from functools import cache

import flint
import numpy as np
import sympy

from ..activations import Y, get_activation
from ._ballkernels import INFLATE, MIN_SUBNORMAL
from .arithmetic import Site, contraction_shapes
from .ball import Ball
from .enclosures import ScalarMath, object_array, reduce_objects

__all__ = ["Arbs", "ArbMath", "arbs_from_balls", "cpus"]


@contextmanager
def _precision(bits: int, threads: int = 1):
    """Arb's working precision (and, for matrix products, its threads) within the block."""
    old = flint.ctx.prec, flint.ctx.threads
    flint.ctx.prec, flint.ctx.threads = bits, threads
    try:
        yield
    finally:
        flint.ctx.prec, flint.ctx.threads = old


def cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Arbs:
    """An enclosure tensor of the Arb path: either ``floats`` (exact float64 values: inputs,
    weights, constants and what only moves them) or ``values`` (an object array of
    ``flint.arb`` balls, each holding the exact value)."""

    __slots__ = ("floats", "values")

    def __init__(self, floats: "np.ndarray | None" = None, values: "np.ndarray | None" = None):
        self.floats = floats
        self.values = values

    def __repr__(self) -> str:
        return f"Arbs(shape={self.shape}, exact={self.floats is not None})"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.floats if self.floats is not None else self.values).shape

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def balls(self) -> np.ndarray:
        """The object array of arb balls (exact ones made from ``floats``)."""
        if self.values is None:
            self.values = object_array(np.frompyfunc(flint.arb, 1, 1)(self.floats), self.floats.shape)
        return self.values

    def map(self, fn) -> "Arbs":
        return Arbs(floats=fn(self.floats)) if self.floats is not None else Arbs(values=fn(self.values))

    @staticmethod
    def join(tensors: list, fn) -> "Arbs":
        if all(t.floats is not None for t in tensors):
            return Arbs(floats=fn([t.floats for t in tensors]))
        return Arbs(values=fn([t.balls() for t in tensors]))

    def padded(self, pad_width, mode: str, value: float) -> "Arbs":
        if self.floats is not None:
            return Arbs(floats=np.pad(self.floats, pad_width, mode=mode,
                                      **({"constant_values": value} if mode == "constant" else {})))
        if mode == "constant":
            fill = flint.arb(float(value))
            return Arbs(values=np.pad(self.values, pad_width, mode="constant", constant_values=fill))
        return Arbs(values=np.pad(self.values, pad_width, mode=mode))

    def to_ball(self) -> Ball:
        """The same enclosures as a :class:`~.ball.Ball`: hi + lo the double-double
        nearest each midpoint (hi faithful, then renormalised), the radius covering the
        Arb radius and what the split leaves out."""
        if self.floats is not None:
            return Ball(np.array(self.floats))
        hi, lo, rad = _split(self.values.reshape(-1))
        return Ball(hi.reshape(self.shape), lo.reshape(self.shape), rad.reshape(self.shape))

    def value(self) -> np.ndarray:
        """A float64 within one ulp of each midpoint (the nearest for exact values)."""
        if self.floats is not None:
            return np.array(self.floats)
        return np.frompyfunc(float, 1, 1)(self.values).astype(np.float64).reshape(self.shape)


def arbs_from_balls(hi: np.ndarray, lo: np.ndarray, rad: np.ndarray, precision: int) -> Arbs:
    """The double-double balls [hi + lo - rad, hi + lo + rad] (1-D float64 arrays, finite)
    as Arbs: arb(hi, rad) + lo at ``precision`` bits (Arb's sum holds the exact one)."""
    with _precision(precision):
        values = [flint.arb(h, r) + lo_ for h, lo_, r in zip(hi.tolist(), lo.tolist(), rad.tolist())]
    return Arbs(values=object_array(values, (len(values),)))


def _split(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hi, lo, rad) of a 1-D object array of arb balls. hi = float(v) (faithful: within
    one ulp of the midpoint), d = v - hi in Arb at 128 bits (a ball holding exact - hi),
    lo = float(mid d): |exact - hi - lo| <= rad d + |lo| 2^-52 + 2^-1074; hi + lo is
    renormalised by Fast2Sum (exact), and a ball that is one float64 exactly stays exact
    (radius 0). A ball that is not finite: an infinite midpoint with a finite radius is
    that infinity exactly (Arb's extended reals), anything else is unknown (NaN with an
    infinite radius), as is a midpoint beyond the float64 range."""
    n = values.size
    hi, lo, rad = np.empty(n), np.zeros(n), np.empty(n)
    point = np.zeros(n, dtype=bool)
    with _precision(128):
        for k, v in enumerate(values):
            h = float(v)
            hi[k] = h
            if math.isfinite(h):
                d = v - h
                lo[k], rad[k], point[k] = float(d), float(d.rad()), d.is_zero()
            elif math.isinf(h) and not v.is_finite() and math.isfinite(float(v.rad())):
                rad[k] = 0.0
            else:
                hi[k], rad[k] = math.nan if math.isnan(h) else h, math.inf
    with np.errstate(over="ignore", invalid="ignore"):
        s = hi + lo
        err = lo - (s - hi)
        finite = np.isfinite(hi) & np.isfinite(rad)
        radius = (rad * (1.0 + 2.0**-50) + np.abs(lo) * 2.0**-52) * INFLATE + 2.0 * MIN_SUBNORMAL
    radius = np.where(point, 0.0, radius)
    return np.where(finite, s, hi), np.where(finite, err, 0.0), np.where(finite, radius, rad)


# elementwise functions on arb balls (the conventions of the module docstring)


def _sqrt(v):
    if v > 0:
        return v.sqrt()
    if v < 0:
        return v.nan()
    return v.nonnegative_part().sqrt()


FLUSH_EXPONENT = 2**30
_FLUSHED = flint.arb(0, 1) * flint.arb(2) ** -FLUSH_EXPONENT  # the ball [0 +- 2^-FLUSH_EXPONENT]


def _exp(v):
    """e^v; for a finite ball below -FLUSH_EXPONENT, where e^v < 2^-FLUSH_EXPONENT, the
    ball [0 +- 2^-FLUSH_EXPONENT] instead of Arb's own, whose exponent is a big integer
    (after an attention mask of -finfo.max) that slows every later operation on it
    sevenfold (e^-inf stays 0 exactly)."""
    return _FLUSHED if v < -FLUSH_EXPONENT and v.is_finite() else v.exp()


def _log(v):
    return v.log() if v > 0 else v.nan()


def _piecewise(v, branches):
    """The branch whose condition certainly holds on the ball; the union of the
    branches the ball may reach otherwise."""
    reached = None
    for value, holds in branches:
        if holds is True:
            return value if reached is None else reached.union(value)
        if holds is not False:
            reached = value if reached is None else reached.union(value)
    return reached if reached is not None else v.nan()


_FUNCTIONS = {
    sympy.exp: _exp, sympy.log: _log, sympy.tanh: lambda v: v.tanh(), sympy.erf: lambda v: v.erf(),
    sympy.erfc: lambda v: v.erfc(), sympy.sinh: lambda v: v.sinh(), sympy.cosh: lambda v: v.cosh(),
    sympy.atan: lambda v: v.atan(), sympy.sin: lambda v: v.sin(), sympy.cos: lambda v: v.cos(), sympy.Abs: abs,
}


_RELATIONS = {  # (certainly holds, certainly fails) on balls
    sympy.StrictGreaterThan: (lambda a, b: a > b, lambda a, b: a <= b),
    sympy.GreaterThan: (lambda a, b: a >= b, lambda a, b: a < b),
    sympy.StrictLessThan: (lambda a, b: a < b, lambda a, b: a >= b),
    sympy.LessThan: (lambda a, b: a <= b, lambda a, b: a > b),
}


def _decide(holds, fails, a, b):
    """True where the relation certainly holds on the balls, False where it certainly
    fails, None otherwise."""
    return True if holds(a, b) else (False if fails(a, b) else None)


def _constant(expr):
    """An exact or constant sympy number as an arb at the context precision."""
    if expr.is_Integer:
        return flint.arb(int(expr))
    if expr.is_Rational:
        return flint.arb(int(expr.p)) / int(expr.q)
    if expr.is_Float:
        sign, man, exp, _ = expr._mpf_
        return flint.arb(flint.fmpz(-man if sign else man)) * flint.arb(2) ** int(exp) if man else flint.arb(0)
    if expr is sympy.pi:
        return flint.arb.pi()
    if expr is sympy.E:
        return flint.arb.const_e()
    raise NotImplementedError(f"no ball form of the constant {expr}")


def _compile(expr):
    """The sympy expression in ``Y`` as a function of one arb ball: Python source written
    from the expression tree, so that an element costs one call; constants are arbs formed
    at the context precision when compiled and bound by name, functions too (the source
    holds nothing but them, ``v`` and integer exponents)."""
    names = {"_sqrt": _sqrt, "_log": _log, "_piecewise": _piecewise, "_decide": _decide}
    return eval(f"lambda v: {_source(expr, names)}", names)


def _bind(names: dict, value) -> str:
    """A new name for ``value`` in the namespace of the compiled function."""
    name = f"c{len(names)}"
    names[name] = value
    return name


def _source(expr, names: dict) -> str:
    if expr == Y or (expr.is_Symbol and expr.name == Y.name):
        return "v"
    if not expr.free_symbols:
        if expr.is_Rational or expr.is_Float or expr in (sympy.pi, sympy.E):
            return _bind(names, _constant(expr))
        return _bind(names, eval(f"lambda v: {_terms(expr, names)}", names)(flint.arb(0)))
    return _terms(expr, names)


def _terms(expr, names: dict) -> str:
    """_source of an expression that is not a single constant."""
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        fixed = [a for a in expr.args if not a.free_symbols]
        varying = [a for a in expr.args if a.free_symbols]
        grouped = [expr.func(*fixed)] if len(fixed) > 1 and varying else fixed
        joint = " + " if isinstance(expr, sympy.Add) else " * "
        return "(" + joint.join(_source(a, names) for a in grouped + varying) + ")"
    if isinstance(expr, sympy.Pow):
        base, p = _source(expr.args[0], names), expr.args[1]
        if p.is_Integer:
            n = int(p)
            return f"({base}) ** {n}" if n >= 0 else f"(1 / ({base}) ** {-n})"
        if p == sympy.Rational(1, 2):
            return f"_sqrt({base})"
        if p == sympy.Rational(-1, 2):
            return f"(1 / _sqrt({base}))"
        return f"(({_source(p, names)}) * _log({base})).exp()"
    if isinstance(expr, sympy.Piecewise):
        branches = ", ".join(f"({_source(e, names)}, {_condition(c, names)})" for e, c in expr.args)
        return f"_piecewise(v, [{branches}])"
    fn = _FUNCTIONS.get(type(expr))
    if fn is None:
        raise NotImplementedError(f"no ball form of {expr.func.__name__} (in an activation)")
    return f"{_bind(names, fn)}({_source(expr.args[0], names)})"


def _condition(cond, names: dict) -> str:
    """Source deciding the relation on the ball (see :func:`_decide`)."""
    if cond is sympy.true:
        return "True"
    holds, fails = _RELATIONS[type(cond)]
    left, right = (_source(side, names) for side in cond.args)
    return f"_decide({_bind(names, holds)}, {_bind(names, fails)}, {left}, {right})"


@cache
def _activation_form(name: str, precision: int):
    """sigma's definition compiled for balls at ``precision`` bits."""
    with _precision(precision):
        return _compile(get_activation(name).expr)


class ArbMath(ScalarMath):
    """The Arb path's namespace at ``precision`` bits (see the module docstring)."""

    name = "arb"
    tensor = Arbs
    threads: "int | None" = None
    """Threads of the matrix products (None: every CPU this process may run on)."""

    @staticmethod
    def lift(array) -> Arbs:
        return Arbs(floats=np.asarray(array, dtype=np.float64))

    def exact_scalar(self, t) -> "float | None":
        t = self._as(t)
        if t.floats is None or t.size == 0:
            return None
        first = float(t.floats.flat[0])
        return first if np.all(t.floats == first) else None

    def _map(self, fn, *tensors) -> Arbs:
        arrays = [self._as(t).balls() for t in tensors]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        with _precision(self.precision):
            return Arbs(values=object_array(np.frompyfunc(fn, len(arrays), 1)(*arrays), shape))

    def div(self, a, b):
        return self._map(lambda x, y: x / y, a, b)

    def neg(self, a):
        a = self._as(a)
        return Arbs(floats=-a.floats) if a.floats is not None else self._map(lambda x: -x, a)

    def abs(self, a):
        a = self._as(a)
        return Arbs(floats=np.abs(a.floats)) if a.floats is not None else self._map(abs, a)

    def sqrt(self, a):
        return self._map(_sqrt, a)

    def exp(self, a):
        return self._map(_exp, a)

    def log(self, a):
        return self._map(_log, a)

    def erf(self, a):
        return self._map(lambda x: x.erf(), a)

    def activation(self, name: str, y) -> Arbs:
        """sigma's sympy definition in ball arithmetic."""
        return self._map(_activation_form(name, self.precision), y)

    def maximum(self, a, b):
        return self._map(lambda x, y: x.max(y), a, b)

    def max(self, a, axis, keepdims: bool = False):
        """The ball of the maximum along ``axis`` (Arb's max, pairwise)."""
        with _precision(self.precision):
            return Arbs(values=reduce_objects(self._as(a).balls(), axis, keepdims, lambda x, y: x.max(y)))

    def where(self, condition, a, b):
        a, b = self._as(a), self._as(b)
        cond = np.asarray(condition, dtype=bool)
        if a.floats is not None and b.floats is not None:
            return Arbs(floats=np.where(cond, a.floats, b.floats))
        shape = np.broadcast_shapes(cond.shape, a.shape, b.shape)
        return Arbs(values=object_array(np.where(cond, a.balls(), b.balls()), shape))

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False) -> Arbs:
        """y = x w^T (+ b) by ``arb_mat`` products at ``precision`` bits, one per group."""
        x, w = self._as(x), self._as(w)
        bias = None if bias is None else self._as(bias)
        x, w, bias, lead = contraction_shapes(self, site, x, w, bias, batched)
        m = w.shape[-2]
        with _precision(self.precision, self.threads or cpus()):
            if batched:
                groups = [_matrix(xg) * _matrix(wg, transpose=True)
                          for xg, wg in zip(_groups(x), _groups(w))]
            else:
                groups = [_matrix(x) * _matrix(w, transpose=True)]
            rows = [flint.arb_mat.entries(g) for g in groups]
        y = Arbs(values=object_array([v for r in rows for v in r], (sum(len(r) for r in rows),)).reshape(*lead, m))
        return y if bias is None else self.add(y, bias)


def _groups(t: Arbs) -> list:
    """The leading-axis slices of a batched operand, as Arbs."""
    return [t.map(lambda p, g=g: p[g]) for g in range(t.shape[0])]


def _matrix(t: Arbs, transpose: bool = False):
    """The 2-D Arbs as an arb_mat (transposed on request); exact floats go in directly."""
    part = t.floats if t.floats is not None else t.values
    if transpose:
        part = part.T
    rows, cols = part.shape
    if rows == 0 or cols == 0:
        return flint.arb_mat(rows, cols)
    return flint.arb_mat(part.tolist())
