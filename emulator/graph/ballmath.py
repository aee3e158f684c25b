"""The fast path's namespace (docs/method.md#the-exact-arithmetic): every function of
``emulator.graph.math.MATH_FUNCTIONS`` and the contraction on :class:`~.ball.Ball`
tensors, by the certified kernels of ``_ballkernels``.

An element a kernel does not cover goes one of four ways. One that involves an infinity
or an unknown value (a NaN, an infinite radius) follows the IEEE result with the rules
of its row (an exact infinity stays exact where the result is determined, e.g. -inf + x =
-inf, exp(-inf) = 0; everything else gets an infinite radius). A ball too wide for the
kernel (a divisor ball around 0, a ball reaching below 0 for sqrt and log, exp of a
radius above 1) is not known from it: the IEEE value of the centre, an infinite radius.
A sum outside the kernel's range at the top (with -finfo.max, the mask some attention
layers add) runs the kernel again on its operands scaled by 2^-64, and scales back. Any
other element outside the kernels' proven range is evaluated on the arb path
(``emulator.graph.arbs``, at the namespace's precision) for that element alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special

from ..activations import get_activation
from ..registry import Registry
from ..reference import _model
from . import _ballkernels as BK
from .arithmetic import Site, contraction_shapes
from .ball import Ball
from .enclosures import EnclosureMath
from .arbs import ArbMath, arbs_from_balls

__all__ = ["BallMath", "as_ball"]


def as_ball(t) -> Ball:
    """A Ball as itself; a float array or number as an exact Ball."""
    return t if isinstance(t, Ball) else Ball(np.asarray(t, dtype=np.float64))


def _kernel_array(a) -> np.ndarray:
    """A C-contiguous, writable float64 array (copied only when ``a`` is not one), so
    that every kernel compiles for one array type."""
    return np.require(a, dtype=np.float64, requirements=("C", "W"))


def _flat(ball: Ball, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hi, lo, rad broadcast to ``shape``, flat (zeros for missing parts)."""
    size = int(np.prod(shape, dtype=np.int64))
    out = []
    for part in (ball.hi, ball.lo, ball.rad):
        out.append(np.zeros(size) if part is None else _kernel_array(np.broadcast_to(part, shape)).reshape(-1))
    return out[0], out[1], out[2]


# rules for elements with an infinity or an unknown operand: (IEEE result, known exactly)


def _settled(h, r):
    """A finite ball, or an exact infinity."""
    return (np.isfinite(h) & np.isfinite(r)) | (np.isinf(h) & (r == 0))


def _excludes_zero(h, l, r):
    return np.isinf(h) | (np.abs(h) * (1.0 - 2.0**-50) - np.abs(l) > r)


def _exact_inf(h, r):
    return np.isinf(h) & (r == 0)


def _sum_rule(sign):
    def rule(a, b):
        zh = a[0] + sign * b[0]
        return zh, np.isinf(zh) & _settled(a[0], a[2]) & _settled(b[0], b[2])

    return rule


def _mul_rule(a, b):
    zh = a[0] * b[0]
    return zh, np.isinf(zh) & _settled(a[0], a[2]) & _settled(b[0], b[2]) & _excludes_zero(*a) & _excludes_zero(*b)


def _div_rule(a, b):
    zh = a[0] / b[0]
    to_zero = np.isfinite(a[0]) & _settled(a[0], a[2]) & _exact_inf(b[0], b[2])
    to_inf = _exact_inf(a[0], a[2]) & np.isfinite(b[0]) & _settled(b[0], b[2]) & _excludes_zero(*b)
    return zh, to_zero | to_inf


def _unary_rule(fn):
    def rule(a):
        return fn(a[0]), _exact_inf(a[0], a[2])

    return rule


def _up_only(fn):
    """fn(+inf) is +inf exactly; fn(-inf) is undefined (NaN)."""

    def rule(a):
        return fn(a[0]), (a[0] == np.inf) & (a[2] == 0)

    return rule


