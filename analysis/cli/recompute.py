"""``mixacc recompute``: not built yet."""

from __future__ import annotations

import sys

HELP = "(not built yet) recompute"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    print("mixacc recompute is not built yet; see the open issues.", file=sys.stderr)
    return 0
