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
* every other operator is evaluated on the balls of its inputs, which encloses its exact
  output; the emulated output t̂ (float64 evaluation and storage rounding included) is
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

from .bounds import local_bound, model_constant
from .conditioning import absolute_sums
from .upward import up_add, upper_abs_matmul

__all__ = ["GlobalBounds", "distance", "NATIVE_SPEC"]

NATIVE_SPEC = "fp64:products=fp64"
"""A site a plan leaves in float64 is summed by numpy in an order the BLAS chooses; its
local bound is that of float64 with rounded products, which covers every order (each
term passes at most n roundings)."""


def distance(computed: np.ndarray, ball: Ball) -> np.ndarray:
    """An upper bound on |computed - x| for every x in ``ball``: |computed - hi| + |lo| +
    rad, rounded up (0 where an exact infinity was computed, inf where anything else is
    not finite)."""
    computed = np.asarray(computed, dtype=np.float64)
    hi, lo, rad = ball.parts()
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.where(computed == hi, 0.0, np.nextafter(np.abs(computed - hi), np.inf))
    return up_add(up_add(d, np.abs(lo)), rad)


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

    def lift(self, array):
        return Ball(array)

    def store(self, tensor):
        return tensor

    def _record(self, site: Site) -> SiteRecord:
        record = self._records[self._next]
        self._next += 1
        if record.site.name != site.name:
            raise RuntimeError(f"bound pass reached site {site.name!r} where the emulated pass recorded "
                               f"{record.site.name!r}")
        return record

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False):
        record = self._record(site)
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
        """local(x̂, ŵ) + |x̂| ΔW^T + ΔX |ŵ|^T + ΔX ΔW^T for one group, upward."""
        acc = record.acc if record.acc is not None else NATIVE_SPEC
        safe_x = np.where(np.isfinite(x), x, 0.0)
        if self.first_order:
            c = model_constant(acc, w.shape[1], record.bias is not None, self.bound)
            local = c.first_order * absolute_sums(safe_x, w, record.bias)
        else:
            local = local_bound(safe_x, w, record.bias, acc, self.bound)
        prop = up_add(up_add(upper_abs_matmul(np.abs(safe_x), dw), upper_abs_matmul(dx, np.abs(w))),
                      upper_abs_matmul(dx, dw))
        out = up_add(local, prop)
        return np.where(np.isfinite(x).all(axis=-1, keepdims=True), out, np.inf)

    def divide(self, site: Site, total, count):
        """The exact quotient of the enclosed sum (the emulated rounding of the division is
        in the distance of the operator's computed output)."""
        return self.math.div(total, self.lift(np.asarray(count, dtype=np.float64)))

    def finish(self, node, name: str, value, *, raw: bool):
        if not is_float(value) or name not in self.computed:
            return value
        computed = np.asarray(self.computed[name], dtype=np.float64)
        return Ball(computed, None, distance(computed, as_ball(value)))

    @staticmethod
    def radius(ball) -> np.ndarray:
        """The bound Δ of a settled tensor."""
        return np.zeros(ball.shape) if ball.rad is None else ball.rad

