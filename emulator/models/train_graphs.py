"""Train the bundled graph models with PyTorch (extra ``torch``), deterministically, and
convert them to graphs (run through ``python -m emulator.models.train``).

Each recipe trains its module (:mod:`emulator.models.torch_nets`) as
:mod:`emulator.models.torch_training` does (CPU, one thread, deterministic algorithms,
fixed seeds, float64) with AdamW and cosine learning-rate decay to 0, then rounds it to
float32 (the released weights) and its float32 tensors become the graph's float64
initialisers, exactly. A float32 run of the transformer ended with weights up to 20%
apart under the AVX2 and AVX-512 kernels; float64 training stays within one float32 unit
in the last place (4.5e-8 measured).

The script checks, and fails loudly otherwise, that the graph's float64 forward pass
(``emulator.graph.forward``) agrees with the module in float64 (``module.double()``) to
1e-10 relative on every train and test sample and predicts the same classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np

from ..data import DATASETS, Dataset, load_data
from ..graph.engine import forward
from ..graph.ir import Graph
from ..metrics import accuracy, predicted_class
from .cards import card_page, data_rows, data_sha256, provenance_rows, weights_sha256
from .digits_graphs import OUTPUT, CnnShape, TransformerShape
from .torch_training import AGREEMENT, check_agreement, deterministic, fit, require_torch

__all__ = ["GraphRecipe", "GRAPH_RECIPES", "AGREEMENT", "train_graph", "graph_card_markdown"]


@dataclass(frozen=True)
class GraphRecipe:
    """How one bundled graph model is trained: data, architecture (a shape: its graph,
    and its PyTorch module in ``torch_nets``), seed and the AdamW hyper-parameters."""

    name: str
    data: str
    shape: "CnnShape | TransformerShape"
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    seed: int = 0
    note: str = ""

    def module(self):
        """A fresh PyTorch module of this recipe's shape (needs the ``torch`` extra)."""
        require_torch()
        from .torch_nets import module_for

        return module_for(self.shape)

    def optimizer(self, torch, parameters, steps: int):
        """AdamW with cosine decay of the learning rate to 0 over ``steps``."""
        optimizer = torch.optim.AdamW(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def fit(self) -> tuple[Graph, float]:
        return train_graph(self)

    def markdown(self, card: dict) -> str:
        return graph_card_markdown(card)


GRAPH_RECIPES = (
    GraphRecipe("digits-cnn", "digits", CnnShape(), epochs=60, batch_size=32, learning_rate=1e-2, weight_decay=1e-4,
                note="A small convolutional network: two 3x3 convolutions, max and global average pooling."),
    GraphRecipe("digits-transformer", "digits", TransformerShape(), epochs=30, batch_size=64, learning_rate=5e-3,
                weight_decay=1e-2,
                note="A small pre-norm transformer encoder over the 8 image rows as tokens. Its parameter count is "
                     "the graph's floating-point constants: the trained parameters and the attention scale "
                     "1/sqrt(8)."),
)


def _trainer(recipe: GraphRecipe, module) -> dict:
    return {"framework": "torch", "module": f"{type(module).__module__}.{type(module).__name__}",
            "optimizer": "AdamW", "learning_rate": recipe.learning_rate, "weight_decay": recipe.weight_decay,
            "schedule": "cosine decay to 0 over every step", "loss": "cross-entropy", "batch_size": recipe.batch_size,
            "epochs": recipe.epochs, "shuffle": "torch.randperm with a generator seeded by seed",
            "dtype": "float64, weights rounded to float32 at the end", "device": "cpu", "threads": 1,
            "deterministic_algorithms": True}


def _logits(graph: Graph, data: Dataset) -> np.ndarray:
    """The float64 logits of ``graph`` on ``data``."""
    return forward(graph, data.feeds([t.name for t in graph.inputs])).outputs[graph.outputs[0]]


def _accuracy(graph: Graph, data: Dataset) -> float:
    """Accuracy of the classes decided on the graph's float64 logits."""
    return accuracy(predicted_class(_logits(graph, data)), data.y, graph.meta.get("classes"))


def train_graph(recipe: GraphRecipe) -> tuple[Graph, float]:
    """Train ``recipe`` and convert it; return the graph (its card in ``meta``) and the
    training time in seconds."""
    torch = require_torch()
    train_set, test_set = load_data(recipe.data, "train"), load_data(recipe.data, "test")
    with deterministic(torch, recipe.seed):
        module = recipe.module().double()
        start = time.perf_counter()
        final_loss = fit(torch, module, train_set, recipe)
        seconds = time.perf_counter() - start
        module = module.float()
        state = {k: v.detach().to(torch.float64).numpy().copy() for k, v in module.state_dict().items()}
        classes = sorted(int(c) for c in np.unique(train_set.y))
        graph = recipe.shape.graph(state, recipe.name).renamed(meta={"classes": classes})
        agreement = check_agreement(torch, graph.name, lambda data: _logits(graph, data), module,
                                    [train_set, test_set])
    card = {
        "name": recipe.name,
        "architecture": graph.architecture,
        "structure": recipe.shape.structure,
        "operators": graph.operators,
        "accumulation_sites": len(graph.site_names),
        "n_params": graph.n_params,
        "default_data": recipe.data,
        "data": DATASETS.get(recipe.data).description,
        "train_size": len(train_set),
        "test_size": len(test_set),
        "train_accuracy": _accuracy(graph, train_set),
        "test_accuracy": _accuracy(graph, test_set),
        "test_data_sha256": data_sha256(test_set.x),
        "classes": classes,
        "output": f"{OUTPUT!r}: the classifier's logits (no softmax; argmax is the class)",
        "seed": recipe.seed,
        "trainer": _trainer(recipe, module),
        "epochs_run": recipe.epochs,
        "final_loss": final_loss,
        "torch_agreement": {"max_relative_difference": agreement, "tolerance": AGREEMENT,
                            "samples": len(train_set) + len(test_set)},
        "versions": {p: version(p) for p in ("numpy", "torch")},
        "weights_sha256": weights_sha256(graph),
        "rebuild": f"python -m emulator.models.train --only {recipe.name}",
        "note": recipe.note,
    }
    return graph.renamed(recipe.name, card), seconds


def graph_card_markdown(card: dict) -> str:
    """A graph model's card as Markdown."""
    t, agreement = card["trainer"], card["torch_agreement"]
    rows = [
        ("operators", card["architecture"]),
        ("structure", card["structure"]),
        ("parameters", str(card["n_params"])),
        ("accumulation sites", str(card["accumulation_sites"])),
        *data_rows(card),
        ("trainer", f"torch {t['optimizer']}, lr {t['learning_rate']} ({t['schedule']}), weight decay "
                    f"{t['weight_decay']}, batch {t['batch_size']}, {t['epochs']} epochs, seed {card['seed']}, "
                    f"{t['dtype']}, CPU, one thread, deterministic algorithms"),
        ("final training loss", f"{card['final_loss']:.6g}"),
        ("graph vs torch (float64)", f"max relative difference of the logits {agreement['max_relative_difference']:.3g} "
                                     f"over {agreement['samples']} samples (tolerance {agreement['tolerance']:g})"),
        *provenance_rows(card),
    ]
    layout = ("A graph in the native layout (`graph`: nodes, inputs, outputs and this card as JSON; `init/<name>`:\n"
              "the float64 weights, float32 values copied exactly, named as the PyTorch parameters).")
    heading = ("Rebuild (deterministic; needs the `torch` extra; another CPU's kernels may change a weight by one "
               "unit in the last place of float32):")
    return card_page(card, rows, layout, heading)
