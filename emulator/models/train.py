"""Train the bundled models, deterministically: ``python -m emulator.models.train``.

Each multilayer perceptron's recipe fits a scikit-learn ``MLPClassifier`` (Adam, fixed
seed, fixed number of epochs, no early stopping, BLAS limited to one thread so that the
summation order and hence every weight is reproducible), converts it with
:func:`emulator.importers.from_sklearn` (output layer: identity, i.e. logits), measures
train and test accuracy with the float64 forward pass, and writes
``<name>.npz`` (weights + model card as ``meta``), ``<name>.md`` (the card, readable)
and ``index.json`` (every card) atomically into the output directory. The authors'
network on MNIST (``paper-mlp-mnist``) and the graph models (``digits-cnn``,
``digits-transformer``) are trained with PyTorch (extra ``torch``) by
:mod:`emulator.models.train_torch_mlp` and :mod:`emulator.models.train_graphs` and
written the same way.

Options: ``--only NAME ...`` to train some models, ``--out DIR`` to write elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from emulator.data import DATASETS, load_data
from emulator.importers import from_sklearn
from emulator.atomic import write_atomic
from emulator.modelio import BUNDLED_DIR, save_model
from emulator.graph.ir import Graph
from emulator.network import Network
from emulator.registry import Registry

from .cards import card_page, data_rows, data_sha256, mlp_card, provenance_rows, weights_sha256
from .train_graphs import GRAPH_RECIPES, GraphRecipe
from .train_torch_mlp import TORCH_MLP_RECIPES, TorchMLPRecipe

__all__ = ["Recipe", "RECIPES", "train", "weights_sha256", "data_sha256", "main"]


@dataclass(frozen=True)
class Recipe:
    """How one bundled model is trained: data, hidden widths, activation (scikit-learn
    name), seed and the Adam hyper-parameters."""

    name: str
    data: str
    hidden: tuple[int, ...]
    activation: str
    epochs: int
    batch_size: int
    alpha: float
    seed: int = 0
    learning_rate: float = 1e-3
    note: str = ""

    def fit(self) -> tuple[Network, float]:
        return train(self)

    def markdown(self, card: dict) -> str:
        return card_markdown(card)


RECIPES: "Registry[Recipe | TorchMLPRecipe | GraphRecipe]" = Registry("bundled model")
for _r in (
    Recipe("digits-relu", "digits", (128, 64), "relu", epochs=100, batch_size=64, alpha=1e-4),
    Recipe("digits-tanh", "digits", (128, 64), "tanh", epochs=100, batch_size=64, alpha=1e-4),
    Recipe("mnist1d-relu", "mnist1d", (256, 256), "relu", epochs=100, batch_size=100, alpha=1e-3),
    Recipe("mnist1d-tanh", "mnist1d", (256, 256), "tanh", epochs=100, batch_size=100, alpha=1e-3),
    Recipe("paper-mlp", "mnist1d", (784, 784, 128), "relu", epochs=40, batch_size=100, alpha=1e-3,
           note="The authors' shape (ReLU 784 -> 784 -> 128 -> 10 hidden/output widths, arXiv 2503.15568) "
                "with the 40-wide mnist1d input instead of 784-wide MNIST."),
    *TORCH_MLP_RECIPES,
    *GRAPH_RECIPES,
):
    RECIPES.add(_r.name, _r)


def _accuracy(network: Network, data) -> float:
    return float(np.mean(network.predict(data.x) == data.y))


def train(recipe: Recipe) -> tuple[Network, float]:
    """Fit ``recipe``; return the network (its card in ``meta``) and the training time in seconds."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    train_set, test_set = load_data(recipe.data, "train"), load_data(recipe.data, "test")
    params = dict(hidden_layer_sizes=recipe.hidden, activation=recipe.activation, solver="adam", alpha=recipe.alpha,
                  batch_size=recipe.batch_size, learning_rate_init=recipe.learning_rate, max_iter=recipe.epochs,
                  shuffle=True, random_state=recipe.seed, tol=0.0, n_iter_no_change=recipe.epochs,
                  early_stopping=False)
    start = time.perf_counter()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(**params).fit(train_set.x, train_set.y)
    seconds = time.perf_counter() - start
    net = from_sklearn(model, name=recipe.name)
    test_acc = _accuracy(net, test_set)
    sklearn_acc = float(model.score(test_set.x, test_set.y))
    if test_acc != sklearn_acc:
        raise RuntimeError(f"{recipe.name}: float64 forward accuracy {test_acc} != scikit-learn's {sklearn_acc}")
    card = {
        **mlp_card(net, recipe.data, DATASETS.get(recipe.data).description, train_set, test_set,
                   _accuracy(net, train_set), test_acc, net.meta["classes"]),
        "seed": recipe.seed,
        "trainer": {"estimator": "sklearn.neural_network.MLPClassifier",
                    **{k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}},
        "epochs_run": int(model.n_iter_),
        "final_loss": float(model.loss_),
        "versions": {p: version(p) for p in ("numpy", "scikit-learn")},
        "weights_sha256": weights_sha256(net),
        "rebuild": f"python -m emulator.models.train --only {recipe.name}",
        "note": recipe.note,
    }
    return Network(net.layers, recipe.name, card), seconds


def card_markdown(card: dict) -> str:
    """The model card as Markdown."""
    t = card["trainer"]
    rows = [
        ("architecture", card["architecture"]),
        ("parameters", str(card["n_params"])),
        *data_rows(card),
        ("trainer", f"scikit-learn MLPClassifier, {t['solver']}, lr {t['learning_rate_init']}, L2 alpha {t['alpha']}, "
                    f"batch {t['batch_size']}, {card['epochs_run']} epochs, seed {card['seed']}, one BLAS thread"),
        ("final training loss", f"{card['final_loss']:.6g}"),
        *provenance_rows(card),
    ]
    layout = ("Weights are float64, stored in the native layout (`layer{k}.weight` out x in, `layer{k}.bias`,\n"
              "`layer{k}.activation`) with this card as the JSON `meta` entry.")
    return card_page(card, rows, layout, "Rebuild (deterministic; same versions give the same sha256):")


def write_model(network: "Network | Graph", out: Path) -> None:
    """``<name>.npz``, ``<name>.md`` (the card of its recipe's kind) and the model's entry
    in ``index.json``."""
    out.mkdir(parents=True, exist_ok=True)
    card = network.meta
    page = RECIPES.get(network.name).markdown(card)
    save_model(network, out / f"{network.name}.npz")
    write_atomic(out / f"{network.name}.md", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    index_path = out / "index.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else {}
    index[network.name] = {k: v for k, v in card.items() if k not in ("classes",)}
    ordered = {name: index[name] for name in [*RECIPES.names(), *sorted(set(index) - set(RECIPES.names()))] if name in index}
    write_atomic(index_path, lambda tmp: tmp.write_text(json.dumps(ordered, indent=2) + "\n", encoding="utf-8"))


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.models.train", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=RECIPES.names(), help="models to train (default: all)")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR, help="output directory (default: the package's models/)")
    args = parser.parse_args(argv)
    for name in args.only or RECIPES.names():
        net, seconds = RECIPES.get(name).fit()
        write_model(net, args.out)
        m = net.meta
        print(f"{name}: {m['architecture']}  train {m['train_accuracy']:.4f}  test {m['test_accuracy']:.4f}  "
              f"({seconds:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
