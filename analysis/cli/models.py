"""``mixacc models``: the bundled models with their test accuracy, or the layers (of a
network) or operators and accumulation sites (of a graph) of given models (bundled names
or files), optionally re-measuring their accuracy."""

from __future__ import annotations

import json

import numpy as np

from emulator.data import load_model_data
from emulator.errors import DataError
from emulator.graph import Graph, forward
from emulator.metrics import accuracy, predicted_class
from emulator.modelio import bundled_models, load_model
from emulator.network import Network

from ..atomic import to_jsonable
from .storage import add_storage_arguments, storage_of_args

HELP = "list the bundled models (architecture or operators, data, test accuracy) or describe model files"


def add_arguments(parser) -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="bundled model names or model files (.npz, .safetensors, .onnx, .pt, .skops) to describe")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--evaluate", action="store_true", help="measure the accuracy of each MODEL on --data")
    parser.add_argument("--data", metavar="SPEC", help="data for --evaluate (default: the model's default_data)")
    parser.add_argument("--split", choices=("train", "test"), default="test", help="data split for --evaluate")
    parser.add_argument("--samples", type=int, metavar="N", help="evaluate on the first N samples only")
    parser.add_argument("--acc", metavar="SPEC", help="accumulation for --evaluate (default: native float64)")
    add_storage_arguments(parser, "storage format for --evaluate (e.g. e4m3:saturate)")


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _list_bundled(as_json: bool) -> int:
    cards = bundled_models()
    if as_json:
        print(json.dumps(to_jsonable(cards), indent=2))
        return 0
    rows = [("name", "architecture", "data", "params", "sites", "train acc", "test acc")]
    rows += [(n, c["architecture"], c["default_data"], c["n_params"], _sites(c), f"{c['train_accuracy']:.4f}",
              f"{c['test_accuracy']:.4f}") for n, c in cards.items()]
    print(_table(rows))
    return 0


def _sites(card: dict) -> int:
    """Accumulation sites of a bundled model: a graph card's count, one per layer of a network."""
    return card["accumulation_sites"] if "accumulation_sites" in card else len(card["widths"]) - 1


def _network_accuracy(net: Network, data, args) -> float:
    predicted = net.predict(data.x, acc=args.acc, storage=storage_of_args(args))
    return float(np.mean(predicted == data.y))


def _graph_accuracy(graph: Graph, data, args) -> float:
    """Classes decided on the graph's first output (its logits) by ``emulator.metrics``."""
    run = forward(graph, data.feeds([t.name for t in graph.inputs]), acc=args.acc, storage=storage_of_args(args))
    return accuracy(predicted_class(run.outputs[graph.outputs[0]]), data.y, graph.meta.get("classes"))


_ACCURACY = {Network: _network_accuracy, Graph: _graph_accuracy}


def _evaluate(model: "Network | Graph", args) -> dict:
    data = load_model_data(model, args.data, args.split).head(args.samples)
    spec = args.data or model.meta["default_data"]
    if data.y is None:
        raise DataError(f"Data {spec!r} has no labels; accuracy needs labels.")
    return {"data": spec, "split": args.split, "samples": len(data), "acc": args.acc or "float64",
            "storage": storage_of_args(args), "accuracy": _ACCURACY[type(model)](model, data, args)}


def run(args) -> int:
    if not args.models:
        if args.evaluate:
            raise DataError("--evaluate needs at least one MODEL.")
        return _list_bundled(args.json)
    results = []
    for spec in args.models:
        model = load_model(spec)
        info = model.describe()
        if args.evaluate:
            info["evaluation"] = _evaluate(model, args)
        results.append(info)
    if args.json:
        print(json.dumps(to_jsonable(results), indent=2))
        return 0
    for info in results:
        meta = info["meta"]
        sites = f", {info['accumulation_sites']} accumulation sites" if "accumulation_sites" in info else ""
        print(f"{info['name']}: {info['architecture']}  ({info['n_params']} parameters{sites})")
        if "structure" in meta:
            print(f"  structure: {meta['structure']}")
        if "sites" in info:
            print(f"  sites: {', '.join(info['sites'])}")
        if "test_accuracy" in meta:
            print(f"  recorded test accuracy {meta['test_accuracy']:.4f} on {meta.get('default_data')}")
        if "evaluation" in info:
            e = info["evaluation"]
            storage = f", storage {e['storage']}" if e["storage"] else ""
            print(f"  measured accuracy {e['accuracy']:.4f} on {e['data']} ({e['split']}, {e['samples']} samples, "
                  f"acc {e['acc']}{storage})")
    return 0
