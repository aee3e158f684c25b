"""The sizing of :mod:`analysis.sizing` checked by emulation (docs/method.md#accumulator-sizing):
the network run on data with every layer accumulated in its chosen format, each layer's
computed input inside its box, its local errors (against RN of the exact sum at the same
computed input, within half an ulp of it) within the rigorous bound and the target, no overflow; the same layer
with each format of one bit less (what happens, for the record); per channel the
channel's own format; and the integer accumulators against exact integer sums, wrapping
and saturating, on the data's quantised inputs (no overflow, both equal to the exact sum)
and on each channel's worst input with one bit less (overflow, both differ from it).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from emulator.integer_accumulation import INTEGER_OVERFLOW, integer_linear
from emulator.linear import linear
from emulator.network import Network
from emulator.reference import exact_linear

from .bounds import local_bound
from .sizing import IntegerSizing, LayerSizing
from .summaries import certain_lower

__all__ = ["float_check", "integer_check", "check_sizing"]


def float_check(layer, x_hat: np.ndarray, spec: str, allowed: np.ndarray, rows=None) -> dict:
    """One format on a layer at computed inputs ``x_hat``: overflows, certain violations of
    the local bound and of the target, and the largest error (components ``rows``)."""
    w = layer.weight if rows is None else layer.weight[rows]
    b = layer.bias if rows is None or layer.bias is None else layer.bias[rows]
    a = allowed if rows is None else allowed[rows]
    y, overflow = linear(x_hat, w, b, spec, return_overflow=True)
    pre = exact_linear(x_hat, w, b)
    measured = certain_lower(y, pre, 0.5 * np.spacing(np.abs(pre)))
    bound = local_bound(x_hat, w, b, spec)
    with np.errstate(invalid="ignore"):
        error = np.where(y == pre, 0.0, np.abs(y - pre))
    return {"spec": spec, "overflows": int(np.count_nonzero(overflow)),
            "violations": int(np.count_nonzero(measured > bound)),
            "above_target": int(np.count_nonzero(measured > a)),
            "max_error": float(np.max(np.nan_to_num(error, nan=np.inf), initial=0.0))}


def _in_box(sizing: LayerSizing, x_hat: np.ndarray) -> int:
    """Computed inputs outside the layer's box."""
    return int(np.count_nonzero((x_hat < sizing.box.lo) | (x_hat > sizing.box.hi)))


def integer_check(integer: IntegerSizing, x_hat: np.ndarray) -> dict:
    """Per channel at its own width: data sums that overflow or differ from the exact sum
    (wrapping, saturating); with one bit less (widths above 2), channels whose worst
    input still fits."""
    x_q = integer.quantise(x_hat)
    exact = x_q @ integer.w_q.T + (0 if integer.b_q is None else integer.b_q)
    out: dict = {"inputs_above_range": int(np.count_nonzero(np.abs(x_q) > integer.x_max))}
    for mode in INTEGER_OVERFLOW:
        overflows = mismatches = fits = 0
        for bits, rows in _groups(integer.bits).items():
            b = None if integer.b_q is None else integer.b_q[rows]
            y, ovf = integer_linear(x_q, integer.w_q[rows], b, bits, mode)
            overflows += int(np.count_nonzero(ovf))
            mismatches += int(np.count_nonzero(y != exact[:, rows]))
            for i in rows if bits > 2 else ():
                bi = None if integer.b_q is None else integer.b_q[i:i + 1]
                y1, ovf1 = integer_linear(integer.adversarial(i)[None], integer.w_q[i:i + 1], bi, bits - 1, mode)
                worst = int(integer.reach[i]) * (1 if integer.b_q is None or integer.b_q[i] >= 0 else -1)
                fits += int(not ovf1[0, 0] and y1[0, 0] == worst)
        out[mode] = {"overflows": overflows, "mismatches": mismatches, "fits_with_one_bit_less": fits}
    return out


def _groups(labels) -> dict:
    """Indices by value, in order of first appearance."""
    groups: dict = defaultdict(list)
    for i, value in enumerate(labels):
        groups[value].append(i)
    return {k: np.array(v) for k, v in groups.items()}


def check_sizing(network: Network, x, sizings: "list[LayerSizing]") -> list[dict]:
    """Per layer, the checks of the module docstring on inputs ``x`` (N, n_0)."""
    run = network.forward(x, acc=[s.chosen.spec for s in sizings], return_all=True)
    inputs = [run.input, *run.outputs[:-1]]
    out = []
    for layer, sizing, x_hat in zip(network.layers, sizings, inputs):
        channels = {name: float_check(layer, x_hat, f"{name}:{sizing.chosen.spec.split(':', 1)[1]}", sizing.allowed,
                                      rows)
                    for name, rows in _groups(sizing.channels.formats).items()}
        out.append({
            "samples": int(x_hat.shape[0]), "outside_box": _in_box(sizing, x_hat),
            "chosen": float_check(layer, x_hat, sizing.chosen.spec, sizing.allowed),
            "smaller": [float_check(layer, x_hat, c.spec, sizing.allowed) for c in sizing.smaller],
            "channels": {
                "overflows": sum(c["overflows"] for c in channels.values()),
                "violations": sum(c["violations"] for c in channels.values()),
                "above_target": sum(c["above_target"] for c in channels.values()),
                "max_error": max(c["max_error"] for c in channels.values())},
            "integer": integer_check(sizing.integer, x_hat),
        })
    return out
