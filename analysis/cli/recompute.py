"""``mixacc recompute``: what each tolerance buys — Algorithm 1 (guided recomputation)
against uniform low / high, random and local-oracle selection at the same recompute fraction,
and optionally the static and multi-level variants; accuracy, flip rate and output error
against the exact forward pass, recompute fractions and relative cost. On a graph, the
policy runs at every accumulation site, LAMP's rule guards the attention scores, and the
metrics follow the task (KL divergence for classifiers, cosine similarity and
nearest-neighbour flips for embedding models)."""

from __future__ import annotations

import argparse

from emulator.errors import DataError, MixaccError
from emulator.storage import parse_storage

from ..atomic import write_json
from ..baselines import ORACLE_ERRORS
from ..cost import cost_model_names
from ..graph_policy import lamp_form_names
from ..policy import check_tau, criterion_names, get_criterion
from ..presets import PRESETS
from ..provenance import provenance
from ..selection import granularity_names, rule_label, rule_list
from ..sweep import sweep, sweep_record
from ..verdict import verdict, verdict_lines
from .storage import add_storage_arguments, storage_of_args
from .thresholds import add_threshold_arguments, thresholds_of_args

HELP = "guided recomputation (Algorithm 1) against its baselines: accuracy, flips, error and cost per tau"


def _formats_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if len(items) < 2 or not all(items):
        raise argparse.ArgumentTypeError(f"{text!r}: give at least two comma-separated formats, cheapest first.")
    return items


def _criterion(text: str) -> str:
    try:
        return get_criterion(text).name
    except MixaccError:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(criterion_names())}, kappa-blocked:B)") from None


def add_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", metavar="MODEL", help="a model file or bundled model name")
    parser.add_argument("--data", metavar="D", help="data spec (default: the model's default data)")
    parser.add_argument("--samples", type=int, metavar="N", help="use the first N test samples (default: all)")
    parser.add_argument("--low", metavar="SPEC", help="low-precision accumulation, e.g. fp16, e4m3:recursive:bias=last")
    parser.add_argument("--high", metavar="SPEC", help="high-precision accumulation, e.g. fp32")
    parser.add_argument("--tau", type=float, nargs="+", metavar="T",
                        help="tolerances: s_i > tau is recomputed (with --levels, the multi-level variant takes "
                             "u_F s_i <= tau instead: its tau is the two-level tau times u_low)")
    parser.add_argument("--criterion", nargs="+", type=_criterion, metavar="C",
                        help=f"score(s): {', '.join(criterion_names())}, kappa-blocked:B (default kappa)")
    parser.add_argument("--budget", type=float, nargs="+", metavar="COST",
                        help="instead of (or besides) --tau: recompute the largest predicted errors u_low s_i per "
                             "unit cost until the recomputation costs COST times the layer in uniform high "
                             "(0: uniform low, 1: uniform high)")
    parser.add_argument("--target-error", type=float, nargs="+", metavar="E",
                        help="recompute until every component left in low has predicted error u_low s_i <= E "
                             "(with --budget: until either is reached)")
    parser.add_argument("--granularity", default="component", choices=granularity_names(),
                        help="unit of recomputation: a component, an output row (neuron, all samples of the batch) "
                             "or a tile of --tile (default component)")
    parser.add_argument("--tile", default="16x16", metavar="RxC", help="tile size, samples x outputs (default 16x16)")
    parser.add_argument("--levels", type=_formats_list, metavar="F1,F2,...",
                        help="also run the multi-level variant over these formats (cheapest first): component i "
                             "takes the first F_j with u_Fj s_i <= tau, so with two levels it equals the two-level "
                             "policy at tau / u_F1")
    parser.add_argument("--static", type=int, metavar="CALIB_SAMPLES",
                        help="also run the static variant, calibrated on this many training samples")
    add_storage_arguments(parser)
    parser.add_argument("--cost", default="bits", metavar="bits|quadratic|PATH",
                        help=f"cost model: {', '.join(cost_model_names())} or a JSON table (default bits)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the random baseline (default 0)")
    parser.add_argument("--local-oracle-error", default="relative", choices=ORACLE_ERRORS.names(),
                        help="error of one layer's output the local-oracle baseline ranks by (default relative)")
    parser.add_argument("--lamp", nargs="*", choices=lamp_form_names(), metavar="C",
                        help="graphs with attention scores: LAMP criteria to run, "
                             f"{', '.join(lamp_form_names())} (default both; none: --lamp with no value)")
    parser.add_argument("--lamp-tau", type=float, nargs="+", metavar="T",
                        help="graphs: LAMP's tolerances (default: those of --tau)")
    parser.add_argument("--json", metavar="PATH", help="write the runs as JSON")
    add_threshold_arguments(parser)
    parser.add_argument("--preset", choices=PRESETS.names(), help="a named configuration (see the notes it prints)")


