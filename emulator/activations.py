"""Activation functions as data: each row carries sigma and sigma' in float64 (numpy),
sigma at any precision (mpmath, under the caller's ``workprec``), its sympy expression,
the closed-form condition number kappa_sigma(y) = |y sigma'(y) / sigma(y)|, and the
points where sigma'' vanishes (so the largest |sigma'| on an interval is taken at its
ends or at those points), for bounded activations the closed interval ``image`` that
contains sigma(y) for every real y. The float64 forms are within 1e-12 relative (tested to |y| = 1e4:
no cancellation, no premature underflow). kappa_sigma(0) is its limit at 0 (1
where sigma(0) = 0 and sigma'(0) != 0), and 0 where sigma vanishes left of 0 (relu, the
alpha = 0 rows): the 0/0 = 0 of an exactly zero sigma and y sigma'. ``sympy:`` rows
evaluate their derived formulas as written (see :func:`activation_from_expr`).

Names: relu, leaky_relu[:alpha] (alpha = 0.01), identity, tanh, sigmoid, gelu (erf
form), gelu_tanh, silu, softplus, elu[:alpha] (alpha = 1), or ``sympy:EXPR`` — any
expression in ``y`` built from arithmetic and the functions in ``SYMPY_FUNCTIONS``; its
sigma', kappa_sigma and mpmath form then come from sympy by differentiation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import mpmath
import numpy as np
import sympy
from scipy import special

from .errors import FormatSpecError, UnknownNameError
from .registry import Registry

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "SYMPY_FUNCTIONS", "Y"]

Y = sympy.Symbol("y", real=True)
SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))
GELU_TANH_A = 0.044715
INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))


@dataclass(frozen=True)
class Activation:
    """sigma and what the analysis needs of it. ``f``, ``df`` and ``kappa`` act
    elementwise on float64 arrays; ``mp`` on one mpmath number at the current precision."""

    name: str
    expr: sympy.Expr
    f: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    df: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    kappa: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    mp: Callable[[mpmath.mpf], mpmath.mpf] = field(repr=False)
    critical_points: tuple[float, ...] | None = ()
    image: tuple[float, float] | None = None

    def __call__(self, y):
        return self.f(np.asarray(y, dtype=np.float64))


def _sigmoid_pair(v):
    """(sigmoid(v), sigmoid(-v)) from e = exp(-|v|): 1/(1 + e) and e/(1 + e), each within a
    few ulps, never 0 before the true value underflows (unlike 1/(1 + exp(-v)))."""
    e = np.exp(-np.abs(v))
    big, small = 1.0 / (1.0 + e), e / (1.0 + e)
    pos = v >= 0
    return np.where(pos, big, small), np.where(pos, small, big)


def _sig(y):
    return _sigmoid_pair(y)[0]


def _sigmoid_df(y):
    s, r = _sigmoid_pair(y)
    return s * r


def _sigmoid_kappa(y):
    return np.abs(y) * _sigmoid_pair(y)[1]


def _where(cond, a, b):
    with np.errstate(all="ignore"):
        return np.where(cond, a, b)


def _relu_row() -> Activation:
    return Activation(
        "relu", sympy.Piecewise((Y, Y > 0), (0, True)),
        f=lambda y: np.maximum(y, 0.0) + 0.0 * y,
        df=lambda y: (y > 0).astype(np.float64),
        kappa=lambda y: (y > 0).astype(np.float64),
        mp=lambda y: y if y > 0 else mpmath.mpf(0),
        critical_points=(),
    )


def _leaky_row(alpha: float, name: str) -> Activation:
    """kappa_sigma = 1 (its limit at 0 too) unless alpha = 0, where sigma vanishes for y <= 0."""
    a = float(alpha)
    return Activation(
        name, sympy.Piecewise((Y, Y > 0), (sympy.Float(a) * Y, True)),
        f=lambda y: np.where(y > 0, y, a * y),
        df=lambda y: np.where(y > 0, 1.0, a),
        kappa=lambda y: np.ones_like(y) if a != 0 else (y > 0).astype(np.float64),
        mp=lambda y: y if y > 0 else mpmath.mpf(a) * y,
    )


def _elu_row(alpha: float, name: str) -> Activation:
    """kappa_sigma = |y e^y / expm1(y)| for y < 0 (alpha cancels; its limit 1 at 0), 0 there
    when alpha = 0."""
    a = float(alpha)

    def kappa(y):
        with np.errstate(all="ignore"):
            neg = np.abs(y * np.exp(y) / np.expm1(y))
        return _where(y > 0, 1.0, _where(y == 0, 1.0, neg)) if a != 0 else (y > 0).astype(np.float64)

    return Activation(
        name, sympy.Piecewise((Y, Y > 0), (sympy.Float(a) * (sympy.exp(Y) - 1), True)),
        f=lambda y: _where(y > 0, y, a * np.expm1(np.minimum(y, 0.0))),
        df=lambda y: _where(y > 0, 1.0, a * np.exp(np.minimum(y, 0.0))),
        kappa=kappa,
        mp=lambda y: y if y > 0 else mpmath.mpf(a) * mpmath.expm1(y),
    )


def _tanh_df(y):
    # sech^2 y = 4 e / (1 + e)^2, e = exp(-2|y|): no cancellation of 1 - tanh^2 for |y| >> 1
    e = np.exp(-2.0 * np.abs(y))
    return 4.0 * e / (1.0 + e) ** 2


def _tanh_kappa(y):
    # t / sinh t = 2 t e^-t / (1 - e^-2t), t = 2|y|: finite where sinh t overflows
    t = 2.0 * np.abs(y)
    with np.errstate(all="ignore"):
        k = 2.0 * t * np.exp(-t) / -np.expm1(-2.0 * t)
    return _where(t == 0, 1.0, _where(np.exp(-t) == 0, 0.0, k))


def _half_gauss(y):
    """exp(-y^2/2) with y^2 = p + e split exactly (Dekker), as exp(-p/2) (1 - e/2): the
    rounding of y^2 (up to 2^-53 y^2, i.e. 2^-42 relative at |y| = 38) does not reach the
    result. |y| > 64 gives 0, the true value underflowing."""
    y = np.clip(y, -64.0, 64.0)
    c = 134217729.0 * y
    hi = c - (c - y)
    lo = y - hi
    p = y * y
    e = ((hi * hi - p) + 2.0 * hi * lo) + lo * lo
    return np.exp(-0.5 * p) * (1.0 - 0.5 * e)


def _gelu_tail(y):
    """(E, H) with Phi(-|y|) = H E, E = exp(-y^2/2), H = erfcx(|y|/sqrt2)/2: for y < 0 the
    small factor E is applied last, so nothing underflows early, and erfc's sensitivity to
    the rounding of y/sqrt2 (2 y^2 u relative) is avoided (erfcx's is below u)."""
    return _half_gauss(y), 0.5 * special.erfcx(np.abs(y) * np.sqrt(0.5))


def _gelu_f(y):
    E, H = _gelu_tail(y)
    return np.where(y < 0, (y * H) * E, y * (1.0 - H * E))


def _gelu_df(y):
    # Phi(y) + y phi(y), phi = E / sqrt(2 pi)
    E, H = _gelu_tail(y)
    return np.where(y < 0, (H + y * INV_SQRT_2PI) * E, (1.0 - H * E) + y * INV_SQRT_2PI * E)


def _gelu_kappa(y):
    # y sigma'/sigma = 1 + y phi(y) / Phi(y); phi/Phi = sqrt(2/pi) / erfcx(-y/sqrt2) (stable for y << 0)
    return np.abs(1.0 + y * SQRT_2_OVER_PI / special.erfcx(-y / np.sqrt(2.0)))


def _gelu_tanh_arg(y):
    """v = 2t and dv/dy, t = sqrt(2/pi) (y + a y^3): gelu_tanh(y) = y sigmoid(v)."""
    with np.errstate(over="ignore"):
        return 2.0 * SQRT_2_OVER_PI * (y + GELU_TANH_A * y**3), 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_A * y**2)


