"""validate(): zero certain violations of the deterministic bounds over a representative
subset of bundled models x formats x orders x products (the whole grid is too slow for
the suite); measured errors against an independent mpmath forward
pass; violations, overflow and probabilistic failure rates accounted as documented; the
emulator against the Fraction oracle of tests/oracles.py (the semantics the bounds assume)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

import analysis.validation as validation_module
from analysis.bounds import local_bound
from analysis.validation import validate
from emulator.data import load_data
from emulator.errors import DataError, FormatSpecError
from emulator.linear import linear
from emulator.metrics import predicted_class
from emulator.modelio import bundled_models, load_model
from emulator.network import Layer, Network

from adversarial import stagnation
from oracles import accumulate

FORMATS = ["fp16", "bf16", "tf32", "fp8-e4m3fn", "fp8-e5m2", "e4m3"]
ORDERS = ["recursive", "pairwise", "blocked:32", "fused:4", "promote:32:fp32"]
MODELS = ["digits-relu", "digits-tanh", "mnist1d-relu", "mnist1d-tanh", "paper-mlp", "paper-mlp-mnist"]


def _spec(i: int) -> tuple[str, str]:
    fmt, order = FORMATS[i % 6], ORDERS[i % 5]
    products = f":products={fmt}" if i % 2 else ""
    return MODELS[(i + i // len(MODELS)) % len(MODELS)], f"{fmt}:{order}{products}"


@pytest.fixture(scope="module")
def inputs():
    cache = {}

    def get(model: str, samples: int):
        net = load_model(model)
        key = (net.meta["default_data"], samples)
        if key not in cache:
            cache[key] = load_data(net.meta["default_data"], "test").head(samples)
        return net, cache[key]

    return get


def test_bundled_networks_are_the_ones_checked():
    """Every bundled network (the graph models are checked in test_graph_models.py)."""
    assert sorted(n for n in bundled_models() if isinstance(load_model(n), Network)) == sorted(MODELS)


@pytest.mark.parametrize("i", range(12), ids=lambda i: "{}-{}".format(*_spec(i)))
def test_no_deterministic_violations_on_a_representative_subset(inputs, i):
    model, spec = _spec(i)
    net, data = inputs(model, 4)
    result = validate(net, data.x, spec, labels=data.y)
    assert result.violations == 0, result.to_dict()
    for layer in result.layers:
        assert layer.local.components + layer.local.uncovered == 4 * layer.outputs
        assert layer.global_.extra["preactivation_violations"] == 0


@pytest.mark.parametrize("spec, storage", [
    ("e4m3:recursive:bias=last:saturate", "e4m3:saturate"), ("fp16:rounding=stochastic:seed=3", "fp16"),
    ("bf16:pairwise:rounding=down", None), ("fp16:ftz:blocked:32", "bf16"),
])
def test_no_violations_with_storage_and_rounding_modes(inputs, spec, storage):
    net, data = inputs("mnist1d-tanh" if "stochastic" in spec else "paper-mlp", 3)
    result = validate(net, data.x, spec, storage=storage)
    assert result.violations == 0
    assert result.storage == storage


def test_measured_errors_match_an_independent_mpmath_forward_pass():
    rng = np.random.default_rng(2)
    layers = [Layer(rng.normal(size=(5, 6)) / 2, rng.normal(size=5) / 4, "tanh"),
              Layer(rng.normal(size=(3, 5)), rng.normal(size=3) / 4, "identity")]
    net = Network(layers, "tiny")
    x = rng.normal(size=(4, 6))
    result = validate(net, x, "bf16", batch_size=3)
    run = net.forward(x, acc="bf16", return_all=True)
    max_local = max_global = 0.0
    with mpmath.workprec(200):
        for s in range(4):
            exact_in = [mpmath.mpf(float(v)) for v in x[s]]
            for k, layer in enumerate(layers):
                x_hat = x[s] if k == 0 else run.outputs[k - 1][s]
                for i in range(layer.n_outputs):
                    at_hat = mpmath.fsum(mpmath.mpf(float(w)) * mpmath.mpf(float(v)) for w, v in zip(layer.weight[i], x_hat))
                    at_hat += mpmath.mpf(float(layer.bias[i]))
                    if k == len(layers) - 1:
                        max_local = max(max_local, float(abs(run.preactivations[k][s, i] - at_hat)))
                y = [mpmath.fsum(mpmath.mpf(float(w)) * v for w, v in zip(layer.weight[i], exact_in))
                     + mpmath.mpf(float(layer.bias[i])) for i in range(layer.n_outputs)]
                exact_in = [layer.activation.mp(v) for v in y]
            for i in range(3):
                max_global = max(max_global, float(abs(run.outputs[-1][s, i] - exact_in[i])))
    assert result.layers[-1].local.max_abs_error == pytest.approx(max_local, rel=1e-12, abs=1e-300)
    assert result.layers[-1].global_.max_abs_error == pytest.approx(max_global, rel=1e-12, abs=1e-300)
    exact_logits = net.forward(x, acc="exact", return_all=True).preactivations[-1]
    assert result.samples == 4 and result.flips == int((predicted_class(run.preactivations[-1]) != predicted_class(
        exact_logits)).sum())


def test_violations_are_detected(monkeypatch, inputs):
    net, data = inputs("digits-tanh", 3)
    def zero_bound(*args, **kwargs):
        bound, capped = local_bound(*args, **kwargs)
        return np.zeros_like(bound), capped

    monkeypatch.setattr(validation_module, "local_bound", zero_bound)
    result = validate(net, data.x, "bf16")
    assert result.violations_local > 0
    first = result.layers[0].local
    assert 0 < first.violations <= first.components


def test_overflow_is_uncovered_not_violated():
    W = np.full((2, 4), 300.0)
    net = Network([Layer(W, None, "relu"), Layer(np.ones((1, 2)), None, "identity")], "big")
    result = validate(net, np.ones((2, 4)), "fp8-e4m3fn")
    assert result.layers[0].local.uncovered == 4 and result.layers[0].local.components == 0
    assert result.layers[1].global_.uncovered == 2
    assert result.violations == 0


def test_probabilistic_violations_within_the_stated_failure_probability(inputs):
    net, data = inputs("mnist1d-relu", 6)
    result = validate(net, data.x, "bf16:rounding=stochastic:seed=5", bound="probabilistic:5")
    for layer in result.layers:
        for s in (layer.local, layer.global_):
            assert 0 < s.failure_probability < 1
            assert s.violation_rate <= s.failure_probability
    det = validate(net, data.x, "bf16:rounding=stochastic:seed=5")
    assert result.layers[1].local.median_bound < det.layers[1].local.median_bound


def test_spearman_and_tightness_of_the_first_layer_recomputed(inputs):
    from scipy.stats import spearmanr

    from analysis.bounds import model_constant
    from analysis.conditioning import absolute_sums, ratio
    from emulator.reference import exact_linear

    net, data = inputs("digits-tanh", 20)
    result = validate(net, data.x, "fp16", batch_size=7)
    layer = net.layers[0]
    y_hat = linear(data.x, layer.weight, layer.bias, "fp16")
    exact = exact_linear(data.x, layer.weight, layer.bias)
    predicted = model_constant("fp16", 64).first_order * ratio(absolute_sums(data.x, layer.weight, layer.bias), y_hat)
    measured = ratio(y_hat - exact, exact)
    got = result.layers[0].local
    assert got.spearman_predicted_vs_measured == pytest.approx(spearmanr(predicted.ravel(), measured.ravel()).statistic,
                                                               abs=1e-12)
    assert got.spearman_predicted_vs_measured > 0
    err = np.abs(y_hat - exact)
    bound = local_bound(data.x, layer.weight, layer.bias, "fp16")
    assert got.median_tightness == pytest.approx(np.median(bound[err > 0] / err[err > 0]), rel=1e-12)
    assert got.max_rel_error == pytest.approx(measured.max(), rel=1e-12)


@pytest.mark.parametrize("spec", ["fp16", "bf16:pairwise", "fp16:blocked:32", "bf16:fused:4", "fp16:promote:32:fp32",
                                  "fp8-e4m3fn:products=fp8-e4m3fn", "e4m3:bias=last", "fp16:rounding=up"])
def test_emulator_implements_the_semantics_the_bounds_assume(spec):
    rng = np.random.default_rng(8)
    W, b, x = rng.normal(size=(4, 70)), rng.normal(size=4), rng.normal(size=(2, 70)) / 4
    got = linear(x, W, b, spec)
    for s in range(2):
        for i in range(4):
            assert got[s, i] == accumulate(x[s], W[i], b[i], spec, s, i).value, (spec, s, i)


@pytest.mark.parametrize("spec, n, factor", [("fp16", 64, 1.1), ("bf16:pairwise", 256, 1.1), ("fp16:fused:4", 64, 1.05),
                                             ("fp16:blocked:32", 256, 1.7), ("fp16:promote:32:fp32", 256, 1.2)])
def test_adversarial_inputs_through_the_emulator(spec, n, factor):
    x, W = stagnation(spec, n)
    y = linear(x, W, None, spec)[0]
    exact = math.fsum(x)
    bound = local_bound(x, W, None, spec)[0]
    assert 1 <= bound / abs(y - exact) <= factor


@pytest.mark.parametrize("kwargs, exc, fragment", [
    ({"bound": "nope"}, FormatSpecError, "Unknown bound 'nope'"),
    ({"acc": "fp9"}, Exception, "Unknown format 'fp9'"),
    ({"labels": np.zeros(5)}, DataError, "labels has 5 entries but x has 2 samples"),
    ({"batch_size": 0}, DataError, "batch_size == 0, must be >= 1"),
])
def test_bad_input(kwargs, exc, fragment):
    net = Network([Layer(np.ones((2, 3)), None, "relu")], "t")
    args = {"acc": "fp16", **kwargs}
    with pytest.raises(exc, match=fragment):
        validate(net, np.ones((2, 3)), **args)


def test_rank_correlation_excludes_zero_pairs_and_ranks_inf_last():
    from analysis.validation import rank_correlation

    predicted = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    measured = np.array([0.0, 0.0, 0.0, 0.0, 4.0, 3.0, 2.0, 1.0])
    rho, pairs, excluded = rank_correlation(predicted, measured)
    assert (rho, pairs, excluded) == (-1.0, 4, 4)  # the inactive pairs would have made it look concordant
    rho, pairs, excluded = rank_correlation(np.array([1.0, 2.0, 3.0, np.inf]), np.array([1.0, 2.0, np.inf, np.nan]))
    assert (rho, pairs, excluded) == (1.0, 3, 1)
    rho, _, _ = rank_correlation(np.array([1.0, 2.0, np.inf]), np.array([np.inf, 2.0, 1.0]))
    assert rho == -1.0
    assert rank_correlation(np.zeros(5), np.zeros(5)) == (None, 0, 5)


def test_relu_spearman_counts_the_excluded_inactive_units(inputs):
    net, data = inputs("digits-relu", 40)
    first = validate(net, data.x, "fp16").layers[0].global_
    assert first.spearman_excluded > 0 and first.spearman_pairs + first.spearman_excluded == first.components


def test_bench_activations_section_times_every_activation_against_relu(monkeypatch):
    from analysis.benchmarks import activations as bench
    from emulator.activations import ACTIVATIONS

    monkeypatch.setattr(bench, "SIZES", {True: ((6, 5, 3), 2)})
    rows = bench.run(quick=True)
    assert [r.case.rsplit(", ", 1)[1] for r in rows] == [n for n in ACTIVATIONS.names() if n != "relu"]
    for r in rows:
        assert r.unit == "s" and r.value > 0 and set(r.baselines) == {"relu"} and r.meets is None
    net = bench.network("gelu_tanh", (6, 5, 3))
    assert [layer.activation.name for layer in net] == ["gelu_tanh", "identity"]


def test_graph_site_whose_activation_operand_overflowed_upstream():
    """Q K^T where K's projection overflows fp8-e4m3fn (NaN, no infinity in that format):
    the scores site is validated on the components whose operands are finite, and the
    others are left out instead of stopping the validation."""
    from emulator.graph import Graph, Node, TensorInfo

    rng = np.random.default_rng(3)
    nodes = [Node("key", "MatMul", ("x", "wk"), ("k",)),
             Node("keys", "Transpose", ("k",), ("kt",), {"perm": (0, 2, 1)}),
             Node("scores", "MatMul", ("x", "kt"), ("s",))]
    wk = np.full((4, 4), 0.25)
    wk[:, 3] = 240.0  # column 3 of K: about 4 * 240 * |x| > 448 for the large rows
    graph = Graph(nodes, [TensorInfo("x", "float", (None, 3, 4))], ["s"], {"wk": wk}, name="qk")
    x = rng.uniform(0.5, 1.0, (2, 3, 4))
    x[1] *= 0.01  # sample 1 stays finite
    result = validate(graph, {"x": x}, "fp8-e4m3fn").to_dict()
    scores = next(s for s in result["sites"] if s["name"] == "scores")
    assert result["violations"] == 0
    assert 0 < scores["local"]["components"] < 2 * 3 * 3  # sample 0's scores left out, sample 1's checked
