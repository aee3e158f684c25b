"""Format constants and decoding against numpy/ml_dtypes and the IEEE-like definition."""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from emulator.errors import FormatSpecError, UnknownNameError
from emulator.formats import FORMATS, Format, format_names, get_format

# our name -> the numpy / ml_dtypes type that has the same format
DTYPES = {
    "fp64": np.float64, "fp32": np.float32, "fp16": np.float16, "bf16": ml_dtypes.bfloat16,
    "fp8-e5m2": ml_dtypes.float8_e5m2, "fp8-e4m3fn": ml_dtypes.float8_e4m3fn, "fp6-e3m2": ml_dtypes.float6_e3m2fn,
    "fp6-e2m3": ml_dtypes.float6_e2m3fn, "fp4-e2m1": ml_dtypes.float4_e2m1fn, "e4m3": ml_dtypes.float8_e4m3,
    "e3m4": ml_dtypes.float8_e3m4, "e5m10": np.float16, "e8m7": ml_dtypes.bfloat16, "e8m23": np.float32,
    "e11m52": np.float64, "e5m2": ml_dtypes.float8_e5m2,
}


def finfo(dtype):
    return np.finfo(dtype) if dtype in (np.float64, np.float32, np.float16) else ml_dtypes.finfo(dtype)


@pytest.mark.parametrize("name", list(DTYPES))
def test_constants_match_numpy_and_ml_dtypes(name):
    f, fi = get_format(name), finfo(DTYPES[name])
    assert f.p == fi.nmant + 1
    assert f.emin == fi.minexp and f.emax == fi.maxexp - 1
    assert f.max == float(fi.max)
    assert f.min_normal == float(fi.smallest_normal)
    assert f.min_subnormal == float(fi.smallest_subnormal)
    assert f.u == float(fi.eps) / 2 == 2.0**-f.p
    assert f.bits == fi.bits


@pytest.mark.parametrize("name, p, emin, emax, largest, bits, has_inf, has_nan", [
    ("fp64", 53, -1022, 1023, 1.7976931348623157e308, 64, True, True),
    ("fp32", 24, -126, 127, float.fromhex("0x1.fffffep127"), 32, True, True),
    ("tf32", 11, -126, 127, float.fromhex("0x1.ffcp127"), 19, True, True),
    ("fp16", 11, -14, 15, 65504.0, 16, True, True),
    ("bf16", 8, -126, 127, float.fromhex("0x1.fep127"), 16, True, True),
    ("fp8-e5m2", 3, -14, 15, 57344.0, 8, True, True),
    ("fp8-e4m3fn", 4, -6, 8, 448.0, 8, False, True),
    ("fp6-e3m2", 3, -2, 4, 28.0, 6, False, False),
    ("fp6-e2m3", 4, 0, 2, 7.5, 6, False, False),
    ("fp4-e2m1", 2, 0, 2, 6.0, 4, False, False),
    ("e4m3", 4, -6, 7, 240.0, 8, True, True),
    ("e3m4", 5, -2, 3, 15.5, 8, True, True),
    ("e2m1", 2, 0, 1, 3.0, 4, True, True),
    ("e11m10", 11, -1022, 1023, float.fromhex("0x1.ffcp1023"), 22, True, True),
])
def test_constants_pinned(name, p, emin, emax, largest, bits, has_inf, has_nan):
    f = get_format(name)
    assert (f.p, f.emin, f.emax, f.max, f.bits, f.has_inf, f.has_nan) == (p, emin, emax, largest, bits, has_inf,
                                                                           has_nan)
    assert f.min_normal == 2.0**emin and f.min_subnormal == math.ldexp(1.0, emin - p + 1) and f.u == 2.0**-p


@pytest.mark.parametrize("name", [n for n in DTYPES if get_format(n).bits <= 16])
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # NaN payloads
def test_decode_every_encoding_matches_ml_dtypes(name):
    f = get_format(name)
    codes = np.arange(2**f.bits)
    storage = np.uint16 if f.bits == 16 else np.uint8
    want = codes.astype(storage).view(DTYPES[name]).astype(np.float64)
    got = f.decode(codes)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.array_equal(got[ok].view(np.int64), want[ok].view(np.int64))  # bitwise: signed zeros too


