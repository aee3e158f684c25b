"""The storage options on the command line (``--storage FMT``, ``--store-sums``), shared
by the commands that run a model: validate, emulate, certify, recompute, report, models."""

from __future__ import annotations

from emulator.errors import MixaccError
from emulator.storage import parse_storage

__all__ = ["add_storage_arguments", "storage_of_args", "STORE_SUMS_HELP"]

STORE_SUMS_HELP = ("graphs: round the outputs of sum operators (Gemm, MatMul, Conv, reductions) to the storage format "
                   "too, as a GPU kernel writes its accumulator to memory (the storage spec FMT:sums)")


def add_storage_arguments(parser, help: str = "storage format for weights, biases, input and outputs") -> None:
    """``--storage FMT`` and ``--store-sums``."""
    parser.add_argument("--storage", metavar="FMT", help=help)
    parser.add_argument("--store-sums", action="store_true", help=STORE_SUMS_HELP)


def storage_of_args(args, preset=None, graph: bool = False) -> "str | None":
    """The storage spec: ``--storage``, else the ``preset``'s on a graph (``graph``) or an
    MLP (``Preset.storage_for``); with ``:sums`` for ``--store-sums``."""
    spec = args.storage or (preset.storage_for(graph) if preset is not None else None)
    if not args.store_sums:
        return spec
    if spec is None:
        raise MixaccError("--store-sums needs a storage format (--storage FMT).")
    return parse_storage(spec).storing_sums().spec
