"""From report data (the content of ``report.json``) to a :class:`~.render.Document` and
its figures. Everything drawn or tabulated is read from that data alone, so the JSON
holds everything the report shows and the report can be rebuilt from it.
"""

from __future__ import annotations

import re

from emulator.storage import parse_storage

from ..methods import LAMP, METHODS
from ..verdict import label_text, report_verdict
from . import figures
from .render import Document, Figure, Section, Table

__all__ = ["compose", "slug"]


def slug(text: str) -> str:
    """A file-name-safe form of an accumulation spec (``fp8-e4m3fn:blocked:32`` ->
    ``fp8-e4m3fn_blocked_32``)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "x"


def _acc_spec(validation: dict) -> str:
    acc = validation["accumulation"]
    return acc["spec"] if isinstance(acc, dict) else str(acc)


def _verdict_section(report: dict, images: dict[str, bytes]) -> Section:
    """The answer first: per format its numbers against the exact pass, the bound's status
    and the label, all from :func:`analysis.verdict.report_verdict` (the rows the format
    tables below read too), then the sweep's cost against error figure."""
    data = report_verdict(report)
    rows = [[f["spec"], f["accuracy"], f["exact_accuracy"], f["flip_rate"], f["max_rel_error"], f["median_rel_error"],
             f["bound"], label_text(f, data["cost_model"])] for f in data["formats"]]
    blocks: list = [
        f"Thresholds: {data['thresholds_text']} (mixacc report --max-flip-rate, --max-rel-error). A format is safe when "
        "it meets them; the sweep's low format is safe with recompute when a policy run (guided, LAMP, static, "
        "multi-level; not the uniform runs, nor the matched baselines, which take their counts from another run) meets "
        "them: the cheapest is named.",
        Table("Verdict per accumulation format (errors against the exact forward pass; the bound's status from the "
              "validation below).",
              ["accumulation", "accuracy", "exact accuracy", "flip rate", "max output rel. error",
               "median output rel. error", "bound", "verdict"], rows),
    ]
    if report.get("sweep"):
        blocks.append(_sweep_figure(report["sweep"], images))
    return Section("Verdict", tuple(blocks))


def _summary_cells(layer: dict) -> list:
    loc, glo = layer["local"], layer["global"]
    return [loc["components"], f"{loc['violations']} / {glo['violations']}", loc["max_rel_error"], glo["max_rel_error"],
            glo["median_rel_error"], loc["median_tightness"], glo["median_tightness"],
            loc["spearman_predicted_vs_measured"], glo["spearman_predicted_vs_measured"]]


_SUMMARY_COLUMNS = ["components", "violations (local / global)", "max rel. error local", "max rel. error global",
                    "median rel. error global", "tightness local", "tightness global", "Spearman local",
                    "Spearman global"]


def _layer_table(v: dict) -> Table:
    """One row per layer of an MLP, or per accumulation site of a graph (its global
    columns: the tensor the site computes)."""
    if _is_graph(v):
        rows = [[site["name"] + (" (vacuous)" if site["local"].get("vacuous") else ""), site["op"], site["inputs"],
                 *_summary_cells(site)] for site in v["sites"]]
        return Table(f"{_acc_spec(v)} per accumulation site: components checked, bound violations (must be 0), "
                     "measured relative errors, median tightness (bound / measured error) and Spearman rank "
                     "correlation of predicted with measured error.", ["site", "op", "n", *_SUMMARY_COLUMNS], rows)
    rows = [[f"{layer['index']}{' (vacuous)' if layer['local'].get('vacuous') else ''}",
             f"{layer['inputs']} -> {layer['outputs']}", layer["activation"], *_summary_cells(layer)]
            for layer in v["layers"]]
    return Table(f"{_acc_spec(v)} per layer: components checked, bound violations (must be 0), measured relative "
                 "errors, median tightness (bound / measured error) and Spearman rank correlation of predicted with "
                 "measured error.", ["layer", "shape", "activation", *_SUMMARY_COLUMNS], rows)


def _is_graph(validation: dict) -> bool:
    return "sites" in validation


def _panels(validation: dict, kind: str, measured_key: str, other_key: str) -> list[dict]:
    """One scatter panel per layer: the drawn points of ``kind`` (local or global) and,
    from the validation summary, Spearman's rho over every component of every sample."""
    panels = []
    for layer, summary in zip(validation["points"]["layers"], validation["layers"]):
        data = layer[kind]
        panels.append({
            "title": f"layer {layer['index']} ({layer['activation']}), {kind}\n{data['drawn']} of {data['components']} drawn",
            "measured": data[measured_key], other_key: data[other_key], "zero_error": data["zero_error"],
            "spearman": summary[kind]["spearman_predicted_vs_measured"], "violations": data["violations"],
        })
    return panels


