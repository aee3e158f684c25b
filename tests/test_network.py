"""Network and forward pass: validation, native / emulated / exact / per-layer passes and
storage rounding, each against an oracle (the Fraction oracles of tests/oracles.py, mpmath,
numpy's correctly rounded float64 -> float16 cast, ml_dtypes for e4m3 on float32 values)."""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest

from emulator.errors import DataError, FormatSpecError, ModelFileError, ShapeError, UnknownNameError
from emulator.network import ForwardResult, Layer, Network
from emulator.storage import parse_storage

from oracles import accumulate_matrix, exact_affine, rn_affine


def f32_values(rng, shape, scale=1.0) -> np.ndarray:
    """Random float64 values that are float32 numbers (so ml_dtypes casts are single roundings)."""
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


def small_net(seed=0, acts=("relu", "identity"), widths=(6, 5, 3), bias=(True, True), scale=1.0) -> Network:
    rng = np.random.default_rng(seed)
    layers = []
    for k, act in enumerate(acts):
        w = f32_values(rng, (widths[k + 1], widths[k]), scale)
        b = f32_values(rng, widths[k + 1], scale) if bias[k] else None
        layers.append(Layer(w, b, act))
    return Network(layers, "small")


# ---- validation --------------------------------------------------------------------

GOOD_W = np.ones((3, 2))
LAYER_ERRORS = [
    (dict(weight=np.ones(3), bias=None, activation="relu"), ShapeError, "must have 2 dimensions"),
    (dict(weight=np.ones((3, 0)), bias=None, activation="relu"), ShapeError, "at least one input"),
    (dict(weight=GOOD_W, bias=np.ones(2), activation="relu"), ShapeError, "layer.bias has length 2, but the weight has 3 rows"),
    (dict(weight=GOOD_W, bias=np.ones((3, 1)), activation="relu"), ShapeError, "layer.bias must have 1 dimension"),
    (dict(weight=np.array([[1.0, np.nan]]), bias=None, activation="relu"), DataError, "layer.weight contains NaN or Inf"),
    (dict(weight=GOOD_W, bias=np.array([0, np.inf, 0]), activation="relu"), DataError, "layer.bias contains NaN or Inf"),
    (dict(weight=np.array([["a", "b"]]), bias=None, activation="relu"), DataError, "layer.weight must hold real numbers"),
    (dict(weight=GOOD_W, bias=None, activation="swish9"), ModelFileError, "layer.activation: Unknown activation 'swish9'"),
    (dict(weight=GOOD_W, bias=None, activation="leaky_relu:x"), ModelFileError, "alpha 'x' is not a number"),
]


@pytest.mark.parametrize("kwargs, exc, fragment", LAYER_ERRORS)
def test_layer_errors(kwargs, exc, fragment):
    with pytest.raises(exc) as info:
        Layer(kwargs["weight"], kwargs["bias"], kwargs["activation"])
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_layer_copies_and_freezes():
    w = np.ones((2, 2), dtype=np.float32)
    layer = Layer(w, [1, 2], "tanh")
    w[0, 0] = 5
    assert layer.weight.dtype == np.float64 and layer.weight[0, 0] == 1.0
    assert layer.bias.dtype == np.float64
    with pytest.raises(ValueError):
        layer.weight[0, 0] = 3.0
    with pytest.raises(AttributeError):
        layer.bias = None
    assert layer.activation.name == "tanh" and (layer.n_inputs, layer.n_outputs) == (2, 2)


NETWORK_ERRORS = [
    ([], ShapeError, "has no layers"),
    ([Layer(np.ones((3, 2)), None, "relu"), Layer(np.ones((2, 4)), None, "relu")], ShapeError,
     "layer1.weight takes 4 inputs but layer0 gives 3 outputs (shapes do not chain)"),
    (["not a layer"], ModelFileError, "layer 0 is a str"),
]


@pytest.mark.parametrize("layers, exc, fragment", NETWORK_ERRORS)
def test_network_errors(layers, exc, fragment):
    with pytest.raises(exc) as info:
        Network(layers)
    assert fragment in str(info.value)


INPUT_ERRORS = [
    (np.ones((4, 5)), ShapeError, "Input data has 5 features but model 'small' takes 6 inputs"),
    (np.ones(7), ShapeError, "has 7 features"),
    (np.ones((2, 3, 6)), ShapeError, "Input data must have 1 or 2 dimensions, got shape (2, 3, 6)"),
    (np.array([[np.nan] * 6]), DataError, "contains NaN or Inf"),
    (np.array([["x"] * 6]), DataError, "must hold real numbers"),
]


@pytest.mark.parametrize("x, exc, fragment", INPUT_ERRORS)
def test_forward_rejects_bad_input(x, exc, fragment):
    with pytest.raises(exc) as info:
        small_net().forward(x)
    assert fragment in str(info.value)


STORAGE_ERRORS = [
    ("", FormatSpecError, "is empty"),
    ("fp16:sat", FormatSpecError, "takes the form FMT or FMT:saturate"),
    ("fp9", UnknownNameError, "Unknown format 'fp9'"),
]


