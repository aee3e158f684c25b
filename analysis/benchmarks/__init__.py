"""``mixacc bench``: performance targets measured side by side in one run.

Each section is a module of this package with ``TITLE`` and ``run(quick: bool) ->
list[Measurement]``; a measurement is one case timed against named baselines timed in
the same run, with the target stated as a ratio.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

__all__ = ["Measurement", "SECTIONS", "run_sections", "time_call"]

SECTIONS = ("rounding", "accumulation", "activations", "reference", "graphs", "dask")


@dataclass
class Measurement:
    """``value`` (in ``unit``) of ``case``; ``baselines`` maps a baseline's name to its
    value in the same unit; ``ratios`` = value / baseline; ``target`` a sentence and
    ``meets`` whether this run meets it (None when there is no target)."""

    section: str
    case: str
    value: float
    unit: str
    baselines: dict[str, float] = field(default_factory=dict)
    target: str = ""
    meets: bool | None = None

    @property
    def ratios(self) -> dict[str, float]:
        return {k: self.value / v for k, v in self.baselines.items() if v}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = self.ratios
        return d


def time_call(fn: Callable[[], object], repeat: int = 3, min_time: float = 0.0) -> float:
    """Best wall time in seconds of ``fn()`` over ``repeat`` runs (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if min_time and best > min_time:
            break
    return best


def run_sections(names: "list[str] | None" = None, quick: bool = False) -> list[Measurement]:
    out: list[Measurement] = []
    for name in names or SECTIONS:
        module = importlib.import_module(f"{__name__}.{name}")
        out.extend(module.run(quick))
    return out
