"""The native file layout of a graph, in an ``.npz`` (docs/method.md#model-files):

* ``graph``: a JSON string — ``name``, ``inputs`` / ``outputs`` (name, dtype, shape with
  null for varying dimensions), ``nodes`` (name, op, inputs, outputs, attrs) and ``meta``;
  array-valued attributes are stored apart and named ``{"array": KEY}`` in the JSON;
* ``init/<name>``: the initialisers (float64 or int64);
* ``attr/<k>``: the array-valued attributes.

Read with ``allow_pickle=False``; floats round-trip exactly (JSON holds the shortest
repr of a float64)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from ..atomic import write_atomic
from ..errors import ModelFileError
from .ir import Graph, Node, TensorInfo

__all__ = ["graph_to_arrays", "graph_from_arrays", "save_graph", "GRAPH_KEY"]

GRAPH_KEY = "graph"


def _encode(value, arrays: dict):
    if isinstance(value, np.ndarray):
        key = f"attr/{len(arrays)}"
        arrays[key] = value
        return {"array": key}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays) for v in value]
    return value


def _decode(value, arrays: Mapping, where: str):
    if isinstance(value, dict):
        key = value.get("array")
        if key not in arrays:
            raise ModelFileError(f"{where}: attribute array {key!r} is missing.")
        return np.asarray(arrays[key])
    if isinstance(value, list):
        return tuple(_decode(v, arrays, where) for v in value)
    return value


def graph_to_arrays(graph: Graph) -> dict[str, np.ndarray]:
    """The arrays of the native layout (``graph`` JSON as a 0-d string array)."""
    arrays: dict[str, np.ndarray] = {}
    nodes = [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
              "attrs": {k: _encode(v, arrays) for k, v in n.attrs.items()}} for n in graph.nodes]
    doc = {
        "name": graph.name,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": [d if isinstance(d, int) else None for d in t.shape]}
                   for t in graph.inputs],
        "outputs": list(graph.outputs), "nodes": nodes, "meta": graph.meta,
    }
    out = {GRAPH_KEY: np.array(json.dumps(doc))}
    out.update({f"init/{k}": np.asarray(v) for k, v in graph.initializers.items()})
    out.update(arrays)
    return out


def graph_from_arrays(arrays: Mapping[str, np.ndarray], where: str) -> Graph:
    """A :class:`Graph` from the native layout; ``where`` prefixes errors."""
    try:
        doc = json.loads(str(np.asarray(arrays[GRAPH_KEY]).item()))
        nodes = [Node(d["name"], d["op"], tuple(d["inputs"]), tuple(d["outputs"]),
                      {k: _decode(v, arrays, f"{where}: node {d['name']!r}") for k, v in d.get("attrs", {}).items()})
                 for d in doc["nodes"]]
        inputs = [TensorInfo(t["name"], t.get("dtype", "float"), tuple(t.get("shape") or (None,))) for t in doc["inputs"]]
        outputs = list(doc["outputs"])
        name, meta = doc.get("name", ""), doc.get("meta", {})
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}: malformed graph description ({type(exc).__name__}: {exc}).") from None
    inits = {k[len("init/"):]: arrays[k] for k in arrays if k.startswith("init/")}
    return Graph(nodes, inputs, outputs, inits, name, meta)


def save_graph(graph: Graph, path: "str | Path") -> Path:
    """Write ``graph`` in the native layout, atomically."""
    payload = graph_to_arrays(graph)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **payload)

    return write_atomic(Path(path), write)
