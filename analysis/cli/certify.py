"""``mixacc certify``: which predictions provably do not change under this arithmetic — per
sample, the margin between the top logit and every other against the sum of their
rigorous global bounds; the certified fraction next to accuracy and the measured flip
rate; optionally the recompute policy that certifies everything (``--until-certified``)
and its cost against uniform high."""

from __future__ import annotations

import sys

from ..atomic import write_json
from ..certification import DEFAULT_HIGH, certify
from ..cost import cost_model_names
from ..provenance import provenance
from .validate import add_common_arguments, add_site_arguments, load_inputs, site_plan

HELP = "certify per sample that the predicted class cannot change; certified fraction, accuracy, flip rate"


def add_arguments(parser) -> None:
    add_common_arguments(parser, None)
    parser.add_argument("--acc", metavar="SPEC", required=True, help="accumulation, e.g. fp16, bf16:pairwise")
    add_site_arguments(parser)
    parser.add_argument("--until-certified", action="store_true",
                        help="recompute uncertified samples in --high (MLPs: last layers first, until certified or "
                             "everything is high; graphs: whole samples); report the cost against uniform high")
    parser.add_argument("--high", metavar="SPEC", default=DEFAULT_HIGH,
                        help=f"accumulation of the recomputed layers (default {DEFAULT_HIGH})")
    parser.add_argument("--cost", default="bits", metavar="bits|quadratic|PATH",
                        help=f"cost model: {', '.join(cost_model_names())} or a JSON table (default bits)")


def _accuracy(value, exact) -> str:
    return "" if value is None else f"accuracy {value:.4f} (exact {exact:.4f}); "


def _policy_lines(result) -> list[str]:
    p = result.policy
    lines = [f"until certified (high {p.high}): " + ("nothing to recompute" if not p.stages else "; ".join(
        f"layers {s.start}.. in high for {s.samples} samples, {s.certified} certified" for s in p.stages))]
    left = result.samples - int(p.final.certified.sum())
    lines.append(f"certified {p.certified_fraction:.4f} ({int(p.final.certified.sum())} of {result.samples}"
                 f"{f'; {left} not even in {p.high}' if left else ''}); {_accuracy(p.accuracy, result.exact_accuracy)}"
                 f"flip rate {p.flip_rate:.4g}; cost {p.cost.relative:.3f} of uniform {p.high} ({p.cost.model} model)")
    return lines


def run(args) -> int:
    model, data, acc, storage = load_inputs(args)
    result = certify(model, data, site_plan(args, acc), storage, labels=data.y, until_certified=args.until_certified,
                     high=args.high, cost=args.cost, data_name=data.name)
    architecture = getattr(model, "architecture", None) or model.meta.get("architecture", "graph")
    print(f"{model.name} ({architecture}) on {data.name} ({data.split}), {result.samples} samples; accumulation "
          f"{acc.spec}; storage {result.storage or 'none'}")
    print(f"certified {result.certified_fraction:.4f} ({int(result.certified.sum())} of {result.samples}); "
          f"{_accuracy(result.accuracy, result.exact_accuracy)}flip rate {result.flip_rate:.4g} "
          f"({int(result.flipped.sum())} of {result.samples})")
    if result.policy is not None:
        for line in _policy_lines(result):
            print(line)
    failures = [f"{n} certified samples flipped: the bound or the emulator is wrong (please report)"
                for n in (result.certified_flips, result.policy.certified_flips if result.policy else 0) if n]
    if args.json:
        record = {**result.to_dict(), "split": data.split, "failures": failures}
        record["provenance"] = provenance({k: v for k, v in vars(args).items() if not k.startswith("_")}, seed=args.seed)
        write_json(args.json, record)
    for message in failures:
        print(f"mixacc certify: {message}", file=sys.stderr)
    return 1 if failures else 0
