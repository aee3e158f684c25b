"""From report data (the content of ``report.json``) to a :class:`~.render.Document` and
its figures. Everything drawn or tabulated is read from that data alone, so the JSON
holds everything the report shows and the report can be rebuilt from it.
"""

from __future__ import annotations

import re

from ..methods import GUIDED, METHODS
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


def _network_table(validations: list[dict]) -> Table:
    return Table(
        "Per format, on the whole network: top-1 accuracy of the emulated and of the exact pass, share of samples "
        "whose predicted class differs from the exact pass, and bound violations (local + global).",
        ["accumulation", "accuracy", "exact accuracy", "flip rate", "violations"],
        [[_acc_spec(v), v.get("accuracy"), v.get("exact_accuracy"), v["flip_rate"], v["violations"]] for v in validations],
    )


def _summary_table(validations: list[dict]) -> Table:
    rows = []
    for v in validations:
        for layer in v["layers"]:
            loc, glo = layer["local"], layer["global"]
            rows.append([
                _acc_spec(v), f"{layer['index']}{' (vacuous)' if loc.get('vacuous') else ''}",
                f"{layer['inputs']} -> {layer['outputs']}", layer["activation"],
                loc["components"], loc["violations"], glo["violations"], loc["max_rel_error"], glo["max_rel_error"],
                glo["median_rel_error"], loc["median_tightness"], glo["median_tightness"],
                loc["spearman_predicted_vs_measured"], glo["spearman_predicted_vs_measured"],
            ])
    return Table(
        "Per format and layer: components checked, bound violations (must be 0), measured relative errors, "
        "median tightness (bound / measured error) and Spearman rank correlation of predicted with measured error.",
        ["accumulation", "layer", "shape", "activation", "components", "local violations", "global violations",
         "max local rel. error", "max global rel. error", "median global rel. error", "median local tightness",
         "median global tightness", "Spearman local", "Spearman global"],
        rows,
    )


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


def _validation_section(v: dict, images: dict[str, bytes]) -> Section:
    spec = _acc_spec(v)
    layers = len(v["layers"])
    bound_file, predicted_file = f"bound_{slug(spec)}.png", f"predicted_{slug(spec)}.png"
    bound_panels = _panels(v, "local", "abs_error", "bound") + _panels(v, "global", "abs_error", "bound")
    images[bound_file] = figures.png_bytes(figures.error_vs_bound(
        bound_panels, f"{spec}: measured error against the {v['bound']} bound (top: local, bottom: global)", layers))
    predicted_panels = _panels(v, "local", "rel_error", "predicted") + _panels(v, "global", "rel_error", "predicted")
    images[predicted_file] = figures.png_bytes(figures.predicted_vs_measured(
        predicted_panels, f"{spec}: first-order predicted against measured relative error (top: local, bottom: global)", layers))
    uncovered = sum(layer["local"]["uncovered"] for layer in v["layers"])
    verdict = (f"The {v['bound']} bound held for every component ({_count_components(v)} checked per error kind, "
               "local and global)." if not v["violations"] else
               f"VIOLATIONS: {v['violations_local']} local and {v['violations_global']} global components exceed "
               f"the {v['bound']} bound.")
    if uncovered:
        verdict += f" {uncovered} components overflowed and are outside the bounds."
    vacuous = v.get("vacuous_layers") or []
    if vacuous:
        verdict += (f" In layer{'s' if len(vacuous) > 1 else ''} {', '.join(map(str, vacuous))} the bound is vacuous "
                    "(its constant c >= 1: valid, but no smaller than the value itself); it is capped at max + a_i "
                    "and, for bounded activations, at the activation's range, and the first-order predictions there "
                    "are outside their range.")
    if v.get("bound_assumption"):
        verdict += (f" The probabilistic bound fails for a component with probability at most "
                    f"{v['failure_probability']:.3g}{' (it guarantees nothing)' if v['failure_probability'] >= 1 else ''}; "
                    f"it assumes {v['bound_assumption']}.")
    drawn = (f"Points: the components of the first {v['points']['samples']} samples (at most "
             f"{v['points']['limit']} drawn per panel, violations always drawn); the summary numbers cover all "
             f"{v['samples']} samples.")
    return Section(f"Accumulation {spec}", (
        verdict, drawn,
        Figure(bound_file, f"{spec}: rigorous componentwise bound (x) against measured absolute error (y) per layer; "
                           "points above the dashed line y = x would be violations (red crosses)."),
        Figure(predicted_file, f"{spec}: predicted relative error kappa_sigma kappa_i (c u + eps_in) against the measured "
                               "relative error; the title gives Spearman's rank correlation over every component."),
    ))


def _count_components(v: dict) -> int:
    return sum(layer["local"]["components"] for layer in v["layers"])


