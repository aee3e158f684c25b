"""Tensor-core (block-FMA) accumulation, bit for bit against a scalar oracle in Python
integers that follows the model's rules (docs/method.md#tensor-core-accumulation), the
published behaviours of V100 / A100 tensor cores, and spec parsing."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from emulator.accumulation import Accumulation, parse_accumulation
from emulator.errors import FormatSpecError, MixaccError
from emulator.formats import get_format
from emulator.linear import linear
from emulator.mx import get_mx
from emulator.rounding import round_to
from tests.oracles import binade, round_fraction

# The table the presets must implement: (arch, input) -> (k, products per step, F, fp32 output
# fraction bits, fp16 output exists, products summed exactly per term)
TABLE = {
    ("v100", "fp16"): (4, 4, 23, 23, True, 1),
    ("a100", "fp16"): (16, 8, 24, 23, True, 1),
    ("a100", "bf16"): (16, 8, 24, 23, True, 1),
    ("a100", "tf32"): (8, 4, 24, 23, False, 1),
    ("ada", "fp8-e4m3fn"): (32, 16, 13, 13, True, 1),
    ("ada", "fp8-e5m2"): (32, 16, 13, 13, True, 1),
    ("h100", "fp16"): (16, 16, 25, 23, True, 1),
    ("h100", "bf16"): (16, 16, 25, 23, True, 1),
    ("h100", "tf32"): (8, 8, 25, 23, False, 1),
    ("h100", "fp8-e4m3fn"): (32, 32, 13, 13, True, 1),
    ("h100", "fp8-e5m2"): (32, 32, 13, 13, True, 1),
    ("b200", "fp16"): (16, 16, 25, 23, True, 1),
    ("b200", "bf16"): (16, 16, 25, 23, True, 1),
    ("b200", "tf32"): (8, 8, 25, 23, False, 1),
    ("b200", "fp8-e4m3fn"): (32, 32, 25, 23, True, 1),
    ("b200", "fp8-e5m2"): (32, 32, 25, 23, True, 1),
    ("b200", "mxfp8-e4m3"): (32, 32, 25, 23, False, 1),
    ("b200", "mxfp8-e5m2"): (32, 32, 25, 23, False, 1),
    ("b200", "mxfp4-e2m1"): (64, 64, 35, 23, False, 16),
}
MX_ELEMENT = {"mxfp8-e4m3": "fp8-e4m3fn", "mxfp8-e5m2": "fp8-e5m2", "mxfp4-e2m1": "fp4-e2m1"}
EMAX = {"fp8-e4m3fn": 8, "fp8-e5m2": 15, "fp4-e2m1": 2}
EMIN = {"fp16": -14, "bf16": -126, "tf32": -126, "fp8-e4m3fn": -6, "fp8-e5m2": -14, "fp4-e2m1": 0, "fp32": -126}
PREC = {"fp16": 11, "bf16": 8, "tf32": 11, "fp8-e4m3fn": 4, "fp8-e5m2": 3, "fp4-e2m1": 2}
FP32_MAX_EXP, FP16_MAX = 127, 65504


# ------------------------------------------------------------------------------ the oracle


class Model:
    """One preset's constants, from TABLE (not from the code under test)."""

    def __init__(self, arch, inp, out="fp32", promote=0):
        k, step, frac, frac32, _, group = TABLE[(arch, inp)]
        self.inp, self.step, self.frac, self.group, self.promote = inp, step, frac, group, promote
        self.mx = inp in MX_ELEMENT
        self.elem = MX_ELEMENT.get(inp, inp)
        if out == "fp16":
            self.out_frac, self.out_emin, self.out_emax, self.nearest = 10, -14, 15, True
        else:
            self.out_frac, self.out_emin, self.out_emax, self.nearest = frac32, -126, FP32_MAX_EXP, False


def mx_scale(block) -> int:
    """floor(log2 max |v|) - emax_elem of a block of MX values (-127 for zeros)."""
    return -127 if not any(block) else max(-127, binade(max(abs(Fraction(v)) for v in block)) - EMAX[block.elem])


def exponent(v: Fraction, emin: int) -> int | None:
    return None if v == 0 else max(binade(abs(v)), emin)


def out_exponent(v: Fraction, model: Model) -> int | None:
    return exponent(v, model.out_emin)


