"""Per-component errors, bounds and condition numbers for the report's scatter plots and
histograms, on a few samples.

:func:`analysis.validation.validate` keeps only per-layer summaries; the figures need
the components themselves. This evaluates them on the first samples with the very
functions ``validate`` calls, in the same order (emulated forward pass, exact reference,
``local_bound``, ``global_bound``, the first-order predictions), so every drawn point is
a component ``validate`` measured; ``tests/test_report.py`` holds the two together.

For layer k, with ŷ the emulated pre-activation, ẑ the layer output, x̂ its computed input:

* local: |ŷ_i - ỹ_i| against ``local_bound``; predicted relative error c u kappa^_i,
  kappa^_i = a_i(x̂) / |ŷ_i|;
* global: |ẑ_i - z_i| against ``global_bound``; predicted |sigma'(ŷ_i)| (c u a_i(x̂) +
  (|W| P)_i) / |sigma(ŷ_i)| (+ u_S), P the previous layer's predicted absolute error;
* kappa_i = a_i(x) / |y_i| and kappa_sigma(y_i) at the exact forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.accumulation import parse_accumulation
from emulator.network import Network, parse_storage

from ..bounds import global_bound, local_bound, model_constant, parse_bound
from ..conditioning import absolute_sums, activation_condition, activation_derivative, ratio

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
    from emulator.reference import exact_forward, exact_layer

    accumulation = parse_accumulation(acc)
    spec = parse_bound(bound)
    st = parse_storage(storage)
    rounded = network.with_storage(st)
    run = network.forward(network.check_input(x), acc=accumulation, storage=st, return_all=True)
    ref = exact_forward(rounded, run.input, precision)
    u_store = st.fmt.u if st is not None else 0.0
    x_hat, x_exact = run.input, run.input
    in_ok = np.ones(x_hat.shape[0], dtype=bool)
    input_bound = predicted_in = None
    out = []
    for k, layer in enumerate(rounded.layers):
        c = model_constant(accumulation, layer.n_inputs, layer.bias is not None, spec)
        y_hat, z_hat = np.asarray(run.preactivations[k]), np.asarray(run.outputs[k])
        safe_x = np.where(in_ok[:, None], x_hat, 0.0)
        pre = exact_layer(safe_x, layer, precision)[0]
        covered = in_ok[:, None] & ~np.asarray(run.overflow[k], dtype=bool) & np.isfinite(y_hat)
        local = local_bound(safe_x, layer.weight, layer.bias, accumulation, spec)
        a_hat = absolute_sums(safe_x, layer.weight, layer.bias)
        g = global_bound(y_hat, local, layer.weight, layer.activation, input_bound, st)
        with np.errstate(all="ignore"):
            v = layer.activation.f(np.where(np.isfinite(y_hat), y_hat, 0.0))
            spread = c.first_order * a_hat if predicted_in is None else c.first_order * a_hat + predicted_in @ np.abs(layer.weight).T
            predicted_abs = np.abs(activation_derivative(layer.activation, y_hat)) * spread + u_store * np.abs(v)
        g_covered = covered & np.isfinite(g.out)
        local_abs = np.abs(y_hat - pre)
        global_abs = np.abs(z_hat - ref.outputs[k])
        y_exact = np.asarray(ref.preactivations[k])
        out.append(LayerComponents(
            local={"abs_error": local_abs, "rel_error": ratio(local_abs, pre), "bound": local,
                   "predicted": c.first_order * ratio(a_hat, y_hat), "covered": covered},
            global_={"abs_error": global_abs, "rel_error": ratio(global_abs, ref.outputs[k]), "bound": g.out,
                     "predicted": ratio(predicted_abs, v), "covered": g_covered},
            kappa=ratio(absolute_sums(x_exact, layer.weight, layer.bias), y_exact),
            kappa_sigma=activation_condition(layer.activation, y_exact),
        ))
        in_ok = in_ok & np.all(np.isfinite(z_hat), axis=1)
        x_hat, input_bound, predicted_in = z_hat, np.where(g_covered, g.out, np.inf), predicted_abs
        x_exact = np.asarray(ref.outputs[k])
    return out
