"""Benchmark section 'rounding': ``round_to`` on 10^7 doubles (10^6 with ``quick``) in
every rounding mode, in ns/element, against numpy's float16 cast (``astype``, a correct
C loop) and the ml_dtypes casts of the same format, all timed in the same run on the same
input (normal(0, 1) * 16 doubles). Targets: round-to-nearest and directed modes within
3x of numpy's float16 cast, stochastic within 6x. ml_dtypes rounds float64 through float32
(double rounding), so it is a speed reference only.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from emulator.rounding import ROUNDING_MODES, round_to

from . import Measurement, time_call

TITLE = "rounding"
FORMATS = ("fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2", "e4m3")
ML_DTYPES_NAMES = {"bf16": "bfloat16", "fp8-e4m3fn": "float8_e4m3fn", "fp8-e5m2": "float8_e5m2", "e4m3": "float8_e4m3"}
NUMPY_BASELINE = "numpy float16 astype"
TARGET_RATIO = {"stochastic": 6.0}
DEFAULT_RATIO = 3.0


def _ml_dtypes_casts() -> "dict[str, object] | None":
    if importlib.util.find_spec("ml_dtypes") is None:
        return None
    import ml_dtypes

    return {fmt: getattr(ml_dtypes, name) for fmt, name in ML_DTYPES_NAMES.items()}


def run(quick: bool) -> list[Measurement]:
    n = 10**6 if quick else 10**7
    x = np.random.default_rng(0).standard_normal(n) * 16.0
    ns = 1e9 / n
    numpy_f16 = time_call(lambda: x.astype(np.float16)) * ns
    casts = _ml_dtypes_casts()
    note = "" if casts is not None else "; ml_dtypes not installed (test extra): its baseline skipped"
    rows = []
    for fmt in FORMATS:
        baselines = {NUMPY_BASELINE: numpy_f16}
        if casts is not None and fmt in casts:
            dtype = casts[fmt]
            baselines[f"ml_dtypes {dtype.__name__}"] = time_call(lambda: x.astype(dtype)) * ns
        for mode in ROUNDING_MODES.names():
            value = time_call(lambda: round_to(x, fmt, mode, rng=0)) * ns
            ratio = TARGET_RATIO.get(mode, DEFAULT_RATIO)
            rows.append(Measurement(
                section=TITLE, case=f"round_to {fmt} {mode} (n={n:.0e})", value=value, unit="ns/element",
                baselines=dict(baselines), target=f"<= {ratio:g}x {NUMPY_BASELINE}{note}",
                meets=value <= ratio * numpy_f16))
    return rows