@dataclass(frozen=True)
class _Elementwise:
    """A kernel of ``_ballkernels`` (operand parts, ``extra`` arguments, then ZH, ZL, ZR
    and the status), and its rule for infinities, unknowns and wide balls: (IEEE value,
    known exactly). Its fallback is the ``ArbMath`` function of that name."""

    name: str
    kernel: Callable
    special: Callable
    extra: tuple = ()
    rescale: bool = False  # beyond the kernel's range, run it again on operands scaled by 2^-64


_OPS: Registry[_Elementwise] = Registry("exact elementwise operation")
for _row in (
    _Elementwise("add", BK.ball_add, _sum_rule(1.0), (1.0,), rescale=True),
    _Elementwise("sub", BK.ball_add, _sum_rule(-1.0), (-1.0,), rescale=True),
    _Elementwise("mul", BK.ball_mul, _mul_rule),
    _Elementwise("div", BK.ball_div, _div_rule),
    _Elementwise("sqrt", BK.ball_sqrt, _up_only(np.sqrt)),
    _Elementwise("exp", BK.ball_exp, _unary_rule(np.exp)),
    _Elementwise("log", BK.ball_log, _up_only(np.log)),
    _Elementwise("erf", BK.ball_erf, _unary_rule(special.erf)),
):
    _OPS.add(_row.name, _row)


SCALE = 2.0**-64
NORMAL_AFTER_SCALING = 2.0**-958  # |p| >= this: p * SCALE is a normal float64, the scaling exact


def _rescaled(op: _Elementwise, flat, out, status) -> None:
    """Elements beyond the kernel's range once more on the operands scaled by 2^-64, the
    result scaled back (a sum whose centre is near the top of the float64 range, as with a
    mask of -finfo.max): both scalings are exact where every nonzero part of the operands
    is at least NORMAL_AFTER_SCALING and the result is finite, so the kernel's bound on
    the scaled sum, scaled, bounds the sum. Those elements' status becomes OK."""
    bad = np.flatnonzero(status == BK.RANGE)
    parts = [p[bad] for operand in flat for p in operand]
    fit = np.ones(bad.size, dtype=bool)
    for p in parts:
        fit &= np.isfinite(p) & ((p == 0.0) | (np.abs(p) >= NORMAL_AFTER_SCALING))
    if not fit.any():
        return
    size = int(fit.sum())
    zh, zl, zr, st = np.empty(size), np.empty(size), np.empty(size), np.empty(size, dtype=np.int8)
    with np.errstate(all="ignore"):
        op.kernel(*(p[fit] * SCALE for p in parts), *op.extra, zh, zl, zr, st)
        back = [z / SCALE for z in (zh, zl, zr)]
    ok = (st == BK.OK) & np.isfinite(back[0]) & np.isfinite(back[2])
    idx = bad[fit][ok]
    for target, z in zip(out, back):
        target[idx] = z[ok]
    status[idx] = BK.OK


