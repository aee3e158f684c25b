"""The recompute policy: Algorithm 1 of El Arar, Filip, Mary, Riccietti (arXiv 2503.15568)
and its variants (docs/method.md#the-recompute-policy).

For each layer, low format L, high format H, tolerance tau, at the computed input x̂:

1. ŷ = acc_L(W x̂ + b) for every component;
2. a score from the low-precision output (``CRITERIA``):
   ``kappa``       s_i = kappa^_i kappa_sigma(ŷ_i), kappa^_i = acc_L(|W||x̂| + |b|)_i / |ŷ_i|;
   ``kappa-prime`` s_i = kappa_sigma(ŷ_i) / |ŷ_i| (the authors' released experiments);
   ``kappa-holder``, ``kappa-blocked:B`` as ``kappa`` with a certified upper bound on
   |W||x̂| + |b| in place of the low pass (``analysis.estimates``);
3. recompute in H every component with s_i > tau, every component whose low result
   overflowed or is not finite, and every ŷ_i = 0 (score undefined; so is a NaN score,
   which arises as 0 · inf when acc_L(|W||x̂| + |b|) overflowed where kappa_sigma = 0);
4. z = sigma(ŷ), rounded to the storage format if set; z feeds layer k + 1.

Step 3 may instead spend a budget or meet a target error, at the granularity of
components, output rows or tiles (``analysis.selection``).

Variants: :func:`recompute_multilevel` (formats F_1 < ... < F_r; component i takes the
cheapest F_j with u_{F_j} s_i <= tau) and :func:`recompute_static` (per-neuron formats
fixed on a calibration set, no run-time estimation). Baselines live in
``analysis.baselines``; the criteria and the selection rule, shared with the graph policy
(``analysis.graph_policy``), in ``analysis.criteria``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from emulator.graph import Graph
from emulator.network import Network

from .criteria import (CRITERIA, Criterion, PolicyError, check_tau, criterion_names, forced, get_criterion, scores,
                       select, sensitivity_scores)
from .mixed import LayerStep, MixedRun, Passes, format_list, mixed_forward, take_first
from .cost import CostModel
from .estimates import ESTIMATE_FORMAT
from .methods import GUIDED, MULTI_LEVEL, STATIC
from .selection import choose, make_rule

__all__ = [
    "PolicyError", "Criterion", "CRITERIA", "get_criterion", "criterion_names", "scores", "sensitivity_scores", "forced",
    "select",
    "recompute", "recompute_multilevel", "recompute_static", "static_assignment", "check_tau",
]


def _scored(layer, xhat: np.ndarray, passes: Passes, low, crit: Criterion):
    """The low pass ŷ, the forced components and the scores (Algorithm 1, steps 1-2)."""
    y, ovf = passes.full(layer, xhat, low)
    magnitude = passes.magnitude(layer, xhat, low, crit.estimate) if crit.needs_magnitude else None
    return y, forced(y, ovf), scores(y, layer.activation, crit, magnitude)


def _estimate_work(crit: Criterion, layer, samples: int) -> tuple[int, dict]:
    """The work before any recomputation: low-precision inner products (the low pass, plus
    the low magnitude pass of ``kappa``) and the certified estimate's fp32 operations."""
    est = crit.estimate
    low = samples * layer.n_outputs * (1 + (est.low_passes if est else 0))
    steps = {ESTIMATE_FORMAT: samples * est.steps(layer.n_inputs, layer.n_outputs)} if est and est.certified else {}
    return low, steps


def recompute(network: "Network | Graph", x, low, high, tau: "float | None", criterion: "str | Criterion" = "kappa",
              storage=None, *, cost: "CostModel | str" = "bits", passes: "Passes | None" = None,
              budget: "float | None" = None, target_error: "float | None" = None, granularity: str = "component",
              tile: "str | tuple[int, int]" = (16, 16)) -> MixedRun:
    """Algorithm 1: every component in ``low``, then the selected ones (see the module
    docstring) recomputed in ``high``; layer k's mixed output feeds layer k + 1.

    Instead of ``tau`` (None), a ``budget`` and / or ``target_error``; and a
    ``granularity`` (component, row, or tile of ``tile`` R x C) at which whole units are
    recomputed (``analysis.selection``).

    Returns a :class:`~analysis.mixed.MixedRun`: ``outputs``, ``masks`` (recomputed
    components per layer), ``layer_fraction``, ``fraction`` and ``cost`` (low pass for
    every component, plus the criterion's estimate, plus the high pass of each
    recomputed one, relative to uniform ``high``).

    A :class:`~emulator.graph.Graph` (``x``: its inputs by name, a Dataset or one array)
    runs the policy (any rule, at any granularity) at every accumulation site
    (``analysis.graph_policy.recompute_graph``) and returns a :class:`~analysis.graph_policy.GraphMixedRun`."""
    rule = make_rule(tau, budget, target_error, granularity, tile)
    if isinstance(network, Graph):
        from .graph_policy import recompute_graph

        return recompute_graph(network, x, low, high, rule.tau, criterion, storage, cost=cost, passes=passes,
                               budget=rule.budget, target_error=rule.target, granularity=rule.granularity,
                               tile=rule.tile)
    crit = get_criterion(criterion)
    lo, hi = format_list([low, high])

    def step(k, layer, xhat, passes_):
        y, must, s = _scored(layer, xhat, passes_, lo, crit)
        mask = select(s, must, rule.tau) if rule.plain else choose(s, must, rule, lo.fmt.u)
        y_high, _ = passes_.some(layer, xhat, hi, mask)
        low_work, steps = _estimate_work(crit, layer, y.shape[0])
        return LayerStep(np.where(mask, y_high, y), mask.astype(np.int8), {0: low_work, 1: int(mask.sum())}, steps)

    return mixed_forward(network, x, (lo, hi), step, method=GUIDED, criterion=crit.name, tau=rule.tau,
                         storage=storage, cost=cost, passes=passes, selection=None if rule.plain else rule.describe())


