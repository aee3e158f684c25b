"""Float64 facts about enclosures (``emulator.graph.ball.Ball``: the exact value within
``rad`` of ``hi + lo``), rounded so that they stay true: the distance of a computed value
to every point of a ball, a ball's ends, and the ball of an interval
(docs/method.md#bounds-through-a-graph)."""

from __future__ import annotations

import numpy as np

from emulator.graph.ball import Ball

from .upward import next_down, next_up, up_add

__all__ = ["distance", "ends", "interval_ball"]


def distance(computed: np.ndarray, ball: Ball) -> np.ndarray:
    """An upper bound on |computed - x| for every x in ``ball``: |computed - hi| + |lo| +
    rad, rounded up; 0 exactly where the ball is the computed value (an exact infinity
    included), inf where anything else is not finite."""
    computed = np.asarray(computed, dtype=np.float64)
    hi, lo, rad = ball.parts()
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.where(computed == hi, 0.0, next_up(np.abs(computed - hi)))
    same = (d == 0) & (lo == 0) & (rad == 0)
    return np.where(same, 0.0, up_add(up_add(d, np.abs(lo)), rad))


def ends(ball: Ball) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float64 ends with low <= x <= high for every x in ``ball``:
    hi -+ (|lo| + rad), each rounded outward (the centre itself where the ball is one
    float64, or an infinity with a finite radius); (-inf, inf) where a part is not known
    (NaN, an infinite radius)."""
    hi, lo, rad = ball.parts()
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.where((lo == 0) & (rad == 0), 0.0, up_add(np.abs(lo), rad))
        point = (r == 0) | (np.isinf(hi) & np.isfinite(r))
        low = np.where(point, hi, next_down(hi - r))
        high = np.where(point, hi, next_up(hi + r))
    return np.where(np.isnan(low), -np.inf, low), np.where(np.isnan(high), np.inf, high)


def interval_ball(low, high) -> Ball:
    """A ball holding [low, high] (low <= high, float64): centre low/2 + high/2, radius the
    larger distance to an end, rounded up; the point itself (radius 0) where low == high,
    an infinity included; radius inf when an end is not finite."""
    low, high = np.broadcast_arrays(np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64))
    point = low == high
    finite = np.isfinite(low) & np.isfinite(high)
    with np.errstate(invalid="ignore", over="ignore"):
        mid = np.where(finite, 0.5 * low + 0.5 * high, np.where(np.isfinite(low), low, np.where(np.isfinite(high),
                                                                                              high, 0.0)))
        rad = np.maximum(next_up(high - mid), next_up(mid - low))
    rad = np.where(finite & ~np.isnan(rad), rad, np.inf)
    return Ball(np.where(point, low, mid), None, np.where(point, 0.0, rad))