class BallMath(EnclosureMath):
    """The fast path's namespace. ``precision`` is the working precision (bits) of the
    elements that fall back to the arb path."""

    name = "ball"

    tensor = Ball

    def __init__(self, precision: int = 113):
        super().__init__(precision)
        self.fallbacks = 0  # elements evaluated on the arb path

    @staticmethod
    def lift(array) -> Ball:
        return Ball(np.asarray(array, dtype=np.float64))

    def exact_scalar(self, t) -> "float | None":
        t = as_ball(t)
        if not t.exact or t.size == 0:
            return None
        first = float(t.hi.flat[0])
        return first if np.all(t.hi == first) else None

    # kernels --------------------------------------------------------------------------

    def _apply(self, name: str, *tensors) -> Ball:
        op = _OPS.get(name)
        balls = [as_ball(t) for t in tensors]
        shape = np.broadcast_shapes(*(b.shape for b in balls))
        flat = [_flat(b, shape) for b in balls]
        size = flat[0][0].shape[0]
        zh, zl, zr = np.empty(size), np.empty(size), np.empty(size)
        status = np.empty(size, dtype=np.int8)
        with np.errstate(all="ignore"):
            op.kernel(*(p for parts in flat for p in parts), *op.extra, zh, zl, zr, status)
        if op.rescale and status.any():
            _rescaled(op, flat, (zh, zl, zr), status)
        if status.any():
            self._repair(flat, (zh, zl, zr), status, op.special,
                         lambda arbs: getattr(ArbMath(self.precision), name)(*arbs))
        return Ball(zh.reshape(shape), zl.reshape(shape), zr.reshape(shape))

    def _repair(self, flat, out, status, rule, arb_fn) -> None:
        """Elements whose status is not OK: infinities and unknowns by ``rule``, balls
        too wide by the IEEE value of ``rule`` with an infinite radius, the rest by
        ``arb_fn`` on the arb path."""
        bad = np.flatnonzero(status)
        at = [tuple(p[bad] for p in parts) for parts in flat]
        unsettled = np.zeros(bad.size, dtype=bool)
        for h, _, r in at:
            unsettled |= ~(np.isfinite(h) & np.isfinite(r))
        wide = status[bad] == BK.WIDE
        zh, zl, zr = out
        ieee = unsettled | wide
        if ieee.any():
            with np.errstate(all="ignore"):
                value, known = rule(*(tuple(p[ieee] for p in a) for a in at))
            idx = bad[ieee]
            zh[idx], zl[idx], zr[idx] = value, 0.0, np.where(known & unsettled[ieee], 0.0, np.inf)
        rest = ~ieee
        if rest.any():
            idx = bad[rest]
            result = arb_fn([arbs_from_balls(*(p[rest] for p in a), self.precision) for a in at]).to_ball()
            zh[idx], zl[idx], zr[idx] = result.parts()
            self.fallbacks += int(idx.size)

    def add(self, a, b):
        return self._apply("add", a, b)

    def sub(self, a, b):
        return self._apply("sub", a, b)

    def mul(self, a, b):
        return self._apply("mul", a, b)

    def div(self, a, b):
        return self._apply("div", a, b)

    def sqrt(self, a):
        return self._apply("sqrt", a)

    def exp(self, a):
        return self._apply("exp", a)

    def log(self, a):
        return self._apply("log", a)

    def erf(self, a):
        return self._apply("erf", a)

    def activation(self, name: str, y) -> Ball:
        """sigma over each input ball by the reference's double-double enclosure
        (``_exactdot.enclose_activation``: the kernel's values at the two ends of the
        ball, valid where sigma is monotone on it); where it declines (a ball around a
        minimum), the kernel's value at the centre plus L r (L >= max |sigma'|, the
        reference's model of sigma); the arb path where no kernel covers an element."""
        act = get_activation(name)
        model = _model(act)
        ball = as_ball(y)
        h, l, r = _flat(ball, ball.shape)
        zh, zl, zr = np.empty_like(h), np.empty_like(h), np.empty_like(h)
        ok = np.zeros(h.shape, dtype=np.bool_)
        if model.code is not None:
            with np.errstate(all="ignore"):
                BK.enclose_chunks(model.code, model.alpha, model.shape, model.y0, h, l, r, zh, zl, zr, ok)
                ok &= np.isfinite(zr)
                todo = np.flatnonzero(~ok & np.isfinite(h) & np.isfinite(r))
                if todo.size:
                    ch, cl, ce = np.empty(todo.size), np.empty(todo.size), np.empty(todo.size)
                    cok = np.zeros(todo.size, dtype=np.bool_)
                    BK.act_chunks(model.code, model.alpha, h[todo], l[todo], ch, cl, ce, cok)
                    radius = (ce + model.lipschitz * r[todo]) * BK.INFLATE + BK.MIN_SUBNORMAL
                    zh[todo], zl[todo], zr[todo] = ch, cl, radius
                    ok[todo] = cok & np.isfinite(radius)
        status = np.where(ok, BK.OK, BK.RANGE).astype(np.int8)
        if not ok.all():
            self._repair([(h, l, r)], (zh, zl, zr), status, lambda a: (act.f(a[0]), np.zeros(a[0].shape, dtype=bool)),
                         lambda arbs: ArbMath(self.precision).activation(act.name, arbs[0]))
        return Ball(zh.reshape(ball.shape), zl.reshape(ball.shape), zr.reshape(ball.shape))

    # exact moves of values ------------------------------------------------------------

    @staticmethod
    def neg(a):
        a = as_ball(a)
        return Ball(-a.hi, None if a.lo is None else -a.lo, a.rad)

    @staticmethod
    def abs(a):
        a = as_ball(a)
        return Ball(np.abs(a.hi), None if a.lo is None else np.where(a.hi < 0, -a.lo, a.lo), a.rad)

    @staticmethod
    def where(condition, a, b):
        a, b = as_ball(a), as_ball(b)
        cond = np.asarray(condition, dtype=bool)
        parts = []
        for pa, pb in ((a.hi, b.hi), (a.lo, b.lo), (a.rad, b.rad)):
            if pa is None and pb is None:
                parts.append(None)
            else:
                parts.append(np.where(cond, 0.0 if pa is None else pa, 0.0 if pb is None else pb))
        return Ball(*parts)

    @staticmethod
    def maximum(a, b):
        """The larger centre (dd order: hi, then lo) with the larger radius: |max(v, w) -
        max(c, d)| <= max(|v - c|, |w - d|). NaN where either is NaN."""
        a, b = as_ball(a), as_ball(b)
        shape = np.broadcast_shapes(a.shape, b.shape)
        ah, al, ar = (np.broadcast_to(p, shape) for p in a.parts())
        bh, bl, br = (np.broadcast_to(p, shape) for p in b.parts())
        first = (ah > bh) | ((ah == bh) & (al >= bl))
        nan = np.isnan(ah) | np.isnan(bh)
        hi = np.where(nan, np.nan, np.where(first, ah, bh))
        lo = np.where(first, al, bl) if a.lo is not None or b.lo is not None else None
        rad = np.maximum(ar, br) if a.rad is not None or b.rad is not None else None
        return Ball(hi, None if lo is None else np.where(nan, 0.0, lo), rad)

    @staticmethod
    def max(a, axis, keepdims: bool = False):
        """The largest centre c* along ``axis`` (radius r*), with radius
        max(r*, max_j (c_j + r_j - c*)) rounded up: the maximum of values within r_j of c_j
        lies in [c* - r*, max_j (c_j + r_j)], so an element far below the largest (a
        masked score) does not widen it. An unknown element (NaN, infinite radius) that
        is not -inf exactly makes it unknown."""
        a = as_ball(a)
        hi = np.max(a.hi, axis=axis, keepdims=True)
        lo = None
        if a.lo is not None:
            lo = np.max(np.where(a.hi == hi, a.lo, -np.inf), axis=axis, keepdims=True)
            lo = np.where(np.isfinite(lo), lo, 0.0)
        rad = None
        if a.rad is not None:
            parts_lo = np.zeros(a.shape) if a.lo is None else a.lo
            top_lo = np.zeros(hi.shape) if lo is None else lo
            with np.errstate(invalid="ignore", over="ignore"):
                below = np.nextafter(np.nextafter(a.hi - hi, np.inf) + np.nextafter(np.abs(parts_lo) + np.abs(top_lo),
                                                                                   np.inf), np.inf)
                reach = np.where(a.hi == hi, a.rad, np.nextafter(below + a.rad, np.inf))
            rad = np.max(np.where(np.isnan(reach), np.inf, reach), axis=axis, keepdims=True)
            rad = np.maximum(rad, 0.0)
        out = Ball(hi, lo, rad)
        if not keepdims:
            out = out.map(lambda p: np.squeeze(p, axis=axis))
        return out

    # contractions ---------------------------------------------------------------------

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False) -> Ball:
        """y[..., i] = sum_j x[..., j] w[i, j] + b_i (``w`` shared) or batched over the
        leading axes, as balls: exact float64 weights by ``dot_shared``, ball weights by
        ``dot_pairs`` (both: Dot2 with a proven bound plus the propagated radii)."""
        x, w = as_ball(x), as_ball(w)
        bias = None if bias is None else as_ball(bias)
        x, w, bias, lead = contraction_shapes(self, site, x, w, bias, batched)
        m, n = w.shape[-2], w.shape[-1]
        exact_bias = bias is None or bias.exact
        b = np.zeros(m) if not exact_bias or bias is None else _kernel_array(bias.hi)
        k1, k2 = BK.bound_weights(n)
        qb = k1 * np.abs(b)
        if not batched and w.exact:
            xh, xl, xr = (_kernel_array(p) for p in x.parts())
            rows = xh.shape[0]
            yh, yl, yr = np.empty((rows, m)), np.empty((rows, m)), np.empty((rows, m))
            ok = np.empty((rows, m), dtype=np.bool_)
            with np.errstate(all="ignore"):
                BK.dot_shared(xh, xl, _weights(xh, xl, xr, k1, k2, 1.0), _kernel_array(w.hi.T), b, qb,
                              _underflow_allowance(n, w.hi, xh), yh, yl, yr, ok)
            if not ok.all():
                _contract_special(xh, xr, w.hi, yh, yl, yr, ok)
        else:
            if not batched:
                x, w = x.map(lambda p: p[None]), w.map(lambda p: p[None])
            xh, xl, xr = (_kernel_array(p) for p in x.parts())
            wh, wl, wr = (_kernel_array(np.swapaxes(p, 1, 2)) for p in w.parts())
            groups, rows = xh.shape[0], xh.shape[1]
            yh, yl, yr = (np.empty((groups, rows, m)) for _ in range(3))
            ok = np.empty((groups, rows, m), dtype=np.bool_)
            with np.errstate(all="ignore"):
                BK.dot_pairs(xh, xl, _weights(xh, xl, xr, k1, k2, 1.0 + 2.0 * BK.U), xr, wh, wl,
                             _weights(np.zeros_like(wh), wl, wr, 0.0, k2, 1.0 + 2.0 * BK.U), wr, b, qb,
                             _underflow_allowance(n, wh, xh), yh, yl, yr, ok)
            if not ok.all():
                with np.errstate(all="ignore"):
                    ieee = np.matmul(xh, wh)
                yh, yl, yr = np.where(ok, yh, ieee), np.where(ok, yl, 0.0), np.where(ok, yr, np.inf)
        y = Ball(yh, yl, yr).map(lambda p: p.reshape(*lead, m))
        return y if exact_bias else self.add(y, bias)


