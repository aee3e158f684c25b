"""Baselines for the recompute policy (docs/method.md#baselines): uniform low,
uniform high, and — at the same recompute count per layer and sample as a guided run —
random selection (seeded) and local-oracle selection (the components with the largest
true local error of their own layer).

Random and local-oracle runs compute every component in low, recompute the forced ones
(overflowed, not finite, ŷ = 0, as Algorithm 1 does), then fill the remaining budget:
in layer k and sample s they recompute as many components as the guided run did there.
They pay no estimation pass, and carry the criterion, tau and selection rule of the run
they are matched to (so that tables pair them). The local oracle ranks by the true local error of ONE
layer's output, sigma(ŷ_i) against sigma(ỹ_i), ỹ = exact W x̂ + b at the same computed
input x̂ (``ORACLE_ERRORS``: relative, 0/0 = 0 and c/0 = inf, or absolute); it does not
know how an error propagates to the network output, so it is not the best possible
selection for the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from emulator.graph import Graph
from emulator.network import Network
from emulator.registry import Registry

from .cost import CostModel
from .methods import LOCAL_ORACLE, RANDOM, UNIFORM_HIGH, UNIFORM_LOW
from .mixed import LayerStep, MixedRun, Passes, format_list, mixed_forward, take_first
from .criteria import ORACLE_ERRORS, OracleError, PolicyError, forced

__all__ = ["uniform_low", "uniform_high", "random_selection", "local_oracle_selection", "ORACLE_ERRORS", "OracleError",
           "MatchedBaseline", "MATCHED_BASELINES"]


def _uniform(level: int, method: str, network: "Network | Graph", x, low, high, storage, cost, passes) -> MixedRun:
    if isinstance(network, Graph):
        from .graph_policy import uniform_graph

        return uniform_graph(network, x, low, high, level, storage, cost=cost, passes=passes)
    formats = format_list([low, high])

    def step(k, layer, xhat, passes_):
        y, _ = passes_.full(layer, xhat, formats[level])
        return LayerStep(y, np.full(y.shape, level, np.int8), {level: y.size})

    return mixed_forward(network, x, formats, step, method=method, storage=storage, cost=cost, passes=passes)


def uniform_low(network: "Network | Graph", x, low, high, storage=None, *, cost: "CostModel | str" = "bits",
                passes: "Passes | None" = None) -> MixedRun:
    """Every component in ``low`` and nothing recomputed (cost relative to ``high``); a
    graph at every site (``analysis.graph_policy.uniform_graph``)."""
    return _uniform(0, UNIFORM_LOW, network, x, low, high, storage, cost, passes)


def uniform_high(network: "Network | Graph", x, low, high, storage=None, *, cost: "CostModel | str" = "bits",
                 passes: "Passes | None" = None) -> MixedRun:
    """Every component in ``high`` only (relative cost 1)."""
    return _uniform(1, UNIFORM_HIGH, network, x, low, high, storage, cost, passes)


def _budgets(like: MixedRun, n_samples: int) -> list[np.ndarray]:
    """Recomputed components per (layer, sample) in the run to match."""
    masks = like.masks
    if masks[0].shape[0] != n_samples:
        raise PolicyError(f"The run to match has {masks[0].shape[0]} samples but the input has {n_samples}.")
    return [m.sum(axis=1) for m in masks]


def _matched(network: Network, x, like: MixedRun, method: str, ranking: Callable, storage, cost, passes) -> MixedRun:
    """Low pass, then per sample the forced components and the best-ranked others (lowest
    ``ranking`` key first) up to the guided run's count, recomputed in high."""
    lo, hi = like.formats[0], like.formats[-1]
    budgets = _budgets(like, np.atleast_2d(np.asarray(x)).shape[0])

    def step(k, layer, xhat, passes_):
        y, ovf = passes_.full(layer, xhat, lo)
        must = forced(y, ovf)
        mask = must | take_first(ranking(layer, xhat, passes_, y), budgets[k], first=must)
        y_high, _ = passes_.some(layer, xhat, hi, mask)
        return LayerStep(np.where(mask, y_high, y), mask.astype(np.int8), {0: y.size, 1: int(mask.sum())})

    return mixed_forward(network, x, (lo, hi), step, method=method, criterion=like.criterion, tau=like.tau,
                         storage=storage, cost=cost, passes=passes, selection=like.selection)


def random_selection(network: "Network | Graph", x, like: MixedRun, seed: int = 0, storage=None, *,
                     cost: "CostModel | str" = "bits", passes: "Passes | None" = None) -> MixedRun:
    """The forced components plus uniformly random others (``seed``), as many per layer
    and sample as in ``like`` (a graph: per site, ``analysis.graph_policy.random_graph``)."""
    if isinstance(network, Graph):
        from .graph_policy import random_graph

        return random_graph(network, x, like, seed, storage, cost=cost, passes=passes)
    rng = np.random.default_rng(seed)
    return _matched(network, x, like, RANDOM, lambda layer, xhat, p, y: rng.random(y.shape), storage, cost, passes)


def local_oracle_selection(network: "Network | Graph", x, like: MixedRun, error: str = "relative", storage=None, *,
                           cost: "CostModel | str" = "bits", passes: "Passes | None" = None,
                           precision: int = 113) -> MixedRun:
    """The forced components plus those with the largest true local error (``error``:
    relative or absolute), as many per layer and sample as in ``like`` (a graph: of each
    site's sums, ``analysis.graph_policy.local_oracle_graph``)."""
    if isinstance(network, Graph):
        from .graph_policy import local_oracle_graph

        return local_oracle_graph(network, x, like, error, storage, precision=precision, cost=cost, passes=passes)
    measure = ORACLE_ERRORS.get(error).measure

    def ranking(layer, xhat, passes_, y):
        f = layer.activation.f
        return -measure(f(y), f(passes_.exact(layer, xhat, precision)))

    return _matched(network, x, like, LOCAL_ORACLE, ranking, storage, cost, passes)


@dataclass(frozen=True)
class MatchedBaseline:
    """A baseline run at another run's recompute counts (guided; LAMP on a graph):
    ``run(network, x, like, options, common)`` with a sweep's options (seed,
    local_oracle_error, precision) and the keywords common to every run (storage, cost,
    passes)."""

    name: str
    run: Callable = field(repr=False)


MATCHED_BASELINES: Registry[MatchedBaseline] = Registry("baseline")
for _row in (
    MatchedBaseline(RANDOM, lambda net, x, g, o, c: random_selection(net, x, g, o["seed"], **c)),
    MatchedBaseline(LOCAL_ORACLE, lambda net, x, g, o, c: local_oracle_selection(
        net, x, g, o["local_oracle_error"], precision=o["precision"], **c)),
):
    MATCHED_BASELINES.add(_row.name, _row)
