"""Validation of a graph (docs/method.md#validation-of-graphs): per accumulation site, the
local error of the emulated sum against the exact sum of the same computed operands and
its local bound; per tensor, the global error of the emulated value against the exact
pass and its global bound (``analysis.graph_bounds``); Spearman of the first-order
predictions against the measured errors; the network-level metrics of the model's task
(``analysis.tasks.TaskScores``).

For each batch four passes run on the same storage-rounded graph and inputs: the emulated
pass (recording its sites, keeping every tensor), the exact pass (certified enclosures),
the bound pass and the first-order prediction pass. A violation is certain: the measured
error minus the exact pass's certified radius, rounded down, exceeds the bound; an
infinite bound (vacuous) cannot be violated and is counted as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.graph import AccumulationPlan, Emulated, Graph
from emulator.graph.engine import batches, prepare, run_graph
from emulator.graph.exact import Exact, exact_values

from .bounds import model_constant, parse_bound
from .graph_bounds import NATIVE_SPEC, GlobalBounds
from .distributed import run_tasks
from .sites import site_components
from .summaries import Collector, ErrorSummary
from .tasks import TaskScores, model_task

__all__ = ["GraphValidation", "SiteSummary", "TensorSummary", "validate_graph", "GRAPH_BATCH", "plan_description"]

GRAPH_BATCH = 16


@dataclass
class SiteSummary:
    """One accumulation site: its name, operator, sum length ``n``, components per sample
    ``m``, groups (separate products), ``shape`` of its sums over every sample validated
    ((rows, m), or (groups, rows, m) for a batched product: the shape ``mixacc
    recompute`` reports for the same samples), spec, constant, and its local and global
    (its output tensor's) summaries."""

    index: int
    name: str
    op: str
    tensor: str
    n: int
    m: int
    groups: int
    shape: tuple
    spec: str
    constant: object
    local: ErrorSummary
    global_: ErrorSummary

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "op": self.op, "tensor": self.tensor, "inputs": self.n,
                "outputs": self.m, "groups": self.groups, "shape": list(self.shape), "accumulation": self.spec,
                "constant": self.constant.describe(), "local": self.local.to_dict(), "global": self.global_.to_dict()}


@dataclass
class TensorSummary:
    """One float tensor an operator computes: its global summary."""

    name: str
    op: str
    shape: tuple
    global_: ErrorSummary

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "shape": list(self.shape), "global": self.global_.to_dict()}


@dataclass
class GraphValidation:
    """What :func:`validate_graph` found (the keys of an MLP's validation, with ``sites``
    in place of layers and ``tensors`` besides)."""

    model: str
    samples: int
    accumulation: dict
    storage: "str | None"
    bound: str
    bound_assumption: "str | None"
    task: str
    sites: list
    tensors: list
    metrics: dict
    data: "str | None" = None
    extra: dict = field(default_factory=dict)

    @property
    def layers(self) -> list:
        """The sites, in the role an MLP's layers play."""
        return self.sites

    @property
    def violations_local(self) -> int:
        return sum(s.local.violations for s in self.sites)

    @property
    def violations_global(self) -> int:
        return sum(t.global_.violations for t in self.tensors)

    @property
    def violations(self) -> int:
        return self.violations_local + self.violations_global

    @property
    def flips(self) -> "int | None":
        return self.metrics.get("flips")

    @property
    def flip_rate(self) -> "float | None":
        return self.metrics.get("flip_rate")

    @property
    def accuracy(self) -> "float | None":
        return self.metrics.get("accuracy")

    @property
    def exact_accuracy(self) -> "float | None":
        return self.metrics.get("exact_accuracy")

    @property
    def failure_probability(self) -> float:
        return max([0.0, *(s.local.failure_probability for s in self.sites),
                    *(t.global_.failure_probability for t in self.tensors)])

    @property
    def vacuous_layers(self) -> list:
        return [s.name for s in self.sites if s.local.vacuous]

    @property
    def output(self) -> ErrorSummary:
        return self.tensors[-1].global_ if self.tensors else self.sites[-1].global_

    def to_dict(self) -> dict:
        return {
            "model": self.model, "data": self.data, "samples": self.samples, "accumulation": self.accumulation,
            "storage": self.storage, "bound": self.bound, "bound_assumption": self.bound_assumption,
            "failure_probability": self.failure_probability, "vacuous_layers": self.vacuous_layers,
            "violations": self.violations, "violations_local": self.violations_local,
            "violations_global": self.violations_global, "flips": self.flips, "flip_rate": self.flip_rate,
            "accuracy": self.accuracy, "exact_accuracy": self.exact_accuracy, "task": self.task,
            "metrics": self.metrics, "layers": [s.to_dict() for s in self.sites],
            "sites": [s.to_dict() for s in self.sites], "tensors": [t.to_dict() for t in self.tensors],
        }


