"""Error summaries streamed over batches (docs/method.md#validation): the measured errors
of a set of components against their bounds (certain violations, tightness, the rank
correlation of predicted with measured errors, vacuous and capped bounds), for a layer of
an MLP, an accumulation site or a tensor of a graph alike."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.metrics import ratio

__all__ = ["ErrorSummary", "Collector", "rank_correlation", "certain_lower"]


@dataclass
class ErrorSummary:
    """Measured errors of one layer against its bounds (local or global)."""

    components: int
    uncovered: int
    violations: int
    max_abs_error: float
    max_rel_error: float
    median_rel_error: "float | None"
    median_tightness: "float | None"
    spearman_predicted_vs_measured: "float | None"
    max_bound: "float | None"
    median_bound: "float | None"
    failure_probability: float
    spearman_pairs: int = 0
    spearman_excluded: int = 0
    vacuous: bool = False
    capped: int = 0
    vacuous_components: int = 0
    closest: "dict | None" = None
    worst_relative: "dict | None" = None
    extra: dict = field(default_factory=dict)

    @property
    def violation_rate(self) -> float:
        return self.violations / self.components if self.components else 0.0

    def to_dict(self) -> dict:
        return {
            "components": self.components, "uncovered": self.uncovered, "violations": self.violations,
            "violation_rate": self.violation_rate, "failure_probability": self.failure_probability,
            "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error,
            "median_rel_error": self.median_rel_error, "median_tightness": self.median_tightness,
            "spearman_predicted_vs_measured": self.spearman_predicted_vs_measured,
            "spearman_pairs": self.spearman_pairs, "spearman_excluded": self.spearman_excluded,
            "vacuous": self.vacuous, "capped": self.capped, "vacuous_components": self.vacuous_components,
            "max_bound": self.max_bound,
            "median_bound": self.median_bound, "closest_to_bound": self.closest, "worst_relative": self.worst_relative,
            **self.extra,
        }


def rank_correlation(predicted: np.ndarray, measured: np.ndarray) -> tuple["float | None", int, int]:
    """(Spearman's rho of predicted against measured errors, pairs used, pairs excluded).

    Excluded: pairs where both are exactly 0 (inactive components, which would count as
    perfectly concordant without saying anything) and pairs holding NaN. Infinite values
    (sign flips, the worst components) are kept and rank last, tied among themselves.
    rho is None with fewer than 3 pairs or when either side is constant."""
    from scipy.stats import rankdata

    predicted, measured = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    keep = ~((predicted == 0) & (measured == 0)) & ~np.isnan(predicted) & ~np.isnan(measured)
    p, m = predicted[keep], measured[keep]
    excluded = int(keep.size - keep.sum())
    if p.size < 3:
        return None, int(p.size), excluded
    rp, rm = rankdata(p), rankdata(m)
    if np.ptp(rp) == 0 or np.ptp(rm) == 0:
        return None, int(p.size), excluded
    rho = float(np.corrcoef(rp, rm)[0, 1])
    return (rho if np.isfinite(rho) else None), int(p.size), excluded


def _down(v: np.ndarray) -> np.ndarray:
    return np.nextafter(v, -np.inf)


def certain_lower(computed: np.ndarray, reference: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """A float64 <= |computed - exact| for every exact within ``radius`` of ``reference``."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _down(_down(np.abs(computed - reference)) - np.asarray(radius, dtype=np.float64))


class Collector:
    """Streams one layer's measurements (local or global) over batches."""

    def __init__(self, failure: float, vacuous: bool):
        self.failure, self.vacuous = failure, vacuous
        self.total = self.uncovered = self.violations = self.extra_violations = self.capped = 0
        self.vacuous_components = 0
        self.max_abs = self.max_rel = 0.0
        self.rel, self.pred, self.tight, self.bound = [], [], [], []
        self.closest: "dict | None" = None
        self.worst_rel: "dict | None" = None

    def add(self, offset, computed, reference, radius, bound, predicted, covered, capped, extra_violation=None):
        abs_err = np.abs(computed - reference)
        rel = ratio(abs_err, reference)
        lower = certain_lower(computed, reference, radius)
        self.total += covered.size
        self.uncovered += int((~covered).sum())
        self.capped += int((covered & capped).sum())
        with np.errstate(invalid="ignore"):
            useless = ~np.isfinite(bound) | ((computed != 0) & ~(bound < np.abs(computed)))
            self.vacuous_components += int((covered & useless).sum())
        self.violations += int((covered & (lower > bound)).sum())
        if extra_violation is not None:
            self.extra_violations += int((covered & extra_violation).sum())
        if not covered.any():
            return
        a, r, b, p = abs_err[covered], rel[covered], bound[covered], predicted[covered]
        self.max_abs = max(self.max_abs, float(np.max(a)))
        self.rel.append(r)
        self.pred.append(p)
        self.bound.append(b)
        nz = a > 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            self.tight.append((b[nz] / a[nz]))
        rows, cols = np.nonzero(covered)
        k = int(np.argmax(r))
        if r[k] > self.max_rel or self.worst_rel is None:
            self.max_rel = float(r[k])
            self.worst_rel = {"sample": int(offset + rows[k]), "component": int(cols[k]),
                              "computed": float(computed[rows[k], cols[k]]), "exact": float(reference[rows[k], cols[k]]),
                              "rel_error": float(r[k])}
        with np.errstate(divide="ignore", invalid="ignore"):
            closeness = np.where(b > 0, a / b, np.where(a > 0, np.inf, 0.0))
        k = int(np.argmax(closeness))
        if self.closest is None or closeness[k] > self.closest["measured_over_bound"]:
            self.closest = {"sample": int(offset + rows[k]), "component": int(cols[k]), "measured": float(a[k]),
                            "bound": float(b[k]), "measured_over_bound": float(closeness[k])}

    def merge(self, later: "Collector", shift: int = 0) -> "Collector":
        """Fold in a collector of later samples, as if its batches had been added here after
        this one's (the reduction of batches computed apart, docs/method.md#scale-out);
        ``shift`` is added to the sample indices ``later`` recorded."""
        later = later.shifted(shift)
        for name in ("total", "uncovered", "violations", "extra_violations", "capped", "vacuous_components"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        self.max_abs = max(self.max_abs, later.max_abs)
        for name in ("rel", "pred", "tight", "bound"):
            getattr(self, name).extend(getattr(later, name))
        if later.worst_rel is not None and (self.worst_rel is None or later.max_rel > self.max_rel):
            self.max_rel, self.worst_rel = later.max_rel, later.worst_rel
        if later.closest is not None and (
                self.closest is None or later.closest["measured_over_bound"] > self.closest["measured_over_bound"]):
            self.closest = later.closest
        return self

    def shifted(self, shift: int) -> "Collector":
        """This collector with ``shift`` added to the sample indices it recorded."""
        if shift:
            for record in (self.worst_rel, self.closest):
                if record is not None:
                    record["sample"] += shift
        return self

    def summary(self, extra_key: "str | None" = None) -> ErrorSummary:
        cat = (lambda parts: np.concatenate(parts) if parts else np.empty(0))
        rel, pred, tight, bound = cat(self.rel), cat(self.pred), cat(self.tight), cat(self.bound)
        rho, pairs, excluded = rank_correlation(pred, rel)
        finite_bound = bound[np.isfinite(bound)]
        tight = tight[np.isfinite(tight)]
        extra = {extra_key: self.extra_violations} if extra_key else {}
        return ErrorSummary(
            components=self.total - self.uncovered, uncovered=self.uncovered,
            violations=self.violations + self.extra_violations, max_abs_error=self.max_abs, max_rel_error=self.max_rel,
            median_rel_error=float(np.median(rel)) if rel.size else None,
            median_tightness=float(np.median(tight)) if tight.size else None, spearman_predicted_vs_measured=rho,
            max_bound=float(np.max(bound)) if bound.size else None,
            median_bound=float(np.median(finite_bound)) if finite_bound.size else None,
            failure_probability=self.failure, closest=self.closest, worst_relative=self.worst_rel,
            spearman_pairs=pairs, spearman_excluded=excluded, vacuous=self.vacuous, capped=self.capped,
            vacuous_components=self.vacuous_components, extra=extra,
        )
