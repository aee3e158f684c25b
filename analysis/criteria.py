"""The scores of the recompute policy and its selection rule (docs/method.md#criteria),
shared by the layers of an MLP (``analysis.policy``) and the accumulation sites of a graph
(``analysis.graph_policy``): a score s_i from the low-precision sum ŷ_i and the
sensitivity g_i of what consumes it (kappa_sigma(ŷ_i) for a layer), the forced
components, Algorithm 1's rule s_i > tau, and the true local errors the local-oracle
baseline ranks by.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

from emulator.activations import Activation
from emulator.errors import MixaccError
from emulator.metrics import relative_error
from emulator.registry import Registry

from .estimates import DEFAULT_BLOCK, HOLDER, LOW_PASS, Estimate, EstimateError, blocked

__all__ = [
    "PolicyError", "Criterion", "CRITERIA", "get_criterion", "criterion_names", "check_tau", "scores",
    "sensitivity_scores", "forced", "select", "OracleError", "ORACLE_ERRORS",
]


class PolicyError(MixaccError):
    """A recompute policy asked for with parameters that do not make sense."""


def _abs_or_nan(y: np.ndarray) -> np.ndarray:
    return np.where(y == 0, np.nan, np.abs(y))


def _kappa_score(y: np.ndarray, magnitude: np.ndarray, sensitivity: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return magnitude / _abs_or_nan(y) * sensitivity


def _kappa_prime_score(y: np.ndarray, magnitude, sensitivity: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return sensitivity / _abs_or_nan(y)


@dataclass(frozen=True)
class Criterion:
    """A score s_i computed from the low-precision pre-activation ŷ and the sensitivity
    of what consumes it (kappa_sigma(ŷ_i) for a layer; on a graph, the consumer's
    condition number, ``analysis.consumers``), and, when it has an ``estimate``, from that
    estimate M_i of a_i = |b_i| + sum_j |w_ij||x̂_j| (``analysis.estimates``: the low pass
    acc_L(|W||x̂| + |b|), or a certified upper bound)."""

    name: str
    description: str
    estimate: "Estimate | None"
    score: Callable[[np.ndarray, "np.ndarray | None", np.ndarray], np.ndarray] = field(repr=False)

    @property
    def needs_magnitude(self) -> bool:
        return self.estimate is not None


CRITERIA: Registry[Criterion] = Registry("recompute criterion")
for _row in (
    Criterion("kappa", "s = kappa^ kappa_sigma(ŷ), kappa^ = acc_L(|W||x̂|+|b|) / |ŷ| (the analysis)", LOW_PASS,
              _kappa_score),
    Criterion("kappa-prime", "s = kappa_sigma(ŷ) / |ŷ| (the authors' released experiments)", None, _kappa_prime_score),
    Criterion("kappa-holder", "s = M kappa_sigma(ŷ) / |ŷ|, M the Hölder bound on |W||x̂|+|b| (certified, O(m + n))",
              HOLDER, _kappa_score),
    Criterion("kappa-blocked", f"s = M kappa_sigma(ŷ) / |ŷ|, M the blocked bound on |W||x̂|+|b| over blocks of B "
                               f"columns (kappa-blocked:B, default B = {DEFAULT_BLOCK}; certified, O(m n / B))",
              blocked(DEFAULT_BLOCK), _kappa_score),
):
    CRITERIA.add(_row.name, _row)

_BLOCKED = re.compile(r"kappa-blocked:(\S*)$")


@lru_cache(maxsize=None)
def _blocked_criterion(size: int) -> Criterion:
    row = CRITERIA.get("kappa-blocked")
    return Criterion(f"kappa-blocked:{size}", row.description, blocked(size), row.score)


def get_criterion(name: "str | Criterion") -> Criterion:
    """A registered criterion, or ``kappa-blocked:B`` (B an integer >= 1)."""
    if isinstance(name, Criterion):
        return name
    match = _BLOCKED.match(name) if isinstance(name, str) else None
    if match is None:
        return CRITERIA.get(name, extra_possible=("kappa-blocked:B",))
    text = match.group(1)
    if not text.isdigit() or int(text) < 1:
        raise EstimateError(f"criterion {name!r}: the block size B of kappa-blocked:B must be an integer >= 1.")
    return _blocked_criterion(int(text))


def criterion_names() -> list[str]:
    return CRITERIA.names()


def check_tau(tau) -> float:
    """tau as a float; it must be a number >= 0 (inf allowed: recompute only the forced)."""
    try:
        value = float(tau)
    except (TypeError, ValueError):
        raise PolicyError(f"tau == {tau!r}, must be a number >= 0.") from None
    if not value >= 0:
        raise PolicyError(f"tau == {tau!r}, must be a number >= 0.")
    return value


def scores(y: np.ndarray, activation: Activation, criterion: "str | Criterion" = "kappa",
           magnitude: "np.ndarray | None" = None) -> np.ndarray:
    """The criterion's score of each component of the low-precision pre-activation ``y``
    (NaN where undefined: ŷ = 0, or 0 · inf)."""
    y = np.asarray(y, dtype=np.float64)
    return sensitivity_scores(y, activation.kappa(y), criterion, magnitude)


def sensitivity_scores(y: np.ndarray, sensitivity: np.ndarray, criterion: "str | Criterion" = "kappa",
                       magnitude: "np.ndarray | None" = None) -> np.ndarray:
    """The criterion's score of each component of a low-precision sum ``y`` whose
    consumer has condition number ``sensitivity`` there (kappa_sigma(ŷ) for a layer)."""
    crit = get_criterion(criterion)
    if crit.needs_magnitude and magnitude is None:
        raise PolicyError(f"Criterion {crit.name!r} needs its estimate of |W||x̂| + |b| (the magnitude argument).")
    return crit.score(np.asarray(y, dtype=np.float64), magnitude, sensitivity)


def forced(y: np.ndarray, overflow: np.ndarray) -> np.ndarray:
    """Components recomputed whatever the score: overflowed, not finite, or ŷ_i = 0."""
    return np.asarray(overflow, dtype=bool) | ~np.isfinite(y) | (y == 0)


def select(score: np.ndarray, must: np.ndarray, tau: float) -> np.ndarray:
    """Algorithm 1, step 3: s_i > tau, or forced, or s_i undefined (NaN)."""
    return must | ~(score <= tau)


@dataclass(frozen=True)
class OracleError:
    """How the local oracle measures the true local error e_i of z_i = sigma(ŷ_i) against
    sigma(ỹ_i)."""

    name: str
    description: str
    measure: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)


def _absolute(z: np.ndarray, exact: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        err = np.abs(z - exact)
    return np.where(np.isnan(err), np.inf, err)


ORACLE_ERRORS: Registry[OracleError] = Registry("oracle error")
for _row in (
    OracleError("relative", "|sigma(ŷ) - sigma(ỹ)| / |sigma(ỹ)| (0/0 = 0, c/0 = inf)", relative_error),
    OracleError("absolute", "|sigma(ŷ) - sigma(ỹ)|", _absolute),
):
    ORACLE_ERRORS.add(_row.name, _row)
