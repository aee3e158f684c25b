"""Where the recompute policy wins: ``python -m analysis.study`` sweeps every bundled model
(the MLPs and the graphs) × low/high pair × criterion × granularity over budgets and target
errors, and writes ``reports/study/`` (docs/method.md#the-study): ``study.json`` (every
run), ``README.md`` (the tables), ``pareto.png`` (cost–flip-rate fronts by criterion) and
``granularity.png`` (by granularity).

Each (model, pair) is run on the first ``--samples`` test samples (default 200), with the
``bits`` cost model, the models as bundled (no storage rounding of weights or outputs). An
MLP runs Algorithm 1 layer by layer (``analysis.policy.recompute``), a graph at every
accumulation site (``analysis.graph_policy``), the budget being each layer's or site's. A
criterion's score ranks its components; against it:

* uniform low and uniform high, and the *chord* between them: running a share of the
  samples in high and the rest in low costs c_low + t (1 - c_low) and flips
  f_low + t (f_high - f_low) (t the share) — what uniform precision buys at any cost;
* random selection at the guided run's recompute counts (per layer or site, and sample).

A setting *beats uniform precision* when one of its runs flips fewer samples than the
chord at the same cost, by at least one sample; it *matches high* when a run costing less
than uniform high flips no more samples than uniform high does.

Options: ``--out DIR`` (default reports/study), ``--samples N``, ``--models NAME ...``,
``--quiet``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from emulator.accumulation import parse_accumulation
from emulator.data import Dataset, load_model_data
from emulator.errors import MixaccError
from emulator.graph import Graph
from emulator.graph.arithmetic import Emulated
from emulator.modelio import bundled_models, load_model
from emulator.network import Network

from .atomic import atomic_directory, to_jsonable
from .baselines import random_selection, uniform_high, uniform_low
from .criteria import get_criterion
from .distributed import executor_for, run_tasks
from .emulation import model_feeds, model_task
from .graph_policy import SitePasses, uniform_graph
from .graph_sweep import exact_outputs, summarise_graph
from .mixed import Passes
from .progress import set_quiet
from .provenance import provenance
from .selection import rule_list
from .policy import recompute
from .summaries import rank_correlation
from .sweep import summarise

__all__ = ["PAIRS", "CRITERIA", "GRANULARITIES", "BUDGETS", "TARGETS", "estimate_ranking", "run_study", "main"]

PAIRS = (("fp8-e4m3fn", "fp16"), ("e4m3", "fp16"), ("bf16", "fp32"), ("fp16", "fp32"))
CRITERIA = ("kappa", "kappa-prime", "kappa-holder", "kappa-blocked:16")
GRANULARITIES = (("component", "16x16"), ("row", "16x16"), ("tile", "16x16"))
BUDGETS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5)
TARGETS = (1.0, 0.3, 0.1, 0.03)
COST_MODEL = "bits"
COLOURS = {"kappa": "#1f77b4", "kappa-prime": "#ff7f0e", "kappa-holder": "#2ca02c", "kappa-blocked:16": "#9467bd",
           "component": "#1f77b4", "row": "#d62728", "tile": "#8c564b"}


@dataclass(frozen=True)
class _Scored:
    """A model on its study samples: ``inputs`` as the policy takes them (an MLP's array,
    a graph's feeds), ``score(run)`` the run's JSON summary against the exact pass
    (``analysis.sweep.summarise``, ``analysis.graph_sweep.summarise_graph``)."""

    model: "Network | Graph"
    inputs: object
    score: Callable[[object], dict]


def _scored(model: "Network | Graph", data: Dataset) -> _Scored:
    classes = model.meta.get("classes")
    if isinstance(model, Graph):
        feeds = model.check_feeds(model_feeds(model, model, data))
        exact, task = exact_outputs(model, feeds), model_task(model, data.y)
        return _Scored(model, feeds, lambda run: summarise_graph(run, exact, task, data.y, classes).describe())
    reference = model.forward(data.x, acc="exact", return_all=True)
    exact, logits = reference.outputs[-1], reference.preactivations[-1]
    return _Scored(model, data.x, lambda run: summarise(run, exact, logits, data.y, classes).describe())


def _passes(model: "Network | Graph") -> Passes:
    """A new cache of the passes a model's runs share (a graph's by site)."""
    return SitePasses() if isinstance(model, Graph) else Passes()


def estimate_ranking(model: "Network | Graph", x, low: str, high: str) -> dict:
    """Spearman's rho of each criterion's estimate of kappa_i = a_i / |y_i| against the
    exact kappa_i, over every component of every layer (an MLP's, as the Gemm sites of
    ``Network.graph``) or accumulation site at the operands of a uniform-low pass, the
    median overestimate M_i / a_i of a_i (a_i, y_i exact at those operands;
    ``kappa-prime`` estimates kappa_i by 1 / |ŷ_i|), and what the estimate costs
    (relative to uniform ``high``: a budget-0 run less uniform low)."""
    sites = SitePasses()
    low_row = parse_accumulation(low)
    arith = Emulated(low_row)
    low_run = uniform_graph(model if isinstance(model, Graph) else model.graph, x, low, high, 0, passes=sites,
                            record=True)
    pooled: dict[str, list] = {c: [] for c in CRITERIA}
    exact_all, over = [], {c: [] for c in CRITERIA}
    for r in low_run.records:
        y = sites.exact_sums(r.x, r.w, r.bias, r.batched, 113)
        a = np.abs(r.x) @ np.swapaxes(np.abs(r.w), -1, -2) + (0 if r.bias is None else np.abs(r.bias))
        with np.errstate(divide="ignore", invalid="ignore"):
            exact_all.append((a / np.abs(y)).ravel())
            for c in CRITERIA:
                crit = get_criterion(c)
                m = (sites.magnitude(arith, low_row, r.x, r.w, r.bias, r.batched, crit.estimate)
                     if crit.needs_magnitude else np.ones_like(a))
                pooled[c].append((m / np.abs(r.y)).ravel())
                if crit.needs_magnitude:
                    over[c].append((m / a).ravel())
    exact = np.concatenate(exact_all)
    out = {}
    passes = _passes(model)
    low_cost = uniform_low(model, x, low, high, cost=COST_MODEL, passes=passes).cost.relative
    for c in CRITERIA:
        rho, pairs, _ = rank_correlation(np.concatenate(pooled[c]), exact)
        ratio = np.concatenate(over[c]) if over[c] else None
        estimate = recompute(model, x, low, high, None, c, budget=0, cost=COST_MODEL, passes=passes)
        out[c] = {"spearman": rho, "pairs": pairs,
                  "median_overestimate": None if ratio is None else float(np.nanmedian(ratio[np.isfinite(ratio)])),
                  "estimate_cost": estimate.cost.relative - low_cost}
    return out


def _chord(low: dict, high: dict, cost: float) -> float:
    t = (cost - low["relative_cost"]) / (1 - low["relative_cost"])
    return low["flip_rate"] + min(max(t, 0.0), 1.0) * (high["flip_rate"] - low["flip_rate"])


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto front (lowest flip rate at or below each cost) of (cost, flips) points."""
    front, best = [], math.inf
    for cost, flips in sorted(points):
        if flips < best:
            front.append((cost, flips))
            best = flips
    return front