def round_output(total: Fraction, model: Model) -> float:
    """RZ to out_frac bits (fp32 range; beyond it inf) or RN to fp16 (beyond max: inf)."""
    if total == 0:
        return 0.0
    e = max(binade(abs(total)), model.out_emin)
    q = Fraction(2) ** (e - model.out_frac)
    units = abs(total) / q
    k = math.floor(units)
    if model.nearest and (units - k > Fraction(1, 2) or (units - k == Fraction(1, 2) and k % 2)):
        k += 1
    mag = k * q
    limit = Fraction(FP16_MAX) if model.nearest else (2 - Fraction(2) ** -model.out_frac) * Fraction(2) ** model.out_emax
    value = math.inf if mag > limit else float(mag)
    return -value if total < 0 else value


def step(c: float, terms: list[tuple[Fraction, int]], model: Model) -> float:
    """One fused step: C and the (value, exponent) terms, truncated to 2^(M - F), summed
    exactly, rounded once."""
    if not math.isfinite(c):
        return c
    cv = Fraction(c)
    all_terms = ([(cv, out_exponent(cv, model))] if cv else []) + [t for t in terms if t[1] is not None]
    if not all_terms:
        return 0.0
    big = max(e for _, e in all_terms)
    quantum = Fraction(2) ** (big - model.frac)
    total = Fraction(0)
    for v, _ in all_terms:
        units = math.floor(abs(v) / quantum)
        total += units * quantum if v > 0 else -units * quantum
    return round_output(total, model)