def _weights(h, l, r, k1: float, k2: float, k3: float) -> np.ndarray:
    """k1 |h| + k2 |l| + k3 r per element (the kernels inflate the sums of these for
    their roundings and add an allowance for underflow)."""
    with np.errstate(all="ignore"):
        return k1 * np.abs(h) + k2 * np.abs(l) + k3 * r


def _underflow_allowance(n: int, *magnitudes: np.ndarray) -> float:
    """(6 n + 16) 2^-1074 (1 + max |w| + max |x|), rounded up (see ``bound_weights``)."""
    largest = sum(float(np.max(np.abs(a), initial=0.0)) for a in magnitudes)
    return (6.0 * n + 16.0) * BK.MIN_SUBNORMAL * (1.0 + largest) * BK.INFLATE


def _contract_special(xh, xr, w, yh, yl, yr, ok) -> None:
    """Outputs of a shared contraction that are not finite or not known: the IEEE value
    of the float64 sum; exact (radius 0) when it is an infinity that exact infinite
    inputs force (no other input unknown), unknown otherwise."""
    rows, cols = np.nonzero(~ok)
    with np.errstate(all="ignore"):
        value = (xh @ w.T)[rows, cols]
        settled = _settled(xh, xr).all(axis=1) & np.isinf(xh).any(axis=1)
    yh[rows, cols] = value
    yl[rows, cols] = 0.0
    yr[rows, cols] = np.where(np.isinf(value) & settled[rows], 0.0, np.inf)
