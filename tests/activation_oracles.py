"""Closed-form mpmath oracles of the registered activations: sigma and sigma' from their
textbook definitions (no cancellation, no underflow: mpmath's exponent range is
unbounded), kappa_sigma from them. Shared by test_activations and test_conditioning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mpmath

BITS = 256


def sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def _gelu_tanh_arg(y):
    """2t(y) and its derivative, t = sqrt(2/pi) (y + 0.044715 y^3)."""
    c = mpmath.sqrt(2 / mpmath.pi)
    a = mpmath.mpf(44715) / 10**6
    return 2 * c * (y + a * y**3), 2 * c * (1 + 3 * a * y**2)


def gelu_tanh_df(y):
    v, dv = _gelu_tanh_arg(y)
    return sigmoid(v) + y * sigmoid(v) * sigmoid(-v) * dv


@dataclass(frozen=True)
class Oracle:
    """sigma and sigma' in mpmath; ``kappa0`` is kappa_sigma at y = 0 (its limit there, or
    0 where sigma vanishes on a side of 0 and the limit does not exist)."""

    f: Callable
    df: Callable
    kappa0: float
    df_zeros: tuple[float, ...] = ()


def _leaky(a):
    return Oracle(lambda y: y if y > 0 else a * y, lambda y: mpmath.mpf(1) if y > 0 else mpmath.mpf(a),
                  1.0 if a != 0 else 0.0)


def _elu(a):
    return Oracle(lambda y: y if y > 0 else a * mpmath.expm1(y),
                  lambda y: mpmath.mpf(1) if y > 0 else a * mpmath.exp(y),
                  1.0 if a != 0 else 0.0)


ORACLES = {
    "relu": _leaky(0.0),
    "leaky_relu": _leaky(0.01),
    "leaky_relu:0.2": _leaky(0.2),
    "leaky_relu:-0.5": _leaky(-0.5),
    "leaky_relu:0": _leaky(0.0),
    "identity": Oracle(lambda y: y, lambda y: mpmath.mpf(1), 1.0),
    "tanh": Oracle(mpmath.tanh, lambda y: mpmath.sech(y) ** 2, 1.0),
    "sigmoid": Oracle(sigmoid, lambda y: sigmoid(y) * sigmoid(-y), 0.0),
    "gelu": Oracle(lambda y: y / 2 * mpmath.erfc(-y / mpmath.sqrt(2)),
                   lambda y: mpmath.erfc(-y / mpmath.sqrt(2)) / 2 + y * mpmath.npdf(y), 1.0, (-0.7517915247,)),
    "gelu_tanh": Oracle(lambda y: y * sigmoid(_gelu_tanh_arg(y)[0]), gelu_tanh_df, 1.0, (-0.7524614221,)),
    "silu": Oracle(lambda y: y * sigmoid(y), lambda y: sigmoid(y) * (1 + y * sigmoid(-y)), 1.0, (-1.2784645428,)),
    "softplus": Oracle(lambda y: mpmath.log1p(mpmath.exp(y)), sigmoid, 0.0),
    "elu": _elu(1.0),
    "elu:0.5": _elu(0.5),
    "elu:-1.5": _elu(-1.5),
    "elu:0": _elu(0.0),
}


def oracle_values(name: str, y: float) -> tuple:
    """(sigma, sigma', kappa_sigma) at the float y, at BITS bits."""
    o = ORACLES[name]
    with mpmath.workprec(BITS):
        t = mpmath.mpf(y)
        f, d = o.f(t), o.df(t)
        k = mpmath.mpf(o.kappa0) if t == 0 else (mpmath.mpf(0) if f == 0 else abs(t * d / f))
    return f, d, k
