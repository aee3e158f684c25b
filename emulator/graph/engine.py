"""The one forward engine: a graph evaluated node by node, in topological order, under an
arithmetic (docs/method.md#graphs).

Each node's operator row (``emulator.graph.ops.OPS``) evaluates it through a
:class:`Context`, which gives it the arithmetic's ``math`` namespace and its sums
(``contract``, ``sum``, ``mean``: the accumulation sites). After the node, the engine
rounds its floating-point outputs to the storage format, unless the operator is itself a
sum (``Op.raw``: its outputs are values of the accumulator format) and the storage does
not store sums (``FMT:sums``, ``Storage.sums``). Tensors are freed as
soon as the last node that reads them has run, so memory holds the live tensors of one
batch only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import MixaccError, ModelFileError
from .arithmetic import Arithmetic, Site
from .ir import FLOAT, Graph, Node, is_float
from .runs import GraphRun, join_runs

__all__ = ["Context", "GraphRun", "Rerun", "run_graph", "forward", "prepare", "batches", "make_arithmetic",
           "is_float", "STREAM_BATCH"]


class Context:
    """What an operator sees while it evaluates ``node``: attributes, the arithmetic's
    ``math`` namespace, and the node's accumulation sites."""

    def __init__(self, arith: Arithmetic, node: Node):
        self.arith = arith
        self.node = node
        self.math = arith.math

    def attr(self, key: str, default=None):
        return self.node.attrs.get(key, default)

    def site(self, role: str = "") -> Site:
        return Site(self.node.name, self.node.op, role)

    def lift(self, array):
        """A constant float array as a tensor of this arithmetic."""
        return self.arith.lift(np.asarray(array, dtype=np.float64))

    def contract(self, x, w, bias=None, *, role: str = "", batched: bool = False):
        """The accumulation site ``role`` of this node: y[..., i] = sum_j x[..., j] w[i, j]
        + b_i, or batched over leading axes (see ``Arithmetic.contract``)."""
        return self.arith.contract(self.site(role), x, w, bias, batched=batched)

    def sum(self, x, axis, *, role: str = "", keepdims: bool = True):
        """sum of ``x`` over ``axis`` (an int or a tuple of ints) as an accumulation site:
        the summed axes are moved last and flattened, in their index order, and summed as
        a contraction with ones."""
        axes = _axes(axis, np.ndim(x) if isinstance(x, np.ndarray) else len(x.shape))
        moved, kept_shape = _move_last(self.math, x, axes)
        n = moved.shape[-1]
        total = self.arith.contract(self.site(role), moved, np.ones((1, n)), None)
        total = self.math.reshape(total, kept_shape)
        if keepdims:
            total = self.math.reshape(total, _keepdims_shape(x.shape, axes))
        return total

    def mean(self, x, axis, *, role: str = "", keepdims: bool = True):
        """The sum of ``x`` over ``axis`` (an accumulation site), divided by the number of
        terms and rounded once in the site's accumulator format."""
        axes = _axes(axis, len(x.shape))
        count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
        total = self.sum(x, axes, role=role, keepdims=keepdims)
        return self.arith.divide(self.site(role), total, count)


def _axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    items = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = tuple(sorted({int(a) % ndim if ndim else 0 for a in items}))
    return out


def _move_last(math, x, axes: tuple[int, ...]):
    """x with ``axes`` moved last and flattened into one: (..., n), and the shape of the
    other axes."""
    keep = [a for a in range(len(x.shape)) if a not in axes]
    moved = math.transpose(x, (*keep, *axes)) if list((*keep, *axes)) != list(range(len(x.shape))) else x
    kept_shape = tuple(x.shape[a] for a in keep)
    n = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    return math.reshape(moved, (*kept_shape, n)), kept_shape


def _keepdims_shape(shape, axes) -> tuple[int, ...]:
    return tuple(1 if a in axes else d for a, d in enumerate(shape))


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray], arith: Arithmetic, *,
              keep: "Sequence[str] | bool" = ()) -> GraphRun:
    """Evaluate ``graph`` on the checked ``feeds`` (one batch) under ``arith``. ``keep``
    names intermediate tensors to return besides the outputs (True: all of them)."""
    from .ops import OPS

    values: dict[str, object] = {}
    for t in graph.inputs:
        a = feeds[t.name]
        values[t.name] = arith.lift(a) if t.dtype == FLOAT else a
    for name, a in graph.initializers.items():
        values[name] = arith.lift(a) if a.dtype == np.float64 else a
    arith.begin(graph, values)
    keep_all = keep is True
    wanted = set(graph.outputs) | (set() if keep_all else set(keep or ()))
    remaining: dict[str, int] = {}
    for node in graph.nodes:
        for t in node.inputs:
            if t:
                remaining[t] = remaining.get(t, 0) + 1
    kept: dict[str, object] = {}
    for node in graph.nodes:
        op = OPS.get(node.op)
        args = [values[t] if t else None for t in node.inputs]
        try:
            outs = arith.evaluate(op, Context(arith, node), args)
        except MixaccError:
            raise
        except (ValueError, IndexError, TypeError) as exc:
            raise ModelFileError(f"node {node.name!r} ({node.op}) failed: {str(exc).splitlines()[0]}") from None
        if len(outs) < len([o for o in node.outputs if o]):
            raise ModelFileError(f"node {node.name!r} ({node.op}) gave {len(outs)} outputs for {len(node.outputs)}.")
        for name, value in zip(node.outputs, outs):
            if not name:
                continue
            if isinstance(value, np.generic):  # numpy returns scalars for 0-d results
                value = np.asarray(value)
            value = arith.finish(node, name, value, raw=op.raw)
            values[name] = value
            if keep_all or name in wanted:
                kept[name] = arith.kept(value)
        for t in node.inputs:
            if t and t in remaining:
                remaining[t] -= 1
                if remaining[t] == 0 and t not in graph.outputs and t not in graph.initializers:
                    values.pop(t, None)
    outputs = {name: values[name] if name in values else kept[name] for name in graph.outputs}
    return arith.conclude(GraphRun(outputs, kept, arith), feeds, Rerun(graph, keep))


