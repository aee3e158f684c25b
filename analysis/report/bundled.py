"""Regenerate the committed reports: ``python -m analysis.report.bundled`` writes
``reports/<name>/`` for every bundled model and ``reports/demo/`` (what ``mixacc demo``
writes), each with the configuration of :mod:`analysis.report.presets`.

Options: ``--out DIR`` (default ``reports``), ``--only NAME [NAME ...]``, ``--quiet``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from emulator.errors import UnknownNameError

from ..progress import set_quiet
from ..verdict import verdict_lines
from .build import build_report
from .presets import BUNDLED, DEMO
from .summary import summary_lines
from .write import write_report

__all__ = ["REPORTS", "main"]

REPORTS = {"demo": DEMO, **BUNDLED}


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report.bundled", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports", help="parent directory (default reports)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"only these ({', '.join(REPORTS)})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    names = args.only or list(REPORTS)
    for name in names:
        if name not in REPORTS:
            raise UnknownNameError("report", name, list(REPORTS))
    for name in names:
        start = time.perf_counter()
        report = build_report(REPORTS[name])
        out = write_report(report, Path(args.out) / name)
        print("\n".join(summary_lines(report, out) + verdict_lines(report["verdict"])))
        print(f"({name}: {time.perf_counter() - start:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
