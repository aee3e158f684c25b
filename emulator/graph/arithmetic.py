"""The arithmetics a graph runs in (docs/method.md#graphs): one engine
(``emulator.graph.engine``), several ways to sum.

Every sum of a graph is an *accumulation site* (:class:`Site`): the contraction of a Gemm,
MatMul, Einsum or Conv, the sum of a reduction or pooling, the denominator of a softmax,
the mean and variance sums of a normalisation. An arithmetic decides how each site is
summed (``contract``) and how everything else is computed (``math``, a namespace of
elementwise and shape functions) and stored (``store``):

* :class:`Native` — float64 everywhere (numpy), nothing rounded unless a storage
  format is given;
* :class:`Emulated` — each site accumulated under its accumulation spec by
  ``emulator.linear.linear`` (bit-exact, every model of the MLP case), the rest in
  float64, every operator's floating-point output rounded once to the storage format
  (the "accumulate in FMT, store in STORAGE" model), except the outputs of operators that
  are a sum (they stay values of the accumulator format, as an MLP's pre-activations do,
  unless the storage is ``FMT:sums``: then they are stored too, as a GPU kernel writes
  its accumulator to memory);
* the exact arithmetic (``emulator.graph.exact``) — certified enclosures, never rounded.

A contraction is ``y[..., i] = sum_j x[..., j] w[..., i, j] (+ b_i)``: ``w`` either shared
(one (m, n) matrix, as weights are) or batched with ``x`` (activation x activation, as in
Q K^T); a plain sum is a contraction with ``w = ones``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..accumulation import Accumulation, parse_accumulation
from ..errors import FormatSpecError, ShapeError
from ..storage import Storage, parse_storage
from .ir import is_float


__all__ = ["Site", "AccumulationPlan", "Arithmetic", "Native", "Emulated", "SiteRecord", "divide_in", "division_format",
           "default_at", "CUDA_CORE_SUMS"]


@dataclass(frozen=True)
class Site:
    """An accumulation site: the node, the role of the sum inside it (``""`` for the
    node's main contraction, ``sum`` for a softmax denominator, ``mean`` / ``var`` for a
    normalisation) and its stable name, ``node`` or ``node.role``."""

    node: str
    op: str
    role: str = ""

    @property
    def name(self) -> str:
        return f"{self.node}.{self.role}" if self.role else self.node


class AccumulationPlan:
    """Which accumulation spec each site gets: one spec for all, or a mapping whose keys
    are operator types (``MatMul``), site-name patterns (``*attention*``, fnmatch) or
    ``*``; the first key that matches a site wins (operator types before patterns). A
    site no key matches gets the default (``*``, or the one spec; a hardware spec only at
    contractions, :func:`default_at`), or runs in float64 without one. Values are specs,
    rows or None (float64)."""

    def __init__(self, acc: "str | Accumulation | Mapping | AccumulationPlan | None"):
        if isinstance(acc, AccumulationPlan):
            self.default, self.by_op, self.by_pattern = acc.default, acc.by_op, acc.by_pattern
            return
        self.by_op: dict[str, "Accumulation | None"] = {}
        self.by_pattern: list[tuple[str, "Accumulation | None"]] = []
        self.default: "Accumulation | None" = None
        if acc is None:
            return
        if not isinstance(acc, Mapping):
            self.default = parse_accumulation(acc)
            return
        from .ops import OPS

        for key, value in acc.items():
            if not isinstance(key, str) or not key:
                raise FormatSpecError(f"Accumulation plan key {key!r}: must be an operator type or a site pattern.")
            row = None if value is None else parse_accumulation(value)
            if key == "*":
                self.default = row
            elif key in OPS:
                self.by_op[key] = row
            else:
                self.by_pattern.append((key, row))

    def resolve(self, site: Site) -> "Accumulation | None":
        """The spec of ``site``: its operator type's, else the first matching pattern's,
        else the default as :func:`default_at` applies it to the site."""
        if site.op in self.by_op:
            return self.by_op[site.op]
        for pattern, row in self.by_pattern:
            if fnmatch.fnmatchcase(site.name, pattern):
                return row
        return default_at(self.default, site)

    @property
    def is_exact(self) -> bool:
        return self.default is not None and self.default.is_exact and not self.by_op and not self.by_pattern

    def describe(self) -> dict:
        spec = (lambda a: None if a is None else a.spec)
        return {"default": spec(self.default), "by_op": {k: spec(v) for k, v in self.by_op.items()},
                "by_pattern": {k: spec(v) for k, v in self.by_pattern}}


CUDA_CORE_SUMS = parse_accumulation("fp32")
"""What a hardware spec leaves to a GPU's CUDA cores: IEEE fp32 sums, recursive."""


