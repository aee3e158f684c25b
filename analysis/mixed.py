"""The engine behind every recompute method: a forward pass in which each (sample,
component) of each layer is accumulated in one of a list of formats, chosen layer by
layer by a *step* function, the output of layer k (mixed) feeding layer k + 1.

A step sees the layer, its computed input x̂ and a :class:`Passes` (emulated passes on
demand), and returns a :class:`LayerStep`: the mixed pre-activation, the index of the
format that produced each final value, and how many inner products it computed in each
format — the work the cost model charges. The engine applies the activation (float64)
and the storage rounding, as ``Network.forward`` does.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from emulator.accumulation import Accumulation, parse_accumulation
from emulator.errors import MixaccError
from emulator.linear import linear
from emulator.network import Layer, Network
from emulator.reference import exact_linear

from .cost import Cost, CostModel, LayerWork, accumulation_format, get_cost_model, run_cost
from .estimates import LOW_PASS, Estimate

__all__ = ["Passes", "LayerStep", "MixedRun", "mixed_forward", "take_first", "format_list"]


def _digest(*arrays: "np.ndarray | None") -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(b"none" if a is None else repr(a.shape).encode())
        if a is not None:
            h.update(np.ascontiguousarray(a))
    return h.digest()


def _key(kind: str, layer: Layer, xhat: np.ndarray, arithmetic) -> tuple:
    """Cache key: what is computed, by which arithmetic, from which weights and input."""
    return kind, str(arithmetic), _digest(layer.weight, layer.bias, xhat)


class Passes:
    """Passes of a layer at a computed input, computed on demand and kept in a small LRU
    cache keyed by (kind, arithmetic, digest of weights, bias and input), so runs that share
    an input (every run of a sweep shares layer 0's) compute it once."""

    def __init__(self, cache_bytes: int = 256 * 2**20):
        self._cache: OrderedDict = OrderedDict()
        self._budget = int(cache_bytes)
        self._held = 0

    def __getstate__(self) -> dict:
        """A copy sent to another process (a cluster's worker) starts with an empty cache."""
        return {**self.__dict__, "_cache": OrderedDict(), "_held": 0}

    def _cached(self, key, compute: Callable[[], tuple]):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = compute()
        size = sum(v.nbytes for v in value)
        if size <= self._budget:
            self._cache[key] = value
            self._held += size
            while self._held > self._budget:
                _, old = self._cache.popitem(last=False)
                self._held -= sum(v.nbytes for v in old)
        return value

    def full(self, layer: Layer, xhat: np.ndarray, acc: Accumulation) -> tuple[np.ndarray, np.ndarray]:
        """(acc(W x̂ + b), overflow mask), both (N, m), for every component."""
        def compute():
            y, ovf = linear(xhat, layer.weight, layer.bias, acc, return_overflow=True)
            return _frozen(np.asarray(y, dtype=np.float64)), _frozen(np.asarray(ovf, dtype=bool))

        return self._cached(_key("full", layer, xhat, acc.spec), compute)

    def some(self, layer: Layer, xhat: np.ndarray, acc: Accumulation, mask: np.ndarray):
        """(y, overflow) like :meth:`full`, valid where ``mask`` (N, m) is set (NaN and
        False elsewhere). The emulator evaluates whole layers fastest, so this takes the
        full pass and keeps the masked part (the cost model charges only that part)."""
        y, ovf = self.full(layer, xhat, acc)
        return np.where(mask, y, np.nan), mask & ovf

    def magnitude(self, layer: Layer, xhat: np.ndarray, acc: Accumulation,
                  estimate: Estimate = LOW_PASS) -> np.ndarray:
        """acc(|W| |x̂| + |b|), the low-precision estimate of a_i (no cancellation in it);
        +inf where that sum overflowed (a_i is then unknown but at least the format's max).
        A certified ``estimate``: its upper bound on a_i instead (``analysis.estimates``)."""
        if estimate.certified:
            return self._cached(_key(f"estimate:{estimate.name}", layer, xhat, ""),
                                lambda: (_frozen(estimate.bound(xhat, layer.weight, layer.bias)),))[0]

        def compute():
            bias = None if layer.bias is None else np.abs(layer.bias)
            a, ovf = linear(np.abs(xhat), np.abs(layer.weight), bias, acc, return_overflow=True)
            return (_frozen(np.where(np.asarray(ovf, dtype=bool), np.inf, np.asarray(a, dtype=np.float64))),)

        return self._cached(_key("magnitude", layer, xhat, acc.spec), compute)[0]

    def exact(self, layer: Layer, xhat: np.ndarray, precision: int = 113) -> np.ndarray:
        """The exact W x̂ + b at the computed input, rounded once to float64."""
        def compute():
            return (_frozen(np.asarray(exact_linear(xhat, layer.weight, layer.bias, precision), dtype=np.float64)),)

        return self._cached(_key("exact", layer, xhat, precision), compute)[0]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class LayerStep:
    """What a step decided for one layer: ``pre`` (N, m) the mixed pre-activation,
    ``choice`` (N, m) the index (into the run's formats) of the format that produced each
    value, ``work[j]`` the number of inner products computed in format j, ``steps[F]`` the
    single operations in format F (a certified estimate's arithmetic)."""

    pre: np.ndarray
    choice: np.ndarray
    work: Mapping[int, int]
    steps: Mapping[str, int] = field(default_factory=dict)


Step = Callable[[int, Layer, np.ndarray, Passes], LayerStep]


@dataclass(frozen=True)
class MixedRun:
    """A mixed-precision forward pass. ``formats`` lists the arithmetics (low first,
    high last); ``choices[k]`` (N, m_k) gives each component's format index, so
    ``masks[k] = choices[k] > 0`` are the recomputed ones; ``outputs`` (N, m_L) the network
    output and ``logits`` the last layer's mixed pre-activation; ``cost`` the cost against
    uniform ``formats[-1]``; ``selection`` how a budgeted or granular rule chose
    (``analysis.selection.Rule.describe``), None for a plain threshold."""

    method: str
    criterion: "str | None"
    tau: "float | None"
    formats: tuple[Accumulation, ...]
    outputs: np.ndarray
    logits: np.ndarray
    choices: tuple[np.ndarray, ...]
    cost: Cost
    selection: "dict | None" = None

    @property
    def masks(self) -> list[np.ndarray]:
        return [c > 0 for c in self.choices]

    @property
    def layer_fraction(self) -> list[float]:
        """Share of (sample, component) pairs of each layer not left in the low format."""
        return [float(np.mean(c > 0)) for c in self.choices]

    @property
    def fraction(self) -> float:
        """Share of all (sample, component) pairs, over every layer, not left in low."""
        return float(sum(int(np.count_nonzero(c)) for c in self.choices) / sum(c.size for c in self.choices))

    def format_fraction(self) -> list[dict[str, float]]:
        """Per layer, the share of components whose value came from each format."""
        return [{f.spec: float(np.mean(c == j)) for j, f in enumerate(self.formats)} for c in self.choices]


def format_list(formats: Sequence) -> tuple[Accumulation, ...]:
    """Accumulation rows for a list of specs; each must be an emulated (not exact) format."""
    rows = tuple(parse_accumulation(f) for f in formats)
    for row in rows:
        accumulation_format(row)  # raises on exact
    return rows


def mixed_forward(network: Network, x, formats: Sequence[Accumulation], step: Step, *, method: str,
                  criterion: "str | None" = None, tau: "float | None" = None, storage=None,
                  cost: "CostModel | str" = "bits", passes: "Passes | None" = None,
                  selection: "dict | None" = None) -> MixedRun:
    """Run ``step`` layer by layer: z_k = storage(sigma_k(step(k).pre)), z_0 = storage(x).
    Weights and biases are rounded to ``storage`` first, as in ``Network.forward``;
    ``selection`` is recorded in the run."""
    model = get_cost_model(cost)
    net, z, st = network.prepare(x, storage)
    passes = passes or Passes()
    rows = format_list(formats)
    choices, work, pre = [], [], None
    for k, layer in enumerate(net.layers):
        result = step(k, layer, z, passes)
        if result.pre.shape != (z.shape[0], layer.n_outputs):
            raise MixaccError(f"{method}: layer {k} step returned shape {result.pre.shape}.")
        counts: dict = {}
        for j, count in result.work.items():
            counts[rows[j]] = counts.get(rows[j], 0) + int(count)
        work.append(LayerWork(layer.n_inputs, counts, dict(result.steps)))
        choices.append(_frozen(np.asarray(result.choice, dtype=np.int8)))
        pre = result.pre
        z = layer.activation.f(pre)
        if st is not None:
            z = st.round(z)
    run_costs = run_cost(work, [l.n_outputs for l in net.layers], z.shape[0], rows[-1], model)
    return MixedRun(method, criterion, tau, tuple(formats), _frozen(z), _frozen(np.asarray(pre)), tuple(choices),
                    run_costs, selection)


def take_first(keys: np.ndarray, counts: np.ndarray, first: "np.ndarray | None" = None) -> np.ndarray:
    """Mask of the ``counts[s]`` first entries of each row s in the order: entries of
    ``first`` before all others, then increasing ``keys``, ties by index."""
    primary = np.zeros(keys.shape, dtype=bool) if first is None else ~np.asarray(first, dtype=bool)
    order = np.lexsort((keys, primary), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(keys.shape[1]), keys.shape), axis=1)
    return rank < np.asarray(counts)[:, None]