@pytest.mark.parametrize("spec, exc, fragment", STORAGE_ERRORS)
def test_storage_errors(spec, exc, fragment):
    with pytest.raises(exc) as info:
        parse_storage(spec)
    assert fragment in str(info.value)


def test_per_layer_list_must_match_depth():
    with pytest.raises(ShapeError, match="has 3 entries but"):
        small_net().forward(np.ones(6), acc=[None, None, None])


def test_describe():
    net = small_net(acts=("tanh", "identity"), bias=(True, False))
    assert net.widths == [6, 5, 3] and len(net) == 2
    assert net.architecture == "6 -> 5 tanh -> 3 identity"
    assert net.n_params == 6 * 5 + 5 + 5 * 3
    assert net.describe()["bias"] == [True, False]


# ---- native float64 ------------------------------------------------------------------

def test_native_forward_within_float64_bound_of_exact():
    """|fl(W x + b) - (W x + b)| <= gamma_{n+1}(2^-53) (|b| + |W||x|), whatever the
    summation order; the activation is then applied to the computed pre-activation."""
    net = small_net(acts=("relu", "tanh"))
    x = f32_values(np.random.default_rng(1), (4, 6))
    res = net.forward(x, return_all=True)
    assert isinstance(res, ForwardResult) and np.array_equal(res.input, x)
    z = x
    for layer, pre, out in zip(net.layers, res.preactivations, res.outputs):
        n = layer.n_inputs + 1
        gamma = Fraction(n, 2**53) / (1 - Fraction(n, 2**53))
        for r in range(z.shape[0]):
            exact = exact_affine(layer.weight, z[r], layer.bias)
            for i, e in enumerate(exact):
                a = abs(Fraction(layer.bias[i])) + sum(abs(Fraction(layer.weight[i, j]) * Fraction(z[r, j])) for j in range(z.shape[1]))
                assert abs(Fraction(pre[r, i]) - e) <= gamma * a
        assert np.array_equal(out, layer.activation.f(pre))
        z = out
    assert not any(o.any() for o in res.overflow)
    np.testing.assert_array_equal(net.forward(x), res.outputs[-1])


def test_single_sample_keeps_its_shape():
    net = small_net()
    x = f32_values(np.random.default_rng(2), 6)
    y = net.forward(x)
    assert y.shape == (3,)
    np.testing.assert_array_equal(y, net.forward(x[None, :])[0])
    res = net.forward(x, return_all=True)
    assert [p.shape for p in res.preactivations] == [(5,), (3,)] and res.input.shape == (6,)


def test_predict_maps_classes():
    net = small_net()
    net = Network(net.layers, "c", {"classes": ["a", "b", "c"]})
    x = f32_values(np.random.default_rng(3), (5, 6))
    expected = np.array(["a", "b", "c"])[np.argmax(net.forward(x), axis=1)]
    assert list(net.predict(x)) == list(expected)


# ---- storage -----------------------------------------------------------------------

def test_with_storage_rounds_weights_like_numpy_float16():
    net = small_net(scale=100.0)
    stored = net.with_storage("fp16")
    for a, b in zip(net.layers, stored.layers):
        np.testing.assert_array_equal(b.weight, a.weight.astype(np.float16).astype(np.float64))
        np.testing.assert_array_equal(b.bias, a.bias.astype(np.float16).astype(np.float64))
    assert stored.meta["storage"] == "fp16"
    assert net.with_storage(None) is net


def test_with_storage_e4m3_saturates():
    """The authors' preset: e4m3 (IEEE-like, max 240) with saturation instead of inf."""
    w = np.array([[1000.0, -300.0, 0.3, 1e-3], [239.0, 248.0, -0.0625, 3.3]]).astype(np.float32).astype(np.float64)
    net = Network([Layer(w, None, "identity")])
    cast = w.astype(np.float32).astype(ml_dtypes.float8_e4m3).astype(np.float64)
    expected = np.where(np.isinf(cast), np.sign(cast) * 240.0, cast)
    np.testing.assert_array_equal(net.with_storage("e4m3:saturate")[0].weight, expected)
    with pytest.raises(FormatSpecError, match=r"layer0.weight: 3 values overflow storage format e4m3 .*use e4m3:saturate"):
        net.with_storage("e4m3")


def test_input_overflowing_storage_is_refused():
    with pytest.raises(FormatSpecError, match="input data: 1 values overflow storage format fp16"):
        small_net().forward(np.array([1e6, 0, 0, 0, 0, 0]), storage="fp16")


def test_native_forward_with_storage_rounds_input_and_every_output():
    net = small_net(acts=("relu", "identity"))
    x = f32_values(np.random.default_rng(4), (3, 6), 10.0)
    res = net.forward(x, storage="fp16", return_all=True)
    h = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    z = h(x)
    np.testing.assert_array_equal(res.input, z)
    for layer, pre, out in zip(net.layers, res.preactivations, res.outputs):
        y = z @ h(layer.weight).T + h(layer.bias)
        np.testing.assert_array_equal(pre, y)
        z = h(layer.activation.f(y))
        np.testing.assert_array_equal(out, z)


