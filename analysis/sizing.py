"""The smallest safe accumulators of an MLP (docs/method.md#accumulator-sizing): per layer
(and per output channel), the floating-point format eXmY with the fewest bits whose
rigorous local bound meets a target error E and whose partial sums cannot overflow, and
the width of an integer register that holds every int8 x int8 sum, for every input in a
stated range. The checks of one sum (``check_format``, ``search``, ``integer_sizing``)
also size a graph's accumulation sites (``analysis.graph_sizing``): their operand box is
(n,) for a layer, (rows, n) for a site whose rows have boxes of their own, and their
weights either exact (m, n), shared by every row, or a box (groups, m, n) of activations
multiplied with an x box (groups, rows, n) (an activation x activation product).

**Input boxes.** The network input lies in a box [lo, hi] (per feature: the data's
range, or one interval for all). Layer k's input box follows by interval arithmetic,
rounded outward: W x + b over the box is within W c + b ± |W| r (c, r the box's centre
and radius; the float64 evaluation of W c + b within gamma_(n+1) (|W||c| + |b|)), widened
by the target E (the chosen format's local error is at most E, whatever the input in the
box), then through the activation (monotone rows: their values at the ends; others
sigma(mid) ± max|sigma'| r; bounded rows capped by their image), widened by the float64
evaluation error of sigma. Every computed input of layer k then lies in its box.

**Floating point.** x* (|x*_j| = max(|lo_j|, |hi_j|), an input of the box) maximises
a_i = sum_j |w_ij x_j| + |b_i| over the box for every i at once, and with it the local
bound ``local_bound(x*, W, b, eXmY)`` = c(n) a_i + ... (monotone in |x|; for a box of
weights w* likewise maximises it, being monotone in |w|). eXmY meets E
when that bound is <= E (absolute; relative: <= E a_i(x*)); it cannot overflow when
a_i(x*) + bound_i <= max_F: every partial sum, rounded or not, lies within its own error
bound (at most the whole sum's) of an exact partial sum, which is at most a_i(x*). The
search takes the fewest bits 1 + X + Y over X in 2..11, Y in 1..52 (ties: more
significand bits); so every format with one bit less, e(X-1)mY and eXm(Y-1), fails one
of the two checks. The spec is ``eXmY`` with exact products, round to nearest, bias
first, in the given order (recursive by default).

**Integers.** Per-tensor symmetric int8 quantisation: w_q = RN(W / s_w), s_w = max|W| /
127 (weights that are int8 integers already, as a plain sum's ones, keep s_w = 1);
x_q = RN(x / s_x), s_x = max_j max(|lo_j|, |hi_j|) / 127, so |x_q,j| <= X_j =
RN(max(|lo_j|, |hi_j|) / s_x); b_q = RN(b / (s_w s_x)). Every partial sum is at most
A_i = sum_j |w_q,ij| X_j + |b_q,i| (the range argument of accumulator-aware
quantisation), so a signed register of B_i = bitlength(A_i) + 1 bits (at least 2) holds
it, and B_i - 1 bits cannot hold the sum of the input x_j = sign(b_i) sign(w_ij) X_j.
A box of weights is quantised as the input is (s_w from its largest magnitude, |w_q,ij|
<= W_ij = RN(max|w_ij| / s_w)), and A_i = sum_j W_ij X_j. Over the rows (and groups) of
a site, channel i takes the largest A_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.activations import Activation
from emulator.errors import DataError, MixaccError
from emulator.formats import get_format
from emulator.network import Network

from .bounds import activation_eval_error, gamma, local_bound
from .conditioning import max_abs_derivative
from .upward import up_add, up_mul, upper_abs_matmul

__all__ = ["SizingError", "InputBox", "next_box", "input_boxes", "reach", "FormatCheck", "check_format",
           "float_candidates", "Channels", "search", "smaller_formats", "IntegerSizing", "integer_sizing", "SumSizing",
           "LayerSizing", "checked_box", "check_target", "size_sum", "size_layers", "EXPONENT_BITS", "SIGNIFICAND_BITS",
           "MONOTONE", "INT8_MAX"]

EXPONENT_BITS = range(2, 12)
SIGNIFICAND_BITS = range(1, 53)
INT8_MAX = 127

MONOTONE = frozenset({"identity", "relu", "tanh", "sigmoid", "softplus"})
"""Activation rows that are nondecreasing: the image of [lo, hi] is [sigma(lo), sigma(hi)]."""


class SizingError(MixaccError):
    """A sizing that cannot be done: no format meets the target, an unsupported model."""


@dataclass(frozen=True)
class InputBox:
    """[lo, hi] per input feature of a layer."""

    lo: np.ndarray
    hi: np.ndarray

    @property
    def extreme(self) -> np.ndarray:
        """x*: in each feature the end of larger magnitude."""
        return np.where(np.abs(self.lo) >= np.abs(self.hi), self.lo, self.hi)

    @property
    def magnitude(self) -> np.ndarray:
        """max(|lo_j|, |hi_j|)."""
        return np.maximum(np.abs(self.lo), np.abs(self.hi))


def _down_add(a, b) -> np.ndarray:
    """A float64 <= a + b."""
    return -up_add(-np.asarray(a), -np.asarray(b))


def _image(act: Activation, lo: np.ndarray, hi: np.ndarray) -> InputBox:
    """An enclosure of sigma([lo, hi]) including the float64 evaluation error."""
    if act.name in MONOTONE:
        v_lo, v_hi = act.f(lo), act.f(hi)
        out_lo = _down_add(v_lo, -activation_eval_error(v_lo, lo, act))
        out_hi = up_add(v_hi, activation_eval_error(v_hi, hi, act))
    else:
        mid = 0.5 * (lo + hi)
        radius = np.maximum(up_add(hi, -mid), up_add(mid, -lo))
        v = act.f(mid)
        spread = up_add(up_mul(max_abs_derivative(act, lo, hi), radius), activation_eval_error(v, mid, act))
        out_lo, out_hi = _down_add(v, -spread), up_add(v, spread)
    if act.image is not None:
        out_lo, out_hi = np.maximum(out_lo, act.image[0]), np.minimum(out_hi, act.image[1])
    return InputBox(out_lo, out_hi)


def _preactivation_box(box: InputBox, weight: np.ndarray, bias) -> tuple[np.ndarray, np.ndarray]:
    """An enclosure of W x + b over the box, rounded outward."""
    centre = 0.5 * (box.lo + box.hi)
    radius = np.maximum(up_add(box.hi, -centre), up_add(centre, -box.lo))
    b = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    y = weight @ centre + b
    n = weight.shape[1]
    magnitude = up_add(upper_abs_matmul(np.abs(centre), weight), np.abs(b))
    evaluation = up_add(up_mul(gamma(n + 1, 2.0**-53), magnitude), (n + 2) * 2.0**-1074)
    spread = up_add(upper_abs_matmul(radius, weight), evaluation)
    return _down_add(y, -spread), up_add(y, spread)


def next_box(box: InputBox, layer, allowed: np.ndarray) -> InputBox:
    """The box of the output of ``layer`` (its input in ``box``) computed with local errors
    at most ``allowed`` (see the module docstring)."""
    y_lo, y_hi = _preactivation_box(box, layer.weight, layer.bias)
    return _image(layer.activation, _down_add(y_lo, -allowed), up_add(y_hi, allowed))


def input_boxes(network: Network, lo, hi, target) -> list[InputBox]:
    """The box of every layer's input (see the module docstring): ``lo``, ``hi`` (n_0,)
    bound the network input; ``target[k]`` (m_k,) the local error allowed in layer k."""
    boxes = [checked_box(lo, hi)]
    for layer, allowed in zip(network.layers[:-1], target):
        boxes.append(next_box(boxes[-1], layer, allowed))
    return boxes


def checked_box(lo, hi) -> InputBox:
    """The box [lo, hi] of the input, checked: finite ends, lo <= hi."""
    box = InputBox(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))
    if np.any(box.lo > box.hi) or not (np.all(np.isfinite(box.lo)) and np.all(np.isfinite(box.hi))):
        raise DataError("input range: needs finite lo <= hi for every feature.")
    return box


def _at_extreme(box: InputBox, weight, fn) -> np.ndarray:
    """fn(x*, W) for exact weights; for a box of weights (groups, m, n), fn(|x*_g|, w*_g)
    per group, stacked."""
    if not isinstance(weight, InputBox):
        return fn(box.extreme, weight)
    x, w = box.magnitude, weight.magnitude
    return np.stack([fn(x[g], w[g]) for g in range(w.shape[0])])


def reach(box: InputBox, weight, bias) -> np.ndarray:
    """An upper bound on a_i(x*) = |W||x*| + |b| (the largest a_i over the box; over both
    boxes for a box of weights), per component (..., m)."""
    sums = _at_extreme(box, weight, lambda x, w: upper_abs_matmul(np.abs(x), w))
    return sums if bias is None else up_add(sums, np.abs(np.asarray(bias, dtype=np.float64)))


@dataclass(frozen=True)
class FormatCheck:
    """One format on one layer: per component the bound at x* and whether it meets the
    target (``bound_ok``) and cannot overflow (``range_ok``)."""

    name: str
    spec: str
    bound: np.ndarray
    bound_ok: np.ndarray
    range_ok: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.bound_ok & self.range_ok

    def describe(self) -> dict:
        return {"format": self.name, "spec": self.spec, "max_bound": float(np.max(self.bound)),
                "bound_ok": bool(self.bound_ok.all()), "range_ok": bool(self.range_ok.all())}


def check_format(name: str, order: str, box: InputBox, weight, bias, allowed: np.ndarray) -> FormatCheck:
    """The two checks of format ``name`` (eXmY) on a layer or site (see the module
    docstring): ``weight`` exact (m, n), or a box of weights."""
    spec = f"{name}:{order}"
    bound = _at_extreme(box, weight, lambda x, w: local_bound(x, w, bias, spec))
    largest = up_add(reach(box, weight, bias), bound)
    return FormatCheck(name, spec, bound, bound <= allowed, largest <= get_format(name).max)


def float_candidates() -> list[tuple[int, int]]:
    """(X, Y) in search order: fewest bits first, then more significand bits."""
    pairs = [(x, y) for x in EXPONENT_BITS for y in SIGNIFICAND_BITS]
    return sorted(pairs, key=lambda p: (p[0] + p[1], -p[1]))


@dataclass(frozen=True)
class Channels:
    """Per output channel (the last axis of a sum's components), the first candidate that
    passes on all of its components: its ``formats`` (eXmY names) and ``bounds`` (the
    largest bound at x* with it)."""

    formats: list
    bounds: np.ndarray

    def describe(self) -> list[dict]:
        return [{"channel": i, "float_format": f, "max_bound": float(b)}
                for i, (f, b) in enumerate(zip(self.formats, self.bounds))]


def search(order: str, box: InputBox, weight, bias, allowed: np.ndarray) -> tuple[FormatCheck, Channels]:
    """The first candidate that passes on every component, and each channel's first."""
    m = np.shape(allowed)[-1]
    formats: list = [None] * m
    bounds = np.full(m, np.inf)
    for x, y in float_candidates():
        check = check_format(f"e{x}m{y}", order, box, weight, bias, allowed)
        ok = check.ok.reshape(-1, m).all(axis=0)
        for i in np.flatnonzero(ok & np.isinf(bounds)):
            formats[i], bounds[i] = check.name, np.max(check.bound[..., i])
        if ok.all():
            return check, Channels(formats, bounds)
    raise SizingError(f"no eXmY format (X <= 11, Y <= 52) meets the target on all {np.size(allowed)} components of "
                      f"{box.lo.shape[-1]} inputs.")


@dataclass(frozen=True)
class IntegerSizing:
    """The int8 x int8 accumulator of one layer or site: scales, the quantised weights
    ``w_q`` (m, n) and bias (or, for a box of weights, ``w_max`` (groups, m, n), the
    largest quantised weight per element), the largest quantised input per element
    ``x_max`` (..., n), the sums A_i per component ``reach`` (..., m) and each channel's
    width ``bits`` (m,)."""

    weight_scale: float
    input_scale: float
    w_q: "np.ndarray | None"
    b_q: "np.ndarray | None"
    x_max: np.ndarray
    reach: np.ndarray
    bits: np.ndarray
    w_max: "np.ndarray | None" = None

    def quantise(self, x: np.ndarray) -> np.ndarray:
        """RN(x / s_x), clipped to int8's symmetric range."""
        return _quantised(x, self.input_scale)

    def quantise_weights(self, w: np.ndarray) -> np.ndarray:
        """RN(w / s_w), clipped to int8's symmetric range (a box of weights' values)."""
        return _quantised(w, self.weight_scale)

    def worst(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Quantised operands (x (n,), w (n,)) whose sum for component i (from its bias) is
        ±A_i at its largest over the rows and groups: x_j = sign(b_i) sign(w_ij) X_j, or
        X_j and W_ij for a box of weights."""
        m = self.bits.shape[0]
        k = int(np.argmax(self.reach.reshape(-1, m)[:, i]))
        if self.w_q is None:
            g = k // self.x_max.shape[-2]
            return self.x_max.reshape(-1, self.x_max.shape[-1])[k], self.w_max[g, i]
        sign = 1 if self.b_q is None or self.b_q[i] >= 0 else -1
        x = self.x_max.reshape(-1, self.x_max.shape[-1])[k]
        return (sign * np.where(self.w_q[i] >= 0, 1, -1) * x).astype(np.int64), self.w_q[i]


def _quantised(x, scale: float) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x) / scale), -INT8_MAX, INT8_MAX).astype(np.int64)


def _scale(largest: float) -> float:
    return largest / INT8_MAX if largest > 0 else 1.0


def _weight_scale(weight: np.ndarray) -> float:
    """s_w: 1 for weights that are int8 integers already, else max|W| / 127."""
    w = np.asarray(weight, dtype=np.float64)
    if np.all(w == np.rint(w)) and np.max(np.abs(w), initial=0.0) <= INT8_MAX:
        return 1.0
    return _scale(float(np.max(np.abs(w))))


def _largest(magnitude: np.ndarray, scale: float) -> np.ndarray:
    """The largest quantised value per element of a box of that magnitude."""
    return np.minimum(np.rint(magnitude / scale), INT8_MAX).astype(np.int64)


def integer_sizing(box: InputBox, weight, bias) -> IntegerSizing:
    """The integer accumulator of a layer or site whose input lies in ``box`` and whose
    weights are ``weight`` (exact, or a box) (module docstring)."""
    magnitude = box.magnitude
    s_x = _scale(float(np.max(magnitude)))
    x_max = _largest(magnitude, s_x)
    if isinstance(weight, InputBox):
        s_w = _scale(float(np.max(weight.magnitude)))
        w_max = _largest(weight.magnitude, s_w)
        w_q, b_q = None, None
        sums = x_max @ np.swapaxes(w_max, -1, -2)
    else:
        s_w, w_max = _weight_scale(weight), None
        w_q = np.rint(np.asarray(weight) / s_w).astype(np.int64)
        b_q = None if bias is None else np.rint(np.asarray(bias) / (s_w * s_x)).astype(np.int64)
        sums = x_max @ np.abs(w_q).T + (0 if b_q is None else np.abs(b_q))
    m = sums.shape[-1]
    bits = np.array([max(int(a).bit_length() + 1, 2) for a in sums.reshape(-1, m).max(axis=0)], dtype=np.int64)
    return IntegerSizing(s_w, s_x, w_q, b_q, x_max, sums, bits, w_max)


@dataclass
class SumSizing:
    """One sum's sizing (a layer's or a graph site's): the input box, the error allowed
    per component, the chosen format (``chosen``) and the formats with one bit less
    (``smaller``), the chosen format per channel (``channels``) and the integer
    accumulator."""

    box: InputBox
    allowed: np.ndarray
    chosen: FormatCheck
    smaller: list
    channels: Channels
    integer: IntegerSizing


@dataclass
class LayerSizing(SumSizing):
    """One layer's sizing; ``index`` the layer's."""

    index: int = 0


def smaller_formats(check: FormatCheck, order: str, box: InputBox, weight, bias, allowed) -> list[FormatCheck]:
    """The formats with one bit less than ``check``'s: e(X-1)mY and eXm(Y-1), where valid."""
    x, y = (int(v) for v in check.name[1:].split("m"))
    names = [f"e{x - 1}m{y}" if x - 1 in EXPONENT_BITS else None, f"e{x}m{y - 1}" if y - 1 in SIGNIFICAND_BITS else None]
    return [check_format(n, order, box, weight, bias, allowed) for n in names if n]


def check_target(target: float) -> float:
    """The target error: a finite number > 0."""
    if not (target > 0 and np.isfinite(target)):
        raise DataError(f"target error == {target}, must be a finite number > 0.")
    return float(target)


def size_sum(box: InputBox, weight, bias, target: float, *, relative: bool = False,
             order: str = "recursive") -> SumSizing:
    """Size one sum whose input lies in ``box`` (weights exact, or a box): the error
    allowed per component is ``target``, or ``relative`` target a_i(x*)."""
    largest = reach(box, weight, bias)
    allowed = np.maximum(target * largest, 0.0) if relative else np.full(largest.shape, float(target))
    chosen, channels = search(order, box, weight, bias, allowed)
    return SumSizing(box, allowed, chosen, smaller_formats(chosen, order, box, weight, bias, allowed), channels,
                     integer_sizing(box, weight, bias))


def size_layers(network: Network, lo, hi, target: float, *, relative: bool = False,
                order: str = "recursive") -> list[LayerSizing]:
    """Size every layer of ``network`` for inputs in [lo, hi] and the target error
    ``target`` on each pre-activation: absolute, or ``relative`` to a_i(x*), the largest
    a_i over the box."""
    target = check_target(target)
    box = checked_box(lo, hi)
    out = []
    for k, layer in enumerate(network.layers):
        sized = size_sum(box, layer.weight, layer.bias, target, relative=relative, order=order)
        out.append(LayerSizing(**vars(sized), index=k))
        box = next_box(box, layer, sized.allowed)
    return out
