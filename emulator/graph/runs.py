"""What a forward pass gives back (:class:`GraphRun`), and the runs of a pass's batches
joined along the samples (docs/method.md#graphs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arithmetic import Arithmetic

__all__ = ["GraphRun", "join_runs"]


@dataclass
class GraphRun:
    """One forward pass: ``outputs`` (the graph's outputs by name), ``values`` (every tensor
    asked to be kept, outputs included), and the arithmetic (its overflow masks per site
    and, when recording, its site records)."""

    outputs: dict
    values: dict
    arith: Arithmetic = field(repr=False)

    @property
    def overflow(self) -> dict[str, np.ndarray]:
        return self.arith.overflow


def join_runs(runs: list[GraphRun], masks: list[dict]) -> GraphRun:
    """Batches of one pass joined along the samples (``masks``: each batch's overflow masks)."""
    arith = runs[0].arith
    cat = arith.math.concatenate if hasattr(arith, "math") else np.concatenate
    outputs = {k: _cat(cat, [r.outputs[k] for r in runs]) for k in runs[0].outputs}
    values = {k: _cat(cat, [r.values[k] for r in runs]) for k in runs[0].values}
    arith.overflow = {k: np.concatenate([m[k] for m in masks]) for k in masks[0]}
    return GraphRun(outputs, values, arith)


def _cat(cat, parts):
    if all(isinstance(p, np.ndarray) and p.dtype.kind in "biu" for p in parts):
        return np.concatenate(parts)
    return cat(parts, 0)
