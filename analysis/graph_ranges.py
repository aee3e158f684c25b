"""Enclosures of the values a graph computes, for every input in a box
(docs/method.md#sizing-a-graph): the ranges of every site's operands, from which the
site is sized, the site's sums widened by the error its chosen accumulator may make.

:class:`ComputedRanges` is an arithmetic of the one graph engine whose tensors are
enclosures (``emulator.graph.ball.Ball``) of the *computed* values, not of exact ones:
the emulated pass that sums every site in its chosen format, stores nothing (no storage
format) and computes everything else in float64 gives, for every input in the box, a
value inside each enclosure.

* Inputs are the box (a ball holding [lo, hi]); initialisers are exact, and so is what an
  operator with no sum computes from exact tensors alone (evaluated in float64, as the
  emulated pass evaluates it: dequantised or reshaped weights stay exact weights).
* A site with operand enclosures X, W (the computed operands lie in them) is sized by the
  ``sizer`` (``analysis.graph_sizing``): it returns the chosen accumulation and E, the
  chosen format's local bound at the operands of largest magnitude, which bounds its
  local error at every operand in the boxes (the bound is monotone in |x| and |w|). The
  computed sum is then within E of the exact sum of its computed operands, which lies in
  the ball evaluation of X W^T (+ b): that enclosure widened by E.
* A mean's division rounds the enclosed quotient once in the site's format: widened by
  ``analysis.bound_rules.division_error``.
* Every other operator runs its own evaluation on the enclosures, in :class:`RangeMath`:
  the exact fast path's ball arithmetic (``emulator.graph.ballmath``, which encloses the
  exact result of each function over its input balls) with every function that float64
  rounds widened by that rounding: u |v| + 2^-1074 for +, -, *, /, sqrt (correctly
  rounded, |v| the largest magnitude of the exact result); numpy's exp and log, at the
  ends of their input's range, by :func:`computed_libm`
  (``analysis.bound_rules.LIBM_EVAL_ERROR``); scipy's erf, numpy's
  pow and tanh and the activations' closed forms by
  ``analysis.bounds.activation_eval_error`` (|fl - f| <= 2^-44 (|fl| + |y|) + 2^-1000, the
  assumption the MLP sizing makes of activations, so |fl - f| <= that at |f| <= |v| over
  1 - 2^-44); nothing for the exact ones (neg, abs, maxima, minima, where, clip, the shape
  functions).
* Softmax, LogSoftmax and LayerNormalization, whose ball evaluation loses the
  dependency between their operands (and whose exp of a wide ball or division by a
  variance near 0 it cannot enclose), have rules of their own (:data:`RANGE_RULES`).

An enclosure that cannot be bounded (an overflow, a ball a function cannot take) has an
infinite radius; the sizer refuses the site that reads it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from emulator.graph.arithmetic import Arithmetic, Native, Site, contraction_shapes, division_format
from emulator.graph.ball import Ball
from emulator.graph.ballmath import BallMath, as_ball
from emulator.graph.engine import Context
from emulator.graph.ir import is_float
from emulator.registry import Registry

from .bound_rules import (LIBM_EVAL_ERROR, LIBM_EVAL_FLOOR, BoundRule, affine, division_error, exp_bounds, log_bounds,
                          rule_registrar)
from .bounds import activation_eval_error, underflow_unit, unit_roundoff
from .enclosure import distance, ends, interval_ball
from .upward import TINY64, lower_sum, next_down, next_up, up_add, up_mul

__all__ = ["RangeMath", "ComputedRanges", "RANGE_RULES", "magnitude", "computed_libm"]

U64 = 2.0**-53


def magnitude(ball) -> np.ndarray:
    """An upper bound on |v| for every v in ``ball``."""
    ball = as_ball(ball)
    return distance(np.zeros(ball.shape), ball)


def _widened(ball: Ball, error) -> Ball:
    """``ball`` with its radius grown by ``error`` (rounded up)."""
    hi, _, rad = ball.parts()
    return Ball(hi, ball.lo, up_add(rad, np.broadcast_to(error, ball.shape)))


class RangeMath(BallMath):
    """Ball arithmetic widened by the float64 evaluation of each function (module
    docstring)."""

    name = "computed ranges"

    def _rounded(self, ball: Ball) -> Ball:
        """One correctly rounded float64 operation: |fl(v) - v| <= u |v| + 2^-1074."""
        return _widened(ball, up_add(up_mul(U64, magnitude(ball)), TINY64))

    @staticmethod
    def _closed_form(ball: Ball, argument) -> Ball:
        """A closed form of ``argument`` evaluated in float64: activation_eval_error at the
        largest magnitudes, over 1 - 2^-44."""
        error = activation_eval_error(magnitude(ball), np.broadcast_to(magnitude(argument), ball.shape))
        return _widened(ball, up_mul(error, 1.0 + 2.0**-43))

    def add(self, a, b):
        return self._rounded(super().add(a, b))

    def sub(self, a, b):
        return self._rounded(super().sub(a, b))

    def mul(self, a, b):
        return self._rounded(super().mul(a, b))

    def div(self, a, b):
        return self._rounded(super().div(a, b))

    def sqrt(self, a):
        return self._rounded(super().sqrt(a))

    def exp(self, a):
        """numpy's exp, increasing: :func:`computed_libm` of [exp(lo), exp(hi)]."""
        low, high = computed_libm(*(exp_bounds(end)[k] for k, end in enumerate(ends(as_ball(a)))))
        return interval_ball(np.maximum(low, 0.0), high)

    def log(self, a):
        """numpy's log, increasing: :func:`computed_libm` of [log(lo), log(hi)]; unbounded
        where the range reaches 0 or below (log gives -inf or NaN there)."""
        low, high = ends(as_ball(a))
        positive = low > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            low, high = computed_libm(*(log_bounds(np.where(positive, end, 1.0))[k]
                                        for k, end in enumerate((low, high))))
        return interval_ball(np.where(positive, low, -np.inf), np.where(positive, high, np.inf))

    def erf(self, a):
        return self._closed_form(super().erf(a), a)

    def pow(self, a, b):
        return self._closed_form(super().pow(a, b), a)

    def activation(self, name: str, y) -> Ball:
        return self._closed_form(super().activation(name, y), y)


