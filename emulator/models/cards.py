"""Model cards: the sha256 fingerprints that pin a card to its weights and to the data it
was measured on, and the card's Markdown page."""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from ..graph.ir import Graph
from ..network import Network

__all__ = ["weights_sha256", "data_sha256", "card_page", "data_rows", "provenance_rows", "mlp_card", "MLP_OUTPUT"]

MLP_OUTPUT = "logits (identity output layer; the classifier's softmax is left out, argmax is unchanged)"


def weights_sha256(model: "Network | Graph") -> str:
    """sha256 of the weights as float64 little-endian bytes: a network's weights and biases
    in layer order; a graph's floating-point initialisers in name order, each preceded by
    its name (UTF-8) and a NUL byte."""
    h = hashlib.sha256()
    if isinstance(model, Graph):
        for name in sorted(model.initializers):
            a = model.initializers[name]
            if a.dtype == np.float64:
                h.update(name.encode("utf-8") + b"\0")
                h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
        return h.hexdigest()
    for layer in model.layers:
        for a in (layer.weight, layer.bias):
            if a is not None:
                h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
    return h.hexdigest()


def data_sha256(x: np.ndarray) -> str:
    """sha256 of a data array (float64, little-endian, C order): pins the data a card was measured on."""
    return hashlib.sha256(np.ascontiguousarray(x, dtype="<f8").tobytes()).hexdigest()


def card_page(card: dict, rows: Sequence[tuple[str, str]], layout: str, rebuild_heading: str) -> str:
    """The Markdown page of a card: title, note, a two-column table of ``rows``, the
    paragraph ``layout`` (how the file stores the model) and the rebuild command."""
    lines = [
        f"# {card['name']}", "",
        card["note"] + "\n" if card["note"] else "",
        "| | |", "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows),
        "",
        layout,
        "",
        rebuild_heading,
        "",
        "```",
        card["rebuild"],
        "```",
        "",
    ]
    return "\n".join(lines)


def data_rows(card: dict) -> list[tuple[str, str]]:
    """The rows of every card about its data, accuracies and output."""
    return [
        ("data", f"`{card['default_data']}`: {card['data']}"),
        ("train / test size", f"{card['train_size']} / {card['test_size']}"),
        ("train accuracy (float64)", f"{card['train_accuracy']:.4f}"),
        ("test accuracy (float64)", f"{card['test_accuracy']:.4f}"),
        ("output", card["output"]),
    ]


def provenance_rows(card: dict) -> list[tuple[str, str]]:
    """The rows of every card that pin it: package versions and fingerprints."""
    return [
        ("versions", ", ".join(f"{k} {v}" for k, v in card["versions"].items())),
        ("weights sha256", f"`{card['weights_sha256']}`"),
        ("test data sha256", f"`{card['test_data_sha256']}`"),
    ]


def mlp_card(net: Network, data: str, description: str, train_set, test_set, train_accuracy: float,
             test_accuracy: float, classes) -> dict:
    """The facts every multilayer perceptron's card opens with: its shape, its data and
    its float64 accuracies."""
    return {
        "name": net.name,
        "architecture": net.architecture,
        "widths": net.widths,
        "activations": [l.activation.name for l in net.layers],
        "n_params": net.n_params,
        "default_data": data,
        "data": description,
        "train_size": len(train_set),
        "test_size": len(test_set),
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "test_data_sha256": data_sha256(test_set.x),
        "classes": classes,
        "output": MLP_OUTPUT,
    }