def _verdict(runs: list[dict], low: dict, high: dict, samples: int) -> dict:
    """Whether a setting's guided runs beat the chord, match high, and beat random."""
    guided = [r for r in runs if r["method"] == "guided"]
    random = {r["rule"]: r for r in runs if r["method"] == "random"}
    below = [r for r in guided if r["relative_cost"] < 1
             and r["flip_rate"] <= _chord(low, high, r["relative_cost"]) - 1 / samples + 1e-12]
    match = [r["relative_cost"] for r in guided if r["relative_cost"] < 1 and r["flip_rate"] <= high["flip_rate"]]
    def versus(key: str, sign: int) -> int:
        return int(sum(sign * (r[key] - random[r["rule"]][key]) < 0 for r in guided))

    return {"beats_uniform": bool(below), "best_gain": max((_chord(low, high, r["relative_cost"]) - r["flip_rate"]
                                                          for r in below), default=None),
            "cheapest_matching_high": min(match, default=None), "better_than_random": versus("flip_rate", 1),
            "worse_than_random": versus("flip_rate", -1), "lower_error_than_random": versus("median_rel_error", 1),
            "higher_error_than_random": versus("median_rel_error", -1), "runs": len(guided)}


def _slim(run: dict, rule: str) -> dict:
    keys = ("method", "accuracy", "flip_rate", "median_rel_error", "recompute_fraction", "relative_cost")
    return {**{k: run.get(k) for k in keys}, "rule": rule}


