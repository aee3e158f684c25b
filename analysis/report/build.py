"""Run the analyses a report shows and gather their results as JSON-ready data (the
content of ``report.json``).

Nothing is recomputed here in a different way: each accumulation format goes through
:func:`analysis.validation.validate` and is recorded exactly as ``mixacc validate --json``
records it; the tau sweep goes through :func:`analysis.sweep.sweep` and its runs are
recorded as ``mixacc recompute --json`` records them. The report adds, for the figures,
a seeded sample of per-component points and histograms of the condition numbers.

``report.json`` (schema ``mixacc-report/1``)::

    schema, title
    model         Network.describe(): name, architecture, widths, activations, meta
    data          spec, split, samples, labelled
    config        every ReportConfig field
    validations   one per --acc: Validation.to_dict() (the numbers of mixacc validate
                  --json; a graph's has sites and tensors) + for an MLP, points: {samples, limit, layers: [{index, activation,
                  local|global: {components, drawn, zero_error, uncovered, violations,
                  abs_error, bound, rel_error, predicted}}]}
    conditioning  source, layers: [{index, activation, kappa, kappa_sigma}] histograms
                  {edges_log10, counts, zero, inf, nan}; a graph's: source, sites: [{name,
                  op, block, role, quantiles {q50, q90, q99, q100}, components, inf, nan}];
                  null without --acc
    sweep         the record of mixacc recompute --json (runs: method, criterion, tau,
                  accuracy, flip_rate, median/max_rel_error, recompute_fraction,
                  layer_recompute_fraction (a graph's: site_recompute_fraction),
                  relative_cost, ...); null without --low
    verdict       analysis.verdict.report_verdict: thresholds, and per format its numbers,
                  bound status, label (safe / unsafe / safe with recompute) and policy
    timing        wall seconds per part
    provenance    config, seed, package versions, Python, platform, command, date
    figures       [{file, caption}] (added by write_report)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from emulator.data import Dataset, load_model_data
from emulator.errors import MixaccError
from emulator.modelio import load_model
from emulator.network import Network
from emulator.storage import parse_storage

from ..progress import progress
from ..provenance import provenance
from ..verdict import DEFAULT_MAX_FLIP_RATE, DEFAULT_MAX_REL_ERROR, Thresholds, report_verdict
from .components import LayerComponents, component_errors

__all__ = ["ReportConfig", "ReportError", "build_report", "load_inputs", "log_histogram", "sample_points", "significant",
           "sweep_record", "SCHEMA"]

SCHEMA = "mixacc-report/1"


class ReportError(MixaccError):
    """A report asked for with settings that do not fit together."""


@dataclass(frozen=True)
class ReportConfig:
    """What a report runs. ``accs``: accumulation specs to validate; ``storage``: the
    storage format of weights, biases, input and layer outputs (``Network.forward``);
    ``weights_storage``: round only the weights and biases, once, before anything else
    (``mixacc recompute --preset paper``); ``low``/``high``/
    ``taus``: the tau sweep (skipped when ``low`` is None). The figures' per-component
    points come from the first ``point_samples`` samples, at most ``points`` drawn per
    panel (a sample seeded by ``seed`` that keeps every violation)."""

    model: str
    data: "str | None" = None
    samples: "int | None" = 1000
    accs: tuple[str, ...] = ("fp16", "bf16")
    bound: str = "deterministic"
    storage: "str | None" = None
    weights_storage: "str | None" = None
    low: "str | None" = None
    high: "str | None" = None
    taus: tuple[float, ...] = ()
    criteria: tuple[str, ...] = ("kappa",)
    cost: str = "bits"
    seed: int = 0
    points: int = 1000
    point_samples: int = 200
    bins: int = 40
    title: "str | None" = None
    max_flip_rate: "float | None" = DEFAULT_MAX_FLIP_RATE
    max_rel_error: "float | None" = DEFAULT_MAX_REL_ERROR

    def check(self) -> None:
        """Raise a :class:`MixaccError` naming the first setting that cannot work, before
        any computation: every spec is parsed here."""
        from emulator.accumulation import parse_accumulation

        from ..bounds import parse_bound
        from ..cost import accumulation_format, get_cost_model
        from ..policy import check_tau, get_criterion

        if not self.accs and self.low is None:
            raise ReportError("Nothing to report: give at least one --acc, or --low and --high for the tau sweep.")
        if (self.low is None) != (self.high is None):
            raise ReportError("--low and --high go together: give both for the tau sweep, or neither.")
        if self.low is not None and not self.taus:
            raise ReportError("The tau sweep needs at least one --tau.")
        if self.samples is not None and self.samples < 1:
            raise ReportError(f"samples == {self.samples}, must be >= 1.")
        for name in ("points", "point_samples", "bins"):
            if getattr(self, name) < 1:
                raise ReportError(f"{name} == {getattr(self, name)}, must be >= 1.")
        for spec in self.accs:
            parse_accumulation(spec)
        if self.low is not None:
            accumulation_format(self.low)
            accumulation_format(self.high)
        parse_bound(self.bound)
        parse_storage(self.storage)
        parse_storage(self.weights_storage)
        for tau in self.taus:
            check_tau(tau)
        for criterion in self.criteria:
            get_criterion(criterion)
        get_cost_model(self.cost)
        Thresholds(self.max_flip_rate, self.max_rel_error)


def load_inputs(model: "str | Network", data: "str | None", samples: "int | None",
                weights_storage: "str | None" = None) -> tuple:
    """The network or graph (weights and biases rounded to ``weights_storage`` when given)
    and the first ``samples`` test samples of ``data`` (default: the model's ``default_data``)."""
    network = load_model(model).with_storage(weights_storage)
    return network, load_model_data(network, data).head(samples)


def log_histogram(values: np.ndarray, bins: int) -> dict:
    """Counts of the finite positive ``values`` in ``bins`` bins equally spaced in
    log10 between their smallest and largest; zeros and infinities counted apart."""
    v = np.asarray(values, dtype=np.float64).ravel()
    positive = v[np.isfinite(v) & (v > 0)]
    out = {"zero": int(np.count_nonzero(v == 0)), "inf": int(np.count_nonzero(np.isinf(v))),
           "nan": int(np.count_nonzero(np.isnan(v))), "edges_log10": [], "counts": []}
    if positive.size:
        logs = np.log10(positive)
        lo, hi = float(logs.min()), float(logs.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(logs, bins=bins, range=(lo, hi))
        out.update(edges_log10=edges.tolist(), counts=counts.tolist())
    return out


def significant(values: np.ndarray, digits: int = 4) -> list:
    """``values`` as Python floats rounded to ``digits`` significant decimal digits
    (short in JSON; inf and nan kept for :func:`analysis.atomic.to_jsonable`)."""
    return [float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def sample_points(columns: dict[str, np.ndarray], keep: np.ndarray, limit: int, rng: np.random.Generator,
                  digits: int = 4) -> dict:
    """At most ``limit`` components of every column (same rows), drawn from those with a
    finite positive ``columns['abs_error']``; rows where ``keep`` is set (violations) are
    always drawn, the rest sampled without replacement by ``rng``, kept in index order.
    Values are rounded to ``digits`` significant digits; ``violations`` lists the
    positions of the drawn ``keep`` rows (decided before rounding)."""
    err = np.asarray(columns["abs_error"], dtype=np.float64).ravel()
    keep = np.asarray(keep, dtype=bool).ravel()
    drawable = np.isfinite(err) & (err > 0)
    forced = np.flatnonzero(keep & drawable)
    others = np.flatnonzero(drawable & ~keep)
    room = max(limit - forced.size, 0)
    chosen = others if others.size <= room else rng.choice(others, size=room, replace=False)
    rows = np.sort(np.concatenate([forced, chosen]))
    out = {name: significant(np.asarray(col, dtype=np.float64).ravel()[rows], digits) for name, col in columns.items()}
    out.update(components=int(err.size), drawn=int(rows.size), zero_error=int(np.count_nonzero(err == 0)),
               violations=np.flatnonzero(keep[rows]).tolist())
    return out


def _panel_points(layer: LayerComponents, rng: np.random.Generator, limit: int) -> dict:
    out = {}
    for kind, data in (("local", layer.local), ("global", layer.global_)):
        covered = data["covered"]
        columns = {name: np.asarray(data[name])[covered] for name in ("abs_error", "bound", "rel_error", "predicted")}
        out[kind] = sample_points(columns, columns["abs_error"] > columns["bound"], limit, rng)
        out[kind]["uncovered"] = int(covered.size - np.count_nonzero(covered))
    return out


def _points(network: Network, layers: list[LayerComponents], config: ReportConfig, samples: int, salt: int) -> dict:
    rng = np.random.default_rng([config.seed, salt])
    return {"samples": samples, "limit": config.points,
            "layers": [{"index": k, "activation": l.activation.name, **_panel_points(c, rng, config.points)}
                       for k, (l, c) in enumerate(zip(network.layers, layers))]}


def _conditioning(network: Network, layers: list[LayerComponents], samples: int, bins: int) -> dict:
    return {
        "source": f"exact forward pass, first {samples} samples",
        "layers": [{"index": k, "activation": l.activation.name, "kappa": log_histogram(c.kappa, bins),
                    "kappa_sigma": log_histogram(c.kappa_sigma, bins)}
                   for k, (l, c) in enumerate(zip(network.layers, layers))],
    }


def sweep_record(network: Network, dataset: Dataset, config: ReportConfig, result) -> dict:
    """The tau sweep as ``mixacc recompute --json`` records it (without provenance)."""
    from ..sweep import sweep_record as record

    return record(network, dataset, result, low=config.low, high=config.high, criteria=config.criteria,
                  taus=config.taus, storage=parse_storage(config.storage), weights_storage=config.weights_storage,
                  seed=config.seed)


class _Clock:
    def __init__(self):
        self.parts: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable, *args, **kwargs):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        self.parts[name] = round(time.perf_counter() - start, 3)
        return value


def _validations(network, dataset, config: ReportConfig, clock: _Clock) -> tuple[list[dict], "dict | None"]:
    """One validation record per format and the conditioning data: an MLP's per-component
    points and kappa histograms, a graph's per-site kappa quantiles."""
    from emulator.graph import Graph

    from ..validation import validate
    from .graph_sites import site_conditioning

    graph = isinstance(network, Graph)
    x_points = dataset.head(config.point_samples)
    validations, conditioning = [], None
    for salt, acc in enumerate(progress(config.accs, desc="report: validate", total=len(config.accs))):
        v = clock(f"validate {acc}", validate, network, dataset if graph else dataset.x, acc, config.bound,
                  config.storage, labels=dataset.y, data_name=dataset.name)
        if graph:
            validations.append(v.to_dict())
            if conditioning is None:
                conditioning = clock(f"conditioning {acc}", site_conditioning, network, x_points, acc, config.storage)
            continue
        layers = clock(f"points {acc}", component_errors, network, x_points.x, acc, config.bound, config.storage)
        validations.append({**v.to_dict(), "points": _points(network, layers, config, len(x_points), salt)})
        if conditioning is None:
            conditioning = _conditioning(network, layers, len(x_points), config.bins)
    return validations, conditioning


def build_report(config: ReportConfig) -> dict:
    """Run ``config`` and return the report data: model, data, configuration, one
    validation record per accumulation (``mixacc validate --json`` numbers, plus
    ``points`` for an MLP's figures), condition numbers, the sweep record
    (``mixacc recompute --json`` numbers), the verdict, wall times and provenance. The
    model may be an MLP or a graph (per-site records, kappa per site)."""
    from emulator.graph import Graph

    from ..sweep import sweep

    config.check()
    clock = _Clock()
    network, dataset = clock("load", load_inputs, config.model, config.data, config.samples, config.weights_storage)
    validations, conditioning = _validations(network, dataset, config, clock)
    sweep_data = None
    if config.low is not None:
        data = dataset if isinstance(network, Graph) else dataset.x
        result = clock("sweep", sweep, network, data, config.low, config.high, config.taus, config.criteria,
                       labels=dataset.y, storage=config.storage, cost=config.cost, seed=config.seed)
        sweep_data = sweep_record(network, dataset, config, result)
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
    report = {
        "schema": SCHEMA, "title": config.title or f"mixacc report: {network.name}", "model": network.describe(),
        "data": {"spec": dataset.name, "split": dataset.split, "samples": len(dataset), "labelled": dataset.y is not None},
        "config": settings, "validations": validations, "conditioning": conditioning, "sweep": sweep_data,
        "timing": clock.parts, "provenance": provenance(settings, config.seed),
    }
    return {**report, "verdict": report_verdict(report)}
