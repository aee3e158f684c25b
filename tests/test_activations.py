"""Every registered activation's float64 sigma, sigma' and kappa_sigma against the
closed-form mpmath oracles of ``activation_oracles`` at 256 bits, from the underflow range
to |y| = 1e4: tiny |y|, 0, the kinks, the exp overflow and underflow thresholds (the
oracles' derivatives are checked against mpmath.diff); the critical points (zeros of
sigma'') proven complete by interval arithmetic.

Tolerance: |got - want| <= 1e-12 max(|want|, 2^-1022).
* 1e-12 relative for normal results: a value exp(v(y)) with |v| up to 745 inherits the
  rounding of its float64 argument v (half an ulp of 745 is 5.7e-14, times the few
  roundings that make v), measured up to 2.5e-13 for gelu_tanh near y = -21; every other
  form is within 1e-13.
* The absolute error allowed at the smallest normal for subnormal results: they carry
  fewer than 53 bits, so no float64 formula is relatively accurate there.
* Near a zero of sigma' (gelu, gelu_tanh, silu; kappa_sigma vanishes there too) every
  float64 form cancels: within EXCLUDE of those zeros the error is held to 1e-12 absolute.
And sigma' to 2^-48 max(1, |sigma'|) absolute everywhere: the accuracy that
``analysis.conditioning.DERIVATIVE_MARGIN`` assumes."""

from __future__ import annotations

import math
from contextlib import contextmanager

import mpmath
import numpy as np
import pytest
import sympy
from mpmath import iv

from activation_oracles import BITS, ORACLES, gelu_tanh_df, oracle_values, sigmoid
from analysis.conditioning import max_abs_derivative
from emulator.activations import Y, get_activation

REL_TOL = 1e-12
DF_ABS_TOL = 2.0**-48
FLOOR = 2.0**-1022
EXCLUDE = 1e-2


def _signed(mags):
    mags = np.asarray(mags, dtype=np.float64)
    return np.concatenate([-mags[::-1], [0.0], mags])


MAGNITUDES = [
    5e-324, 1e-320, 2.0**-1022, 1e-300, 1e-200, 1e-100, 1e-30, 1e-16, 1e-8, 1e-4, 1e-2, 0.1, 0.5, 1.0,
    1.4142135623730951, 2.0, 2.3993572805154676, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 25.0, 30.0, 37.0, 37.7, 38.5, 40.0,
    50.0, 100.0, 200.0, 300.0, 354.0, 355.5, 356.0, 400.0, 500.0, 700.0, 708.0, 709.0, 709.8, 710.0, 711.0, 715.0,
    720.0, 745.0, 746.0, 750.0, 800.0, 1000.0, 2000.0, 5000.0, 1e4,
]


def audit_points(seed: int = 0, n: int = 200) -> np.ndarray:
    """The fixed points (both signs, 0) and n log-uniform ones in [1e-3, 1e4]."""
    rng = np.random.default_rng(seed)
    rand = np.exp(rng.uniform(np.log(1e-3), np.log(1e4), n)) * rng.choice([-1.0, 1.0], n)
    return np.concatenate([_signed(MAGNITUDES), rand])


def relative_error(got: float, want) -> float:
    if np.isnan(got):
        return np.inf
    return float(abs(mpmath.mpf(got) - want) / max(abs(want), FLOOR))