def _resolve(args) -> dict:
    """The configuration: explicit options win over the preset's."""
    preset = PRESETS.get(args.preset) if args.preset else None
    config = {
        "model": args.model or (preset.model if preset else None),
        "weights_storage": preset.weights if preset else None,
        "preset": preset,
        "low": args.low or (preset.low if preset else None),
        "high": args.high or (preset.high if preset else None),
        "taus": args.tau or (list(preset.taus) if preset else None),
        "criteria": args.criterion or (list(preset.criteria) if preset else ["kappa"]),
        "note": preset.note if preset else None,
    }
    if args.budget or args.target_error:
        config["taus"] = args.tau or []
    for key, flag in (("model", "MODEL"), ("low", "--low"), ("high", "--high"), ("taus", "--tau")):
        if not config[key] and config[key] != []:
            raise MixaccError(f"{flag} is required (or use --preset {'|'.join(PRESETS.names())}).")
    config["taus"] = [check_tau(t) for t in config["taus"]]
    config["rules"] = rule_list(config["taus"], args.budget or (), args.target_error or (), args.granularity,
                                args.tile)
    for flag, value in (("--samples", args.samples), ("--static", args.static)):
        if value is not None and value < 1:
            raise MixaccError(f"{flag} == {value}, must be >= 1.")
    return config


def _split(network, data_spec: "str | None", samples, calibration):
    """(evaluation set, calibration inputs or None). Named datasets calibrate on their
    train split; other data on the rows after the evaluated ones (held out either way)."""
    from emulator.data import DATASETS, load_model_data
    from emulator.graph import Graph

    if calibration and isinstance(network, Graph):
        raise MixaccError(f"--static: the static variant is for MLPs only, not for graph {network.name!r}.")

    test = load_model_data(network, data_spec, "test")
    if samples is not None and samples > len(test):
        raise DataError(f"--samples == {samples}, but {test.name} has {len(test)} test samples.")
    evaluation = test.head(samples)
    if not calibration:
        return evaluation, None
    if test.name in DATASETS:
        train = load_model_data(network, data_spec, "train")
        if calibration > len(train):
            raise DataError(f"--static == {calibration}, but {train.name} has {len(train)} training samples.")
        return evaluation, train.x[:calibration]
    start = len(evaluation)
    if start + calibration > len(test):
        raise DataError(
            f"--static == {calibration}: {test.name} has no train split and only {len(test) - start} rows after "
            f"the {start} evaluated ones (calibration must be held out)."
        )
    return evaluation, test.x[start:start + calibration]


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _mlp_columns(r) -> dict:
    return {"accuracy": _pct(r.accuracy), "flips": _pct(r.flip_rate), "med rel err": f"{r.median_rel_error:.3g}",
            "max rel err": f"{r.max_rel_error:.3g}", "recomputed": _pct(r.recompute_fraction),
            "per layer %": "/".join(f"{100 * f:.1f}" for f in r.layer_recompute_fraction)}


