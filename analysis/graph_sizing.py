"""The smallest safe accumulators of a graph (docs/method.md#sizing-a-graph): at every
accumulation site (and per output channel), the floating-point format eXmY with the
fewest bits whose rigorous local bound meets a target error E and whose partial sums
cannot overflow, and the width of an int8 x int8 integer register, for every input in a
stated range.

The graph runs once in :class:`~analysis.graph_ranges.ComputedRanges`, on one "sample"
that is the input box: at each site, in the engine's order, the enclosures of its
operands (the values the pass with the chosen formats computes, for every input in the
box) are the boxes the site is sized on (``analysis.sizing.size_sum``: per row of its
sums, a box of x; the weights exact and shared, or, for an activation x activation
product, a box of their own), and the chosen format's bound at the operands of largest
magnitude widens the site's sums for what follows. A site whose operand box is not
bounded is refused, naming it.

Inputs must be floating point (token ids and masks have no range to size over).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from emulator.accumulation import parse_accumulation
from emulator.graph import Graph
from emulator.graph.arithmetic import Site
from emulator.graph.engine import run_graph
from emulator.graph.ir import FLOAT

from .enclosure import ends, interval_ball
from .graph_ranges import ComputedRanges
from .sizing import InputBox, SizingError, SumSizing, check_target, checked_box, size_sum

__all__ = ["SiteSizing", "size_graph"]


@dataclass
class SiteSizing(SumSizing):
    """One site's sizing (``SumSizing``'s fields): ``box`` the box of x (rows, n), or
    (groups, rows, n) for a site with a box of ``weights`` (groups, m, n) (None for exact
    weights, ``weight`` then); ``index`` the site's place in the engine's order."""

    site: "Site | None" = None
    index: int = 0
    weight: "np.ndarray | None" = None
    weights: "InputBox | None" = None
    bias: "np.ndarray | None" = None

    @property
    def n(self) -> int:
        return int(self.box.lo.shape[-1])

    @property
    def m(self) -> int:
        return int(self.allowed.shape[-1])

    @property
    def groups(self) -> int:
        return 1 if self.weights is None else int(self.weights.lo.shape[0])


def _box(ball, site: Site, what: str) -> InputBox:
    low, high = ends(ball)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise SizingError(f"site {site.name!r}: the range of its {what} is not bounded over the input range (an "
                          "operator before it may overflow there); try a narrower --input-range or a smaller target.")
    return InputBox(low, high)


def _operands(site: Site, x, w, bias, batched: bool):
    """(x box, weights: the exact array, or a box for an activation x activation product,
    bias) of a site's operand balls."""
    for what, ball in (("bias is", bias), ("weights are", None if batched else w)):
        if ball is not None and not ball.exact:
            raise SizingError(f"site {site.name!r}: its {what} computed from the inputs but shared by every row "
                              "(a product that mixes the samples of a batch); only constant ones are sized.")
    b = None if bias is None else bias.hi
    if not batched:
        return _box(x, site, "operand x"), np.asarray(w.hi), b
    return _box(x, site, "operand x"), _box(w, site, "operand w"), b


def size_graph(graph: Graph, boxes: Mapping[str, tuple], target: float, *, relative: bool = False,
               order: str = "recursive") -> list[SiteSizing]:
    """Size every site of ``graph`` for inputs in ``boxes`` (per float input name, (lo,
    hi) arrays of one sample's shape) and the target error ``target`` on each sum:
    absolute, or ``relative`` to a_i at the operands of largest magnitude."""
    target = check_target(target)
    feeds = {}
    for t in graph.inputs:
        if t.dtype != FLOAT:
            raise SizingError(f"graph {graph.name!r}: input {t.name!r} holds integers; sizing needs a range for "
                              "every input, so graphs with float inputs only are sized.")
        box = checked_box(*boxes[t.name])
        feeds[t.name] = interval_ball(box.lo[None], box.hi[None])
    sized: list[SiteSizing] = []

    def sizer(site: Site, x, w, bias, batched: bool):
        box, weight, b = _operands(site, x, w, bias, batched)
        try:
            one = size_sum(box, weight, b, target, relative=relative, order=order)
        except SizingError as exc:
            raise SizingError(f"site {site.name!r}: {exc}") from None
        shared = not isinstance(weight, InputBox)
        sized.append(SiteSizing(**vars(one), site=site, index=len(sized), weight=weight if shared else None,
                                weights=None if shared else weight, bias=b))
        return parse_accumulation(one.chosen.spec), one.chosen.bound

    run_graph(graph, feeds, ComputedRanges(sizer))
    return sized
