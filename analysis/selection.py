"""Which components a layer recomputes, given the scores: a threshold, a budget or a target
error, at a granularity hardware can use (docs/method.md#budgets-and-granularity).

The predicted error of component i computed in format F is e_i = u_F s_i (s_i the
criterion's score, u_F the unit roundoff of F, as in the multi-level variant); forced
components and undefined scores have e_i = inf. Components are recomputed in *units*:

``component``  each (sample, output) pair alone;
``row``        an output row: one neuron (channel) for every sample of the batch;
``tile``       an R x C tile of the (samples x outputs) matrix (edge tiles are smaller).

On a graph the same rules apply at every accumulation site, to the (rows x outputs)
matrix of its sums (rows: every leading axis flattened, i.e. samples, positions and
heads): a row unit is an output channel for every sample and position, a tile an R x C
tile of that matrix, and the budget is the site's.

A unit's predicted error is the largest of its components', its cost the number of its
components (each one high-precision inner product of the layer's length). Rules:

* threshold ``tau``: a unit is recomputed when one of its components is selected by
  Algorithm 1 (s_i > tau, forced, or undefined);
* ``budget`` COST: the layer's recomputation may cost at most COST times the layer in
  uniform high, i.e. floor(COST N m_k) components; units are taken by decreasing
  predicted error per unit cost (ties by index) while they fit (budget 0: uniform low's
  values, budget 1: uniform high's);
* ``target`` E: every unit whose predicted error in low exceeds E is recomputed (with a
  budget too: in the order above, while the budget lasts), so that every component left
  in low has u_L s_i <= E.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from emulator.registry import Registry

from .criteria import PolicyError, check_tau, select

__all__ = ["Granularity", "GRANULARITIES", "granularity_names", "Rule", "make_rule", "rule_list", "rule_label", "parse_tile",
           "unit_labels", "choose"]


def _component(shape: tuple[int, int], tile: tuple[int, int]) -> np.ndarray:
    return np.arange(shape[0] * shape[1]).reshape(shape)


def _row(shape: tuple[int, int], tile: tuple[int, int]) -> np.ndarray:
    return np.broadcast_to(np.arange(shape[1]), shape)


def _tile(shape: tuple[int, int], tile: tuple[int, int]) -> np.ndarray:
    across = -(-shape[1] // tile[1])
    rows = np.arange(shape[0])[:, None] // tile[0]
    cols = np.arange(shape[1])[None, :] // tile[1]
    return rows * across + cols


@dataclass(frozen=True)
class Granularity:
    """How components group into units: ``labels(shape, tile)`` numbers each (sample,
    output) pair of an (N, m) layer with its unit, 0 .. units - 1."""

    name: str
    description: str
    labels: Callable[[tuple[int, int], tuple[int, int]], np.ndarray] = field(repr=False)


GRANULARITIES: Registry[Granularity] = Registry("granularity")
for _row_ in (
    Granularity("component", "each (sample, output) pair alone", _component),
    Granularity("row", "an output row: one neuron (channel) for every sample of the batch", _row),
    Granularity("tile", "an R x C tile of the (samples x outputs) matrix", _tile),
):
    GRANULARITIES.add(_row_.name, _row_)


def granularity_names() -> list[str]:
    return GRANULARITIES.names()


def parse_tile(text: "str | tuple[int, int]") -> tuple[int, int]:
    """``RxC`` (samples x outputs), both integers >= 1."""
    if isinstance(text, tuple):
        size = text
    else:
        match = re.fullmatch(r"(\d+)x(\d+)", str(text).strip())
        if match is None:
            raise PolicyError(f"tile == {text!r}, must be RxC with integers >= 1 (e.g. 16x16).")
        size = (int(match.group(1)), int(match.group(2)))
    if len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
        raise PolicyError(f"tile == {text!r}, must be RxC with integers >= 1 (e.g. 16x16).")
    return size


def _check_fraction(name: str, value) -> "float | None":
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PolicyError(f"{name} == {value!r}, must be a number >= 0.") from None
    if not v >= 0 or (name == "budget" and math.isinf(v)):
        raise PolicyError(f"{name} == {value!r}, must be a {'finite ' if name == 'budget' else ''}number >= 0.")
    return v


@dataclass(frozen=True)
class Rule:
    """A selection rule (module docstring): a threshold ``tau``, or a ``budget`` and / or a
    ``target`` error, at ``granularity`` (``tile`` R x C for tiles)."""

    tau: "float | None" = None
    budget: "float | None" = None
    target: "float | None" = None
    granularity: str = "component"
    tile: tuple[int, int] = (16, 16)

    @property
    def plain(self) -> bool:
        """Algorithm 1 as it is: a threshold on single components."""
        return self.budget is None and self.target is None and self.granularity == "component"

    def describe(self) -> dict:
        out = {"granularity": self.granularity, "budget": self.budget, "target_error": self.target}
        if self.granularity == "tile":
            out["tile"] = f"{self.tile[0]}x{self.tile[1]}"
        return out



def rule_label(tau: "float | None", selection: "dict | None") -> str:
    """A short name of a run's rule for tables: ``0.5``, ``B=0.3``, ``E=0.01``, followed by
    the granularity when it is not per component (``/row``, ``/tile16x16``); ``-`` for none."""
    selection = selection or {}
    parts = [] if tau is None else [f"{tau:g}"]
    parts += [f"{key}={selection[name]:g}" for key, name in (("B", "budget"), ("E", "target_error"))
              if selection.get(name) is not None]
    unit = {"row": "/row", "tile": f"/tile{selection.get('tile')}"}.get(selection.get("granularity"), "")
    return ",".join(parts) + unit if parts else "-"


def make_rule(tau=None, budget=None, target=None, granularity: str = "component",
              tile: "str | tuple[int, int]" = (16, 16)) -> Rule:
    """A checked :class:`Rule`: either ``tau`` or at least one of ``budget``, ``target``."""
    GRANULARITIES.get(granularity)
    budget, target = _check_fraction("budget", budget), _check_fraction("target error", target)
    if (tau is None) == (budget is None and target is None):
        raise PolicyError("give either tau, or a budget and / or a target error.")
    return Rule(None if tau is None else check_tau(tau), budget, target, granularity, parse_tile(tile))


def rule_list(taus=(), budgets=(), targets=(), granularity: str = "component",
              tile: "str | tuple[int, int]" = (16, 16)) -> list[Rule]:
    """The rules of a sweep: one per tau, then one per budget and target (each budget
    with each target when both are given), all at ``granularity``."""
    pairs = [(b, e) for b in (list(budgets) or [None]) for e in (list(targets) or [None]) if (b, e) != (None, None)]
    return ([make_rule(tau=t, granularity=granularity, tile=tile) for t in taus]
            + [make_rule(budget=b, target=e, granularity=granularity, tile=tile) for b, e in pairs])


def unit_labels(shape: tuple[int, int], rule: Rule) -> np.ndarray:
    """The unit of each (sample, output) pair of an (N, m) layer under ``rule``."""
    return np.asarray(GRANULARITIES.get(rule.granularity).labels(tuple(shape), rule.tile))


def _unit_max(values: np.ndarray, labels: np.ndarray, units: int) -> np.ndarray:
    out = np.full(units, -np.inf)
    np.maximum.at(out, labels.ravel(), values.ravel())
    return out


def choose(score: np.ndarray, must: np.ndarray, rule: Rule, u_low: float) -> np.ndarray:
    """The mask of recomputed components under ``rule`` (module docstring), from the
    criterion's scores ``score`` and the forced components ``must``: (N, m) for a layer,
    (..., m) for a graph site, whose leading axes flatten into the rows of its (rows x
    outputs) matrix."""
    shape = np.shape(score)
    score = np.asarray(score, dtype=np.float64).reshape(-1, shape[-1])
    must = np.asarray(must, dtype=bool).reshape(score.shape)
    return _choose(score, must, rule, u_low).reshape(shape)


def _choose(score: np.ndarray, must: np.ndarray, rule: Rule, u_low: float) -> np.ndarray:
    """:func:`choose` on an (N, m) matrix."""
    labels = unit_labels(score.shape, rule)
    units = int(labels.max()) + 1 if labels.size else 0
    if rule.tau is not None:
        hit = np.zeros(units, dtype=bool)
        np.logical_or.at(hit, labels.ravel(), select(score, must, rule.tau).ravel())
        return hit[labels]
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.where(must | np.isnan(score), np.inf, u_low * score)
    worst = _unit_max(error, labels, units)
    size = np.bincount(labels.ravel(), minlength=units)
    wanted = worst > rule.target if rule.target is not None else np.ones(units, dtype=bool)
    if rule.budget is None:
        return wanted[labels]
    allowance = math.floor(rule.budget * score.size)
    order = np.lexsort((np.arange(units), -(worst / np.maximum(size, 1))))
    order = order[wanted[order]]
    taken = np.zeros(units, dtype=bool)
    taken[order[np.cumsum(size[order]) <= allowance]] = True
    return taken[labels]