def _rows(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)


@dataclass
class _GraphJob:
    """What every batch of :func:`validate_graph` shares (scattered once to a cluster)."""

    graph: Graph
    plan: AccumulationPlan
    storage: object
    spec: object
    task: str
    classes: object


@dataclass
class _GraphPart:
    """One batch's share of :func:`validate_graph`: per site and tensor collectors (site
    rows counted from the batch's first), their descriptions, the rows each site summed and
    the task scores."""

    local: dict = field(default_factory=dict)
    glob: dict = field(default_factory=dict)
    site_info: dict = field(default_factory=dict)
    tensor_info: dict = field(default_factory=dict)
    site_rows: dict = field(default_factory=dict)
    scores: "TaskScores | None" = None

    def merge(self, later: "_GraphPart") -> "_GraphPart":
        """Fold in the part of the next batch, as if its samples had been added here."""
        for name, c in later.local.items():
            shift = self.site_rows.get(name, 0)
            if name in self.local:
                self.local[name].merge(c, shift)
            else:
                self.local[name] = c.shifted(shift)
            self.site_rows[name] = shift + later.site_rows[name]
        for name, c in later.glob.items():
            if name in self.glob:
                self.glob[name].merge(c)
            else:
                self.glob[name] = c
        for name, info in later.site_info.items():
            if name in self.site_info:
                shape = self.site_info[name]["shape"]
                self.site_info[name]["shape"] = (shape[0] + info["shape"][0], *shape[1:])
            else:
                self.site_info[name] = info
        for name, info in later.tensor_info.items():
            self.tensor_info.setdefault(name, info)
        self.scores.merge(later.scores)
        return self


def _validate_graph_batch(job: _GraphJob, batch: tuple) -> _GraphPart:
    """The four passes of one batch (offset, feeds) and its collectors (module docstring)."""
    offset, chunk = batch
    part = _GraphPart(scores=TaskScores(job.task, job.classes))
    prepared, spec, scored = job.graph, job.spec, job.graph.outputs[0]
    producers = prepared.producers()
    emulated = Emulated(job.plan, job.storage, record=True, first_sample=offset)
    run = run_graph(prepared, chunk, emulated, keep=True)
    exact = exact_values(run_graph(prepared, chunk, Exact(), keep=True))
    bounds = run_graph(prepared, chunk, GlobalBounds(run.values, emulated.records, spec), keep=True).values
    predicted = run_graph(prepared, chunk, GlobalBounds(run.values, emulated.records, spec, first_order=True),
                          keep=True).values
    for record in emulated.records:
        name = record.site.name
        sc = site_components(record, spec) if record.acc is not None else None
        if sc is None:
            continue
        if name not in part.local:
            c = model_constant(record.acc or NATIVE_SPEC, sc.n, record.bias is not None, spec)
            part.local[name] = Collector(c.failure, c.vacuous)
            part.site_info[name] = {"op": record.site.op, "n": sc.n, "m": sc.y_hat.shape[1], "groups": sc.groups,
                                    "spec": sc.spec, "constant": c,
                                    "tensor": producers_output(producers, record.site.node),
                                    "shape": (0, *record.y.shape[1:])}
        shape = part.site_info[name]["shape"]
        part.site_info[name]["shape"] = (shape[0] + record.y.shape[0], *shape[1:])
        rows = part.site_rows.get(name, 0)
        part.local[name].add(rows, sc.y_hat, sc.exact, sc.radius, sc.bound, sc.predicted, sc.covered, sc.capped)
        part.site_rows[name] = rows + sc.y_hat.shape[0]
    for node in prepared.nodes:
        for name in node.outputs:
            value = run.values.get(name)
            if not name or value is None or not isinstance(value, np.ndarray) or value.dtype != np.float64:
                continue
            if name not in exact or name not in bounds:
                continue
            computed, reference = _rows(value), exact[name]
            bound_ball = bounds[name]
            radius = _rows(bound_ball.rad if bound_ball.rad is not None else np.zeros(value.shape))
            pred = _rows(predicted[name].rad if predicted[name].rad is not None else np.zeros(value.shape))
            with np.errstate(divide="ignore", invalid="ignore"):
                pred_rel = np.where(pred == 0, 0.0, pred / np.abs(computed))
            exact_value = _rows(reference.value)
            same = np.isinf(computed) & (computed == exact_value)  # a -inf mask, exactly right
            covered = np.isfinite(computed) | same
            computed, exact_value = np.where(same, 0.0, computed), np.where(same, 0.0, exact_value)
            if name not in part.glob:
                part.glob[name] = Collector(0.0, False)
                part.tensor_info[name] = {"op": node.op, "shape": tuple(value.shape[1:])}
            part.glob[name].add(offset, computed, exact_value, _rows(reference.radius), radius, pred_rel,
                                covered, np.zeros(covered.shape, dtype=bool))
    part.scores.add(np.asarray(run.values[scored]), exact[scored].value)
    return part


