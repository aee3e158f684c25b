"""What each tolerance buys on a graph: the recompute policy, LAMP and their baselines over
a list of tau, each scored against the exact pass (docs/method.md#the-policy-on-graphs).

Metrics of a run against the exact pass (same rounded weights and inputs, never rounded
between operators), by the model's task (``analysis.emulation.model_task``):

* every model: ``median_rel_error`` / ``max_rel_error`` of the first output's components;
* a classifier (classes decided on the first output, the logits): ``flip_rate`` against
  the exact pass, ``accuracy`` with labels, ``kl_mean`` / ``kl_max`` of the softmax
  distributions (KL(exact || run));
* an embedding model: ``cosine_min`` / ``cosine_median`` of each sample's embedding with
  the exact one, ``neighbour_flip_rate`` (a sample's nearest neighbour in the batch changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from emulator.graph import Graph, forward
from emulator.graph.exact import exact_values
from emulator.metrics import (accuracy, cosine_similarity, flip_rate, kl_divergence, neighbour_flips,
                              predicted_class, relative_error)
from emulator.storage import parse_storage

from .consumers import GraphConsumers
from .cost import CostModel, get_cost_model, inner_product_cost
from .emulation import MetricsByName, model_feeds, model_task
from .baselines import MATCHED_BASELINES
from .graph_policy import (GraphMixedRun, SitePasses, guided_ranked_graph, lamp_form_names, lamp_graph,
                           recompute_graph, uniform_graph)
from .methods import LOCAL_ORACLE, RANDOM
from .criteria import PolicyError, check_tau, get_criterion
from .distributed import run_tasks
from .selection import Rule, rule_label, rule_list

__all__ = ["GraphRunSummary", "GraphSweep", "graph_sweep", "graph_sweep_record", "graph_metrics", "exact_outputs",
           "summarise_graph"]


def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def graph_metrics(outputs: dict, exact: dict, task: str, labels=None, classes=None) -> dict:
    """The metrics of the module docstring for ``outputs`` against ``exact`` (both by
    output name; the first output is the one scored)."""
    name = next(iter(exact))
    z, ze = _rows(outputs[name]), _rows(exact[name])
    rel = relative_error(z, ze)
    out = {"accuracy": None, "flip_rate": None, "median_rel_error": float(np.median(rel)),
           "max_rel_error": float(np.max(rel))}
    if task == "classification":
        pred, pred_exact = predicted_class(z), predicted_class(ze)
        kl = kl_divergence(z, ze)
        out.update(accuracy=None if labels is None else accuracy(pred, labels, classes),
                   flip_rate=flip_rate(pred, pred_exact), kl_mean=float(np.mean(kl)), kl_max=float(np.max(kl)))
    elif task == "embedding":
        cos = cosine_similarity(z, ze)
        out.update(cosine_min=float(np.min(cos)), cosine_median=float(np.median(cos)),
                   neighbour_flip_rate=float(np.mean(neighbour_flips(z, ze))))
    return out


@dataclass(frozen=True)
class GraphRunSummary(MetricsByName):
    """One (method, criterion, tau) row on a graph: the metrics (``metrics``: those of
    :func:`graph_metrics`), the recomputed shares overall and per site, the relative cost
    and the run itself."""

    method: str
    criterion: "str | None"
    tau: "float | None"
    metrics: dict
    recompute_fraction: float
    site_recompute_fraction: dict
    relative_cost: float
    run: GraphMixedRun = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        """``method:criterion:rule`` (the rule as ``rule_label`` writes it: ``0.5``,
        ``B=0.3/row``), the key of the run's per-site fractions in the sweep's ``sites``."""
        return f"{self.method}:{self.criterion}:{rule_label(self.tau, self.run.selection)}"

    def describe(self) -> dict:
        """The JSON record: the MLP run's keys, per-site fractions instead of per-layer
        ones, and the task's metrics."""
        out = {
            "method": self.method, "criterion": self.criterion, "tau": self.tau, **self.metrics,
            "recompute_fraction": self.recompute_fraction, "site_recompute_fraction": dict(self.site_recompute_fraction),
            "relative_cost": self.relative_cost, "formats": [f.spec for f in self.run.formats],
            "cost": self.run.cost.describe(),
        }
        if self.run.selection is not None:
            out["selection"] = dict(self.run.selection)
        return out


