"""A network as a graph of operators (docs/method.md#graphs): named tensors, nodes that
read and write them, constant tensors (initialisers) and the graph's inputs and outputs.

Conventions:

* a tensor is a float64 array (``FLOAT``) or an int64 array (``INT``: token ids, masks,
  shapes, indices); graph inputs and everything computed from them carry a leading batch
  dimension, initialisers do not;
* a node is one operator (a row of ``emulator.graph.ops.OPS``, ONNX semantics) with its
  attributes as plain Python values (ints, floats, strings, tuples, numpy arrays);
* node names are unique and name the accumulation sites users see in reports.

:class:`Graph` checks itself when built: every node's operator is known (else one error
naming the op type and the node; likewise an attribute value the operator's row does
not implement), every tensor is produced once, every input of a node
is produced before it (nodes are kept in a topological order) and initialisers hold
finite numbers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterator, Mapping, Sequence

import numpy as np

from ..arrays import first_bad
from ..errors import DataError, ModelFileError, ShapeError

__all__ = ["FLOAT", "INT", "DTYPES", "TensorInfo", "Node", "Graph", "is_float"]

FLOAT, INT = "float", "int"
DTYPES = (FLOAT, INT)


def is_float(tensor) -> bool:
    """True for a floating-point tensor of any arithmetic (numpy float64 or an enclosure);
    integer arrays and integer numpy scalars (a 0-d take or a full reduction) are not."""
    return not (isinstance(tensor, (np.ndarray, np.generic)) and tensor.dtype.kind in "biu")


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, dtype (``float`` or ``int``) and shape, the first
    axis being the batch; dimensions are ints, or None (or a name) where they vary."""

    name: str
    dtype: str = FLOAT
    shape: tuple = (None,)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ModelFileError(f"Tensor {self.name!r}: dtype {self.dtype!r}, must be one of {', '.join(DTYPES)}.")
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def fixed_batch(self) -> "int | None":
        """The batch size the graph was exported with, when it is a fixed number."""
        return self.shape[0] if self.shape and isinstance(self.shape[0], int) else None


