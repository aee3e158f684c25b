"""The certificate of one prediction (docs/method.md#certified-predictions): from computed
logits ẑ and bounds Δ >= |ẑ - z| on their distance to the exact logits z, whether the
predicted class provably is the exact one.

* several logits, top = argmax ẑ: certified when ẑ_top - Δ_top > ẑ_j + Δ_j for every
  j != top. Then z_top >= ẑ_top - Δ_top > ẑ_j + Δ_j >= z_j: the exact class is top, and
  top is the emulated class;
* one logit (class 1 iff logit > 0): certified when |ẑ| > Δ (then z has the sign of ẑ).

Rigour: the gap ẑ_top - ẑ_j is bounded below by -up(ẑ_j - ẑ_top) and Δ_top + Δ_j above
by up(Δ_top + Δ_j) (``analysis.upward``). A row with a non-finite logit or bound is not
certified. Per sample the *critical* competitor is the j with the smallest gap - bound;
``margin`` and ``bound`` are its gap and pair bound, so that certified == margin > bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.errors import ShapeError
from emulator.metrics import predicted_class

from .upward import up_add

__all__ = ["Certificates", "certificates"]


@dataclass(frozen=True)
class Certificates:
    """Per sample: ``certified``, ``margin`` (a lower bound on ẑ_top - ẑ_j, or |ẑ| for one
    logit), ``bound`` (an upper bound on Δ_top + Δ_j, or Δ), ``competitor`` (the critical
    j; -1 for one logit or no class) and ``predicted`` (the computed class, -1 for NaN)."""

    certified: np.ndarray
    margin: np.ndarray
    bound: np.ndarray
    competitor: np.ndarray
    predicted: np.ndarray


def certificates(logits, radius) -> Certificates:
    """The certificates of the rows of ``logits`` (N, m) with bounds ``radius`` (N, m) on
    |ẑ - z| (see the module docstring)."""
    z = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    r = np.atleast_2d(np.asarray(radius, dtype=np.float64))
    if z.shape != r.shape:
        raise ShapeError(f"logits of shape {z.shape} but bounds of shape {r.shape}.")
    rows = np.arange(z.shape[0])
    finite = np.all(np.isfinite(z), axis=1) & np.all(np.isfinite(r), axis=1)
    top = predicted_class(z)
    if z.shape[1] == 1:
        margin, bound = np.abs(z[:, 0]), r[:, 0]
        competitor = np.full(z.shape[0], -1, dtype=np.int64)
    else:
        safe_top = np.maximum(top, 0)
        with np.errstate(invalid="ignore", over="ignore"):
            gap = -up_add(z, -z[rows, safe_top][:, None])
            pair = up_add(r, r[rows, safe_top][:, None])
            slack = np.where(np.isnan(gap - pair), -np.inf, gap - pair)
        slack[rows, safe_top] = np.inf
        competitor = np.argmin(slack, axis=1).astype(np.int64)
        margin, bound = gap[rows, competitor], pair[rows, competitor]
        competitor = np.where(top < 0, -1, competitor)
    with np.errstate(invalid="ignore"):
        certified = finite & (top >= 0) & (margin > bound)
    return Certificates(certified, margin, bound, competitor, top)
