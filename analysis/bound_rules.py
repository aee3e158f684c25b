"""Dedicated enclosure rules of the global bounds (docs/method.md#bounds-through-a-graph):
operators whose interval evaluation loses the dependency between their operands
(softmax: numerator and denominator; layer normalisation: x and its mean) get a rule of
their own in :data:`BOUND_RULES`, one row per operator type.

A rule sees what ``analysis.graph_bounds.GlobalBounds`` sees: the balls (x̂, Δ) of the
node's inputs (the exact input x is within Δ of the emulated x̂), the emulated pass's
site records of the node (taken in order, so the sites are consumed), and the local bound
E of each of those sums (``GlobalBounds.local_error``: the rigorous local bound, or c u a
in the first-order pass). It returns an enclosure of the exact output; ``finish`` then
re-centres it on the emulated output (the storage rounding is measured there, as for
every operator). Everything is rounded outward (``analysis.upward``).

Notation: u = 2^-53; a row is the set of elements an operator normalises over, moved
last and flattened, as the engine's sums see it; [l, u] is the box of the exact input.

Assumption on numpy's exp and log (:data:`LIBM_EVAL_ERROR`): the range of the softmax
over a box is evaluated with them, widened by that stated margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from emulator.graph.arithmetic import Arithmetic, division_format, divide_in
from emulator.graph.ball import Ball
from emulator.graph.ballmath import as_ball
from emulator.registry import Registry

from .bounds import underflow_unit, unit_roundoff
from .enclosure import distance, ends, interval_ball
from .upward import lower_sum, next_down, next_up, up_add, up_mul, upper_sum

__all__ = ["BoundRule", "BOUND_RULES", "LIBM_EVAL_ERROR", "LIBM_EVAL_FLOOR", "exp_bounds", "log_bounds", "log1p_bounds",
           "excluded_sums", "softmax_range", "log_softmax_range", "division_error", "rule_registrar", "affine"]

LIBM_EVAL_ERROR = 2.0**-44
LIBM_EVAL_FLOOR = 2.0**-1070
"""|fl64(f(y)) - f(y)| <= 2^-44 |fl64(f(y))| + 2^-1070 is assumed of numpy's float64 exp,
log and log1p: 256 units of 2^-52 relative, where every libm and SIMD path numpy uses is within a few
ulps (subnormal results within a few units of 2^-1074, 16 of which the floor allows).
tests/test_bound_rules.py checks it against mpmath from the underflow threshold to the
overflow threshold."""

U64 = 2.0**-53


@dataclass(frozen=True)
class BoundRule:
    """How an enclosing arithmetic encloses one operator type: ``enclose(arith, ctx,
    args)`` returns the node's outputs (here, enclosures of the exact values), or None to
    leave the node to the operator's own evaluation in interval arithmetic (decided before
    any site is consumed). ``analysis.graph_ranges`` keeps rows of the same kind for the
    computed values."""

    op: str
    enclose: Callable
    description: str


BOUND_RULES: Registry[BoundRule] = Registry("bound rule")


def rule_registrar(registry: Registry) -> Callable:
    """A decorator factory: ``@rule(op)`` adds the function to ``registry`` as the
    :class:`BoundRule` of ``op``, described by its docstring's first line."""
    def rule(op: str):
        def wrap(fn: Callable) -> Callable:
            registry.add(op, BoundRule(op, fn, (fn.__doc__ or "").strip().splitlines()[0]))
            return fn

        return wrap

    return rule


_rule = rule_registrar(BOUND_RULES)


# --------------------------------------------------------------------- elementary bounds


def exp_bounds(y) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) with low <= exp(y) <= high for the float64 y, from numpy's exp and
    :data:`LIBM_EVAL_ERROR`; exp(-inf) = 0 exactly."""
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.exp(y)
        high = next_up(next_up(v * (1.0 + LIBM_EVAL_ERROR)) + LIBM_EVAL_FLOOR)
        low = np.maximum(next_down(next_down(v * (1.0 - LIBM_EVAL_ERROR)) - LIBM_EVAL_FLOOR), 0.0)
    masked = y == -np.inf
    return np.where(masked, 0.0, low), np.where(masked, 0.0, high)


def log_bounds(y) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) with low <= log(y) <= high for the float64 y >= 0, from numpy's log and
    :data:`LIBM_EVAL_ERROR`; log(0) = -inf and log(inf) = inf exactly."""
    return _libm_bounds(np.log, y)


