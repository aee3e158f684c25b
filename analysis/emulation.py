"""One emulated forward pass scored against the exact one (``mixacc emulate``): accuracy,
flip rate and output error, with the metrics of ``emulator.metrics``
(docs/method.md#error-measures).

The emulated pass runs ``Network.forward(x, acc, storage)``; the exact pass uses the same
storage-rounded weights and input and never rounds between layers. Samples go through in
batches, so memory stays that of one batch unless every layer's values are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.accumulation import Accumulation, parse_accumulation
from emulator.metrics import accuracy, flip_rate, flipped, predicted_class, relative_error
from emulator.network import Network
from emulator.storage import parse_storage

from .progress import progress
from .validation import DEFAULT_BATCH

__all__ = ["Emulation", "emulate"]


@dataclass
class Emulation:
    """The result of :func:`emulate`. ``layers`` (when kept) maps
    ``layer{k}.preactivation`` / ``layer{k}.output`` to (N, m_k) float64 arrays."""

    model: str
    architecture: str
    samples: int
    accumulation: Accumulation
    storage: "str | None"
    accuracy: "float | None"
    exact_accuracy: "float | None"
    flips: int
    flip_rate: float
    overflow_components: int
    max_abs_error: float
    max_rel_error: float
    median_abs_error: float
    median_rel_error: float
    layers: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "architecture": self.architecture, "samples": self.samples,
            "accumulation": self.accumulation.describe(), "storage": self.storage, "accuracy": self.accuracy,
            "exact_accuracy": self.exact_accuracy, "flips": self.flips, "flip_rate": self.flip_rate,
            "overflow_components": self.overflow_components,
            "output_error": {"max_abs": self.max_abs_error, "max_rel": self.max_rel_error,
                             "median_rel": self.median_rel_error, "median_abs": self.median_abs_error},
        }


def emulate(network: Network, x, acc, storage=None, *, labels=None, keep_layers: bool = False,
            batch_size: int = DEFAULT_BATCH, precision: int = 113) -> Emulation:
    """Run ``network`` on ``x`` under accumulation ``acc`` (spec or row) and storage
    ``storage``, and score its output against the exact forward pass: classes decided on
    the logits, relative errors of the output components (0/0 = 0, c/0 = inf, NaN = inf).
    ``labels`` adds accuracies; ``keep_layers`` keeps every layer's values."""
    from emulator.reference import exact_forward

    a = parse_accumulation(acc)
    st = parse_storage(storage)
    xs = network.check_input(x)
    rounded = network.with_storage(st)
    kept: dict[str, list] = {}
    abs_err, rel_err, got, want, overflow = [], [], [], [], 0
    starts = range(0, xs.shape[0], batch_size)
    for start in progress(starts, desc=f"emulate {a.spec}", total=len(starts)):
        run = network.forward(xs[start:start + batch_size], acc=a, storage=st, return_all=True)
        ref = exact_forward(rounded, run.input, precision)
        for k in range(len(network.layers)):
            overflow += int(np.asarray(run.overflow[k]).sum())
            if keep_layers:
                kept.setdefault(f"layer{k}.preactivation", []).append(np.asarray(run.preactivations[k]))
                kept.setdefault(f"layer{k}.output", []).append(np.asarray(run.outputs[k]))
        z, z_ref = np.asarray(run.outputs[-1]), np.asarray(ref.outputs[-1])
        with np.errstate(invalid="ignore"):
            abs_err.append(np.where(z == z_ref, 0.0, np.abs(z - z_ref)))
        rel_err.append(relative_error(z, z_ref))
        got.append(predicted_class(run.preactivations[-1]))
        want.append(predicted_class(ref.preactivations[-1]))
    abs_err, rel_err = np.nan_to_num(np.concatenate(abs_err), nan=np.inf), np.concatenate(rel_err)
    got, want = np.concatenate(got), np.concatenate(want)
    classes = network.meta.get("classes")
    return Emulation(
        model=network.name, architecture=network.architecture, samples=xs.shape[0], accumulation=a,
        storage=st.spec if st else None,
        accuracy=None if labels is None else accuracy(got, labels, classes),
        exact_accuracy=None if labels is None else accuracy(want, labels, classes),
        flips=int(flipped(got, want).sum()), flip_rate=flip_rate(got, want), overflow_components=overflow,
        max_abs_error=float(np.max(abs_err)), max_rel_error=float(np.max(rel_err)),
        median_abs_error=float(np.median(abs_err)), median_rel_error=float(np.median(rel_err)),
        layers={k: np.concatenate(v) for k, v in kept.items()},
    )