@dataclass(frozen=True)
class GraphSweep:
    """The runs of a graph sweep (uniform low and high; per criterion and tau the guided
    run and its matched baselines (``analysis.baselines.MATCHED_BASELINES``); per LAMP criterion and tau the LAMP run, its matched
    baselines and the guided ranking at its budget), the exact outputs, the task and the
    consumer analysis."""

    runs: tuple[GraphRunSummary, ...]
    exact: dict = field(repr=False)
    model: CostModel = field(repr=False)
    task: str
    consumers: GraphConsumers = field(repr=False)

    @property
    def cost_model(self) -> str:
        return self.model.name

    def describe(self) -> list[dict]:
        return [r.describe() for r in self.runs]

    def sites(self) -> list[dict]:
        """One object per accumulation site evaluated: name, operator, shape of its sums,
        length n, groups, consumers, the cost of one component in low and high, and the
        recomputed share of each run that is not uniform (keyed ``GraphRunSummary.label``:
        method:criterion:tau, or method:criterion:B=COST,E=E/row for a budgeted or
        granular rule)."""
        model = self.model
        first = self.runs[0].run
        out = []
        for choice in first.sites:
            name = choice.site.name
            low, high = choice.formats[0], choice.formats[-1]
            out.append({
                "name": name, "op": choice.site.op, "shape": list(choice.shape), "n": choice.n,
                "groups": choice.groups, "components": int(choice.choice.size),
                "consumer": self.consumers.sites[name].describe(),
                "component_cost": {low.spec: inner_product_cost(low, choice.n, model),
                                   high.spec: inner_product_cost(high, choice.n, model)},
                "recompute_fraction": {r.label: r.site_recompute_fraction[name]
                                       for r in self.runs if r.tau is not None or r.run.selection is not None},
            })
        return out


def exact_outputs(graph: Graph, feeds: dict, storage=None, precision: int = 113) -> dict:
    """The exact pass's outputs by name (``feeds`` checked; the same rounded weights and
    inputs as every run, never rounded between operators), each rounded once to float64."""
    reference = exact_values(forward(graph, feeds, f"exact:{precision}", storage))
    return {name: reference[name].value for name in graph.outputs}


def summarise_graph(run: GraphMixedRun, exact: dict, task: str, labels=None, classes=None) -> GraphRunSummary:
    """``run`` scored against the exact outputs ``exact`` (:func:`graph_metrics`)."""
    metrics = graph_metrics(dict(run.outputs), exact, task, labels, classes)
    return GraphRunSummary(run.method, run.criterion, run.tau, metrics, run.fraction, run.site_fraction,
                           run.cost.relative, run)


@dataclass(frozen=True)
class _GraphSweepJob:
    """What every configuration of a graph sweep shares (scattered once to a cluster)."""

    graph: Graph
    feeds: dict
    low: object
    high: object
    common: dict
    options: dict
    matched: list
    ranked_by: "str | None"


def _configuration_runs(job: _GraphSweepJob, configuration: tuple) -> list:
    """The runs of one (kind, criterion, rule): the guided run under the rule (a
    :class:`~analysis.selection.Rule`) or the LAMP run at its tau, its matched baselines,
    and after a LAMP run the guided ranking at its budget."""
    kind, crit, rule = configuration
    graph, feeds, common = job.graph, job.feeds, job.common
    if kind == "guided":
        like = recompute_graph(graph, feeds, job.low, job.high, rule.tau, crit, budget=rule.budget,
                               target_error=rule.target, granularity=rule.granularity, tile=rule.tile, **common)
    else:
        like = lamp_graph(graph, feeds, job.low, job.high, rule.tau, crit, **common)
    runs = [like, *(b.run(graph, feeds, like, job.options, common) for b in job.matched)]
    if kind == "lamp" and job.ranked_by is not None:
        runs.append(guided_ranked_graph(graph, feeds, like, job.ranked_by, **common))
    return runs


