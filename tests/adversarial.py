"""Inputs built to drive rounding errors toward their bounds."""

from __future__ import annotations

import numpy as np

from emulator.accumulation import Accumulation, parse_accumulation


def stagnation(acc: "str | Accumulation", n: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, W) with W = ones((1, n)) whose sum loses nearly u = 2^-p of the running sum at
    every rounding to nearest: a leading 1 and terms just below half an ulp of 1, laid out
    for the model's tree (one nonzero leaf per right subtree along the leftmost path) or
    blocks (K products of a fused group summing to just below u)."""
    a = parse_accumulation(acc)
    tiny = a.fmt.u * (1 - 2.0**-6)
    x = np.zeros(n)
    x[0] = 1.0
    if a.order == "pairwise":
        k = 1
        while k < n:
            x[k] = tiny
            k *= 2
    elif a.order == "fused":
        x[1:] = tiny / a.block
        x[1:a.block] = tiny / (a.block - 1)
    else:
        x[1:] = tiny
    return x, np.ones((1, n))