def _bound_text(v: dict) -> str:
    where = "site" if _is_graph(v) else "layer"
    text = (f"The {v['bound']} bound held for every component ({_count_components(v)} checked per error kind, "
            "local and global)." if not v["violations"] else
            f"VIOLATIONS: {v['violations_local']} local and {v['violations_global']} global components exceed "
            f"the {v['bound']} bound.")
    uncovered = sum(layer["local"]["uncovered"] for layer in v["layers"])
    if uncovered:
        text += f" {uncovered} components overflowed and are outside the bounds."
    vacuous = v.get("vacuous_layers") or []
    if vacuous:
        text += (f" At {where}{'s' if len(vacuous) > 1 else ''} {', '.join(map(str, vacuous))} the bound is vacuous "
                 "(its constant c >= 1: valid, but no smaller than the value itself); it is capped at max + a_i "
                 "and, for bounded activations, at the activation's range, and the first-order predictions there "
                 "are outside their range.")
    if v.get("bound_assumption"):
        text += (f" The probabilistic bound fails for a component with probability at most "
                 f"{v['failure_probability']:.3g}{' (it guarantees nothing)' if v['failure_probability'] >= 1 else ''}; "
                 f"it assumes {v['bound_assumption']}.")
    return text


def _validation_section(v: dict, images: dict[str, bytes]) -> Section:
    spec = _acc_spec(v)
    if "points" not in v:
        return Section(f"Accumulation {spec}", (_bound_text(v), _layer_table(v)))
    layers = len(v["layers"])
    bound_file, predicted_file = f"bound_{slug(spec)}.png", f"predicted_{slug(spec)}.png"
    bound_panels = _panels(v, "local", "abs_error", "bound") + _panels(v, "global", "abs_error", "bound")
    images[bound_file] = figures.png_bytes(figures.error_vs_bound(
        bound_panels, f"{spec}: measured error against the {v['bound']} bound (top: local, bottom: global)", layers))
    predicted_panels = _panels(v, "local", "rel_error", "predicted") + _panels(v, "global", "rel_error", "predicted")
    images[predicted_file] = figures.png_bytes(figures.predicted_vs_measured(
        predicted_panels, f"{spec}: first-order predicted against measured relative error (top: local, bottom: global)", layers))
    drawn = (f"Points: the components of the first {v['points']['samples']} samples (at most "
             f"{v['points']['limit']} drawn per panel, violations always drawn); the summary numbers cover all "
             f"{v['samples']} samples.")
    return Section(f"Accumulation {spec}", (
        _bound_text(v), _layer_table(v), drawn,
        Figure(bound_file, f"{spec}: rigorous componentwise bound (x) against measured absolute error (y) per layer; "
                           "points above the dashed line y = x would be violations (red crosses)."),
        Figure(predicted_file, f"{spec}: predicted relative error kappa_sigma kappa_i (c u + eps_in) against the measured "
                               "relative error; the title gives Spearman's rank correlation over every component."),
    ))


def _count_components(v: dict) -> int:
    return sum(layer["local"]["components"] for layer in v["layers"])


def _conditioning_section(cond: dict, images: dict[str, bytes]) -> Section:
    if "sites" in cond:
        return _site_conditioning_section(cond, images)
    images["kappa.png"] = figures.png_bytes(figures.kappa_distributions(
        cond["layers"], f"Condition numbers per layer ({cond['source']})"))
    return Section("Condition numbers", (
        "kappa_i = (|b_i| + sum_j |w_ij| |x_j|) / |y_i| measures how much the inner product amplifies relative "
        "rounding errors; kappa_sigma(y) = |y sigma'(y) / sigma(y)| how much the activation amplifies or damps "
        "them. Their product predicts the relative error of each output component.",
        Figure("kappa.png", f"Distribution of kappa_i and kappa_sigma per layer over every component ({cond['source']})."),
    ))


