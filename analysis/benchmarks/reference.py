"""Benchmark section 'reference': the certified exact forward pass of a 3-layer tanh MLP
(40 -> 784 -> 128 -> 10, the output layer linear) on 1000 samples (quick: 50).

The fast path is timed on every sample; the mpmath path (the definition) on a few samples
and extrapolated per sample (every sample has the same components); python-flint's
rigorous ball arithmetic (``arb_mat`` products, ``arb.tanh``), when it is installed, at the
smallest working precision whose radii meet the same accuracy (2^-60 relative).
"""

from __future__ import annotations

import math
import time
import types

import numpy as np

from emulator.activations import get_activation
from emulator.reference import DEFAULT_TOL, exact_forward

from . import Measurement, time_call

TITLE = "reference"
SIZES = (40, 784, 128, 10)
ACTIVATIONS = ("tanh", "tanh", "identity")


def network(seed: int = 0) -> types.SimpleNamespace:
    """Random weights scaled like a trained net: W ~ N(0, 1/n_in), b ~ N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)
    layers = []
    for n, m, act in zip(SIZES[:-1], SIZES[1:], ACTIVATIONS):
        layers.append(types.SimpleNamespace(weight=rng.standard_normal((m, n)) / math.sqrt(n),
                                            bias=0.1 * rng.standard_normal(m), activation=get_activation(act)))
    return types.SimpleNamespace(layers=layers)


def inputs(samples: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((samples, SIZES[0]))


def _mpmath_time(net, x: np.ndarray, subset: int) -> float:
    """The mpmath path on all of x, extrapolated: its time on 1 sample (setup included)
    plus the per-sample time measured on ``subset`` more samples, times the rest."""
    one = time_call(lambda: exact_forward(net, x[:1], path="mpmath"), repeat=1)
    more = time_call(lambda: exact_forward(net, x[:1 + subset], path="mpmath"), repeat=1)
    return one + (more - one) / subset * (x.shape[0] - 1)


def _flint_forward(net, x: np.ndarray, prec: int):
    """The forward pass in arb balls at ``prec`` bits: (seconds, worst radius / |midpoint|)."""
    import flint

    old = flint.ctx.prec
    flint.ctx.prec = prec
    try:
        weights = [flint.arb_mat(layer.weight.tolist()) for layer in net.layers]
        biases = [flint.arb_mat([[float(v)] * x.shape[0] for v in layer.bias]) for layer in net.layers]
        t0 = time.perf_counter()
        z = flint.arb_mat(x.T.tolist())
        for w, b, layer in zip(weights, biases, net.layers):
            y = w * z + b
            if layer.activation.name == "tanh":
                z = flint.arb_mat([[y[i, j].tanh() for j in range(y.ncols())] for i in range(y.nrows())])
            else:
                z = y
        seconds = time.perf_counter() - t0
        entries = [z[i, j] for i in range(z.nrows()) for j in range(z.ncols())]
        worst = max(float(e.rad()) / abs(float(e.mid())) for e in entries)
    finally:
        flint.ctx.prec = old
    return seconds, worst


def _flint_time(net, x: np.ndarray) -> tuple[float, int] | None:
    """(best of two runs, precision) at the smallest precision (64, 80, 96, ...) whose
    radii meet DEFAULT_TOL; None if none up to 256 bits does."""
    for prec in range(64, 257, 16):
        seconds, worst = _flint_forward(net, x, prec)
        if worst <= DEFAULT_TOL:
            return min(seconds, _flint_forward(net, x, prec)[0]), prec
    return None


def run(quick: bool) -> list[Measurement]:
    samples, mp_samples = (50, 2) if quick else (1000, 10)
    net = network()
    x = inputs(samples)
    fast = time_call(lambda: exact_forward(net, x), repeat=3)
    result = exact_forward(net, x)
    certified = all(bool(np.all(c)) for c in result.certified)
    mp_scaled = _mpmath_time(net, x, mp_samples)
    flint = _flint_time(net, x)
    case = f"forward 40-784-128-10 tanh, {samples} samples"
    fallback = sum(int(np.sum(f)) for f in result.fallback)
    rows = [
        Measurement(TITLE, f"{case} (fast path)", fast, "s", {"mpmath path (scaled)": mp_scaled},
                    f">= 100x faster than mpmath at the same certified accuracy (all certified: {certified}, "
                    f"{fallback} fallback components)", certified and fast * 100 <= mp_scaled),
        Measurement(TITLE, f"{case} (fast path, wall time)", fast, "s", {},
                    "< 30 s for 1000 samples", fast < 30.0 if not quick else None),
    ]
    if flint is not None:
        rows.append(Measurement(TITLE, f"{case} (fast path vs flint)", fast, "s",
                                {f"python-flint arb_mat ({flint[1]} bits)": flint[0]},
                                "at least as fast as python-flint's rigorous arb_mat at the same 2^-60",
                                fast <= flint[0]))
    return rows