def log1p_bounds(y) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) with low <= log(1 + y) <= high for the float64 y >= 0, from numpy's
    log1p and :data:`LIBM_EVAL_ERROR`; log1p(inf) = inf exactly."""
    return _libm_bounds(np.log1p, y)


def _libm_bounds(fn, y) -> tuple[np.ndarray, np.ndarray]:
    """fn(y) -+ (2^-44 |fn(y)| + 2^-1070), rounded outward; infinite values exact."""
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = fn(y)
        margin = next_up(next_up(LIBM_EVAL_ERROR * np.abs(v)) + LIBM_EVAL_FLOOR)
        low, high = next_down(v - margin), next_up(v + margin)
    infinite = np.isinf(v)
    return np.where(infinite, v, low), np.where(infinite, v, high)


def excluded_sums(v, upward: bool) -> np.ndarray:
    """Bounds on sum_{j != i} v_j along the last axis for v >= 0 (upper with ``upward``,
    else lower), in O(T) per row and without cancellation: the float64 prefix sum before i
    plus the suffix sum after i, S_i, times 1 +- T 2^-52 (T the row's length).

    Proof. Each term of S_i passes at most T - 1 roundings (T - 2 in its prefix or suffix
    sum, one joining them), each of relative error <= u, and additions of nonnegative
    numbers lose nothing to underflow: S_i (1 + u)^-(T-1) <= s_i <= S_i (1 - u)^-(T-1), and
    1 - (T - 1) u <= (1 + u)^-(T-1), (1 - u)^-(T-1) <= 1 + 2 (T - 1) u for T u <= 1/2."""
    v = np.asarray(v, dtype=np.float64)
    t = v.shape[-1]
    zero = np.zeros((*v.shape[:-1], 1))
    with np.errstate(invalid="ignore", over="ignore"):
        before = np.concatenate([zero, np.cumsum(v, axis=-1)[..., :-1]], axis=-1)
        after = np.concatenate([np.cumsum(v[..., ::-1], axis=-1)[..., ::-1][..., 1:], zero], axis=-1)
        s = before + after
        if upward:
            return next_up(s * (1.0 + t * 2.0**-52))
        return np.maximum(next_down(s * (1.0 - t * 2.0**-52)), 0.0)


@dataclass
class _RowBox:
    """The softmax over a box [l, u] of each row, per element i (M_u = max_j u_j,
    M_i = max(u_i, max_j l_j)): its smallest value is f(l_i - M_u, sum_{j != i}
    exp(u_j - M_u)) and its largest f(u_i - M_i, sum_{j != i} exp(l_j - M_i)), with
    f(t, r) = e^t / (e^t + r). ``low_arg`` <= l_i - M_u, ``low_rest`` >= its sum,
    ``high_arg`` >= u_i - M_i, ``high_rest`` <= its sum (every exponent <= 0, nothing
    overflows)."""

    low_arg: np.ndarray
    low_rest: np.ndarray
    high_arg: np.ndarray
    high_rest: np.ndarray


def _row_box(low: np.ndarray, high: np.ndarray) -> _RowBox:
    with np.errstate(invalid="ignore", over="ignore"):
        top = np.max(high, axis=-1, keepdims=True)
        top_low = np.max(low, axis=-1, keepdims=True)
        low_rest = excluded_sums(exp_bounds(_difference_up(high, top))[1], upward=True)
        shift = np.maximum(high, top_low)
        scale = exp_bounds(next_down(top_low - shift))[0]
        rest = excluded_sums(exp_bounds(next_down(low - top_low))[0], upward=False)
        high_rest = np.maximum(next_down(scale * rest), 0.0)
        return _RowBox(next_down(low - top), low_rest, _difference_up(high, shift), high_rest)


def _difference_up(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A float64 >= a - b; -inf exactly where a is -inf (a masked element)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(a == -np.inf, -np.inf, next_up(a - b))


def softmax_range(low, high) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) with L_i <= softmax(x)_i <= U_i for every x in the box [low, high] along the
    last axis (the exact range, rounded outward; O(T) per row).

    Proof. softmax_i = e^(x_i - M) / (e^(x_i - M) + sum_{j != i} e^(x_j - M)) for any M
    increases with x_i and decreases with every other x_j, so over the box it is smallest
    at x_i = l_i, x_j = u_j and largest at x_i = u_i, x_j = l_j: the bounds of
    :class:`_RowBox`. f(t, r) = e^t / (e^t + r) increases with t and decreases with r,
    so evaluating it at the rounded-outward arguments, with exp by :func:`exp_bounds`
    and one outward step per operation, keeps each end on its side. A NaN (a row with an
    unknown element, or every element -inf) gives [0, 1]."""
    box = _row_box(np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        n_low = exp_bounds(box.low_arg)[0]
        lower = next_down(n_low / next_up(n_low + box.low_rest))
        n_high = exp_bounds(box.high_arg)[1]
        upper = next_up(n_high / next_down(n_high + box.high_rest))
    lower = np.where(np.isnan(lower), 0.0, np.clip(lower, 0.0, 1.0))
    upper = np.where(np.isnan(upper), 1.0, np.clip(upper, 0.0, 1.0))
    return lower, upper


def log_softmax_range(low, high) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) with L_i <= log_softmax(x)_i <= U_i for every x in the box [low, high] along
    the last axis: g(t, r) = log f(t, r) at the ends of :class:`_RowBox` (monotone as f
    is), rounded outward, in two forms that are each a bound, the tighter kept:
    t - log(e^t + r) (no overflow) and -log1p(r e^-t) (no cancellation for the largest
    elements, whose log-softmax is near 0); U <= 0. NaN gives (-inf, 0]."""
    box = _row_box(np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        lower = np.fmax(next_down(box.low_arg - log_bounds(next_up(exp_bounds(box.low_arg)[1] + box.low_rest))[1]),
                        -log1p_bounds(next_up(box.low_rest * exp_bounds(-box.low_arg)[1]))[1])
        upper = np.fmin(_difference_up(box.high_arg, log_bounds(next_down(exp_bounds(box.high_arg)[0] + box.high_rest))[0]),
                        -log1p_bounds(next_down(box.high_rest * exp_bounds(-box.high_arg)[0]))[0])
    lower = np.where(np.isnan(lower), -np.inf, lower)
    upper = np.where(np.isnan(upper), 0.0, np.minimum(upper, 0.0))
    return lower, upper


def division_error(q, acc) -> np.ndarray:
    """Bound on |q - t| for q the division of a mean rounded once (``divide_in``) from the
    exact quotient t: u_F |q| + eta_F (|round(t) - t| <= u |round(t)| to nearest, 2u
    |round(t)| in a directed mode, plus the underflow unit), inf where |q| reaches the
    format's largest value (overflow and saturation are not covered)."""
    fmt, mode, _, subnormals = division_format(acc)
    q = np.abs(np.asarray(q, dtype=np.float64))
    err = up_add(up_mul(unit_roundoff(fmt, mode), q), underflow_unit(fmt, mode, subnormals))
    return np.where(q < fmt.max, err, np.inf)


# --------------------------------------------------------------------------- helpers


def _rows(t, axis: int) -> np.ndarray:
    """``axis`` moved last and the rest flattened: (rows, T), the layout of the sums."""
    return np.moveaxis(np.asarray(t, dtype=np.float64), axis, -1).reshape(-1, np.shape(t)[axis])


def _unrows(t: np.ndarray, shape: tuple, axis: int) -> np.ndarray:
    moved = [d for k, d in enumerate(shape) if k != axis] + [shape[axis]]
    return np.moveaxis(t.reshape(moved), -1, axis)


def _box_rows(ball: Ball, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The box [low, high] of the exact input in the layout of the sums."""
    low, high = ends(ball)
    return _rows(low, axis), _rows(high, axis)


def _sum_parts(arith: Arithmetic, ctx):
    """The softmax denominator of the emulated pass: (ê (rows, T), ŝ (rows, 1), E (rows,
    1)) with E the local bound of ŝ (inf where ŝ is not a positive finite number), and
    bounds (s_lo, s_hi) on the exact sum s̃ = sum_j ê_j; the site is consumed."""
    record = arith.site_record(ctx.site("sum"))
    e, s = record.x, record.y
    local = arith.local_error(record)
    local = np.where(np.isfinite(s) & (s > 0), local, np.inf)
    return e, s, local, lower_sum(e), upper_sum(e)


def _smallest_sum(s: np.ndarray, local: np.ndarray, s_low: np.ndarray) -> np.ndarray:
    """A lower bound on the exact sum s̃: max(ŝ - E, s_lo), rounded down."""
    with np.errstate(invalid="ignore"):
        return np.maximum(next_down(s - local), s_low)


# ----------------------------------------------------------------------------- softmax


@_rule("Softmax")
def softmax_rule(arith: Arithmetic, ctx, args):
    """softmax along ``axis`` from the denominator's local bound and the exact range over
    the input box.

    The emulated output is â = S(v), v = fl(ê_i / ŝ), ê = fl(exp(fl(x̂ - max x̂))), ŝ the
    emulated sum of ê (site ``node.sum``) and s̃ = sum_j ê_j exactly, |ŝ - s̃| <= E. With
    a = softmax(x) the exact output and c_i = ê_i / s̃,

        |v - a_i| <= |v - ê_i/ŝ| + |ê_i/ŝ - c_i| + |c_i - a_i|
                  <= u |v| + 2^-1074  +  ê_i E / (ŝ s̃_min)  +  max(U_i - c_i, c_i - L_i),

    the first term the float64 division (to nearest: |fl(t) - t| <= u |fl(t)| plus
    underflow), the second |ê_i/ŝ - ê_i/s̃| = ê_i |s̃ - ŝ| / (ŝ s̃) with s̃ >= s̃_min =
    max(ŝ - E, s_lo), and the third because a_i lies in the range [L_i, U_i] of softmax_i
    over the input box (:func:`softmax_range`): any number c is within max(U - c, c - L)
    of every point of [L, U]; c_i is bounded by ê_i / s_hi <= c_i <= ê_i / s_lo. The
    exact output also lies in [0, 1]: the enclosure is [v - R, v + R] intersected with
    it, R the sum of the three terms. The storage rounding S is the distance of â to v,
    measured when the output is re-centred."""
    axis = int(ctx.attr("axis", -1)) % len(args[0].shape)
    e, s, local, s_low, s_high = _sum_parts(arith, ctx)
    lower, upper = softmax_range(*_box_rows(as_ball(args[0]), axis))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = e / s
        division = up_add(up_mul(U64, np.abs(v)), 2.0**-1074)
        sum_term = next_up(up_mul(e, local) / np.maximum(next_down(s * _smallest_sum(s, local, s_low)), 0.0))
        sum_term = np.where((e == 0) & np.isfinite(local), 0.0, sum_term)
        c_low, c_high = next_down(e / s_high), next_up(e / s_low)
        spread = np.maximum(next_up(upper - c_low), next_up(c_high - lower))
    radius = up_add(up_add(division, sum_term), spread)
    with np.errstate(invalid="ignore"):
        low = np.maximum(next_down(v - radius), 0.0)
        high = np.minimum(next_up(v + radius), 1.0)
    low = np.where(np.isnan(low), 0.0, low)
    high = np.where(np.isnan(high), 1.0, high)
    shape = args[0].shape
    return [interval_ball(_unrows(low, shape, axis), _unrows(high, shape, axis))]


@_rule("LogSoftmax")
def log_softmax_rule(arith: Arithmetic, ctx, args):
    """log-softmax along ``axis`` from the denominator's local bound and the exact range
    over the input box.

    The emulated output is S(w), w = fl(d̂_i - fl(log ŝ)), d̂ = fl(x̂ - max x̂), ê = fl(exp(d̂)),
    ŝ the emulated sum of ê, s̃ = sum_j ê_j exactly, |ŝ - s̃| <= E. With o = log_softmax(x)
    the exact output and c_i = d̂_i - log s̃,

        |w - o_i| <= u |w| + |fl(log ŝ) - log ŝ|  +  |log ŝ - log s̃|  +  |c_i - o_i|
                  <= u |w| + (2^-44 |fl(log ŝ)| + 2^-1070)  +  E / min(ŝ, s̃_min)
                     + max(U_i - c_i, c_i - L_i),

    the first line the float64 subtraction and log (:data:`LIBM_EVAL_ERROR`), the second
    the mean value theorem for log between ŝ and s̃ (both >= min(ŝ, s̃_min)), the third as
    for the softmax with [L_i, U_i] the range of :func:`log_softmax_range`, and c_i
    between d̂_i - log s_hi and d̂_i - log s_lo. The enclosure is [w - R, w + R] cut at
    0; an element that is -inf in the box and in the emulated pass is -inf exactly. Needs
    the emulated input x̂ (to form d̂): without it the node is left to interval
    arithmetic."""
    x_ball = as_ball(args[0])
    x_hat = arith.emulated_input(ctx, 0, x_ball)
    if x_hat is None:
        return None
    axis = int(ctx.attr("axis", -1)) % len(x_ball.shape)
    e, s, local, s_low, s_high = _sum_parts(arith, ctx)
    lower, upper = log_softmax_range(*_box_rows(x_ball, axis))
    rows = _rows(x_hat, axis)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        shifted = rows - np.max(rows, axis=-1, keepdims=True)
        log_s = np.log(s)
        w = shifted - log_s
        evaluation = up_add(up_mul(U64, np.abs(w)), up_add(up_mul(LIBM_EVAL_ERROR, np.abs(log_s)), LIBM_EVAL_FLOOR))
        sum_term = next_up(local / np.maximum(np.minimum(s, _smallest_sum(s, local, s_low)), 0.0))
        c_low = next_down(shifted - log_bounds(s_high)[1])
        c_high = next_up(shifted - log_bounds(s_low)[0])
        spread = np.maximum(next_up(upper - c_low), next_up(c_high - lower))
        radius = up_add(up_add(evaluation, sum_term), spread)
        low = next_down(w - radius)
        high = np.minimum(next_up(w + radius), 0.0)
    masked = (upper == -np.inf) & (shifted == -np.inf)
    low = np.where(masked, -np.inf, np.where(np.isnan(low), -np.inf, low))
    high = np.where(masked, -np.inf, np.where(np.isnan(high), 0.0, high))
    shape = x_ball.shape
    return [interval_ball(_unrows(low, shape, axis), _unrows(high, shape, axis))]


# ------------------------------------------------------------------- layer normalisation


def _layer_norm_applies(ctx) -> bool:
    """The rule covers the normalised output alone (no mean / inverse deviation outputs)."""
    return len([o for o in ctx.node.outputs if o]) == 1


@_rule("LayerNormalization")
def layer_norm_rule(arith: Arithmetic, ctx, args):
    """(x - mean) / sqrt(var + eps) g + b over the trailing axes from ``axis``: the exact
    output at the emulated input from the two sites' local bounds, plus a centred form for
    the propagated error.

    Write y(x) = (x - mu(x)) / sigma(x), sigma = sqrt(var(x) + eps), n the row length; the
    exact output is z(x) = y(x) g + b and the emulated one S(fl(...)). Then
    |ẑ - z(x)| <= |ẑ - z(x̂)| + |g| |y(x̂) - y(x)|.

    (a) Exact output at x̂. mu* = mean(x̂), sigma*^2 = var(x̂). The mean site gives ŝ1,
    |ŝ1 - sum x̂| <= E1, and mû = round_F(ŝ1 / n): |mû - mu*| <= dmu = E1 / n +
    division_error(mû). The variance site sums q_j = fl(fl(x̂_j - mû)^2) into ŝ2,
    |ŝ2 - sum q| <= E2, and v̂ = round_F(ŝ2 / n), |v̂ - ŝ2 / n| <= ev. Since
    q_j = (x̂_j - mû)^2 (1 + a)^2 (1 + b) + eta (|a|, |b| <= u, |eta| <= 2^-1075) and
    sum (x̂_j - mû)^2 = n sigma*^2 + n (mû - mu*)^2,

        sigma*^2 in [(v̂ - ev - E2/n - 2^-1075) (1 - 2^-50) - dmu^2,
                     (v̂ + ev + E2/n + 2^-1075) (1 + 2^-50)]

    ((1 + u)^-3 >= 1 - 2^-50, (1 - u)^-3 <= 1 + 2^-50), cut below at 0; hence an interval
    for rho* = 1 / sqrt(sigma*^2 + eps), and z(x̂) = (x̂ - [mû +- dmu]) [rho*] g + b in
    ball arithmetic (per-row scalars, O(n) per row). The emulated output's float64
    evaluation and storage rounding are its distance to this enclosure, measured when it
    is re-centred.

    (b) Propagation. For x in the box x̂ +- D (D the input's bound), along the segment
    from x̂ to x (mean value theorem, componentwise),
    |y_i(x) - y_i(x̂)| <= sup sum_j |dy_i/dx_j| D_j, and with
    dy_i/dx_j = (delta_ij - 1/n - y_i y_j / n) / sigma,

        |y_i(x) - y_i(x̂)| <= (D_i + mean_j D_j + Y_i mean_j (Y_j D_j)) / sigma_min,

    where sigma_min <= sigma over the box: ||P x|| >= ||P x̂|| - ||D||_2 (P the centring
    projection) gives sqrt(var(x)) >= sigma*_low - rms(D), so sigma_min =
    sqrt(max(0, sigma*_low - rms(D))^2 + eps); and Y_i >= |y_i| over the box:
    |x_i - mu(x)| <= |x̂_i - mû| + dmu + D_i + mean D, and |y_i| <= sqrt(n - 1) always
    (sum y = 0, sum y^2 <= n). |g| is the upper end of the scale's ball.

    Image. |y_i| <= sqrt(n - 1) for every input, so z lies in [-sqrt(n - 1), sqrt(n - 1)]
    g + b (ball arithmetic); each element keeps the narrower of the two enclosures (a
    vacuous input box then gives a bounded output instead of one amplified by up to
    1 / sqrt(eps))."""
    if not _layer_norm_applies(ctx):
        return None
    x_ball = as_ball(args[0])
    scale, bias = (list(args[1:]) + [None, None])[:2]
    m = arith.math
    shape = x_ball.shape
    axis = int(ctx.attr("axis", -1)) % len(shape)
    n = int(np.prod(shape[axis:]))
    eps = float(ctx.attr("epsilon", 1e-5))
    mean_record = arith.site_record(ctx.site("mean"))
    var_record = arith.site_record(ctx.site("var"))
    x_hat = mean_record.x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mu = divide_in(mean_record.acc, mean_record.y, n)
        dmu = up_add(next_up(arith.local_error(mean_record) / n), division_error(mu, mean_record.acc))
        v = divide_in(var_record.acc, var_record.y, n)
        dvar = up_add(up_add(division_error(v, var_record.acc), next_up(arith.local_error(var_record) / n)),
                      2.0**-1074)
        var_low = np.maximum(next_down(next_down(next_down(v - dvar) * (1.0 - 2.0**-50)) - up_mul(dmu, dmu)), 0.0)
        var_high = next_up(up_add(v, dvar) * (1.0 + 2.0**-50))
        rho_low = next_down(1.0 / next_up(np.sqrt(next_up(var_high + eps))))
        rho_high = next_up(1.0 / next_down(np.sqrt(next_down(var_low + eps))))
    centred = m.sub(Ball(x_hat), Ball(mu, None, dmu))
    normed = m.mul(centred, interval_ball(rho_low, np.where(np.isnan(rho_high), np.inf, rho_high)))
    out = affine(m, normed.map(lambda p: p.reshape(shape)), scale, bias)
    prop = _layer_norm_propagation(x_hat, distance(x_hat, x_ball.map(lambda p: p.reshape(x_hat.shape))), mu, dmu,
                                   var_low, eps)
    gain = 1.0 if scale is None else distance(np.zeros(()), as_ball(scale))
    prop = up_mul(prop.reshape(shape), gain)
    hi, lo, rad = out.parts()
    enclosure = Ball(hi, lo, up_add(rad, prop))
    image = affine(m, Ball(np.zeros(shape), None, np.full(shape, next_up(np.sqrt(float(n - 1))))), scale, bias)
    return [m.where(image.parts()[2] < enclosure.parts()[2], image, enclosure)]


def affine(m, y: Ball, scale, bias) -> Ball:
    """y g + b in the ball namespace ``m`` (either may be absent)."""
    if scale is not None:
        y = m.mul(y, scale)
    return y if bias is None else m.add(y, bias)


def _layer_norm_propagation(x_hat, d, mu, dmu, var_low, eps: float) -> np.ndarray:
    """(D_i + mean D + Y_i mean(Y D)) / sigma_min per element of the rows (see
    :func:`layer_norm_rule`, part (b)), rounded up; inf where D is not finite."""
    n = x_hat.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mean_d = next_up(upper_sum(d) / n)
        rms_d = next_up(np.sqrt(next_up(upper_sum(up_mul(d, d)) / n)))
        sd_low = np.maximum(next_down(next_down(np.sqrt(var_low)) - rms_d), 0.0)
        sigma_min = next_down(np.sqrt(next_down(next_down(sd_low * sd_low) + eps)))
        reach = up_add(up_add(next_up(np.abs(x_hat - mu)), dmu), d)
        y_max = np.minimum(next_up(up_add(reach, mean_d) / sigma_min), next_up(np.sqrt(float(n - 1))))
        mixed = next_up(upper_sum(up_mul(y_max, d)) / n)
        total = up_add(up_add(d, mean_d), up_mul(y_max, mixed))
        out = next_up(total / sigma_min)
    return np.where(np.isnan(out), np.inf, out)
