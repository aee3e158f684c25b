"""Global error bounds through a graph (docs/method.md#bounds-through-a-graph): rigorous
componentwise enclosures of every tensor's exact value, centred on the values an emulated
pass computed.

The arithmetic :class:`GlobalBounds` runs the same operators as the emulated pass, in the
interval arithmetic of the exact fast path (``emulator.graph.ballmath``: enclosures
rounded outward), on balls (t̂, Δ) whose centre t̂ is the emulated value and whose radius
Δ bounds |t̂ - t|, t the exact value:

* inputs and initialisers are exact (the exact pass shares them, storage-rounded);
* at an accumulation site with computed operands x̂, ŵ (as the emulated site saw them) and
  balls X, W enclosing the exact operands, the emulated sum ŷ is within
  local(x̂, ŵ) + |x̂| ΔW^T + ΔX |ŵ|^T + ΔX ΔW^T of the exact sum, where
  ΔX = |x̂ - centre(X)| + radius(X) and local is ``analysis.bounds.local_bound`` (for
  Q̂ K̂^T: |Q̂||ΔK|^T + |ΔQ||K̂|^T + |ΔQ||ΔK|^T plus the rounding of the sum);
* an operator with a rule of its own (``analysis.bound_rules.BOUND_RULES``: Softmax,
  LogSoftmax, LayerNormalization, whose interval evaluation loses the dependency between
  their operands) is enclosed by it, from its inputs' balls and the local bounds of its
  sums;
* every other operator is evaluated on the balls of its inputs, which encloses its exact
  output;
* either way the emulated output t̂ (float64 evaluation and storage rounding included) is
  then at most Δ = |t̂ - centre| + radius from the exact one, and the output becomes the
  ball (t̂, Δ).

With ``first_order`` the local bounds are replaced by the paper's first-order prediction
c u a_i (no rigour: the prediction whose rank correlation with the measured errors the
validation reports).
"""

from __future__ import annotations

import numpy as np

from emulator.graph.arithmetic import Arithmetic, Site, SiteRecord, contraction_shapes
from emulator.graph.ball import Ball
from emulator.graph.ballmath import BallMath, as_ball
from emulator.graph.ir import is_float

from .bound_rules import BOUND_RULES
from .bounds import local_bound, model_constant
from .conditioning import absolute_sums
from .enclosure import distance
from .upward import up_add, upper_abs_matmul

__all__ = ["GlobalBounds", "distance", "NATIVE_SPEC"]

NATIVE_SPEC = "fp64:products=fp64"
"""A site a plan leaves in float64 is summed by numpy in an order the BLAS chooses; its
local bound is that of float64 with rounded products, which covers every order (each
term passes at most n roundings)."""


