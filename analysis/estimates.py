"""Estimates of a_i = |b_i| + sum_j |w_ij| |x̂_j|, the numerator of kappa_i, for the recompute
policy's criteria (docs/method.md#estimates-of-the-magnitude).

``low-pass``: acc_L(|W||x̂| + |b|), one more low-precision inner product per component
(O(mn) per sample). The certified ones are rigorous upper bounds at O(m + n) (Hölder) or
O(m n / B) (blocked) per sample, evaluated in float64 with upward rounding and held in
fp32 rounded up (:func:`float32_up`), as an fp32 unit rounding upward would hold them:

``holder``      a_i <= |b_i| + min(||w_i||_1 ||x̂||_inf, ||w_i||_2 ||x̂||_2, ||w_i||_inf ||x̂||_1);
``blocked:B``   a_i <= |b_i| + sum_k ||w_i,k||_1 ||x̂_k||_inf over blocks k of B columns.

The weight norms depend on the weights only (computed once per layer, not charged; where
the second operand is an activation, on a graph, they are charged: holder m (3n + 1),
blocked m n per product). The
work charged per sample (``steps``, each one fp32 operation of cost c(fp32)):
holder 3n + 1 (the three norms of x̂ and a square root) + 6m (three products, two
minima, the bias); blocked n (the block maxima) + m (ceil(n / B) + 1) (one multiply-add
per block, the bias).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

from emulator.errors import MixaccError

from .upward import next_up, up_add, up_mul, upper_abs_matmul, upper_sum

__all__ = ["EstimateError", "Estimate", "LOW_PASS", "HOLDER", "ESTIMATE_FORMAT", "blocked", "get_estimate",
           "holder_bound", "blocked_bound", "float32_up", "estimate_names"]

ESTIMATE_FORMAT = "fp32"


class EstimateError(MixaccError):
    """An estimate asked for with parameters that do not make sense."""


def float32_up(v) -> np.ndarray:
    """The smallest float32 >= v elementwise (as float64; inf beyond float32's range, NaN to inf)."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        f = v.astype(np.float32)
        f = np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)
    out = f.astype(np.float64)
    return np.where(np.isnan(out), np.inf, out)


def _sqrt_up(v: np.ndarray) -> np.ndarray:
    """A float64 >= sqrt(v), v >= 0 (the correctly rounded square root, one step up)."""
    return next_up(np.sqrt(v))


def _norms(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper bounds on the 1-, 2- and inf-norms of the rows of a ((k, n) -> three (k,))."""
    mag = np.abs(a)
    one = upper_sum(mag)[:, 0]
    two = _sqrt_up(upper_sum(up_mul(mag, mag))[:, 0])
    inf = mag.max(axis=1) if mag.shape[1] else np.zeros(mag.shape[0])
    return one, two, inf


def _bias(bias, m: int) -> np.ndarray:
    return np.zeros(m) if bias is None else np.abs(np.asarray(bias, dtype=np.float64))


def holder_bound(x, W, bias=None) -> np.ndarray:
    """|b_i| + min over the Hölder pairs (1, inf), (2, 2), (inf, 1) of ||w_i||_p ||x̂||_q,
    every step rounded up, held in fp32 rounded up: (N, n), (m, n) -> (N, m) >= a."""
    x, W = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.asarray(W, dtype=np.float64)
    w1, w2, winf = (float32_up(v)[None, :] for v in _norms(W))
    x1, x2, xinf = (float32_up(v)[:, None] for v in _norms(x))
    t = np.minimum(np.minimum(up_mul(w1, xinf), up_mul(w2, x2)), up_mul(winf, x1))
    return float32_up(up_add(float32_up(_bias(bias, W.shape[0]))[None, :], float32_up(t)))


def _blocks(a: np.ndarray, size: int) -> np.ndarray:
    """|a| (k, n) as (k, ceil(n / size), size), padded with zeros."""
    k, n = a.shape
    pad = -n % size
    return np.abs(np.concatenate([a, np.zeros((k, pad))], axis=1)).reshape(k, -1, size)


def blocked_bound(x, W, bias=None, size: int = 16) -> np.ndarray:
    """|b_i| + sum_k ||w_i,k||_1 ||x̂_k||_inf over blocks of ``size`` columns, rounded up,
    held in fp32 rounded up: (N, n), (m, n) -> (N, m) >= a."""
    x, W = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.asarray(W, dtype=np.float64)
    wb = _blocks(W, size)
    w1 = float32_up(upper_sum(wb)[..., 0])
    xinf = float32_up(_blocks(x, size).max(axis=2))
    t = float32_up(upper_abs_matmul(xinf, w1))
    return float32_up(up_add(float32_up(_bias(bias, W.shape[0]))[None, :], t))


@dataclass(frozen=True)
class Estimate:
    """How a criterion estimates a_i: ``low_passes`` more low-precision inner products
    per component, or a certified ``bound(x, W, bias)`` costing ``steps(n, m)`` fp32
    operations per sample, plus ``weight_steps(n, m)`` for the norms of W where W is not
    known in advance (an activation x activation product on a graph)."""

    name: str
    description: str
    low_passes: int = 0
    bound: "Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray] | None" = field(default=None,
                                                                                            repr=False)
    steps: Callable[[int, int], int] = field(default=lambda n, m: 0, repr=False)
    weight_steps: Callable[[int, int], int] = field(default=lambda n, m: 0, repr=False)

    @property
    def certified(self) -> bool:
        return self.bound is not None


LOW_PASS = Estimate("low-pass", "acc_L(|W||x̂| + |b|): one more low-precision inner product per component",
                    low_passes=1)
HOLDER = Estimate("holder", "|b_i| + min(||w_i||_1 ||x̂||_inf, ||w_i||_2 ||x̂||_2, ||w_i||_inf ||x̂||_1), rounded up",
                  bound=holder_bound, steps=lambda n, m: 3 * n + 1 + 6 * m, weight_steps=lambda n, m: m * (3 * n + 1))


@lru_cache(maxsize=None)
def blocked(size: int) -> Estimate:
    """The blocked bound over blocks of ``size`` columns."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise EstimateError(f"block size == {size!r}, must be an integer >= 1.")
    return Estimate(f"blocked:{size}",
                    f"|b_i| + sum over blocks of {size} columns of ||w_i,k||_1 ||x̂_k||_inf, rounded up",
                    bound=lambda x, W, b: blocked_bound(x, W, b, size),
                    steps=lambda n, m: n + m * (-(-n // size) + 1), weight_steps=lambda n, m: m * n)


_BLOCKED = re.compile(r"blocked(?::(\S+))?$")
DEFAULT_BLOCK = 16


def get_estimate(name: str) -> Estimate:
    """``low-pass``, ``holder``, ``blocked`` (B = 16) or ``blocked:B``."""
    rows = {LOW_PASS.name: LOW_PASS, HOLDER.name: HOLDER}
    if name in rows:
        return rows[name]
    match = _BLOCKED.match(name) if isinstance(name, str) else None
    if match is None:
        raise EstimateError(f"estimate {name!r}: must be one of {', '.join(estimate_names())}.")
    text = match.group(1)
    if text is None:
        return blocked(DEFAULT_BLOCK)
    if not text.isdigit() or int(text) < 1:
        raise EstimateError(f"estimate {name!r}: the block size must be an integer >= 1.")
    return blocked(int(text))


def estimate_names() -> list[str]:
    return [LOW_PASS.name, HOLDER.name, "blocked", "blocked:B"]
