"""``mixacc validate``: do the componentwise bounds hold for this model in this format,
how tight are they, and do the condition numbers rank the components' errors?"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from emulator.accumulation import parse_accumulation
from emulator.data import load_model_data
from emulator.errors import DataError
from emulator.modelio import load_model
from emulator.storage import parse_storage

from ..atomic import write_json
from ..bounds import parse_bound
from ..provenance import provenance
from ..validation import validate
from ..verdict import verdict, verdict_lines
from .storage import add_storage_arguments, storage_of_args
from .thresholds import add_threshold_arguments, thresholds_of_args

HELP = "measure local and global errors per layer and component against the exact reference and the bounds"

DEFAULT_SAMPLES = 1000


def add_common_arguments(parser, default_samples: "int | None") -> None:
    """MODEL, --data, --samples, --seed, --storage, --store-sums, --json (shared with ``emulate``
    and ``certify``)."""
    parser.add_argument("model", metavar="MODEL", help="a model file or bundled model name")
    parser.add_argument("--data", metavar="D", help="data spec (default: the model's own test data)")
    samples = f"default {default_samples}" if default_samples else "default: all"
    parser.add_argument("--samples", type=int, metavar="N", default=default_samples,
                        help=f"number of samples ({samples}; with --seed a seeded random subset, else the first N)")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="seed of the sample subset and of stochastic rounding when the spec gives none")
    add_storage_arguments(parser)
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON (atomically)")


def add_arguments(parser) -> None:
    add_common_arguments(parser, DEFAULT_SAMPLES)
    parser.add_argument("--acc", metavar="SPEC", default="fp16", help="accumulation, e.g. fp16, bf16:pairwise (default fp16)")
    parser.add_argument("--bound", metavar="KIND", default="deterministic",
                        help="deterministic (default) or probabilistic:LAMBDA")
    add_site_arguments(parser)
    add_threshold_arguments(parser, "; when given, exit 1 if the result exceeds it")


def add_site_arguments(parser) -> None:
    """--site-acc KEY=SPEC (graphs: per operator type or site-name pattern)."""
    parser.add_argument("--site-acc", action="append", metavar="KEY=SPEC",
                        help="graphs: accumulation for the sites of an operator type (MatMul=fp32) or whose name "
                             "matches a pattern ('*attention*=fp32'); repeatable; --acc covers the rest")


def load_inputs(args) -> tuple:
    """(network, dataset subset, accumulation, storage) from the common arguments."""
    net = load_model(args.model)
    data = load_model_data(net, args.data)
    if args.samples is not None and args.samples < 1:
        raise DataError(f"--samples == {args.samples}, must be >= 1.")
    if args.samples is not None and args.samples < len(data):
        if args.seed is None:
            data = data.head(args.samples)
        else:
            idx = np.sort(np.random.default_rng(args.seed).choice(len(data), args.samples, replace=False))
            data = data.subset(idx)
    acc = parse_accumulation(getattr(args, "acc", None) or "fp16")
    if acc.seed is None and args.seed is not None:
        acc = dataclasses.replace(acc, seed=args.seed)
    return net, data, acc, parse_storage(storage_of_args(args))


def _fmt(v, spec: str = ".2e") -> str:
    return "-" if v is None else format(v, spec)


def site_plan(args, acc):
    """The accumulation plan: ``--acc`` for every site, overridden by each
    ``--site-acc KEY=SPEC`` (an operator type such as MatMul, or a site-name pattern)."""
    overrides = getattr(args, "site_acc", None) or []
    if not overrides:
        return acc
    plan = {}
    for item in overrides:
        key, sep, spec = item.partition("=")
        if not sep or not key.strip() or not spec.strip():
            raise DataError(f"--site-acc {item!r}: takes the form KEY=SPEC (an operator type or a site pattern).")
        plan[key.strip()] = spec.strip()
    return {**plan, "*": acc}


def _plan_note(args) -> str:
    overrides = getattr(args, "site_acc", None) or []
    return f" (sites: {', '.join(overrides)})" if overrides else ""


def _print_sites(result) -> None:
    """One row per accumulation site of a graph: its local errors and the global errors of
    the tensor it computes."""
    head = ("site", "op", "n", "kind", "components", "violations", "max abs err", "max rel err", "median rel",
            "median bound/err", "spearman", "vacuous")
    rows = [head]
    for s in result.sites:
        for kind, summary in (("local", s.local), ("global", s.global_)):
            rows.append((s.name, s.op, str(s.n), kind, str(summary.components), str(summary.violations),
                         _fmt(summary.max_abs_error), _fmt(summary.max_rel_error), _fmt(summary.median_rel_error),
                         _fmt(summary.median_tightness, ".3g"), _fmt(summary.spearman_predicted_vs_measured, ".3f"),
                         "yes" if summary.vacuous else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _print_table(result) -> None:
    head = ("layer", "shape", "activation", "kind", "components", "violations", "max abs err", "max rel err",
            "median rel", "median bound/err", "spearman", "uncovered")
    rows = [head]
    for layer in result.layers:
        for kind, s in (("local", layer.local), ("global", layer.global_)):
            rows.append((str(layer.index), f"{layer.inputs}->{layer.outputs}", layer.activation, kind, str(s.components),
                         str(s.violations), _fmt(s.max_abs_error), _fmt(s.max_rel_error), _fmt(s.median_rel_error),
                         _fmt(s.median_tightness, ".3g"), _fmt(s.spearman_predicted_vs_measured, ".3f"), str(s.uncovered)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _network_line(result) -> str:
    """The network-level metrics: flips (and accuracy) of a classifier, cosine and
    neighbour flips of an embedding model."""
    if result.flip_rate is not None:
        accuracy = "" if result.accuracy is None else f"; accuracy {result.accuracy:.4f} (exact {result.exact_accuracy:.4f})"
        return f"flip rate {result.flip_rate:.4g} ({result.flips} of {result.samples}){accuracy}"
    m = getattr(result, "metrics", {})
    if "cosine_min" in m:
        return (f"cosine to the exact embedding min {m['cosine_min']:.6f}, median {m['cosine_median']:.6f}; nearest "
                f"neighbour changes {m['neighbour_flips']} of {result.samples}")
    return "no task metrics"


def bound_notes(result) -> list[str]:
    """What the bounds are worth: the failure probability and assumption of a
    probabilistic bound, and the layers whose bound is vacuous or capped."""
    notes = []
    if result.bound_assumption:
        p = result.failure_probability
        notes.append(f"probabilistic bound {result.bound}: each component's bound fails with probability <= {p:.3g}; "
                     f"it assumes {result.bound_assumption}")
        if p >= 1:
            notes.append("warning: the failure probability is >= 1, so the probabilistic bound guarantees nothing "
                         "here; raise lambda (e.g. probabilistic:6) or use the deterministic bound")
    for layer in result.layers:
        if layer.local.vacuous:
            notes.append(f"layer {layer.index}: the bound is vacuous (c = {layer.constant.constant:.3g} >= 1: it cannot "
                         f"tell the result from 0); capped at max + a_i for {layer.local.capped} components; the "
                         "first-order prediction is outside its range")
        if layer.global_.capped:
            notes.append(f"layer {layer.index}: the global bound of {layer.global_.capped} outputs is the "
                         f"{layer.activation} range cap")
    return notes


def threshold_failures(result, max_rel_error: "float | None", max_flip_rate: "float | None") -> list[str]:
    """One message per threshold the result breaks."""
    out = []
    s = result.output
    if max_rel_error is not None and s.max_rel_error > max_rel_error:
        w = s.worst_relative or {}
        out.append(f"max relative error {s.max_rel_error:.3g} of the output (layer {len(result.layers) - 1}, sample "
                   f"{w.get('sample')}, component {w.get('component')}: computed {w.get('computed')!r}, exact "
                   f"{w.get('exact')!r}) exceeds --max-rel-error {max_rel_error:g}")
    if max_flip_rate is not None and result.flip_rate is not None and result.flip_rate > max_flip_rate:
        out.append(f"flip rate {result.flip_rate:.4g} ({result.flips} of {result.samples} samples change class) "
                   f"exceeds --max-flip-rate {max_flip_rate:g}")
    return out


def run(args) -> int:
    net, data, acc, storage = load_inputs(args)
    bound = parse_bound(args.bound)
    for name in ("max_rel_error", "max_flip_rate"):
        value = getattr(args, name)
        if value is not None and not value >= 0:
            raise DataError(f"--{name.replace('_', '-')} == {value}, must be >= 0.")
    result = validate(net, data, site_plan(args, acc), bound, storage, labels=data.y, data_name=data.name)
    architecture = getattr(net, "architecture", None) or net.meta.get("architecture", "graph")
    print(f"{net.name} ({architecture}) on {data.name} ({data.split}), {result.samples} samples; accumulation "
          f"{acc.spec}{_plan_note(args)}; storage {storage.spec if storage else 'none'}; bound {bound.spec}")
    (_print_sites if hasattr(result, "sites") else _print_table)(result)
    print(f"violations: {result.violations} (local {result.violations_local}, global {result.violations_global}); "
          f"{_network_line(result)}")
    for line in bound_notes(result):
        print(line)
    failures = threshold_failures(result, args.max_rel_error, args.max_flip_rate)
    if result.violations and bound.kind == "deterministic":
        failures.insert(0, f"{result.violations} certain violations of the deterministic bound: the bound or the "
                           "emulator is wrong (please report)")
    record = result.to_dict()
    print("\n".join(verdict_lines(verdict([record], None, thresholds_of_args(args)))))
    if args.json:
        record.update({"split": data.split, "thresholds": {"max_rel_error": args.max_rel_error,
                                                            "max_flip_rate": args.max_flip_rate},
                       "failures": failures})
        record["provenance"] = provenance({k: v for k, v in vars(args).items() if not k.startswith("_")}, seed=args.seed)
        write_json(args.json, record)
    for message in failures:
        print(f"mixacc validate: {message}", file=sys.stderr)
    return 1 if failures else 0
