"""Networks: a chain of layers z = sigma(W x + b) and their forward pass under any
arithmetic.

Layer l computes the pre-activation y_l = W_l z_{l-1} + b_l (W_l of shape (m, n), the
PyTorch convention) and the output z_l = sigma_l(y_l), sigma applied in float64. The sum
W x + b is evaluated

* natively (``acc=None``): float64 ``x @ W.T + b``;
* emulated (an accumulation spec such as ``"fp16"`` or an
  :class:`~emulator.accumulation.Accumulation`): ``emulator.linear.linear``, every
  addition rounded to the accumulator format;
* exactly (``acc="exact"``): the reference ``emulator.reference.exact_forward``, which
  never rounds between layers and returns the float64 nearest to each exact value;
* per layer (a list of specs, one per layer): each layer as above, an ``exact`` entry
  giving the correctly rounded exact W x̂ + b at that layer's computed input.

A storage format ``FMT`` (or ``FMT:saturate``) rounds the weights, the biases and the
network input to FMT first; every layer's output is then rounded to FMT too, except in
the exact pass (and exact layers), which use the same rounded weights and input but never
round between layers. A layer applies its activation to the accumulator's value (a fused
layer writes no sum out), so a storage that stores sums (``FMT:sums``, for graphs) is
refused.
"""

from __future__ import annotations

from functools import cached_property
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from .accumulation import Accumulation, parse_accumulation
from .arrays import real_array
from .activations import Activation, get_activation
from .errors import FormatSpecError, MixaccError, ModelFileError, ShapeError
from .formats import Format
from .metrics import class_labels, predicted_class
from .reference import exact_forward
from .storage import Storage, parse_storage

__all__ = ["Layer", "Network", "ForwardResult", "layer_storage"]


def layer_storage(storage: "str | Format | Storage | None") -> "Storage | None":
    """``storage`` parsed for the layers of an MLP, refusing ``:sums``: a layer's
    activation reads its accumulator, no sum of an MLP is stored."""
    st = parse_storage(storage)
    if st is not None and st.sums:
        raise FormatSpecError(f"Storage {st.spec!r}: ':sums' stores the outputs of a graph's sum operators; an MLP "
                              "layer applies its activation to the accumulator (use the storage without ':sums').")
    return st


class Layer:
    """One layer z = sigma(W x + b): ``weight`` (m, n), ``bias`` (m,) or None, and an
    activation (a row of ``emulator.activations`` or anything ``get_activation`` takes).
    Arrays are copied to read-only float64; ``where`` prefixes error messages."""

    __slots__ = ("weight", "bias", "activation")

    def __init__(self, weight, bias, activation: "Activation | str", *, where: str = "layer"):
        w = real_array(weight, f"{where}.weight", ndim=2, finite=True, copy=True, readonly=True)
        if w.size == 0:
            raise ShapeError(f"{where}.weight has shape {w.shape}; a layer needs at least one input and one output.")
        b = None if bias is None else real_array(bias, f"{where}.bias", ndim=1, finite=True, copy=True, readonly=True)
        if b is not None and b.shape[0] != w.shape[0]:
            raise ShapeError(f"{where}.bias has length {b.shape[0]}, but the weight has {w.shape[0]} rows.")
        try:
            act = get_activation(activation)
        except MixaccError as exc:
            raise ModelFileError(f"{where}.activation: {exc}") from None
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "activation", act)

    def __setattr__(self, name, value):
        raise AttributeError("Layer is immutable; build a new one")

    def __reduce__(self):
        """Pickled as its arrays and activation name (a copy for another process)."""
        return Layer, (self.weight, self.bias, self.activation.name)

    @property
    def n_inputs(self) -> int:
        return self.weight.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.weight.shape[0]

    def __repr__(self) -> str:
        bias = "bias" if self.bias is not None else "no bias"
        return f"Layer({self.n_inputs} -> {self.n_outputs}, {bias}, {self.activation.name})"


