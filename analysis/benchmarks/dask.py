"""Benchmark section 'dask': scale-out on a local Dask cluster (extra ``dask``; the section
is empty without it), measured side by side.

* A 40-configuration study (``mixacc sweep``: validate digits-relu on 200 samples
  (quick: 10 configurations, 50 samples) under 5 accumulation specs, 4 storage formats
  and 2 bounds) in-process against ``--workers 2``, the cluster's start and close
  included; target: faster with two workers than in-process (on 2 cores).
* Scheduling overhead per task: the wall time of 200 tasks that do nothing (quick: 50),
  submitted as ``analysis.distributed`` submits them (scattered shared data, results
  gathered in order), divided by their number; no target.
"""

from __future__ import annotations

import tempfile
import time
from importlib.util import find_spec

from . import Measurement

TITLE = "dask"
WORKERS = 2
ACCS = ("fp16", "bf16", "fp16:pairwise", "bf16:rounding=stochastic", "e5m2:promote:32:fp32")
STORAGES = ("none", "fp32", "bf16", "fp16")
BOUNDS = ("deterministic", "probabilistic:6")
SAMPLES, QUICK_SAMPLES = 200, 50
TASKS, QUICK_TASKS = 200, 50
SPEED_TARGET = f"--workers {WORKERS} faster than in-process"


def study_table(quick: bool) -> dict:
    """The benchmark's study: 40 configurations (quick: 10)."""
    return {"analysis": "validate", "models": ["digits-relu"], "samples": QUICK_SAMPLES if quick else SAMPLES,
            "acc": list(ACCS), "storage": list(STORAGES[:2] if quick else STORAGES),
            "bound": list(BOUNDS[:1] if quick else BOUNDS)}


def _nothing(shared, item):
    return item


def _sweep_seconds(study, workers: "int | None") -> float:
    from ..distributed import executor_for
    from ..sweep_config import run_study

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        with executor_for(workers):
            run_study(study, out)
        return time.perf_counter() - t0


def run(quick: bool) -> list[Measurement]:
    if find_spec("distributed") is None:
        return []
    from ..distributed import executor_for, run_tasks
    from ..sweep_config import parse_study

    study = parse_study(study_table(quick))
    count = len(study.configurations)
    _sweep_seconds(parse_study({**study_table(True), "acc": ["fp16"], "storage": ["none"]}), None)  # compile
    local = _sweep_seconds(study, None)
    cluster = _sweep_seconds(study, WORKERS)
    tasks = QUICK_TASKS if quick else TASKS
    with executor_for(WORKERS):
        run_tasks(_nothing, None, range(WORKERS))
        t0 = time.perf_counter()
        run_tasks(_nothing, None, range(tasks))
        per_task = (time.perf_counter() - t0) / tasks
    t0 = time.perf_counter()
    with executor_for(WORKERS):
        pass
    startup = time.perf_counter() - t0
    return [
        Measurement(TITLE, f"sweep of {count} configurations, --workers {WORKERS}", cluster, "s",
                    {"in-process": local}, SPEED_TARGET, cluster < local),
        Measurement(TITLE, f"scheduling overhead per task ({tasks} empty tasks)", per_task * 1e3, "ms"),
        Measurement(TITLE, f"start and close a LocalCluster of {WORKERS}", startup, "s"),
    ]
