"""Contractions: the matrix products, each one accumulation site (docs/method.md#graphs).

* Gemm: Y = alpha A' B' + beta C (A' = A or A^T, B' = B or B^T); alpha and beta must be 1
  (the products are the exact w x of the accumulation model); a C that broadcasts to (N,)
  is the sum's bias, any other C is added after the sum.
* MatMul: numpy ``matmul`` semantics. A 2-D right operand (weights: no batch dimension)
  is shared by every row; a right operand with leading dimensions (Q K^T, P V) makes a
  batched contraction, one per leading index.
* Conv (1-D and 2-D, groups, strides, pads, dilations): im2col, one contraction over the
  in-channels of the group x kernel positions, in the documented order — channel-major,
  then kernel rows, then columns — with the bias in the sum (a grouped convolution has one
  site per group, ``node.group0``, ``node.group1``, ...).
"""

from __future__ import annotations

import numpy as np

from ...errors import ModelFileError, ShapeError
from . import register


def _gemm_check(node) -> None:
    """alpha must be 1, and beta too when C is given."""
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    has_c = len(node.inputs) > 2 and bool(node.inputs[2])
    if alpha != 1.0 or (has_c and beta != 1.0):
        raise ModelFileError(f"node {node.name!r} (Gemm): alpha == {alpha:g}, beta == {beta:g}; only 1 is "
                             "supported (scale the weights instead).")


@register("Gemm", "contraction", sums=("",), raw=True, check=_gemm_check)
def gemm(ctx, args):
    """Y = A' B' + C, one accumulation site."""
    a, b, c = (args + [None])[:3]
    m = ctx.math
    if int(ctx.attr("transA", 0)):
        a = m.transpose(a, (1, 0))
    w = b if int(ctx.attr("transB", 0)) else m.transpose(b, (1, 0))  # w: (N, K)
    bias, after = None, None
    if c is not None:
        shape = tuple(c.shape)
        n = w.shape[0]
        if len(shape) <= 1 or all(d == 1 for d in shape[:-1]):
            bias = m.reshape(m.broadcast_to(m.reshape(c, (-1,)) if len(shape) else c, (n,)), (n,))
        else:
            after = c
    y = ctx.contract(a, w, bias)
    return [y if after is None else m.add(y, after)]


@register("MatMul", "contraction", sums=("",), raw=True)
def matmul(ctx, args):
    """numpy matmul: shared weights for a constant right operand, batched otherwise."""
    a, b = args
    m = ctx.math
    one_d_a, one_d_b = len(a.shape) == 1, len(b.shape) == 1
    if one_d_a:
        a = m.reshape(a, (1, a.shape[0]))
    if one_d_b:
        b = m.reshape(b, (b.shape[0], 1))
    if len(b.shape) == 2:
        y = ctx.contract(a, m.transpose(b, (1, 0)))
    else:
        y = ctx.contract(a, m.transpose(b, (*range(len(b.shape) - 2), len(b.shape) - 1, len(b.shape) - 2)),
                         batched=True)
    if one_d_a:
        y = m.reshape(y, (*y.shape[:-2], y.shape[-1]))
    if one_d_b:
        y = m.reshape(y, y.shape[:-1])
    return [y]


def _einsum_letters(node) -> tuple[str, str, str]:
    """The letters of the two operands and of the output of a matrix-product einsum; any
    other equation is refused."""
    equation = str(node.attr("equation", "")).replace(" ", "")
    where = f"node {node.name!r} (Einsum)"
    if "->" not in equation or len(node.inputs) != 2 or "." in equation or equation.count(",") != 1:
        raise ModelFileError(f"{where}: {equation!r} is not a two-operand contraction with an explicit output; "
                             "only matrix-product einsums are supported.")
    lhs, out = equation.split("->")
    sa, sb = lhs.split(",")
    if len(set(sa)) != len(sa) or len(set(sb)) != len(sb) or len(set(out)) != len(out):
        raise ModelFileError(f"{where}: repeated letters (traces, diagonals) in {equation!r}.")
    if set(out) - set(sa) - set(sb):
        raise ModelFileError(f"{where}: {equation!r} has output letters no operand has.")
    if any(c not in out for c in set(sa) ^ set(sb)):
        raise ModelFileError(f"{where}: {equation!r} sums a letter of one operand only.")
    return sa, sb, out


@register("Einsum", "contraction", sums=("",), raw=True, check=_einsum_letters)
def einsum(ctx, args):
    """Two-operand contractions that are matrix products: batch letters, free letters of
    each operand, and contracted letters (summed in their order in the first operand)."""
    sa, sb, out = _einsum_letters(ctx.node)
    batch = [c for c in sa if c in sb and c in out]
    summed = [c for c in sa if c in sb and c not in out]
    free_a = [c for c in sa if c not in sb]
    free_b = [c for c in sb if c not in sa]
    m = ctx.math
    a, b = args
    dims = {c: a.shape[sa.index(c)] for c in sa} | {c: b.shape[sb.index(c)] for c in sb}
    ta = m.transpose(a, [sa.index(c) for c in (*batch, *free_a, *summed)])
    tb = m.transpose(b, [sb.index(c) for c in (*batch, *free_b, *summed)])
    k = int(np.prod([dims[c] for c in summed])) if summed else 1
    fa, fb = int(np.prod([dims[c] for c in free_a])) if free_a else 1, int(np.prod([dims[c] for c in free_b])) if free_b else 1
    bshape = tuple(dims[c] for c in batch)
    ta = m.reshape(ta, (*bshape, fa, k))
    tb = m.reshape(tb, (*bshape, fb, k))
    y = ctx.contract(ta, tb, batched=True) if batch else ctx.contract(ta, tb)
    y = m.reshape(y, (*bshape, *(dims[c] for c in free_a), *(dims[c] for c in free_b)))
    order = [*batch, *free_a, *free_b]
    return [m.transpose(y, [order.index(c) for c in out])]


_AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def _auto_pad(node) -> str:
    """The ``auto_pad`` attribute of a convolution or pooling node (refused if unknown)."""
    auto = node.attr("auto_pad", "NOTSET")
    auto = (auto.decode() if isinstance(auto, bytes) else str(auto)) or "NOTSET"
    if auto not in _AUTO_PADS:
        raise ModelFileError(f"node {node.name!r} ({node.op}): auto_pad {auto!r} is not one of {', '.join(_AUTO_PADS)}.")
    return auto


@register("Conv", "contraction", sums=("",), raw=True, check=_auto_pad)
def conv(ctx, args):
    """N-d convolution (1-D, 2-D) by im2col: one site over C_in/groups x kernel
    positions, channel-major then kernel rows then columns; the bias is in the sum."""
    x, w, b = (args + [None])[:3]
    m = ctx.math
    spatial = len(x.shape) - 2
    if spatial not in (1, 2) or len(w.shape) != spatial + 2:
        raise ShapeError(f"node {ctx.node.name!r} (Conv): input {tuple(x.shape)} and weight {tuple(w.shape)}; "
                         "1-D and 2-D convolutions are supported.")
    groups = int(ctx.attr("group", 1))
    kernel = tuple(w.shape[2:])
    strides = tuple(ctx.attr("strides", (1,) * spatial))
    dilations = tuple(ctx.attr("dilations", (1,) * spatial))
    pads = _pads(ctx, x.shape[2:], kernel, strides, dilations)
    cout, cin_g = w.shape[0], w.shape[1]
    if x.shape[1] != cin_g * groups or cout % groups:
        raise ShapeError(f"node {ctx.node.name!r} (Conv): {x.shape[1]} input channels, weight {tuple(w.shape)}, "
                         f"group {groups} do not fit.")
    xp = m.pad(x, ((0, 0), (0, 0), *((pads[i], pads[i + spatial]) for i in range(spatial))))
    out_sizes = [(xp.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(spatial)]
    cols = _im2col(m, xp, kernel, strides, dilations, out_sizes)  # (N, C_in, K..., L...) -> see helper
    batch = x.shape[0]
    outs = []
    cout_g = cout // groups
    for g in range(groups):
        block = m.getitem(cols, (slice(None), slice(None), slice(g * cin_g, (g + 1) * cin_g)))
        block = m.reshape(block, (batch * int(np.prod(out_sizes)), cin_g * int(np.prod(kernel))))
        wg = m.reshape(m.getitem(w, slice(g * cout_g, (g + 1) * cout_g)), (cout_g, cin_g * int(np.prod(kernel))))
        bg = None if b is None else m.getitem(b, slice(g * cout_g, (g + 1) * cout_g))
        outs.append(ctx.contract(block, wg, bg, role=f"group{g}" if groups > 1 else ""))
    y = outs[0] if groups == 1 else m.concatenate(outs, axis=-1)
    y = m.reshape(y, (batch, *out_sizes, cout))
    return [m.transpose(y, (0, spatial + 1, *range(1, spatial + 1)))]


def _pads(ctx, sizes, kernel, strides, dilations) -> tuple[int, ...]:
    """Begin and end pads per spatial axis (explicit ``pads`` or ``auto_pad``)."""
    spatial = len(kernel)
    auto = _auto_pad(ctx.node)
    if auto == "NOTSET":
        return tuple(int(p) for p in ctx.attr("pads", (0,) * (2 * spatial)))
    if auto == "VALID":
        return (0,) * (2 * spatial)
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-int(size) // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - int(size))
        small = total // 2
        first = small if auto == "SAME_UPPER" else total - small
        begin.append(first)
        end.append(total - first)
    return (*begin, *end)


def _im2col(m, xp, kernel, strides, dilations, out_sizes):
    """Patches of the padded input as (N, L, C, k_1, ..., k_d) flattened later:
    returns (N, L, C * prod(k)) ordered channel-major, then kernel rows, then columns."""
    spatial = len(kernel)
    batch, channels = xp.shape[0], xp.shape[1]
    pieces = []
    for offset in np.ndindex(*kernel):
        index = [slice(None), slice(None)]
        for i in range(spatial):
            start = offset[i] * dilations[i]
            index.append(slice(start, start + strides[i] * (out_sizes[i] - 1) + 1, strides[i]))
        pieces.append(m.getitem(xp, tuple(index)))  # (N, C, L_1, ..., L_d)
    stacked = m.stack(pieces, axis=2)  # (N, C, K, L...)
    stacked = m.reshape(stacked, (batch, channels, int(np.prod(kernel)), int(np.prod(out_sizes))))
    return m.transpose(stacked, (0, 3, 1, 2))  # (N, L, C, K): channel-major, then kernel positions