def _gelu_tanh_f(y):
    # y (1 + tanh t) / 2 = y sigmoid(2 t): no cancellation of 1 + tanh t for t << 0
    return y * _sig(_gelu_tanh_arg(y)[0])


def _gelu_tanh_df(y):
    # sigmoid(v) + y sigmoid(v) sigmoid(-v) v': no cancellation of 1 + tanh t nor 1 - tanh^2 t;
    # the second term is 0 where sigmoid(v) sigmoid(-v) underflows (|y| > 30, before v' overflows)
    v, dv = _gelu_tanh_arg(y)
    s, r = _sigmoid_pair(v)
    g = s * r
    with np.errstate(all="ignore"):
        return s + _where(g == 0, 0.0, y * g * dv)


def _gelu_tanh_kappa(y):
    # |1 + y sigmoid(-v) v'|, 1 where sigmoid(-v) underflows (y >> 0, before v' overflows)
    v, dv = _gelu_tanh_arg(y)
    r = _sigmoid_pair(v)[1]
    with np.errstate(all="ignore"):
        return _where(r == 0, 1.0, np.abs(1.0 + y * r * dv))


def _softplus_kappa(y):
    # y sigmoid(y) / log1p(e^y); for y < 0 with e = e^y: |y| q(e) / (1 + e), q(e) = e / log1p(e)
    # (q(0) = 1), finite where e underflows and kappa -> |y|
    e = np.exp(np.minimum(y, 0.0))
    with np.errstate(all="ignore"):
        q = _where(e == 0, 1.0, e / np.log1p(e))
        pos = y * _sig(y) / np.logaddexp(0.0, y)
    return _where(y < 0, -y * q / (1.0 + e), pos)


