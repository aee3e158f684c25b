"""``mixacc emulate``: run the forward pass of any model (an MLP or a graph) under an
accumulation model and score it against the exact pass: per-output errors, and the
metrics of its task (accuracy, flips and KL divergence for a classifier; cosine
similarity and nearest-neighbour flips for an embedding model)."""

from __future__ import annotations

from ..atomic import write_json, write_npz
from ..emulation import emulate
from ..provenance import provenance
from .validate import add_common_arguments, add_site_arguments, load_inputs, site_plan

HELP = "run the forward pass with emulated accumulation; errors, flips and task metrics against the exact pass"


def add_arguments(parser) -> None:
    add_common_arguments(parser, None)
    parser.add_argument("--acc", metavar="SPEC", required=True,
                        help="accumulation, e.g. fp16, fp64, e4m3:promote:32:fp32, exact")
    parser.add_argument("--save-outputs", metavar="PATH.npz",
                        help="write every output of the model under its own name (float64, batch first)")
    add_site_arguments(parser)
    parser.add_argument("--all-tensors", action="store_true",
                        help="with --save-outputs, also write every intermediate tensor under its name")


def _metric_line(result) -> str:
    m = result.metrics
    if result.task == "classification":
        acc = "" if m["accuracy"] is None else f"accuracy {m['accuracy']:.4f} (exact {m['exact_accuracy']:.4f}); "
        return (f"{acc}flip rate {m['flip_rate']:.4g} ({m['flips']} of {result.samples}); KL divergence to the exact "
                f"distribution: mean {m['kl_mean']:.3e}, max {m['kl_max']:.3e}")
    if result.task == "embedding":
        return (f"cosine similarity to the exact embedding: min {m['cosine_min']:.6f}, median "
                f"{m['cosine_median']:.6f}; nearest neighbour changes for {m['neighbour_flips']} of {result.samples} "
                f"({m['neighbour_flip_rate']:.4g})")
    return "no task metrics (neither a classifier nor an embedding model)"


def run(args) -> int:
    model, data, acc, storage = load_inputs(args)
    plan = site_plan(args, acc)
    result = emulate(model, data, plan, storage, labels=data.y, keep=bool(args.save_outputs and args.all_tensors))
    record = {**result.to_dict(), "data": data.name, "split": data.split}
    e = result.output_error
    print(f"{model.name} ({result.architecture}) on {data.name} ({data.split}), {result.samples} samples; "
          f"accumulation {acc.spec}; storage {result.storage or 'none'}")
    print(f"{_metric_line(result)}; output error vs exact: max abs {e['max_abs']:.3e}, max rel {e['max_rel']:.3e}, "
          f"median rel {e['median_rel']:.3e}; overflowed components {result.overflow_components}")
    if e["reference_uncertified"]:
        print(f"warning: the exact pass pins {e['reference_uncertified']} output components down only to within "
              f"{e['reference_max_radius']:.3g} (not certainly the correctly rounded exact value); errors and metrics "
              f"there are measured against its nearest value")
    if args.save_outputs:
        arrays = result.tensors if args.all_tensors else _outputs(model, data, plan, storage)
        write_npz(args.save_outputs, arrays)
        record["saved_outputs"] = str(args.save_outputs)
    if args.json:
        record["provenance"] = provenance({k: v for k, v in vars(args).items() if not k.startswith("_")}, seed=args.seed)
        write_json(args.json, record)
    return 0


def _outputs(model, data, acc, storage) -> dict:
    """The model's outputs by name, from one more emulated pass (the scored one keeps
    nothing but what it scores)."""
    from emulator.graph import forward
    from emulator.network import Network

    graph = model.graph if isinstance(model, Network) else model
    return {k: v for k, v in forward(graph, data.feeds([t.name for t in graph.inputs]), acc, storage).outputs.items()}
