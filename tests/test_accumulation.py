"""Accumulation specs: compact strings, canonical round trip, and the error table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from emulator.accumulation import ORDERS, Accumulation, parse_accumulation
from emulator.errors import FormatSpecError, MixaccError, UnknownNameError
from emulator.formats import get_format

SPECS = [
    "fp16", "bf16:pairwise", "fp8-e4m3fn:blocked:32", "fp16:fused:4", "e4m3:promote:128:fp32", "exact", "exact:200",
    "fp16:recursive:products=fp16:rounding=stochastic:seed=3", "fp16:saturate:ftz:bias=last",
    "e4m3:promote:128:fp32:seed=-5", "e5m10:pairwise:products=e4m3:rounding=down",
]


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trip(spec):
    a = parse_accumulation(spec)
    assert parse_accumulation(a.spec) == a
    assert parse_accumulation(a) is a
    assert hash(a) == hash(parse_accumulation(a.spec))
    assert a.describe()["spec"] == a.spec


def test_fields_are_normalised():
    a = parse_accumulation("e4m3:promote:128:fp32:products=fp8-e5m2:rounding=up:bias=last:seed=7:saturate:ftz")
    assert a.fmt == get_format("e4m3") and a.fmt.max == 240
    assert (a.order, a.block, a.wide) == ("promote", 128, get_format("fp32"))
    assert a.products == get_format("fp8-e5m2")
    assert (a.rounding.name, a.bias, a.seed, a.saturate, a.subnormals) == ("up", "last", None, True, False)
    assert a.order_spec == "promote:128:fp32"
    assert not a.is_exact and parse_accumulation("exact:160").precision == 160
    assert Accumulation("fp16", order="fused:8") == parse_accumulation("fp16:fused:8")
    a = Accumulation("fp16", rounding="stochastic", seed=np.int64(3))
    assert a.seed == 3 and type(a.seed) is int


@pytest.mark.parametrize("spec, same", [
    ("bf16:pairwise", "bf16:pairwise:bias=last"),
    ("fp16:seed=3", "fp16"),
    ("fp16:rounding=up:seed=3", "fp16:rounding=up"),
    ("fp16:blocked:032", "fp16:blocked:32"),
    ("e4m3:promote:128:e8m23", "e4m3:promote:128:e8m23"),
])
def test_specs_are_canonical(spec, same):
    a, b = parse_accumulation(spec), parse_accumulation(same)
    assert a == b and a.spec == b.spec and hash(a) == hash(b)


@pytest.mark.parametrize("spec", SPECS)
def test_replace_round_trips(spec):
    a = parse_accumulation(spec)
    assert dataclasses.replace(a) == a
    if not a.is_exact:
        stochastic = dataclasses.replace(a, rounding="stochastic", seed=3)
        assert (stochastic.seed, stochastic.order, stochastic.block, stochastic.wide) == (3, a.order, a.block, a.wide)
        assert parse_accumulation(stochastic.spec) == stochastic
        assert dataclasses.replace(a, seed=3) == a  # a seed means nothing without stochastic rounding
    assert dataclasses.replace(parse_accumulation("fp16:blocked:32"), block=8).spec == "fp16:blocked:8"


def test_every_order_is_parsed():
    for name in ORDERS:
        row = ORDERS.get(name)
        spec = ":".join(["fp16", name, *["8"] * len(row.params), *(["fp32"] if row.wide_format else [])])
        assert parse_accumulation(spec).order == name


ERRORS = [
    ("", FormatSpecError, "is empty"),
    (None, FormatSpecError, "must be a string or an Accumulation"),
    (3, FormatSpecError, "got int 3"),
    ("fp9", UnknownNameError, "Unknown format 'fp9'. Possible values are: fp64"),
    ("fp16:zigzag", UnknownNameError, "Unknown accumulation order 'zigzag'. Possible values are: recursive, pairwise"),
    ("fp16:blocked", FormatSpecError, "takes the form blocked:B"),
    ("fp16:blocked:x", FormatSpecError, "B == 'x' in 'blocked:x', must be an integer >= 1"),
    ("fp16:fused:0", FormatSpecError, "K == 0 in 'fused:0', must be an integer >= 1 (the order takes the form fused:K)"),
    ("fp16:promote:8", FormatSpecError, "takes the form promote:B:G"),
    ("fp16:promote:8:fp99", UnknownNameError, "Unknown format 'fp99'"),
    ("fp16:recursive:3", FormatSpecError, "takes the form recursive"),
    ("fp16:foo=1", FormatSpecError, "Unknown option 'foo'"),
    ("fp16:seed=x", FormatSpecError, "seed == 'x'"),
    ("fp16:bias=middle", FormatSpecError, "bias == 'middle', must be one of first, last"),
    ("fp16:rounding=odd", UnknownNameError, "Unknown rounding mode 'odd'. Possible values are: nearest"),
    ("fp16:products=fp99", UnknownNameError, "Unknown format 'fp99'"),
    ("exact:x", FormatSpecError, "exact takes the form exact or exact:BITS"),
    ("exact:20", FormatSpecError, "exact precision == 20, must be >= 53 bits"),
]


@pytest.mark.parametrize("spec, error, message", ERRORS)
def test_bad_specs(spec, error, message):
    with pytest.raises(error, match=None) as info:
        parse_accumulation(spec)
    assert message in str(info.value)
    assert isinstance(info.value, MixaccError)


@pytest.mark.parametrize("seed", ["a", 1.5, True])
def test_bad_seed(seed):
    with pytest.raises(FormatSpecError, match="must be an integer or None"):
        Accumulation("fp16", seed=seed)