def default_at(acc: "Accumulation | None", site: Site) -> "Accumulation | None":
    """The spec a plan's default ``acc`` gives ``site``: ``acc`` itself, except that a
    hardware row (``tensorcore:``, ``blockfma:``) models a matrix unit, which computes
    the contractions (Gemm, MatMul, Einsum, Conv); the plain sums of a graph (reductions,
    pooling, softmax denominators, normalisation statistics) run on the CUDA cores, in
    :data:`CUDA_CORE_SUMS` (docs/method.md#tensor-cores-on-graphs). A plan key naming such
    a site gives it any spec."""
    if acc is None or acc.hardware is None:
        return acc
    from .ops import OPS

    return acc if OPS.get(site.op).family == "contraction" else CUDA_CORE_SUMS


@dataclass
class SiteRecord:
    """What an emulated site computed on one batch: its operands as the site saw them
    (``x`` (rows, n); ``w`` (m, n) shared, or (groups, m, n) batched with ``x`` then
    (groups, rows, n)), its bias, its output and overflow mask (rows, m) or
    (groups, rows, m), and the spec it ran under."""

    site: Site
    acc: "Accumulation | None"
    x: np.ndarray
    w: np.ndarray
    bias: "np.ndarray | None"
    y: np.ndarray
    overflow: np.ndarray
    batched: bool