@dataclass(frozen=True)
class Node:
    """One operator application: ``outputs = op(inputs; attrs)``. An empty input name
    stands for an omitted optional input."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def __reduce__(self):
        return Node, (self.name, self.op, self.inputs, self.outputs, dict(self.attrs))


def _constant(name: str, value) -> np.ndarray:
    """An initialiser as a read-only float64 or int64 array (floats must be finite)."""
    a = np.asarray(value)
    if a.dtype.kind == "b" or a.dtype.kind in "iu":
        out = np.array(a, dtype=np.int64)
        if a.dtype.kind == "u" and np.any(a > np.iinfo(np.int64).max):
            raise DataError(f"initialiser {name!r} has integers beyond int64.")
    elif a.dtype.kind == "f":
        out = a if (a.dtype == np.float64 and not a.flags.writeable) else np.array(a, dtype=np.float64)
        bad = ~np.isfinite(out)
        if bad.any():
            where = first_bad(bad) if out.ndim else []
            raise DataError(f"initialiser {name!r} contains NaN or Inf ({int(bad.sum())} entries, first at {where}).")
    else:
        raise DataError(f"initialiser {name!r} has dtype {a.dtype}, expected numbers.")
    out.setflags(write=False)
    return out


class Graph:
    """A checked graph of operators (see the module docstring). ``nodes`` are reordered
    topologically (stable: the given order where it is already one)."""

    def __init__(self, nodes: Sequence[Node], inputs: Sequence[TensorInfo], outputs: Sequence[str],
                 initializers: "Mapping[str, np.ndarray] | None" = None, name: str = "", meta: "dict | None" = None):
        from .ops import OPS

        self.name = str(name)
        self.meta = dict(meta or {})
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.initializers = {k: _constant(k, v) for k, v in (initializers or {}).items()}
        if not self.inputs:
            raise ModelFileError(f"Graph {self.name!r} has no inputs.")
        if not self.outputs:
            raise ModelFileError(f"Graph {self.name!r} has no outputs.")
        seen: set[str] = set()
        for n in nodes:
            if n.name in seen:
                raise ModelFileError(f"Graph {self.name!r}: node name {n.name!r} is used twice.")
            seen.add(n.name)
            if n.op not in OPS:
                raise ModelFileError(f"unsupported op {n.op!r} (node {n.name!r}).")
            OPS.get(n.op).validate(n)
        producer: dict[str, str] = {}
        for t in self.inputs:
            producer.setdefault(t.name, "<input>")
        for k in self.initializers:
            if k in producer:
                raise ModelFileError(f"Graph {self.name!r}: {k!r} is both an input and an initialiser.")
            producer[k] = "<initializer>"
        for n in nodes:
            for out in n.outputs:
                if out and out in producer:
                    raise ModelFileError(f"Graph {self.name!r}: tensor {out!r} is produced twice (node {n.name!r}).")
                if out:
                    producer[out] = n.name
        for n in nodes:
            for inp in n.inputs:
                if inp and inp not in producer:
                    raise ModelFileError(f"Graph {self.name!r}: node {n.name!r} reads {inp!r}, which nothing produces.")
        for out in self.outputs:
            if out not in producer:
                raise ModelFileError(f"Graph {self.name!r}: output {out!r} is not produced by any node.")
        self.nodes = _topological(list(nodes), producer)
        self._stored: dict = {}

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}: {len(self.nodes)} nodes, inputs {[t.name for t in self.inputs]}, " \
               f"outputs {list(self.outputs)})"

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ModelFileError(f"Graph {self.name!r} has no node {name!r}.")

    @property
    def op_types(self) -> list[str]:
        """The distinct operator types, in order of first use."""
        return list(dict.fromkeys(n.op for n in self.nodes))

    @property
    def n_params(self) -> int:
        """Number of floating-point constants (weights, biases, tables)."""
        return int(sum(a.size for a in self.initializers.values() if a.dtype == np.float64))

    @property
    def operators(self) -> dict[str, int]:
        """Operator type -> number of nodes of that type, in order of first use."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    @property
    def architecture(self) -> str:
        """The operators and their counts, e.g. ``Reshape, Conv x2, Relu x2, Gemm``."""
        return ", ".join(op if count == 1 else f"{op} x{count}" for op, count in self.operators.items())

    @property
    def site_names(self) -> list[str]:
        """The accumulation sites the nodes declare (``node`` or ``node.role``), in node order."""
        from .ops import OPS

        return [f"{n.name}.{role}" if role else n.name for n in self.nodes for role in OPS.get(n.op).site_roles(n)]

    def describe(self) -> dict:
        """JSON-ready summary: name, operators, parameter count, accumulation sites (count and
        names), inputs, outputs, meta."""
        sites = self.site_names
        return {
            "name": self.name, "architecture": self.architecture, "operators": self.operators,
            "n_params": self.n_params, "accumulation_sites": len(sites), "sites": sites,
            "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in self.inputs],
            "outputs": list(self.outputs), "meta": self.meta,
        }

    def renamed(self, name: "str | None" = None, meta: "dict | None" = None) -> "Graph":
        """The same graph under another name and/or meta (nothing re-checked)."""
        other = copy.copy(self)
        other.name = self.name if name is None else str(name)
        other.meta = dict(self.meta if meta is None else meta)
        other._stored = {}
        return other

    def with_storage(self, storage) -> "Graph":
        """A copy whose floating-point initialisers are rounded to the storage format
        (nearest; saturating for ``FMT:saturate``; overflow otherwise refused), cached."""
        from ..storage import parse_storage

        st = parse_storage(storage)
        if st is None:
            return self
        if st.spec not in self._stored:
            inits = {k: st.round_finite(v, f"{self.name}: initialiser {k!r}") if v.dtype == np.float64 else v
                     for k, v in self.initializers.items()}
            self._stored[st.spec] = Graph(self.nodes, self.inputs, self.outputs, inits, self.name,
                                          {**self.meta, "storage": st.spec})
        return self._stored[st.spec]

    def consumers(self) -> dict[str, list[Node]]:
        """Tensor name -> the nodes that read it."""
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for t in n.inputs:
                if t:
                    out.setdefault(t, []).append(n)
        return out

    def producers(self) -> dict[str, Node]:
        """Tensor name -> the node that writes it (graph inputs and initialisers have none)."""
        return {t: n for n in self.nodes for t in n.outputs if t}

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The data inputs as float64 / int64 arrays with one batch size; a missing input,
        an extra one or a batch mismatch raises :class:`DataError` / :class:`ShapeError`."""
        from ..arrays import real_array

        missing = [t.name for t in self.inputs if t.name not in feeds]
        if missing:
            have = ", ".join(sorted(feeds)) or "none"
            raise DataError(f"Graph {self.name!r} needs the data input(s) {', '.join(missing)} (given: {have}).")
        extra = sorted(set(feeds) - {t.name for t in self.inputs})
        if extra:
            raise DataError(f"Graph {self.name!r} has no input named {', '.join(extra)}; its inputs are "
                            f"{', '.join(t.name for t in self.inputs)}.")
        out, batch = {}, None
        for t in self.inputs:
            where = f"Input {t.name!r} of {self.name!r}" if self.name else f"Input {t.name!r}"
            if t.dtype == INT:
                a = np.asarray(feeds[t.name])
                if a.dtype.kind not in "biu" and not (a.dtype.kind == "f" and np.all(a == np.round(a))):
                    raise DataError(f"{where} must hold integers, got dtype {a.dtype}.")
                a = np.array(a, dtype=np.int64)
            else:
                a = real_array(feeds[t.name], where, finite=True, copy=True)
            if a.ndim == 0:
                raise ShapeError(f"{where} needs a leading batch dimension, got a scalar.")
            if len(t.shape) > 1 and a.ndim != len(t.shape):
                raise ShapeError(f"{where} must have {len(t.shape)} dimensions (batch first), got shape {a.shape}.")
            for k, (got, want) in enumerate(zip(a.shape[1:], t.shape[1:]), start=1):
                if isinstance(want, int) and got != want:
                    raise ShapeError(f"{where} has size {got} on axis {k}, the graph expects {want} (shape {t.shape}).")
            if batch is None:
                batch = a.shape[0]
            elif a.shape[0] != batch:
                raise ShapeError(f"{where} has {a.shape[0]} samples but other inputs have {batch}.")
            out[t.name] = a
        return out


def _topological(nodes: list[Node], producer: dict[str, str]) -> tuple[Node, ...]:
    """Kahn's algorithm, taking nodes in their given order whenever they are ready."""
    by_name = {n.name: n for n in nodes}
    deps = {n.name: {producer[t] for t in n.inputs if t and producer[t] in by_name} for n in nodes}
    done: list[Node] = []
    ready = set()
    pending = list(nodes)
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if deps[n.name] <= ready:
                done.append(n)
                ready.add(n.name)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            raise ModelFileError(f"The graph has a cycle through node {rest[0].name!r}.")
        pending = rest
    return tuple(done)