def computed_libm(low, high) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on numpy's float64 f(y) for y in a range where the exact f lies in [low,
    high], under :data:`~analysis.bound_rules.LIBM_EVAL_ERROR` (|fl(f) - f| <= 2^-44 |fl(f)|
    + 2^-1070): fl(f) <= (f + 2^-1070) / (1 - 2^-44) <= h + 2^-43 |h| with h >= f + 2^-1070,
    and likewise below; rounded outward. Infinite ends are exact (exp(-inf) = 0 and
    log(0) = -inf come out exactly)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        h = next_up(high + LIBM_EVAL_FLOOR)
        l = next_down(low - LIBM_EVAL_FLOOR)
        h, l = next_up(h + 2 * LIBM_EVAL_ERROR * np.abs(h)), next_down(l - 2 * LIBM_EVAL_ERROR * np.abs(l))
    return np.where(np.isinf(low), low, l), np.where(np.isinf(high), high, h)


class ComputedRanges(Arithmetic):
    """The arithmetic of the module docstring. ``sizer(site, x, w, bias, batched)`` gets a
    site's operand balls in the shapes of its sums (x (rows, n) or (groups, rows, n); w
    (m, n) or (groups, m, n)) and returns (the chosen accumulation, E in the shape of the
    site's sums); ``specs`` and ``errors`` keep them by site name."""

    name = "computed ranges"

    def __init__(self, sizer: Callable):
        super().__init__(None)
        self.math = RangeMath(113)
        self._native = Native()
        self.sizer = sizer
        self.specs: dict = {}
        self.errors: dict[str, np.ndarray] = {}

    def lift(self, array):
        return array if isinstance(array, Ball) else Ball(array)

    def store(self, tensor):
        return tensor

    def evaluate(self, op, ctx, args: list) -> list:
        """A node's outputs: in float64 when it has no sum and its inputs are exact, by its
        range rule when it has one, else by its own evaluation on the enclosures."""
        if not op.sums and all(a is None or not isinstance(a, Ball) or a.exact for a in args):
            values = op.evaluate(Context(self._native, ctx.node), [a.hi if isinstance(a, Ball) else a for a in args])
            return [self.lift(np.asarray(v)) if is_float(v) else v for v in values]
        if op.name in RANGE_RULES:
            return RANGE_RULES.get(op.name).enclose(self, ctx, args)
        return op.evaluate(ctx, args)

    def spec(self, site: Site):
        return self.specs.get(site.name)

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False):
        """The ball evaluation of the exact sum of the computed operands, widened by the
        chosen format's error E (module docstring)."""
        x, w = as_ball(x), as_ball(w)
        bias = None if bias is None else as_ball(bias)
        exact = self.math.contract(site, x, w, bias, batched=batched)
        xb, wb, bb, _ = contraction_shapes(self.math, site, x, w, bias, batched)
        acc, error = self.sizer(site, xb, wb, bb, batched)
        self.specs[site.name], self.errors[site.name] = acc, error
        return _widened(exact, np.reshape(error, exact.shape))

    def divide(self, site: Site, total, count):
        """The exact quotient of the enclosed sum, widened by the rounding in the site's
        format (``division_error`` of its largest magnitude; inf where it may overflow)."""
        quotient = BallMath.div(self.math, total, self.lift(np.asarray(count, dtype=np.float64)))
        return _widened(quotient, division_error(magnitude(quotient), self.specs[site.name]))

    def site_error(self, ctx, role: str, shape) -> np.ndarray:
        """E of the node's site ``role`` (just sized), in ``shape`` (a sum's keepdims shape)."""
        return np.reshape(self.errors[ctx.site(role).name], shape)


