"""Algorithm 1, its multi-level and static variants, the baselines and the sweep metrics.

Hand-made layers whose right selection is worked out in the comments; recomputed values
are checked against the recursive sum of tests/oracles.py (fractions.Fraction, every
addition rounded once, to nearest even, from the exact value)."""

import math
from fractions import Fraction

import numpy as np
import pytest

from analysis.mixed import MixedRun, take_first
from analysis.baselines import local_oracle_selection, random_selection, uniform_high, uniform_low
from analysis.cost import Cost
from analysis.policy import (
    PolicyError, forced, recompute, recompute_multilevel, recompute_static, scores, select, static_assignment,
)
from analysis.methods import METHODS
from analysis.sweep import output_metrics, sweep
from emulator.activations import get_activation
from emulator.errors import FormatSpecError, MixaccError, UnknownNameError
from emulator.network import Layer, Network

from oracles import accumulate, accumulate_matrix, exact_affine


def one_layer(weight, activation="identity", bias=None) -> Network:
    return Network([Layer(np.array(weight, dtype=float), bias, activation)], "hand")


# --- the selection on hand-made layers -------------------------------------------------

# Row 0 computes 1 - 0.999: heavy cancellation, kappa = 1.999 / 0.001 ~ 2000 (kappa-prime:
# 1 / |ŷ| ~ 1000); row 1 computes 1 + 0.999, kappa = 1 (kappa-prime 0.5). tau = 100
# recomputes row 0 only, whichever criterion.
CANCEL = dict(weight=[[1.0, -1.0], [1.0, 1.0]], x=[1.0, 0.999])


@pytest.mark.parametrize("criterion", ["kappa", "kappa-prime"])
def test_cancellation_recomputed_well_conditioned_not(criterion):
    run = recompute(one_layer(CANCEL["weight"]), [CANCEL["x"]], "fp16", "fp32", 100.0, criterion)
    assert run.masks[0].tolist() == [[True, False]]
    want = [accumulate(CANCEL["x"], CANCEL["weight"][0], None, "fp32").value,
            accumulate(CANCEL["x"], CANCEL["weight"][1], None, "fp16").value]
    assert run.outputs.tolist() == [want]


def test_scores_by_hand():
    # kappa on the cancelling row: acc_fp16(|1| + |0.999|) / |acc_fp16(1 - 0.999)|
    y = np.array([accumulate(CANCEL["x"], CANCEL["weight"][0], None, "fp16").value])
    a = np.array([accumulate(CANCEL["x"], [1.0, 1.0], None, "fp16").value])
    identity, relu = get_activation("identity"), get_activation("relu")
    assert scores(y, identity, "kappa", a)[0] == a[0] / y[0]
    assert scores(y, identity, "kappa-prime")[0] == 1 / y[0]
    assert scores(-y, relu, "kappa", a)[0] == 0.0  # ReLU: kappa_sigma(y < 0) = 0
    assert np.isnan(scores(np.array([0.0]), identity, "kappa-prime")[0])


def test_overflow_recomputed_at_any_tau():
    # row 0: 60000 + 60000 overflows fp16 (max 65504) -> inf, recomputed in fp32 = 120000;
    # row 1: 60 + 60, well conditioned, stays in fp16.
    net = one_layer([[1.0, 1.0], [1e-3, 1e-3]])
    run = recompute(net, [[60000.0, 60000.0]], "fp16", "fp32", math.inf)
    assert run.masks[0].tolist() == [[True, False]]
    assert run.outputs[0, 0] == 120000.0
    assert run.outputs[0, 1] == accumulate([60000.0, 60000.0], [1e-3, 1e-3], None, "fp16").value


def test_zero_result_recomputed_at_any_tau():
    run = recompute(one_layer([[1.0, -1.0], [1.0, 0.5]]), [[1.0, 1.0]], "fp16", "fp32", math.inf, "kappa-prime")
    assert run.masks[0].tolist() == [[True, False]]


