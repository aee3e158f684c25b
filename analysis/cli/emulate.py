"""``mixacc emulate``: run the forward pass under an accumulation model; accuracy against
the labels, flip rate and output error against the exact pass; optionally every layer's
pre-activation and output."""

from __future__ import annotations

import numpy as np

from ..atomic import write_json, write_npz
from ..conditioning import ratio
from ..progress import progress
from ..provenance import provenance
from ..validation import DEFAULT_BATCH, class_labels
from .validate import add_common_arguments, load_inputs

HELP = "run the forward pass with emulated accumulation; accuracy, flip rate and error against the exact pass"


def add_arguments(parser) -> None:
    add_common_arguments(parser, None)
    parser.add_argument("--acc", metavar="SPEC", required=True, help="accumulation, e.g. fp16, e4m3:promote:32:fp32")
    parser.add_argument("--save-outputs", metavar="PATH.npz",
                        help="write layer{k}.preactivation and layer{k}.output (float64, N x m) of every layer")


def run(args) -> int:
    from emulator.reference import exact_forward

    net, data, acc, storage = load_inputs(args)
    rounded = net.with_storage(storage)
    n = len(data)
    pre = [[] for _ in net.layers]
    out = [[] for _ in net.layers]
    abs_err, rel_err, got, want, overflow = [], [], [], [], 0
    starts = range(0, n, DEFAULT_BATCH)
    for start in progress(starts, desc=f"emulate {acc.spec}", total=len(starts)):
        run_ = net.forward(data.x[start:start + DEFAULT_BATCH], acc=acc, storage=storage, return_all=True)
        ref = exact_forward(rounded, run_.input)
        for k in range(len(net.layers)):
            if args.save_outputs:
                pre[k].append(np.asarray(run_.preactivations[k], dtype=np.float64))
                out[k].append(np.asarray(run_.outputs[k], dtype=np.float64))
            overflow += int(np.asarray(run_.overflow[k]).sum())
        z, z_ref = np.asarray(run_.outputs[-1]), np.asarray(ref.outputs[-1])
        abs_err.append(np.abs(z - z_ref))
        rel_err.append(ratio(z - z_ref, z_ref))
        got.append(class_labels(z))
        want.append(class_labels(z_ref))
    abs_err, rel_err = np.concatenate(abs_err), np.concatenate(rel_err)
    got, want = np.concatenate(got), np.concatenate(want)
    classes = net.meta.get("classes")
    as_label = (lambda idx: np.asarray(classes)[idx]) if classes is not None else (lambda idx: idx)
    record = {
        "model": net.name, "architecture": net.architecture, "data": data.name, "split": data.split, "samples": n,
        "accumulation": acc.describe(), "storage": storage.spec if storage else None,
        "accuracy": float(np.mean(as_label(got) == data.y)) if data.y is not None else None,
        "exact_accuracy": float(np.mean(as_label(want) == data.y)) if data.y is not None else None,
        "flips": int((got != want).sum()), "flip_rate": float(np.mean(got != want)),
        "overflow_components": overflow,
        "output_error": {"max_abs": float(np.max(abs_err)), "max_rel": float(np.max(rel_err)),
                         "median_rel": float(np.median(rel_err)), "median_abs": float(np.median(abs_err))},
    }
    accuracy = ("" if record["accuracy"] is None
                else f"accuracy {record['accuracy']:.4f} (exact {record['exact_accuracy']:.4f}); ")
    e = record["output_error"]
    print(f"{net.name} ({net.architecture}) on {data.name} ({data.split}), {n} samples; accumulation {acc.spec}; "
          f"storage {record['storage'] or 'none'}")
    print(f"{accuracy}flip rate {record['flip_rate']:.4g} ({record['flips']} of {n}); output error vs exact: max abs "
          f"{e['max_abs']:.3e}, max rel {e['max_rel']:.3e}, median rel {e['median_rel']:.3e}; overflowed components "
          f"{overflow}")
    if args.save_outputs:
        arrays = {}
        for k in range(len(net.layers)):
            arrays[f"layer{k}.preactivation"] = np.concatenate(pre[k])
            arrays[f"layer{k}.output"] = np.concatenate(out[k])
        write_npz(args.save_outputs, arrays)
        record["saved_outputs"] = str(args.save_outputs)
    if args.json:
        record["provenance"] = provenance({k: v for k, v in vars(args).items() if not k.startswith("_")}, seed=args.seed)
        write_json(args.json, record)
    return 0
