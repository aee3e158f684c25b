"""Componentwise condition numbers of every graph operator
(docs/method.md#condition-numbers-of-graph-operators).

For an operator y = f(x_1, ..., x_k) and output component i,

    kappa_i = sum over the perturbed input components j of |dy_i/dx_j| |x_j| / |y_i|,

the first-order relative error of y_i per unit relative perturbation of the inputs
(``ratio``'s rules: 0/0 = 0, c/0 = inf, NaN = inf). One :class:`OpCondition` row per
operator type of ``emulator.graph.ops.OPS`` holds the closed form; :func:`op_condition`
dispatches a node to it. Conventions:

* every floating-point input is perturbed except the parameters of the operator's
  formula: Pow's exponent, Clip's bounds, BatchNormalization's mean and variance, the
  slope of PRelu and LeakyRelu; integer inputs (indices, shapes, conditions) are exact.
  Perturbing more inputs only adds nonnegative terms, so kappa also bounds the condition
  number for any subset of them (constants included);
* an accumulation site (the sum of a Gemm, MatMul, Einsum, Conv, ReduceSum, ReduceMean,
  AveragePool, GlobalAveragePool) is conditioned with respect to its *terms* (the products
  w_ij x_j and the bias): kappa_i = sum |terms| / |sum| (:func:`site_absolute_sums` gives
  the numerator). A product's relative perturbation is at most the sum of its factors',
  so relative perturbations of size eps in both operands of every product move y_i by at
  most kappa_i (2 eps + eps^2): the operand condition number is at most 2 kappa_i
  (exactly (2 sum |p_j| + |b|) / |y| when both are perturbed);
* the closed forms are evaluated at the given inputs; the outputs enter only as the
  denominator |y_i| of the forms that have one (sums, differences, LogSoftmax, the
  normalisations' affine outputs), so passing the exact or the computed outputs gives
  kappa at that value, as ``condition_numbers`` does. Forms that are constants or
  continuous in the input keep their value at zeros (the activation rows' convention);
  where the function is not defined or not finite at the input (division by zero, even
  roots and fractional powers of negative numbers, non-finite inputs) kappa is inf.

Also here: the LAMP criteria for attention scores (Budzinskiy et al., arXiv 2601.21623),
:func:`lamp_strict` and :func:`lamp_relaxed`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import special

from emulator.errors import ModelFileError
from emulator.graph.arithmetic import Native, Site
from emulator.graph.engine import Context
from emulator.graph.ir import Node
from emulator.graph.ops import OPS
from emulator.graph.ops.elementwise import ACTIVATION_NAMES, activation_name
from emulator.metrics import ratio
from emulator.registry import Registry

from .conditioning import absolute_sums, activation_condition

__all__ = [
    "OpCondition", "OP_CONDITIONS", "op_condition", "site_absolute_sums", "batched_absolute_sums",
    "softmax_condition", "log_softmax_condition", "layer_norm_condition", "rms_norm_condition",
    "batch_norm_condition", "erf_condition", "lamp_strict", "lamp_relaxed",
]

TWO_OVER_SQRT_PI = 2.0 / np.sqrt(np.pi)


@dataclass(frozen=True)
class OpCondition:
    """An operator type's condition number: ``kappa(node, inputs, outputs)`` returns kappa
    of the first output (a list for operators whose every output is a part of the input,
    Split), None for operators without floating-point values; ``formula`` states it;
    ``site`` marks operators whose output is an accumulation site's sum."""

    op: str
    kappa: "Callable | None" = field(repr=False)
    formula: str
    site: bool = False


OP_CONDITIONS: Registry[OpCondition] = Registry("operator condition number")