def _conditioning_section(cond: dict, images: dict[str, bytes]) -> Section:
    images["kappa.png"] = figures.png_bytes(figures.kappa_distributions(
        cond["layers"], f"Condition numbers per layer ({cond['source']})"))
    return Section("Condition numbers", (
        "kappa_i = (|b_i| + sum_j |w_ij| |x_j|) / |y_i| measures how much the inner product amplifies relative "
        "rounding errors; kappa_sigma(y) = |y sigma'(y) / sigma(y)| how much the activation amplifies or damps "
        "them. Their product predicts the relative error of each output component.",
        Figure("kappa.png", f"Distribution of kappa_i and kappa_sigma per layer over every component ({cond['source']})."),
    ))


def _run_rows(runs: list[dict]) -> list[list]:
    return [[r["method"], r.get("criterion"), r.get("tau"), r.get("accuracy"), r.get("flip_rate"), r["median_rel_error"],
             r["max_rel_error"], r["recompute_fraction"], ", ".join(f"{f:.3f}" for f in r["layer_recompute_fraction"]),
             r["relative_cost"]] for r in runs]


def _matched_table(runs: list[dict]) -> Table:
    """Guided selection against the matched baselines (random and local-oracle selection of the same number of
    components per layer and sample: the selection's quality whatever its cost."""
    by_key = {(r["method"], r.get("criterion"), r.get("tau")): r for r in runs}
    matched = [m.name for m in METHODS.rows() if m.matched and any(r["method"] == m.name for r in runs)]
    rows = []
    for r in runs:
        if r["method"] != GUIDED:
            continue
        twins = [by_key.get((m, r["criterion"], r["tau"]), {}) for m in matched]
        rows.append([r["criterion"], r["tau"], r["recompute_fraction"], r["median_rel_error"],
                     *(t.get("median_rel_error") for t in twins), r["flip_rate"], *(t.get("flip_rate") for t in twins)])
    return Table("Guided against random and local-oracle selection at the same recompute fraction per layer: median "
                 "output relative error and flip rate (the local oracle knows each layer's exact local error).",
                 ["criterion", "tau", "recomputed", "guided error", *(f"{m} error" for m in matched), "guided flips",
                  *(f"{m} flips" for m in matched)], rows)


def _sweep_section(sweep: dict, images: dict[str, bytes]) -> Section:
    low, high = sweep["low"], sweep["high"]
    low, high = (x["spec"] if isinstance(x, dict) else x for x in (low, high))
    runs = sweep["runs"]
    images["sweep.png"] = figures.png_bytes(figures.tau_sweep(
        runs, f"Recompute policy: low {low}, high {high}, cost model {sweep['cost_model']}", low=low, high=high))
    images["recompute_fraction.png"] = figures.png_bytes(figures.recompute_fractions(
        runs, f"Guided recompute: fraction of components recomputed in {high}, per layer"))
    return Section("Recompute policy (tau sweep)", (
        f"Algorithm 1: every component is accumulated in {low}; components whose score exceeds tau (and any that "
        f"overflowed or are zero) are recomputed in {high}. Random and local-oracle selection recompute the same fraction "
        "of components per layer; uniform low and high are the two ends. Cost is relative to uniform high.",
        Figure("sweep.png", "Relative cost against median output relative error (left, log scale) and against top-1 "
                            "accuracy (middle), and the recompute fraction against the median output relative error "
                            "(right: which components are recomputed, whatever the estimation costs), for every "
                            "method on the same axes."),
        _matched_table(runs),
        Figure("recompute_fraction.png", "Fraction of components recomputed in high precision, per layer and tau."),
        Table("Every run of the sweep (errors are output relative errors against the exact forward pass).",
              ["method", "criterion", "tau", "accuracy", "flip rate", "median rel. error", "max rel. error",
               "recomputed", "recomputed per layer", "relative cost"], _run_rows(runs)),
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
        parts.append(f"storage format {config['storage']} for weights, biases, the input and every layer output")
    return ("Storage: " + "; ".join(parts) + ".") if parts else "Storage: float64 weights, biases and input."


def compose(report: dict) -> tuple[Document, dict[str, bytes]]:
    """The document and its PNG figures (file name -> bytes) for ``report`` data."""
    images: dict[str, bytes] = {}
    model, data = report["model"], report["data"]
    lead = [
        f"Model {model['name']}: {model['architecture']} ({model['n_params']} parameters). Data: {data['spec']} "
        f"({data['split']} split), {data['samples']} samples.",
        _storage_text(report["config"]),
        "Each accumulation format is run on the model and compared, component by component and layer by layer, "
        "with the exact forward pass: local errors isolate one layer's accumulation (exact evaluation at the same "
        "computed input), global errors include everything propagated from earlier layers.",
    ]
    sections = []
    validations = report["validations"]
    if validations:
        sections.append(Section("Summary per layer and format", (_network_table(validations), _summary_table(validations))))
        sections.extend(_validation_section(v, images) for v in validations)
    if report.get("conditioning"):
        sections.append(_conditioning_section(report["conditioning"], images))
    if report.get("sweep"):
        sections.append(_sweep_section(report["sweep"], images))
    sections.append(_provenance_section(report))
    return Document(report["title"], lead, sections), images
