"""Shape and data-movement operators (no arithmetic on values): Reshape, Flatten,
Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Gather, Shape, Constant,
ConstantOfShape, Cast, Expand, Range, Pad, Identity, Dropout (inference: identity).
Float tensors move through the arithmetic's ``math`` namespace, integer tensors through
numpy. Integer tensors hold shapes, indices and token ids; Gather of an embedding table by
token ids refuses ids outside the table."""

from __future__ import annotations

import numpy as np

from ...errors import DataError, ModelFileError
from ..ir import is_float
from . import register


def _m(ctx, t):
    """The namespace that moves ``t``: the arithmetic's for floats, numpy's for integers."""
    return ctx.math if is_float(t) else _INT


class _IntegerMoves:
    """numpy's shape functions under the names of the ``math`` namespace."""

    reshape = staticmethod(np.reshape)
    transpose = staticmethod(np.transpose)
    broadcast_to = staticmethod(np.broadcast_to)

    @staticmethod
    def take(a, indices, axis):
        return np.take(a, indices, axis=axis)

    @staticmethod
    def concatenate(tensors, axis):
        return np.concatenate(tensors, axis=axis)

    @staticmethod
    def getitem(a, index):
        return a[index]

    @staticmethod
    def pad(a, pad_width, mode="constant", value=0):
        if mode == "constant":
            return np.pad(a, pad_width, mode="constant", constant_values=value)
        return np.pad(a, pad_width, mode=mode)


_INT = _IntegerMoves()


def _ints(t) -> list[int]:
    return [int(v) for v in np.atleast_1d(np.asarray(t))]


@register("Reshape", "shape")
def reshape(ctx, args):
    """Reshape to the shape tensor: 0 copies the input's size (unless ``allowzero``), -1 is inferred."""
    x, shape = args
    target = _ints(shape)
    if not int(ctx.attr("allowzero", 0)):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return [_m(ctx, x).reshape(x, tuple(target))]


@register("Flatten", "shape")
def flatten(ctx, args):
    """2-D: the axes before ``axis`` and the axes from it (a negative ``axis`` counts from the end)."""
    x = args[0]
    axis = int(ctx.attr("axis", 1))
    axis = axis + len(x.shape) if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis])) if axis else 1
    return [_m(ctx, x).reshape(x, (outer, int(np.prod(x.shape[axis:]))))]


@register("Transpose", "shape")
def transpose(ctx, args):
    """Permute the axes (reversed without ``perm``)."""
    x = args[0]
    perm = ctx.attr("perm")
    perm = tuple(range(len(x.shape)))[::-1] if perm is None else tuple(int(p) for p in perm)
    return [_m(ctx, x).transpose(x, perm)]


def _axes_arg(ctx, args, ndim: int) -> "list[int] | None":
    axes = args[1] if len(args) > 1 and args[1] is not None else ctx.attr("axes")
    return None if axes is None else sorted(int(a) % ndim for a in np.atleast_1d(axes))


@register("Squeeze", "shape")
def squeeze(ctx, args):
    """Drop the given axes of size 1 (every size-1 axis without ``axes``)."""
    x = args[0]
    axes = _axes_arg(ctx, args, len(x.shape))
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    bad = [a for a in axes if x.shape[a] != 1]
    if bad:
        raise ModelFileError(f"node {ctx.node.name!r} (Squeeze): axis {bad[0]} has size {x.shape[bad[0]]}, not 1.")
    return [_m(ctx, x).reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))]


@register("Unsqueeze", "shape")
def unsqueeze(ctx, args):
    """Insert axes of size 1 at the given positions of the output."""
    x = args[0]
    axes = args[1] if len(args) > 1 and args[1] is not None else ctx.attr("axes")
    out_ndim = len(x.shape) + len(_ints(axes))
    positions = sorted(int(a) % out_ndim for a in _ints(axes))
    shape = list(x.shape)
    for p in positions:
        shape.insert(p, 1)
    return [_m(ctx, x).reshape(x, tuple(shape))]


@register("Concat", "shape")
def concat(ctx, args):
    """Join along ``axis`` (floats with integers: integers lifted)."""
    axis = int(ctx.attr("axis"))
    parts = [a for a in args if a is not None]
    if all(not is_float(a) for a in parts):
        return [np.concatenate(parts, axis=axis)]
    parts = [a if is_float(a) else ctx.lift(a.astype(np.float64)) for a in parts]
    return [ctx.math.concatenate(parts, axis)]