def _check_levels(levels) -> tuple:
    rows = format_list(levels)
    if len(rows) < 2:
        raise PolicyError(f"levels == {[getattr(r, 'spec', r) for r in rows]}: give at least two formats, cheapest first.")
    for a, b in zip(rows, rows[1:]):
        if not b.fmt.u < a.fmt.u:
            raise PolicyError(
                f"levels must go from least to most precise: {b.spec} (u = {b.fmt.u:g}) follows {a.spec} (u = {a.fmt.u:g})."
            )
    return rows


def recompute_multilevel(network: Network, x, levels: Sequence, tau: float, criterion: "str | Criterion" = "kappa",
                         storage=None, *, cost: "CostModel | str" = "bits", passes: "Passes | None" = None) -> MixedRun:
    """Multi-level Algorithm 1: score from the F_1 pass; component i takes the first
    F_j with u_{F_j} s_i <= tau (the last one if none, if forced, or if s_i is undefined);
    a result that overflows in F_j moves on to F_{j+1}. With two levels this is
    :func:`recompute` at tau / u_{F_1}. Cost: the F_1 pass (and magnitude pass) for every
    component, plus one pass in each F_j a component is computed in, against uniform F_r."""
    tau = check_tau(tau)
    crit = get_criterion(criterion)
    rows = _check_levels(levels)
    top = len(rows) - 1
    units = [r.fmt.u for r in rows]

    def step(k, layer, xhat, passes_):
        y, must, s = _scored(layer, xhat, passes_, rows[0], crit)
        with np.errstate(all="ignore"):
            choice = sum((~(u * s <= tau)).astype(np.int8) for u in units[:-1])
        choice = np.where(must, top, choice).astype(np.int8)
        pre = y.copy()
        low_work, steps = _estimate_work(crit, layer, y.shape[0])
        work = {0: low_work}
        for j in range(1, top + 1):
            here = choice == j
            y_j, ovf_j = passes_.some(layer, xhat, rows[j], here)
            work[j] = int(here.sum())
            pre = np.where(here, y_j, pre)
            if j < top:
                choice = np.where(ovf_j, j + 1, choice).astype(np.int8)
        return LayerStep(pre, choice, work, steps)

    return mixed_forward(network, x, rows, step, method=MULTI_LEVEL, criterion=crit.name, tau=tau,
                         storage=storage, cost=cost, passes=passes)


def static_assignment(calibration: MixedRun) -> list[np.ndarray]:
    """Per-neuron formats from a guided calibration run: in layer k, the
    h_k = round(f_k m_k) neurons recomputed most often (f_k the calibration's recompute
    fraction of layer k; ties to the lower index) go to high, the rest stay low."""
    out = []
    for mask in calibration.masks:
        frequency = mask.mean(axis=0)
        h = int(math.floor(mask.mean() * mask.shape[1] + 0.5))
        out.append(take_first(-frequency[None, :], np.array([h]))[0])
    return out


def recompute_static(network: Network, x_calibration, x, low, high, tau: float,
                     criterion: "str | Criterion" = "kappa", storage=None, *, cost: "CostModel | str" = "bits",
                     passes: "Passes | None" = None) -> MixedRun:
    """Static variant: run Algorithm 1 on ``x_calibration``, fix each neuron's format
    with :func:`static_assignment`, then evaluate ``x`` with no run-time estimation:
    high neurons are computed in high only, low neurons in low, and a low result that
    overflows or is not finite is recomputed in high. Cost: n c(F) per inner product done."""
    tau = check_tau(tau)
    crit = get_criterion(criterion)
    lo, hi = format_list([low, high])
    calibration = recompute(network, x_calibration, lo, hi, tau, crit, storage, cost=cost)
    assignment = static_assignment(calibration)

    def step(k, layer, xhat, passes_):
        in_high = np.broadcast_to(assignment[k], (xhat.shape[0], layer.n_outputs))
        y, ovf = passes_.some(layer, xhat, lo, ~in_high)
        mask = in_high | ovf | ~np.isfinite(np.where(in_high, 0.0, y))
        y_high, _ = passes_.some(layer, xhat, hi, mask)
        work = {0: int((~in_high).sum()), 1: int(mask.sum())}
        return LayerStep(np.where(mask, y_high, y), mask.astype(np.int8), work)

    return mixed_forward(network, x, (lo, hi), step, method=STATIC, criterion=crit.name, tau=tau,
                         storage=storage, cost=cost, passes=passes)
