"""Elementwise operators and activations, computed in float64 (rounded to the storage
format by the engine), numpy broadcasting: Add, Sub, Mul, Div, Neg, Pow, Sqrt,
Reciprocal, Exp, Erf, Abs, Max, Min, Clip, Where, Mod, Equal, and the activations Relu,
LeakyRelu, PRelu, Tanh, Sigmoid, Gelu (erf and tanh forms), the fused SiLU, Softplus, Elu
and ``Activation`` (any registered activation by its attribute ``name``):
``ACTIVATION_NAMES`` maps each activation node to its ``emulator.activations`` name.
Integer tensors (shape arithmetic, masks; booleans as 0/1) are computed with integer
numpy."""

from __future__ import annotations

import numpy as np

from ...errors import ModelFileError
from ..ir import is_float
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
    return [ctx.math.clip(x, _bound(ctx, low), _bound(ctx, high))]


def _bound(ctx, value):
    """A float Clip bound: an input (integers lifted exactly) or an attribute (a number,
    lifted as a constant of the arithmetic)."""
    if value is None:
        return None
    return ctx.lift(np.asarray(value, dtype=np.float64)) if np.isscalar(value) else _float(ctx, value)


def _float64_values(ctx, *tensors) -> list[np.ndarray]:
    """Operands whose result depends on their exact float values (comparisons, remainders):
    plain float64 arrays only, not enclosures."""
    for t in tensors:
        if not isinstance(t, np.ndarray):
            raise ModelFileError(f"node {ctx.node.name!r} ({ctx.node.op}): needs the exact float values of its "
                                 "operands; not supported in this arithmetic.")
    return [np.asarray(t) for t in tensors]


@register("Mod", "elementwise")
def mod(ctx, args):
    """Remainder: with ``fmod`` the sign of the dividend (C fmod), else of the divisor
    (integers only, as ONNX requires)."""
    a, b = _float64_values(ctx, *args)
    if int(ctx.attr("fmod", 0)):
        result = np.fmod(a, b)
    elif _integers(a, b):
        result = np.mod(a, b)
    else:
        raise ModelFileError(f"node {ctx.node.name!r} (Mod): float operands need fmod=1.")
    return [result if _integers(a, b) else ctx.lift(result)]


@register("Equal", "elementwise")
def equal(ctx, args):
    """a == b elementwise (a boolean tensor, held as 0/1 integers)."""
    a, b = _float64_values(ctx, *args)
    return [np.equal(a, b).astype(np.int64)]


@register("Where", "elementwise")
def where(ctx, args):
    """condition ? a : b, elementwise with broadcasting."""
    cond, a, b = args
    cond = np.asarray(cond).astype(bool)
    if _integers(a, b):
        return [np.where(cond, a, b)]
    return [ctx.math.where(cond, _float(ctx, a), _float(ctx, b))]


ACTIVATION_NAMES = {
    "Relu": lambda attr: "relu",
    "Tanh": lambda attr: "tanh",
    "Sigmoid": lambda attr: "sigmoid",
    "Silu": lambda attr: "silu",
    "Softplus": lambda attr: "softplus",
    "LeakyRelu": lambda attr: f"leaky_relu:{float(attr('alpha', 0.01))!r}",
    "Elu": lambda attr: f"elu:{float(attr('alpha', 1.0))!r}",
    "Gelu": lambda attr: "gelu_tanh" if str(attr("approximate", "none")) == "tanh" else "gelu",
    "Activation": lambda attr: str(attr("name")),
}
"""Operator type -> the ``emulator.activations`` name its node applies, read from the
node's attributes (``attr(key, default)``)."""


def activation_name(node) -> str:
    """The ``emulator.activations`` name an activation node applies (``leaky_relu:0.2``, ...)."""
    return ACTIVATION_NAMES[node.op](node.attr)


def _gelu_check(node) -> None:
    if str(node.attr("approximate", "none")) not in ("none", "tanh"):
        raise ModelFileError(f"node {node.name!r} (Gelu): approximate {node.attr('approximate')!r} is not none or tanh.")


_CHECKS = {"Gelu": _gelu_check}


def _activation(name: str):
    @register(name, "activation", description=f"{name}, elementwise: the activation ACTIVATION_NAMES gives its node",
              check=_CHECKS.get(name))
    def evaluate(ctx, args):
        return [ctx.math.activation(activation_name(ctx.node), _float(ctx, args[0]))]

    return evaluate


for _name in ACTIVATION_NAMES:
    _activation(_name)


@register("PRelu", "activation")
def prelu(ctx, args):
    """x for x > 0, slope x otherwise (slope broadcast)."""
    x, slope = args
    m = ctx.math
    zero = ctx.lift(np.zeros(()))
    return [m.add(m.maximum(x, zero), m.mul(_float(ctx, slope), m.minimum(x, zero)))]
