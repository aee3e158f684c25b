"""The error-free transformations of emulator.eft, on which every exact result rests,
against Fraction arithmetic: hypothesis over the whole float64 range (subnormals, signed
zeros, near overflow) within each contract, pinned ties, cancellations and huge/tiny
mixes, and each contract's edge."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.eft import expansion_rn, fast_two_sum, grow_expansion, sum_rn, two_prod, two_prod_exact_ok, two_sum

from oracles import binade, rn64

MAX = float(np.finfo(np.float64).max)
TINY = 2.0**-1074
doubles = st.floats(allow_nan=False, allow_infinity=False, width=64)
PROPERTY = settings(max_examples=400, deadline=None)


def exact_sum(*terms: float) -> Fraction:
    return sum((Fraction(t) for t in terms), Fraction(0))


def sign(q: Fraction) -> int:
    return (q > 0) - (q < 0)


def half_ulp(s: float) -> Fraction:
    """Half the spacing of float64 at s (at the subnormal spacing below 2^-1022)."""
    return Fraction(math.ulp(s)) / 2


# ---------------------------------------------------------------- two_sum, fast_two_sum


def sum_is_finite(a: float, b: float) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.float64(a) + np.float64(b)))


@PROPERTY
@given(doubles, doubles)
def test_two_sum_is_error_free(a, b):
    """s = fl(a + b) and s + e = a + b exactly, |e| <= ulp(s)/2, whenever a + b rounds to a
    finite s and no intermediate overflows (max(|a|, |b|) <= 2^1023, or |a| >= |b|)."""
    if not sum_is_finite(a, b) or (max(abs(a), abs(b)) > 2.0**1023 and abs(a) < abs(b)):
        return
    s, e = two_sum(a, b)
    assert s == a + b and Fraction(s) + Fraction(e) == exact_sum(a, b)
    assert abs(Fraction(e)) <= half_ulp(s)


@PROPERTY
@given(doubles, doubles)
def test_fast_two_sum_is_error_free_when_the_first_term_dominates(a, b):
    """The same as two_sum when |a| >= |b| or a = 0, over the whole finite range."""
    if abs(a) < abs(b) and a != 0:
        a, b = b, a
    if not sum_is_finite(a, b):
        return
    s, e = fast_two_sum(a, b)
    assert s == a + b and Fraction(s) + Fraction(e) == exact_sum(a, b)
    assert (s, e) == two_sum(a, b)


@pytest.mark.parametrize("a, b, s, e", [
    (1.0, 2.0**-53, 1.0, 2.0**-53),  # a tie: to even, the whole half ulp left over
    (1.0 + 2.0**-52, 2.0**-53, 1.0 + 2.0**-51, -(2.0**-53)),  # a tie to the even above
    (1.0, -(2.0**-54), 1.0, -(2.0**-54)),  # below the tie under 1: the finer binade
    (3.0, -3.0, 0.0, 0.0),  # cancellation to zero
    (2.0**1000, TINY, 2.0**1000, TINY),  # huge and tiny
    (-(2.0**-1073), TINY, -TINY, 0.0),  # subnormals add exactly
    (MAX, -MAX, 0.0, 0.0),
    (MAX, 2.0**969 - 2.0**916, MAX, 2.0**969 - 2.0**916),  # just below the overflow threshold
    (MAX, -(1.5 * 2.0**971), math.nextafter(MAX, 0), -(2.0**970)),  # a tie next to max
])
def test_two_sum_pinned(a, b, s, e):
    assert Fraction(s) + Fraction(e) == exact_sum(a, b)  # the pinned case is what it says
    assert two_sum(a, b) == (s, e) and fast_two_sum(a, b) == (s, e)
    if max(abs(a), abs(b)) <= 2.0**1023:
        assert two_sum(b, a) == (s, e)


def test_two_sum_signed_zeros():
    s, e = two_sum(-0.0, -0.0)
    assert math.copysign(1, s) == -1 and e == 0
    s, _ = two_sum(-0.0, 0.0)
    assert math.copysign(1, s) == 1


def test_the_contracts_edges():
    """two_sum with |a| < |b| near overflow: b - (s - a) overflows although s is finite
    (Boldo, Graillat & Muller 2017); fast_two_sum with |a| < |b| loses the error."""
    s, e = two_sum(-(1.5 * 2.0**971), MAX)
    assert math.isfinite(s) and math.isnan(e)
    assert two_sum(MAX, -(1.5 * 2.0**971)) == (s, -(2.0**970))
    assert fast_two_sum(1.0, 2.0**60) == (2.0**60, 0.0)  # the exact error is 1
    assert two_sum(MAX, MAX)[0] == math.inf


# ---------------------------------------------------------------- two_prod


@PROPERTY
@given(doubles, doubles)
def test_two_prod(a, b):
    """p = fl(a b) and e = RN(a b - p) (one fused multiply-add) whenever p is finite;
    p + e = a b exactly whenever two_prod_exact_ok(a, b, p)."""
    with np.errstate(over="ignore", under="ignore"):
        want = float(np.float64(a) * np.float64(b))
    p, e = two_prod(a, b)
    assert p == want or (math.isinf(p) and math.isinf(want))
    if math.isfinite(p):
        assert e == rn64(Fraction(a) * Fraction(b) - Fraction(p))
    if two_prod_exact_ok(a, b, p):
        assert Fraction(p) + Fraction(e) == Fraction(a) * Fraction(b)
        assert a == 0 or b == 0 or 2.0**-969 <= abs(p) < math.inf


@PROPERTY
@given(st.integers(2**52, 2**53 - 1), st.integers(2**52, 2**53 - 1), st.integers(-1130, 1023))
def test_two_prod_at_every_scale(ma, mb, scale):
    """Full 53-bit significands (the longest error terms) from subnormal products to
    overflow: exact whenever two_prod_exact_ok; otherwise (finite p) the product lies
    below 2^-969 and e is still RN(a b - p)."""
    a, b = math.ldexp(ma, -52), math.ldexp(mb, scale - 52)
    p, e = two_prod(a, b)
    exact = Fraction(a) * Fraction(b)
    if two_prod_exact_ok(a, b, p):
        assert Fraction(p) + Fraction(e) == exact
    elif math.isfinite(p):
        assert abs(p) < 2.0**-969 and e == rn64(exact - Fraction(p))


def test_two_prod_pinned():
    assert two_prod(3.0, 1.0 / 3.0) == (1.0, -(2.0**-54))
    assert two_prod(1.0 + 2.0**-52, 1.0 + 2.0**-52) == (1.0 + 2.0**-51, 2.0**-104)
    assert two_prod(0.0, MAX) == (0.0, 0.0) and two_prod_exact_ok(0.0, MAX, 0.0)
    p, e = two_prod(-0.0, 3.0)
    assert math.copysign(1, p) == -1 and e == 0
    assert two_prod(2.0**512, 2.0**512)[0] == math.inf and not two_prod_exact_ok(2.0**512, 2.0**512, math.inf)
    a = math.nextafter(2.0**512, 0)
    p, e = two_prod(a, a)  # the largest square below overflow: exact
    assert math.isfinite(p) and Fraction(p) + Fraction(e) == Fraction(a) ** 2


def test_two_prod_threshold():
    """At |p| >= 2^-969 the error is a multiple of 2^-1074 of at most 53 bits; just below,
    with full significands, it is not."""
    a, b = (1 + 2.0**-52) * 2.0**-500, (1 + 2.0**-52) * 2.0**-469
    p, e = two_prod(a, b)
    assert abs(p) >= 2.0**-969 and two_prod_exact_ok(a, b, p) and Fraction(p) + Fraction(e) == Fraction(a) * Fraction(b)
    a = (2 - 2.0**-52) * 2.0**-486
    p, e = two_prod(a, a)  # a^2 = (2 - 2^-51 + 2^-104) 2^-972: its error 2^-1076 is no float64
    assert abs(p) < 2.0**-969 and not two_prod_exact_ok(a, a, p)
    assert e == 0.0 and Fraction(p) + Fraction(e) != Fraction(a) ** 2


# ---------------------------------------------------------------- expansions


def check_expansion(partials: np.ndarray, m: int, exact: Fraction) -> None:
    """partials[:m] sums to exact; its nonzero components (all but possibly the last are
    nonzero) increase in magnitude and do not overlap: the most significant bit of each
    lies below the least significant bit of the next (Shewchuk 1997)."""
    comps = [float(v) for v in partials[:m]]
    assert m >= 1 and all(v != 0 for v in comps[:-1])
    assert exact_sum(*comps) == exact
    nonzero = [abs(Fraction(v)) for v in comps if v != 0]
    for low, high in zip(nonzero, nonzero[1:]):
        assert binade(low) < lowest_bit(high), (float(low), float(high))


def lowest_bit(q: Fraction) -> int:
    """e such that q > 0 (a dyadic rational) is an odd multiple of 2^e."""
    n, d = q.numerator, q.denominator
    return (n & -n).bit_length() - d.bit_length()


def grown(values) -> tuple[np.ndarray, int]:
    partials = np.zeros(max(len(values), 1))
    m = 0
    for t, v in enumerate(values):
        m = grow_expansion(v, partials, m)
        check_expansion(partials, m, exact_sum(*values[: t + 1]))
    return partials, m


bounded = st.floats(min_value=-MAX / 8, max_value=MAX / 8, width=64)  # 8 of them never overflow
scaled = st.builds(lambda m, e: math.ldexp(m, e), st.integers(-(2**53), 2**53),
                   st.sampled_from([-1074, -1060, -1000, -110, -60, -53, -52, -1, 0, 1, 52, 53, 60, 900, 967]))
terms = st.lists(st.one_of(bounded, scaled), min_size=0, max_size=8)


@PROPERTY
@given(terms)
def test_grow_expansion_keeps_an_exact_nonoverlapping_expansion(values):
    """Adding x to a nonoverlapping expansion in increasing magnitudes keeps one whose
    sum is exact, whatever the magnitudes, while sum |x_t| <= max (no overflow)."""
    if values:
        grown(values)


@PROPERTY
@given(terms)
def test_sum_rn_and_expansion_rn_round_the_exact_sum_to_nearest(values):
    """(h, sigma) = (RN(sum), sign(sum - h)), ties to even; scratch of exactly n."""
    exact = exact_sum(*values)
    want = (rn64(exact), sign(exact - Fraction(rn64(exact))))
    vals = np.array(values, dtype=np.float64)
    assert sum_rn(vals, len(values), np.zeros(len(values))) == want
    if values:
        partials, m = grown(values)
        assert expansion_rn(partials, m) == want
        assert want[0] == math.fsum(values)  # CPython's independent correctly rounded sum


@pytest.mark.parametrize("values, h, sigma", [
    ([], 0.0, 0),
    ([1.0, 2.0**-53], 1.0, 1),  # an exact tie goes to even
    ([1.0, 2.0**-53, 2.0**-110], 1.0 + 2.0**-52, -1),  # past the tie by a far component
    ([1.0, 2.0**-53, -(2.0**-110)], 1.0, 1),  # short of the tie
    ([1.0 + 2.0**-52, 2.0**-53], 1.0 + 2.0**-51, -1),
    ([1.0 + 2.0**-52, 2.0**-53, -(2.0**-600)], 1.0 + 2.0**-52, 1),
    ([1.0, -(2.0**-54), -(2.0**-200)], 1.0 - 2.0**-53, 1),  # below 1: a tie in the finer binade, past it
    ([1.0, -1.0], 0.0, 0),
    ([2.0**1000, TINY, -(2.0**1000)], TINY, 0),  # cancellation leaves the tiniest subnormal
    ([MAX, -MAX, TINY], TINY, 0),
    ([MAX / 2, MAX / 2], MAX, 0),  # sum |x| = max: the contract's edge
    ([MAX, 2.0**969 - 2.0**900], MAX, 1),  # beyond max, short of the overflow threshold
    ([0.1] * 10, 1.0, 1),
    ([2.0**-1074] * 3 + [-(2.0**-1073)], TINY, 0),
    ([1e16, 1.0, -1e16, -(2.0**-60)], 1.0, -1),
])
def test_sum_rn_pinned(values, h, sigma):
    exact = exact_sum(*values)
    assert sign(exact - Fraction(h)) == sigma  # the pinned case is what it says
    n = len(values)
    assert sum_rn(np.array(values, dtype=np.float64), n, np.zeros(n)) == (h, sigma)
    if values:
        assert expansion_rn(*grown(values)) == (h, sigma)


def test_sum_rn_reads_only_the_first_n_values():
    vals = np.array([1.0, 2.0, 1e300])
    assert sum_rn(vals, 2, np.zeros(2)) == (3.0, 0)


def test_sum_rn_on_many_terms():
    """2000 terms over 600 binades with heavy cancellation, against Fraction and fsum."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(1000) * np.exp2(rng.integers(-300, 300, 1000))
    vals = np.concatenate([x, -x * (1 + rng.integers(-2, 3, 1000) * 2.0**-52)])
    rng.shuffle(vals)
    exact = exact_sum(*vals)
    h, sigma = sum_rn(vals, vals.size, np.zeros(vals.size))
    assert h == rn64(exact) == math.fsum(vals) and sigma == sign(exact - Fraction(h)) != 0