def audit(name: str, points: np.ndarray) -> dict:
    """Worst error of f, df and kappa of the row ``name`` on ``points`` and next to the
    zeros of sigma': {quantity: (error, y)} with the relative error away from those zeros,
    {quantity + "@zero": ...} the absolute one near them and {"df-margin": ...} the
    absolute error of sigma' over max(1, |sigma'|)."""
    act, o = get_activation(name), ORACLES[name]
    near_zeros = [z + d for z in o.df_zeros for d in (-3e-3, -1e-7, 0.0, 1e-9, 2e-4)]
    points = np.concatenate([points, near_zeros])
    with np.errstate(all="ignore"):
        got = {"f": act.f(points), "df": act.df(points), "kappa": act.kappa(points)}
    worst: dict = {}
    for j, y in enumerate(points):
        want = dict(zip(("f", "df", "kappa"), oracle_values(name, float(y))))
        near = any(abs(y - z) < EXCLUDE for z in o.df_zeros)
        margin = float(abs(mpmath.mpf(float(got["df"][j])) - want["df"]) / max(1, abs(want["df"])))
        worst["df-margin"] = max(worst.get("df-margin", (-1.0, 0.0)), (margin, float(y)))
        for q in ("f", "df", "kappa"):
            g = float(got[q][j])
            if near and q != "f":
                key, err = q + "@zero", float(abs(mpmath.mpf(g) - want[q])) if not np.isnan(g) else np.inf
            else:
                key, err = q, relative_error(g, want[q])
            if err > worst.get(key, (-1.0, 0.0))[0]:
                worst[key] = (err, float(y))
    return worst


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_oracle_derivatives_match_mpmath_diff(name):
    o = ORACLES[name]
    with mpmath.workprec(BITS):
        for y in (-7.25, -2.5, -0.75, -0.3, 0.4, 1.5, 3.75, 9.0):
            t = mpmath.mpf(y)
            assert abs(mpmath.diff(o.f, t) - o.df(t)) <= mpmath.ldexp(abs(o.df(t)) + 1e-30, -150), (name, y)
        for z in o.df_zeros:
            root = mpmath.findroot(o.df, mpmath.mpf(z))
            assert abs(root - z) < 1e-9, (name, z)


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_float64_forms_against_mpmath(name):
    worst = audit(name, audit_points())
    for q, (err, y) in worst.items():
        assert err <= (DF_ABS_TOL if q == "df-margin" else REL_TOL), f"{name} {q}: error {err:.3g} at y = {y!r}"


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_kappa_at_zero_is_its_limit(name):
    """kappa_sigma(0) is the limit of |y sigma'/sigma| at 0 where it exists (1 for every
    sigma with sigma(0) = 0 and sigma'(0) != 0, from both sides), 0 for relu and the
    alpha = 0 rows (sigma = 0 on the left) and for sigma(0) != 0."""
    act = get_activation(name)
    assert act.kappa(np.array([0.0, -0.0])).tolist() == [ORACLES[name].kappa0] * 2


def test_softplus_kappa_far_left():
    """kappa_sigma = |y| sigmoid(y) / log1p(e^y) -> |y| as y -> -inf, where e^y underflows."""
    y = np.array([-800.0, -1e4, -1e300])
    assert np.array_equal(get_activation("softplus").kappa(y), -y)


# ---------------------------------------------------------------- critical points

IV_FUNCTIONS = {"tanh": lambda x: 1 - 2 / (1 + iv.exp(2 * x)), "exp": iv.exp, "sqrt": iv.sqrt, "pi": iv.pi,
                "mpf": lambda x: iv.mpf(mpmath.mpf(x))}
IV_PREC = 120
SMOOTH = ["tanh", "sigmoid", "gelu", "gelu_tanh", "silu"]
COVER = 8.0  # |y| <= COVER is covered by cells; the tails by the arguments in emulator.activations


@contextmanager
def _iv_prec(bits: int):
    saved, iv.prec = iv.prec, bits
    try:
        yield
    finally:
        iv.prec = saved


def _interval_form(act, order: int):
    """d^order sigma / dy^order of the row's sympy form, on mpmath.iv intervals (order >= 2:
    gelu's erf is gone, sympy writes its derivatives with exp alone)."""
    expr = sympy.diff(act.expr, Y, order)
    assert not expr.has(sympy.erf), act.name
    return sympy.lambdify(Y, expr, modules=[IV_FUNCTIONS, "mpmath"])


def _sign(enclosure) -> int:
    """+1 / -1 where the interval excludes 0, 0 where it is exactly [0, 0], None otherwise."""
    enc = iv.mpf(enclosure)
    if enc.a > 0:
        return 1
    if enc.b < 0:
        return -1
    return 0 if enc.a == 0 and enc.b == 0 else None


def _undecided_cells(d2, lo, hi, depth: int = 6) -> list:
    """Subcells of [lo, hi] (bisected up to ``depth`` times) on which the enclosure of
    sigma'' does not exclude 0."""
    if _sign(d2(iv.mpf([lo, hi]))) in (1, -1):
        return []
    if depth == 0:
        return [(lo, hi)]
    mid = (lo + hi) / 2
    return _undecided_cells(d2, lo, mid, depth - 1) + _undecided_cells(d2, mid, hi, depth - 1)