class GlobalBounds(Arithmetic):
    """The bound arithmetic of the module docstring: ``computed`` maps every tensor name to
    the emulated value, ``records`` are the emulated pass's site records in order."""

    name = "global bounds"

    def __init__(self, computed: dict, records: "list[SiteRecord]", bound="deterministic", *,
                 first_order: bool = False):
        super().__init__(None)
        self.math = BallMath(113)
        self.computed = computed
        self._records = list(records)
        self._next = 0
        self.bound = bound
        self.first_order = first_order
        self.sites: dict[str, np.ndarray] = {}
        self.enclosures: dict[str, Ball] = {}

    def lift(self, array):
        return Ball(array)

    def store(self, tensor):
        return tensor

    def evaluate(self, op, ctx, args: list) -> list:
        """The node's outputs by its operator's bound rule when it has one (and the rule
        takes the node), else by the operator's own evaluation on the balls; an input
        whose ball is partly unknown comes narrowed by its kept enclosure (``finish``)."""
        args = [self.enclosures.get(name, arg) if name else arg for name, arg in zip(ctx.node.inputs, args)]
        if op.name in BOUND_RULES:
            outputs = BOUND_RULES.get(op.name).enclose(self, ctx, args)
            if outputs is not None:
                return outputs
        return op.evaluate(ctx, args)

    def site_record(self, site: Site) -> SiteRecord:
        """The emulated pass's record of ``site``, the next one in order (consumed)."""
        record = self._records[self._next]
        self._next += 1
        if record.site.name != site.name:
            raise RuntimeError(f"bound pass reached site {site.name!r} where the emulated pass recorded "
                               f"{record.site.name!r}")
        return record

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False):
        record = self.site_record(site)
        xb, wb, bb, lead = contraction_shapes(self.math, site, as_ball(x), as_ball(w),
                                              None if bias is None else as_ball(bias), batched)
        dx = distance(record.x, xb)
        dw = distance(record.w, wb)
        if batched:
            radius = np.stack([self._radius(record, record.x[g], record.w[g], dx[g], dw[g]) for g in
                               range(record.x.shape[0])])
        else:
            radius = self._radius(record, record.x, record.w, dx, dw)
        if bb is not None and not bb.exact:
            radius = up_add(radius, distance(record.bias, bb))
        m = radius.shape[-1]
        self.sites[site.name] = radius
        return Ball(record.y.reshape(*lead, m), None, radius.reshape(*lead, m))

    def _radius(self, record: SiteRecord, x: np.ndarray, w: np.ndarray, dx: np.ndarray, dw: np.ndarray) -> np.ndarray:
        """local(x̂, ŵ) + |x̂| ΔW^T + ΔX |ŵ|^T + ΔX ΔW^T for one group, upward (the terms
        with ΔW left out when the weights are exact, ΔW = 0)."""
        prop = upper_abs_matmul(dx, np.abs(w))
        if dw.any():
            safe_x = np.where(np.isfinite(x), x, 0.0)
            prop = up_add(up_add(upper_abs_matmul(np.abs(safe_x), dw), prop), upper_abs_matmul(dx, dw))
        return up_add(self.local_error(record, x, w), prop)

    def local_error(self, record: SiteRecord, x: "np.ndarray | None" = None,
                    w: "np.ndarray | None" = None) -> np.ndarray:
        """The local bound of the emulated sum of ``record`` at its computed operands (one
        group: ``x``, ``w``, by default the record's shared ones), (rows, m): the rigorous
        bound, or c u a_i in the first-order pass; inf for rows with an operand that is not
        finite."""
        x = record.x if x is None else x
        w = record.w if w is None else w
        acc = record.acc if record.acc is not None else NATIVE_SPEC
        safe_x = np.where(np.isfinite(x), x, 0.0)
        if self.first_order:
            c = model_constant(acc, w.shape[1], record.bias is not None, self.bound)
            local = c.first_order * absolute_sums(safe_x, w, record.bias)
        else:
            local = local_bound(safe_x, w, record.bias, acc, self.bound)
        return np.where(np.isfinite(x).all(axis=-1, keepdims=True), local, np.inf)

    def emulated_input(self, ctx, k: int, ball: Ball) -> "np.ndarray | None":
        """The emulated value of the node's input ``k``: the emulated pass's tensor, or the
        ball itself when it is an exact float64 tensor (inputs and initialisers, which
        both passes share); None when neither is known."""
        name = ctx.node.inputs[k]
        if name in self.computed:
            return np.asarray(self.computed[name], dtype=np.float64)
        return ball.hi if ball.exact else None

    def divide(self, site: Site, total, count):
        """The exact quotient of the enclosed sum (the emulated rounding of the division is
        in the distance of the operator's computed output)."""
        return self.math.div(total, self.lift(np.asarray(count, dtype=np.float64)))

    def finish(self, node, name: str, value, *, raw: bool):
        """The ball (t̂, Δ) of the module docstring. Where Δ is not finite (an emulated
        value the storage format overflowed, a masked score stored as -inf while the exact
        one is finite) the enclosure before re-centring still bounds the exact value: the
        ball with those elements replaced by it is kept in ``enclosures`` for the
        operators that read the tensor."""
        if not is_float(value) or name not in self.computed:
            return value
        computed = np.asarray(self.computed[name], dtype=np.float64)
        enclosure = as_ball(value)
        radius = distance(computed, enclosure)
        settled = Ball(computed, None, radius)
        known = np.isfinite(radius)
        if not known.all():
            self.enclosures[name] = self.math.where(known, settled, enclosure)
        return settled

    @staticmethod
    def radius(ball) -> np.ndarray:
        """The bound Δ of a settled tensor."""
        return np.zeros(ball.shape) if ball.rad is None else ball.rad

