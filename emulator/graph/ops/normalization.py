"""Operators that contain sums besides their float64 arithmetic (docs/method.md#graphs):

* ReduceSum, ReduceMean (the sum, then one rounded division), ReduceMax and ReduceProd
  (no sums: float64, or integers for shapes);
* Softmax / LogSoftmax over an axis: s = exp(x - max x); the denominator sum is the site
  ``node.sum``; softmax = s / sum, log-softmax = (x - max x) - log(sum);
* LayerNormalization over the trailing axes from ``axis``: mean (site ``node.mean``), then
  the variance as the mean of (x - mean)^2 (site ``node.var``), then
  (x - mean) / sqrt(var + epsilon) * scale + bias in float64;
* BatchNormalization in inference mode: (x - mean) / sqrt(var + epsilon) * scale + bias per
  channel, no sum;
* pooling: AveragePool and GlobalAveragePool (sum over the window, site ``node``, then
  one rounded division by the window size, padded cells excluded unless
  ``count_include_pad``), MaxPool (float64 maxima).
"""

from __future__ import annotations

import numpy as np

from ...errors import ModelFileError
from ..ir import is_float
from ..math import FLOAT64
from . import register
from .contraction import _auto_pad, _pads


def _reduce_axes(ctx, args, ndim: int) -> "tuple[int, ...] | None":
    """The axes of a Reduce* node: the ``axes`` input (opset >= 13/18) or attribute; none
    given means every axis, unless ``noop_with_empty_axes``."""
    axes = args[1] if len(args) > 1 and args[1] is not None else ctx.attr("axes")
    if axes is None or len(np.atleast_1d(axes)) == 0:
        return () if int(ctx.attr("noop_with_empty_axes", 0)) else tuple(range(ndim))
    return tuple(sorted({int(a) % ndim for a in np.atleast_1d(axes)}))


@register("ReduceSum", "reduction", sums=("",), raw=True)
def reduce_sum(ctx, args):
    """sum over the axes, one accumulation site."""
    x = args[0]
    axes = _reduce_axes(ctx, args, len(x.shape))
    keep = bool(int(ctx.attr("keepdims", 1)))
    if not is_float(x):
        return [np.sum(x, axis=axes, keepdims=keep)]
    return [ctx.sum(x, axes, keepdims=keep) if axes else x]


@register("ReduceMean", "reduction", sums=("",), raw=True)
def reduce_mean(ctx, args):
    """sum over the axes (one site), then the division rounded once."""
    x = args[0]
    axes = _reduce_axes(ctx, args, len(x.shape))
    keep = bool(int(ctx.attr("keepdims", 1)))
    return [ctx.mean(x, axes, keepdims=keep) if axes else x]


@register("ReduceMax", "reduction")
def reduce_max(ctx, args):
    """maximum over the axes (no sum)."""
    x = args[0]
    axes = _reduce_axes(ctx, args, len(x.shape))
    keep = bool(int(ctx.attr("keepdims", 1)))
    if not is_float(x):
        return [np.max(x, axis=axes, keepdims=keep)]
    return [ctx.math.max(x, axes, keepdims=keep) if axes else x]


@register("ReduceProd", "reduction")
def reduce_prod(ctx, args):
    """product over the axes: integer shapes exactly, floats in float64."""
    x = args[0]
    axes = _reduce_axes(ctx, args, len(x.shape))
    keep = bool(int(ctx.attr("keepdims", 1)))
    if not is_float(x):
        return [np.prod(x, axis=axes, keepdims=keep)]
    if not isinstance(x, np.ndarray):
        raise ModelFileError(f"node {ctx.node.name!r} (ReduceProd): products of float tensors are not supported "
                             "in this arithmetic.")
    return [np.prod(x, axis=axes, keepdims=keep)]


def _softmax_parts(ctx, x):
    axis = int(ctx.attr("axis", -1)) % len(x.shape)
    m = ctx.math
    shifted = m.sub(x, m.max(x, axis, keepdims=True))
    e = m.exp(shifted)
    total = ctx.sum(e, axis, role="sum", keepdims=True)
    return shifted, e, total


@register("Softmax", "normalization", sums=("sum",))
def softmax(ctx, args):
    """exp(x - max) / sum exp(x - max) along ``axis``; the denominator is site ``node.sum``."""
    _, e, total = _softmax_parts(ctx, args[0])
    return [ctx.math.div(e, total)]


@register("LogSoftmax", "normalization", sums=("sum",))
def log_softmax(ctx, args):
    """(x - max) - log sum exp(x - max) along ``axis``; the sum is site ``node.sum``."""
    shifted, _, total = _softmax_parts(ctx, args[0])
    return [ctx.math.sub(shifted, ctx.math.log(total))]


