"""``mixacc bench``: the performance targets, measured side by side."""

from __future__ import annotations

from emulator.errors import UnknownNameError

from ..atomic import write_json
from ..benchmarks import SECTIONS, run_sections
from ..provenance import provenance

HELP = "measure rounding, accumulation and reference speed against baselines in one run"


def add_arguments(parser) -> None:
    parser.add_argument("--section", action="append", metavar="NAME", help=f"run only these ({', '.join(SECTIONS)})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the targets)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def run(args) -> int:
    for name in args.section or ():
        if name not in SECTIONS:
            raise UnknownNameError("bench section", name, list(SECTIONS))
    results = run_sections(args.section, quick=args.quick)
    section = None
    for m in results:
        if m.section != section:
            section = m.section
            print(f"\n== {section} ==")
        ratios = "  ".join(f"{k}: {_fmt(v)} ({_fmt(m.value / v)}x)" for k, v in m.baselines.items() if v)
        verdict = "" if m.meets is None else ("  [meets target]" if m.meets else "  [MISSES target]")
        print(f"{m.case:<48} {_fmt(m.value):>8} {m.unit:<10} {ratios}{verdict}")
        if m.target:
            print(f"{'':<48} target: {m.target}")
    if args.json:
        write_json(args.json, {"measurements": [m.as_dict() for m in results], "quick": args.quick,
                               "provenance": provenance({"sections": args.section or list(SECTIONS), "quick": args.quick})})
    return 0