def test_relu_negative_never_recomputed():
    # -1 + 0.999 < 0 under ReLU: kappa_sigma = 0, the score is 0, even at tau = 0.
    run = recompute(one_layer([[-1.0, 1.0]], "relu"), [CANCEL["x"]], "fp16", "fp32", 0.0)
    assert run.masks[0].tolist() == [[False]]
    assert run.outputs.tolist() == [[0.0]]


def test_undefined_score_recomputed():
    # fp16: 40000 - 40001 = -1 exactly, but acc(|40000| + |40001|) overflows -> a = inf and
    # s = inf * kappa_relu(-1) = inf * 0 = NaN: undefined, so recomputed even at tau = inf.
    run = recompute(one_layer([[1.0, 1.0]], "relu"), [[40000.0, -40001.0]], "fp16", "fp32", math.inf, "kappa")
    assert run.masks[0].tolist() == [[True]]


def test_select_rule_table():
    s = np.array([0.5, 2.0, np.nan, np.inf, 1.0])
    must = np.array([False, False, False, False, True])
    assert select(s, must, 1.0).tolist() == [False, True, True, True, True]
    assert select(s, must, math.inf).tolist() == [False, False, True, False, True]
    y = np.array([1.0, 0.0, np.inf, np.nan, -2.0])
    assert forced(y, np.array([False, False, False, False, True])).tolist() == [False, True, True, True, True]


# --- tau = 0 and tau = inf on a network ------------------------------------------------


def tanh_network(seed: int = 3) -> Network:
    rng = np.random.default_rng(seed)
    return Network([
        Layer(rng.standard_normal((7, 9)), rng.standard_normal(7), "tanh"),
        Layer(rng.standard_normal((5, 7)), rng.standard_normal(5), "sigmoid"),
        Layer(rng.standard_normal((3, 5)), None, "identity"),
    ], "tanh-net")


X = np.random.default_rng(11).standard_normal((6, 9))


@pytest.mark.parametrize("criterion", ["kappa", "kappa-prime"])
@pytest.mark.parametrize("storage", [None, "bf16"])
def test_tau_zero_is_uniform_high(criterion, storage):
    net = tanh_network()
    run = recompute(net, X, "bf16", "fp32", 0.0, criterion, storage)
    assert all(m.all() for m in run.masks)
    high = net.forward(X, acc="fp32", storage=storage)
    assert np.array_equal(run.outputs, high)
    assert np.array_equal(run.outputs, uniform_high(net, X, "bf16", "fp32", storage).outputs)


@pytest.mark.parametrize("criterion", ["kappa", "kappa-prime"])
def test_tau_inf_is_uniform_low(criterion):
    net = tanh_network()
    run = recompute(net, X, "bf16", "fp32", math.inf, criterion)
    assert not any(m.any() for m in run.masks)
    assert np.array_equal(run.outputs, net.forward(X, acc="bf16"))
    assert np.array_equal(run.outputs, uniform_low(net, X, "bf16", "fp32").outputs)


def test_tau_inf_forced_only_low_elsewhere():
    # sample 0 overflows fp16 in row 0; everything else stays fp16.
    net = one_layer([[1.0, 1.0], [0.25, -0.5]])
    x = np.array([[60000.0, 60000.0], [3.0, 1.0]])
    run = recompute(net, x, "fp16", "fp32", math.inf)
    low = net.forward(x, acc="fp16")
    assert run.masks[0].tolist() == [[True, False], [False, False]]
    assert run.outputs[0, 0] == 120000.0 and np.isinf(low[0, 0])
    keep = ~run.masks[0]
    assert np.array_equal(run.outputs[keep], low[keep])


def test_mixed_output_feeds_next_layer():
    net = tanh_network()
    whole = recompute(net, X, "bf16", "fp32", 3.0)
    z = X
    for k, layer in enumerate(net.layers):
        part = recompute(Network([layer]), z, "bf16", "fp32", 3.0)
        assert np.array_equal(part.masks[0], whole.masks[k])
        z = part.outputs
    assert np.array_equal(z, whole.outputs)
    assert 0 < whole.fraction < 1  # a real mix, not a degenerate case


