"""The network-level metrics that fit a model (docs/method.md#error-measures): a classifier
is scored by its predicted classes (flips, accuracy) and the KL divergence of its output
distributions, an embedding model by cosine similarity and nearest-neighbour changes."""

from __future__ import annotations

import numpy as np

from emulator.graph import Graph
from emulator.metrics import (accuracy, cosine_similarity, flip_rate, flipped, kl_divergence, neighbour_flips,
                              predicted_class)
from emulator.network import Network

__all__ = ["TASKS", "model_task", "TaskScores"]

TASKS = ("classification", "embedding", "other")


def model_task(model: "Network | Graph", labels=None) -> str:
    """``meta["task"]`` when the model states it; else classification for a model with
    ``classes`` (or labelled data), embedding for an output named ``*embedding*``, else
    other."""
    task = model.meta.get("task")
    if task in TASKS:
        return task
    if model.meta.get("classes") is not None or labels is not None:
        return "classification"
    outputs = model.graph.outputs if isinstance(model, Network) else model.outputs
    return "embedding" if any("embedding" in name for name in outputs) else "other"


class TaskScores:
    """The network-level metrics of a task, gathered batch by batch: for a classifier the
    classes decided on computed and exact logits and the KL divergence of their softmax
    distributions; for an embedding model the embeddings (the neighbour metric needs
    every sample)."""

    def __init__(self, task: str, classes=None):
        self.task, self.classes = task, classes
        self.got, self.want, self.kl, self.emb, self.emb_exact = [], [], [], [], []

    def add(self, computed: np.ndarray, exact: np.ndarray) -> None:
        """One batch of the scored tensor (logits or embeddings), computed and exact."""
        z = np.asarray(computed, dtype=np.float64).reshape(computed.shape[0], -1)
        ze = np.asarray(exact, dtype=np.float64).reshape(exact.shape[0], -1)
        if self.task == "classification":
            self.got.append(predicted_class(z))
            self.want.append(predicted_class(ze))
            self.kl.append(kl_divergence(z, ze))
        elif self.task == "embedding":
            self.emb.append(z)
            self.emb_exact.append(ze)

    def merge(self, later: "TaskScores") -> "TaskScores":
        """Fold in the scores of later batches."""
        for name in ("got", "want", "kl", "emb", "emb_exact"):
            getattr(self, name).extend(getattr(later, name))
        return self

    def metrics(self, labels=None) -> dict:
        if self.task == "classification":
            got, want, kl = np.concatenate(self.got), np.concatenate(self.want), np.concatenate(self.kl)
            return {"accuracy": None if labels is None else accuracy(got, labels, self.classes),
                    "exact_accuracy": None if labels is None else accuracy(want, labels, self.classes),
                    "flips": int(flipped(got, want).sum()), "flip_rate": flip_rate(got, want),
                    "kl_mean": float(np.mean(kl)), "kl_max": float(np.max(kl))}
        if self.task == "embedding":
            e, ee = np.concatenate(self.emb), np.concatenate(self.emb_exact)
            cos, nf = cosine_similarity(e, ee), neighbour_flips(e, ee)
            return {"cosine_min": float(np.min(cos)), "cosine_median": float(np.median(cos)),
                    "neighbour_flips": int(nf.sum()), "neighbour_flip_rate": float(np.mean(nf))}
        return {}
