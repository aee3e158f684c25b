"""Budgeted and granular selection (analysis.selection): budget 0 and 1 against the uniform
runs bit for bit, whole rows and tiles, the target error met for the predicted error, the
greedy order, and bad rules."""

import math

import numpy as np
import pytest

from analysis.baselines import uniform_high, uniform_low
from analysis.criteria import scores
from analysis.policy import PolicyError, recompute
from analysis.selection import choose, make_rule, parse_tile, unit_labels
from emulator.activations import get_activation
from emulator.formats import get_format
from emulator.linear import linear
from emulator.network import Layer, Network


def network(seed=0) -> Network:
    rng = np.random.default_rng(seed)
    return Network([Layer(rng.normal(size=(12, 9)), rng.normal(size=12), "relu"),
                    Layer(rng.normal(size=(5, 12)), None, "identity")], "two")


X = np.random.default_rng(7).normal(size=(11, 9))
GRANULARITIES = [("component", (16, 16)), ("row", (16, 16)), ("tile", (4, 3))]


@pytest.mark.parametrize("criterion", ["kappa", "kappa-prime", "kappa-holder", "kappa-blocked:4"])
@pytest.mark.parametrize("granularity, tile", GRANULARITIES)
def test_budget_zero_is_uniform_low_and_full_budget_uniform_high(criterion, granularity, tile):
    net = network()
    low, high = uniform_low(net, X, "e4m3", "fp16"), uniform_high(net, X, "e4m3", "fp16")
    none = recompute(net, X, "e4m3", "fp16", None, criterion, budget=0, granularity=granularity, tile=tile)
    full = recompute(net, X, "e4m3", "fp16", None, criterion, budget=1, granularity=granularity, tile=tile)
    assert none.fraction == 0 and full.fraction == 1
    assert np.array_equal(none.outputs, low.outputs) and np.array_equal(none.logits, low.logits)
    assert np.array_equal(full.outputs, high.outputs) and np.array_equal(full.logits, high.logits)
    assert none.outputs.tobytes() == low.outputs.tobytes() and full.outputs.tobytes() == high.outputs.tobytes()
    assert full.selection == {"granularity": granularity, "budget": 1.0, "target_error": None,
                              **({"tile": f"{tile[0]}x{tile[1]}"} if granularity == "tile" else {})}


@pytest.mark.parametrize("budget", [0.05, 0.3, 0.61])
@pytest.mark.parametrize("granularity, tile", GRANULARITIES)
def test_budget_is_respected(budget, granularity, tile):
    run = recompute(network(), X, "e4m3", "fp16", None, "kappa", budget=budget, granularity=granularity, tile=tile)
    unit = {"component": 1, "row": X.shape[0], "tile": tile[0] * tile[1]}[granularity]
    for mask in run.masks:
        allowance = math.floor(budget * mask.size)
        assert mask.sum() <= allowance and (mask.sum() > 0 or allowance < unit)
        assert allowance - mask.sum() < unit or mask.all()  # the next unit would not have fitted


@pytest.mark.parametrize("rule", [dict(tau=40.0), dict(budget=0.4), dict(target_error=2.0)])
def test_rows_and_tiles_are_recomputed_whole(rule):
    net = network(3)
    rows = recompute(net, X, "e4m3", "fp16", rule.get("tau"), "kappa", budget=rule.get("budget"),
                     target_error=rule.get("target_error"), granularity="row")
    for mask in rows.masks:
        assert np.all(mask == mask[:1])  # a column (neuron) for every sample, or not at all
    assert any(0 < m.mean() < 1 for m in rows.masks)
    tiles = recompute(net, X, "e4m3", "fp16", rule.get("tau"), "kappa", budget=rule.get("budget"),
                      target_error=rule.get("target_error"), granularity="tile", tile="4x3")
    for mask in tiles.masks:
        for r in range(0, mask.shape[0], 4):
            for c in range(0, mask.shape[1], 3):
                block = mask[r:r + 4, c:c + 3]
                assert block.all() or not block.any()
    assert any(0 < m.mean() < 1 for m in tiles.masks)


@pytest.mark.parametrize("granularity, tile", GRANULARITIES)
@pytest.mark.parametrize("target", [4.0, 1.0, 0.3])
@pytest.mark.parametrize("criterion", ["kappa", "kappa-holder"])
def test_target_error_is_met_for_the_predicted_error(granularity, tile, target, criterion):
    # one layer: its scores are computed here again from the low pass and the criterion
    rng = np.random.default_rng(5)
    W, b = rng.normal(size=(13, 9)), rng.normal(size=13)
    net = Network([Layer(W, b, "tanh")], "one")
    run = recompute(net, X, "e4m3", "fp16", None, criterion, target_error=target, granularity=granularity,
                    tile=tile)
    y, ovf = linear(X, W, b, "e4m3", return_overflow=True)
    if criterion == "kappa":
        magnitude = linear(np.abs(X), np.abs(W), np.abs(b), "e4m3")
    else:
        from analysis.estimates import holder_bound
        magnitude = holder_bound(X, W, b)
    s = scores(y, get_activation("tanh"), criterion, magnitude)
    u = get_format("e4m3").u
    low = ~run.masks[0]
    assert np.all(u * s[low] <= target) and not np.any((ovf | (y == 0))[low])
    assert low.any() or target < 1
    if granularity == "component":  # nothing recomputed that meets the target already
        assert np.array_equal(run.masks[0], ~(u * s <= target))


def test_budget_takes_the_largest_predicted_errors_first():
    score = np.array([[1.0, 5.0, 3.0], [np.nan, 0.5, 4.0]])
    must = np.zeros(score.shape, dtype=bool)
    mask = choose(score, must, make_rule(budget=0.5), 0.5)  # 3 components: NaN (inf) first, then 5, 4
    assert mask.tolist() == [[False, True, False], [True, False, True]]
    rows = choose(score, must, make_rule(budget=0.34, granularity="row"), 0.5)  # 2 components: one row
    assert rows.tolist() == [[True, False, False], [True, False, False]]
    target = choose(score, must, make_rule(target=1.6), 0.5)  # u s > 1.6: s > 3.2, and NaN
    assert target.tolist() == [[False, True, False], [True, False, True]]
    both = choose(score, must, make_rule(target=1.6, budget=0.34), 0.5)
    assert both.tolist() == [[False, True, False], [True, False, False]]


def test_unit_labels():
    rule = make_rule(budget=0, granularity="tile", tile="2x2")
    assert unit_labels((3, 3), rule).tolist() == [[0, 0, 1], [0, 0, 1], [2, 2, 3]]
    assert unit_labels((2, 3), make_rule(budget=0, granularity="row")).tolist() == [[0, 1, 2], [0, 1, 2]]


@pytest.mark.parametrize("kwargs", [
    dict(), dict(tau=1.0, budget=0.5), dict(budget=-1), dict(budget=float("inf")), dict(budget="x"),
    dict(target=-0.1), dict(budget=0.5, granularity="block"), dict(budget=0.5, granularity="tile", tile="4x0"),
    dict(budget=0.5, granularity="tile", tile="4by4"),
])
def test_bad_rules(kwargs):
    with pytest.raises(Exception) as info:
        make_rule(**kwargs)
    assert "\n" not in str(info.value)


def test_parse_tile():
    assert parse_tile("16x8") == (16, 8)
    with pytest.raises(PolicyError):
        parse_tile("0x8")
