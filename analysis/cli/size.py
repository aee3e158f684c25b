"""``mixacc size``: the smallest safe accumulators of an MLP or a graph — per layer or
accumulation site (and per output channel) the floating-point format eXmY with the fewest
bits whose rigorous local bound meets the target error and whose partial sums cannot
overflow for any input in the range, and the width of an int8 x int8 integer
accumulator; checked by emulation on the data."""

from __future__ import annotations

import sys

import numpy as np

from emulator.accumulation import ORDERS
from emulator.data import load_model_data
from emulator.errors import DataError
from emulator.graph import Graph
from emulator.modelio import load_model

from ..atomic import write_json
from ..emulation import model_feeds
from ..graph_sizing import size_graph
from ..provenance import provenance
from ..sizing import size_layers
from ..sizing_checks import check_graph_sizing, check_sizing

HELP = ("the smallest floating-point and integer accumulators per layer or accumulation site that meet a target error "
        "without overflow")


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model file or bundled model name (an MLP or a graph)")
    parser.add_argument("--target-error", type=float, required=True, metavar="E",
                        help="largest local error of each pre-activation component, or of each sum of a graph's "
                             "sites (absolute; see --relative)")
    parser.add_argument("--relative", action="store_true",
                        help="E relative to a_i = sum |w_ij x_j| + |b_i| at its largest over the input range")
    parser.add_argument("--input-range", metavar="LO,HI",
                        help="the range of every input feature (every element of a graph's float inputs; default: "
                             "each feature's range over the data)")
    parser.add_argument("--data", metavar="D", help="data spec (default: the model's own test data)")
    parser.add_argument("--samples", type=int, metavar="N", help="use the first N samples (default: all)")
    parser.add_argument("--order", default="recursive", metavar="ORDER",
                        help=f"summation order of the formats (default recursive; {', '.join(ORDERS)} with their "
                             "parameters, e.g. blocked:32)")
    parser.add_argument("--per-channel", action="store_true", help="also print the formats of every output channel")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON (atomically)")