def _summaries(scored: _Scored, low: str, high: str, granularity: str, tile: str, passes: Passes):
    """Uniform low and high, then per criterion and rule (budgets, then target errors) the
    guided run and random selection matched to it, as JSON-ready summaries."""
    net, x, summary = scored.model, scored.inputs, scored.score
    common = dict(cost=COST_MODEL, passes=passes)
    uniform = [summary(uniform_low(net, x, low, high, **common)), summary(uniform_high(net, x, low, high, **common))]
    rules = rule_list((), BUDGETS, (), granularity, tile) + rule_list((), (), TARGETS, granularity, tile)
    runs = {}
    for crit in CRITERIA:
        rows = []
        for rule in rules:
            guided = recompute(net, x, low, high, None, crit, budget=rule.budget, target_error=rule.target,
                               granularity=rule.granularity, tile=rule.tile, **common)
            name = f"B={rule.budget:g}" if rule.budget is not None else f"E={rule.target:g}"
            rows += [_slim(summary(guided), name), _slim(summary(random_selection(net, x, guided, 0, **common)), name)]
        runs[crit] = rows
    return uniform, runs


def _pair_entry(samples: int, item: tuple) -> tuple:
    """One (model, low, high) of the study, a task: (data name, samples, the estimate
    ranking, the pair's settings over every criterion and granularity)."""
    name, low, high = item
    model = load_model(name)
    data = load_model_data(model, None, "test").head(samples)
    scored = _scored(model, data)
    ranking = estimate_ranking(model, scored.inputs, low, high)
    pair = {"low": low, "high": high, "settings": []}
    passes = _passes(model)
    for granularity, tile in GRANULARITIES:
        uniform, runs = _summaries(scored, low, high, granularity, tile, passes)
        pair["uniform_low"], pair["uniform_high"] = (_slim(u, "-") for u in uniform)
        for crit, rows in runs.items():
            pair["settings"].append({"criterion": crit, "granularity": granularity,
                                     "verdict": _verdict(rows, pair["uniform_low"], pair["uniform_high"], len(data)),
                                     "runs": rows})
    return data.name, len(data), ranking, pair


def run_study(models: "list[str] | None" = None, samples: int = 200) -> dict:
    """Every (model, pair, criterion, granularity) of the module docstring: runs, verdicts,
    and each model's estimate ranking at each low format; one task per (model, pair), on
    the current executor (in-process, or a Dask cluster: ``analysis.distributed``)."""
    models = models or list(bundled_models())
    record = {"cost_model": COST_MODEL, "samples": samples, "pairs": [list(p) for p in PAIRS],
              "criteria": list(CRITERIA), "granularities": [g for g, _ in GRANULARITIES],
              "tile": GRANULARITIES[2][1], "budgets": list(BUDGETS), "target_errors": list(TARGETS),
              "baselines": ["uniform-low", "uniform-high", "random (seed 0)"], "models": {}}
    items = [(name, low, high) for name in models for low, high in PAIRS]
    for (name, low, high), (data_name, n, ranking, pair) in zip(items, run_tasks(_pair_entry, samples, items,
                                                                                 desc="study")):
        entry = record["models"].setdefault(name, {"data": data_name, "samples": n, "pairs": {},
                                                   "estimate_ranking": {}})
        entry["estimate_ranking"][f"{low}/{high}"] = ranking
        entry["pairs"][f"{low}/{high}"] = pair
    return record


