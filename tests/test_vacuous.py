"""Vacuous bounds: when the constant c(n) >= 1 the bound is valid but says nothing; it is
capped where a rigorous cap exists (max of the result's format + a_i locally, the
activation's range globally) and flagged."""

from __future__ import annotations

import numpy as np

from analysis.bounds import global_bound, local_bound, model_constant
from emulator.linear import linear
from emulator.reference import exact_linear


def test_vacuous_constant_and_its_cap():
    c = model_constant("fp8-e4m3fn", 784)
    assert c.vacuous and c.constant > 1e20 and c.output_max == 448.0
    assert not model_constant("fp16", 784).vacuous
    assert model_constant("fp16:promote:32:fp32", 784).output_max == np.finfo(np.float32).max
    rng = np.random.default_rng(1)
    x, W, b = rng.standard_normal((6, 784)), rng.standard_normal((5, 784)) / 28, rng.standard_normal(5)
    bound, capped = local_bound(x, W, b, "fp8-e4m3fn", return_capped=True)
    assert capped.all()
    a = np.abs(x) @ np.abs(W).T + np.abs(b)
    assert np.all(bound >= 448.0 + a) and np.all(bound <= (448.0 + a) * (1 + 1e-12))
    y, ovf = linear(x, W, b, "fp8-e4m3fn", return_overflow=True)
    exact = exact_linear(x, W, b)
    assert np.all(np.abs(y - exact)[~ovf] <= bound[~ovf])


def test_bounded_activation_caps_the_global_bound():
    y_hat = np.array([[0.5, -3.0, 40.0]])
    g = global_bound(y_hat, np.full((1, 3), 1e30), np.eye(3), "tanh")
    assert g.capped.all() and np.all(g.out <= 2.0 + 1e-15) and np.all(g.out >= np.maximum(1 - np.tanh(y_hat), 1 + np.tanh(y_hat)))
    g = global_bound(y_hat, np.full((1, 3), 1e-9), np.eye(3), "tanh")
    assert not g.capped.any() and np.all(g.out < 1e-8)
    g = global_bound(y_hat, np.full((1, 3), 1e30), np.eye(3), "relu")
    assert not g.capped.any() and np.all(np.isinf(g.out) | (g.out > 1e29))
