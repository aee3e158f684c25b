"""The cost model: c(F) per registered model, JSON tables, and the accounting of a run
against uniform high, each on a case computed by hand."""

import json

import pytest

from emulator.accumulation import parse_accumulation

from analysis.cost import (
    COST_MODELS, CostError, LayerWork, accumulation_format, get_cost_model, inner_product_cost, run_cost,
)
from emulator.errors import MixaccError, UnknownNameError

BITS = {"fp8-e4m3fn": 8, "fp8-e5m2": 8, "e4m3": 8, "fp16": 16, "bf16": 16, "tf32": 19, "fp32": 32, "fp64": 64}
PRECISION = {"fp8-e4m3fn": 4, "fp8-e5m2": 3, "e4m3": 4, "fp16": 11, "bf16": 8, "tf32": 11, "fp32": 24, "fp64": 53}


@pytest.mark.parametrize("name", sorted(BITS))
def test_bits_is_storage_bits(name):
    assert get_cost_model("bits")(name) == BITS[name]


@pytest.mark.parametrize("name", sorted(PRECISION))
def test_quadratic_is_p_squared(name):
    assert get_cost_model("quadratic")(name) == PRECISION[name] ** 2


def test_registry_lists_both_models():
    assert COST_MODELS.names() == ["bits", "quadratic"]


def _table(tmp_path, table) -> str:
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(table))
    return str(path)


def test_user_table(tmp_path):
    model = get_cost_model(_table(tmp_path, {"fp16": 1.0, "fp32": 3.5, "e4m3": 0.25}))
    assert (model("fp16"), model("fp32"), model("e4m3")) == (1.0, 3.5, 0.25)


# One layer, n = 4 inputs, m = 3 outputs, N = 2 samples, low fp16, high fp32; a guided run
# with the magnitude pass (kappa) that recomputed 2 of the 6 pairs:
#   low pass 6 x 4 x c(fp16), magnitude pass 6 x 4 x c(fp16), high pass 2 x 4 x c(fp32);
#   reference 6 x 4 x c(fp32).
HAND = [
    # model, table, total, reference
    ("bits", None, 6 * 4 * 16 * 2 + 2 * 4 * 32, 6 * 4 * 32),
    ("quadratic", None, 6 * 4 * 121 * 2 + 2 * 4 * 576, 6 * 4 * 576),
    ("table", {"fp16": 1, "fp32": 4}, 6 * 4 * 1 * 2 + 2 * 4 * 4, 6 * 4 * 4),
]


@pytest.mark.parametrize("model, table, total, reference", HAND)
def test_run_cost_by_hand(tmp_path, model, table, total, reference):
    spec = _table(tmp_path, table) if table else model
    work = [LayerWork(4, {parse_accumulation("fp16"): 12, parse_accumulation("fp32"): 2})]
    cost = run_cost(work, [3], 2, "fp32", spec)
    assert (cost.total, cost.reference) == (total, reference)
    assert cost.relative == total / reference
    assert cost.layers == (total,)


def test_two_layers_add_up():
    # layer 0: n = 3, m = 2, all 5 samples in fp16; layer 1: n = 2, m = 1, all in fp32
    work = [LayerWork(3, {parse_accumulation("fp16"): 10}), LayerWork(2, {parse_accumulation("fp32"): 5})]
    cost = run_cost(work, [2, 1], 5, "fp32", "bits")
    assert cost.layers == (10 * 3 * 16, 5 * 2 * 32)
    assert cost.reference == 5 * (2 * 3 * 32 + 1 * 2 * 32)


def test_promote_pays_for_its_wide_additions():
    """promote:B:G adds ceil(n / B) block sums in G to the n steps in F; rounded products
    are not charged apart."""
    assert inner_product_cost("fp16:promote:128:fp32", 300, "bits") == 300 * 16 + 3 * 32
    assert inner_product_cost("e4m3:promote:32:fp16", 64, "quadratic") == 64 * 16 + 2 * 121
    assert inner_product_cost("fp16:products=fp8-e4m3fn", 10, "bits") == inner_product_cost("fp16", 10, "bits") == 160
    cost = run_cost([LayerWork(300, {parse_accumulation("fp16:promote:128:fp32"): 2})], [1], 2,
                    "fp16:promote:128:fp32")
    assert cost.relative == 1.0 and cost.total == 2 * (300 * 16 + 3 * 32)


def test_accumulation_format_is_the_accumulator():
    assert accumulation_format("e4m3:recursive:bias=last:saturate").name == "e4m3"
    assert accumulation_format("fp16:promote:128:fp32").name == "fp16"


ERRORS = [
    # (callable, exception, message fragment)
    (lambda tmp: get_cost_model("cubic"), UnknownNameError, "Unknown cost model 'cubic'. Possible values are: bits, quadratic"),
    (lambda tmp: get_cost_model(str(tmp / "missing.json")), CostError, "does not exist"),
    (lambda tmp: get_cost_model(_table(tmp, {"fp16": 1}))("fp32"), CostError, "has no entry for format 'fp32'"),
    (lambda tmp: get_cost_model(_table(tmp, {"fp16": -1})), CostError, "cost of 'fp16' == -1, must be a finite number > 0"),
    (lambda tmp: get_cost_model(_table(tmp, {"fp16": "cheap"})), CostError, "must be a finite number > 0"),
    (lambda tmp: get_cost_model(_table(tmp, {"fp9": 1})), CostError, "Unknown format 'fp9'"),
    (lambda tmp: get_cost_model(_table(tmp, [1, 2])), CostError, "must be a non-empty JSON object"),
    (lambda tmp: get_cost_model(_table(tmp, {})), CostError, "must be a non-empty JSON object"),
    (lambda tmp: (tmp / "bad.json").write_text("{oops") and get_cost_model(str(tmp / "bad.json")), CostError,
     "not valid JSON"),
    (lambda tmp: accumulation_format("exact"), CostError, "is exact and has no cost"),
    (lambda tmp: run_cost([LayerWork(2, {})], [1, 2], 1, "fp32"), CostError, "1 layers of work but 2 component counts"),
]


@pytest.mark.parametrize("call, exc, fragment", ERRORS)
def test_errors(tmp_path, call, exc, fragment):
    with pytest.raises(exc) as info:
        call(tmp_path)
    assert fragment in str(info.value)
    assert issubclass(exc, MixaccError)