def _sample_counts(record: dict) -> str:
    """``the first N test samples of each``, or per model when the counts differ."""
    counts = {e["samples"] for e in record["models"].values()}
    if len(counts) == 1:
        return f"the first {counts.pop()} test samples of each"
    return "the first test samples: " + ", ".join(f"{n} {e['samples']}" for n, e in record["models"].items())


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def markdown(record: dict, command: str, seconds: float) -> str:
    """The study's tables (module docstring) as Markdown."""
    lines = ["# Where the recompute policy wins", "",
             f"Generated by `{command}` in {seconds:.0f} s: every bundled model ({_sample_counts(record)}), "
             "the MLPs layer by layer and the graphs at every accumulation site, models as bundled (no storage "
             f"rounding), cost model `{record['cost_model']}` (relative to uniform high). Budgets "
             f"{', '.join(map(str, record['budgets']))} (share of the layer's or site's uniform-high cost spent on "
             f"recomputation) and target errors {', '.join(map(str, record['target_errors']))} (u_low s_i), "
             f"granularity per component, per output row (channel), per {record['tile']} tile of a layer's or "
             "site's (rows x outputs) matrix. Flip rate: share of samples "
             "whose predicted class differs from the exact pass. *Chord*: uniform low on some samples and "
             "uniform high on the others. See docs/method.md#the-study.", "",
             "## Estimates of kappa against exact kappa (Spearman over all components of all layers or sites)", "",
             "Each cell: Spearman's rho; in brackets, what the estimate costs relative to uniform high (bits). "
             "Last columns: median overestimate M_i / a_i of the certified bounds.", "",
             "| model | pair | kappa (low pass) | kappa-prime (1/\\|ŷ\\|) | kappa-holder | kappa-blocked:16 | "
             "M/a holder | M/a blocked:16 |", "|---|---|---|---|---|---|---|---|"]
    for name, entry in record["models"].items():
        for pair, ranks in entry["estimate_ranking"].items():
            cells = [("-" if ranks[c]["spearman"] is None else f"{ranks[c]['spearman']:.3f}")
                     + f" ({ranks[c]['estimate_cost']:.3f})" for c in CRITERIA]
            over = [f"{ranks[c]['median_overestimate']:.2f}x" for c in ("kappa-holder", "kappa-blocked:16")]
            lines.append(f"| {name} | {pair} | {' | '.join(cells)} | {' | '.join(over)} |")
    lines += ["", "## Pareto summary", "",
              "Per model and pair: uniform low and high (cost, flips); per criterion, the granularities whose runs "
              "beat the chord (✓, with the largest gain in flip rate), and the cheapest run that flips no more "
              "than uniform high.", "",
              "| model | pair | low cost / flips | high flips | " + " | ".join(CRITERIA) + " |",
              "|---|---|---|---|" + "---|" * len(CRITERIA)]
    for name, entry in record["models"].items():
        for pair_name, pair in entry["pairs"].items():
            lo, hi = pair["uniform_low"], pair["uniform_high"]
            cells = []
            if lo["flip_rate"] <= hi["flip_rate"]:
                cells = ["n/a (uniform low flips no more than high)"] * len(CRITERIA)
            for crit in CRITERIA if not cells else ():
                parts = []
                for s in (s for s in pair["settings"] if s["criterion"] == crit):
                    v = s["verdict"]
                    mark = f"✓{100 * v['best_gain']:.1f}" if v["beats_uniform"] else "✗"
                    match = "" if v["cheapest_matching_high"] is None else f"@{v['cheapest_matching_high']:.2f}"
                    parts.append(f"{s['granularity'][0]}:{mark}{match}")
                cells.append(" ".join(parts))
            lines.append(f"| {name} | {pair_name} | {lo['relative_cost']:.2f} / {_pct(lo['flip_rate'])} | "
                         f"{_pct(hi['flip_rate'])} | {' | '.join(cells)} |")
    lines += ["", "Cell: `c`/`r`/`t` = component/row/tile; `✓G` beats the chord by G percentage points of flip "
              "rate at best; `✗` never below it by one sample; `@C` the cheapest relative cost whose flip rate is "
              "at most uniform high's.", "", "## Against random selection at the same recompute counts", "",
              "Counted over every model, pair and rule; random selection pays no estimate, so at equal counts it "
              "is also cheaper.", "",
              "| criterion | granularity | fewer flips than random | more flips | lower median error | higher "
              "median error | runs |", "|---|---|---|---|---|---|---|"]
    for crit in CRITERIA:
        for gran in record["granularities"]:
            vs = [s["verdict"] for e in record["models"].values() for p in e["pairs"].values()
                  for s in p["settings"] if s["criterion"] == crit and s["granularity"] == gran]
            counts = [sum(v[k] for v in vs) for k in ("better_than_random", "worse_than_random",
                                                       "lower_error_than_random", "higher_error_than_random", "runs")]
            lines.append(f"| {crit} | {gran} | {' | '.join(map(str, counts))} |")
    wins = [(n, p, s["criterion"], s["granularity"]) for n, e in record["models"].items()
            for p, pair in e["pairs"].items() for s in pair["settings"] if s["verdict"]["beats_uniform"]]
    total = sum(len(pair["settings"]) for e in record["models"].values() for pair in e["pairs"].values())
    contested = sum(len(pair["settings"]) for e in record["models"].values() for pair in e["pairs"].values()
                    if pair["uniform_low"]["flip_rate"] > pair["uniform_high"]["flip_rate"])
    lines += ["", "## Verdict", "", f"{len(wins)} of {total} settings (model × pair × criterion × granularity) beat "
              f"uniform precision (a run below the chord by at least one sample); {total - contested} settings have "
              "nothing to gain (uniform low flips no more samples than uniform high). The winners:", ""]
    lines += [f"- {n}, {p}, {c}, {g}" for n, p, c, g in wins] or ["- none"]
    return "\n".join(lines) + "\n"


