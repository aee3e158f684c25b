"""Output metrics: one rule for the predicted class (on the logits, NaN rows predict no
class), relative errors and flip rates, used alike by predict, emulate, validate and the
recompute sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.emulation import emulate
from analysis.sweep import sweep
from analysis.validation import validate
from emulator.errors import DataError
from emulator.metrics import accuracy, class_labels, flip_rate, predicted_class, ratio, relative_error
from emulator.network import Layer, Network


@pytest.mark.parametrize("logits, want", [
    ([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]], [-1, -1]),
    ([[1.0, 5.0, 3.0], [2.0, 2.0, -1.0]], [1, 0]),
    ([[0.3], [-0.3], [0.0], [np.nan]], [1, 0, 0, -1]),
    ([[-np.inf, -1.0], [np.inf, np.inf]], [1, 0]),
])
def test_predicted_class(logits, want):
    assert predicted_class(np.array(logits)).tolist() == want


def test_predicted_class_of_one_row_is_a_scalar():
    assert predicted_class(np.array([0.1, 0.7])) == 1


@pytest.mark.parametrize("num, den, want", [
    (0.0, 0.0, 0.0), (1.0, 0.0, math.inf), (-3.0, 2.0, 1.5), (np.nan, 1.0, math.inf), (1.0, np.nan, math.inf),
    (np.inf, 1.0, math.inf), (np.inf, np.inf, math.inf), (2.0, -np.inf, 0.0),
])
def test_ratio_rules(num, den, want):
    assert ratio(num, den) == want


def test_relative_error_rules():
    got = relative_error([1.0, 0.0, np.nan, 3.0, np.inf], [1.0, 0.0, 2.0, 0.0, 1.0])
    assert got.tolist() == [0.0, 0.0, math.inf, math.inf, math.inf]
    assert relative_error(1.5, 2.0) == 0.25


def test_flip_rate_and_accuracy():
    pred, exact = np.array([0, 2, -1, 1]), np.array([0, 1, 1, 1])
    assert flip_rate(pred, exact) == 0.5
    assert accuracy(pred, [0, 2, 1, 0]) == 0.5
    assert accuracy(pred, [7, 9, 8, 8], classes=[7, 8, 9]) == 0.75
    assert class_labels(pred, ["a", "b", "c"]).tolist() == ["a", "c", None, "b"]
    with pytest.raises(DataError, match="3 labels for 4 samples"):
        accuracy(pred, [0, 1, 2])


def _sigmoid_classifier() -> Network:
    """One sigmoid output unit: class 1 where the logit x_0 - x_1 is > 0."""
    return Network([Layer([[1.0, -1.0]], None, "sigmoid")], "wake-word", {"classes": [0, 1]})


# exact logit 2^-5 - 2^-6 = 2^-6 > 0; in fp8-e4m3fn, 1 + 2^-5 rounds to 1 and the sum to -2^-6
X_FLIP = np.array([[1 + 2.0**-5, 1 + 2.0**-6]])


def test_one_output_classifier_decides_on_the_logit():
    net = _sigmoid_classifier()
    assert net.forward(X_FLIP, acc="fp8-e4m3fn")[0, 0] > 0  # a sigmoid output is always > 0
    assert net.predict(X_FLIP).tolist() == [1]
    assert net.predict(X_FLIP, acc="fp8-e4m3fn").tolist() == [0]
    v = validate(net, X_FLIP, "fp8-e4m3fn", labels=[1])
    assert (v.flips, v.flip_rate, v.accuracy, v.exact_accuracy) == (1, 1.0, 0.0, 1.0)
    e = emulate(net, X_FLIP, "fp8-e4m3fn", labels=[1])
    assert (e.flips, e.accuracy, e.exact_accuracy) == (1, 0.0, 1.0)
    runs = {r.method: r for r in sweep(net, X_FLIP, "fp8-e4m3fn", "fp32", [math.inf], labels=[1]).runs}
    assert (runs["uniform-low"].flip_rate, runs["uniform-low"].accuracy) == (1.0, 0.0)
    assert (runs["uniform-high"].flip_rate, runs["uniform-high"].accuracy) == (0.0, 1.0)


def test_a_nan_row_predicts_no_class_everywhere():
    """fp8-e4m3fn overflows to NaN at 500: the row predicts no class, is wrong and flipped
    in predict, emulate, validate and the sweep alike."""
    net = Network([Layer([[1.0, 0.0], [0.0, 1.0], [0.0, 0.5]], None, "identity")], "three", {"classes": [5, 6, 7]})
    x = np.array([[500.0, 1.0], [1.0, 3.0]])
    assert net.predict(x, acc="fp8-e4m3fn").tolist() == [-1, 6]
    assert net.predict(x).tolist() == [5, 6]
    v = validate(net, x, "fp8-e4m3fn", labels=[5, 6])
    e = emulate(net, x, "fp8-e4m3fn", labels=[5, 6])
    low = sweep(net, x, "fp8-e4m3fn", "fp32", [math.inf], labels=[5, 6]).runs[0]
    assert (v.flip_rate, v.accuracy) == (e.flip_rate, e.accuracy) == (low.flip_rate, low.accuracy) == (0.5, 0.5)


def test_distribution_and_embedding_metrics():
    from emulator.metrics import cosine_similarity, kl_divergence, neighbour_flips

    exact = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert kl_divergence(exact, exact).tolist() == [0.0, 0.0]
    p = np.exp(exact[0]) / np.exp(exact[0]).sum()
    q = np.exp([1.0, 2.0, 3.5]) / np.exp([1.0, 2.0, 3.5]).sum()
    assert kl_divergence([[1.0, 2.0, 3.5]], exact[:1])[0] == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-12)
    assert kl_divergence([[np.nan, 0.0, 0.0]], exact[:1])[0] == math.inf
    s = 1 / (1 + np.exp(-0.3))
    one = kl_divergence([[0.5]], [[0.3]])[0]
    t = 1 / (1 + np.exp(-0.5))
    assert one == pytest.approx(s * np.log(s / t) + (1 - s) * np.log((1 - s) / (1 - t)), rel=1e-12)
    assert cosine_similarity([[3.0, 4.0], [0.0, 0.0], [1.0, np.nan]], [[4.0, 3.0], [0.0, 0.0], [1.0, 1.0]]).tolist() == \
        [24 / 25, 1.0, -math.inf]
    e = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert neighbour_flips(e, e).tolist() == [False, False, False]
    assert neighbour_flips(np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 0.9]]), e).tolist() == [True, True, False]
    assert neighbour_flips(e[:1], e[:1]).tolist() == [False]
    broken = e.copy()
    broken[2, 0] = np.nan  # an embedding that is not finite has changed, whatever its row
    assert neighbour_flips(broken, e).tolist() == [False, False, True]
    assert neighbour_flips(broken[2:], e[2:]).tolist() == [True]


def test_emulate_says_how_well_the_exact_pass_pins_the_outputs_down():
    from analysis.emulation import _Errors
    from emulator import load_data, load_model
    from emulator.graph import forward
    from emulator.graph.ball import ExactValue
    from emulator.graph.exact import exact_values
    from emulator.reference import exact_forward

    model = load_model("digits-relu")
    x = load_data("digits").x[:8]
    out = emulate(model, x, "fp16").output_error
    reference = exact_forward(model, x).outputs[-1]  # certified to 2^-60 relative
    graph = model.graph
    ball = exact_values(forward(graph, {graph.inputs[0].name: x}, "exact"))[graph.outputs[0]]
    assert np.all(np.abs(ball.value - reference) <= ball.radius + 2.0**-59 * np.abs(reference))
    assert out["reference_uncertified"] == int(np.count_nonzero(~ball.rounded)) <= reference.size
    assert out["reference_max_radius"] == float(np.max(ball.radius)) < 1e-12
    errors = _Errors()
    errors.add(np.array([1.0, 2.0]), ExactValue(np.array([1.0, 2.5]), np.array([0.0, 0.25]), np.array([True, False])))
    summary = errors.summary()
    assert summary["reference_uncertified"] == 1 and summary["reference_max_radius"] == 0.25
    assert summary["max_abs"] == 0.5