@pytest.mark.parametrize("name, dtype, uint", [("fp32", np.float32, np.uint32), ("fp64", np.float64, np.uint64),
                                                ("e8m23", np.float32, np.uint32)])
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # NaN payloads
def test_decode_wide_formats_on_random_encodings(name, dtype, uint):
    f = get_format(name)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2 ** min(f.bits, 63), 10**5, dtype=np.int64)
    got = f.decode(codes)
    want = codes.astype(uint).view(dtype).astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(want)], want[~np.isnan(want)])


def _definition(code: int, f: Format) -> float:
    """IEEE 754 decoding of one encoding, from the standard's formulas."""
    sign = -1 if code >> (f.ebits + f.mbits) else 1
    biased, frac = (code >> f.mbits) & (2**f.ebits - 1), code & (2**f.mbits - 1)
    if biased == 2**f.ebits - 1:
        return sign * math.inf if frac == 0 else math.nan
    if biased == 0:
        return sign * float(Fraction(frac, 2**f.mbits) * Fraction(2) ** f.emin)
    return sign * float((1 + Fraction(frac, 2**f.mbits)) * Fraction(2) ** (biased - f.bias))


@pytest.mark.parametrize("name", ["e2m1", "e3m1", "e2m5", "e6m3", "e4m3", "e3m4", "e5m6", "e7m2"])
def test_decode_custom_formats_follows_ieee(name):
    f = get_format(name)
    got = f.decode(np.arange(2**f.bits))
    want = np.array([_definition(c, f) for c in range(2**f.bits)])
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(want)].view(np.int64), want[~np.isnan(want)].view(np.int64))
    finite = np.unique(got[np.isfinite(got) & (got >= 0)])
    assert finite[-1] == f.max and finite[1] == f.min_subnormal


def test_custom_formats_equal_to_named_ones():
    for custom, named in (("e5m10", "fp16"), ("e8m7", "bf16"), ("e8m23", "fp32"), ("e11m52", "fp64"),
                          ("e8m10", "tf32"), ("e5m2", "fp8-e5m2")):
        a, b = get_format(custom).describe(), get_format(named).describe()
        a.pop("name"), b.pop("name")
        assert a == b, custom


def test_registry_and_lookup():
    assert format_names() == FORMATS.names() == ["fp64", "fp32", "tf32", "fp16", "bf16", "fp8-e5m2", "fp8-e4m3fn",
                                                  "fp6-e3m2", "fp6-e2m3", "fp4-e2m1"]
    f = get_format("fp16")
    assert get_format(f) is f and get_format(" fp16 ") is f
    assert get_format(" e4m3 ").name == "e4m3"
    assert set(f.describe()) == {"name", "p", "emin", "emax", "u", "max", "min_normal", "min_subnormal", "bits",
                                 "inf", "nan"}


@pytest.mark.parametrize("call, exc, message", [
    (lambda: get_format("fp9"), UnknownNameError,
     "Unknown format 'fp9'. Possible values are: fp64, fp32, tf32, fp16, bf16, fp8-e5m2, fp8-e4m3fn, fp6-e3m2, "
     "fp6-e2m3, fp4-e2m1, eXmY (e.g. e4m3, e5m10, e8m7)."),
    (lambda: get_format(""), UnknownNameError, "Unknown format ''"),
    (lambda: get_format(None), UnknownNameError, "Unknown format None"),
    (lambda: get_format("E4M3"), UnknownNameError, "Unknown format 'E4M3'"),
    (lambda: get_format("e1m3"), FormatSpecError, "Custom format 'e1m3': needs 2 <= X <= 11 exponent bits"),
    (lambda: get_format("e12m2"), FormatSpecError, "Custom format 'e12m2': needs 2 <= X <= 11"),
    (lambda: get_format("e5m0"), FormatSpecError, "1 <= Y <= 52 significand bits"),
    (lambda: get_format("e5m60"), FormatSpecError, "1 <= Y <= 52 significand bits"),
    (lambda: Format("x", 4, 3, 7, "nan-only"), FormatSpecError, "specials == 'nan-only', must be one of ieee, fn"),
    (lambda: Format("x", 4, 0, 7), FormatSpecError, "x: mbits == 0, must be in 1..52"),
    (lambda: Format("x", 12, 3, 2047), FormatSpecError, "x: ebits == 12, must be in 1..11"),
    (lambda: Format("x", 11, 10, 0), FormatSpecError, "x: exponent range [1, 2046]"),
    (lambda: get_format("fp16").decode([70000]), FormatSpecError, "fp16: encodings must lie in [0, 2^16)"),
    (lambda: get_format("fp16").decode([-1]), FormatSpecError, "encodings must lie in [0, 2^16)"),
])
def test_bad_formats(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)
