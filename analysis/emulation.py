"""One emulated forward pass scored against the exact one (``mixacc emulate``), for any
model: an MLP runs as its graph (``Network.graph``). Metrics of ``emulator.metrics``
(docs/method.md#error-measures):

* every output: the largest and median absolute and relative error of its components
  against the exact pass (the float64 nearest each exact value);
* a classifier (``task`` classification: a model with ``meta["classes"]``, or one whose
  data has labels): predicted classes decided on the logits (the MLP's last
  pre-activation, a graph's first output), flips against the exact pass, accuracies with
  labels, and the KL divergence of the softmax distributions;
* an embedding model (``task`` embedding): cosine similarity of each sample's embedding
  to the exact one and the rate at which a sample's nearest neighbour in the batch
  changes.

The emulated pass runs with the storage format (weights, inputs and operator outputs
rounded to it); the exact pass uses the same rounded weights and inputs and never rounds
between operators. Samples go through in batches of ``batch_size``, except the
neighbour metric, which needs the embeddings of every sample at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.graph import AccumulationPlan, Graph, forward
from emulator.graph.convert import layer_tensors
from emulator.graph.ball import ExactValue
from emulator.graph.exact import exact_values
from emulator.metrics import relative_error
from emulator.network import Network, layer_storage
from emulator.storage import parse_storage

from .distributed import run_tasks
from .graph_validation import plan_description
from .tasks import TaskScores, model_task
from .validation import DEFAULT_BATCH

__all__ = ["Emulation", "emulate", "model_feeds", "MetricsByName"]

def _roles(model: "Network | Graph") -> tuple[Graph, str, str]:
    """(graph, output tensor, logits tensor)."""
    if isinstance(model, Network):
        pre, out = layer_tensors(len(model) - 1)
        return model.graph, out, pre
    return model, model.outputs[0], model.outputs[0]


@dataclass
class _Errors:
    """Errors of one output against the exact pass, and how well that pass pins the exact
    values down: ``uncertified`` counts components whose reference value is not certainly
    the correctly rounded exact one, ``max_radius`` is the largest certified radius."""

    abs: list = field(default_factory=list)
    rel: list = field(default_factory=list)
    uncertified: int = 0
    max_radius: float = 0.0

    def add(self, computed: np.ndarray, exact: ExactValue) -> None:
        with np.errstate(invalid="ignore"):
            self.abs.append(np.where(computed == exact.value, 0.0, np.abs(computed - exact.value)).ravel())
        self.rel.append(relative_error(computed, exact.value).ravel())
        self.uncertified += int(np.count_nonzero(~exact.rounded))
        if exact.radius.size:
            self.max_radius = max(self.max_radius, float(np.max(exact.radius)))

    def merge(self, later: "_Errors") -> "_Errors":
        self.abs.extend(later.abs)
        self.rel.extend(later.rel)
        self.uncertified += later.uncertified
        self.max_radius = max(self.max_radius, later.max_radius)
        return self

    def summary(self) -> dict:
        a = np.nan_to_num(np.concatenate(self.abs), nan=np.inf)
        r = np.concatenate(self.rel)
        return {"max_abs": float(np.max(a)), "max_rel": float(np.max(r)), "median_rel": float(np.median(r)),
                "median_abs": float(np.median(a)), "reference_uncertified": self.uncertified,
                "reference_max_radius": self.max_radius}


class MetricsByName:
    """Read the entries of a ``metrics`` dict as attributes (``result.flip_rate``)."""

    def __getattr__(self, name):
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(name)


@dataclass
class Emulation(MetricsByName):
    """The result of :func:`emulate`: per-output errors (``outputs``), the task's metrics
    (``metrics``: accuracy, exact_accuracy, flips, flip_rate, kl_mean, kl_max for
    classifiers; cosine_min, cosine_median, neighbour_flips, neighbour_flip_rate for
    embeddings) and, when kept, every computed tensor (``tensors``)."""

    model: str
    architecture: str
    samples: int
    task: str
    accumulation: dict
    storage: "str | None"
    outputs: dict
    metrics: dict
    overflow_components: int
    tensors: dict = field(default_factory=dict, repr=False)

    @property
    def output_error(self) -> dict:
        """The errors of the model's (first) output."""
        return next(iter(self.outputs.values()))

    def to_dict(self) -> dict:
        return {
            "model": self.model, "architecture": self.architecture, "samples": self.samples, "task": self.task,
            "accumulation": self.accumulation, "storage": self.storage, **{k: self.metrics.get(k) for k in (
                "accuracy", "exact_accuracy", "flips", "flip_rate")},
            "metrics": self.metrics, "overflow_components": self.overflow_components,
            "output_error": self.output_error, "outputs": self.outputs,
        }


