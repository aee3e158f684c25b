"""``mixacc report``: validate a model under several accumulation formats, run the tau
sweep of the recompute policy, and write the report a person can look at (HTML, Markdown,
PNG figures, JSON) into one directory, atomically."""

from __future__ import annotations

import dataclasses

from ..cost import cost_model_names
from ..policy import criterion_names
from ..presets import PRESETS
from .storage import add_storage_arguments, storage_of_args
from .thresholds import add_threshold_arguments, thresholds_settings

HELP = "write an error report (HTML, Markdown, PNG, JSON): bounds vs measured errors, condition numbers, tau sweep"

DEFAULT_ACCS = ("fp16", "bf16")


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model file or bundled model name")
    parser.add_argument("--data", metavar="D", help="data spec (default: the model's default data)")
    parser.add_argument("--samples", type=int, metavar="N",
                        help="first N test samples (default 1000; with --preset, the whole test split)")
    parser.add_argument("--acc", nargs="+", action="extend", metavar="SPEC",
                        help=f"accumulation formats to validate (default: {' '.join(DEFAULT_ACCS)})")
    parser.add_argument("--bound", default="deterministic", metavar="B",
                        help="deterministic or probabilistic:LAMBDA (default deterministic)")
    add_storage_arguments(parser)
    parser.add_argument("--weights-storage", metavar="FMT",
                        help="round only the weights and biases to FMT first (e.g. e4m3:saturate, the paper's)")
    parser.add_argument("--low", metavar="SPEC", help="tau sweep: low-precision accumulation")
    parser.add_argument("--high", metavar="SPEC", help="tau sweep: high-precision accumulation")
    parser.add_argument("--tau", type=float, nargs="+", metavar="T", help="tau sweep: tolerances")
    parser.add_argument("--criterion", nargs="+", choices=criterion_names(), metavar="C",
                        help=f"tau sweep: score(s), {', '.join(criterion_names())} (default kappa)")
    parser.add_argument("--cost", default="bits", metavar="bits|quadratic|PATH",
                        help=f"cost model: {', '.join(cost_model_names())} or a JSON table (default bits)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the random baseline and of the drawn points (default 0)")
    parser.add_argument("--points", type=int, default=1000, metavar="P", help="at most P points per scatter panel")
    parser.add_argument("--point-samples", type=int, metavar="S",
                        help="per-component figures use the first S samples (default 200; with --preset, 50)")
    parser.add_argument("--title", help="the report's title")
    add_threshold_arguments(parser)
    parser.add_argument("--preset", choices=PRESETS.names(),
                        help="a recompute preset's configuration (storage, formats validated, sweep); explicit "
                             "options win over it")
    parser.add_argument("--out", required=True, metavar="DIR", help="the report directory (replaced whole)")


def config_from_args(args):
    """The report's configuration: the options given, else the preset's (``--preset``),
    else the defaults."""
    from ..report import ReportConfig

    base = ReportConfig(model=args.model, accs=DEFAULT_ACCS)
    graph = False
    if args.preset:
        from emulator.graph import Graph
        from emulator.modelio import load_model

        from ..report.presets import preset_report

        graph = isinstance(load_model(args.model), Graph)
        base = preset_report(args.preset, args.model, graph=graph)
    given = {"accs": tuple(args.acc or ()), "weights_storage": args.weights_storage, "low": args.low,
             "high": args.high, "taus": tuple(args.tau or ()), "criteria": tuple(args.criterion or ()),
             "title": args.title, "samples": args.samples, "point_samples": args.point_samples,
             "storage": storage_of_args(args, PRESETS.get(args.preset) if args.preset else None, graph)}
    return dataclasses.replace(
        base, **{k: v for k, v in given.items() if v not in (None, ())}, data=args.data, bound=args.bound,
        cost=args.cost, seed=args.seed, points=args.points, **thresholds_settings(args))


def run(args) -> int:
    from ..report import build_report, summary_lines, write_report
    from ..verdict import verdict_lines

    report = build_report(config_from_args(args))
    out = write_report(report, args.out)
    print("\n".join(summary_lines(report, out) + verdict_lines(report["verdict"])))
    return 0