def _figure(record: dict, key: str, groups: "tuple[str, ...]"):
    from matplotlib.figure import Figure

    models = list(record["models"])
    pairs = [f"{lo}/{hi}" for lo, hi in record["pairs"]]
    fig = Figure(figsize=(4 * len(pairs), 3.2 * len(models)))
    axes = fig.subplots(len(models), len(pairs), squeeze=False)
    for i, name in enumerate(models):
        for j, pair_name in enumerate(pairs):
            ax, pair = axes[i][j], record["models"][name]["pairs"][pair_name]
            lo, hi = pair["uniform_low"], pair["uniform_high"]
            ax.plot([lo["relative_cost"], 1], [lo["flip_rate"], hi["flip_rate"]], "k--", lw=1, label="uniform (chord)")
            ax.plot([lo["relative_cost"]], [lo["flip_rate"]], "rX", ms=8)
            ax.plot([1], [hi["flip_rate"]], "k*", ms=10)
            randoms = [(r["relative_cost"], r["flip_rate"]) for s in pair["settings"] for r in s["runs"]
                       if r["method"] == "random"]
            ax.plot(*zip(*_front(randoms)), color="#7f7f7f", ls=":", marker=".", label="random (front)")
            starts = [1.6]
            for g in groups:
                front = _front([(r["relative_cost"], r["flip_rate"]) for s in pair["settings"] if s[key] == g
                                for r in s["runs"] if r["method"] == "guided"])
                ax.plot(*zip(*front), color=COLOURS[g], marker="o", ms=3, label=g)
                starts.append(1.05 * front[0][0])
            ax.set_xlim(0, max(starts))  # wide enough for the cheapest run of every group
            ax.set_title(f"{name}  {pair_name}", fontsize=9)
            ax.set_xlabel("relative cost (bits)", fontsize=8)
            ax.set_ylabel("flip rate", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: "list[str] | None" = None) -> int:
    from .cli import add_cluster_arguments
    from .report.figures import png_bytes

    parser = argparse.ArgumentParser(prog="python -m analysis.study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/study", help="output directory (default reports/study)")
    parser.add_argument("--samples", type=int, default=200, help="test samples per model (default 200)")
    parser.add_argument("--models", nargs="+", metavar="NAME", help="bundled models (default all)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    known = list(bundled_models())
    wrong = [f"--models: {n!r} is not a bundled model ({', '.join(known)})." for n in args.models or ()
             if n not in known]
    wrong += [f"--samples == {args.samples}, must be >= 1."] if args.samples < 1 else []
    if wrong:
        print(f"{parser.prog}: error: {wrong[0]}", file=sys.stderr)
        return 2
    set_quiet(args.quiet)
    start = time.perf_counter()
    try:
        with executor_for(args.workers, args.scheduler):
            record = run_study(args.models, args.samples)
    except MixaccError as exc:
        print(f"{parser.prog}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    command = "python -m analysis.study" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    record["command"], record["seconds"] = command, round(seconds, 1)
    record["provenance"] = provenance({k: v for k, v in record.items() if k != "models"}, seed=0)
    with atomic_directory(args.out) as out:
        (out / "study.json").write_text(json.dumps(to_jsonable(record), indent=1) + "\n", encoding="utf-8")
        (out / "README.md").write_text(markdown(record, command, seconds), encoding="utf-8")
        (out / "pareto.png").write_bytes(png_bytes(_figure(record, "criterion", CRITERIA)))
        (out / "granularity.png").write_bytes(png_bytes(_figure(record, "granularity",
                                                                tuple(g for g, _ in GRANULARITIES))))
    print(markdown(record, command, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