RANGE_RULES: Registry[BoundRule] = Registry("range rule")
"""How :class:`ComputedRanges` encloses an operator type's computed outputs: rows
``BoundRule(op, enclose, description)``, ``enclose(arith, ctx, args)`` -> the outputs, the
node's sites sized through ``ctx``."""

_rule = rule_registrar(RANGE_RULES)


def _along(a: np.ndarray, axis: int, fn) -> np.ndarray:
    """``fn`` of the last axis (keeping it, size 1) applied along ``axis``."""
    return np.moveaxis(fn(np.moveaxis(a, axis, -1)), -1, axis)


def _softmax_sums(arith: ComputedRanges, ctx, x: Ball):
    """The softmax's parts, as computed: d̂_i = fl(x̂_i - max x̂) in [lo_i - max hi, min(0,
    hi_i - max lo)] (rounded outward; the largest element's d̂ is 0 exactly), ê =
    fl(exp(d̂)) >= 0 in ``computed_libm`` of exp's range, the denominator ŝ sized at site
    ``node.sum``, bounded below by max(sum_j ê_lo,j, fl(exp(0))_lo) - E as well as by its
    enclosure; returns (d_lo, d_hi, ŝ_lo, ŝ_hi, ê_lo, ê_hi), the sums keeping the axis."""
    axis = int(ctx.attr("axis", -1)) % len(x.shape)
    low, high = ends(x)
    with np.errstate(invalid="ignore", over="ignore"):
        d_lo = next_down(low - np.max(high, axis=axis, keepdims=True))
        d_hi = np.minimum(next_up(high - np.max(low, axis=axis, keepdims=True)), 0.0)
    d_lo, d_hi = np.where(np.isnan(d_lo), -np.inf, d_lo), np.where(np.isnan(d_hi), 0.0, d_hi)
    e_lo, e_hi = computed_libm(exp_bounds(d_lo)[0], exp_bounds(d_hi)[1])
    e_lo = np.maximum(e_lo, 0.0)
    total = ctx.sum(interval_ball(e_lo, e_hi), axis, role="sum", keepdims=True)
    error = arith.site_error(ctx, "sum", total.shape)
    e_zero = max(float(computed_libm(exp_bounds(0.0)[0], 0.0)[0]), 0.0)
    total_lo, total_hi = ends(total)
    with np.errstate(invalid="ignore", over="ignore"):
        floor = np.maximum(_along(e_lo, axis, lower_sum), e_zero)
        s_lo = np.maximum(next_down(floor - error), total_lo)
    return d_lo, d_hi, s_lo, total_hi, e_lo, e_hi


