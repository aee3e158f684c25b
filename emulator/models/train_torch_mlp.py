"""Train the bundled multilayer perceptrons that follow a published PyTorch script (extra
``torch``), deterministically (run through ``python -m emulator.models.train``).

``paper-mlp-mnist`` is the network of El Arar, Filip, Mary and Riccietti (arXiv
2503.15568) in their released script's setting: 784 -> 784 ReLU -> 128 ReLU -> 10 with
biases, trained by SGD (learning rate 0.05, momentum 0.9, no weight decay, batch 64,
10 epochs, seed 1234, cross-entropy) on MNIST normalised with mean 0.1307 and standard
deviation 0.3081, here the 4000 training images of ``mnist5k``. Training follows
:mod:`emulator.models.torch_training` (CPU, one thread, deterministic algorithms,
float64, weights rounded to float32 at the end); the module is read by
``emulator.importers.from_torch`` and the Network's float64 forward pass must agree with
the module in float64 to 1e-10 relative on every train and test sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np

from ..data import DATASETS, Dataset, load_data
from ..importers import from_torch
from ..network import Network
from .cards import card_page, data_rows, mlp_card, provenance_rows, weights_sha256
from .torch_training import AGREEMENT, check_agreement, deterministic, fit, require_torch

__all__ = ["TorchMLPRecipe", "TORCH_MLP_RECIPES", "train_torch_mlp", "torch_mlp_card_markdown"]


@dataclass(frozen=True)
class TorchMLPRecipe:
    """A ReLU multilayer perceptron of ``widths`` trained with SGD and momentum (constant
    learning rate) on ``data``."""

    name: str
    data: str
    widths: tuple[int, ...]
    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    weight_decay: float = 0.0
    seed: int = 0
    note: str = ""

    def module(self):
        """A fresh module (``torch_nets.relu_mlp``; needs the ``torch`` extra)."""
        require_torch()
        from .torch_nets import relu_mlp

        return relu_mlp(self.widths)

    def optimizer(self, torch, parameters, steps: int):
        """SGD with momentum, constant learning rate."""
        return torch.optim.SGD(parameters, lr=self.learning_rate, momentum=self.momentum,
                               weight_decay=self.weight_decay), None

    def fit(self) -> tuple[Network, float]:
        return train_torch_mlp(self)

    def markdown(self, card: dict) -> str:
        return torch_mlp_card_markdown(card)


TORCH_MLP_RECIPES = (
    TorchMLPRecipe("paper-mlp-mnist", "mnist5k", (784, 784, 128, 10), epochs=10, batch_size=64, learning_rate=0.05,
                   momentum=0.9, seed=1234,
                   note="The network of El Arar, Filip, Mary and Riccietti (arXiv 2503.15568) in the setting of their "
                        "released script (784 -> 784 ReLU -> 128 ReLU -> 10, SGD lr 0.05, momentum 0.9, batch 64, "
                        "10 epochs, seed 1234, inputs normalised with mean 0.1307 and std 0.3081), trained on 4000 "
                        "real MNIST digits (mnist5k) instead of the 60000 of MNIST, in float64."),
)


def _logits(network: Network, data: Dataset) -> np.ndarray:
    """The float64 logits (last pre-activation) of ``network`` on ``data``."""
    return network.forward(data.x, return_all=True).preactivations[-1]


def _accuracy(network: Network, data: Dataset) -> float:
    return float(np.mean(network.predict(data.x) == data.y))


def _trainer(recipe: TorchMLPRecipe) -> dict:
    return {"framework": "torch", "module": "emulator.models.torch_nets.relu_mlp", "optimizer": "SGD",
            "learning_rate": recipe.learning_rate, "momentum": recipe.momentum, "weight_decay": recipe.weight_decay,
            "schedule": "constant", "loss": "cross-entropy", "batch_size": recipe.batch_size, "epochs": recipe.epochs,
            "shuffle": "torch.randperm with a generator seeded by seed",
            "dtype": "float64, weights rounded to float32 at the end", "device": "cpu", "threads": 1,
            "deterministic_algorithms": True}


def train_torch_mlp(recipe: TorchMLPRecipe) -> tuple[Network, float]:
    """Train ``recipe`` and convert it; return the network (its card in ``meta``) and the
    training time in seconds."""
    torch = require_torch()
    train_set, test_set = load_data(recipe.data, "train"), load_data(recipe.data, "test")
    with deterministic(torch, recipe.seed):
        module = recipe.module().double()
        start = time.perf_counter()
        final_loss = fit(torch, module, train_set, recipe)
        seconds = time.perf_counter() - start
        module = module.float()
        classes = sorted(int(c) for c in np.unique(train_set.y))
        net = from_torch(module, name=recipe.name)
        net = Network(net.layers, recipe.name, {"classes": classes})
        agreement = check_agreement(torch, recipe.name, lambda data: _logits(net, data), module,
                                    [train_set, test_set])
    card = {
        **mlp_card(net, recipe.data, DATASETS.get(recipe.data).description, train_set, test_set,
                   _accuracy(net, train_set), _accuracy(net, test_set), classes),
        "seed": recipe.seed,
        "trainer": _trainer(recipe),
        "epochs_run": recipe.epochs,
        "final_loss": final_loss,
        "torch_agreement": {"max_relative_difference": agreement, "tolerance": AGREEMENT,
                            "samples": len(train_set) + len(test_set)},
        "versions": {p: version(p) for p in ("numpy", "torch")},
        "weights_sha256": weights_sha256(net),
        "rebuild": f"python -m emulator.models.train --only {recipe.name}",
        "note": recipe.note,
    }
    return Network(net.layers, recipe.name, card), seconds


def torch_mlp_card_markdown(card: dict) -> str:
    """The card of a multilayer perceptron trained with torch, as Markdown."""
    t, agreement = card["trainer"], card["torch_agreement"]
    rows = [
        ("architecture", card["architecture"]),
        ("parameters", str(card["n_params"])),
        *data_rows(card),
        ("trainer", f"torch {t['optimizer']}, lr {t['learning_rate']} ({t['schedule']}), momentum {t['momentum']}, "
                    f"weight decay {t['weight_decay']}, batch {t['batch_size']}, {t['epochs']} epochs, seed "
                    f"{card['seed']}, {t['dtype']}, CPU, one thread, deterministic algorithms"),
        ("final training loss", f"{card['final_loss']:.6g}"),
        ("network vs torch (float64)", f"max relative difference of the logits "
                                       f"{agreement['max_relative_difference']:.3g} over {agreement['samples']} "
                                       f"samples (tolerance {agreement['tolerance']:g})"),
        *provenance_rows(card),
    ]
    layout = ("Weights are float64 holding the released float32 values exactly, stored in the native layout\n"
              "(`layer{k}.weight` out x in, `layer{k}.bias`, `layer{k}.activation`) with this card as the JSON `meta`\n"
              "entry.")
    heading = ("Rebuild (deterministic; needs the `torch` extra; another CPU's kernels may change a weight by one "
               "unit in the last place of float32):")
    return card_page(card, rows, layout, heading)
