"""Validation over a grid (docs/method.md#the-validation-grid): every model x accumulation
spec of the grid validated on the same samples, one row each: components checked,
certain violations of the deterministic bounds (local and global), median tightness and
vacuous sites and tensors. With rigorous bounds and a bit-exact emulator every row has
0 violations; the grid is the evidence that they do across formats, orders and product
modes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product

import numpy as np

from emulator.data import load_model_data
from emulator.modelio import load_model

from .validation import validate

__all__ = ["GridRow", "GRID_FORMATS", "GRID_ORDERS", "PRODUCT_MODES", "grid_specs", "grid_row", "run_grid"]

GRID_FORMATS = ("fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2")
GRID_ORDERS = ("recursive", "pairwise", "blocked:32")
PRODUCT_MODES = ("exact", "rounded")
"""``exact``: products enter the sum exactly; ``rounded``: each product is first rounded
to the accumulator format (``products=F``)."""


def grid_specs(formats=GRID_FORMATS, orders=GRID_ORDERS, products=PRODUCT_MODES) -> list[str]:
    """The accumulation specs of the grid formats x orders x product modes."""
    return [f"{fmt}:{order}" + (f":products={fmt}" if mode == "rounded" else "")
            for fmt, order, mode in product(formats, orders, products)]


def _median(values) -> "float | None":
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(finite)) if finite else None


@dataclass(frozen=True)
class GridRow:
    """One validation of the grid: components checked and certain violations (local: at
    the sites; global: every float tensor), the median over sites (tensors) of their
    median tightness bound / measured error, the number of vacuous sites and tensors."""

    model: str
    spec: str
    samples: int
    local_components: int
    global_components: int
    local_violations: int
    global_violations: int
    local_tightness: "float | None"
    global_tightness: "float | None"
    vacuous_sites: int
    vacuous_tensors: int
    sites: int
    tensors: int

    @property
    def violations(self) -> int:
        return self.local_violations + self.global_violations

    def to_dict(self) -> dict:
        return {**asdict(self), "violations": self.violations}


def grid_row(model: str, spec: str, result) -> GridRow:
    """The row of one graph validation (``analysis.graph_validation.GraphValidation``)."""
    return GridRow(
        model=model, spec=spec, samples=result.samples,
        local_components=sum(s.local.components for s in result.sites),
        global_components=sum(t.global_.components for t in result.tensors),
        local_violations=result.violations_local, global_violations=result.violations_global,
        local_tightness=_median(s.local.median_tightness for s in result.sites),
        global_tightness=_median(t.global_.median_tightness for t in result.tensors),
        vacuous_sites=sum(bool(s.local.vacuous) for s in result.sites),
        vacuous_tensors=sum(bool(t.global_.vacuous) for t in result.tensors),
        sites=len(result.sites), tensors=len(result.tensors),
    )


def run_grid(models, specs, samples: "int | None" = None, data: "str | None" = None, on_row=None) -> list[GridRow]:
    """Validate every model (bundled name or file) under every spec on its first
    ``samples`` samples of ``data`` (default: the model's own); ``on_row(row)`` is called
    as each row is done."""
    rows = []
    for name in models:
        graph = load_model(name)
        dataset = load_model_data(graph, data).head(samples)
        for spec in specs:
            result = validate(graph, dataset, spec, labels=dataset.y, data_name=dataset.name)
            row = grid_row(name, spec, result)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows
