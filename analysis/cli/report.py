"""``mixacc report``: not built yet."""

from __future__ import annotations

import sys

HELP = "(not built yet) report"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    print("mixacc report is not built yet; see the open issues.", file=sys.stderr)
    return 0
