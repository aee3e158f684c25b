"""The verdict: per accumulation format, is it safe to deploy against thresholds the user
sets (docs/method.md#the-verdict)?

Every number comes from the records the report's tables show: a validation record
(``mixacc validate --json``: ``accuracy``, ``flip_rate``, the output's ``max_rel_error``,
violations, vacuous layers, failure probability) or, for a format only the sweep ran, its
``uniform-low`` run (``mixacc recompute --json``). :func:`format_rows` reads them once;
the verdict, its text lines and the report's format table are all built from its rows.

A format is *safe* when its flip rate against the exact pass is at most
``max_flip_rate`` and its largest output relative error at most ``max_rel_error`` (each
checked only when set). An unsafe format that is the sweep's low format is *safe with
recompute* when some policy run of the sweep meets the thresholds: the cheapest such run
is named, with its recompute fraction and relative cost; otherwise it is *unsafe* and no
policy run meets them. Policy runs are those that select on their own what to recompute
(guided, static, multi-level, LAMP); not the uniform runs, and not the matched baselines,
which take their recompute counts from another run (the local oracle also needs the exact
errors). A policy run dearer than uniform high is named as such.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass

from emulator.accumulation import parse_accumulation
from emulator.errors import MixaccError

from .methods import METHODS, UNIFORM_LOW

__all__ = ["Thresholds", "FormatRow", "DEFAULT_MAX_FLIP_RATE", "DEFAULT_MAX_REL_ERROR", "format_rows", "verdict",
           "verdict_lines", "thresholds_of", "report_verdict", "output_summary", "canonical", "flip_rate_of",
           "is_policy", "label_text", "bound_status", "ThresholdError",
           "SAFE", "UNSAFE", "SAFE_WITH_RECOMPUTE"]

DEFAULT_MAX_FLIP_RATE = 0.01
DEFAULT_MAX_REL_ERROR = None

SAFE, UNSAFE, SAFE_WITH_RECOMPUTE = "safe", "unsafe", "safe with recompute"
_NAMED = 3  # vacuous layers or sites named in the bound status; more are counted


class ThresholdError(MixaccError):
    """A verdict threshold that is not a number >= 0."""


@dataclass(frozen=True)
class Thresholds:
    """What *safe* means: flip rate against the exact pass <= ``max_flip_rate`` (for an
    embedding model, the share of samples whose nearest neighbour changes) and largest
    output relative error <= ``max_rel_error`` (None: not checked)."""

    max_flip_rate: "float | None" = DEFAULT_MAX_FLIP_RATE
    max_rel_error: "float | None" = DEFAULT_MAX_REL_ERROR

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value is not None and not value >= 0:
                raise ThresholdError(f"--{name.replace('_', '-')} == {value}, must be >= 0.")

    def met(self, flip_rate: "float | None", max_rel_error: "float | None") -> bool:
        """Every threshold that is set holds (a metric the data cannot give fails a threshold
        set on it)."""
        return all(limit is None or (value is not None and value <= limit)
                   for limit, value in ((self.max_flip_rate, flip_rate), (self.max_rel_error, max_rel_error)))

    def describe(self) -> str:
        parts = [f"flip rate <= {_pct(self.max_flip_rate)}" if self.max_flip_rate is not None else
                 "flip rate not checked",
                 f"largest output relative error <= {self.max_rel_error:g}" if self.max_rel_error is not None else
                 "output relative error not checked"]
        return ", ".join(parts)


def thresholds_of(config: dict) -> Thresholds:
    """The thresholds a report's ``config`` records (the defaults for reports written
    before they existed)."""
    return Thresholds(config.get("max_flip_rate", DEFAULT_MAX_FLIP_RATE),
                      config.get("max_rel_error", DEFAULT_MAX_REL_ERROR))


@dataclass(frozen=True)
class FormatRow:
    """One accumulation format's network-level numbers against the exact pass: where they
    come from (``source``: validation or the sweep's uniform-low run), and the bound's status."""

    spec: str
    source: str
    accuracy: "float | None"
    exact_accuracy: "float | None"
    flip_rate: "float | None"
    max_rel_error: "float | None"
    median_rel_error: "float | None"
    violations: "int | None"
    bound: str


def _pct(value: "float | None") -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _sci(value: "float | None") -> str:
    return "n/a" if value is None else f"{value:.3g}"


def canonical(spec) -> str:
    """The canonical spec of an accumulation (``bf16`` -> ``bf16:recursive``)."""
    text = spec["spec"] if isinstance(spec, dict) else str(spec)
    try:
        return parse_accumulation(text).spec
    except MixaccError:
        return text


def output_summary(validation: dict) -> dict:
    """The global summary of the network's output: an MLP's last layer, a graph's last
    tensor (``GraphValidation.output``)."""
    tensors = validation.get("tensors")
    return tensors[-1]["global"] if tensors else validation["layers"][-1]["global"]


def bound_status(validation: dict) -> str:
    """held, VIOLATED, vacuous (where) or probabilistic with its failure probability."""
    if validation["violations"]:
        return f"VIOLATED ({validation['violations']} components)"
    notes = []
    vacuous = validation.get("vacuous_layers") or []
    if vacuous:
        shown = ", ".join(map(str, vacuous[:_NAMED]))
        notes.append(f"vacuous in {shown}" if len(vacuous) <= _NAMED else
                     f"vacuous in {len(vacuous)} {'sites' if 'sites' in validation else 'layers'}: {shown}, ...")
    if validation.get("bound_assumption"):
        p = validation["failure_probability"]
        notes.append(f"probabilistic, fails w.p. <= {p:.3g}" + (" (guarantees nothing)" if p >= 1 else ""))
    return "held" + (f" ({'; '.join(notes)})" if notes else "")


def flip_rate_of(record: dict) -> "float | None":
    """The share of samples whose answer changes against the exact pass: a classifier's
    predicted class, else an embedding model's nearest neighbour (``neighbour_flip_rate``
    of a sweep run or of a graph validation's metrics)."""
    if record.get("flip_rate") is not None:
        return record["flip_rate"]
    return {**(record.get("metrics") or {}), **record}.get("neighbour_flip_rate")


def worst_output_error(validation: dict) -> "float | None":
    """The largest relative error of the output; an output component the summaries leave
    out (not finite where the exact value is: an overflow) has an unbounded error, inf."""
    out = output_summary(validation)
    return math.inf if out.get("uncovered") else out["max_rel_error"]


def _validation_row(v: dict) -> FormatRow:
    out = output_summary(v)
    return FormatRow(canonical(v["accumulation"]), "validation", v.get("accuracy"), v.get("exact_accuracy"),
                     flip_rate_of(v), worst_output_error(v), out["median_rel_error"], v["violations"],
                     bound_status(v))


def _run_row(spec: str, run: dict) -> FormatRow:
    return FormatRow(spec, "sweep", run.get("accuracy"), None, flip_rate_of(run), run["max_rel_error"],
                     run["median_rel_error"], None, "not checked")


def format_rows(validations: list[dict], sweep: "dict | None") -> list[FormatRow]:
    """One row per validated format, then the sweep's low format when it was not
    validated (from its uniform-low run; the bound is then not checked)."""
    rows = [_validation_row(v) for v in validations]
    if sweep:
        low = canonical(sweep["low"])
        uniform = [r for r in sweep["runs"] if r["method"] == UNIFORM_LOW]
        if uniform and low not in {r.spec for r in rows}:
            rows.append(_run_row(low, uniform[0]))
    return rows


def is_policy(method: str) -> bool:
    """Whether a run of ``method`` selects on its own what to recompute (not uniform, not
    matched to another run)."""
    row = METHODS.get(method)
    return not row.uniform and not row.matched


def _cheapest(sweep: dict, thresholds: Thresholds) -> "dict | None":
    meeting = [r for r in sweep["runs"] if is_policy(r["method"]) and thresholds.met(flip_rate_of(r),
                                                                                       r.get("max_rel_error"))]
    return min(meeting, key=lambda r: (r["relative_cost"], r["recompute_fraction"])) if meeting else None


def _run_name(run: dict) -> str:
    parts = [run["method"]]
    if run.get("criterion"):
        parts.append(run["criterion"])
    if run.get("tau") is not None:
        parts.append(f"tau={run['tau']:g}")
    return " ".join(parts)


def verdict(validations: list[dict], sweep: "dict | None", thresholds: Thresholds) -> dict:
    """The JSON-ready verdict: the thresholds and, per format (:func:`format_rows`), its
    numbers, label and, for the sweep's low format when unsafe, the cheapest deployable
    policy run that meets the thresholds (or None)."""
    rows = format_rows(validations, sweep)
    low = canonical(sweep["low"]) if sweep else None
    high = canonical(sweep["high"]) if sweep else None
    formats = []
    for row in rows:
        entry = {**asdict(row), "label": SAFE if thresholds.met(row.flip_rate, row.max_rel_error) else UNSAFE,
                 "policy": None}
        if entry["label"] == UNSAFE and row.spec == low:
            best = _cheapest(sweep, thresholds)
            if best is not None:
                entry["label"] = SAFE_WITH_RECOMPUTE
                entry["policy"] = {"run": _run_name(best), "method": best["method"], "criterion": best.get("criterion"),
                                   "tau": best.get("tau"), "high": high,
                                   "recompute_fraction": best["recompute_fraction"],
                                   "relative_cost": best["relative_cost"], "flip_rate": flip_rate_of(best),
                                   "max_rel_error": best.get("max_rel_error")}
            else:
                entry["policy"] = {"run": None, "high": high}
        formats.append(entry)
    return {"thresholds": asdict(thresholds), "thresholds_text": thresholds.describe(),
            "cost_model": sweep.get("cost_model") if sweep else None, "formats": formats}


def label_text(entry: dict, cost_model: "str | None" = None) -> str:
    """The label and, for the sweep's low format, what recompute buys."""
    policy = entry.get("policy")
    if not policy:
        return entry["label"]
    if policy["run"] is None:
        return f"{entry['label']}: no policy run (high {policy['high']}) meets them"
    cost = f"relative cost {policy['relative_cost']:.3f}" + (f", {cost_model} cost" if cost_model else "")
    if policy["relative_cost"] > 1:
        cost += "; more than uniform-high"
    return (f"{entry['label']}: {policy['run']} recomputes {_pct(policy['recompute_fraction'])} in {policy['high']} "
            f"({cost})")


def verdict_lines(data: dict) -> list[str]:
    """The verdict as text: the thresholds, then one line per format."""
    lines = [f"verdict ({data['thresholds_text']}):"]
    width = max((len(f["spec"]) for f in data["formats"]), default=0)
    for f in data["formats"]:
        accuracy = "" if f["accuracy"] is None else f"accuracy {_pct(f['accuracy'])}, "
        lines.append(f"  {f['spec']:<{width}}  {accuracy}flips {_pct(f['flip_rate'])}, worst output rel. error "
                     f"{_sci(f['max_rel_error'])}, bound {f['bound']} -> {label_text(f, data.get('cost_model'))}")
    return lines


def report_verdict(report: dict) -> dict:
    """The verdict of report data (``report.json``), under the thresholds its config records."""
    return verdict(report["validations"], report.get("sweep"), thresholds_of(report["config"]))
