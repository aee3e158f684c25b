"""Elementwise operators and activations, computed in float64 (rounded to the storage
format by the engine), numpy broadcasting: Add, Sub, Mul, Div, Neg, Pow, Sqrt,
Reciprocal, Exp, Erf, Max, Min, Clip, Where, and the activations Relu, LeakyRelu, PRelu,
Tanh, Sigmoid, Gelu (erf and tanh forms), the fused SiLU. Integer tensors (shape
arithmetic) are computed with integer numpy."""

from __future__ import annotations

import numpy as np

from ..engine import is_float
from . import register


def _integers(*args) -> bool:
    return all(a is None or not is_float(a) for a in args)


def _binary(name: str, math_name: str, int_fn):
    @register(name, "elementwise", description=f"{name}, elementwise with broadcasting")
    def evaluate(ctx, args):
        a, b = args
        if _integers(a, b):
            return [int_fn(a, b)]
        return [getattr(ctx.math, math_name)(_float(ctx, a), _float(ctx, b))]

    return evaluate


def _float(ctx, t):
    """Integer operands of a float operation are lifted exactly (|v| < 2^53 assumed by ONNX casts)."""
    return ctx.lift(t.astype(np.float64)) if not is_float(t) else t


def _int_div(a, b):
    """Integer division truncating toward zero (C semantics, as ONNX)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    return np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))


_binary("Add", "add", np.add)
_binary("Sub", "sub", np.subtract)
_binary("Mul", "mul", np.multiply)
_binary("Div", "div", _int_div)
_binary("Pow", "pow", np.power)


def _unary(name: str, math_name: str, int_fn=None):
    @register(name, "elementwise", description=f"{name}, elementwise")
    def evaluate(ctx, args):
        (a,) = args[:1]
        if not is_float(a):
            if int_fn is None:
                a = _float(ctx, a)
            else:
                return [int_fn(a)]
        return [getattr(ctx.math, math_name)(a)]

    return evaluate


_unary("Neg", "neg", np.negative)
_unary("Sqrt", "sqrt")
_unary("Reciprocal", "reciprocal")
_unary("Exp", "exp")
_unary("Erf", "erf")
_unary("Abs", "abs", np.abs)


def _nary(name: str, math_name: str, int_fn):
    @register(name, "elementwise", description=f"{name}, elementwise over any number of inputs")
    def evaluate(ctx, args):
        if _integers(*args):
            out = args[0]
            for a in args[1:]:
                out = int_fn(out, a)
            return [out]
        out = _float(ctx, args[0])
        for a in args[1:]:
            out = getattr(ctx.math, math_name)(out, _float(ctx, a))
        return [out]

    return evaluate


_nary("Max", "maximum", np.maximum)
_nary("Min", "minimum", np.minimum)


@register("Clip", "elementwise")
def clip(ctx, args):
    """min(max(x, min), max), bounds from the optional inputs (or attributes, opset < 11)."""
    x, low, high = (args + [None, None])[:3]
    low = low if low is not None else ctx.attr("min")
    high = high if high is not None else ctx.attr("max")
    if _integers(x):
        return [np.clip(x, low, high)]
    low = None if low is None else _float(ctx, np.asarray(low) if np.isscalar(low) else low)
    high = None if high is None else _float(ctx, np.asarray(high) if np.isscalar(high) else high)
    return [ctx.math.clip(x, low, high)]


@register("Where", "elementwise")
def where(ctx, args):
    """condition ? a : b, elementwise with broadcasting."""
    cond, a, b = args
    cond = np.asarray(cond).astype(bool)
    if _integers(a, b):
        return [np.where(cond, a, b)]
    return [ctx.math.where(cond, _float(ctx, a), _float(ctx, b))]


def _activation(name: str, activation):
    @register(name, "activation", description=f"{name}, the activation {activation if isinstance(activation, str) else ''}")
    def evaluate(ctx, args):
        act = activation(ctx) if callable(activation) else activation
        return [ctx.math.activation(act, _float(ctx, args[0]))]

    return evaluate


_activation("Relu", "relu")
_activation("Tanh", "tanh")
_activation("Sigmoid", "sigmoid")
_activation("Silu", "silu")
_activation("Softplus", "softplus")
_activation("LeakyRelu", lambda ctx: f"leaky_relu:{float(ctx.attr('alpha', 0.01))!r}")
_activation("Elu", lambda ctx: f"elu:{float(ctx.attr('alpha', 1.0))!r}")
_activation("Gelu", lambda ctx: "gelu_tanh" if str(ctx.attr("approximate", "none")) == "tanh" else "gelu")


@register("PRelu", "activation")
def prelu(ctx, args):
    """x for x > 0, slope x otherwise (slope broadcast)."""
    x, slope = args
    m = ctx.math
    zero = ctx.lift(np.zeros(()))
    return [m.add(m.maximum(x, zero), m.mul(_float(ctx, slope), m.minimum(x, zero)))]