def _graph_columns(r) -> dict:
    m = r.metrics
    task = {"kl mean": f"{m['kl_mean']:.3g}", "kl max": f"{m['kl_max']:.3g}"} if "kl_mean" in m else {}
    if "cosine_min" in m:
        task = {"cos min": f"{m['cosine_min']:.6f}", "cos median": f"{m['cosine_median']:.6f}",
                "nbr flips": _pct(m["neighbour_flip_rate"])}
    flips = {"accuracy": _pct(m["accuracy"]), "flips": _pct(m["flip_rate"])} if "kl_mean" in m else {}
    return {**flips, **task, "med rel err": f"{m['median_rel_error']:.3g}", "max rel err": f"{m['max_rel_error']:.3g}",
            "recomputed": _pct(r.recompute_fraction)}


def _table(summaries, columns) -> list[str]:
    cells = [{"method": r.method, "criterion": r.criterion or "-", "tau": rule_label(r.tau, getattr(r.run, "selection", None)),
              **columns(r), "rel cost": f"{r.relative_cost:.3f}"} for r in summaries]
    head = tuple(cells[0])
    rows = [head] + [tuple(c[k] for k in head) for c in cells]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    return ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in rows]


def run(args) -> int:
    from emulator.graph import Graph
    from emulator.modelio import load_model

    config = _resolve(args)
    network = load_model(config["model"])
    if config["weights_storage"]:
        network = network.with_storage(config["weights_storage"])
    graph = isinstance(network, Graph)
    storage = parse_storage(storage_of_args(args, config["preset"], graph))
    if not graph and (args.lamp is not None or args.lamp_tau):
        raise MixaccError(f"--lamp, --lamp-tau: LAMP guards the attention scores of graphs, and {network.name!r} is "
                          "an MLP.")
    if graph and args.levels:
        raise MixaccError(f"--levels: the multi-level variant is for MLPs only, not for graph {network.name!r}.")
    test, x_calibration = _split(network, args.data, args.samples, args.static)
    lamp = {}
    if graph:
        lamp = {"lamp": lamp_form_names() if args.lamp is None else args.lamp,
                "lamp_taus": [check_tau(t) for t in args.lamp_tau] if args.lamp_tau else None}
    selection = {"budgets": args.budget, "target_errors": args.target_error, "granularity": args.granularity,
                 "tile": args.tile}
    result = sweep(network, test if graph else test.x, config["low"], config["high"], config["taus"],
                   config["criteria"], labels=test.y, storage=storage, cost=args.cost, seed=args.seed,
                   local_oracle_error=args.local_oracle_error, levels=args.levels, x_calibration=x_calibration,
                   budgets=args.budget or (), target_errors=args.target_error or (), granularity=args.granularity,
                   tile=args.tile, **lamp)
    if config["note"]:
        print(f"note: {config['note']}")
    architecture = (network.meta.get("architecture") or network.architecture) if graph else network.architecture
    task = f"; task {result.task}" if graph else ""
    print(f"model {network.name} ({architecture}); data {test.name} ({test.split}), {len(test)} samples{task}; "
          f"low {config['low']}; high {config['high']}; storage {storage.spec if storage else 'none'}; "
          f"cost model {result.cost_model} (relative to uniform high)")
    if args.levels:
        print(f"multi-level over {', '.join(args.levels)}: tau bounds the predicted error u_F * s_i")
    for line in _table(result.runs, _graph_columns if graph else _mlp_columns):
        print(line)
    record = sweep_record(
        network, test, result, low=config["low"], high=config["high"], criteria=config["criteria"],
        taus=config["taus"], storage=storage, weights_storage=config["weights_storage"], levels=args.levels,
        static_calibration_samples=args.static, seed=args.seed, local_oracle_error=args.local_oracle_error,
        preset=args.preset, note=config["note"], **selection, **lamp)
    print("\n".join(verdict_lines(verdict([], record, thresholds_of_args(args)))))
    if args.json:
        record["provenance"] = provenance({k: v for k, v in record.items() if k not in ("runs", "sites")},
                                          seed=args.seed)
        write_json(args.json, record)
    return 0
