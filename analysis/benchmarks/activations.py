"""Benchmark section 'activations': ``validate`` (fp16 accumulation, deterministic bounds,
exact reference) of a 1280 -> 512 -> 214 network whose hidden activation is each
registered activation in turn, on 50 samples (quick: 320 -> 128 -> 54, 10 samples),
against the same network with relu, timed in one run.

Target: no activation validates more than 2x slower than relu (the certified suprema of
|sigma'| and the reference kernels of smooth activations must not dominate).
"""

from __future__ import annotations

import math

import numpy as np

from emulator.activations import ACTIVATIONS
from emulator.network import Layer, Network

from ..validation import validate
from . import Measurement, time_call

TITLE = "activations"
SIZES = {False: ((1280, 512, 214), 50), True: ((320, 128, 54), 10)}
"""(layer sizes, samples) of the full and the quick run."""


def network(activation: str, sizes: tuple[int, int, int], seed: int = 0) -> Network:
    """Weights scaled like a trained net (W ~ N(0, 1/n_in), b ~ N(0, 0.1^2)), the
    hidden layer's activation given, the output layer linear."""
    rng = np.random.default_rng(seed)
    layers = [Layer(rng.standard_normal((m, n)) / math.sqrt(n), 0.1 * rng.standard_normal(m), act)
              for n, m, act in zip(sizes[:-1], sizes[1:], (activation, "identity"))]
    return Network(layers, name=f"{sizes[0]}-{sizes[1]} {activation}-{sizes[2]}")


def run(quick: bool) -> list[Measurement]:
    sizes, samples = SIZES[quick]
    x = np.random.default_rng(1).standard_normal((samples, sizes[0]))

    def seconds(activation: str) -> float:
        net = network(activation, sizes)
        return time_call(lambda: validate(net, x, "fp16"), repeat=5)

    relu = seconds("relu")
    case = f"validate {sizes[0]}-{sizes[1]}-{sizes[2]}, {samples} samples, fp16"
    return [Measurement(TITLE, f"{case}, {name}", t, "s", {"relu": relu}, "<= 2x relu (same run)",
                        t <= 2.0 * relu if not quick else None)
            for name in ACTIVATIONS.names() if name != "relu" for t in (seconds(name),)]