@_rule("Softmax")
def softmax_range(arith: ComputedRanges, ctx, args):
    """fl(ê_i / ŝ) in [0, fl-up(ê_hi / ŝ_lo)]: ê and ŝ from :func:`_softmax_sums`; unbounded
    where ŝ_lo <= 0 (the denominator's error may reach its size)."""
    _, _, s_lo, s_hi, e_lo, e_hi = _softmax_sums(arith, ctx, as_ball(args[0]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        high = next_up(next_up(e_hi / s_lo) * (1.0 + 2 * U64) + TINY64)
        low = np.maximum(next_down(next_down(e_lo / s_hi) * (1.0 - 2 * U64)), 0.0)
    high = np.where(s_lo > 0, high, np.inf)
    return [interval_ball(np.where(np.isnan(low), 0.0, low), np.where(np.isnan(high), np.inf, high))]


@_rule("LogSoftmax")
def log_softmax_range(arith: ComputedRanges, ctx, args):
    """fl(d̂_i - fl(log ŝ)) in [d̂_lo - log ŝ_hi, d̂_hi - log ŝ_lo], the log by
    ``computed_libm``, widened by one float64 rounding; unbounded where ŝ_lo <= 0."""
    d_lo, d_hi, s_lo, s_hi, _, _ = _softmax_sums(arith, ctx, as_ball(args[0]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lo, log_hi = computed_libm(log_bounds(np.maximum(s_lo, 0.0))[0], log_bounds(s_hi)[1])
        low, high = next_down(d_lo - log_hi), next_up(d_hi - log_lo)
        low, high = next_down(low - U64 * np.abs(low)), next_up(high + U64 * np.abs(high))
    high = np.where(s_lo > 0, high, np.inf)
    return [interval_ball(np.where(np.isnan(low), -np.inf, low), np.where(np.isnan(high), np.inf, high))]


def _square(c: Ball) -> Ball:
    """fl(ĉ ĉ) for ĉ in the ball: [min ĉ^2, max ĉ^2] (0 below where it holds 0), one
    rounding outward."""
    low, high = ends(c)
    with np.errstate(over="ignore", invalid="ignore"):
        top = next_up(next_up(np.maximum(low * low, high * high)) * (1.0 + 2 * U64)) + TINY64
        apart = (low > 0) | (high < 0)
        bottom = np.where(apart, np.maximum(next_down(next_down(np.minimum(low * low, high * high))
                                                      * (1.0 - 2 * U64)), 0.0), 0.0)
    return interval_ball(bottom, np.where(np.isnan(top), np.inf, top))


def _normalised_bound(t: np.ndarray, v_low: np.ndarray, error: np.ndarray, n: int, eps: float, acc) -> np.ndarray:
    """Y >= |fl(ĉ_i / fl(sqrt(fl(v̂ + eps))))| for |ĉ_i| <= t, v̂ >= v_low (see
    :func:`layer_norm_range`)."""
    fmt, mode, _, subnormals = division_format(acc)
    u_f, eta_f = unit_roundoff(fmt, mode), underflow_unit(fmt, mode, subnormals)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a = next_down((1.0 - U64) * (1.0 - u_f) / n)
        b = up_add(up_add(next_up(up_add(error, TINY64) / n), eta_f), v_low)
        floor = next_down(eps + v_low)
        t2 = up_mul(t, t)
        excess = np.maximum(next_down(next_down(a * t2) - b), 0.0)
        rising = next_up(t2 / np.maximum(next_down(floor + excess), floor))
        kink = next_up(np.minimum(t2, next_up(b / a)) / floor)
        y2 = np.where(floor >= b, rising, kink)
        out = next_up(next_up(next_up(np.sqrt(y2)) * (1.0 + 4 * U64)) + TINY64)
    return np.where(np.isnan(out), np.inf, out)


@_rule("LayerNormalization")
def layer_norm_range(arith: ComputedRanges, ctx, args):
    """y_i = fl(ĉ_i / fl(sqrt(fl(v̂ + eps)))) g + b with ĉ = fl(x̂ - mû), both means sized.

    The variance site sums q_j = fl(ĉ_j^2) >= (1 - u) ĉ_j^2 - 2^-1074 >= 0 into ŝ2 >= 0 (a
    monotone rounding of nonnegative partial sums), within E2 of sum_j q_j, so ŝ2 >=
    (1 - u) ĉ_i^2 - 2^-1074 - E2 for each i; v̂ = round_F(ŝ2 / n) >= ŝ2 (1 - u_F) / n -
    eta_F and v̂ >= v_lo (the enclosure's lower end, >= 0): v̂ >= v_lo + max(0, a t^2 - b')
    with t = |ĉ_i|, a = (1 - u)(1 - u_F) / n, b' = (2^-1074 + E2) / n + eta_F + v_lo. So
    |y_i| <= t / sqrt(eps' + max(0, a t^2 - b')) (1 + u) / (1 - u)^(3/2), eps' = eps +
    v_lo, whose square over t <= T (T >= |ĉ_i| over the box) is at most T^2 / (eps' +
    max(0, a T^2 - b')) when eps' >= b' (increasing in t), else min(T^2, b'/a) / eps' (it
    rises to its value at t^2 = b'/a, then falls). Then times g, plus b, in
    :class:`RangeMath`; the optional outputs (mean, 1 / sqrt(v̂ + eps)) by RangeMath on the
    variance's enclosure cut at 0."""
    x = as_ball(args[0])
    scale, bias = (list(args[1:]) + [None, None])[:2]
    m = arith.math
    axis = int(ctx.attr("axis", -1)) % len(x.shape)
    axes = tuple(range(axis, len(x.shape)))
    n = int(np.prod(x.shape[axis:]))
    eps = float(ctx.attr("epsilon", 1e-5))
    mean = ctx.mean(x, axes, role="mean")
    centred = m.sub(x, mean)
    var = ctx.mean(_square(centred), axes, role="var")
    v_low = np.maximum(ends(var)[0], 0.0)
    y = _normalised_bound(magnitude(centred), v_low, arith.site_error(ctx, "var", var.shape), n, eps,
                          arith.specs[ctx.site("var").name])
    outputs = [affine(m, interval_ball(-y, y), scale, bias)]
    if len(ctx.node.outputs) > 1:
        floor = interval_ball(v_low, np.maximum(ends(var)[1], v_low))
        outputs += [mean, m.reciprocal(m.sqrt(m.add(floor, ctx.lift(np.array(eps)))))]
    return outputs