def op_condition(node: Node, inputs: Sequence, outputs: Sequence, output: int = 0) -> "np.ndarray | None":
    """kappa per component of the node's output number ``output`` (shape of that output),
    from the node's input and output values (float64 arrays, integer arrays for indices
    and shapes, None for omitted inputs); None for an integer output."""
    if node.op not in OP_CONDITIONS:
        raise ModelFileError(f"unsupported op {node.op!r} (node {node.name!r}): no condition number is registered.")
    row = OP_CONDITIONS.get(node.op)
    y = np.asarray(outputs[output])
    if row.kappa is None or y.dtype.kind != "f":
        return None
    parts = row.kappa(node, [None if a is None else np.asarray(a) for a in inputs], [np.asarray(o) for o in outputs])
    parts = parts if isinstance(parts, list) else [parts]
    if output >= len(parts):
        raise ModelFileError(f"node {node.name!r} ({node.op}): no condition number for output {output}, only for "
                             f"its value.")
    kappa = np.broadcast_to(np.asarray(parts[output], dtype=np.float64), y.shape)
    return np.where(np.isnan(kappa), np.inf, kappa)


# ---------------------------------------------------------------- accumulation sites


class _AbsoluteSums(Native):
    """The float64 arithmetic whose every accumulation site returns the absolute sums
    a_i = |b_i| + sum_j |w_ij| |x_j| of its operands (``absolute_sums``)."""

    def _sum(self, acc, x, w, bias, first_row: int = 0):
        a = absolute_sums(x, w, bias)
        return a, ~np.isfinite(a)


def _evaluate(node: Node, args: list, arith) -> list:
    """The node's outputs computed by its ``emulator.graph.ops`` row under ``arith``."""
    return OPS.get(node.op).evaluate(Context(arith, node), args)


def site_absolute_sums(node: Node, inputs: Sequence) -> np.ndarray:
    """sum |terms| of each output component of an accumulation-site operator
    (docs/method.md#sites-and-products): the node evaluated at the absolute values of its
    float inputs with every sum an ``absolute_sums`` (shared weights, batched activation x
    activation, im2col convolutions, reductions and pools alike; a mean's sum divided by
    its count)."""
    if node.op not in OP_CONDITIONS or not OP_CONDITIONS.get(node.op).site:
        raise ModelFileError(f"node {node.name!r} ({node.op}) is not an accumulation site.")
    args = [np.abs(a) if a is not None and np.asarray(a).dtype.kind == "f" else a for a in inputs]
    return np.asarray(_evaluate(node, args, _AbsoluteSums())[0], dtype=np.float64)


def batched_absolute_sums(x, w, b=None) -> np.ndarray:
    """a[..., t, i] = |b_i| + sum_j |x[..., t, j]| |w[..., i, j]|, leading axes broadcast:
    the absolute sums of an activation x activation contraction (Q K^T, P V)."""
    return _AbsoluteSums().contract(Site("batched", "MatMul"), x, w, b, batched=True)


def _site(node, inputs, outputs):
    return ratio(site_absolute_sums(node, inputs), outputs[0])


# ---------------------------------------------------------------- elementwise


def _floats(inputs) -> list[np.ndarray]:
    return [a for a in inputs if a is not None and a.dtype.kind == "f"]


def _pointwise(value, inputs, defined=True) -> np.ndarray:
    """``value`` where every float input is finite and the function is defined, inf elsewhere."""
    ok = functools.reduce(np.logical_and, [np.isfinite(a) for a in _floats(inputs)], np.asarray(defined))
    return np.where(ok, value, np.inf)


def _moved(node, inputs, outputs):
    """Data movement and selection: y_i is one input component, kappa 1 (inf where it is not finite)."""
    return [np.where(np.isfinite(o), 1.0, np.inf) for o in outputs]


def _sum_or_difference(node, inputs, outputs):
    a, b = inputs
    return ratio(np.abs(a) + np.abs(b), outputs[0])


def _pow(node, inputs, outputs):
    a, p = inputs[0], inputs[1].astype(np.float64)
    defined = ~((a < 0) & (p != np.round(p))) & ~((a == 0) & (p < 0))
    return _pointwise(np.abs(p), inputs, defined)


