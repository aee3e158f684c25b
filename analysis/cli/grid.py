"""``mixacc grid``: validate graph models over a grid of accumulation specs (formats x
orders x product modes) and print one row per model and spec; exit 1 on any certain
violation of the deterministic bounds."""

from __future__ import annotations

import argparse

from ..atomic import write_json
from ..provenance import provenance
from ..validation_grid import GRID_FORMATS, GRID_ORDERS, PRODUCT_MODES, grid_specs, run_grid

HELP = "validate graph models under every format x order x product mode of a grid, one row each"

DEFAULT_MODELS = ("digits-cnn", "digits-transformer")
DEFAULT_SAMPLES = 200


def _names(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated names.")
    return items


def _products(text: str) -> list[str]:
    items = _names(text)
    for item in items:
        if item not in PRODUCT_MODES:
            raise argparse.ArgumentTypeError(f"product mode {item!r}: must be one of {', '.join(PRODUCT_MODES)}.")
    return items


def add_arguments(parser) -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"graph models, bundled names or files (default {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--formats", type=_names, default=list(GRID_FORMATS), metavar="F1,F2",
                        help=f"accumulator formats (default {','.join(GRID_FORMATS)})")
    parser.add_argument("--orders", type=_names, default=list(GRID_ORDERS), metavar="O1,O2",
                        help=f"summation orders (default {','.join(GRID_ORDERS)})")
    parser.add_argument("--products", type=_products, default=list(PRODUCT_MODES), metavar="M1,M2",
                        help="product modes: exact (products enter the sum exactly), rounded (each product rounded "
                             "to the accumulator format first); default both")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                        help=f"first N samples of the data (default {DEFAULT_SAMPLES})")
    parser.add_argument("--data", metavar="D", help="data spec (default: each model's own test data)")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}"


HEAD = ("model", "accumulation", "samples", "local comps", "local viol", "global comps", "global viol",
        "median tight local", "median tight global", "vacuous sites", "vacuous tensors")


def _cells(row) -> tuple:
    return (row.model, row.spec, str(row.samples), str(row.local_components), str(row.local_violations),
            str(row.global_components), str(row.global_violations), _fmt(row.local_tightness),
            _fmt(row.global_tightness), f"{row.vacuous_sites}/{row.sites}", f"{row.vacuous_tensors}/{row.tensors}")


def run(args) -> int:
    specs = grid_specs(args.formats, args.orders, args.products)
    widths = [max(len(h), 12) for h in HEAD]
    widths[0], widths[1] = max(widths[0], 18), max(widths[1], 34)
    line = (lambda cells: print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip(), flush=True))
    line(HEAD)
    rows = run_grid(args.models or DEFAULT_MODELS, specs, args.samples, args.data, on_row=lambda r: line(_cells(r)))
    violations = sum(r.violations for r in rows)
    print(f"{len(rows)} validations, {violations} certain violations")
    if args.json:
        write_json(args.json, {"rows": [r.to_dict() for r in rows], "violations": violations,
                               "provenance": provenance({k: v for k, v in vars(args).items() if not k.startswith("_")})})
    return 1 if violations else 0