# --- multi-level -----------------------------------------------------------------------

# Three rows, identity, levels bf16 (u = 2^-8), fp32 (2^-24), fp64 (2^-53), tau = 2^-6:
# row 0: 1 + 0.5, s = 1: u_bf16 s = 2^-8 <= tau -> bf16;
# row 1: 1 - (1 - 2^-10) = 2^-10 exactly, a = 2, s = 2^11: bf16 8 > tau, fp32 2^-13 -> fp32;
# row 2: 1 - (1 - 2^-20) = 2^-20, s = 2^21: fp32 2^-3 > tau -> fp64.
LEVEL_X = [1.0, 0.5, 1.0, -(1 - 2.0**-10), 1.0, -(1 - 2.0**-20)]
LEVEL_W = [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]]


def test_multilevel_by_hand():
    run = recompute_multilevel(one_layer(LEVEL_W), [LEVEL_X], ["bf16", "fp32", "fp64"], 2.0**-6)
    assert run.choices[0].tolist() == [[0, 1, 2]]
    want = [accumulate(LEVEL_X, w, None, f).value for w, f in zip(LEVEL_W, ["bf16", "fp32", "fp64"])]
    assert run.outputs.tolist() == [want]
    # bits: bf16 pass + magnitude pass on 3 rows, one row in fp32, one in fp64; n = 6
    assert run.cost.total == 6 * (2 * 3 * 16 + 32 + 64)
    assert run.cost.reference == 6 * 3 * 64


def test_multilevel_overflow_moves_up():
    # bf16: 40000 -> 39936, +40000 -> 79872, -79990 -> -118; a ~ 1.6e5, s ~ 1356:
    # bf16 1356/256 > 1 = tau, fp16 1356/2048 <= 1 -> fp16, where 40000 + 40000
    # overflows -> fp32, exact 10.
    net = one_layer([[1.0, 1.0, -1.0]])
    x = [[40000.0, 40000.0, 79990.0]]
    run = recompute_multilevel(net, x, ["bf16", "fp16", "fp32"], 1.0)
    assert run.choices[0].tolist() == [[2]]
    assert run.outputs.tolist() == [[10.0]]
    assert run.cost.total == 3 * (2 * 16 + 16 + 32)


@pytest.mark.parametrize("tau", [0.5, 8.0, 300.0])
def test_two_levels_are_algorithm_1(tau):
    net = tanh_network()
    two = recompute_multilevel(net, X, ["bf16", "fp32"], tau)
    one = recompute(net, X, "bf16", "fp32", tau / 2.0**-8)
    assert all(np.array_equal(a, b) for a, b in zip(two.masks, one.masks))
    assert np.array_equal(two.outputs, one.outputs)
    assert two.cost == one.cost


# --- static ----------------------------------------------------------------------------


def _fake_run(masks) -> MixedRun:
    return MixedRun("guided", "kappa", 1.0, (), np.zeros((1, 1)), np.zeros((1, 1)), tuple(np.array(m, np.int8) for m in masks),
                    Cost("bits", 1.0, 1.0, (1.0,)))


def test_static_assignment_by_hand():
    # 4 samples x 3 neurons; recompute frequencies 3/4, 1/4, 0; layer fraction 4/12 -> 1 neuron
    masks = [[[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]]]
    assert static_assignment(_fake_run(masks))[0].tolist() == [True, False, False]
    # every neuron 2/3, layer fraction 2/3 -> 2 neurons; ties go to the lower index
    masks = [[[0, 1, 1], [1, 0, 1], [1, 1, 0]]]
    assert static_assignment(_fake_run(masks))[0].tolist() == [True, True, False]
    # frequencies 1/3, 2/3, 1/3; fraction 4/9 of 3 neurons -> round(4/3) = 1 neuron
    assert static_assignment(_fake_run([[[0, 1, 1], [1, 0, 0], [0, 1, 0]]]))[0].tolist() == [False, True, False]


