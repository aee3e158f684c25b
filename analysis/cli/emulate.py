"""``mixacc emulate``: run the forward pass under an accumulation model; accuracy against
the labels, flip rate and output error against the exact pass; optionally every layer's
pre-activation and output."""

from __future__ import annotations

from ..atomic import write_json, write_npz
from ..emulation import emulate
from ..provenance import provenance
from .validate import add_common_arguments, load_inputs

HELP = "run the forward pass with emulated accumulation; accuracy, flip rate and error against the exact pass"


def add_arguments(parser) -> None:
    add_common_arguments(parser, None)
    parser.add_argument("--acc", metavar="SPEC", required=True, help="accumulation, e.g. fp16, e4m3:promote:32:fp32")
    parser.add_argument("--save-outputs", metavar="PATH.npz",
                        help="write layer{k}.preactivation and layer{k}.output (float64, N x m) of every layer")


def run(args) -> int:
    net, data, acc, storage = load_inputs(args)
    result = emulate(net, data.x, acc, storage, labels=data.y, keep_layers=bool(args.save_outputs))
    record = {**result.to_dict(), "data": data.name, "split": data.split}
    accuracy = ("" if result.accuracy is None
                else f"accuracy {result.accuracy:.4f} (exact {result.exact_accuracy:.4f}); ")
    print(f"{net.name} ({net.architecture}) on {data.name} ({data.split}), {result.samples} samples; accumulation "
          f"{acc.spec}; storage {result.storage or 'none'}")
    print(f"{accuracy}flip rate {result.flip_rate:.4g} ({result.flips} of {result.samples}); output error vs exact: "
          f"max abs {result.max_abs_error:.3e}, max rel {result.max_rel_error:.3e}, median rel "
          f"{result.median_rel_error:.3e}; overflowed components {result.overflow_components}")
    if args.save_outputs:
        write_npz(args.save_outputs, result.layers)
        record["saved_outputs"] = str(args.save_outputs)
    if args.json:
        record["provenance"] = provenance({k: v for k, v in vars(args).items() if not k.startswith("_")}, seed=args.seed)
        write_json(args.json, record)
    return 0