def _site_conditioning_section(cond: dict, images: dict[str, bytes]) -> Section:
    sites = cond["sites"]
    quantiles = list(sites[0]["quantiles"]) if sites else []
    images["kappa.png"] = figures.png_bytes(figures.block_heatmap(
        [(s["block"], s["role"], s["quantiles"]["q50"]) for s in sites], "median kappa_i",
        "Median kappa_i per site", log=True))
    return Section("Condition numbers", (
        "kappa_i = a_i / |y_i|, with a_i the sum of the absolute values of a site's terms, measures how much the "
        "sum amplifies the relative rounding errors of its terms; the policy recomputes the components where it is "
        "large.",
        Figure("kappa.png", "Median kappa_i of every accumulation site, blocks (columns) against roles (rows; a site "
                            f"outside the repeated blocks has its own row, in column -); {cond['source']}."),
        Table(f"Quantiles of kappa_i per accumulation site ({cond['source']}).",
              ["site", "op", *quantiles, "components", "infinite"],
              [[s["name"], s["op"], *s["quantiles"].values(), s["components"], s["inf"]] for s in sites]),
    ))


def _graph_sweep(sweep: dict) -> bool:
    return "sites" in sweep


def _run_rows(runs: list[dict], graph: bool) -> list[list]:
    rows = []
    for r in runs:
        per = [] if graph else [", ".join(f"{f:.3f}" for f in r["layer_recompute_fraction"])]
        task = [r.get("kl_mean")] if graph else []
        rows.append([r["method"], r.get("criterion"), r.get("tau"), r.get("accuracy"), r.get("flip_rate"), *task,
                     r["median_rel_error"], r["max_rel_error"], r["recompute_fraction"], *per, r["relative_cost"]])
    return rows


def _leaders(runs: list[dict]) -> list[dict]:
    """The runs baselines are matched to (guided, LAMP on graphs)."""
    return [r for r in runs if r.get("tau") is not None and not METHODS.get(r["method"]).matched
            and not METHODS.get(r["method"]).uniform]


def _matched_table(runs: list[dict]) -> Table:
    """Guided selection (and LAMP on a graph) against the matched baselines (random and
    local-oracle selection of the same number of components per layer or site and
    sample; the guided ranking at LAMP's budget): the selection's quality whatever its cost."""
    by_key = {(r["method"], r.get("criterion"), r.get("tau")): r for r in runs}
    matched = [m.name for m in METHODS.rows() if m.matched and any(r["method"] == m.name for r in runs)]
    rows = []
    for r in _leaders(runs):
        twins = [by_key.get((m, r["criterion"], r["tau"]), {}) for m in matched]
        rows.append([r["method"], r["criterion"], r["tau"], r["recompute_fraction"], r["median_rel_error"],
                     *(t.get("median_rel_error") for t in twins), r["flip_rate"], *(t.get("flip_rate") for t in twins)])
    return Table("Each policy against the baselines matched to it at the same recompute fraction per layer (site): "
                 "median output relative error and flip rate (the local oracle knows each layer's exact local error).",
                 ["method", "criterion", "tau", "recomputed", "error", *(f"{m} error" for m in matched), "flips",
                  *(f"{m} flips" for m in matched)], rows)


def _sweep_formats(sweep: dict) -> tuple[str, str]:
    return tuple(x["spec"] if isinstance(x, dict) else x for x in (sweep["low"], sweep["high"]))


def _sweep_figure(sweep: dict, images: dict[str, bytes]) -> Figure:
    low, high = _sweep_formats(sweep)
    images["sweep.png"] = figures.png_bytes(figures.tau_sweep(
        sweep["runs"], f"Recompute policy: low {low}, high {high}, cost model {sweep['cost_model']}", low=low, high=high))
    return Figure("sweep.png", "Relative cost against median output relative error (left, log scale) and against top-1 "
                               "accuracy (middle), and the recompute fraction against the median output relative error "
                               "(right: which components are recomputed, whatever the estimation costs), for every "
                               "method on the same axes.")


def _run_label(run: dict) -> str:
    """guided kappa, lamp-strict, ...: a LAMP criterion names its method."""
    return run["criterion"] if run["method"] == LAMP else f"{run['method']} {run['criterion']}"