def validate_graph(graph: Graph, data, acc, bound="deterministic", storage=None, *, labels=None,
                   batch_size: int = GRAPH_BATCH, data_name: "str | None" = None) -> GraphValidation:
    """Validate ``graph`` on ``data`` (named inputs: a dict or Dataset) under ``acc`` (a spec
    or an accumulation plan) against the exact pass (see the module docstring). Batches are
    tasks of the current executor (``analysis.distributed``), folded in order."""
    plan = AccumulationPlan(acc)
    spec = parse_bound(bound)
    feeds = data.feeds([t.name for t in graph.inputs]) if hasattr(data, "feeds") else data
    prepared, feeds, st = prepare(graph, feeds, storage)
    task = model_task(graph, labels)
    job = _GraphJob(prepared, plan, st, spec, task, graph.meta.get("classes"))
    items, offset = [], 0
    for chunk in batches(graph, feeds, batch_size):
        items.append((offset, chunk))
        offset += next(iter(chunk.values())).shape[0]
    parts = run_tasks(_validate_graph_batch, job, items, desc="validate graph")
    whole = parts[0] if parts else _GraphPart(scores=TaskScores(task, job.classes))
    for later in parts[1:]:
        whole.merge(later)
    tensors = [TensorSummary(name, info["op"], info["shape"], _with_vacuous(whole.glob[name].summary()))
               for name, info in whole.tensor_info.items()]
    by_tensor = {t.name: t.global_ for t in tensors}
    sites = [SiteSummary(k, name, info["op"], info["tensor"], info["n"], info["m"], info["groups"], info["shape"],
                         info["spec"], info["constant"], whole.local[name].summary(),
                         by_tensor.get(info["tensor"]) or Collector(0.0, False).summary())
             for k, (name, info) in enumerate(whole.site_info.items())]
    return GraphValidation(
        model=graph.name, samples=offset, accumulation=plan_description(plan), storage=st.spec if st else None,
        bound=spec.spec, bound_assumption=spec.assumption, task=task, sites=sites, tensors=tensors,
        metrics=whole.scores.metrics(labels), data=data_name,
    )


def producers_output(producers: dict, node_name: str) -> str:
    """The first output tensor of the node called ``node_name``."""
    for tensor, node in producers.items():
        if node.name == node_name:
            return node.outputs[0]
    return node_name


def _with_vacuous(summary: ErrorSummary) -> ErrorSummary:
    """A tensor's global bound is vacuous when for most of its components it is no smaller
    than the value it bounds (infinite bounds included)."""
    summary.vacuous = 2 * summary.vacuous_components > summary.components
    return summary


def plan_description(plan: AccumulationPlan) -> dict:
    """One spec's description (as for an MLP), or the plan's mapping."""
    if plan.default is not None and not plan.by_op and not plan.by_pattern:
        return plan.default.describe()
    return {"spec": "plan", **plan.describe()}
