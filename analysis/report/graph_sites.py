"""Per-site data of a graph's report: the condition numbers kappa_i = a_i / |ŷ_i| of every
accumulation site (``analysis.sites.site_components``, the computation ``validate_graph``
summarises) as quantiles, and each site's place in a (block, role) grid for the heat maps.

A site named ``P.rest``, where ``P`` is the shortest prefix of dotted parts whose last
part ends in a digit (``block0.attention.query``, ``encoder.layer.3.output.dense``), sits
in block ``P`` with role ``rest``; any other site is its own role outside the blocks
(block ``""``).
"""

from __future__ import annotations

import re

import numpy as np

from emulator.graph import AccumulationPlan, Emulated, Graph
from emulator.graph.engine import batches, prepare, run_graph

from ..bounds import parse_bound
from ..sites import site_components

__all__ = ["site_conditioning", "block_role", "QUANTILES"]

QUANTILES = (0.5, 0.9, 0.99, 1.0)
_BLOCK = re.compile(r"^((?:[^.]+\.)*?[^.]*\d)\.(.+)$")


def block_role(name: str) -> tuple[str, str]:
    """(block, role) of a site name (see the module docstring)."""
    found = _BLOCK.match(name)
    return (found.group(1), found.group(2)) if found else ("", name)


def _quantiles(kappa: np.ndarray) -> dict:
    k = np.asarray(kappa, dtype=np.float64).ravel()
    finite = k[np.isfinite(k)]
    values = np.quantile(finite, QUANTILES).tolist() if finite.size else [None] * len(QUANTILES)
    return {"quantiles": dict(zip((f"q{round(100 * q)}" for q in QUANTILES), values)),
            "components": int(k.size), "inf": int(np.count_nonzero(np.isinf(k))), "nan": int(np.count_nonzero(np.isnan(k)))}


def site_conditioning(graph: Graph, dataset, acc, storage=None, batch_size: int = 16) -> dict:
    """kappa_i of every accumulation site on ``dataset`` (the operands of the emulated pass
    under ``acc``): per site its block, role, operator and quantiles of kappa."""
    feeds = dataset.feeds([t.name for t in graph.inputs])
    prepared, feeds, st = prepare(graph, feeds, storage)
    kappas: dict[str, list] = {}
    ops: dict[str, str] = {}
    spec = parse_bound("deterministic")
    for chunk in batches(graph, feeds, batch_size):
        emulated = Emulated(AccumulationPlan(acc), st, record=True)
        run_graph(prepared, chunk, emulated)
        for record in emulated.records:
            sc = site_components(record, spec)
            if sc is not None:
                kappas.setdefault(sc.name, []).append(sc.kappa.ravel())
                ops[sc.name] = sc.op
    sites = []
    for name, parts in kappas.items():
        block, role = block_role(name)
        sites.append({"name": name, "op": ops[name], "block": block, "role": role,
                      **_quantiles(np.concatenate(parts))})
    return {"source": f"kappa_i = a_i / |y_i| at the operands of the {acc} pass, first {len(dataset)} samples",
            "sites": sites}
