"""Do the componentwise bounds hold, how tight are they, and do the condition numbers
predict which components go wrong? Measured against the exact reference, component by
component, layer by layer (docs/method.md#error-measures, docs/method.md#validation).

For layer l and component i of every sample:

* local error |ŷ_i - ỹ_i|: the emulated pre-activation against the exact evaluation of
  the same layer at the same computed input x̂ (``exact_layer``), checked against
  :func:`analysis.bounds.local_bound`;
* global error |ẑ_i - z_i|: the emulated layer output against the exact forward pass from
  the same (storage-rounded) input with the same (storage-rounded) weights
  (``exact_forward``), checked against :func:`analysis.bounds.global_bound` (its
  pre-activation part |ŷ_i - y_i| is checked too).

A violation is certain: the measured error minus the reference's certified radius,
rounded down, exceeds the bound. Relative errors use 0/0 = 0, c/0 = inf. Tightness is
bound / measured (components with a nonzero error). The predicted relative errors are the
paper's first-order kappa_i c u (local) and kappa_sigma kappa_i (c u + eps_in) + u_S
(global, eps_in,i = (|W| P)_i / a_i with P the previous layer's predicted absolute
error); their Spearman rank correlation with the measured relative errors tells whether
the condition numbers rank the components right. Components whose accumulation
overflowed (or whose input did) are not covered by the bounds and are counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from emulator.accumulation import parse_accumulation
from emulator.errors import DataError
from emulator.metrics import accuracy, flip_rate, flipped, predicted_class, ratio
from emulator.reference import exact_forward

from .bounds import ModelConstant, global_bound, local_bound, model_constant, parse_bound
from .conditioning import absolute_sums, activation_derivative
from .distributed import run_tasks
from .summaries import Collector, ErrorSummary, certain_lower, rank_correlation

__all__ = ["validate", "Validation", "LayerValidation", "ErrorSummary", "layer_components", "rank_correlation",
           "LayerComponents"]

DEFAULT_BATCH = 256


@dataclass
class LayerValidation:
    index: int
    inputs: int
    outputs: int
    activation: str
    constant: ModelConstant
    local: ErrorSummary
    global_: ErrorSummary

    def to_dict(self) -> dict:
        return {
            "index": self.index, "inputs": self.inputs, "outputs": self.outputs, "activation": self.activation,
            "constant": self.constant.describe(), "local": self.local.to_dict(), "global": self.global_.to_dict(),
        }


@dataclass
class Validation:
    """What :func:`validate` found: per-layer summaries plus the network-level flip rate
    (fraction of samples whose predicted class differs from the exact pass) and, with
    labels, the accuracy of the emulated and of the exact pass."""

    model: str
    samples: int
    accumulation: dict
    storage: "str | None"
    bound: str
    layers: list
    flips: int
    flip_rate: float
    accuracy: "float | None" = None
    exact_accuracy: "float | None" = None
    data: "str | None" = None
    bound_assumption: "str | None" = None

    @property
    def violations_local(self) -> int:
        return sum(layer.local.violations for layer in self.layers)

    @property
    def violations_global(self) -> int:
        return sum(layer.global_.violations for layer in self.layers)

    @property
    def violations(self) -> int:
        return self.violations_local + self.violations_global

    @property
    def failure_probability(self) -> float:
        """Upper bound on the probability that a component's bound fails (the largest over
        layers, local and global; 0 for deterministic bounds)."""
        return max(max(layer.local.failure_probability, layer.global_.failure_probability) for layer in self.layers)

    @property
    def vacuous_layers(self) -> list[int]:
        """Layers whose local bound is vacuous (c >= 1)."""
        return [layer.index for layer in self.layers if layer.local.vacuous]

    @property
    def output(self) -> ErrorSummary:
        """Global errors of the network output (the last layer)."""
        return self.layers[-1].global_

    def to_dict(self) -> dict:
        return {
            "model": self.model, "data": self.data, "samples": self.samples, "accumulation": self.accumulation,
            "storage": self.storage, "bound": self.bound, "bound_assumption": self.bound_assumption,
            "failure_probability": self.failure_probability, "vacuous_layers": self.vacuous_layers,
            "violations": self.violations,
            "violations_local": self.violations_local, "violations_global": self.violations_global,
            "flips": self.flips, "flip_rate": self.flip_rate, "accuracy": self.accuracy,
            "exact_accuracy": self.exact_accuracy, "layers": [layer.to_dict() for layer in self.layers],
        }


@dataclass
class LayerComponents:
    """One layer's components on a batch, as :func:`validate` measures them ((S, m) arrays):
    ``y_hat``/``z_hat`` the emulated pre-activation and output; ``pre``/``pre_radius`` the
    exact pre-activation at the computed input and its certified radius; the local bound
    and first-order prediction c u kappa^_i; ``covered`` (no overflow here or upstream);
    the global bounds ``global_pre``/``global_bound`` on |y^ - y| and |z^ - z| and the
    propagated prediction |sigma'(y^)| (c u a^ + |W| P) / |sigma(y^)| (+ u_S); and
    ``pre_violation``, where |y^ - y| certainly exceeds ``global_pre``."""

    y_hat: np.ndarray
    z_hat: np.ndarray
    pre: np.ndarray
    pre_radius: np.ndarray
    local_bound: np.ndarray
    local_capped: np.ndarray
    local_predicted: np.ndarray
    covered: np.ndarray
    global_pre: np.ndarray
    global_bound: np.ndarray
    global_capped: np.ndarray
    global_predicted: np.ndarray
    global_covered: np.ndarray
    pre_violation: np.ndarray


def layer_components(rounded, run, ref, accumulation, spec, storage, precision: int = 113,
                     constants=None, input_bound=None) -> Iterator[LayerComponents]:
    """Yield :class:`LayerComponents` for every layer of the (storage-rounded) network
    ``rounded``, from its emulated run (``forward(..., return_all=True)``) and the exact
    forward pass ``ref`` of the same input; layer k's bounds propagate into layer k+1.
    ``input_bound`` bounds |x̂ - x| of the run's input (None: the reference shares it);
    with it, ``rounded`` may be the last layers of a network, ``run`` their pass from a
    computed input and ``ref`` the exact pass of the whole network from those layers on."""
    from emulator.reference import exact_layer

    if constants is None:
        constants = [model_constant(accumulation, l.n_inputs, l.bias is not None, spec) for l in rounded.layers]
    u_store = storage.fmt.u if storage is not None else 0.0
    x_hat = run.input
    in_ok = np.all(np.isfinite(x_hat), axis=1)
    predicted_in = None
    for k, (layer, c) in enumerate(zip(rounded.layers, constants)):
        y_hat, z_hat = np.asarray(run.preactivations[k]), np.asarray(run.outputs[k])
        safe_x = np.where(in_ok[:, None], x_hat, 0.0)
        pre, pre_radius, _, _ = exact_layer(safe_x, layer, precision)
        covered = in_ok[:, None] & ~np.asarray(run.overflow[k], dtype=bool) & np.isfinite(y_hat)
        bnd, bnd_capped = local_bound(safe_x, layer.weight, layer.bias, accumulation, spec, return_capped=True)
        a_hat = absolute_sums(safe_x, layer.weight, layer.bias)
        g = global_bound(y_hat, bnd, layer.weight, layer.activation, input_bound, storage)
        with np.errstate(all="ignore"):
            v = layer.activation.f(np.where(np.isfinite(y_hat), y_hat, 0.0))
            spread = c.first_order * a_hat
            if predicted_in is not None:
                spread = spread + predicted_in @ np.abs(layer.weight).T
            predicted_abs = np.abs(activation_derivative(layer.activation, y_hat)) * spread + u_store * np.abs(v)
        g_covered = covered & np.isfinite(g.out)
        yield LayerComponents(
            y_hat=y_hat, z_hat=z_hat, pre=pre, pre_radius=pre_radius, local_bound=bnd, local_capped=bnd_capped,
            local_predicted=c.first_order * ratio(a_hat, y_hat), covered=covered, global_pre=g.pre,
            global_bound=g.out, global_capped=g.capped, global_predicted=ratio(predicted_abs, v), global_covered=g_covered,
            pre_violation=certain_lower(y_hat, ref.preactivations[k], ref.pre_radius[k]) > g.pre,
        )
        in_ok = in_ok & np.all(np.isfinite(z_hat), axis=1)
        x_hat, input_bound, predicted_in = z_hat, np.where(g_covered, g.out, np.inf), predicted_abs


@dataclass
class _ValidationJob:
    """What every batch of :func:`validate` shares (scattered once to a cluster's workers)."""

    net: object
    rounded: object
    accumulation: object
    spec: object
    storage: object
    precision: int
    constants: list
    failures: list


def _validate_batch(job: _ValidationJob, batch: tuple) -> tuple:
    """(local and global collectors per layer, computed and exact classes) of the batch
    (start, x) whose first sample is sample ``start`` of the data."""
    start, xb = batch
    vacuous = [c.vacuous for c in job.constants]
    local = [Collector(f[0], v) for f, v in zip(job.failures, vacuous)]
    glob = [Collector(f[1], any(vacuous[:k + 1])) for k, f in enumerate(job.failures)]
    run = job.net.forward(xb, acc=job.accumulation, storage=job.storage, return_all=True, first_sample=start)
    ref = exact_forward(job.rounded, run.input, job.precision)
    for k, lb in enumerate(layer_components(job.rounded, run, ref, job.accumulation, job.spec, job.storage,
                                            job.precision, job.constants)):
        local[k].add(start, lb.y_hat, lb.pre, lb.pre_radius, lb.local_bound, lb.local_predicted, lb.covered,
                     lb.local_capped)
        glob[k].add(start, lb.z_hat, ref.outputs[k], ref.out_radius[k], lb.global_bound, lb.global_predicted,
                    lb.global_covered, lb.global_capped, extra_violation=lb.pre_violation)
    return local, glob, predicted_class(run.preactivations[-1]), predicted_class(ref.preactivations[-1])


def validate(network, x, acc, bound="deterministic", storage=None, *, labels=None, batch_size: int = DEFAULT_BATCH,
             precision: int = 113, data_name: "str | None" = None) -> Validation:
    """Measure every layer's local and global errors of ``network`` on inputs ``x``
    (N, n) under accumulation ``acc`` (spec or row), against the exact reference, and
    check them against the ``bound`` ("deterministic" or "probabilistic:LAMBDA"). A
    graph (``x`` its named inputs or a Dataset, ``acc`` a spec or an accumulation plan)
    goes to :func:`analysis.graph_validation.validate_graph`.

    ``storage`` (a format, ``FMT:saturate`` or None) rounds weights, biases, the input
    and every layer output, as ``Network.forward`` does; the reference uses the same
    rounded weights and input. ``labels`` (N,) adds accuracies. Samples are processed in
    batches of ``batch_size``, each a task of the current executor
    (``analysis.distributed``), folded in sample order (docs/method.md#scale-out).
    """
    from emulator.modelio import load_model
    from emulator.network import layer_storage

    from emulator.graph import Graph

    net = load_model(network) if isinstance(network, str) else network
    if isinstance(net, Graph):
        from .graph_validation import GRAPH_BATCH, validate_graph

        return validate_graph(net, x, acc, bound, storage, labels=labels,
                              batch_size=min(batch_size, GRAPH_BATCH), data_name=data_name)
    x = x.x if hasattr(x, "feeds") else x
    accumulation = parse_accumulation(acc)
    spec = parse_bound(bound)
    st = layer_storage(storage)
    xs = net.check_input(x)
    if labels is not None and len(labels) != xs.shape[0]:
        raise DataError(f"labels has {len(labels)} entries but x has {xs.shape[0]} samples.")
    if batch_size < 1:
        raise DataError(f"batch_size == {batch_size}, must be >= 1.")
    rounded = net.with_storage(st)
    constants = [model_constant(accumulation, l.n_inputs, l.bias is not None, spec) for l in rounded.layers]
    failures, upstream = [], 0.0
    for layer, c in zip(rounded.layers, constants):
        failures.append((c.failure, min(1.0, upstream + c.failure)))
        upstream += layer.n_outputs * c.failure
    job = _ValidationJob(net, rounded, accumulation, spec, st, precision, constants, failures)
    starts = range(0, xs.shape[0], batch_size)
    parts = run_tasks(_validate_batch, job, [(start, xs[start:start + batch_size]) for start in starts],
                      desc=f"validate {accumulation.spec}")
    local, glob = parts[0][0], parts[0][1]
    for later in parts[1:]:
        for collectors, more in zip((local, glob), later[:2]):
            for c, m in zip(collectors, more):
                c.merge(m)
    got, want = np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts])
    classes = net.meta.get("classes")
    n = xs.shape[0]
    flips = flipped(got, want)
    layers = [
        LayerValidation(k, l.n_inputs, l.n_outputs, l.activation.name, c, local[k].summary(),
                        glob[k].summary("preactivation_violations"))
        for k, (l, c) in enumerate(zip(rounded.layers, constants))
    ]
    return Validation(
        model=net.name, samples=n, accumulation=accumulation.describe(), storage=st.spec if st else None,
        bound=spec.spec, bound_assumption=spec.assumption, layers=layers, flips=int(flips.sum()), flip_rate=flip_rate(got, want),
        accuracy=None if labels is None else accuracy(got, labels, classes),
        exact_accuracy=None if labels is None else accuracy(want, labels, classes), data=data_name,
    )