class ForwardResult(NamedTuple):
    """Every layer of one forward pass: ``preactivations[l]`` = y_l, ``outputs[l]`` =
    z_l = sigma(y_l) (rounded to storage when set), ``overflow[l]`` = components whose
    accumulation overflowed or is not finite, and ``input`` = the network input as the
    pass used it (after storage rounding)."""

    preactivations: list
    outputs: list
    overflow: list
    input: np.ndarray


class Network:
    """A chain of :class:`Layer` whose shapes fit: layer l + 1 takes as many inputs as
    layer l gives. ``meta`` carries what the model file says about itself (for bundled
    models at least ``default_data`` and ``test_accuracy``)."""

    def __init__(self, layers: Sequence[Layer], name: str = "", meta: "dict | None" = None, *, where: str = "network"):
        layers = tuple(layers)
        if not layers:
            raise ShapeError(f"{where} has no layers.")
        for k, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ModelFileError(f"{where}: layer {k} is a {type(layer).__name__}, expected emulator.Layer.")
        for k in range(1, len(layers)):
            if layers[k].n_inputs != layers[k - 1].n_outputs:
                raise ShapeError(
                    f"{where}: layer{k}.weight takes {layers[k].n_inputs} inputs but layer{k - 1} gives "
                    f"{layers[k - 1].n_outputs} outputs (shapes do not chain)."
                )
        self.layers = layers
        self.name = str(name)
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, k: int) -> Layer:
        return self.layers[k]

    @property
    def n_inputs(self) -> int:
        return self.layers[0].n_inputs

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_outputs

    @property
    def widths(self) -> list[int]:
        """[n_0, n_1, ..., n_L]: the input width then each layer's output width."""
        return [self.n_inputs, *(layer.n_outputs for layer in self.layers)]

    @property
    def n_params(self) -> int:
        return sum(layer.weight.size + (0 if layer.bias is None else layer.bias.size) for layer in self.layers)

    @property
    def architecture(self) -> str:
        """E.g. ``40 -> 784 relu -> 10 identity``."""
        return " -> ".join([str(self.n_inputs), *(f"{l.n_outputs} {l.activation.name}" for l in self.layers)])

    def describe(self) -> dict:
        """JSON-ready summary: name, widths, activations, parameter count, meta."""
        return {
            "name": self.name, "architecture": self.architecture, "widths": self.widths,
            "activations": [l.activation.name for l in self.layers],
            "bias": [l.bias is not None for l in self.layers], "n_params": self.n_params, "meta": self.meta,
        }

    def __repr__(self) -> str:
        return f"Network({self.name!r}: {self.architecture})"

    def check_input(self, x) -> np.ndarray:
        """``x`` as a fresh float64 (N, n_inputs) array (a single (n_inputs,) sample becomes
        one row), checked by :func:`emulator.arrays.real_array` (finite real numbers); a
        width that does not match raises :class:`ShapeError`."""
        a = real_array(x, "Input data", ndim=(1, 2), finite=True, copy=True)
        if a.shape[-1] != self.n_inputs:
            label = f"model {self.name!r}" if self.name else "the model"
            raise ShapeError(f"Input data has {a.shape[-1]} features but {label} takes {self.n_inputs} inputs.")
        return a.reshape(1, -1) if a.ndim == 1 else a

    def with_storage(self, storage: "str | Format | Storage | None") -> "Network":
        """A copy whose weights and biases are rounded to the storage format (nearest;
        saturating for ``FMT:saturate``); ``meta['storage']`` records it."""
        st = parse_storage(storage)
        if st is None:
            return self
        layers = []
        for k, layer in enumerate(self.layers):
            where = f"{self.name}: layer{k}" if self.name else f"layer{k}"
            w = st.round_finite(layer.weight, f"{where}.weight")
            b = None if layer.bias is None else st.round_finite(layer.bias, f"{where}.bias")
            layers.append(Layer(w, b, layer.activation, where=where))
        return Network(layers, self.name, {**self.meta, "storage": st.spec})

    def prepare(self, x, storage=None) -> "tuple[Network, np.ndarray, Storage | None]":
        """What every forward pass starts from: (this network with its weights and biases
        rounded to ``storage``, the checked (N, n) input rounded to it, the parsed
        storage). Weights or input that overflow a storage format without ``:saturate``
        raise :class:`FormatSpecError`."""
        xs = self.check_input(x)
        st = layer_storage(storage)
        if st is not None:
            xs = st.round_finite(xs, "input data")
        return self.with_storage(st), xs, st

    @cached_property
    def graph(self):
        """This network as a graph (``emulator.graph.convert.network_to_graph``): one
        Gemm site ``layer{k}`` and one activation per layer."""
        from .graph.convert import network_to_graph

        return network_to_graph(self)

    def _plan(self, acc):
        """The accumulation plan of ``acc``: None, one spec (``exact`` runs the reference),
        or one entry per layer (sites ``layer{k}``)."""
        if isinstance(acc, (list, tuple)):
            if len(acc) != len(self):
                raise ShapeError(f"Per-layer accumulation list has {len(acc)} entries but {self!r} has {len(self)} layers.")
            return {f"layer{k}": a for k, a in enumerate(acc)}
        return None if acc is None else parse_accumulation(acc)

    def forward(self, x, acc=None, storage=None, return_all: bool = False, first_sample: int = 0):
        """The forward pass z_L = sigma_L(W_L ... sigma_1(W_1 x + b_1) ... + b_L), run by
        the graph engine (``emulator.graph.engine``) on :attr:`graph`.

        ``acc``: None (native float64), an accumulation spec or row (``"exact"`` runs the
        reference), or a list with one per layer (an ``exact`` entry gives the correctly
        rounded W x̂ + b at that layer's computed input). ``storage``: see the module
        docstring. ``first_sample``: the global index of x's first row (stochastic rounding
        keys its bits by it, so a batch draws the bits of its rows in the whole data). Returns z_L with the shape of ``x`` ((N, m) or (m,)), or with
        ``return_all`` a :class:`ForwardResult` of every layer.
        """
        from .graph.convert import layer_tensors
        from .graph.engine import make_arithmetic, run_graph

        single = np.ndim(x) == 1
        net, xs, st = self.prepare(x, storage)
        plan = self._plan(acc)
        if isinstance(plan, Accumulation) and plan.is_exact:
            pre, out = _exact_pass(net, xs, plan.precision)
            overflow = [~np.isfinite(y) for y in pre]
        else:
            names = [layer_tensors(k) for k in range(len(net))]
            run = run_graph(net.graph, {"x": xs}, make_arithmetic(plan, st, first_sample=first_sample), keep=[t for pair in names for t in pair])
            pre = [run.values[p] for p, _ in names]
            out = [run.values[o] for _, o in names]
            overflow = [run.overflow.get(f"layer{k}", ~np.isfinite(y)) for k, y in enumerate(pre)]
        if single:
            pre, out, overflow = ([v[0] for v in vs] for vs in (pre, out, overflow))
            xs = xs[0]
        if return_all:
            return ForwardResult(pre, out, overflow, xs)
        return out[-1]

    def predict(self, x, acc=None, storage=None) -> np.ndarray:
        """Class labels decided on the logits, the last layer's pre-activation
        (:func:`emulator.metrics.predicted_class`: arg-max, or logit > 0 for one output
        unit; -1 for a row holding NaN), mapped through ``meta['classes']`` when present."""
        run = self.forward(x, acc=acc, storage=storage, return_all=True)
        return class_labels(predicted_class(run.preactivations[-1]), self.meta.get("classes"))


def _exact_pass(net: Network, x: np.ndarray, precision: int) -> tuple[list, list]:
    ref = exact_forward(net, x, precision)
    return [np.asarray(v, dtype=np.float64) for v in ref.preactivations], [np.asarray(v, dtype=np.float64) for v in ref.outputs]
