"""Condition numbers: absolute sums and kappa against exact rational arithmetic; every
activation's closed-form sigma' and kappa_sigma against sympy differentiation evaluated
in mpmath; the largest |sigma'| on an interval against a dense high-precision sweep."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activation_oracles import BITS, ORACLES
from analysis.conditioning import (
    DERIVATIVE_MARGIN, _dyadic_cover, absolute_sums, activation_condition, activation_derivative, condition_numbers,
    max_abs_derivative, ratio, symbolic_condition, symbolic_derivative,
)
from emulator.activations import ACTIVATIONS, Y, get_activation
from emulator.errors import ShapeError

from oracles import exact_dot

ACTIVATION_SPECS = [*ACTIVATIONS.names(), "leaky_relu:0.2", "leaky_relu:3", "elu:0.5", "elu:2",
                    "sympy:y*tanh(log(1+exp(y)))", "sympy:atan(y) + y/4", "sympy:y*erfc(-y)/2"]
POINTS = [-30.0, -7.5, -2.399, -1.4142, -1.0, -0.3, -1e-3, -1e-9, 1e-9, 1e-3, 0.25, 0.7, 1.0, 1.5, 2.0, 3.3, 8.0, 25.0]


def _mp(expr):
    return sympy.lambdify(Y, expr, modules="mpmath")


def _stable(fn, t: float):
    """fn(t) evaluated at rising precision until two precisions agree to 2^-100."""
    previous = None
    for prec in (200, 800, 3200, 12800):
        with mpmath.workprec(prec):
            try:
                value = fn(mpmath.mpf(t))
            except ZeroDivisionError:  # 0/0 from cancellation at this precision
                continue
            if value == 0 and prec < 12800:  # an exact 0 may be a cancellation: confirm higher up
                continue
            if previous is not None and (mpmath.isnan(value) and mpmath.isnan(previous)
                                         or abs(value - previous) <= abs(value) * mpmath.ldexp(1, -100)):
                return +value
            previous = value
    if value == 0:
        return value
    raise AssertionError(f"no stable value at {t}")


def test_ratio_conventions():
    got = ratio([0.0, 0.0, 3.0, -3.0, 1.0], [0.0, 2.0, 0.0, 4.0, -8.0])
    assert got.tolist() == [0.0, 0.0, np.inf, 0.75, 0.125]


def test_absolute_sums_and_kappa_exact():
    rng = np.random.default_rng(1)
    W = rng.integers(-9, 10, size=(5, 7)) / 8.0
    b = rng.integers(-9, 10, size=5) / 4.0
    x = rng.integers(-9, 10, size=(3, 7)) / 2.0
    a = absolute_sums(x, W, b)
    for s in range(3):
        for i in range(5):
            want = abs(Fraction(b[i])) + sum(abs(Fraction(W[i, j]) * Fraction(x[s, j])) for j in range(7))
            assert Fraction(a[s, i]) == want
            yi = exact_dot(W[i], x[s], b[i])
            k = condition_numbers(x[s], W, b)[i]
            assert k == (0.0 if want == 0 else np.inf if yi == 0 else float(want / abs(yi)))
    assert absolute_sums(x[0], W).shape == (5,)


def test_kappa_zero_over_zero_and_cancellation():
    W = np.array([[1.0, -1.0], [0.0, 0.0]])
    kappa = condition_numbers(np.array([1.0, 1.0]), W, None)
    assert kappa.tolist() == [np.inf, 0.0]


@pytest.mark.parametrize(
    "args, exc, fragment",
    [
        ((np.ones(3), np.ones((2, 4)), None), ShapeError, "does not fit W"),
        ((np.ones(4), np.ones((2, 4)), np.ones(3)), ShapeError, "b of shape (3,)"),
        ((np.ones((2, 2, 4)), np.ones((2, 4)), None), ShapeError, "x must have 1 or 2 dimensions, got shape (2, 2, 4)"),
    ],
)
def test_bad_shapes(args, exc, fragment):
    with pytest.raises(exc, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        absolute_sums(*args)


@pytest.mark.parametrize("spec", ACTIVATION_SPECS)
def test_closed_forms_match_symbolic_differentiation(spec):
    act = get_activation(spec)
    d_mp, k_mp, f_mp = _mp(symbolic_derivative(act)), _mp(symbolic_condition(act)), _mp(act.expr)
    # sympy: rows evaluate the derived formula naively in float64 (log(1 + exp(-30)) cancels,
    # sympy rewrites erfc(-y) as 2 - erfc(y)): held on |y| <= 3, the closed forms everywhere
    symbolic_row = spec.startswith("sympy:")
    points = [t for t in POINTS if abs(t) <= 3] if symbolic_row else POINTS
    tol = 1e-9 if symbolic_row else 1e-12
    df, kappa = activation_derivative(act, np.array(points)), activation_condition(act, np.array(points))
    for t, d, k in zip(points, df, kappa):  # 1 + erf(-30/sqrt 2) cancels some 650 bits: rising precision
        want_d = _stable(d_mp, t)
        assert abs(d - want_d) <= tol * max(1, abs(want_d)), (spec, t, d, want_d)
        sigma = _stable(f_mp, t)
        want_k = mpmath.mpf(0) if sigma == 0 else _stable(k_mp, t)
        assert abs(k - want_k) <= tol * max(1, abs(want_k)), (spec, t, k, want_k)


def test_paper_closed_forms():
    y = np.array([-2.0, -0.5, 0.5, 3.0])
    assert activation_condition("relu", y).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert np.allclose(activation_condition("tanh", y), 2 * np.abs(y) / np.sinh(2 * np.abs(y)), rtol=1e-15)
    assert np.allclose(activation_condition("sigmoid", y), np.abs(y) / (1 + np.exp(y)), rtol=1e-15)
    assert activation_condition("identity", y).tolist() == [1.0] * 4


def _dense_sup(act, lo, hi, points=801):
    """max |sigma'| on a dense grid plus the interval's ends, at 80 bits (an under-estimate
    of the true supremum, which the rigorous bound must exceed)."""
    d = _mp(symbolic_derivative(act))
    extra = [c for c in (*(act.critical_points or ()), 0.0) if lo <= c <= hi]
    grid = np.concatenate([np.linspace(lo, hi, points), extra])
    with mpmath.workprec(80):
        return max(abs(d(mpmath.mpf(float(t)))) for t in grid if not (float(t) == 0.0 and "relu" in act.name))


@pytest.mark.parametrize("spec", ACTIVATION_SPECS)
def test_max_abs_derivative_is_an_upper_bound(spec):
    act = get_activation(spec)
    rng = np.random.default_rng(7)
    centers = rng.normal(0, 3, size=12)
    widths = np.abs(rng.normal(0, 1, size=12)) * np.array([1e-6, 1e-2, 0.5, 2] * 3)
    lo, hi = centers - widths, centers + widths
    got = max_abs_derivative(act, lo, hi)
    for a, b, g in zip(lo, hi, got):
        sup = _dense_sup(act, a, b, points=201)
        assert g >= sup, (spec, a, b, g, sup)
        slack = 1.2 * sup + 0.05 if act.critical_points is None else sup * (1 + 4 * DERIVATIVE_MARGIN) + 2 * DERIVATIVE_MARGIN
        assert g <= slack, (spec, a, b, g, sup)


@pytest.mark.parametrize(
    "spec, lo, hi, want",
    [
        ("relu", -3.0, -2.0, 0.0), ("relu", -1.0, 1.0, 1.0), ("relu", 0.5, 2.0, 1.0),
        ("leaky_relu:0.2", -3.0, -2.0, 0.2), ("leaky_relu:3", -1.0, 2.0, 3.0), ("elu:2", -1.0, 0.5, 2.0),
        ("tanh", -0.1, 0.1, 1.0), ("sigmoid", -1.0, 1.0, 0.25), ("gelu", 1.0, 2.0, float(1.1289)),
        ("silu", 2.0, 3.0, 1.0998), ("identity", -5.0, 5.0, 1.0),
    ],
)
def test_max_abs_derivative_pinned(spec, lo, hi, want):
    got = float(max_abs_derivative(spec, lo, hi))
    assert want <= got <= want * (1 + 1e-4) + 1e-11


GELU_TANH_SYMPY = "sympy:y/2*(1 + tanh(sqrt(2/pi)*(y + 0.044715*y**3)))"


def test_max_abs_derivative_unknown_critical_points_found():
    # a sympy row has no recorded critical points: its max |sigma'| near 1.42 must still be caught
    act = get_activation(GELU_TANH_SYMPY)
    assert act.critical_points is None
    got = float(max_abs_derivative(act, 1.0, 2.0))
    assert got >= _dense_sup(act, 1.0, 2.0, 2001) and got < 1.25


@pytest.mark.parametrize("name", sorted(ORACLES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(centre=st.one_of(st.floats(-8, 8), st.floats(-1e4, 1e4)), log_width=st.floats(-15, 3), skew=st.floats(0, 1))
def test_max_abs_derivative_bounds_the_oracle(name, centre, log_width, skew):
    """The bound is >= |sigma'| (closed-form mpmath oracle) at 101 points of [lo, hi], its
    ends and the critical points in it; for smooth rows, whose supremum is at one of the
    ends or critical points, it is also within the margin of that supremum."""
    act = get_activation(name)
    width = 10.0**log_width
    lo, hi = centre - skew * width, centre + (1 - skew) * width
    got = float(max_abs_derivative(act, lo, hi))
    crit = [c for c in act.critical_points if lo <= c <= hi]
    with mpmath.workprec(BITS):
        exact = [abs(ORACLES[name].df(mpmath.mpf(float(t)))) for t in [lo, hi, *crit]]
        dense = [abs(ORACLES[name].df(mpmath.mpf(float(t)))) for t in np.linspace(lo, hi, 101)]
    sup = max(exact + dense)
    assert got >= sup, (name, lo, hi, got, sup)
    if not act.expr.has(sympy.Piecewise):
        assert got <= max(exact) * (1 + 4 * DERIVATIVE_MARGIN) + 2 * DERIVATIVE_MARGIN, (name, lo, hi, got, sup)


def test_max_abs_derivative_edges():
    assert max_abs_derivative("tanh", -np.inf, 0.0) == np.inf
    assert max_abs_derivative("gelu_tanh", 0.0, np.inf) == np.inf
    assert max_abs_derivative("tanh", np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])).shape == (1, 2)
    with pytest.raises(ShapeError, match="lo <= hi"):
        max_abs_derivative("tanh", 1.0, 0.0)


@settings(max_examples=200, deadline=None)
@given(k_lo=st.integers(-10**7, 10**7), count=st.integers(1, 5000))
def test_dyadic_cover_tiles_the_cells(k_lo, count):
    blocks = list(_dyadic_cover(k_lo, k_lo + count - 1))
    k = k_lo
    for level, index in blocks:
        assert index << level == k  # aligned and contiguous
        k += 1 << level
    assert k == k_lo + count and len(blocks) <= 2 * count.bit_length()


@pytest.mark.parametrize("seed", range(3))
def test_sympy_row_on_wide_intervals(seed):
    """Intervals of width 10 to 100 (the global bounds of wide layers): above the oracle's
    supremum (the same function as the registered gelu_tanh) and within the cells' slack."""
    act = get_activation(GELU_TANH_SYMPY)
    rng = np.random.default_rng(seed)
    lo = rng.normal(0, 20, 4)
    hi = lo + rng.uniform(10, 100, 4)
    got = max_abs_derivative(act, lo, hi)
    for a, b, g in zip(lo, hi, got):
        with mpmath.workprec(BITS):
            pts = [*np.linspace(a, b, 2001), *[c for c in (-1.4185040087908283, 1.4185040087908283) if a <= c <= b]]
            sup = max(abs(ORACLES["gelu_tanh"].df(mpmath.mpf(float(t)))) for t in pts)
        assert sup <= g <= 1.05 * sup + 0.05, (a, b, g, sup)