def erf_condition(x) -> np.ndarray:
    """|x erf'(x) / erf(x)| = |2 x exp(-x^2) / (sqrt(pi) erf(x))|, 1 at 0 (its limit)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        k = np.abs(TWO_OVER_SQRT_PI * x * np.exp(-x * x) / special.erf(x))
    return np.where(x == 0, 1.0, k)


def _clip(node, inputs, outputs):
    x = inputs[0]
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else node.attr("min")
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else node.attr("max")
    inside = np.ones(x.shape, dtype=bool)
    if low is not None:
        inside = inside & (x >= np.asarray(low, dtype=np.float64))
    if high is not None:
        inside = inside & (x <= np.asarray(high, dtype=np.float64))
    return np.where(np.isfinite(outputs[0]), np.where(inside, 1.0, 0.0), np.inf)


def _activation(node, inputs, outputs):
    return activation_condition(activation_name(node), inputs[0])


def _prelu(node, inputs, outputs):
    """leaky_relu's kappa_sigma with each component's slope."""
    shape = outputs[0].shape
    x, slope = np.broadcast_to(inputs[0], shape), np.broadcast_to(inputs[1].astype(np.float64), shape)
    out = np.empty(shape)
    for a in np.unique(slope):
        mask = slope == a
        out[mask] = activation_condition(f"leaky_relu:{float(a)!r}", x[mask])
    return out


# ---------------------------------------------------------------- softmax and LAMP


def _exclusive_sums(v: np.ndarray, axis: int) -> np.ndarray:
    """sum_{j != i} v_j along ``axis`` for nonnegative v, as a prefix plus a suffix sum
    (no cancellation, unlike the total minus v_i)."""
    v = np.moveaxis(v, axis, -1)
    zero = np.zeros_like(v[..., :1])
    before = np.concatenate([zero, np.cumsum(v, -1)[..., :-1]], -1)
    after = np.concatenate([np.cumsum(v[..., ::-1], -1)[..., -2::-1], zero], -1)
    return np.moveaxis(before + after, -1, axis)


def _softmax_sums(s, axis: int, magnitude=None):
    """e = exp(s - max s), its sum T, and the sums over the other components of e and of
    e m, m = ``magnitude`` (default |s|; e m = 0 where e = 0, the limit at s = -inf)."""
    s = np.asarray(s, dtype=np.float64)
    m = np.abs(s) if magnitude is None else np.asarray(magnitude, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(s - np.max(s, axis=axis, keepdims=True))
        weighted = np.where(e == 0, 0.0, e * m)
    return e, np.sum(e, axis=axis, keepdims=True), _exclusive_sums(e, axis), _exclusive_sums(weighted, axis)


def softmax_condition(s, axis: int = -1, magnitude=None) -> np.ndarray:
    """a = softmax(s): kappa_i = |s_i| (1 - a_i) + sum_{j != i} a_j |s_j|, with 1 - a_i
    computed as sum_{j != i} a_j, accurate for a dominant a_i ~ 1
    (docs/method.md#softmax-logsoftmax-and-the-lamp-criteria). With ``magnitude`` m >= 0,
    |s| is replaced by m: the condition number when only a part of size m_j of each s_j
    is perturbed (s = t + mask with the mask exact: m = |t|)."""
    s = np.asarray(s, dtype=np.float64)
    m = np.abs(s) if magnitude is None else np.asarray(magnitude, dtype=np.float64)
    _, total, others, weighted = _softmax_sums(s, axis, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (m * others + weighted) / total


def log_softmax_condition(s, y, axis: int = -1) -> np.ndarray:
    """l = log softmax(s), dl_i/ds_j = delta_ij - a_j: kappa_i = softmax's kappa_i / |l_i|."""
    return ratio(softmax_condition(s, axis), y)


def lamp_strict(s, axis: int = -1) -> np.ndarray:
    """2 a_j (1 - a_j) |s_j| per score s_j of a softmax row: the l1 change of the row's
    probabilities per unit relative perturbation of s_j (sum_i |da_i/ds_j| |s_j|);
    recompute s_j where it exceeds tau."""
    s = np.asarray(s, dtype=np.float64)
    e, total, others, _ = _softmax_sums(s, axis)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        score = 2.0 * (e / total) * (others / total) * np.abs(s)
    return np.where(e == 0, 0.0, score)


def lamp_relaxed(s, axis: int = -1) -> np.ndarray:
    """|s_j| e^{s_j} / max_k |s_k| e^{s_k} per score (both shifted by the row's max, which
    cancels; 0/0 = 0): recompute s_j where it exceeds tau."""
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(s - np.max(s, axis=axis, keepdims=True))
        g = np.where(e == 0, 0.0, np.abs(s) * e)
    return ratio(g, np.max(g, axis=axis, keepdims=True))


def _softmax(node, inputs, outputs):
    return softmax_condition(inputs[0], int(node.attr("axis", -1)))


def _log_softmax(node, inputs, outputs):
    return log_softmax_condition(inputs[0], outputs[0], int(node.attr("axis", -1)))


# ---------------------------------------------------------------- normalisations


def _cross_sums(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """S_i = sum_j |1 + z_i z_j| w_j per row of z, w (rows, n), w >= 0, in O(n log n):
    with z sorted, the terms with 1 + z_i z_j < 0 are the k_i smallest z_j (z_i > 0) or
    the k_i largest (z_i < 0), so S_i = sign(z_i) [(W_rest - W_first) + z_i (Z_rest - Z_first)]
    from prefix sums W of w and Z of z w, the first k_i entries against the others (k_i
    counts z_j < -1/z_i; ties add 0). Absolute error about n u sum_j (1 + |z_i z_j|) w_j."""
    order = np.argsort(z, axis=-1)
    zs, ws = np.take_along_axis(z, order, -1), np.take_along_axis(w, order, -1)
    zero = np.zeros((z.shape[0], 1))
    W = np.concatenate([zero, np.cumsum(ws, -1)], -1)
    Z = np.concatenate([zero, np.cumsum(zs * ws, -1)], -1)
    with np.errstate(divide="ignore"):
        t = np.where(z == 0, -np.inf, -1.0 / z)
    k = np.stack([np.searchsorted(row, ts) for row, ts in zip(zs, t)]) if len(z) else np.zeros(z.shape, int)
    first_w, first_z = np.take_along_axis(W, k, -1), np.take_along_axis(Z, k, -1)
    rest_w, rest_z = W[:, -1:] - first_w, Z[:, -1:] - first_z
    return np.where(z < 0, -1.0, 1.0) * ((rest_w - first_w) + z * (rest_z - first_z))


def _affine(part: np.ndarray, z: np.ndarray, y, scale, bias) -> np.ndarray:
    """kappa of y = g z + b from part = sum_j |dz_i/dx_j| |x_j|, g and b perturbed too:
    (|g| part + |g z| + |b|) / |y| (without g: part / |y|, g = 1 is not a parameter)."""
    top = part
    if scale is not None:
        g = np.abs(np.asarray(scale, dtype=np.float64))
        top = g * part + g * np.abs(z)
    if bias is not None:
        top = top + np.abs(np.asarray(bias, dtype=np.float64))
    return ratio(top, y)


def _normalised_rows(x, axis: int) -> tuple[np.ndarray, int]:
    x = np.asarray(x, dtype=np.float64)
    n = int(np.prod(x.shape[axis % x.ndim:]))
    return x.reshape(-1, n), n


def layer_norm_condition(x, y, scale=None, bias=None, axis: int = -1, epsilon: float = 1e-5) -> np.ndarray:
    """y = z g + b, z = (x - mu) / sigma over the axes from ``axis``, sigma = sqrt(var +
    eps): dz/dx = (I - 1 1^T / n - z z^T / n) / sigma, so sum_j |dz_i/dx_j| |x_j| =
    [sum_{j != i} |1 + z_i z_j| |x_j| + |n - 1 - z_i^2| |x_i|] / (n sigma), then the affine
    part with g and b perturbed (:func:`_affine`). Infinite where x_i = mu and y_i = 0
    (docs/method.md#normalisations)."""
    rows, n = _normalised_rows(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = rows - rows.mean(axis=-1, keepdims=True)
        sigma = np.sqrt(np.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
        z = centred / sigma
        w = np.abs(rows)
        others = np.maximum(_cross_sums(z, w) - (1.0 + z * z) * w, 0.0)
        part = (others + np.abs(n - 1.0 - z * z) * w) / (n * sigma)
    shape = np.shape(x)
    return _affine(part.reshape(shape), z.reshape(shape), y, scale, bias)


def rms_norm_condition(x, y, scale=None, bias=None, axis: int = -1, epsilon: float = 1e-5) -> np.ndarray:
    """y = z g + b, z = x / r over the axes from ``axis``, r = sqrt(mean x^2 + eps):
    dz/dx = (I - z z^T / n) / r, so sum_j |dz_i/dx_j| |x_j| = |z_i| [sum_{j != i} z_j^2 / n
    + |1 - z_i^2 / n|] (at most 2 |z_i|), then the affine part (:func:`_affine`)."""
    rows, n = _normalised_rows(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = rows / np.sqrt(np.mean(rows * rows, axis=-1, keepdims=True) + epsilon)
        part = np.abs(z) * (_exclusive_sums(z * z, -1) / n + np.abs(1.0 - z * z / n))
    shape = np.shape(x)
    return _affine(part.reshape(shape), z.reshape(shape), y, scale, bias)


def batch_norm_condition(x, y, scale, bias, mean, var, epsilon: float = 1e-5) -> np.ndarray:
    """Inference y = s (x - m) / sd + b per channel (axis 1), sd = sqrt(var + eps); x, s
    and b perturbed, the running mean and variance constants:
    kappa = (|s x| / sd + |s (x - m)| / sd + |b|) / |y|."""
    x = np.asarray(x, dtype=np.float64)
    shape = (1, -1, *([1] * (x.ndim - 2)))
    s, b, m, v = (np.reshape(np.asarray(a, dtype=np.float64), shape) for a in (scale, bias, mean, var))
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(v + epsilon)
        top = np.abs(s) * (np.abs(x) + np.abs(x - m)) / sd + np.abs(b)
    return ratio(top, y)


def _layer_norm(node, inputs, outputs):
    x, scale, bias = (list(inputs) + [None, None])[:3]
    return layer_norm_condition(x, outputs[0], scale, bias, int(node.attr("axis", -1)),
                                float(node.attr("epsilon", 1e-5)))


def _batch_norm(node, inputs, outputs):
    return batch_norm_condition(inputs[0], outputs[0], *inputs[1:5], epsilon=float(node.attr("epsilon", 1e-5)))


# ---------------------------------------------------------------- the rest


def _reduce_prod(node, inputs, outputs):
    """One per factor: the number of factors of each product."""
    y = outputs[0]
    count = inputs[0].size // y.size if y.size else 0
    return np.where(np.isfinite(y), float(count), np.inf)


def _pad(node, inputs, outputs):
    """1 where the output copies an input component, 0 on constant padding: the node
    evaluated on ones with fill value 0."""
    x = inputs[0]
    args = [np.ones(x.shape), inputs[1] if len(inputs) > 1 else None, np.zeros(()), *inputs[3:]]
    copied = np.asarray(_evaluate(node, args, Native())[0])
    return np.where(np.isfinite(outputs[0]), copied, np.inf)


def _constant(node, inputs, outputs):
    """Nothing perturbed: 0."""
    return np.zeros(outputs[0].shape)


def _range(node, inputs, outputs):
    """y_k = start + k delta: (|start| + k |delta|) / |y_k|."""
    start, _, delta = (np.abs(np.asarray(a, dtype=np.float64)) for a in inputs[:3])
    y = outputs[0]
    return ratio(start + np.arange(y.size) * delta, y)


def _mod(node, inputs, outputs):
    """y = fmod(a, b) = a - trunc(a / b) b, piecewise linear: (|a| + |trunc(a/b) b|) / |y|."""
    a, b = (np.asarray(v, dtype=np.float64) for v in inputs[:2])
    with np.errstate(all="ignore"):
        q = np.trunc(a / b)
        return ratio(np.abs(a) + np.abs(q * b), outputs[0])


def _add(ops: str, kappa, formula: str, site: bool = False) -> None:
    for op in ops.split():
        OP_CONDITIONS.add(op, OpCondition(op, kappa, formula, site))


_add("Gemm MatMul Einsum Conv", _site, "sum |w_ij x_j| (+ |b_i|) / |y_i| (the terms' condition number)", site=True)
_add("ReduceSum ReduceMean AveragePool GlobalAveragePool", _site, "sum |x_j| / |sum x_j|", site=True)
_add("Add Sub", _sum_or_difference, "(|a| + |b|) / |a ± b|")
_add("Mul", lambda node, inputs, outputs: _pointwise(2.0, inputs), "2 (1 per factor)")
_add("Div", lambda node, inputs, outputs: _pointwise(2.0, inputs, inputs[1] != 0), "2 (inf where b = 0)")
_add("Pow", _pow, "|p| for a constant exponent p (inf where a^p is not defined)")
_add("Neg Abs", lambda node, inputs, outputs: _pointwise(1.0, inputs), "1")
_add("Sqrt", lambda node, inputs, outputs: _pointwise(0.5, inputs, inputs[0] >= 0), "1/2 (inf where x < 0)")
_add("Reciprocal", lambda node, inputs, outputs: _pointwise(1.0, inputs, inputs[0] != 0), "1 (inf where x = 0)")
_add("Exp", lambda node, inputs, outputs: _pointwise(np.abs(inputs[0]), inputs), "|x|")
_add("Erf", lambda node, inputs, outputs: _pointwise(erf_condition(inputs[0]), inputs),
     "|2 x exp(-x^2) / (sqrt(pi) erf x)|, 1 at 0")
_add("Max Min Where ReduceMax MaxPool", _moved, "1 (the selected input)")
_add("Clip", _clip, "1 where x is selected, 0 where the output is a constant bound")
_add(" ".join(ACTIVATION_NAMES), _activation,
     "kappa_sigma(x) = |x sigma'(x) / sigma(x)| (emulator.activations)")
_add("PRelu", _prelu, "kappa_sigma of leaky_relu with the component's slope (a constant)")
_add("ReduceProd", _reduce_prod, "the number of factors")
_add("Softmax", _softmax, "|s_i| (1 - a_i) + sum_{j != i} a_j |s_j|")
_add("LogSoftmax", _log_softmax, "(|s_i| (1 - a_i) + sum_{j != i} a_j |s_j|) / |l_i|")
_add("LayerNormalization", _layer_norm,
     "(|g_i| sum_j |J_ij| |x_j| + |g_i z_i| + |b_i|) / |y_i|, J = (I - 1 1^T/n - z z^T/n) / sigma")
_add("BatchNormalization", _batch_norm, "(|s x| / sd + |s (x - m)| / sd + |b|) / |y| (mean and var constant)")
_add("Reshape Flatten Transpose Squeeze Unsqueeze Concat Split Slice Gather Cast Expand Identity Dropout", _moved,
     "1 (data movement)")
_add("Pad", _pad, "1 on copied components, 0 on constant padding")
_add("Constant ConstantOfShape", _constant, "0 (no input)")
_add("Range", _range, "(|start| + k |delta|) / |y_k|")
_add("Shape Equal", None, "none (integer outputs)")
_add("Mod", _mod, "(|a| + |trunc(a/b) b|) / |fmod(a, b)| (away from the jumps, where a/b is an integer)")