@dataclass(frozen=True)
class Rerun:
    """The pass of ``graph`` keeping ``keep`` again, on other feeds in another arithmetic
    (what :meth:`Arithmetic.conclude` is handed; picklable, so that a child process can run
    it)."""

    graph: Graph
    keep: "Sequence[str] | bool" = ()

    def __call__(self, feeds: Mapping[str, np.ndarray], arith: Arithmetic) -> GraphRun:
        return run_graph(self.graph, feeds, arith, keep=self.keep)


STREAM_BATCH = 16
"""Samples per batch of :func:`forward` by default (all-MiniLM-L6-v2 at 128 tokens: about
100 MiB per batch for its largest tensors, the attention scores and the feed-forward)."""


def make_arithmetic(acc, storage=None, *, record: bool = False, first_sample: int = 0) -> Arithmetic:
    """The arithmetic of ``acc``: None float64, ``"exact"`` (or ``exact:BITS``) the exact
    enclosures, an :class:`Arithmetic` itself (``Float32()``) as it is, anything else an
    accumulation plan (one spec, or a mapping from operator types / site patterns to specs)
    whose batch starts at sample ``first_sample`` of the data (the key of stochastic bits)."""
    from .arithmetic import AccumulationPlan, Emulated, Native

    if isinstance(acc, Arithmetic):
        return acc
    if acc is None:
        return Native(storage, record=record)
    plan = AccumulationPlan(acc)
    if plan.is_exact:
        from .exact import Exact

        return Exact(precision=plan.default.precision)
    return Emulated(plan, storage, record=record, first_sample=first_sample)


def forward(graph: Graph, feeds: Mapping[str, np.ndarray], acc=None, storage=None, *, keep: "Sequence[str] | bool" = (),
            batch_size: "int | None" = None, first_sample: int = 0) -> GraphRun:
    """The forward pass of ``graph`` on ``feeds`` (its data inputs by name, batch first)
    under ``acc`` (see :func:`make_arithmetic`) with the storage format ``storage``.

    Floating-point initialisers and inputs are rounded to the storage format first (the
    exact pass uses the same rounded values and never rounds again). Samples go through
    in batches of ``batch_size`` (by default STREAM_BATCH, so that a pass over many
    samples holds one batch's intermediate tensors at a time, except that an
    :class:`Arithmetic` given as ``acc``, which may gather state over the pass, sees every
    sample at once; 0: all at once; one at a time for a graph exported with a fixed batch
    of 1); outputs, kept tensors and overflow masks are joined along the batch; every
    value is the same whatever the batches. ``first_sample``: the index of the first sample in the data the
    feeds are taken from (stochastic rounding draws the bits of the global sample index)."""
    prepared, data, st = prepare(graph, feeds, storage)
    runs, masks = [], []
    start = first_sample
    if batch_size is None:
        batch_size = 0 if isinstance(acc, Arithmetic) else STREAM_BATCH
    for chunk in batches(graph, data, batch_size):
        arith = make_arithmetic(acc, None if _is_exact(acc) else st, record=False, first_sample=start)
        start += next(iter(chunk.values())).shape[0]
        runs.append(run_graph(prepared, chunk, arith, keep=keep))
        masks.append(dict(arith.overflow))  # an arithmetic given as ``acc`` serves every batch
    return runs[0] if len(runs) == 1 else join_runs(runs, masks)


def prepare(graph: Graph, feeds: Mapping[str, np.ndarray], storage=None):
    """What every pass of ``graph`` starts from: (the graph with its float initialisers
    rounded to ``storage``, the checked feeds with their float inputs rounded to it, the
    parsed storage); overflow of either is refused unless ``:saturate``."""
    from ..storage import parse_storage

    st = parse_storage(storage)
    data = graph.check_feeds(feeds)
    if st is not None:
        data = {k: st.round_finite(v, f"input {k!r}") if v.dtype == np.float64 else v for k, v in data.items()}
    return graph.with_storage(st), data, st


def batches(graph: Graph, data: Mapping[str, np.ndarray], batch_size: "int | None"):
    """The feeds in consecutive batches of ``batch_size`` samples (all at once for None;
    one at a time for a graph exported with a fixed batch of 1)."""
    total = next(iter(data.values())).shape[0]
    fixed = {t.fixed_batch for t in graph.inputs} - {None}
    if fixed and fixed != {total}:
        if fixed != {1}:
            raise ModelFileError(f"Graph {graph.name!r} was exported with a fixed batch of {fixed.pop()}; give that "
                                 f"many samples (got {total}) or re-export with a dynamic batch.")
        batch_size = 1
    step = total if not batch_size else max(1, int(batch_size))
    for start in range(0, total, step):
        yield {k: v[start:start + step] for k, v in data.items()}


def _is_exact(acc) -> bool:
    from .arithmetic import AccumulationPlan

    return acc is not None and not isinstance(acc, Arithmetic) and AccumulationPlan(acc).is_exact