def _silu_df(y):
    s, r = _sigmoid_pair(y)
    return s * (1.0 + y * r)


def _silu_kappa(y):
    return np.abs(1.0 + y * _sigmoid_pair(y)[1])


def _mp_gelu_tanh(y):
    # y/2 (1 + tanh t) = y / (1 + exp(-2t)): the same function without the cancellation
    # of 1 + tanh t for t << 0; a = 0.044715 exactly (the decimal of the sympy form).
    t = mpmath.sqrt(2 / mpmath.pi) * (y + mpmath.mpf(44715) / 10**6 * y**3)
    return y / (1 + mpmath.exp(-2 * t))


# Zeros of sigma'' (each float within an ulp of the true zero; the tests prove that they
# are all the zeros, by interval arithmetic and the tail arguments below):
# tanh'' = -2 tanh sech^2 and sigmoid'' = s(1 - s)(1 - 2s) vanish at 0 only;
# gelu'' = phi(y)(2 - y^2) at ±sqrt2;
# silu'' = s(1 - s)(2 - y tanh(y/2)), y tanh(y/2) even and increasing in |y|: ±2.3993572805154676;
# gelu_tanh'' = s(v) s(-v) 4c (1 + 6a y^2)(1 - c h(y)), v = 2t, c = sqrt(2/pi),
# h(y) = y tanh(t) (1 + 9 a^2 y^4 / (1 + 6a y^2)) even and increasing in |y| from 0:
# ±1.4185040087908283 (where sigma' = 1.1289930686587718, its largest value).
_GELU_CRIT = (-float(np.sqrt(2.0)), float(np.sqrt(2.0)))
_SILU_CRIT = (-2.3993572805154676, 2.3993572805154676)
_GELU_TANH_CRIT = (-1.4185040087908283, 1.4185040087908283)

ACTIVATIONS: Registry[Activation] = Registry("activation")
for _row in (
    _relu_row(),
    _leaky_row(0.01, "leaky_relu"),
    Activation("identity", Y, f=lambda y: y + 0.0, df=np.ones_like, kappa=np.ones_like, mp=lambda y: y),
    Activation("tanh", sympy.tanh(Y), f=np.tanh, df=_tanh_df, kappa=_tanh_kappa,
               mp=mpmath.tanh, critical_points=(0.0,), image=(-1.0, 1.0)),
    Activation("sigmoid", 1 / (1 + sympy.exp(-Y)), f=_sig, df=_sigmoid_df, kappa=_sigmoid_kappa,
               mp=lambda y: 1 / (1 + mpmath.exp(-y)), critical_points=(0.0,), image=(0.0, 1.0)),
    Activation("gelu", Y / 2 * (1 + sympy.erf(Y / sympy.sqrt(2))), f=_gelu_f, df=_gelu_df, kappa=_gelu_kappa,
               mp=lambda y: y / 2 * mpmath.erfc(-y / mpmath.sqrt(2)), critical_points=_GELU_CRIT),
    Activation("gelu_tanh",
               Y / 2 * (1 + sympy.tanh(sympy.sqrt(2 / sympy.pi) * (Y + sympy.Rational(44715, 1000000) * Y**3))),
               f=_gelu_tanh_f, df=_gelu_tanh_df, kappa=_gelu_tanh_kappa,
               mp=_mp_gelu_tanh, critical_points=_GELU_TANH_CRIT),
    Activation("silu", Y / (1 + sympy.exp(-Y)), f=lambda y: y * _sig(y), df=_silu_df, kappa=_silu_kappa,
               mp=lambda y: y / (1 + mpmath.exp(-y)), critical_points=_SILU_CRIT),
    Activation("softplus", sympy.log(1 + sympy.exp(Y)), f=lambda y: np.logaddexp(0.0, y), df=_sig,
               kappa=_softplus_kappa, mp=lambda y: mpmath.log1p(mpmath.exp(y))),
    _elu_row(1.0, "elu"),
):
    ACTIVATIONS.add(_row.name, _row)