def _range_option(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise DataError(f"--input-range {text!r}: takes the form LO,HI (two numbers).") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise DataError(f"--input-range {text!r}: needs finite LO <= HI.")
    return lo, hi


def _one_bit_less(sized) -> str:
    """Which check each format with one bit less fails."""
    parts = []
    for c in sized.smaller:
        failed = [name for name, ok in (("bound", c.bound_ok.all()), ("range", c.range_ok.all())) if not ok]
        parts.append(f"{c.name}: {'+'.join(failed) or 'NONE'}")
    return ", ".join(parts) or "-"


def _range(box) -> dict:
    return {"min": float(np.min(box.lo)), "max": float(np.max(box.hi))}


def _sizing(sized, check: dict) -> dict:
    """The record's fields every sum has, a layer's or a site's."""
    chosen = sized.chosen
    return {
        "allowed_error": float(np.min(sized.allowed)), "float_format": chosen.name, "spec": chosen.spec,
        "float_bits": 1 + sum(int(v) for v in chosen.name[1:].split("m")), "max_bound": float(np.max(chosen.bound)),
        "one_bit_less": [c.describe() for c in sized.smaller],
        "integer_bits": int(np.max(sized.integer.bits)),
        "integer": {"weight_scale": sized.integer.weight_scale, "input_scale": sized.integer.input_scale,
                    "largest_sum": int(np.max(sized.integer.reach)),
                    "bits_per_channel": sized.integer.bits.tolist()},
        "channels": sized.channels.describe(), "emulated": check,
    }


def _layer_record(layer, check: dict, network) -> dict:
    l = network.layers[layer.index]
    return {"index": layer.index, "inputs": l.n_inputs, "outputs": l.n_outputs, "activation": l.activation.name,
            "input_range": _range(layer.box), **_sizing(layer, check)}


def _site_record(site, check: dict) -> dict:
    ranges = {"input_range": _range(site.box)} | ({} if site.weights is None else {"weight_range": _range(site.weights)})
    return {"index": site.index, "site": site.site.name, "op": site.site.op, "inputs": site.n, "outputs": site.m,
            "groups": site.groups, **ranges, **_sizing(site, check)}


def _label(record: dict) -> str:
    return f"site {record['site']!r}" if "site" in record else f"layer {record['index']}"


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
                out.append(f"{_label(r)}: {found} {what}")
    return out


def _boxes(args, data, inputs: dict) -> tuple[dict, str]:
    """Per input, (lo, hi) of one sample's shape: ``--input-range`` everywhere (refused if the
    data leave it), or each element's range over the data; and where the range came from."""
    if args.input_range:
        lo, hi = _range_option(args.input_range)
        outside = sum(int(np.count_nonzero((v < lo) | (v > hi))) for v in inputs.values())
        if outside:
            raise DataError(f"--input-range {args.input_range}: {outside} input values of {data.name} lie outside it.")
        boxes = {k: (np.full(v.shape[1:], lo), np.full(v.shape[1:], hi)) for k, v in inputs.items()}
        return boxes, f"--input-range {args.input_range}"
    boxes = {k: (v.min(axis=0), v.max(axis=0)) for k, v in inputs.items()}
    return boxes, f"each feature's range over {data.name} ({data.split}, {len(data)} samples)"


def _table(rows: list) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _columns(sized, r: dict) -> tuple:
    """The table's cells of one sum, after its name."""
    e = r["emulated"]
    integer_ok = all(e["integer"][m]["overflows"] + e["integer"][m]["mismatches"] == 0 for m in ("wrap", "saturate"))
    return (str(r["inputs"]), f"{float(np.max(sized.box.magnitude)):.3g}", r["float_format"], str(r["float_bits"]),
            f"{r['max_bound']:.2e}", _one_bit_less(sized), str(e["chosen"]["overflows"]),
            str(e["chosen"]["violations"] + e["chosen"]["above_target"]), f"{e['chosen']['max_error']:.2e}",
            str(r["integer_bits"]), "exact (wrap, saturate)" if integer_ok else "FAILED")


COLUMNS = ("n", "max |x|", "float", "bits", "max bound", "one bit less fails", "overflows", "violations", "max error",
           "int bits", "int check")


def _per_channel(label: str, sized) -> str:
    counts: dict = {}
    for name in sized.channels.formats:
        counts[name] = counts.get(name, 0) + 1
    bits = sized.integer.bits
    return (f"{label} per channel: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) +
            f"; integer bits {int(bits.min())}..{int(bits.max())}")


def _sized(args, model, data):
    """(sizings, their records, table rows, per-channel labels, input range source) of an
    MLP's layers or a graph's sites."""
    if isinstance(model, Graph):
        boxes, source = _boxes(args, data, {k: v for k, v in model_feeds(model, model, data).items()
                                            if np.asarray(v).dtype.kind == "f"})
        sites = size_graph(model, boxes, args.target_error, relative=args.relative, order=args.order)
        checks = check_graph_sizing(model, model_feeds(model, model, data), sites)
        records = [_site_record(s, c) for s, c in zip(sites, checks)]
        rows = [("site", "op", *COLUMNS)] + [(s.site.name, s.site.op, *_columns(s, r)) for s, r in zip(sites, records)]
        return sites, records, rows, [f"site {s.site.name}" for s in sites], source
    boxes, source = _boxes(args, data, {"x": data.x})
    layers = size_layers(model, *boxes["x"], args.target_error, relative=args.relative, order=args.order)
    records = [_layer_record(layer, check, model) for layer, check in zip(layers, check_sizing(model, data.x, layers))]
    rows = [("layer", *COLUMNS)] + [(str(r["index"]), *_columns(layer, r)) for layer, r in zip(layers, records)]
    return layers, records, rows, [f"layer {layer.index}" for layer in layers], source


def run(args) -> int:
    model = load_model(args.model)
    data = load_model_data(model, args.data).head(args.samples)
    sized, records, rows, labels, source = _sized(args, model, data)
    kind = "relative to the largest a_i" if args.relative else "absolute"
    what = "every site's sum" if isinstance(model, Graph) else "every pre-activation"
    architecture = (model.meta.get("architecture") or model.architecture) if isinstance(model, Graph) else \
        model.architecture
    print(f"{model.name} ({architecture}); target error {args.target_error:g} ({kind}) on {what}; "
          f"input range: {source}; checked on {len(data)} samples")
    _table(rows)
    if args.per_channel:
        for label, one in zip(labels, sized):
            print(_per_channel(label, one))
    failures = _failures(records)
    if args.json:
        write_json(args.json, {
            "model": model.name, "target_error": args.target_error, "relative": args.relative,
            "input_range": source, "order": args.order, "data": data.name, "split": data.split, "samples": len(data),
            "layers": records, "failures": failures,
            "provenance": provenance({k: v for k, v in vars(args).items() if not k.startswith("_")}),
        })
    for message in failures:
        print(f"mixacc size: {message} (please report)", file=sys.stderr)
    return 1 if failures else 0