def _fraction_figure(sweep: dict, images: dict[str, bytes]) -> Figure:
    low, high = _sweep_formats(sweep)
    runs = sweep["runs"]
    if not _graph_sweep(sweep):
        images["recompute_fraction.png"] = figures.png_bytes(figures.recompute_fractions(
            runs, f"Guided recompute: fraction of components recomputed in {high}, per layer"))
        return Figure("recompute_fraction.png", "Fraction of components recomputed in high precision, per layer and tau.")
    leaders = _leaders(runs)
    names = [s["name"] for s in sweep["sites"]]
    images["recompute_fraction.png"] = figures.png_bytes(figures.site_heatmap(
        names, [f"{_run_label(r)}\ntau={r['tau']:g}" for r in leaders],
        [[r["site_recompute_fraction"][n] for r in leaders] for n in names],
        f"Recomputed in {high}, per site and run"))
    return Figure("recompute_fraction.png", f"Fraction of each site's components recomputed in {high} (rows: sites in "
                                            "graph order; columns: the guided and LAMP runs by tau).")


def _sweep_section(sweep: dict, images: dict[str, bytes]) -> Section:
    low, high = _sweep_formats(sweep)
    runs = sweep["runs"]
    graph = _graph_sweep(sweep)
    unit = "site" if graph else "layer"
    columns = ["method", "criterion", "tau", "accuracy", "flip rate", *(["KL mean"] if graph else []),
               "median rel. error", "max rel. error", "recomputed", *([] if graph else ["recomputed per layer"]),
               "relative cost"]
    return Section("Recompute policy (tau sweep)", (
        f"Algorithm 1: every component is accumulated in {low}; components whose score exceeds tau (and any that "
        f"overflowed or are zero) are recomputed in {high}. Random and local-oracle selection recompute the same fraction "
        f"of components per {unit}; uniform low and high are the two ends. Cost is relative to uniform high. The cost "
        "against error figure is in the verdict above."
        + (" On a graph, LAMP recomputes the attention scores its criterion selects; the guided ranking is matched "
           "to its budget." if graph else ""),
        _matched_table(runs),
        _fraction_figure(sweep, images),
        Table("Every run of the sweep (errors are output relative errors against the exact forward pass).", columns,
              _run_rows(runs, graph)),
    ))


def _provenance_section(report: dict) -> Section:
    prov = report["provenance"]
    versions = Table("Package versions.", ["package", "version"], [[k, v] for k, v in prov["versions"].items()])
    config = Table("Configuration.", ["setting", "value"],
                   [[k, ", ".join(map(str, v)) if isinstance(v, list) else v] for k, v in report["config"].items()])
    timing = Table("Wall time of each part (seconds).", ["part", "seconds"], [[k, v] for k, v in report["timing"].items()])
    return Section("Reproducing this report", (
        f"Command: {prov['command']}", f"Seed {prov['seed']}; Python {prov['python']} on {prov['platform']}; "
        f"created {prov['created']}.", config, versions, timing,
    ))


def _storage_text(config: dict) -> str:
    parts = []
    if config.get("weights_storage"):
        parts.append(f"weights and biases rounded to {config['weights_storage']} first (the exact reference uses "
                     "the same rounded values)")
    if config.get("storage"):
        sums = ", the outputs of sum operators included" if parse_storage(config["storage"]).sums else ""
        parts.append(f"storage format {config['storage']} for weights, biases, the input and every layer output{sums}")
    return ("Storage: " + "; ".join(parts) + ".") if parts else "Storage: float64 weights, biases and input."


def compose(report: dict) -> tuple[Document, dict[str, bytes]]:
    """The document and its PNG figures (file name -> bytes) for ``report`` data: the
    verdict first, then the setup, one section per format, condition numbers, the sweep
    and how to reproduce the report."""
    images: dict[str, bytes] = {}
    model, data = report["model"], report["data"]
    lead = [f"Model {model['name']}: {model['architecture']} ({model['n_params']} parameters). Data: {data['spec']} "
            f"({data['split']} split), {data['samples']} samples."]
    unit = "site" if any(_is_graph(v) for v in report["validations"]) else "layer"
    sections = [_verdict_section(report, images), Section("Setup", (
        _storage_text(report["config"]),
        f"Each accumulation format is run on the model and compared, component by component and {unit} by {unit}, "
        f"with the exact forward pass: local errors isolate one {unit}'s accumulation (exact evaluation at the same "
        f"computed input), global errors include everything propagated from earlier {unit}s.",
    ))]
    sections.extend(_validation_section(v, images) for v in report["validations"])
    if report.get("conditioning"):
        sections.append(_conditioning_section(report["conditioning"], images))
    if report.get("sweep"):
        sections.append(_sweep_section(report["sweep"], images))
    sections.append(_provenance_section(report))
    return Document(report["title"], lead, sections), images
