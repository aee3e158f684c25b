"""The sizing of :mod:`analysis.sizing` and :mod:`analysis.graph_sizing` checked by
emulation (docs/method.md#accumulator-sizing): the network (or graph) run on data with
every layer (site) accumulated in its chosen format, each layer's computed input (each
site's computed operands) inside its box, its local errors (against RN of the exact sum
at the same computed operands, within half an ulp of it) within the rigorous bound and
the target, no overflow; the same sums with each format of one bit less (what happens,
for the record); per channel the channel's own format; and the integer accumulators
against exact integer sums, wrapping and saturating, on the data's quantised operands
(no overflow, both equal to the exact sum) and on each channel's worst operands with one
bit less (overflow, both differ from it).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from emulator.accumulation import parse_accumulation
from emulator.graph import Graph, forward
from emulator.graph.arithmetic import Emulated, Site
from emulator.integer_accumulation import INTEGER_OVERFLOW, integer_linear
from emulator.linear import linear
from emulator.network import Network
from emulator.reference import exact_linear

from .bounds import local_bound
from .graph_sizing import SiteSizing
from .sizing import InputBox, IntegerSizing, LayerSizing, SumSizing
from .summaries import certain_lower

__all__ = ["float_check", "integer_check", "check_sizing", "check_graph_sizing"]


def _products(x_hat: np.ndarray, weight: np.ndarray, allowed) -> list[tuple]:
    """(x, w, allowed) per product: one for shared weights (m, n), one per group for
    weights (groups, m, n) with x (groups, rows, n)."""
    if np.ndim(weight) == 2:
        return [(x_hat, weight, allowed)]
    allowed = np.broadcast_to(allowed, (*x_hat.shape[:-1], weight.shape[-2]))
    return [(x_hat[g], weight[g], allowed[g]) for g in range(weight.shape[0])]


def float_check(x_hat: np.ndarray, weight: np.ndarray, bias, spec: str, allowed: np.ndarray, rows=None) -> dict:
    """One format on a sum at computed operands ``x_hat`` and ``weight`` (shared (m, n), or
    (groups, m, n) with x (groups, rows, n)): overflows, certain violations of the local
    bound and of the target ``allowed`` (per component, broadcast), and the largest error
    (components ``rows``: output channels)."""
    out = {"spec": spec, "overflows": 0, "violations": 0, "above_target": 0, "max_error": 0.0}
    for x, w, a in _products(x_hat, weight, allowed):
        b = bias if rows is None or bias is None else bias[rows]
        if rows is not None:
            w, a = w[rows], np.asarray(a)[..., rows]
        y, overflow = linear(x, w, b, spec, return_overflow=True)
        pre = exact_linear(x, w, b)
        measured = certain_lower(y, pre, 0.5 * np.spacing(np.abs(pre)))
        bound = local_bound(x, w, b, spec)
        with np.errstate(invalid="ignore"):
            error = np.where(y == pre, 0.0, np.abs(y - pre))
        out["overflows"] += int(np.count_nonzero(overflow))
        out["violations"] += int(np.count_nonzero(measured > bound))
        out["above_target"] += int(np.count_nonzero(measured > a))
        out["max_error"] = max(out["max_error"], float(np.max(np.nan_to_num(error, nan=np.inf), initial=0.0)))
    return out


def _outside(box: InputBox, values: np.ndarray) -> int:
    """Values outside the box (the box is one sample's; ``values`` every sample's)."""
    v = np.asarray(values).reshape(-1, *box.lo.shape)
    return int(np.count_nonzero((v < box.lo) | (v > box.hi)))


def integer_check(integer: IntegerSizing, x_hat: np.ndarray, w_hat: "np.ndarray | None" = None) -> dict:
    """Per channel at its own width: data sums that overflow or differ from the exact sum
    (wrapping, saturating), ``w_hat`` the weights' values where they are a box; with one
    bit less (widths above 2), channels whose worst input still fits."""
    x_q = integer.quantise(x_hat)
    above = _outside(InputBox(-integer.x_max, integer.x_max), x_q)
    if integer.w_q is None:
        w_q = integer.quantise_weights(w_hat)
        above += _outside(InputBox(-integer.w_max, integer.w_max), w_q)
        products = [(x_q[g], w_q[g]) for g in range(w_q.shape[0])]
    else:
        products = [(x_q, integer.w_q)]
    out: dict = {"inputs_above_range": above}
    for mode in INTEGER_OVERFLOW:
        overflows = mismatches = fits = 0
        for bits, rows in _groups(integer.bits).items():
            b = None if integer.b_q is None else integer.b_q[rows]
            for x, w in products:
                exact = x @ w[rows].T + (0 if b is None else b)
                y, ovf = integer_linear(x, w[rows], b, bits, mode)
                overflows += int(np.count_nonzero(ovf))
                mismatches += int(np.count_nonzero(y != exact))
            for i in rows if bits > 2 else ():
                x, w = integer.worst(i)
                bi = None if integer.b_q is None else integer.b_q[i:i + 1]
                worst = int(x @ w) + (0 if bi is None else int(bi[0]))
                y1, ovf1 = integer_linear(x[None], w[None], bi, bits - 1, mode)
                fits += int(not ovf1[0, 0] and y1[0, 0] == worst)
        out[mode] = {"overflows": overflows, "mismatches": mismatches, "fits_with_one_bit_less": fits}
    return out


def _groups(labels) -> dict:
    """Indices by value, in order of first appearance."""
    groups: dict = defaultdict(list)
    for i, value in enumerate(labels):
        groups[value].append(i)
    return {k: np.array(v) for k, v in groups.items()}


def _sum_checks(sizing: SumSizing, samples: int, x_hat: np.ndarray, weight: np.ndarray, bias, allowed,
                w_box=None) -> dict:
    """The checks of one layer or site at its computed operands on ``samples`` inputs
    (``w_box``: the box the weights must lie in, for a site whose weights are computed)."""
    order = sizing.chosen.spec.split(":", 1)[1]
    channels = {name: float_check(x_hat, weight, bias, f"{name}:{order}", allowed, rows)
                for name, rows in _groups(sizing.channels.formats).items()}
    outside = _outside(sizing.box, x_hat) + (0 if w_box is None else _outside(w_box, weight))
    return {
        "samples": samples, "outside_box": outside,
        "chosen": float_check(x_hat, weight, bias, sizing.chosen.spec, allowed),
        "smaller": [float_check(x_hat, weight, bias, c.spec, allowed) for c in sizing.smaller],
        "channels": {
            "overflows": sum(c["overflows"] for c in channels.values()),
            "violations": sum(c["violations"] for c in channels.values()),
            "above_target": sum(c["above_target"] for c in channels.values()),
            "max_error": max(c["max_error"] for c in channels.values())},
        "integer": integer_check(sizing.integer, x_hat, None if w_box is None else weight),
    }


def check_sizing(network: Network, x, sizings: "list[LayerSizing]") -> list[dict]:
    """Per layer, the checks of the module docstring on inputs ``x`` (N, n_0)."""
    run = network.forward(x, acc=[s.chosen.spec for s in sizings], return_all=True)
    inputs = [run.input, *run.outputs[:-1]]
    return [_sum_checks(sizing, x_hat.shape[0], x_hat, layer.weight, layer.bias, sizing.allowed)
            for layer, sizing, x_hat in zip(network.layers, sizings, inputs)]


class _ChosenSpecs(Emulated):
    """Each site summed in its chosen format (by site name), recording its operands."""

    def __init__(self, specs: dict):
        super().__init__(None, record=True)
        self.specs = specs

    def spec(self, site: Site):
        return self.specs[site.name]


def check_graph_sizing(graph: Graph, feeds: dict, sizings: "list[SiteSizing]") -> list[dict]:
    """Per site, the checks of the module docstring on the graph's inputs ``feeds``: the
    graph run with every site in its chosen format, each site checked at the operands
    it recorded (its samples: the sums' rows, per group for a box of weights), every
    sample in one batch so that each site records all of them."""
    arith = _ChosenSpecs({s.site.name: parse_accumulation(s.chosen.spec) for s in sizings})
    forward(graph, feeds, arith, batch_size=next(iter(feeds.values())).shape[0])
    records = {r.site.name: r for r in arith.records}
    out = []
    for sizing in sizings:
        record = records[sizing.site.name]
        samples = record.x.shape[0] // sizing.box.lo.shape[0]
        allowed = np.tile(sizing.allowed, (samples,) + (1,) * (sizing.allowed.ndim - 1))
        out.append(_sum_checks(sizing, samples, record.x, record.w, record.bias, allowed, sizing.weights))
    return out