def test_static_applies_per_neuron_formats():
    from emulator.linear import linear

    net = tanh_network()
    calib = np.random.default_rng(5).standard_normal((20, 9))
    run = recompute_static(net, calib, X, "bf16", "fp32", 3.0, "kappa")
    assign = static_assignment(recompute(net, calib, "bf16", "fp32", 3.0, "kappa"))
    z = X
    for k, layer in enumerate(net.layers):
        assert np.array_equal(run.masks[k], np.broadcast_to(assign[k], run.masks[k].shape))
        lo = linear(z, layer.weight, layer.bias, "bf16")
        hi = linear(z, layer.weight, layer.bias, "fp32")
        z = layer.activation.f(np.where(assign[k], hi, lo))
    assert np.array_equal(run.outputs, z)
    # no estimation pass: every inner product once, in its neuron's format
    h = [int(a.sum()) for a in assign]
    want = sum(X.shape[0] * l.n_inputs * ((l.n_outputs - hk) * 16 + hk * 32) for l, hk in zip(net.layers, h))
    assert run.cost.total == want


# --- baselines -------------------------------------------------------------------------


def test_baselines_match_guided_counts():
    net = tanh_network()
    guided = recompute(net, X, "bf16", "fp32", 3.0)
    for run in (random_selection(net, X, guided, seed=1), local_oracle_selection(net, X, guided)):
        assert [m.sum(axis=1).tolist() for m in run.masks] == [m.sum(axis=1).tolist() for m in guided.masks]
        assert (run.criterion, run.tau) == ("kappa", 3.0)


def test_random_is_seeded():
    net = tanh_network()
    guided = recompute(net, X, "bf16", "fp32", 3.0)
    a, b, c = (random_selection(net, X, guided, seed=s) for s in (7, 7, 8))
    assert all(np.array_equal(p, q) for p, q in zip(a.masks, b.masks))
    assert not all(np.array_equal(p, q) for p, q in zip(a.masks, c.masks))


def test_oracle_picks_the_true_error_not_the_score():
    # row 0: 1 - 0.75 = 0.25 exactly in fp16 (kappa = 7, no error); row 1: 1 + 2^-12 rounds
    # to 1 in fp16 (kappa = 1, error 2^-12). Guided at tau = 5 recomputes row 0; the oracle,
    # with the same budget of one, recomputes row 1.
    x = [[1.0, 0.75, 1.0, 2.0**-12]]
    net = one_layer([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    W = [[1, -1, 0, 0], [0, 0, 1, 1]]
    exact = exact_affine(W, x[0])
    low = accumulate_matrix(x[0], W, None, "fp16")[0]
    assert Fraction(low[0]) == exact[0] and Fraction(low[1]) != exact[1]
    guided = recompute(net, x, "fp16", "fp32", 5.0)
    assert guided.masks[0].tolist() == [[True, False]]
    for error in ("relative", "absolute"):
        assert local_oracle_selection(net, x, guided, error).masks[0].tolist() == [[False, True]]


def test_uniform_costs():
    net = tanh_network()
    assert uniform_high(net, X, "bf16", "fp32").cost.relative == 1.0
    assert uniform_low(net, X, "bf16", "fp32").cost.relative == 0.5
    assert uniform_low(net, X, "bf16", "fp32", cost="quadratic").cost.relative == 64 / 576


@pytest.mark.parametrize("criterion, passes", [("kappa", 2), ("kappa-prime", 1)])
def test_guided_cost_by_hand(criterion, passes):
    # CANCEL at tau = 100: n = 2, m = 2, N = 1; low (and magnitude) passes on 2 rows in fp16,
    # one row recomputed in fp32; reference 2 rows x 2 x 32.
    run = recompute(one_layer(CANCEL["weight"]), [CANCEL["x"]], "fp16", "fp32", 100.0, criterion)
    assert run.cost.total == 2 * (passes * 2 * 16 + 32)
    assert run.cost.reference == 2 * 2 * 32


# --- metrics and sweep -----------------------------------------------------------------


def test_output_metrics_by_hand():
    exact = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 4.0, 1.0]])
    z = np.array([[1.5, 2.0, 0.0], [0.5, 1.0, 0.0], [0.0, 4.0, 1.0]])
    m = output_metrics(z, exact, z, exact, labels=[1, 0, 2])
    # predictions z: 1, 1, 1; exact: 1, 0, 1; labels 1, 0, 2 -> accuracy 1/3, flips 1/3
    assert m["accuracy"] == 1 / 3 and m["flip_rate"] == 1 / 3
    # relative errors: 0.5, 0, 0 | 5/6, 0, 0 | 0, 0, 0 -> median 0, max 5/6
    assert m["median_rel_error"] == 0.0 and m["max_rel_error"] == 2.5 / 3.0
    nan_row = output_metrics(*[np.array([[np.nan, 1.0]]), np.array([[0.0, 1.0]])] * 2, labels=[1])
    assert nan_row["accuracy"] == 0.0 and nan_row["flip_rate"] == 1.0 and nan_row["max_rel_error"] == math.inf
    assert output_metrics(z, exact, z, exact)["accuracy"] is None


