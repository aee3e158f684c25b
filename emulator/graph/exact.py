"""The exact arithmetic of the graph engine (docs/method.md#the-exact-arithmetic): every
tensor is an enclosure of its exact value, never rounded between operators.

Two paths give enclosures of the same exact values:

* ``fast`` (:class:`~.ball.Ball`): double-double centres with certified radii, computed
  by numba kernels with proven error bounds (``emulator.graph.ballmath``); elements no
  kernel covers go through the mpmath path one by one;
* ``mpmath`` (:class:`~.intervals.Intervals`): the definition, mpmath intervals at
  ``precision`` bits with exact sums (``emulator.graph.intervals``); slow, for small
  graphs and tests.

``forward(graph, feeds, acc="exact")`` runs the fast path; ``acc=Exact(path="mpmath",
precision=300)`` the definition. :func:`exact_values` turns a run's enclosures into
float64 values with certified radii.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import Registry
from ..reference import _positive_int
from .arithmetic import Arithmetic, Site
from .ball import ExactValue
from .ballmath import BallMath
from .intervals import IntervalMath

__all__ = ["Exact", "EXACT_PATHS", "exact_values", "ExactValue"]


@dataclass(frozen=True)
class ExactPath:
    """A path of the exact arithmetic: its name and the namespace class it runs in."""

    name: str
    namespace: type
    description: str


EXACT_PATHS: Registry[ExactPath] = Registry("exact path")
for _row in (
    ExactPath("fast", BallMath, "double-double balls with certified radii (numba), mpmath for what they miss"),
    ExactPath("mpmath", IntervalMath, "mpmath intervals with exact sums (the definition)"),
):
    EXACT_PATHS.add(_row.name, _row)


class Exact(Arithmetic):
    """Certified enclosures of every tensor (see the module docstring). ``precision`` is
    the mpmath working precision in bits (of the whole pass on the mpmath path, of the
    fallback elements on the fast path). Nothing is rounded to a storage format: the
    storage rounding of a pass applies to its initialisers and inputs only."""

    name = "exact"

    def __init__(self, precision: int = 113, path: str = "fast"):
        super().__init__(None)
        self.precision = _positive_int(precision)
        self.path = EXACT_PATHS.get(path).name
        self.math = EXACT_PATHS.get(path).namespace(self.precision)

    def lift(self, array):
        return self.math.lift(array)

    def store(self, tensor):
        return tensor

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False):
        """The exact sum enclosed; the site's overflow mask marks values whose float64
        nearest is not finite."""
        y = self.math.contract(site, x, w, bias, batched=batched)
        self.overflow[site.name] = ~np.isfinite(y.value())
        return y

    def divide(self, site: Site, total, count):
        """total / count exactly (enclosed)."""
        return self.math.div(total, self.math.lift(np.asarray(count, dtype=np.float64)))


def exact_values(run, names=None) -> dict[str, ExactValue]:
    """The float64 value nearest each carried value, a certified radius >= |value -
    exact| and whether the value is certainly RN(exact), for the run's outputs and kept
    tensors (``names``: a subset). Integer tensors are exact."""
    tensors = {**run.values, **run.outputs}
    out = {}
    for name in tensors if names is None else names:
        t = tensors[name]
        if isinstance(t, np.ndarray):
            out[name] = ExactValue(t.astype(np.float64), np.zeros(t.shape), np.ones(t.shape, dtype=bool))
        else:
            out[name] = ExactValue.of(t)
    return out
