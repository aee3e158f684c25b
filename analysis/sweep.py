"""What each tolerance buys: the recompute policy and its baselines run over a list of
tau, each scored against the exact forward pass.

Metrics of a run with outputs z (N, m) against the exact outputs z* (same weights,
biases and input, never rounded between layers):

* ``accuracy`` — share of samples whose predicted class equals the label (None without
  labels); the class is decided on the logits, the last layer's pre-activation
  (``emulator.metrics.predicted_class``, as ``Network.predict``);
* ``flip_rate`` — share of samples whose predicted class differs from that of z*;
* ``median_rel_error`` / ``max_rel_error`` — over every output component,
  |z_i - z*_i| / |z*_i| (``emulator.metrics.relative_error``: 0/0 = 0, c/0 = inf, NaN = inf).

A row whose logits hold NaN predicts no class (counts as wrong and as flipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from emulator.metrics import accuracy, flip_rate, predicted_class, relative_error
from emulator.graph import Graph
from emulator.network import Network

from .mixed import MixedRun, Passes
from .baselines import MATCHED_BASELINES, uniform_high, uniform_low
from .cost import get_cost_model
from .methods import LOCAL_ORACLE, MULTI_LEVEL, RANDOM
from .distributed import run_tasks
from .policy import PolicyError, get_criterion, recompute, recompute_multilevel, recompute_static
from .selection import rule_list

__all__ = ["RunSummary", "Sweep", "sweep", "output_metrics", "MATCHED_BASELINES"]



def output_metrics(z: np.ndarray, exact: np.ndarray, logits: np.ndarray, exact_logits: np.ndarray, labels=None,
                   classes=None) -> dict:
    """accuracy (None without ``labels``), flip_rate, median_rel_error, max_rel_error of
    outputs ``z`` against the exact outputs, classes decided on the logits (see the
    module docstring). ``classes`` maps class indices to labels (``Network.meta['classes']``)."""
    pred, pred_exact = predicted_class(logits), predicted_class(exact_logits)
    rel = relative_error(np.atleast_2d(z), np.atleast_2d(exact))
    return {"accuracy": None if labels is None else accuracy(pred, labels, classes),
            "flip_rate": flip_rate(pred, pred_exact), "median_rel_error": float(np.median(rel)),
            "max_rel_error": float(np.max(rel))}


@dataclass(frozen=True)
class RunSummary:
    """One (method, criterion, tau) row: the metrics and the run itself."""

    method: str
    criterion: "str | None"
    tau: "float | None"
    accuracy: "float | None"
    flip_rate: float
    median_rel_error: float
    max_rel_error: float
    recompute_fraction: float
    layer_recompute_fraction: tuple[float, ...]
    relative_cost: float
    run: MixedRun = field(repr=False, compare=False)

    def describe(self) -> dict:
        """The JSON record of the run: method, criterion, tau, metrics, fractions, cost."""
        out = {
            "method": self.method, "criterion": self.criterion, "tau": self.tau, "accuracy": self.accuracy,
            "flip_rate": self.flip_rate, "median_rel_error": self.median_rel_error,
            "max_rel_error": self.max_rel_error, "recompute_fraction": self.recompute_fraction,
            "layer_recompute_fraction": list(self.layer_recompute_fraction), "relative_cost": self.relative_cost,
            "formats": [f.spec for f in self.run.formats], "cost": self.run.cost.describe(),
        }
        if self.method == MULTI_LEVEL:
            out["layer_format_fraction"] = self.run.format_fraction()
        if self.run.selection is not None:
            out["selection"] = dict(self.run.selection)
        return out


def summarise(run: MixedRun, exact: np.ndarray, exact_logits: np.ndarray, labels=None, classes=None) -> RunSummary:
    m = output_metrics(run.outputs, exact, run.logits, exact_logits, labels, classes)
    return RunSummary(run.method, run.criterion, run.tau, m["accuracy"], m["flip_rate"], m["median_rel_error"],
                      m["max_rel_error"], run.fraction, tuple(run.layer_fraction), run.cost.relative, run)


@dataclass(frozen=True)
class Sweep:
    """The runs of a sweep (uniform low and high first, then per criterion and tau:
    guided, random, local-oracle, and static / multi-level when asked) and the exact outputs."""

    runs: tuple[RunSummary, ...]
    exact: np.ndarray = field(repr=False)
    cost_model: str

    def describe(self) -> list[dict]:
        return [r.describe() for r in self.runs]


def sweep_record(network: "Network | Graph", data, result: Sweep, *, low, high, criteria: Sequence[str],
                 taus: Sequence[float], storage=None, **settings) -> dict:
    """The JSON record of a sweep, as ``mixacc recompute --json`` writes it (without
    provenance): model, data, configuration (``settings`` adds to it), then ``runs``; a
    graph's adds ``task`` and ``sites`` (``analysis.graph_sweep.graph_sweep_record``)."""
    if isinstance(network, Graph):
        from .graph_sweep import graph_sweep_record

        return graph_sweep_record(network, data, result, low=low, high=high, criteria=criteria, taus=taus,
                                  storage=storage, **settings)
    return {
        "model": network.name, "architecture": network.architecture, "data": data.name, "samples": len(data),
        "low": low, "high": high, "criterion": list(criteria), "taus": list(taus), "cost_model": result.cost_model,
        "storage": storage.spec if storage else None, **settings, "runs": result.describe(),
    }