def test_sweep_runs_every_method():
    net = tanh_network()
    calib = np.random.default_rng(5).standard_normal((10, 9))
    result = sweep(net, X, "bf16", "fp32", [math.inf, 3.0], ["kappa", "kappa-prime"], labels=[0, 1, 2, 0, 1, 2],
                   levels=["bf16", "fp16", "fp32"], x_calibration=calib)
    methods = [r.method for r in result.runs]
    assert methods[:2] == ["uniform-low", "uniform-high"]
    assert set(methods) == {m.name for m in METHODS.rows() if not m.graphs_only}
    assert len(result.runs) == 2 + 2 * 2 * 5
    low, high = result.runs[0], result.runs[1]
    assert high.flip_rate <= 1 and low.relative_cost == 0.5 and high.recompute_fraction == 1.0
    inf_guided = result.runs[2]
    assert (inf_guided.method, inf_guided.tau) == ("guided", math.inf)
    assert inf_guided.median_rel_error == low.median_rel_error and inf_guided.max_rel_error == low.max_rel_error
    record = result.runs[3].describe()
    assert {"method", "criterion", "tau", "accuracy", "flip_rate", "median_rel_error", "max_rel_error",
            "recompute_fraction", "layer_recompute_fraction", "relative_cost"} <= set(record)


# --- bad input -------------------------------------------------------------------------

