"""``mixacc size``: the smallest safe accumulators of an MLP — per layer (and per output
channel) the floating-point format eXmY with the fewest bits whose rigorous local bound
meets the target error and whose partial sums cannot overflow for any input in the
range, and the width of an int8 x int8 integer accumulator; checked by emulation on the
data."""

from __future__ import annotations

import sys

import numpy as np

from emulator.accumulation import ORDERS
from emulator.data import load_model_data
from emulator.errors import DataError
from emulator.graph import Graph
from emulator.modelio import load_model

from ..atomic import write_json
from ..provenance import provenance
from ..sizing import SizingError, size_layers
from ..sizing_checks import check_sizing

HELP = "the smallest floating-point and integer accumulators per layer that meet a target error without overflow"


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model file or bundled model name (an MLP)")
    parser.add_argument("--target-error", type=float, required=True, metavar="E",
                        help="largest local error of each pre-activation component (absolute; see --relative)")
    parser.add_argument("--relative", action="store_true",
                        help="E relative to a_i = sum |w_ij x_j| + |b_i| at its largest over the input range")
    parser.add_argument("--input-range", metavar="LO,HI",
                        help="the range of every input feature (default: each feature's range over the data)")
    parser.add_argument("--data", metavar="D", help="data spec (default: the model's own test data)")
    parser.add_argument("--samples", type=int, metavar="N", help="use the first N samples (default: all)")
    parser.add_argument("--order", default="recursive", metavar="ORDER",
                        help=f"summation order of the formats (default recursive; {', '.join(ORDERS)} with their "
                             "parameters, e.g. blocked:32)")
    parser.add_argument("--per-channel", action="store_true", help="also print the formats of every output channel")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON (atomically)")


def _range(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise DataError(f"--input-range {text!r}: takes the form LO,HI (two numbers).") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise DataError(f"--input-range {text!r}: needs finite LO <= HI.")
    return lo, hi


def _one_bit_less(layer) -> str:
    """Which check each format with one bit less fails."""
    parts = []
    for c in layer.smaller:
        failed = [name for name, ok in (("bound", c.bound_ok.all()), ("range", c.range_ok.all())) if not ok]
        parts.append(f"{c.name}: {'+'.join(failed) or 'NONE'}")
    return ", ".join(parts) or "-"


def _record(layer, check: dict, network) -> dict:
    l = network.layers[layer.index]
    chosen = layer.chosen
    return {
        "index": layer.index, "inputs": l.n_inputs, "outputs": l.n_outputs, "activation": l.activation.name,
        "input_range": {"min": float(np.min(layer.box.lo)), "max": float(np.max(layer.box.hi))},
        "allowed_error": float(np.min(layer.allowed)), "float_format": chosen.name, "spec": chosen.spec,
        "float_bits": 1 + sum(int(v) for v in chosen.name[1:].split("m")), "max_bound": float(np.max(chosen.bound)),
        "one_bit_less": [c.describe() for c in layer.smaller],
        "integer_bits": int(np.max(layer.integer.bits)),
        "integer": {"weight_scale": layer.integer.weight_scale, "input_scale": layer.integer.input_scale,
                    "largest_sum": int(np.max(layer.integer.reach)),
                    "bits_per_channel": layer.integer.bits.tolist()},
        "channels": layer.channels.describe(), "emulated": check,
    }


def _failures(records: list) -> list[str]:
    """What the emulation found that the sizing promised would not happen."""
    out = []
    for r in records:
        e = r["emulated"]
        for what, found in (("computed inputs outside the range", e["outside_box"]),
                            ("overflows", e["chosen"]["overflows"] + e["channels"]["overflows"]),
                            ("bound violations", e["chosen"]["violations"] + e["channels"]["violations"]),
                            ("errors above the target", e["chosen"]["above_target"] + e["channels"]["above_target"]),
                            ("integer overflows or mismatches", sum(e["integer"][m]["overflows"] + e["integer"][m]["mismatches"]
                                                                   for m in ("wrap", "saturate"))),
                            ("integer channels that fit one bit less", sum(e["integer"][m]["fits_with_one_bit_less"]
                                                                          for m in ("wrap", "saturate"))),
                            ("formats with one bit less that pass both checks",
                             sum(c["bound_ok"] and c["range_ok"] for c in r["one_bit_less"]))):
            if found:
                out.append(f"layer {r['index']}: {found} {what}")
    return out


def run(args) -> int:
    network = load_model(args.model)
    if isinstance(network, Graph):
        raise SizingError(f"mixacc size sizes the layers of an MLP; {network.name!r} is a graph.")
    data = load_model_data(network, args.data).head(args.samples)
    if args.input_range:
        lo, hi = _range(args.input_range)
        lo, hi = np.full(network.n_inputs, lo), np.full(network.n_inputs, hi)
        outside = int(np.count_nonzero((data.x < lo) | (data.x > hi)))
        if outside:
            raise DataError(f"--input-range {args.input_range}: {outside} input values of {data.name} lie outside it.")
        source = f"--input-range {args.input_range}"
    else:
        lo, hi = data.x.min(axis=0), data.x.max(axis=0)
        source = f"each feature's range over {data.name} ({data.split}, {len(data)} samples)"
    layers = size_layers(network, lo, hi, args.target_error, relative=args.relative, order=args.order)
    records = [_record(layer, check, network) for layer, check in zip(layers, check_sizing(network, data.x, layers))]
    kind = "relative to the largest a_i" if args.relative else "absolute"
    print(f"{network.name} ({network.architecture}); target error {args.target_error:g} ({kind}) on every "
          f"pre-activation; input range: {source}; checked on {len(data)} samples")
    head = ("layer", "n", "max |x|", "float", "bits", "max bound", "one bit less fails", "overflows", "violations",
            "max error", "int bits", "int check")
    rows = [head]
    for layer, r in zip(layers, records):
        e = r["emulated"]
        integer_ok = all(e["integer"][m]["overflows"] + e["integer"][m]["mismatches"] == 0 for m in ("wrap", "saturate"))
        rows.append((str(r["index"]), str(r["inputs"]), f"{float(np.max(layer.box.magnitude)):.3g}", r["float_format"],
                     str(r["float_bits"]), f"{r['max_bound']:.2e}", _one_bit_less(layer),
                     str(e["chosen"]["overflows"]), str(e["chosen"]["violations"] + e["chosen"]["above_target"]),
                     f"{e['chosen']['max_error']:.2e}", str(r["integer_bits"]),
                     "exact (wrap, saturate)" if integer_ok else "FAILED"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if args.per_channel:
        for layer in layers:
            counts: dict = {}
            for name in layer.channels.formats:
                counts[name] = counts.get(name, 0) + 1
            bits = layer.integer.bits
            print(f"layer {layer.index} per channel: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) +
                  f"; integer bits {int(bits.min())}..{int(bits.max())}")
    failures = _failures(records)
    if args.json:
        write_json(args.json, {
            "model": network.name, "target_error": args.target_error, "relative": args.relative,
            "input_range": source, "order": args.order, "data": data.name, "split": data.split, "samples": len(data),
            "layers": records, "failures": failures,
            "provenance": provenance({k: v for k, v in vars(args).items() if not k.startswith("_")}),
        })
    for message in failures:
        print(f"mixacc size: {message} (please report)", file=sys.stderr)
    return 1 if failures else 0