def oracle(x, w, b, model: Model) -> float:
    """One component of W x + b under the preset."""
    x = [Fraction(float(v)) for v in x]
    w = [Fraction(float(v)) for v in w]
    n = len(x)
    if model.mx:
        class Block(list):
            elem = model.elem
        sx = [mx_scale(Block(x[j0:j0 + 32])) for j0 in range(0, n, 32)]
        sw = [mx_scale(Block(w[j0:j0 + 32])) for j0 in range(0, n, 32)]
    terms = []
    for j in range(0, n, model.group):
        if model.group > 1:  # a group: exact sum of its products, exponent = the two scales
            value = sum(x[jj] * w[jj] for jj in range(j, min(n, j + model.group)))
            terms.append((value, sx[j // 32] + sw[j // 32]))
            continue
        if model.mx:
            ex = exponent(x[j], EMIN[model.elem] + sx[j // 32])
            ew = exponent(w[j], EMIN[model.elem] + sw[j // 32])
        else:
            ex, ew = exponent(x[j], EMIN[model.elem]), exponent(w[j], EMIN[model.elem])
        terms.append((x[j] * w[j], None if ex is None or ew is None else ex + ew))
    per_step = model.step // model.group
    width = (model.promote or n) // model.group
    bias = Fraction(0) if b is None else Fraction(float(b))
    if model.promote:
        acc = round_fraction(bias, "fp32").value
        for lo in range(0, len(terms), width):
            c = 0.0
            chunk = terms[lo:lo + width]
            for t0 in range(0, len(chunk), per_step):
                c = step(c, chunk[t0:t0 + per_step], model)
            finite = math.isfinite(c) and math.isfinite(acc)
            acc = round_fraction(Fraction(acc) + Fraction(c), "fp32").value if finite else acc + c
        return acc
    c = round_fraction(bias, "fp16" if model.nearest else "fp32").value
    for t0 in range(0, len(terms), per_step):
        c = step(c, terms[t0:t0 + per_step], model)
    return c


def spec_of(arch, inp, out="fp32", promote=0) -> str:
    return ":".join(["tensorcore", arch, inp] + (["out=fp16"] if out == "fp16" else [])
                    + ([f"promote={promote}"] if promote else []))


def check(x, W, b, arch, inp, out="fp32", promote=0):
    model = Model(arch, inp, out, promote)
    y = linear(x, W, b, spec_of(arch, inp, out, promote))
    for r in range(x.shape[0]):
        for i in range(W.shape[0]):
            want = oracle(x[r], W[i], None if b is None else b[i], model)
            got = y[r, i]
            assert got == want or (math.isnan(want) and math.isnan(got)), (arch, inp, out, promote, r, i, got, want)
    return y


# ------------------------------------------------------------------------------ data


def values(fmt: str, rng, shape, spread: int = 4) -> np.ndarray:
    """Random values of a plain format: random significands at exponents around 0 (within
    +-spread binades), with about one in eight drawn from every finite value of the
    format (subnormals, the top of the range) and one in eight zeros."""
    f = get_format(fmt)
    sig = rng.integers(2 ** (f.p - 1), 2**f.p, size=shape)
    exp = rng.integers(-spread, spread + 1, size=shape)
    v = np.ldexp(sig.astype(float), exp - f.p + 1) * rng.choice([-1.0, 1.0], size=shape)
    codes = rng.integers(0, 2 ** (f.bits - 1), size=shape)
    special = f.decode(codes)
    special = np.where(np.isfinite(special), special, 0.0)
    pick = rng.random(shape)
    v = np.where(pick < 0.125, special * rng.choice([-1.0, 1.0], size=shape), v)
    v = np.where((pick >= 0.125) & (pick < 0.25), 0.0, v)
    return round_to(v, f, saturate=True)


def operands(inp: str, rng, shape, spread: int = 4) -> np.ndarray:
    if inp in MX_ELEMENT:
        raw = values("fp16", rng, shape, spread) * np.exp2(rng.integers(-20, 20, size=shape[:-1] + (1,)))
        return get_mx(inp).quantise(raw)
    return values(inp, rng, shape, spread)


PRESETS = sorted(TABLE)
CASES = [(a, i, o) for a, i in PRESETS for o in (["fp32", "fp16"] if TABLE[(a, i)][4] else ["fp32"])]


# ------------------------------------------------------------------------------ bit for bit


@pytest.mark.parametrize("arch,inp,out", CASES)
def test_one_instruction_and_chained_match_the_oracle(arch, inp, out):
    rng = np.random.default_rng(hash((arch, inp, out)) % 2**32)
    k = TABLE[(arch, inp)][0]
    for n in (k, 256):
        x, W = operands(inp, rng, (3, n)), operands(inp, rng, (5, n))
        b = rng.standard_normal(5) * 4
        check(x, W, b, arch, inp, out)
        check(x, W, None, arch, inp, out)


@pytest.mark.parametrize("arch,inp", PRESETS)
def test_promotion_matches_the_oracle(arch, inp):
    rng = np.random.default_rng(7)
    k = TABLE[(arch, inp)][0]
    x, W = operands(inp, rng, (2, 256)), operands(inp, rng, (4, 256))
    check(x, W, rng.standard_normal(4), arch, inp, promote=2 * k)
    check(x, W, None, arch, inp, promote=128)


def crafted(inp: str, k: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(x, W, b) cases built to hit each rule: mixed exponents, C above every product,
    cancellation to zero, the top of the range, subnormals, zeros next to huge values."""
    f = get_format(MX_ELEMENT.get(inp, inp))
    top, sub = f.max, f.min_subnormal
    n = 2 * k
    ones = np.ones(n)
    mixed = np.array([top if j % 5 == 0 else sub * (j + 1) if j % 5 == 1 else 1.0 + (j % 3) / 4 for j in range(n)])
    mixed = mixed * np.where(np.arange(n) % 2, -1.0, 1.0)
    cancel = np.array([(1.0 + (j // 2 % 4) / 8) * (1 if j % 2 == 0 else -1) for j in range(n)])
    zeros_huge = np.array([top if j == 0 else 0.0 for j in range(n)])
    subs = np.array([sub * (1 + j % 3) for j in range(n)])
    cases = [
        (mixed, ones, np.array([0.0])),
        (ones * 0.5, mixed, np.array([3.0e6])),  # C above every product
        (cancel, ones, np.array([0.0])),
        (ones * top, ones * top, np.array([1.0])),
        (subs, ones, np.array([0.0])),
        (subs, ones * top, np.array([-0.5])),
        (zeros_huge, ones * top, np.array([1e-30])),
    ]
    store = get_mx(inp).quantise if inp in MX_ELEMENT else (lambda v: round_to(v, f, saturate=True))
    return [(store(x[None, :]), store(w[None, :]), b) for x, w, b in cases]


@pytest.mark.parametrize("arch,inp,out", CASES)
def test_crafted_cases_match_the_oracle(arch, inp, out):
    k = TABLE[(arch, inp)][0]
    for x, W, b in crafted(inp, k):
        check(x, W, b, arch, inp, out)


def test_overflow_gives_inf_in_both_outputs():
    """A truncated sum beyond fp32 (|S| >= 2^128) is inf, not max (MMA-Sim's conversion);
    fp16 output overflows to inf by rounding to nearest."""
    big = float(get_format("bf16").max)
    y, ovf = linear(np.array([big, big]), np.array([[big, big]]), None, "tensorcore:a100:bf16", return_overflow=True)
    assert y[0] == math.inf and ovf[0]
    y, ovf = linear(np.array([256.0, 256.0]), np.array([[256.0, 1.0]]), None, "tensorcore:h100:fp16:out=fp16",
                    return_overflow=True)
    assert y[0] == math.inf and ovf[0]
    y, ovf = linear(np.array([255.0]), np.array([[256.0]]), np.array([-3.0]), "tensorcore:h100:fp16:out=fp16",
                    return_overflow=True)
    assert y[0] == 65280.0 and not ovf[0]  # 65277 to nearest at quantum 32
    check(np.array([[big, big]]), np.array([[big, -big], [big, big]]), np.array([0.0, 1.0]), "b200", "bf16")


def test_zero_results_are_positive_zero():
    y = linear(np.array([1.0, -1.0, 0.0, -0.0]), np.array([[1.0, 1.0, 2.0, 2.0]]), np.array([-0.0]), "tensorcore:h100:fp16")
    assert y[0] == 0.0 and math.copysign(1.0, y[0]) == 1.0


def test_non_finite_operands_follow_ieee_sums():
    inf = math.inf
    spec = "tensorcore:h100:fp16"
    assert linear(np.array([inf, 1.0]), np.array([[1.0, 1.0]]), None, spec)[0] == inf
    assert math.isnan(linear(np.array([inf, 1.0]), np.array([[0.0, 1.0]]), None, spec)[0])
    assert math.isnan(linear(np.array([inf, inf]), np.array([[1.0, -1.0]]), None, spec)[0])
    y, ovf = linear(np.array([inf] + [1.0] * 20), np.array([[1.0] * 21]), None, spec, return_overflow=True)
    assert y[0] == inf and ovf[0]


def test_blockfma_is_the_same_model_with_free_parameters():
    rng = np.random.default_rng(3)
    x, W = operands("fp16", rng, (4, 100)), operands("fp16", rng, (6, 100))
    b = rng.standard_normal(6)
    for preset, free in (("tensorcore:a100:fp16", "blockfma:8:24:fp32:in=fp16"),
                         ("tensorcore:h100:fp16:out=fp16:promote=32", "blockfma:16:25:fp16:rn:in=fp16:promote=32"),
                         ("tensorcore:ada:fp8-e4m3fn", "blockfma:16:13:e8m13:in=fp8-e4m3fn")):
        xs = operands(parse_accumulation(preset).hardware.inputs.name, rng, (4, 100))
        Ws = operands(parse_accumulation(preset).hardware.inputs.name, rng, (6, 100))
        np.testing.assert_array_equal(linear(xs, Ws, b, preset), linear(xs, Ws, b, free))
    # no input format: float64 exponents (the same as fp16's away from its subnormals)
    normal = np.where(np.abs(x) >= 2.0**-14, x, 1.0)
    np.testing.assert_array_equal(linear(normal, W * 0 + 1.5, b, "blockfma:8:24:fp32"),
                                  linear(normal, W * 0 + 1.5, b, "tensorcore:a100:fp16"))


def test_blockfma_rounding_to_nearest_and_its_oracle():
    rng = np.random.default_rng(4)
    x, W = operands("bf16", rng, (3, 70)), operands("bf16", rng, (4, 70))
    y = linear(x, W, None, "blockfma:8:24:fp16:rn:in=bf16")
    model = Model("a100", "bf16", "fp16")
    for r in range(3):
        for i in range(4):
            assert y[r, i] == oracle(x[r], W[i], None, model)


# ------------------------------------------------------------------------------ published behaviours
# Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of NVIDIA tensor cores", PeerJ CS 7 (2021) e330.


def test_v100_a100_products_are_exact_within_a_step():
    """(1 + 2^-10)^2 - (1 + 2^-9) = 2^-20: the product is not rounded to fp16 or fp32."""
    a = 1 + 2.0**-10
    for spec in ("tensorcore:v100:fp16", "tensorcore:a100:fp16"):
        assert linear(np.array([a, 1 + 2.0**-9]), np.array([[a, -1.0]]), None, spec)[0] == 2.0**-20


@pytest.mark.parametrize("spec,frac", [("tensorcore:v100:fp16", 23), ("tensorcore:a100:fp16", 24)])
def test_v100_a100_align_by_truncation_and_round_toward_zero(spec, frac):
    """1 + 1.5 2^-(F+1): the product falls below the quantum 2^-F of the step and is
    truncated away (round to nearest would give 1 + 2^-23); a negative one is truncated
    toward zero as a term, so the result is 1, not RZ(1 - 1.5 2^-(F+1)) = 1 - 2^-24."""
    p = 1.5 * 2.0 ** -(frac + 1)
    x = np.array([1.5 * 2.0**-12, 0.0])
    w = np.array([[p / (1.5 * 2.0**-12), 0.0]])
    assert linear(x, w, np.array([1.0]), spec)[0] == 1.0
    assert linear(x, -w, np.array([1.0]), spec)[0] == 1.0
    # the normalised sum 1 + 2^-12 + 2^-24 (+ 2^-25 truncated) is rounded toward zero:
    # 1 + 2^-12, where round to nearest of the exact sum gives 1 + 2^-12 + 2^-23
    x2 = np.array([1.0, 2.0**-12, 2.0**-12])
    w2 = np.array([[1.0, 1.0, 2.0**-12 + 2.0**-13]])
    assert linear(x2, w2, None, spec)[0] == 1.0 + 2.0**-12


@pytest.mark.parametrize("spec,frac,count", [("tensorcore:v100:fp16", 23, 3), ("tensorcore:a100:fp16", 24, 7)])
def test_v100_a100_late_normalisation_is_not_monotonic(spec, frac, count):
    """Raising C from 2 - 2^-23 to 2 lowers the result: the largest exponent moves up,
    and the small products 1.5 2^-F (one quantum each below) fall below the coarser one."""
    small = np.array([1.5 * 2.0**-12] * count)
    w = np.array([[2.0 ** -(frac - 12)] * count])
    below = linear(small, w, np.array([2.0 - 2.0**-23]), spec)[0]
    at = linear(small, w, np.array([2.0]), spec)[0]
    assert at < below
    assert at == 2.0


def test_a100_chains_two_steps_per_instruction():
    """A100 fp16 k = 16 is two fused steps of 8, each rounded to fp32: 1 + 2^-24 (first
    step) and + 2^-24 (second) lose both halves; one step of 16 (H100) keeps 1 + 2^-23."""
    x = np.array([1.0, 2.0**-12] + [0.0] * 6 + [2.0**-12] + [0.0] * 7)
    w = np.array([[1.0, 2.0**-12] + [0.0] * 6 + [2.0**-12] + [0.0] * 7])
    assert linear(x, w, None, "tensorcore:a100:fp16")[0] == 1.0
    assert linear(x, w, None, "tensorcore:h100:fp16")[0] == 1.0 + 2.0**-23


# ------------------------------------------------------------------------------ operands and specs


def test_operands_must_be_representable():
    with pytest.raises(FormatSpecError, match=r"x\[0, 1\] == 0.1 is not representable in fp16"):
        linear(np.array([1.0, 0.1]), np.ones((2, 2)), None, "tensorcore:a100:fp16")
    with pytest.raises(FormatSpecError, match=r"W\[1, 0\] == 3.0 is not representable in fp4-e2m1|W\[1, 0\]"):
        linear(np.ones(2), np.array([[1.0, 1.0], [3.0 + 2.0**-9, 1.0]]), None, "tensorcore:ada:fp8-e4m3fn")
    with pytest.raises(FormatSpecError, match="26 significant bits"):
        linear(np.array([0.1]), np.ones((1, 1)), None, "blockfma:4:23:fp32")
    with pytest.raises(FormatSpecError, match=r"W\[0, 0\] == .*2\^-400"):
        linear(np.array([1.0]), np.array([[2.0**-500]]), None, "blockfma:4:23:fp32")


def test_spec_rows_are_canonical():
    a = parse_accumulation("tensorcore:h100:fp8-e4m3fn:promote=128")
    assert isinstance(a, Accumulation) and a.spec == "tensorcore:h100:fp8-e4m3fn:promote=128"
    assert parse_accumulation(a.spec) == a and dataclasses.replace(a, seed=5) == a
    assert a.fmt.name == "e8m13" and a.wide.name == "fp32" and a.rounding.name == "zero" and a.block == 32
    assert parse_accumulation("tensorcore:a100:bf16:out=fp32") == parse_accumulation("tensorcore:a100:bf16")
    for spec in ("blockfma:8:24:fp32", "blockfma:8:24:fp16:rn:in=bf16:promote=64", "tensorcore:v100:fp16:out=fp16"):
        assert parse_accumulation(spec).spec == spec
    with pytest.raises(FormatSpecError, match="fixes rounding"):
        dataclasses.replace(a, rounding="nearest")
    assert a.describe()["hardware"]["fraction_bits"] == 13


@pytest.mark.parametrize("spec,message", [
    ("tensorcore:x100:fp16", "Unknown tensor-core architecture 'x100'"),
    ("tensorcore:v100:bf16", "v100 .* has no input format 'bf16'"),
    ("tensorcore:ada:fp16", "ada .* has no input format 'fp16'"),
    ("tensorcore:a100:fp16:out=bf16", "out == 'bf16'.*must be fp32 or fp16"),
    ("tensorcore:a100:fp16:promote=0", "promote == 0.*positive multiple of 16"),
    ("tensorcore:a100:fp16:promote=-16", "promote == -16"),
    ("tensorcore:a100:fp16:promote=x", "promote == 'x'"),
    ("tensorcore:a100:tf32:out=fp16", "no fp16 output"),
    ("tensorcore:a100", "takes the form"),
    ("blockfma:8:60:fp32", "F == 60"),
    ("blockfma:8:24:fp32:rz:rn", "more than one"),
])
def test_spec_errors_are_one_line(spec, message):
    with pytest.raises(MixaccError, match=message) as err:
        parse_accumulation(spec)
    assert "\n" not in str(err.value)


def test_cost_charges_the_operand_format_and_the_promotions():
    from analysis.cost import accumulation_format, inner_product_cost

    assert accumulation_format("tensorcore:h100:fp8-e4m3fn").name == "fp8-e4m3fn"
    assert accumulation_format("tensorcore:b200:mxfp8-e5m2").name == "fp8-e5m2"
    assert accumulation_format("blockfma:8:24:fp32").name == "fp32"
    assert inner_product_cost("tensorcore:a100:bf16", 784) == 784 * 16
    assert inner_product_cost("tensorcore:h100:fp8-e4m3fn:promote=128", 784) == 784 * 8 + 7 * 32
    assert inner_product_cost("tensorcore:h100:fp8-e4m3fn:promote=128", 784, "quadratic") == 784 * 16 + 7 * 24**2


# ------------------------------------------------------------------------------ bounds


def exact_errors(x, W, b, y) -> np.ndarray:
    out = np.empty(y.shape)
    for r in range(x.shape[0]):
        for i in range(W.shape[0]):
            exact = sum((Fraction(float(u)) * Fraction(float(v)) for u, v in zip(x[r], W[i])), Fraction(float(b[i])))
            out[r, i] = float(abs(Fraction(float(y[r, i])) - exact)) if math.isfinite(y[r, i]) else math.inf
    return out


@pytest.mark.parametrize("arch,inp,out", CASES)
def test_local_bound_holds_on_every_preset(arch, inp, out):
    from analysis.bounds import local_bound, model_constant

    rng = np.random.default_rng(11)
    k = TABLE[(arch, inp)][0]
    for promote in ([0, 2 * k] if out == "fp32" else [0]):
        spec = spec_of(arch, inp, out, promote)
        for n in (k, 200):
            x, W = operands(inp, rng, (3, n), spread=2), operands(inp, rng, (4, n), spread=2)
            b = rng.standard_normal(4) * 3
            y, ovf = linear(x, W, b, spec, return_overflow=True)
            bound = local_bound(x, W, b, spec)
            err = exact_errors(x, W, b, y)
            assert np.all((err <= bound) | ovf), (spec, n)
        assert model_constant(spec, 200).product < 1


def test_bound_covers_subnormal_operands_that_raise_the_alignment():
    """x = 2^-24 (fp16 subnormal, exponent -14) times 2^15: the product 2^-9 has alignment
    exponent 1, so the step's quantum 2^(1 - F) drops the 2^-26 of 2^-10 (1 + 2^-10) 2^-6,
    which the true largest exponent -9 would keep."""
    from analysis.bounds import local_bound, model_constant

    x = np.array([2.0**-24, 2.0**-10, 2.0**-10, 2.0**-10])
    W = np.array([[2.0**15, (1.0 + 2.0**-10) * 2.0**-6, 3.0 * 2.0**-4, 1.0]])
    for spec in ("tensorcore:h100:fp16", "tensorcore:v100:fp16:out=fp16"):
        y = linear(x, W, None, spec)
        err = exact_errors(x[None, :], W, np.zeros(1), y[None, :])[0, 0]
        assert err > 0 and err <= local_bound(x, W, None, spec)[0]
    c = model_constant("tensorcore:h100:fp16", 4, False)
    a = float(np.abs(x) @ np.abs(W[0]))
    err = exact_errors(x[None, :], W, np.zeros(1), linear(x, W, None, "tensorcore:h100:fp16")[None, :])[0, 0]
    assert err > c.product * a + c.underflow  # c a_i alone would not cover it: the data's g does