@register("Split", "shape")
def split(ctx, args):
    """Split along ``axis`` by the ``split`` sizes (input or attribute), else evenly."""
    x = args[0]
    axis = int(ctx.attr("axis", 0)) % len(x.shape)
    sizes = args[1] if len(args) > 1 and args[1] is not None else ctx.attr("split")
    count = len(ctx.node.outputs)
    if sizes is None:
        n = x.shape[axis]
        step = -(-n // count)
        sizes = [min(step, n - k * step) for k in range(count)]
    bounds = np.cumsum([0, *_ints(sizes)])
    m = _m(ctx, x)
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(int(lo), int(hi))
        out.append(m.getitem(x, tuple(index)))
    return out


@register("Slice", "shape")
def slice_(ctx, args):
    """x[starts:ends:steps] on the given axes (inputs, opset >= 10), clamped as ONNX does."""
    x, starts, ends = args[:3]
    axes = args[3] if len(args) > 3 and args[3] is not None else None
    steps = args[4] if len(args) > 4 and args[4] is not None else None
    starts, ends = _ints(starts), _ints(ends)
    axes = list(range(len(starts))) if axes is None else [int(a) % len(x.shape) for a in _ints(axes)]
    steps = [1] * len(starts) if steps is None else _ints(steps)
    index = [slice(None)] * len(x.shape)
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            raise ModelFileError(f"node {ctx.node.name!r} (Slice): step 0 on axis {a}.")
        index[a] = _clamped_slice(s, e, st, x.shape[a])
    return [_m(ctx, x).getitem(x, tuple(index))]


def _clamped_slice(start: int, end: int, step: int, size: int) -> slice:
    """One axis of an ONNX Slice: negative bounds count from the end, then starts and ends
    are clamped to [0, size] (step > 0) or to [0, size - 1] and [-1, size - 1] (step < 0,
    where -1 means past the first element)."""
    start, end = start + size if start < 0 else start, end + size if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), size), min(max(end, 0), size), step)
    start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
    return slice(start, None if end < 0 else end, step)


@register("Gather", "shape")
def gather(ctx, args):
    """take(x, indices, axis); negative indices count from the end; an index outside the
    axis (a token id beyond the vocabulary) is refused."""
    x, indices = args
    axis = int(ctx.attr("axis", 0)) % len(x.shape)
    idx = np.asarray(indices, dtype=np.int64)
    size = x.shape[axis]
    bad = (idx < -size) | (idx >= size)
    if bad.any():
        value = int(idx[bad].ravel()[0])
        raise DataError(f"node {ctx.node.name!r} (Gather): index {value} is outside axis {axis} of size {size}"
                        f"{' (a token id beyond the vocabulary?)' if axis == 0 else ''}.")
    idx = np.where(idx < 0, idx + size, idx)
    return [_m(ctx, x).take(x, idx, axis)]


@register("Shape", "shape")
def shape(ctx, args):
    """The input's shape as int64 (``start`` / ``end`` select a range of axes)."""
    dims = np.array(args[0].shape, dtype=np.int64)
    start, end = ctx.attr("start", 0), ctx.attr("end")
    return [dims[int(start):None if end is None else int(end)]]


_CONSTANT_VALUES = ("value", "value_float", "value_floats", "value_int", "value_ints")


def constant_value(node) -> np.ndarray:
    """The value of a Constant node (``value``, or ``value_float(s)`` / ``value_int(s)``)
    as a float64 or int64 array."""
    for key in _CONSTANT_VALUES:
        if node.attr(key) is not None:
            v = np.asarray(node.attr(key))
            return v.astype(np.float64) if v.dtype.kind == "f" else v.astype(np.int64)
    given = ", ".join(node.attrs) or "none"
    raise ModelFileError(f"node {node.name!r} (Constant): only numeric values are supported (attributes: {given}).")


@register("Constant", "shape", check=constant_value)
def constant(ctx, args):
    """The ``value`` attribute (or ``value_float(s)`` / ``value_int(s)``)."""
    v = constant_value(ctx.node)
    return [ctx.lift(v) if v.dtype.kind == "f" else v]