def certified_zeros(name: str) -> list[tuple[float, float]]:
    """Brackets [c - 1/16, c + 1/16] around the listed critical points c, each holding
    exactly one zero of sigma'', and no zero outside them on [-COVER, COVER]: cells of
    width 1/16 (bisected down to 1/1024) whose enclosure of sigma'' excludes 0 are free of
    zeros, and the others must lie in a bracket, where sigma''' has one sign (at most one
    zero) and sigma'' changes sign across the float neighbours of c or is exactly 0 at c
    (at least one, within an ulp of c)."""
    act = get_activation(name)
    d2, d3 = _interval_form(act, 2), _interval_form(act, 3)
    points = sorted(act.critical_points)
    brackets = [(c - 1 / 16, c + 1 / 16) for c in points]
    with _iv_prec(IV_PREC):
        for k in range(-int(COVER * 16), int(COVER * 16)):
            for a, b in _undecided_cells(d2, k / 16, (k + 1) / 16):
                assert any(lo <= a and b <= hi for lo, hi in brackets), \
                    f"{name}: sigma'' may vanish in [{a}, {b}], outside the brackets of the critical points"
        for c, (lo, hi) in zip(points, brackets):
            edges = [lo + (hi - lo) * j / 16 for j in range(17)]
            signs = {_sign(d3(iv.mpf([a, b]))) for a, b in zip(edges[:-1], edges[1:])}
            assert signs in ({1}, {-1}), f"{name}: sigma''' not of one sign around {c}"
            at = _sign(d2(iv.mpf(c)))
            left, right = (_sign(d2(iv.mpf(math.nextafter(c, side)))) for side in (-math.inf, math.inf))
            assert at == 0 or left * right == -1, f"{name}: no zero of sigma'' within an ulp of {c}"
    return brackets


@pytest.mark.parametrize("name", SMOOTH)
def test_critical_points_are_the_zeros_of_sigma_second_derivative(name):
    act = get_activation(name)
    assert len(certified_zeros(name)) == len(act.critical_points)
    # beyond the covered range: a dense 200-bit scan finds no sign change (each row's
    # argument in emulator.activations makes it a proof; gelu_tanh's is checked below)
    d2 = sympy.lambdify(Y, sympy.diff(act.expr, Y, 2), "mpmath")
    with mpmath.workprec(200):
        for side in (-1, 1):
            signs = {mpmath.sign(d2(side * mpmath.mpf(t))) for t in np.geomspace(COVER, 1e4, 400)}
            assert len(signs - {0}) == 1, (name, side)


def test_gelu_tanh_second_derivative_tails():
    """For |y| >= 3, gelu_tanh'' = s(v) s(-v) B(y) < 0 with B = 4c(1 + 6a y^2) - 4c^2 (1 +
    3a y^2)^2 y tanh(t): y tanh(t) >= |y| tau, tau = tanh(t(3)), 1 + 6a y^2 <= 2(1 + 3a y^2)
    and (1 + 3a y^2)^2 >= 1 + 3a y^2 give B <= 4c(1 + 3a y^2)(2 - c |y| tau) < 0 once
    c |y| tau > 2, which holds at |y| = 3. The factorisation is checked against sympy."""
    with _iv_prec(IV_PREC):
        ci = iv.sqrt(2 / iv.pi)
        tau = IV_FUNCTIONS["tanh"](ci * (3 + iv.mpf(44715) / 10**6 * 27))
        assert (ci * 3 * tau - 2).a > 0
    d2 = sympy.lambdify(Y, sympy.diff(get_activation("gelu_tanh").expr, Y, 2), "mpmath")
    with mpmath.workprec(8000):  # sympy's form cancels 1 - tanh^2 t: some 6700 bits at y = -40
        c, a = mpmath.sqrt(2 / mpmath.pi), mpmath.mpf(44715) / 10**6
        for y in [mpmath.mpf(t) for t in (-40.0, -7.5, -3.0, -1.2, -0.1, 0.3, 1.4, 2.9, 3.0, 11.0)]:
            t = c * (y + a * y**3)
            B = 4 * c * (1 + 6 * a * y**2) - 4 * c**2 * (1 + 3 * a * y**2) ** 2 * y * mpmath.tanh(t)
            want = d2(y)
            assert abs(sigmoid(2 * t) * sigmoid(-2 * t) * B - want) <= abs(want) * mpmath.ldexp(1, -150)


def test_gelu_tanh_largest_slope_is_tight():
    """The bound over [-1e6, 1e6] is at least sigma' at the certified zero of sigma'' (the
    true supremum, sigma' being below it at the ends and elsewhere) and at most 1.2."""
    (lo, hi), = [b for b in certified_zeros("gelu_tanh") if b[0] > 0]
    with mpmath.workprec(200):
        root = mpmath.findroot(sympy.lambdify(Y, sympy.diff(get_activation("gelu_tanh").expr, Y, 2), "mpmath"), 1.4)
        assert lo < root < hi
        sup = gelu_tanh_df(root)
    got = float(max_abs_derivative("gelu_tanh", -1e6, 1e6))
    assert sup <= got <= 1.2