def model_feeds(model, graph: Graph, data) -> dict:
    """The graph's data inputs by name from ``data``: a dict of them, a Dataset, or one
    (N, n) array for an MLP or a single-input graph."""
    if isinstance(data, dict):
        return data
    if hasattr(data, "feeds"):
        return data.feeds([t.name for t in graph.inputs])
    return {graph.inputs[0].name: model.check_input(data) if isinstance(model, Network) else np.asarray(data)}


@dataclass
class _EmulationJob:
    """What every batch of :func:`emulate` shares (scattered once to a cluster)."""

    graph: Graph
    plan: AccumulationPlan
    storage: object
    precision: int
    keep: bool
    logits: str
    scored: str
    task: str
    classes: object


def _emulate_batch(job: _EmulationJob, batch: tuple) -> tuple:
    """(errors per output, task scores, overflowed components, kept tensors) of the batch
    (start, feeds) whose first sample is sample ``start`` of the data."""
    start, feeds = batch
    graph = job.graph
    run = forward(graph, feeds, job.plan, job.storage, keep=True if job.keep else [job.logits], first_sample=start)
    ref = exact_values(forward(graph, feeds, f"exact:{job.precision}", job.storage, keep=[job.logits]))
    # the tensors of the scored pass as float64 (an exact pass carries enclosures: their nearest values)
    values = {k: v.value for k, v in exact_values(run).items()} if job.plan.is_exact else {**run.values, **run.outputs}
    errors = {name: _Errors() for name in graph.outputs}
    for name in graph.outputs:
        errors[name].add(np.asarray(values[name]), ref[name])
    scores = TaskScores(job.task, job.classes)
    scores.add(np.asarray(values[job.scored]), ref[job.scored].value)
    kept = {name: [np.asarray(values[name])] for name in run.values} if job.keep else {}
    return errors, scores, sum(int(np.count_nonzero(m)) for m in run.overflow.values()), kept


def emulate(model: "Network | Graph", data, acc, storage=None, *, labels=None, keep: bool = False,
            batch_size: int = DEFAULT_BATCH, precision: int = 113) -> Emulation:
    """Run ``model`` on ``data`` (an (N, n) array for an MLP or single-input graph, a
    dict of named inputs, or a Dataset) under ``acc`` (a spec, row or plan) and
    ``storage``, and score it against the exact pass (see the module docstring).
    ``labels`` adds accuracies; ``keep`` keeps every computed tensor."""
    graph, output, logits = _roles(model)
    plan = AccumulationPlan(acc)
    st = layer_storage(storage) if isinstance(model, Network) else parse_storage(storage)
    feeds = graph.check_feeds(model_feeds(model, graph, data))
    n = next(iter(feeds.values())).shape[0]
    task = model_task(model, labels)
    scored = logits if task == "classification" else output
    job = _EmulationJob(graph, plan, st, precision, keep, logits, scored, task, model.meta.get("classes"))
    spec = plan.default.spec if plan.default is not None and not (plan.by_op or plan.by_pattern) else "plan"
    items = [(start, {k: v[start:start + batch_size] for k, v in feeds.items()}) for start in range(0, n, batch_size)]
    parts = run_tasks(_emulate_batch, job, items, desc=f"emulate {spec}")
    errors, scores, overflow, kept = parts[0]
    for later in parts[1:]:
        for name, e in errors.items():
            e.merge(later[0][name])
        scores.merge(later[1])
        overflow += later[2]
        for name, values in later[3].items():
            kept[name].extend(values)
    metrics = scores.metrics(labels)
    describe = model.architecture if isinstance(model, Network) else model.meta.get("architecture", repr(model))
    return Emulation(
        model=model.name, architecture=str(describe), samples=n, task=task, accumulation=plan_description(plan),
        storage=st.spec if st else None, outputs={k: e.summary() for k, e in errors.items()}, metrics=metrics,
        overflow_components=overflow, tensors={k: np.concatenate(v) for k, v in kept.items()},
    )