def graph_sweep(graph: Graph, data, low, high, taus: Sequence[float], criteria: Sequence[str] = ("kappa",), *,
                labels=None, storage=None, cost="bits", seed: int = 0, local_oracle_error: str = "relative",
                lamp: Sequence[str] = tuple(lamp_form_names()), lamp_taus: "Sequence[float] | None" = None,
                baselines: Sequence[str] = (RANDOM, LOCAL_ORACLE), precision: int = 113,
                budgets: Sequence[float] = (), target_errors: Sequence[float] = (), granularity: str = "component",
                tile="16x16") -> GraphSweep:
    """Uniform low and high; for each criterion and tau the guided policy and the
    ``baselines`` matched to it, and likewise for each of ``budgets`` and
    ``target_errors`` (each budget with each target when both are given), every guided
    run at ``granularity`` (``analysis.selection.rule_list``, as for an MLP); when the
    graph has attention-score sites, for each LAMP
    criterion in ``lamp`` and tau in ``lamp_taus`` (default ``taus``) the LAMP run, the
    baselines matched to it and the guided ranking (first criterion) at its budget. Every
    run is scored against the exact pass (``labels`` add the accuracy)."""
    taus = [check_tau(t) for t in taus]
    lamp_taus = taus if lamp_taus is None else [check_tau(t) for t in lamp_taus]
    crits = [get_criterion(c).name for c in criteria]
    forms = list(lamp)
    for form in forms:
        if form not in lamp_form_names():
            raise PolicyError(f"LAMP criterion {form!r}: must be one of {', '.join(lamp_form_names())}.")
    matched = [MATCHED_BASELINES.get(b) for b in baselines]
    model = get_cost_model(cost)
    st = parse_storage(storage)
    feeds = graph.check_feeds(model_feeds(graph, graph, data))
    exact = exact_outputs(graph, feeds, st, precision)
    task = model_task(graph, labels)
    classes = graph.meta.get("classes")
    consumers = GraphConsumers.of(graph)
    common = dict(storage=st, cost=model, passes=SitePasses(1 << 30))
    options = {"seed": seed, "local_oracle_error": local_oracle_error, "precision": precision}
    runs = [uniform_graph(graph, feeds, low, high, 0, **common), uniform_graph(graph, feeds, low, high, 1, **common)]
    attention = any(s.attention for s in consumers.sites.values())
    rules = rule_list(taus, budgets, target_errors, granularity, tile)
    jobs = [("guided", c, r) for c in crits for r in rules]
    jobs += [("lamp", f, Rule(tau=t)) for f in (forms if attention else []) for t in lamp_taus]
    job = _GraphSweepJob(graph, feeds, low, high, common, options, matched, crits[0] if crits else None)
    for found in run_tasks(_configuration_runs, job, jobs, desc="recompute sweep"):
        runs.extend(found)
    summaries = tuple(summarise_graph(r, exact, task, labels, classes) for r in runs)
    return GraphSweep(summaries, exact, model, task, consumers)


def graph_sweep_record(graph: Graph, data, result: GraphSweep, *, low, high, criteria: Sequence[str],
                       taus: Sequence[float], storage=None, **settings) -> dict:
    """The JSON record of a graph sweep: the MLP record's keys (model, architecture, data,
    samples, configuration, runs) plus ``task`` and ``sites``."""
    return {
        "model": graph.name, "architecture": graph.architecture, "data": data.name, "samples": len(data),
        "low": low, "high": high, "criterion": list(criteria), "taus": list(taus), "cost_model": result.cost_model,
        "storage": storage.spec if storage else None, **settings, "task": result.task, "runs": result.describe(),
        "sites": result.sites(),
    }
