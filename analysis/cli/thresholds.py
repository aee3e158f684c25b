"""The verdict's thresholds on the command line (``--max-flip-rate``, ``--max-rel-error``),
shared by ``report``, ``demo``, ``validate`` and ``recompute``."""

from __future__ import annotations

from ..verdict import DEFAULT_MAX_FLIP_RATE, DEFAULT_MAX_REL_ERROR, Thresholds

__all__ = ["add_threshold_arguments", "thresholds_settings", "thresholds_of_args", "THRESHOLD_HELP"]

THRESHOLD_HELP = {
    "max_flip_rate": f"verdict: a format is safe when at most this fraction of samples changes class against the "
                     f"exact pass (default {DEFAULT_MAX_FLIP_RATE:g})",
    "max_rel_error": "verdict: a format is safe only when its largest output relative error is at most X (default: not checked, since "
                     "the relative error of an output near 0 is unbounded)",
}


def add_threshold_arguments(parser, extra: str = "") -> None:
    """``--max-flip-rate F`` and ``--max-rel-error X`` (None when not given); ``extra`` is
    appended to both help texts."""
    parser.add_argument("--max-flip-rate", type=float, metavar="F", help=THRESHOLD_HELP["max_flip_rate"] + extra)
    parser.add_argument("--max-rel-error", type=float, metavar="X", help=THRESHOLD_HELP["max_rel_error"] + extra)


def thresholds_of_args(args) -> Thresholds:
    """The thresholds given, the defaults for those not given."""
    return Thresholds(DEFAULT_MAX_FLIP_RATE if args.max_flip_rate is None else args.max_flip_rate,
                      DEFAULT_MAX_REL_ERROR if args.max_rel_error is None else args.max_rel_error)


def thresholds_settings(args) -> dict:
    """The ``ReportConfig`` fields of the thresholds."""
    t = thresholds_of_args(args)
    return {"max_flip_rate": t.max_flip_rate, "max_rel_error": t.max_rel_error}
