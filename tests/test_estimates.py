"""The certified estimates of a_i = |b_i| + sum_j |w_ij||x_j| (analysis.estimates) against
the exact a_i in fractions.Fraction: never below it, on random, subnormal and huge values;
the criteria built on them and the work the cost model charges for them."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.cost import inner_product_cost
from analysis.criteria import get_criterion
from analysis.estimates import (EstimateError, blocked, blocked_bound, float32_up, get_estimate, holder_bound)
from analysis.policy import recompute
from emulator.errors import MixaccError
from emulator.linear import linear
from emulator.network import Layer, Network

FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-300, max_value=1e-300, allow_subnormal=True),
    st.floats(min_value=-4.0, max_value=4.0),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 3.4e38, 1e-45]),
)


@st.composite
def problems(draw):
    n = draw(st.integers(1, 9))
    m = draw(st.integers(1, 4))
    rows = draw(st.integers(1, 3))
    x = np.array(draw(st.lists(FLOATS, min_size=rows * n, max_size=rows * n))).reshape(rows, n)
    W = np.array(draw(st.lists(FLOATS, min_size=m * n, max_size=m * n))).reshape(m, n)
    bias = draw(st.one_of(st.none(), st.lists(FLOATS, min_size=m, max_size=m).map(np.array)))
    return x, W, bias


def exact_a(x, W, bias) -> list[list[Fraction]]:
    out = []
    for row in x:
        out.append([(abs(Fraction(float(bias[i]))) if bias is not None else Fraction(0))
                    + sum(abs(Fraction(float(w))) * abs(Fraction(float(v))) for w, v in zip(W[i], row))
                    for i in range(W.shape[0])])
    return out


def never_below(bound: np.ndarray, exact) -> None:
    assert bound.shape == (len(exact), len(exact[0]))
    for s, row in enumerate(exact):
        for i, a in enumerate(row):
            b = bound[s, i]
            assert not math.isnan(b)
            assert b == math.inf or Fraction(float(b)) >= a, (s, i, b, float(a))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_holder_never_below_exact(p):
    x, W, bias = p
    never_below(holder_bound(x, W, bias), exact_a(x, W, bias))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(1, 5))
def test_blocked_never_below_exact(p, size):
    x, W, bias = p
    never_below(blocked_bound(x, W, bias, size), exact_a(x, W, bias))


def test_bounds_are_held_in_float32_and_blocked_is_at_least_as_tight_as_one_block():
    rng = np.random.default_rng(3)
    x, W, b = rng.normal(size=(5, 64)), rng.normal(size=(7, 64)), rng.normal(size=7)
    for bound in (holder_bound(x, W, b), blocked_bound(x, W, b, 8)):
        assert np.array_equal(bound.astype(np.float32).astype(np.float64), bound)
    exact = np.array(exact_a(x, W, b), dtype=float)
    # one block of n columns is Hölder's (1, inf) pair; smaller blocks can only tighten it
    whole, fine = blocked_bound(x, W, b, 64), blocked_bound(x, W, b, 4)
    assert np.all(fine <= whole * (1 + 2**-20)) and np.all(fine >= exact)
    assert np.all(holder_bound(x, W, b) <= whole * (1 + 2**-20))


def test_float32_up_by_hand():
    assert float32_up(1.0) == 1.0
    assert float32_up(1 + 2**-30) == 1 + 2**-23
    assert float32_up(-(1 + 2**-30)) == -1.0
    assert float32_up(1e39) == math.inf
    assert float32_up(5e-324) == 2.0**-149
    assert float32_up(float("nan")) == math.inf


def test_criteria_rows_and_blocked_specs():
    assert get_criterion("kappa-holder").estimate.name == "holder"
    assert get_criterion("kappa-blocked").estimate.name == "blocked:16"
    assert get_criterion("kappa-blocked:4").estimate is blocked(4)
    assert get_criterion("kappa").estimate.low_passes == 1 and not get_criterion("kappa").estimate.certified
    assert get_estimate("blocked:8") is blocked(8)
    for bad in ("kappa-blocked:0", "kappa-blocked:x", "kappa-blocked:", "kappa-holder:3"):
        with pytest.raises(MixaccError):
            get_criterion(bad)
    with pytest.raises(EstimateError):
        get_estimate("blocked:-1")


@pytest.mark.parametrize("criterion, steps", [
    ("kappa-holder", lambda n, m: 3 * n + 1 + 6 * m),
    ("kappa-blocked:3", lambda n, m: n + m * (-(-n // 3) + 1)),
])
def test_cost_charges_the_estimate_operations(criterion, steps):
    # two layers 5 -> 4 -> 3, 6 samples, tau = inf: no recomputation (no forced component
    # with these positive inputs), so the cost is the low pass plus the estimate's steps
    rng = np.random.default_rng(0)
    net = Network([Layer(rng.uniform(0.5, 1, (4, 5)), None, "identity"),
                   Layer(rng.uniform(0.5, 1, (3, 4)), None, "identity")], "pos")
    x = rng.uniform(0.5, 1, (6, 5))
    run = recompute(net, x, "fp16", "fp32", math.inf, criterion, cost="bits")
    assert run.fraction == 0
    want = sum(6 * m * inner_product_cost("fp16", n) + 6 * steps(n, m) * 32 for n, m in ((5, 4), (4, 3)))
    assert run.cost.total == want
    assert run.cost.reference == sum(6 * m * inner_product_cost("fp32", n) for n, m in ((5, 4), (4, 3)))


def test_certified_criteria_recompute_whatever_exact_a_would():
    # s = M kappa_sigma / |ŷ| with M >= a_i: every component whose score with the exact a_i
    # (same low pass ŷ) exceeds tau is recomputed
    rng = np.random.default_rng(1)
    W, x = rng.normal(size=(6, 8)), rng.normal(size=(4, 8))
    net = Network([Layer(W, None, "identity")], "one")
    y = linear(x, W, None, "bf16")
    a = exact_a(x, W, None)
    for tau in (2.0, 10.0, 50.0):
        exact_hit = np.array([[a[s][i] > Fraction(tau) * abs(Fraction(float(y[s, i]))) for i in range(6)]
                              for s in range(4)])
        assert exact_hit.any()
        for crit in ("kappa-holder", "kappa-blocked:3"):
            run = recompute(net, x, "bf16", "fp32", tau, crit)
            assert np.all(run.masks[0][exact_hit])
