"""Local analysis of a graph's accumulation sites (docs/method.md#graphs): at every site,
the emulated sum against the exact sum of the SAME computed operands, with the local
bound of its accumulation model and the first-order prediction c u kappa_i.

An emulated run that records its sites (``emulator.graph.arithmetic.SiteRecord``: the
operands x̂ (rows, n) and ŵ (m, n) as the site saw them, or per group for an activation
x activation product) gives, per site:

* ``exact``: RN(exact sum of x̂ ŵ + b), within ``radius`` = half an ulp of it;
* ``bound``: ``analysis.bounds.local_bound`` (c(n) sum |x̂ ŵ| + c_b |b| + underflow, capped
  at max_out + a_i), for the site's accumulation spec;
* ``kappa``: a_i / |ŷ_i| with a_i = |b_i| + sum_j |x̂_j ŵ_ij| (0/0 = 0, c/0 = inf), and
  ``predicted`` = c u kappa (the paper's first order);
* ``covered``: the component did not overflow and its operands are finite.

Everything is (rows, m): a batched site's groups are stacked along the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.graph.arithmetic import SiteRecord
from emulator.metrics import ratio
from emulator.reference import exact_linear

from .bounds import local_bound, model_constant
from .conditioning import absolute_sums

__all__ = ["SiteComponents", "site_components"]


@dataclass
class SiteComponents:
    """One site's components on one batch (see the module docstring); ``n`` is the length
    of its sums, ``groups`` the number of separate products (1 for shared weights)."""

    name: str
    op: str
    spec: str
    n: int
    groups: int
    y_hat: np.ndarray
    exact: np.ndarray
    radius: np.ndarray
    bound: np.ndarray
    capped: np.ndarray
    kappa: np.ndarray
    predicted: np.ndarray
    covered: np.ndarray
    first_order: float
    vacuous: bool


def _stacked(record: SiteRecord):
    """(x, w, y, overflow) per group: one group for shared weights."""
    if not record.batched:
        return [(record.x, record.w, record.y, record.overflow)]
    return [(record.x[g], record.w[g], record.y[g], record.overflow[g]) for g in range(record.x.shape[0])]


def site_components(record: SiteRecord, bound="deterministic") -> "SiteComponents | None":
    """The local analysis of one emulated site (None for a site run in float64, which no
    accumulation model describes)."""
    acc = record.acc
    if acc is None:
        return None
    parts = {k: [] for k in ("y", "exact", "bound", "capped", "kappa", "covered")}
    for x, w, y, ovf in _stacked(record):
        finite_x, finite_w = np.isfinite(x).all(axis=1), np.isfinite(w).all(axis=1)
        safe_x = np.where(finite_x[:, None], x, 0.0)
        safe_w = np.where(finite_w[:, None], w, 0.0)  # an activation operand past an overflow
        exact = np.asarray(exact_linear(safe_x, safe_w, record.bias), dtype=np.float64)
        b, capped = local_bound(safe_x, safe_w, record.bias, acc, bound, return_capped=True)
        parts["y"].append(y)
        parts["exact"].append(exact)
        parts["bound"].append(b)
        parts["capped"].append(capped)
        parts["kappa"].append(ratio(absolute_sums(safe_x, safe_w, record.bias), y))
        parts["covered"].append(finite_x[:, None] & finite_w[None, :] & ~ovf & np.isfinite(y))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    c = model_constant(acc, record.w.shape[-1], record.bias is not None, bound)
    with np.errstate(invalid="ignore"):
        radius = np.where(np.isfinite(cat["exact"]), 0.5 * np.spacing(np.abs(cat["exact"])), np.inf)
    return SiteComponents(
        name=record.site.name, op=record.site.op, spec=acc.spec, n=int(record.w.shape[-1]),
        groups=int(record.x.shape[0]) if record.batched else 1, y_hat=cat["y"], exact=cat["exact"], radius=radius,
        bound=cat["bound"], capped=cat["capped"], kappa=cat["kappa"], predicted=c.first_order * cat["kappa"],
        covered=cat["covered"], first_order=c.first_order, vacuous=c.vacuous,
    )
