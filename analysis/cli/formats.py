"""``mixacc formats``: the table of formats."""

from __future__ import annotations

import json

from emulator.formats import FORMATS, get_format

from ..atomic import to_jsonable

HELP = "list the number formats (p, emin, emax, u, max, min normal, min subnormal, bits)"


def add_arguments(parser) -> None:
    parser.add_argument("extra", nargs="*", metavar="eXmY", help="custom formats to list as well, e.g. e4m3 e5m10")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    rows = [f.describe() for f in FORMATS.rows()] + [get_format(n).describe() for n in args.extra]
    if args.json:
        print(json.dumps(to_jsonable(rows), indent=2))
        return 0
    head = ("name", "p", "emin", "emax", "u", "max", "min normal", "min subnormal", "bits", "inf", "nan")
    table = [head] + [
        (r["name"], r["p"], r["emin"], r["emax"], f"{r['u']:.3g}", f"{r['max']:.6g}", f"{r['min_normal']:.4g}",
         f"{r['min_subnormal']:.4g}", r["bits"], "yes" if r["inf"] else "no", "yes" if r["nan"] else "no")
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return 0
