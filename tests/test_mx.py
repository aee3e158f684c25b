"""MX block-scaled formats (OCP MX v1.0): quantisation against the spec's rule on hand
examples and against a rational oracle, MX storage, products, and the storage bound."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from analysis.bounds import mx_storage_error
from emulator.errors import FormatSpecError
from emulator.linear import linear
from emulator.mx import MX_FORMATS, get_mx
from emulator.network import Layer, Network
from emulator.activations import get_activation
from emulator.storage import parse_storage
from tests.oracles import binade, round_fraction

# element (emax, max) of each MX format, from the OCP MX v1.0 tables
ELEMENTS = {"mxfp8-e4m3": (8, 448.0), "mxfp8-e5m2": (15, 57344.0), "mxfp6-e3m2": (4, 28.0),
            "mxfp6-e2m3": (2, 7.5), "mxfp4-e2m1": (2, 6.0), "mxint8": (0, 127 / 64)}


def oracle_block(block: list[float], name: str) -> list[float]:
    """s = floor(log2 max |v|) - emax (clamped to >= -127), e = RNE(v / 2^s) saturating."""
    emax, _ = ELEMENTS[name]
    vals = [Fraction(v) for v in block]
    top = max(abs(v) for v in vals)
    s = -127 if top == 0 else max(-127, binade(top) - emax)
    elem = get_mx(name).element
    return [round_fraction(v / Fraction(2) ** s, elem, saturate=True).value * 2.0**s for v in vals]


def test_element_constants_follow_the_spec():
    for name, (emax, top) in ELEMENTS.items():
        el = get_mx(name).element
        assert (el.emax, el.max) == (emax, top), name
        assert get_mx(name).block == 32


@pytest.mark.parametrize("name", list(MX_FORMATS))
def test_quantisation_matches_the_rational_oracle(name):
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal((6, 75)) * np.exp2(rng.integers(-30, 30, size=(6, 1)))
    x[2, 32:64] = 0.0
    x[3, 5] = 2.0**-1074
    q = get_mx(name).quantise(x)
    for r in range(6):
        for j0 in range(0, 75, 32):
            assert list(q[r, j0:j0 + 32]) == oracle_block(list(x[r, j0:j0 + 32]), name), (r, j0)


def test_hand_examples():
    e4m3 = get_mx("mxfp8-e4m3")
    # max 2.5: s = 1 - 8 = -7; 0.3 * 128 = 38.4 -> 40; 1e-3 * 128 = 0.128 -> 0.125 (quantum 2^-6)
    block = np.array([1.0, 0.3, -2.5, 1e-3] + [0.0] * 28)
    np.testing.assert_array_equal(e4m3.quantise(block)[:4], [1.0, 40 / 128, -2.5, 0.125 / 128])
    # the block max at the top of the element range: s = 0, nothing changes
    top = np.array([448.0, -448.0, 1.0, 0.001953125] + [0.0] * 28)
    np.testing.assert_array_equal(e4m3.quantise(top), top)
    # saturation: 500 has s = 0 and 500 > 448 saturates; 480 and 464 too
    np.testing.assert_array_equal(e4m3.quantise(np.array([500.0, -480.0, 464.0]))[:3], [448.0, -448.0, 448.0])
    # fp4: max 7.9 -> s = 2 - 2 = 0, 7.9 saturates to 6; 5 is a tie between 4 and 6: even -> 4
    np.testing.assert_array_equal(get_mx("mxfp4-e2m1").quantise(np.array([7.9, 5.0, 0.2]))[:3], [6.0, 4.0, 0.0])
    # a block of zeros, and a second block that does not share the first one's scale
    z = np.zeros(64)
    z[40] = 1000.0
    z[41] = 1.0
    out = e4m3.quantise(z)
    # s = floor(log2 1000) - 8 = 1: 1000 / 2 = 500 saturates to 448 (the floor rule's known clamp)
    assert np.all(out[:32] == 0.0) and out[40] == 896.0 and out[41] == 1.0
    # mxint8: max 2 gives s = 1 - 0 = 1; 0.3 / 2 = 0.15 = 9.6 / 64 -> 10 / 64
    np.testing.assert_array_equal(get_mx("mxint8").quantise(np.array([1.0, 0.3, -2.0]))[:3], [1.0, 0.3125, -2.0])


def test_non_finite_and_out_of_range_blocks():
    e4m3 = get_mx("mxfp8-e4m3")
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(FormatSpecError, match="cannot be stored in mxfp8-e4m3"):
            e4m3.quantise(np.array([1.0, bad]))
    with pytest.raises(FormatSpecError, match="E8M0 scale range"):
        e4m3.quantise(np.array([2.0**140]))
    soft = e4m3.quantise(np.array([1.0] * 32 + [1.0, np.inf]), refuse=False)
    assert np.all(soft[:32] == 1.0) and np.all(np.isnan(soft[32:]))


def test_mx_products_are_exact():
    rng = np.random.default_rng(1)
    for name in MX_FORMATS:
        f = get_mx(name)
        a = f.quantise(rng.standard_normal(64) * 2.0**rng.integers(-100, 100))
        b = f.quantise(rng.standard_normal(64) * 2.0**rng.integers(-100, 100))
        for u, v in zip(a, b):
            assert Fraction(float(u * v)) == Fraction(float(u)) * Fraction(float(v))


def test_storage_spec_and_block_axis():
    st = parse_storage("mxfp8-e4m3")
    assert st.spec == "mxfp8-e4m3" and st.mx is get_mx("mxfp8-e4m3") and st.fmt.name == "fp8-e4m3fn"
    assert parse_storage(st.spec) == st
    with pytest.raises(FormatSpecError, match="takes no flags"):
        parse_storage("mxfp8-e4m3:saturate")
    rng = np.random.default_rng(2)
    W = rng.standard_normal((3, 40)) * np.array([[1.0], [1e3], [1e-3]])
    net = Network([Layer(W, rng.standard_normal(3), get_activation("relu"))])
    rounded = net.with_storage("mxfp4-e2m1")
    for i in range(3):  # each row is its own blocks: the reduction axis n
        assert list(rounded.layers[0].weight[i, :32]) == oracle_block(list(W[i, :32]), "mxfp4-e2m1")


def test_tensor_core_takes_mx_operands_and_refuses_others():
    rng = np.random.default_rng(3)
    f = get_mx("mxfp8-e5m2")
    x, W = f.quantise(rng.standard_normal((2, 64))), f.quantise(rng.standard_normal((3, 64)) * 50)
    y = linear(x, W, None, "tensorcore:b200:mxfp8-e5m2")
    assert np.all(np.abs(y - x @ W.T) <= 1e-5 * (np.abs(x) @ np.abs(W).T))
    with pytest.raises(FormatSpecError, match=r"x\[0, 0\] == .* not representable in mxfp8-e5m2"):
        linear(x + 1e-3, W, None, "tensorcore:b200:mxfp8-e5m2")


@pytest.mark.parametrize("name", list(MX_FORMATS))
def test_storage_error_bound_holds(name):
    rng = np.random.default_rng(4)
    v = rng.standard_normal((20, 70)) * np.exp2(rng.integers(-20, 20, size=(20, 70)))
    v[0, :32] = 0.0
    v[1, 3] = 1e-300
    q = get_mx(name).quantise(v)
    bound = mx_storage_error(v, get_mx(name))
    assert np.all(np.abs(q - v) <= bound)
    assert math.isinf(mx_storage_error(np.array([1.0, np.nan]), get_mx(name))[1])