class Arithmetic:
    """The interface the engine and the operators use (see the module docstring).

    ``math`` is the namespace of non-accumulating functions (``emulator.graph.math``'s
    float64 one here); ``contract`` evaluates a site; ``store`` rounds a computed tensor
    to the storage format; ``lift`` turns a constant array into this arithmetic's tensor;
    ``records`` collects :class:`SiteRecord` when ``record`` is set."""

    name = "native"

    def __init__(self, storage=None, *, record: bool = False):
        from . import math as graph_math

        self.storage: "Storage | None" = parse_storage(storage)
        self.math = graph_math.FLOAT64
        self.record = record
        self.records: list[SiteRecord] = []
        self.overflow: dict[str, np.ndarray] = {}

    def lift(self, array: np.ndarray):
        return array

    def begin(self, graph, values: dict) -> None:
        """Called once per pass, before the first node: ``values`` is the engine's live map
        from tensor names to tensors (arithmetics that look at tensors other than an
        operator's own inputs keep it)."""
        self.graph, self.values = graph, values

    def evaluate(self, op, ctx, args: list) -> list:
        """A node's outputs: the operator row's own evaluation (an arithmetic that knows a
        better rule for some operator, as a bound arithmetic for the softmax, overrides
        this)."""
        return op.evaluate(ctx, args)

    def kept(self, value):
        """The form in which a tensor asked to be kept is given back (the arb path
        gives Balls, lighter than its working tensors)."""
        return value

    def conclude(self, run, feeds, rerun):
        """Called once per pass, after the last node, with the pass's ``GraphRun``, its
        feeds and ``rerun(feeds, arith)``, the same pass (graph, kept tensors) on other
        feeds in another arithmetic; returns the run to give back (the exact arithmetic
        refines the samples its enclosures miss)."""
        return run

    def finish(self, node, name: str, value, *, raw: bool):
        """A node's output ``name`` once computed: rounded to the storage format unless the
        tensor holds integers, or the operator is a sum (``raw``) and the storage keeps
        sums in their accumulator format (``Storage.sums`` not set)."""
        if not is_float(value) or (raw and not self.stores_sums):
            return value
        return self.store(value)

    @property
    def stores_sums(self) -> bool:
        """True when the outputs of sum operators are rounded to the storage format too."""
        return self.storage is not None and self.storage.sums

    def store(self, tensor):
        """round_S(tensor) for float tensors when a storage format is set."""
        if self.storage is None or not isinstance(tensor, np.ndarray) or tensor.dtype != np.float64:
            return tensor
        return self.storage.round(tensor)

    def spec(self, site: Site) -> "Accumulation | None":
        """The accumulation a site runs under (None: float64)."""
        return None

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False):
        """y[..., i] = sum_j x[..., j] w[i, j] + b_i (``w`` shared), or, ``batched``,
        y[..., t, i] = sum_j x[..., t, j] w[..., i, j] + b_i."""
        x, w, bias, lead = _contraction_operands(site, x, w, bias, batched)
        acc = self.spec(site)
        first = self.first_row(site, x.shape[0] * x.shape[1] if batched else x.shape[0])
        if batched:
            ys, ovfs = [], []
            for g in range(x.shape[0]):
                y, ovf = self._sum(acc, x[g], w[g], bias, first + g * x.shape[1])
                ys.append(y)
                ovfs.append(ovf)
            y, ovf = np.stack(ys), np.stack(ovfs)
        else:
            y, ovf = self._sum(acc, x, w, bias, first)
        if self.record:
            self.records.append(SiteRecord(site, acc, x, w, bias, y, ovf, batched))
        self.overflow[site.name] = ovf.reshape(*lead, ovf.shape[-1])
        return y.reshape(*lead, y.shape[-1])

    def divide(self, site: Site, total, count):
        """total / count (a number of terms, or an array of them), the division of a mean,
        rounded once in the site's accumulator format (the output format of the spec: F,
        or G for promote; nearest for stochastic specs); float64 where the site has none."""
        return divide_in(self.spec(site), total, count)

    def first_row(self, site: Site, rows: int) -> int:
        """The global index of the first of a site's ``rows`` sum rows in this pass (0 but in
        an arithmetic told where its batch starts)."""
        return 0

    def _sum(self, acc: "Accumulation | None", x: np.ndarray, w: np.ndarray, bias,
             first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(over="ignore", invalid="ignore"):
            y = x @ w.T
            if bias is not None:
                y = y + bias
        return y, ~np.isfinite(y)


class Native(Arithmetic):
    """float64 sums (numpy matmul), float64 everything else; storage rounding of every
    operator's output when a storage format is given."""

    name = "native"


class Emulated(Arithmetic):
    """Each site accumulated under the plan's spec by ``emulator.linear.linear``
    (float64 where the plan gives none; an exact spec gives the correctly rounded exact
    sum of the computed operands), storage rounding as :class:`Native`."""

    name = "emulated"

    def __init__(self, plan, storage=None, *, record: bool = False, first_sample: int = 0):
        super().__init__(storage, record=record)
        self.plan = AccumulationPlan(plan)
        self.first_sample = int(first_sample)
        self.samples = 0

    def begin(self, graph, values: dict) -> None:
        super().begin(graph, values)
        first = values.get(graph.inputs[0].name) if graph.inputs else None
        self.samples = int(np.shape(first)[0]) if first is not None and np.ndim(first) else 0

    def spec(self, site: Site) -> "Accumulation | None":
        return self.plan.resolve(site)

    def first_row(self, site: Site, rows: int) -> int:
        """Stochastic rounding bits are keyed by the global row: sample s of the pass owns
        rows s r .. s r + r - 1 of every site (r = rows / samples), so the bits a sample
        draws do not depend on which batch it went through (docs/method.md#random-bits-of-stochastic-rounding)."""
        if not self.first_sample:
            return 0
        if not self.samples or rows % self.samples:
            raise ShapeError(f"Site {site.name!r}: {rows} rows do not split over the {self.samples} samples of "
                             f"the batch, so its stochastic rounding cannot be keyed by sample.")
        return self.first_sample * (rows // self.samples)

    def _sum(self, acc, x, w, bias, first_row: int = 0):
        """Under ``acc`` by ``linear`` (an exact spec: the correctly rounded exact sum at
        the computed operands), float64 without one."""
        if acc is None:
            return super()._sum(acc, x, w, bias)
        from ..linear import linear

        if w.shape[0] == 1 and x.shape[0] >= _TRANSPOSE_ROWS and acc.rounding.deterministic:
            # one sum per row (a reduction, a softmax denominator): the kernels vectorise
            # across components, so the rows go in as components; the products, their order
            # and every deterministic rounding are the same (stochastic specs keep their rows,
            # which key the random bits)
            b = None if bias is None else np.full(x.shape[0], bias[0])
            y, ovf = linear(w, x, b, acc, return_overflow=True)
            return np.asarray(y, dtype=np.float64).T, np.asarray(ovf, dtype=bool).T
        y, ovf = linear(x, w, bias, acc, return_overflow=True, first_row=first_row)
        return np.asarray(y, dtype=np.float64), np.asarray(ovf, dtype=bool)


_TRANSPOSE_ROWS = 16


def division_format(acc: "Accumulation | None"):
    """(format, rounding mode, saturate, subnormals) of the division of a mean summed under
    ``acc``: the spec's output format (F, or G for promote), to nearest when the spec
    rounds stochastically; float64 to nearest without a spec or for an exact spec (whose
    sum is the correctly rounded float64 of the exact sum)."""
    from ..formats import get_format

    if acc is None or acc.is_exact:
        return get_format("fp64"), "nearest", False, True
    mode = acc.rounding.name if acc.rounding.deterministic else "nearest"
    return acc.wide or acc.fmt, mode, acc.saturate, acc.subnormals


def divide_in(acc: "Accumulation | None", total, count) -> np.ndarray:
    """total / count rounded once as :func:`division_format` says (numpy's float64
    division without a spec)."""
    count = np.asarray(count, dtype=np.float64)
    if acc is None:
        return np.divide(total, count)
    from ..division import divide_rounded

    fmt, mode, saturate, subnormals = division_format(acc)
    return divide_rounded(total, count, fmt, mode, saturate=saturate, subnormals=subnormals)


def _contraction_operands(site: Site, x, w, bias, batched: bool):
    """(x, w, bias, leading shape) as float64 arrays in the shapes the sums take (see
    :func:`contraction_shapes`), contiguous."""
    from .math import FLOAT64

    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    bias = None if bias is None else np.asarray(bias, dtype=np.float64)
    x, w, bias, lead = contraction_shapes(FLOAT64, site, x, w, bias, batched)
    return np.ascontiguousarray(x), np.ascontiguousarray(w), bias, lead


def contraction_shapes(math, site: Site, x, w, bias, batched: bool):
    """(x, w, bias, leading shape) in the shapes the sums take, moved by the namespace
    ``math``: shared ``w`` (m, n) with x flattened to (rows, n); batched w (..., m, n)
    with x (..., t, n), both flattened to (groups, ., n); bias broadcast to (m,)."""
    if len(x.shape) < 1 or len(w.shape) < 2 or x.shape[-1] != w.shape[-1]:
        raise ShapeError(f"Site {site.name!r}: operands of shapes {tuple(x.shape)} and {tuple(w.shape)} do not "
                         f"contract (last axes must match).")
    m = w.shape[-2]
    if bias is not None:
        bias = math.broadcast_to(bias, (m,))
    if not batched:
        if len(w.shape) != 2:
            raise ShapeError(f"Site {site.name!r}: shared weights must be (m, n), got {tuple(w.shape)}.")
        return math.reshape(x, (-1, x.shape[-1])), w, bias, tuple(x.shape[:-1])
    if len(x.shape) < 2:
        raise ShapeError(f"Site {site.name!r}: a batched contraction needs x (..., t, n), got {tuple(x.shape)}.")
    batch = np.broadcast_shapes(tuple(x.shape[:-2]), tuple(w.shape[:-2]))
    xb = math.reshape(math.broadcast_to(x, (*batch, *x.shape[-2:])), (-1, *x.shape[-2:]))
    wb = math.reshape(math.broadcast_to(w, (*batch, *w.shape[-2:])), (-1, *w.shape[-2:]))
    return xb, wb, bias, (*batch, x.shape[-2])