_PARAMETRIC = {"leaky_relu": _leaky_row, "elu": _elu_row}

SYMPY_FUNCTIONS = ("exp", "log", "sqrt", "tanh", "sinh", "cosh", "atan", "erf", "erfc", "sin", "cos", "Abs", "pi", "E")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_ALLOWED_CHARS = re.compile(r"^[A-Za-z_0-9+\-*/().\s]*$")


def _from_sympy(text: str, name: str) -> Activation:
    """An activation from an expression in ``y``, checked against an allowlist before
    sympy sees it (sympy parsing evaluates Python)."""
    if not _ALLOWED_CHARS.match(text) or "__" in text:
        raise FormatSpecError(f"Activation {name!r}: only arithmetic, parentheses, numbers, y and {', '.join(SYMPY_FUNCTIONS)} are allowed.")
    for ident in _IDENT.findall(text):
        if ident != "y" and ident not in SYMPY_FUNCTIONS:
            raise FormatSpecError(f"Activation {name!r}: unknown name {ident!r}; allowed: y, {', '.join(SYMPY_FUNCTIONS)}.")
    local = {fn: getattr(sympy, fn) for fn in SYMPY_FUNCTIONS}
    local["y"] = Y
    try:
        expr = sympy.sympify(text, locals=local)
    except (sympy.SympifyError, SyntaxError, TypeError) as exc:
        raise FormatSpecError(f"Activation {name!r} is not a valid expression: {exc}") from None
    if not isinstance(expr, sympy.Expr) or expr.free_symbols - {Y}:
        raise FormatSpecError(f"Activation {name!r} must be an expression in y only.")
    return activation_from_expr(expr, name)


def activation_from_expr(expr: sympy.Expr, name: str | None = None) -> Activation:
    """An activation from a sympy expression in ``Y``: sigma' = d sigma / dy and
    kappa_sigma = |y sigma' / sigma| by symbolic differentiation, evaluated as written in
    float64 (0/0 = 0)."""
    d = sympy.diff(expr, Y)
    f_np = sympy.lambdify(Y, expr, modules=["scipy", "numpy"])
    df_np = sympy.lambdify(Y, d, modules=["scipy", "numpy"])
    ratio = sympy.lambdify(Y, Y * d / expr, modules=["scipy", "numpy"])
    f_mp = sympy.lambdify(Y, expr, modules="mpmath")

    def broadcast(fn):
        return lambda y: np.broadcast_to(np.asarray(fn(y), dtype=np.float64), np.shape(y)).copy()

    def kappa(y):
        with np.errstate(all="ignore"):
            k = np.abs(broadcast(ratio)(y))
        return np.where(np.isnan(k), 0.0, k)

    with np.errstate(all="ignore"):
        return Activation(name or f"sympy:{expr}", expr, f=broadcast(f_np), df=broadcast(df_np), kappa=kappa,
                          mp=lambda y: mpmath.mpf(f_mp(y)), critical_points=None)


@lru_cache(maxsize=256)
def _parse(name: str) -> Activation:
    if name.startswith("sympy:"):
        return _from_sympy(name[len("sympy:"):], name)
    base, _, arg = name.partition(":")
    if arg and base in _PARAMETRIC:
        try:
            alpha = float(arg)
        except ValueError:
            raise FormatSpecError(f"Activation {name!r}: alpha {arg!r} is not a number.") from None
        if not np.isfinite(alpha):
            raise FormatSpecError(f"Activation {name!r}: alpha must be finite.")
        return _PARAMETRIC[base](alpha, name)
    return ACTIVATIONS.get(name, extra_possible=("leaky_relu:ALPHA", "elu:ALPHA", "sympy:EXPR"))


def get_activation(spec: "str | Activation | sympy.Expr") -> Activation:
    """The activation ``spec``: a registered name, ``leaky_relu:ALPHA``, ``elu:ALPHA``,
    ``sympy:EXPR``, a sympy expression in ``emulator.activations.Y``, or a row."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, sympy.Expr):
        return activation_from_expr(spec)
    if not isinstance(spec, str):
        raise UnknownNameError("activation", spec, [*ACTIVATIONS.names(), "leaky_relu:ALPHA", "elu:ALPHA", "sympy:EXPR"])
    return _parse(spec.strip())

