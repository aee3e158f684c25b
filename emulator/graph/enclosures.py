"""What the two namespaces of the exact arithmetic share (docs/method.md#the-exact-arithmetic):
the shape functions, which move the parts of an enclosure tensor without arithmetic, and
the functions composed from the others (reciprocal, powers, clip, minima, tanh, scale).

An enclosure tensor type provides ``shape``, ``map(fn)`` (``fn`` applied to each of its
arrays), ``join(tensors, fn)`` (``fn`` applied to the lists of corresponding arrays, as
``concatenate`` and ``stack`` need) and ``padded(pad_width, mode, value)``. A namespace
subclassing :class:`EnclosureMath` provides ``lift``, ``add``, ``sub``, ``mul``,
``div``, ``neg``, ``sqrt``, ``exp``, ``log``, ``erf``, ``abs``, ``maximum``, ``max``,
``where``, ``activation`` and ``contract``.
"""

from __future__ import annotations

import operator
from functools import reduce

import numpy as np

__all__ = ["EnclosureMath", "ScalarMath", "MAX_INTEGER_POWER", "object_array", "reduce_objects"]

MAX_INTEGER_POWER = 64  # a^p by repeated products for integer |p| up to this


def object_array(values, shape) -> np.ndarray:
    """An object array of ``shape`` holding ``values`` (enclosures of the scalar paths);
    an object array of that shape already is returned as it is."""
    if isinstance(values, np.ndarray) and values.dtype == object and values.shape == tuple(shape):
        return values
    out = np.empty(shape, dtype=object)
    out[...] = values
    return out


def reduce_objects(values: np.ndarray, axis, keepdims: bool, combine) -> np.ndarray:
    """``combine`` folded over ``axis`` (an int or ints) of an object array, pairwise."""
    axes = tuple(sorted({int(v) % values.ndim for v in np.atleast_1d(axis)}))
    keep = [k for k in range(values.ndim) if k not in axes]
    rows = np.transpose(values, (*keep, *axes)).reshape(-1, int(np.prod([values.shape[k] for k in axes])))
    out = [reduce(combine, row) for row in rows]
    shape = tuple(1 if k in axes else d for k, d in enumerate(values.shape)) if keepdims else \
        tuple(values.shape[k] for k in keep)
    return object_array(out, (len(out),)).reshape(shape)


class EnclosureMath:
    """Shape functions and composed functions of an exact namespace. ``precision``: its
    working precision in bits; ``tensor``: its enclosure tensor type."""

    name = "enclosure"
    tensor: type = object

    def __init__(self, precision: int = 113):
        self.precision = int(precision)

    @classmethod
    def _as(cls, t):
        """An enclosure tensor as itself; a float array or number lifted exactly."""
        return t if isinstance(t, cls.tensor) else cls.lift(t)

    # shape functions --------------------------------------------------------------

    @staticmethod
    def reshape(a, shape):
        return a.map(lambda p: np.reshape(p, shape))

    @staticmethod
    def transpose(a, axes):
        return a.map(lambda p: np.transpose(p, axes))

    @staticmethod
    def take(a, indices, axis):
        return a.map(lambda p: np.take(p, indices, axis=axis))

    @staticmethod
    def getitem(a, index):
        return a.map(lambda p: p[index])

    @staticmethod
    def broadcast_to(a, shape):
        return a.map(lambda p: np.broadcast_to(p, shape))

    @staticmethod
    def concatenate(tensors, axis):
        tensors = list(tensors)
        return type(tensors[0]).join(tensors, lambda parts: np.concatenate(parts, axis=axis))

    @staticmethod
    def stack(tensors, axis):
        tensors = list(tensors)
        return type(tensors[0]).join(tensors, lambda parts: np.stack(parts, axis=axis))

    @staticmethod
    def pad(a, pad_width, mode: str = "constant", value: float = 0.0):
        return a.padded(pad_width, mode, value)

    # composed functions -----------------------------------------------------------

    def reciprocal(self, a):
        return self.div(self.lift(np.ones(a.shape)), a)

    def scale(self, a, factor: float):
        """a * factor, the factor an exact float64."""
        return self.mul(a, self.lift(np.asarray(float(factor))))

    def tanh(self, a):
        return self.activation("tanh", a)

    def minimum(self, a, b):
        return self.neg(self.maximum(self.neg(a), self.neg(b)))

    def min(self, a, axis, keepdims: bool = False):
        return self.neg(self.max(self.neg(a), axis, keepdims))

    def clip(self, a, low, high):
        """min(max(a, low), high); ``low`` / ``high`` may be None."""
        out = a if low is None else self.maximum(a, low)
        return out if high is None else self.minimum(out, high)

    def pow(self, a, b):
        """a^b: for one exact exponent p shared by every element, repeated products
        (integer |p| <= MAX_INTEGER_POWER, reciprocal for p < 0; a^0 = 1), sqrt (p =
        1/2, -1/2); otherwise exp(b log a) (a > 0)."""
        p = self.exact_scalar(b)
        if p is not None and abs(p) <= MAX_INTEGER_POWER and p == int(p):
            out = self._integer_power(a, int(abs(p)))
            return self.reciprocal(out) if p < 0 else out
        if p in (0.5, -0.5):
            root = self.sqrt(a)
            return root if p > 0 else self.reciprocal(root)
        return self.exp(self.mul(b, self.log(a)))

    def _integer_power(self, a, p: int):
        shape = np.broadcast_shapes(a.shape)
        result, base = None, a
        while p:
            if p & 1:
                result = base if result is None else self.mul(result, base)
            p >>= 1
            if p:
                base = self.mul(base, base)
        return self.lift(np.ones(shape)) if result is None else result

    def exact_scalar(self, t) -> "float | None":
        """The one value of a tensor every element of which is the same exact float64
        (None otherwise)."""
        raise NotImplementedError


class ScalarMath(EnclosureMath):
    """A namespace whose tensors hold object arrays of scalar enclosures with the
    operators + - * (mpmath intervals, Arb balls): those three elementwise through the
    namespace's ``_map(fn, *tensors)``."""

    def add(self, a, b):
        return self._map(operator.add, a, b)

    def sub(self, a, b):
        return self._map(operator.sub, a, b)

    def mul(self, a, b):
        return self._map(operator.mul, a, b)
