"""``mixacc demo``: the whole method on the bundled ``mnist1d-tanh`` in about a minute —
validate fp16, bf16 and fp8-e4m3fn accumulation against the exact reference, run the tau
sweep of the recompute policy, write the report and print a short summary."""

from __future__ import annotations

import dataclasses
import time

from .thresholds import add_threshold_arguments, thresholds_settings

HELP = "validate mnist1d-tanh in fp16/bf16/fp8, sweep the recompute tolerance, and write a report (~1 min)"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="reports/demo", metavar="DIR", help="report directory (default reports/demo)")
    parser.add_argument("--samples", type=int, metavar="N", help="test samples (default: the whole mnist1d test split)")
    add_threshold_arguments(parser)


def run(args) -> int:
    from ..report import build_report, summary_lines, write_report
    from ..report.presets import DEMO
    from ..verdict import verdict_lines

    start = time.perf_counter()
    config = dataclasses.replace(DEMO, **thresholds_settings(args))
    if args.samples is not None:
        config = dataclasses.replace(config, samples=args.samples)
    report = build_report(config)
    out = write_report(report, args.out)
    print("\n".join(summary_lines(report, out)))
    print(f"done in {time.perf_counter() - start:.1f} s; open {out / 'report.html'} in a browser")
    print("\n".join(verdict_lines(report["verdict"])))
    return 0
