"""Per-component errors, bounds and condition numbers for the report's scatter plots and
histograms, on a few samples.

:func:`analysis.validation.validate` keeps only per-layer summaries; the figures need
the components themselves. They come from :func:`analysis.validation.layer_components`,
the very per-layer computation ``validate`` aggregates, so every drawn point is a
component ``validate`` measured. For layer k this adds the absolute and relative errors
(local: |ŷ_i - ỹ_i|; global: |ẑ_i - z_i|) and, at the exact forward pass,
kappa_i = a_i(x) / |y_i| and kappa_sigma(y_i).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.accumulation import parse_accumulation
from emulator.network import Network
from emulator.storage import parse_storage

from ..bounds import parse_bound
from ..conditioning import absolute_sums, activation_condition, ratio
from ..validation import layer_components

__all__ = ["LayerComponents", "component_errors"]


@dataclass(frozen=True)
class LayerComponents:
    """(S, m) arrays of one layer. ``local``/``global_`` map abs_error, rel_error, bound,
    predicted to arrays, and ``covered`` to the mask of components the bound applies to
    (no overflow here or upstream, a finite bound)."""

    local: dict
    global_: dict
    kappa: np.ndarray
    kappa_sigma: np.ndarray


def component_errors(network: Network, x, acc, bound="deterministic", storage=None,
                     precision: int = 113) -> list[LayerComponents]:
    """Every component of every layer of ``network`` on inputs ``x`` under accumulation
    ``acc``: measured errors, bounds and predictions as ``validate`` computes them."""
    from emulator.reference import exact_forward

    accumulation = parse_accumulation(acc)
    st = parse_storage(storage)
    rounded = network.with_storage(st)
    run = network.forward(network.check_input(x), acc=accumulation, storage=st, return_all=True)
    ref = exact_forward(rounded, run.input, precision)
    x_exact = run.input
    out = []
    layers = layer_components(rounded, run, ref, accumulation, parse_bound(bound), st, precision)
    for k, (layer, lb) in enumerate(zip(rounded.layers, layers)):
        local_abs = np.abs(lb.y_hat - lb.pre)
        global_abs = np.abs(lb.z_hat - ref.outputs[k])
        y_exact = np.asarray(ref.preactivations[k])
        out.append(LayerComponents(
            local={"abs_error": local_abs, "rel_error": ratio(local_abs, lb.pre), "bound": lb.local_bound,
                   "predicted": lb.local_predicted, "covered": lb.covered},
            global_={"abs_error": global_abs, "rel_error": ratio(global_abs, ref.outputs[k]),
                     "bound": lb.global_bound, "predicted": lb.global_predicted, "covered": lb.global_covered},
            kappa=ratio(absolute_sums(x_exact, layer.weight, layer.bias), y_exact),
            kappa_sigma=activation_condition(layer.activation, y_exact),
        ))
        x_exact = np.asarray(ref.outputs[k])
    return out
