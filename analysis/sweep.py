"""What each tolerance buys: the recompute policy and its baselines run over a list of
tau, each scored against the exact forward pass.

Metrics of a run with outputs z (N, m) against the exact outputs z* (same weights,
biases and input, never rounded between layers):

* ``accuracy`` — share of samples whose predicted class equals the label (None without
  labels); the class is the arg-max of z (one output unit: z > 0), as ``Network.predict``;
* ``flip_rate`` — share of samples whose predicted class differs from that of z*;
* ``median_rel_error`` / ``max_rel_error`` — over every output component,
  |z_i - z*_i| / |z*_i| (0/0 = 0, c/0 = inf, a NaN output counts as inf).

A row with a NaN output predicts no class (counts as wrong and as flipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from emulator.errors import DataError
from emulator.network import Network
from emulator.registry import Registry

from ._mixed import MixedRun, Passes
from .baselines import oracle_selection, random_selection, uniform_high, uniform_low
from .cost import get_cost_model
from .policy import check_tau, get_criterion, recompute, recompute_multilevel, recompute_static
from .progress import progress

__all__ = ["RunSummary", "Sweep", "sweep", "output_metrics", "predicted_class", "METHODS", "MATCHED_BASELINES"]

METHODS = ("guided", "random", "oracle", "uniform-low", "uniform-high", "static", "multi-level")


def predicted_class(z: np.ndarray) -> np.ndarray:
    """Index of the predicted class per row: arg-max, or z > 0 for one output unit; -1
    for a row holding NaN."""
    z = np.atleast_2d(z)
    index = (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else np.argmax(z, axis=1)
    return np.where(np.isnan(z).any(axis=1), -1, index)


def _relative_errors(z: np.ndarray, exact: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        err = np.abs(z - exact)
        rel = err / np.abs(exact)
    return np.where(err == 0, 0.0, np.where(np.isnan(rel), np.inf, rel))


def output_metrics(z: np.ndarray, exact: np.ndarray, labels=None, classes=None) -> dict:
    """accuracy (None without ``labels``), flip_rate, median_rel_error, max_rel_error of
    outputs ``z`` against the exact outputs (see the module docstring). ``classes`` maps
    class indices to labels (``Network.meta['classes']``)."""
    z, exact = np.atleast_2d(z), np.atleast_2d(exact)
    pred, pred_exact = predicted_class(z), predicted_class(exact)
    accuracy = None
    if labels is not None:
        truth = np.asarray(labels)
        if truth.shape != (z.shape[0],):
            raise DataError(f"{truth.shape[0] if truth.ndim else 0} labels for {z.shape[0]} samples.")
        if classes is not None:
            hit = (pred >= 0) & (np.asarray(classes)[np.maximum(pred, 0)] == truth)
        else:
            hit = pred == truth
        accuracy = float(np.mean(hit))
    rel = _relative_errors(z, exact)
    return {"accuracy": accuracy, "flip_rate": float(np.mean(pred != pred_exact)),
            "median_rel_error": float(np.median(rel)), "max_rel_error": float(np.max(rel))}


@dataclass(frozen=True)
class MatchedBaseline:
    """A baseline run at a guided run's recompute counts: ``run(network, x, guided,
    options, common)`` with the sweep's options (seed, oracle_error, precision) and the
    keywords common to every run (storage, cost, passes)."""

    name: str
    run: Callable = field(repr=False)


MATCHED_BASELINES: Registry[MatchedBaseline] = Registry("baseline")
for _row in (
    MatchedBaseline("random", lambda net, x, g, o, c: random_selection(net, x, g, o["seed"], **c)),
    MatchedBaseline("oracle", lambda net, x, g, o, c: oracle_selection(net, x, g, o["oracle_error"],
                                                                       precision=o["precision"], **c)),
):
    MATCHED_BASELINES.add(_row.name, _row)


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
        if self.method == "multi-level":
            out["layer_format_fraction"] = self.run.format_fraction()
        return out


def summarise(run: MixedRun, exact: np.ndarray, labels=None, classes=None) -> RunSummary:
    m = output_metrics(run.outputs, exact, labels, classes)
    return RunSummary(run.method, run.criterion, run.tau, m["accuracy"], m["flip_rate"], m["median_rel_error"],
                      m["max_rel_error"], run.fraction, tuple(run.layer_fraction), run.cost.relative, run)


@dataclass(frozen=True)
class Sweep:
    """The runs of a sweep (uniform low and high first, then per criterion and tau:
    guided, random, oracle, and static / multi-level when asked) and the exact outputs."""

    runs: tuple[RunSummary, ...]
    exact: np.ndarray = field(repr=False)
    cost_model: str

    def describe(self) -> list[dict]:
        return [r.describe() for r in self.runs]


def sweep_record(network: Network, data, result: Sweep, *, low, high, criteria: Sequence[str], taus: Sequence[float],
                 storage=None, **settings) -> dict:
    """The JSON record of a sweep, as ``mixacc recompute --json`` writes it (without
    provenance): model, data, configuration (``settings`` adds to it), then ``runs``."""
    return {
        "model": network.name, "architecture": network.architecture, "data": data.name, "samples": len(data),
        "low": low, "high": high, "criterion": list(criteria), "taus": list(taus), "cost_model": result.cost_model,
        "storage": storage.spec if storage else None, **settings, "runs": result.describe(),
    }


def sweep(network: Network, x, low, high, taus: Sequence[float], criteria: Sequence[str] = ("kappa",), *,
          labels=None, storage=None, cost="bits", seed: int = 0, oracle_error: str = "relative",
          levels: "Sequence | None" = None, x_calibration=None, baselines: Sequence[str] = ("random", "oracle"),
          precision: int = 113) -> Sweep:
    """Run uniform low and high, then for each criterion and tau the guided policy, the
    ``baselines`` matched to it (random with ``seed``, oracle with ``oracle_error``), the
    static variant when ``x_calibration`` is given and the multi-level one when ``levels``
    is; score every run against the exact forward pass (and ``labels``)."""
    taus = [check_tau(t) for t in taus]
    crits = [get_criterion(c).name for c in criteria]
    model = get_cost_model(cost)
    matched = [MATCHED_BASELINES.get(b) for b in baselines]
    xs = network.check_input(x)
    exact = np.asarray(network.forward(xs, acc="exact", storage=storage), dtype=np.float64)
    classes = network.meta.get("classes")
    passes = Passes()
    common = dict(storage=storage, cost=model, passes=passes)
    runs = [uniform_low(network, xs, low, high, **common), uniform_high(network, xs, low, high, **common)]
    jobs = [(c, t) for c in crits for t in taus]
    for crit, tau in progress(jobs, desc="recompute sweep"):
        guided = recompute(network, xs, low, high, tau, crit, **common)
        runs.append(guided)
        options = {"seed": seed, "oracle_error": oracle_error, "precision": precision}
        runs.extend(b.run(network, xs, guided, options, common) for b in matched)
        if x_calibration is not None:
            runs.append(recompute_static(network, x_calibration, xs, low, high, tau, crit, **common))
        if levels is not None:
            runs.append(recompute_multilevel(network, xs, levels, tau, crit, **common))
    return Sweep(tuple(summarise(r, exact, labels, classes) for r in runs), exact, model.name)