@register("LayerNormalization", "normalization", sums=("mean", "var"))
def layer_norm(ctx, args):
    """(x - mean) / sqrt(var + eps) * scale + bias over the axes from ``axis``; mean and
    variance are means (sites ``node.mean``, ``node.var``)."""
    x, scale, bias = (args + [None, None])[:3]
    m = ctx.math
    axis = int(ctx.attr("axis", -1)) % len(x.shape)
    axes = tuple(range(axis, len(x.shape)))
    eps = float(ctx.attr("epsilon", 1e-5))
    mean = ctx.mean(x, axes, role="mean")
    centred = m.sub(x, mean)
    var = ctx.mean(m.mul(centred, centred), axes, role="var")
    out = m.div(centred, m.sqrt(m.add(var, ctx.lift(np.array(eps)))))
    if scale is not None:
        out = m.mul(out, scale)
    if bias is not None:
        out = m.add(out, bias)
    outputs = [out]
    if len(ctx.node.outputs) > 1:
        outputs += [mean, m.reciprocal(m.sqrt(m.add(var, ctx.lift(np.array(eps)))))]
    return outputs


def _batch_norm_check(node) -> None:
    if int(node.attr("training_mode", 0)) or len([o for o in node.outputs if o]) > 1:
        raise ModelFileError(f"node {node.name!r} (BatchNormalization): training mode is not supported.")


@register("BatchNormalization", "normalization", check=_batch_norm_check)
def batch_norm(ctx, args):
    """Inference: (x - mean) / sqrt(var + eps) * scale + bias per channel (axis 1)."""
    x, scale, bias, mean, var = args[:5]
    m = ctx.math
    shape = (1, -1, *([1] * (len(x.shape) - 2)))
    eps = ctx.lift(np.array(float(ctx.attr("epsilon", 1e-5))))
    denom = m.sqrt(m.add(m.reshape(var, shape), eps))
    out = m.div(m.sub(x, m.reshape(mean, shape)), denom)
    return [m.add(m.mul(out, m.reshape(scale, shape)), m.reshape(bias, shape))]


def _pool_check(node) -> None:
    """A window pooling: known ``auto_pad``, a ``kernel_shape``, floor mode, one output."""
    _auto_pad(node)
    if node.attr("kernel_shape") is None:
        raise ModelFileError(f"node {node.name!r} ({node.op}): kernel_shape is missing.")
    if int(node.attr("ceil_mode", 0)):
        raise ModelFileError(f"node {node.name!r} ({node.op}): ceil_mode is not supported.")
    if len([o for o in node.outputs if o]) > 1:
        raise ModelFileError(f"node {node.name!r} ({node.op}): the Indices output is not supported.")


def _pool_geometry(ctx, x):
    spatial = len(x.shape) - 2
    kernel = tuple(int(k) for k in ctx.attr("kernel_shape"))
    strides = tuple(int(s) for s in ctx.attr("strides", (1,) * spatial))
    dilations = tuple(int(d) for d in ctx.attr("dilations", (1,) * spatial))
    pads = _pads(ctx, x.shape[2:], kernel, strides, dilations)
    return spatial, kernel, strides, dilations, pads


def _windows(m, x, kernel, strides, dilations, pads, value):
    """(N, C, L_1.., K) windows of the padded input, kernel positions last."""
    spatial = len(kernel)
    xp = m.pad(x, ((0, 0), (0, 0), *((pads[i], pads[i + spatial]) for i in range(spatial))), value=value)
    out_sizes = [(xp.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(spatial)]
    pieces = []
    for offset in np.ndindex(*kernel):
        index = [slice(None), slice(None)]
        for i in range(spatial):
            start = offset[i] * dilations[i]
            index.append(slice(start, start + strides[i] * (out_sizes[i] - 1) + 1, strides[i]))
        pieces.append(m.getitem(xp, tuple(index)))
    return m.stack(pieces, axis=-1), out_sizes


@register("MaxPool", "pooling", check=_pool_check)
def max_pool(ctx, args):
    """maximum over each window (padding never wins)."""
    x = args[0]
    _, kernel, strides, dilations, pads = _pool_geometry(ctx, x)
    win, _ = _windows(ctx.math, x, kernel, strides, dilations, pads, -np.inf)
    return [ctx.math.max(win, -1)]


@register("AveragePool", "pooling", sums=("",), raw=True, check=_pool_check)
def average_pool(ctx, args):
    """sum over each window (one site), then one rounded division by the number of
    cells (padded cells count only with ``count_include_pad``)."""
    x = args[0]
    _, kernel, strides, dilations, pads = _pool_geometry(ctx, x)
    win, out_sizes = _windows(ctx.math, x, kernel, strides, dilations, pads, 0.0)
    total = ctx.sum(win, -1, keepdims=False)
    if int(ctx.attr("count_include_pad", 0)) or not any(pads):
        return [ctx.arith.divide(ctx.site(), total, int(np.prod(kernel)))]
    ones = np.ones((1, 1, *x.shape[2:]))
    counts, _ = _windows(FLOAT64, ones, kernel, strides, dilations, pads, 0.0)
    counts = counts.sum(axis=-1)
    return [ctx.arith.divide(ctx.site(), total, counts)]


@register("GlobalAveragePool", "pooling", sums=("",), raw=True)
def global_average_pool(ctx, args):
    """mean over every spatial axis (one site), keeping them as size 1."""
    x = args[0]
    return [ctx.mean(x, tuple(range(2, len(x.shape))), keepdims=True)]
