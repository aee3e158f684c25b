"""``mixacc report``: validate a model under several accumulation formats, run the tau
sweep of the recompute policy, and write the report a person can look at (HTML, Markdown,
PNG figures, JSON) into one directory, atomically."""

from __future__ import annotations

from ..cost import cost_model_names
from ..policy import criterion_names
from .thresholds import add_threshold_arguments, thresholds_settings

HELP = "write an error report (HTML, Markdown, PNG, JSON): bounds vs measured errors, condition numbers, tau sweep"

DEFAULT_ACCS = ("fp16", "bf16")


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model file or bundled model name")
    parser.add_argument("--data", metavar="D", help="data spec (default: the model's default data)")
    parser.add_argument("--samples", type=int, default=1000, metavar="N", help="first N test samples (default 1000)")
    parser.add_argument("--acc", nargs="+", action="extend", metavar="SPEC",
                        help=f"accumulation formats to validate (default: {' '.join(DEFAULT_ACCS)})")
    parser.add_argument("--bound", default="deterministic", metavar="B",
                        help="deterministic or probabilistic:LAMBDA (default deterministic)")
    parser.add_argument("--storage", metavar="FMT", help="storage format for weights, biases, input and outputs")
    parser.add_argument("--weights-storage", metavar="FMT",
                        help="round only the weights and biases to FMT first (e.g. e4m3:saturate, the paper's)")
    parser.add_argument("--low", metavar="SPEC", help="tau sweep: low-precision accumulation")
    parser.add_argument("--high", metavar="SPEC", help="tau sweep: high-precision accumulation")
    parser.add_argument("--tau", type=float, nargs="+", metavar="T", help="tau sweep: tolerances")
    parser.add_argument("--criterion", nargs="+", choices=criterion_names(), default=["kappa"], metavar="C",
                        help=f"tau sweep: score(s), {', '.join(criterion_names())} (default kappa)")
    parser.add_argument("--cost", default="bits", metavar="bits|quadratic|PATH",
                        help=f"cost model: {', '.join(cost_model_names())} or a JSON table (default bits)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the random baseline and of the drawn points (default 0)")
    parser.add_argument("--points", type=int, default=1000, metavar="P", help="at most P points per scatter panel")
    parser.add_argument("--point-samples", type=int, default=200, metavar="S",
                        help="per-component figures use the first S samples (default 200)")
    parser.add_argument("--title", help="the report's title")
    add_threshold_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="the report directory (replaced whole)")


def config_from_args(args):
    from ..report import ReportConfig

    return ReportConfig(
        model=args.model, data=args.data, samples=args.samples, accs=tuple(args.acc or DEFAULT_ACCS),
        bound=args.bound, storage=args.storage, weights_storage=args.weights_storage, low=args.low, high=args.high,
        taus=tuple(args.tau or ()),
        criteria=tuple(args.criterion), cost=args.cost, seed=args.seed, points=args.points,
        point_samples=args.point_samples, title=args.title, **thresholds_settings(args),
    )


def run(args) -> int:
    from ..report import build_report, summary_lines, write_report
    from ..verdict import verdict_lines

    report = build_report(config_from_args(args))
    out = write_report(report, args.out)
    print("\n".join(summary_lines(report, out) + verdict_lines(report["verdict"])))
    return 0
