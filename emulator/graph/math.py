"""The non-accumulating functions operators are written with, as a namespace an
arithmetic provides (``Arithmetic.math``): elementwise arithmetic and transcendental
functions, activations, maxima, and the shape functions. :data:`FLOAT64` computes them in
float64 with numpy; the exact arithmetic provides the same names on certified
enclosures, so an operator is written once and runs in every arithmetic.

Integer tensors (shapes, indices, token ids) never go through this namespace: operators
use numpy on them directly.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ..activations import get_activation

__all__ = ["Float64Math", "FLOAT64", "MATH_FUNCTIONS"]

MATH_FUNCTIONS = (
    "add", "sub", "mul", "div", "neg", "pow", "sqrt", "reciprocal", "exp", "log", "erf", "tanh", "abs",
    "maximum", "minimum", "clip", "where", "activation", "max", "min", "reshape", "transpose", "take",
    "concatenate", "getitem", "broadcast_to", "pad", "stack", "scale",
)
"""Every function an operator may call on float tensors; each arithmetic's namespace
provides all of them (a test pins this)."""


class Float64Math:
    """float64 evaluation with numpy (IEEE arithmetic: overflow gives inf, 0/0 NaN)."""

    name = "float64"

    @staticmethod
    def add(a, b):
        return np.add(a, b)

    @staticmethod
    def sub(a, b):
        return np.subtract(a, b)

    @staticmethod
    def mul(a, b):
        return np.multiply(a, b)

    @staticmethod
    def div(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.divide(a, b)

    @staticmethod
    def neg(a):
        return np.negative(a)

    @staticmethod
    def pow(a, b):
        with np.errstate(all="ignore"):
            return np.power(a, b)

    @staticmethod
    def sqrt(a):
        with np.errstate(invalid="ignore"):
            return np.sqrt(a)

    @staticmethod
    def reciprocal(a):
        with np.errstate(divide="ignore"):
            return np.reciprocal(np.asarray(a, dtype=np.float64))

    @staticmethod
    def exp(a):
        with np.errstate(over="ignore"):
            return np.exp(a)

    @staticmethod
    def log(a):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(a)

    @staticmethod
    def erf(a):
        return special.erf(a)

    @staticmethod
    def tanh(a):
        return np.tanh(a)

    @staticmethod
    def abs(a):
        return np.abs(a)

    @staticmethod
    def maximum(a, b):
        return np.maximum(a, b)

    @staticmethod
    def minimum(a, b):
        return np.minimum(a, b)

    @staticmethod
    def clip(a, low, high):
        """min(max(a, low), high); ``low`` / ``high`` may be None."""
        out = a if low is None else np.maximum(a, low)
        return out if high is None else np.minimum(out, high)

    @staticmethod
    def where(condition, a, b):
        return np.where(condition, a, b)

    @staticmethod
    def activation(name: str, y):
        """sigma(y) for a registered activation (``emulator.activations``)."""
        return get_activation(name).f(np.asarray(y, dtype=np.float64))

    @staticmethod
    def scale(a, factor: float):
        """a * factor for a Python float (exact when the factor is a power of two)."""
        return np.multiply(a, factor)

    @staticmethod
    def max(a, axis, keepdims: bool = False):
        return np.max(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def min(a, axis, keepdims: bool = False):
        return np.min(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def reshape(a, shape):
        return np.reshape(a, shape)

    @staticmethod
    def transpose(a, axes):
        return np.transpose(a, axes)

    @staticmethod
    def take(a, indices, axis):
        return np.take(a, indices, axis=axis)

    @staticmethod
    def concatenate(tensors, axis):
        return np.concatenate(tensors, axis=axis)

    @staticmethod
    def stack(tensors, axis):
        return np.stack(tensors, axis=axis)

    @staticmethod
    def getitem(a, index):
        return a[index]

    @staticmethod
    def broadcast_to(a, shape):
        return np.broadcast_to(a, shape)

    @staticmethod
    def pad(a, pad_width, mode: str = "constant", value: float = 0.0):
        if mode == "constant":
            return np.pad(a, pad_width, mode="constant", constant_values=value)
        return np.pad(a, pad_width, mode=mode)


FLOAT64 = Float64Math()