@dataclass(frozen=True)
class _SweepJob:
    """What every (criterion, tau) of an MLP sweep shares (scattered once to a cluster)."""

    network: Network
    xs: np.ndarray
    low: object
    high: object
    common: dict
    options: dict
    matched: list
    x_calibration: object
    levels: object


def _configuration_runs(job: _SweepJob, configuration: tuple) -> list:
    """The runs of one (criterion, selection rule): guided, its matched baselines, and for a
    threshold rule the static and multi-level variants when asked."""
    crit, rule = configuration
    network, xs, low, high, common = job.network, job.xs, job.low, job.high, job.common
    tau = rule.tau
    guided = recompute(network, xs, low, high, tau, crit, budget=rule.budget, target_error=rule.target,
                       granularity=rule.granularity, tile=rule.tile, **common)
    runs = [guided, *(b.run(network, xs, guided, job.options, common) for b in job.matched)]
    if tau is None:
        return runs
    if job.x_calibration is not None:
        runs.append(recompute_static(network, job.x_calibration, xs, low, high, tau, crit, **common))
    if job.levels is not None:
        runs.append(recompute_multilevel(network, xs, job.levels, tau, crit, **common))
    return runs


def sweep(network: "Network | Graph", x, low, high, taus: Sequence[float], criteria: Sequence[str] = ("kappa",), *,
          labels=None, storage=None, cost="bits", seed: int = 0, local_oracle_error: str = "relative",
          levels: "Sequence | None" = None, x_calibration=None, baselines: Sequence[str] = (RANDOM, LOCAL_ORACLE),
          precision: int = 113, budgets: Sequence[float] = (), target_errors: Sequence[float] = (),
          granularity: str = "component", tile="16x16", **graph_options) -> Sweep:
    """Run uniform low and high, then for each criterion and tau the guided policy, the
    ``baselines`` matched to it (random with ``seed``, local-oracle with ``local_oracle_error``), the
    static variant when ``x_calibration`` is given and the multi-level one when ``levels``
    is; score every run against the exact forward pass (and ``labels``). ``budgets`` and
    ``target_errors`` add guided runs (and their baselines) with those rules (each budget
    with each target when both are given), every guided run at ``granularity``
    (``analysis.selection``).

    A :class:`~emulator.graph.Graph` (``x``: its inputs by name, a Dataset, or one array)
    runs ``analysis.graph_sweep.graph_sweep`` with the same rules (``graph_options``:
    ``lamp``, ``lamp_taus``); the static and multi-level variants are for MLPs only."""
    if isinstance(network, Graph):
        from .graph_sweep import graph_sweep

        for name, value in (("levels", levels), ("x_calibration", x_calibration)):
            if value is not None:
                raise PolicyError(f"{name}: the {'multi-level' if name == 'levels' else 'static'} variant is for "
                                  f"MLPs only, not for graph {network.name!r}.")
        return graph_sweep(network, x, low, high, taus, criteria, labels=labels, storage=storage, cost=cost, seed=seed,
                           local_oracle_error=local_oracle_error, baselines=baselines, precision=precision,
                           budgets=budgets, target_errors=target_errors, granularity=granularity, tile=tile,
                           **graph_options)
    if graph_options:
        raise PolicyError(f"{', '.join(graph_options)}: options of graph sweeps (LAMP), not of an MLP.")
    rules = rule_list(taus, budgets, target_errors, granularity, tile)
    crits = [get_criterion(c).name for c in criteria]
    model = get_cost_model(cost)
    matched = [MATCHED_BASELINES.get(b) for b in baselines]
    xs = network.check_input(x)
    reference = network.forward(xs, acc="exact", storage=storage, return_all=True)
    exact, exact_logits = reference.outputs[-1], reference.preactivations[-1]
    classes = network.meta.get("classes")
    passes = Passes()
    common = dict(storage=storage, cost=model, passes=passes)
    runs = [uniform_low(network, xs, low, high, **common), uniform_high(network, xs, low, high, **common)]
    options = {"seed": seed, "local_oracle_error": local_oracle_error, "precision": precision}
    job = _SweepJob(network, xs, low, high, common, options, matched, x_calibration, levels)
    for found in run_tasks(_configuration_runs, job, [(c, r) for c in crits for r in rules], desc="recompute sweep"):
        runs.extend(found)
    return Sweep(tuple(summarise(r, exact, exact_logits, labels, classes) for r in runs), exact, model.name)