# ---- emulated (emulator.linear) --------------------------------------------------------

def test_emulated_forward_is_recursive_fp16_layer_by_layer():
    net = small_net(acts=("relu", "tanh"))
    x = f32_values(np.random.default_rng(5), (3, 6))
    res = net.forward(x, acc="fp16", return_all=True)
    z = x
    for layer, pre, out in zip(net.layers, res.preactivations, res.outputs):
        expected = accumulate_matrix(z, layer.weight, layer.bias, "fp16")[0]
        np.testing.assert_array_equal(pre, expected)
        z = layer.activation.f(expected)
        np.testing.assert_array_equal(out, z)
    np.testing.assert_array_equal(net.forward(x, acc="fp16"), res.outputs[-1])


def test_emulated_forward_with_storage_and_per_layer_override():
    net = small_net(acts=("relu", "identity"))
    x = f32_values(np.random.default_rng(6), (2, 6), 4.0)
    res = net.forward(x, acc=["fp16", None], storage="fp16", return_all=True)
    h = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    z = h(x)
    l0, l1 = net.layers
    pre0 = accumulate_matrix(z, h(l0.weight), h(l0.bias), "fp16")[0]
    np.testing.assert_array_equal(res.preactivations[0], pre0)
    z1 = h(l0.activation.f(pre0))
    np.testing.assert_array_equal(res.outputs[0], z1)
    np.testing.assert_array_equal(res.preactivations[1], z1 @ h(l1.weight).T + h(l1.bias))
    np.testing.assert_array_equal(res.outputs[1], h(res.preactivations[1]))


def test_per_layer_exact_entry_is_correctly_rounded():
    """In a per-layer list, an exact layer gives RN(W x̂ + b) at its computed input; every
    layer's output is rounded to storage."""
    net = small_net(acts=("relu", "identity"))
    x = f32_values(np.random.default_rng(9), (2, 6), 3.0)
    res = net.forward(x, acc=["exact", "fp16"], storage="fp16", return_all=True)
    h = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    l0, l1 = net.layers
    pre0 = rn_affine(h(x), h(l0.weight), h(l0.bias))
    np.testing.assert_array_equal(res.preactivations[0], pre0)
    np.testing.assert_array_equal(res.outputs[0], h(np.maximum(pre0, 0.0)))
    pre1 = accumulate_matrix(res.outputs[0], h(l1.weight), h(l1.bias), "fp16")[0]
    np.testing.assert_array_equal(res.preactivations[1], pre1)
    np.testing.assert_array_equal(res.outputs[1], h(pre1))


def test_emulated_overflow_is_flagged():
    w = np.array([[300.0, 300.0], [1.0, 1.0]])
    net = Network([Layer(w, None, "identity")])
    res = net.forward(np.array([300.0, 1.0]), acc="fp16", return_all=True)
    assert res.preactivations[0][0] == math.inf and res.preactivations[0][1] == 301.0
    assert list(res.overflow[0]) == [True, False]


# ---- exact (emulator.reference) ------------------------------------------------------

def test_exact_forward_relu_matches_fractions():
    """ReLU/identity networks are rational: the exact pass is Fractions, rounded once
    to float64 per reported value, never rounded between layers."""
    net = small_net(acts=("relu", "identity"))
    x = f32_values(np.random.default_rng(7), (2, 6))
    res = net.forward(x, acc="exact", return_all=True)
    for r in range(x.shape[0]):
        z = [Fraction(v) for v in x[r]]
        for k, layer in enumerate(net.layers):
            pre = exact_affine(layer.weight, z, layer.bias)
            z = [max(p, Fraction(0)) for p in pre] if layer.activation.name == "relu" else pre
            assert list(res.preactivations[k][r]) == [float(p) for p in pre]
            assert list(res.outputs[k][r]) == [float(v) for v in z]


def test_exact_forward_tanh_with_storage_matches_mpmath():
    net = small_net(acts=("tanh", "tanh"))
    x = f32_values(np.random.default_rng(8), (2, 6))
    res = net.forward(x, acc="exact", storage="fp16", return_all=True)
    h = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    with mpmath.workprec(300):
        for r in range(x.shape[0]):
            z = [mpmath.mpf(v) for v in h(x[r])]
            for k, layer in enumerate(net.layers):
                W, b = h(layer.weight), h(layer.bias)
                pre = [mpmath.fsum([mpmath.mpf(W[i, j]) * z[j] for j in range(len(z))]) + mpmath.mpf(b[i])
                       for i in range(layer.n_outputs)]
                z = [mpmath.tanh(p) for p in pre]
                assert list(res.preactivations[k][r]) == [float(p) for p in pre]
                assert list(res.outputs[k][r]) == [float(v) for v in z]
