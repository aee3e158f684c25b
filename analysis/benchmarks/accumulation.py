"""Benchmark section 'accumulation': emulated ``linear`` in ns per multiply-add.

Baselines timed in the same run on the same data (the loops on a subset of the samples,
per multiply-add): numpy float32 ``x @ W.T`` (the native speed); the straightforward
vectorised numpy loop over k that rounds after each step with numpy's own cast,
``acc = (acc + x[:, k, None] * W[:, k]).astype(float16)`` (it double-rounds through the
float64 sum, so it is a speed reference, not a correct emulation); the same loop rounding
with mixacc's ``round_to`` (correct for sums of two float64 values, every format); and,
for the other cases, recursive fp16 ``linear`` itself. Targets at (N, n, m) =
(1024, 784, 784), as ratios to baselines of the same run: recursive fp16 and bf16 at
least 10x faster than the plain numpy loop and within 50x of float32 matmul;
fp8-e4m3fn, fp16:pairwise and fp16:blocked:32 within 2x of recursive fp16.

Tensor cores (``TENSOR_CORES``): the block-FMA specs on operands rounded to their input
format, timed in the same run against recursive fp16 on the unrounded (x, W) (the
headline case above; the target, within 3x of it at (1024, 784, 784)) and on the same
rounded operands (where fp16's quick pass leaves many exact ties to its slower tiers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.linear import linear
from emulator.rounding import round_to

from . import Measurement, time_call

TITLE = "accumulation"

SIZES = ((256, 256, 256), (1024, 784, 784))
QUICK_SIZES = ((64, 128, 128), (128, 256, 256))
CASES = ("fp16", "bf16", "fp8-e4m3fn", "fp16:pairwise", "fp16:blocked:32", "fp16:promote:128:fp32")  # fp16 first
LOOP_SAMPLES = 64
NATIVE = "numpy float32 x @ W.T"
TENSOR_CORES = ("tensorcore:h100:fp8-e4m3fn", "tensorcore:a100:bf16")
TENSOR_CORE_TARGET = "<= 3x recursive fp16 (same run)"
PLAIN_LOOP = "numpy loop + astype(float16)"
RECURSIVE_FP16 = "linear fp16"


@dataclass(frozen=True)
class Ratio:
    """A target: value / (the baseline called ``baseline``, same run) <= ``bound``."""

    baseline: str
    bound: float

    def describe(self) -> str:
        if self.bound < 1:
            return f">= {1 / self.bound:g}x faster than {self.baseline}"
        return f"<= {self.bound:g}x {self.baseline}"

    def holds(self, value: float, baselines: dict[str, float]) -> bool:
        return value <= self.bound * baselines[self.baseline]


_FAST = (Ratio(PLAIN_LOOP, 0.1), Ratio(NATIVE, 50.0))
_NEAR_FP16 = (Ratio(RECURSIVE_FP16, 2.0),)
TARGETS: dict[str, tuple[Ratio, ...]] = {  # at the last of SIZES
    "fp16": _FAST, "bf16": _FAST, "fp8-e4m3fn": _NEAR_FP16, "fp16:pairwise": _NEAR_FP16, "fp16:blocked:32": _NEAR_FP16,
}


def target_text(spec: str) -> str:
    return ", ".join(r.describe() for r in TARGETS.get(spec, ()))


def meets(spec: str, value: float, baselines: dict[str, float]) -> bool:
    """Whether ``value`` meets every ratio of the case's target."""
    return all(r.holds(value, baselines) for r in TARGETS[spec])


def _numpy_loop(x: np.ndarray, w: np.ndarray, fmt: str) -> np.ndarray:
    acc = np.zeros((x.shape[0], w.shape[0]))
    for k in range(x.shape[1]):
        acc = round_to(acc + x[:, k, None] * w[:, k], fmt)
    return acc


def _plain_numpy_loop(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    acc = np.zeros((x.shape[0], w.shape[0]))
    for k in range(x.shape[1]):
        acc = (acc + x[:, k, None] * w[:, k]).astype(np.float16).astype(np.float64)
    return acc


def _data(nsamp: int, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((nsamp, n)), rng.standard_normal((m, n)) / np.sqrt(n)


def run(quick: bool) -> list[Measurement]:
    out = []
    for nsamp, n, m in QUICK_SIZES if quick else SIZES:
        x, w = _data(nsamp, n, m)
        macs = nsamp * n * m
        x32, w32 = x.astype(np.float32), w.astype(np.float32)
        native = time_call(lambda: x32 @ w32.T, repeat=5) / macs * 1e9
        sub = x[:LOOP_SAMPLES]
        loops: dict[str, float] = {}
        plain = time_call(lambda: _plain_numpy_loop(sub, w), repeat=2) / (len(sub) * n * m) * 1e9
        values: dict[str, float] = {}
        for spec in CASES:
            fmt = spec.split(":")[0]
            if fmt not in loops:
                loops[fmt] = time_call(lambda: _numpy_loop(sub, w, fmt), repeat=1) / (len(sub) * n * m) * 1e9
            values[spec] = time_call(lambda: linear(x, w, None, spec), repeat=3) / macs * 1e9
            baselines = {NATIVE: native, PLAIN_LOOP: plain, f"numpy loop + round_to({fmt})": loops[fmt]}
            if spec != "fp16":
                baselines[RECURSIVE_FP16] = values["fp16"]
            headline = spec in TARGETS and (nsamp, n, m) == SIZES[-1]
            out.append(Measurement(TITLE, f"linear {spec} (N, n, m) = ({nsamp}, {n}, {m})", values[spec], "ns/MAC",
                                   baselines, target_text(spec) if headline else "",
                                   meets(spec, values[spec], baselines) if headline else None))
        out.extend(_tensor_cores(x, w, (nsamp, n, m), values["fp16"], headline=(nsamp, n, m) == SIZES[-1]))
    return out


def _tensor_cores(x: np.ndarray, w: np.ndarray, size: tuple, fp16: float, headline: bool) -> list[Measurement]:
    """The tensor-core rows: each spec and recursive fp16 timed on x, W rounded to the
    spec's input format (saturating), beside recursive fp16 on x, W (``fp16``, ns/MAC)."""
    from emulator.accumulation import parse_accumulation

    macs = size[0] * size[1] * size[2]
    out = []
    for spec in TENSOR_CORES:
        fmt = parse_accumulation(spec).hardware.inputs
        xs, ws = round_to(x, fmt, saturate=True), round_to(w, fmt, saturate=True)
        fp16_same = time_call(lambda: linear(xs, ws, None, "fp16"), repeat=1) / macs * 1e9
        value = time_call(lambda: linear(xs, ws, None, spec), repeat=2) / macs * 1e9
        baselines = {"linear fp16 (recursive)": fp16, f"linear fp16 (recursive) on {fmt.name} operands": fp16_same}
        out.append(Measurement(TITLE, f"tensorcore linear {spec} (N, n, m) = {size}", value, "ns/MAC", baselines,
                               TENSOR_CORE_TARGET if headline else "", value <= 3 * fp16 if headline else None))
    return out