@register("ConstantOfShape", "shape")
def constant_of_shape(ctx, args):
    """A tensor of the given shape filled with ``value`` (0.0 by default)."""
    value = np.asarray(ctx.attr("value", np.zeros(1))).ravel()
    full = np.full(tuple(_ints(args[0])), value[0] if value.size else 0.0, dtype=value.dtype if value.size else float)
    return [ctx.lift(full.astype(np.float64)) if full.dtype.kind == "f" else full.astype(np.int64)]


_FLOAT_TYPES = (1, 10, 11, 16)  # ONNX TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
_INT_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)  # UINT8, INT8, UINT16, INT16, INT32, INT64, UINT32, UINT64
_BOOL = 9


def _cast_check(node) -> None:
    to = node.attr("to")
    if to is None or int(to) not in (*_FLOAT_TYPES, *_INT_TYPES, _BOOL):
        raise ModelFileError(f"node {node.name!r} (Cast): target type {to} is not supported (floating point, "
                             "integers and booleans are).")


@register("Cast", "shape", check=_cast_check)
def cast(ctx, args):
    """To float (a float tensor stays itself: every float is held in float64), to an
    integer type (floats truncated toward zero) or to bool (nonzero, held as 0/1)."""
    x = args[0]
    to = int(ctx.attr("to"))
    if to in _FLOAT_TYPES:
        return [x if is_float(x) else ctx.lift(np.asarray(x, dtype=np.float64))]
    if is_float(x) and not isinstance(x, np.ndarray):
        raise ModelFileError(f"node {ctx.node.name!r} (Cast): a float tensor cast to integers depends on its "
                             "exact value; not supported in this arithmetic.")
    if to == _BOOL:
        return [np.asarray(x != 0).astype(np.int64)]
    return [(np.trunc(x) if is_float(x) else np.asarray(x)).astype(np.int64)]


@register("Expand", "shape")
def expand(ctx, args):
    """Broadcast to the shape (numpy rules, either side may be 1)."""
    x, shape_ = args
    target = np.broadcast_shapes(tuple(x.shape), tuple(_ints(shape_)))
    return [_m(ctx, x).broadcast_to(x, target)]


@register("Range", "shape")
def range_(ctx, args):
    """arange(start, limit, delta)."""
    start, limit, delta = (np.asarray(a).item() for a in args)
    values = np.arange(start, limit, delta)
    return [ctx.lift(values.astype(np.float64)) if values.dtype.kind == "f" else values.astype(np.int64)]


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_mode(node) -> str:
    mode = node.attr("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in _PAD_MODES:
        raise ModelFileError(f"node {node.name!r} (Pad): mode {mode!r} is not one of {', '.join(_PAD_MODES)}.")
    return mode


@register("Pad", "shape", check=_pad_mode)
def pad(ctx, args):
    """Constant (default), reflect, edge or wrap padding by ``pads`` (begin..., end...) on
    ``axes`` (all by default); negative pads remove elements."""
    x = args[0]
    pads = _ints(args[1] if len(args) > 1 and args[1] is not None else ctx.attr("pads"))
    value = args[2] if len(args) > 2 and args[2] is not None else ctx.attr("value", 0.0)
    mode = _pad_mode(ctx.node)
    n = len(x.shape)
    axes = args[3] if len(args) > 3 and args[3] is not None else None
    axes = list(range(n)) if axes is None else [int(a) % n for a in _ints(axes)]
    width = [(0, 0)] * n
    for k, a in enumerate(axes):
        width[a] = (pads[k], pads[k + len(axes)])
    fill = float(np.asarray(value).ravel()[0]) if np.asarray(value).size else 0.0
    m = _m(ctx, x)
    grow = tuple((max(b, 0), max(e, 0)) for b, e in width)
    out = m.pad(x, grow, mode, fill) if any(b or e for b, e in grow) else x
    if any(b < 0 or e < 0 for b, e in width):
        out = m.getitem(out, tuple(slice(max(-b, 0), out.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(width)))
    return [out]


@register("Identity", "shape")
def identity(ctx, args):
    """The input itself."""
    return [args[0]]


@register("Dropout", "shape")
def dropout(ctx, args):
    """Inference: the input itself (and an all-true mask when asked)."""
    outs = [args[0]]
    if len(ctx.node.outputs) > 1:
        outs.append(np.ones(args[0].shape, dtype=np.int64))
    return outs
