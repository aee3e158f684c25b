"""The ``mixacc`` command: parse arguments, call the library, print. Each subcommand is
a module of this package with ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

Bad input (any :class:`emulator.errors.MixaccError`, a missing or unreadable file) exits
with status 2 and one line on stderr; threshold failures exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from emulator.errors import MixaccError

from ..distributed import executor_for
from ..progress import set_quiet

__all__ = ["main", "COMMANDS"]

COMMANDS = ("formats", "models", "emulate", "validate", "grid", "certify", "size", "recompute", "report", "sweep", "demo",
            "bench")

# the long commands, which take --workers N / --scheduler ADDRESS (analysis.distributed)
SCALE_OUT = ("emulate", "validate", "recompute", "report", "sweep", "certify")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other bad input
        self.exit(2, f"mixacc: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mixacc", description="Componentwise error analysis of low-precision accumulation.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
        module.add_arguments(p)
        if name in SCALE_OUT:
            add_cluster_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def add_cluster_arguments(parser) -> None:
    """--workers N / --scheduler ADDRESS: run the command's tasks on a Dask cluster."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, metavar="N",
                       help="run the tasks on a local Dask cluster of N processes (needs mixacc[dask])")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the tasks on the Dask cluster at ADDRESS, e.g. tcp://host:8786 (needs mixacc[dask])")


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    try:
        with executor_for(getattr(args, "workers", None), getattr(args, "scheduler", None)):
            return int(args._run(args) or 0)
    except (MixaccError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename:
            message = f"{exc.strerror}: {exc.filename}"
        print(f"mixacc: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mixacc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
