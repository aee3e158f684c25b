"""The exact arithmetic of the graph engine (docs/method.md#the-exact-arithmetic): every
tensor is an enclosure of its exact value, never rounded between operators.

Three paths give enclosures of the same exact values:

* ``fast`` (:class:`~.ball.Ball`): double-double centres with certified radii, computed
  by numba kernels with proven error bounds (``emulator.graph.ballmath``); elements no
  kernel covers go through the arb path one by one; samples whose radii miss 2^-60 at
  the end run again on the arb path (:func:`refine`, split between processes when worth it);
* ``arb`` (:class:`~.arbs.Arbs`): Arb balls of python-flint at ``precision`` bits
  (``emulator.graph.arbs``);
* ``mpmath`` (:class:`~.intervals.Intervals`): the definition, mpmath intervals at
  ``precision`` bits, sums at twice that (``emulator.graph.intervals``); slow, for small
  graphs and tests.

``forward(graph, feeds, acc="exact")`` runs the fast path; ``acc=Exact(path="mpmath",
precision=300)`` the definition. :func:`exact_values` turns a run's enclosures into
float64 values with certified radii.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..reference import DEFAULT_TOL, _positive_int
from ..registry import Registry
from .arbs import ArbMath, Arbs, cpus
from .arithmetic import Arithmetic, Site
from .ball import Ball, ExactValue
from .ballmath import BallMath
from .intervals import IntervalMath
from .processes import in_processes
from .runs import GraphRun, join_runs

__all__ = ["Exact", "EXACT_PATHS", "exact_values", "ExactValue"]


@dataclass(frozen=True)
class ExactPath:
    """A path of the exact arithmetic: its name and the namespace class it runs in."""

    name: str
    namespace: type
    description: str


EXACT_PATHS: Registry[ExactPath] = Registry("exact path")
for _row in (
    ExactPath("fast", BallMath, "double-double balls with certified radii (numba), the arb path for what they miss; "
              "samples they do not pin down to 2^-60 run again on the arb path"),
    ExactPath("arb", ArbMath, "Arb balls (python-flint) at the working precision, contractions as arb_mat products"),
    ExactPath("mpmath", IntervalMath, "mpmath intervals, sums rounded outward at twice the precision (the definition)"),
):
    EXACT_PATHS.add(_row.name, _row)


class Exact(Arithmetic):
    """Certified enclosures of every tensor (see the module docstring). ``precision`` is
    the working precision in bits (of the whole pass on the mpmath and arb paths, of the
    fallback elements on the fast path). Nothing is rounded to a storage format: the
    storage rounding of a pass applies to its initialisers and inputs only. ``workers``:
    the processes the arb passes of a refinement split their samples between (None: every
    CPU, when the fast pass over the samples to refine took at least PARALLEL_SECONDS;
    the values are the same however many)."""

    name = "exact"

    def __init__(self, precision: int = 113, path: str = "fast", workers: "int | None" = None):
        super().__init__(None)
        self.precision = _positive_int(precision)
        self.path = EXACT_PATHS.get(path).name
        self.math = EXACT_PATHS.get(path).namespace(self.precision)
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                    or workers < 1):
            raise ValueError(f"workers == {workers!r}, must be a positive integer or None.")
        self.workers = workers

    def begin(self, graph, values: dict) -> None:
        super().begin(graph, values)
        self.began = time.perf_counter()

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

    def kept(self, value):
        return value.to_ball() if isinstance(value, Arbs) else value

    def conclude(self, run, feeds, rerun):
        """The arb path gives its outputs back as Balls; the fast path runs the samples it
        does not pin down again on the arb path (:func:`refine`)."""
        if self.path == "arb":
            return _balls(run)
        if self.path == "fast":
            return refine(run, feeds, rerun, start=max(ARB_START, self.precision + 64), workers=self.workers,
                          fast_seconds=time.perf_counter() - self.began)
        return run


ARB_START = 256
"""Bits of the first arb pass of a refinement (at least the fast path's fallback
precision plus 64). all-MiniLM-L6-v2 needs about 230: its Arb radii grow about 2^24 per layer."""
MAX_ARB_PRECISION = 8192
PARALLEL_SECONDS = 0.25
"""The fast pass over the samples to refine took at least this: their arb passes (about
fifteen times longer on all-MiniLM-L6-v2) are worth a process per CPU (about 2 s to
start one and hand it the graph)."""


def refine(run, feeds, rerun, *, start: int = ARB_START, tol: float = DEFAULT_TOL, workers: "int | None" = 1,
           fast_seconds: float = 0.0):
    """``run`` with every sample that has a finite value whose carried enclosure (the
    double-double centre's radius, before the final rounding to float64) does not meet
    ``tol`` (:meth:`ExactValue.meets`) among its outputs and kept tensors run again on the
    arb path, at ``start`` bits, then at p + log2(worst radius / tol) + 32 bits (twice p
    when a radius is still unknown), until every value meets ``tol``, a pass improves no
    sample's worst radius, or MAX_ARB_PRECISION is passed (a value the last pass still
    misses keeps its certified radius; the run's arithmetic counts the samples refined,
    the precision reached and the processes of the last pass). ``rerun(feeds, arith)``
    runs the pass again (see ``Arithmetic.conclude``); each arb pass splits its samples
    between ``workers`` processes, this one and children (None: every CPU when the fast
    pass, which took ``fast_seconds`` over all samples, took at least PARALLEL_SECONDS
    over those to refine)."""
    n = _samples(feeds)
    missing, worst = _missing(run, n, tol)
    run.arith.refined, run.arith.refined_precision, run.arith.refined_processes = int(missing.sum()), None, 0
    if workers is None:
        workers = cpus() if fast_seconds * missing.sum() >= PARALLEL_SECONDS * max(n, 1) else 1
    prec = start
    while missing.any() and prec <= MAX_ARB_PRECISION:
        idx = np.flatnonzero(missing)
        again = _arb_pass(rerun, {k: v[idx] for k, v in feeds.items()}, prec, workers)
        _splice(run, again, idx, n)
        run.arith.refined_precision, run.arith.refined_processes = prec, max(1, min(workers, idx.size))
        still, now = _missing(again, idx.size, tol)
        if not (now < worst[idx]).any():
            break
        missing = np.zeros(n, dtype=bool)
        missing[idx[still]] = True
        worst[idx] = now
        if missing.any():
            left = now[still].max()
            prec = 2 * prec if not np.isfinite(left) else prec + int(np.ceil(np.log2(max(left / tol, 1.0)))) + 32
    return run


@dataclass(frozen=True)
class ArbPass:
    """The arb pass of ``rerun`` at ``precision`` bits, its matrix products on ``threads``
    threads: a child process's task, which gives back (outputs, kept tensors, overflow
    masks)."""

    rerun: object
    precision: int
    threads: int

    def __call__(self, feeds) -> tuple[dict, dict, dict]:
        arith = Exact(self.precision, path="arb")
        arith.math.threads = self.threads
        run = self.rerun(feeds, arith)
        return run.outputs, run.values, run.arith.overflow


def _arb_pass(rerun, feeds, precision: int, workers: int):
    """The arb pass on ``feeds`` at ``precision`` bits, its samples split between
    ``workers`` processes, this one and children (contiguous parts, joined in order)."""
    n = _samples(feeds)
    parts = min(workers, n)
    if parts <= 1:
        return rerun(feeds, Exact(precision, path="arb"))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    chunks = [{k: v[a:b] for k, v in feeds.items()} for a, b in zip(bounds[:-1], bounds[1:])]
    runs, masks = [], []
    for outputs, values, overflow in in_processes(ArbPass(rerun, precision, max(1, cpus() // parts)), chunks):
        runs.append(GraphRun(outputs, values, Exact(precision, path="arb")))
        masks.append(overflow)
    return join_runs(runs, masks)


def _samples(feeds) -> int:
    return int(next(iter(feeds.values())).shape[0]) if feeds else 0


def _float_tensors(run) -> dict:
    return {k: t for k, t in {**run.values, **run.outputs}.items() if isinstance(t, Ball)}


def _missing(run, n: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(samples with a finite value whose carried radius does not meet ``tol``, each
    sample's largest carried radius / |value| over those values); every sample misses
    when a tensor without the batch axis does."""
    rows, worst = np.zeros(n, dtype=bool), np.zeros(n)
    for t in _float_tensors(run).values():
        value, _, carried = t.parts()
        bad = np.isfinite(value) & ~ExactValue(value, carried, None).meets(tol)
        if not bad.any():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(bad, carried / np.abs(value), 0.0)
        relative = np.where(np.isnan(relative), np.inf, relative)
        if t.shape and t.shape[0] == n:
            rows |= bad.reshape(n, -1).any(axis=1)
            worst = np.maximum(worst, relative.reshape(n, -1).max(axis=1))
        else:
            rows[:] = True
            worst[:] = np.maximum(worst, relative.max())
    return rows, worst


def _balls(run):
    """The run with its outputs as Balls (kept tensors already are)."""
    for k, t in run.outputs.items():
        if isinstance(t, Arbs):
            run.outputs[k] = run.values[k] if isinstance(run.values.get(k), Ball) else t.to_ball()
    return run


def _splice(run, again, idx: np.ndarray, n: int) -> None:
    """Rows ``idx`` of every float tensor and overflow mask of ``run`` taken from ``again``
    (a pass over those samples); tensors without the batch axis taken whole."""
    for table, other in ((run.values, again.values), (run.outputs, again.outputs)):
        for k, t in table.items():
            if not isinstance(t, Ball):
                continue
            new = other[k]
            if not (t.shape and t.shape[0] == n):
                table[k] = new
                continue
            parts = []
            for old, fresh in zip(t.parts(), new.parts()):
                part = np.array(old)
                part[idx] = fresh
                parts.append(part)
            table[k] = Ball(*parts)
    for site, mask in again.arith.overflow.items():
        old = run.arith.overflow.get(site)
        if old is not None and old.shape and old.shape[0] == n:
            old = np.array(old)
            old[idx] = mask
            run.arith.overflow[site] = old
        else:
            run.arith.overflow[site] = mask


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