NET = one_layer([[1.0, 1.0]])
ERRORS = [
    (lambda: recompute(NET, [[1.0, 2.0]], "fp16", "fp32", -1.0), PolicyError, "tau == -1.0, must be a number >= 0"),
    (lambda: recompute(NET, [[1.0, 2.0]], "fp16", "fp32", float("nan")), PolicyError, "tau == nan"),
    (lambda: recompute(NET, [[1.0, 2.0]], "fp16", "fp32", "big"), PolicyError, "tau == 'big'"),
    (lambda: recompute(NET, [[1.0, 2.0]], "fp16", "fp32", 1.0, "kappa2"), UnknownNameError,
     "Unknown recompute criterion 'kappa2'. Possible values are: kappa, kappa-prime"),
    (lambda: recompute(NET, [[1.0, 2.0]], "exact", "fp32", 1.0), MixaccError, "is exact and has no cost"),
    (lambda: recompute(NET, [[1.0, 2.0]], "fp99", "fp32", 1.0), UnknownNameError, "Unknown format 'fp99'"),
    (lambda: recompute(NET, [[1.0, 2.0, 3.0]], "fp16", "fp32", 1.0), MixaccError, "has 3 features"),
    (lambda: recompute_multilevel(NET, [[1.0, 2.0]], ["fp16"], 1.0), PolicyError, "give at least two formats"),
    (lambda: recompute_multilevel(NET, [[1.0, 2.0]], ["fp32", "fp16"], 1.0), PolicyError,
     "levels must go from least to most precise: fp16"),
    (lambda: local_oracle_selection(NET, [[1.0, 2.0]], recompute(NET, [[1.0, 2.0]], "fp16", "fp32", 1.0), "squared"),
     UnknownNameError, "Unknown oracle error 'squared'. Possible values are: relative, absolute"),
    (lambda: random_selection(NET, [[1.0, 2.0], [3.0, 4.0]], recompute(NET, [[1.0, 2.0]], "fp16", "fp32", 1.0)),
     PolicyError, "has 1 samples but the input has 2"),
    (lambda: sweep(NET, [[1.0, 2.0]], "fp16", "fp32", [1.0], baselines=["lucky"]), UnknownNameError,
     "Unknown baseline 'lucky'. Possible values are: random, local-oracle"),
    (lambda: output_metrics(*[np.zeros((2, 3))] * 4, labels=[1]), MixaccError, "1 labels for 2 samples"),
]


@pytest.mark.parametrize("call, exc, fragment", ERRORS)
def test_errors(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


def test_take_first_ties_by_index():
    keys = np.array([[3.0, 1.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    assert take_first(keys, np.array([2, 3])).tolist() == [[False, True, False, True], [True, True, True, False]]


def test_take_first_puts_first_before_equal_keys():
    # forced entries come first even when others tie with them at -inf
    keys = np.array([[-np.inf, -np.inf, 0.0, -np.inf]])
    first = np.array([[False, False, False, True]])
    assert take_first(keys, np.array([2]), first).tolist() == [[True, False, False, True]]
    assert take_first(keys, np.array([1]), first).tolist() == [[False, False, False, True]]


def test_oracle_budget_goes_to_forced_components_first():
    # ReLU, fp16, tau = inf: row 0 sums 1 - 2^-13 - 1 + 2^-14: fp16 loses the -2^-13
    # (1 - 2^-13 rounds to 1) and ends at +2^-14 where the exact sum is -2^-14, so its true
    # relative error is infinite; row 1 sums 1 - 1 = 0, forced. Guided recomputes row 1
    # only (budget 1); the oracle must spend that budget on the forced row, not on row 0.
    net = one_layer([[1.0, -1.0, -1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0, -1.0]], "relu")
    x = [[1.0, 2.0**-13, 1.0, 2.0**-14, 1.0, 1.0]]
    assert accumulate(x[0], [1.0, -1.0, -1.0, 1.0, 0.0, 0.0], None, "fp16").value == 2.0**-14
    guided = recompute(net, x, "fp16", "fp32", math.inf, "kappa-prime")
    assert guided.masks[0].tolist() == [[False, True]]
    assert local_oracle_selection(net, x, guided).masks[0].tolist() == [[False, True]]


def test_mixed_forward_treats_storage_like_forward():
    """Input that overflows the storage format is refused alike by Network.forward and by
    every mixed pass (they share Network.prepare); with :saturate both clamp it."""
    net = tanh_network()
    x = X.copy()
    x[0, 0] = 1e6
    with pytest.raises(FormatSpecError, match="input data: 1 values overflow storage format fp8-e4m3fn") as forward:
        net.forward(x, acc="fp16", storage="fp8-e4m3fn")
    with pytest.raises(FormatSpecError) as mixed:
        recompute(net, x, "fp16", "fp32", 1.0, storage="fp8-e4m3fn")
    assert str(mixed.value) == str(forward.value)
    saturated = uniform_low(net, x, "fp16", "fp32", storage="fp8-e4m3fn:saturate")
    np.testing.assert_array_equal(saturated.outputs, net.forward(x, acc="fp16", storage="fp8-e4m3fn:saturate"))
