"""Results do not depend on how samples are split into batches: stochastic rounding draws
the bits of (seed, global sample index, component, event) whatever batch a sample goes
through, and batches computed apart fold into the same summaries as one pass."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.emulation import emulate
from analysis.graph_validation import validate_graph
from analysis.summaries import Collector
from analysis.validation import validate
from emulator import load_model
from emulator.data import load_model_data
from emulator.errors import DataError
from emulator.linear import linear, linear_slow

STOCHASTIC = "fp16:rounding=stochastic:seed=11"


def test_linear_keys_its_bits_by_the_global_row():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((12, 40)), rng.standard_normal((6, 40)), rng.standard_normal(6)
    whole = linear(x, w, b, STOCHASTIC)
    tail = linear(x[5:], w, b, STOCHASTIC, first_row=5)
    assert np.array_equal(tail, whole[5:])
    slow, _ = linear_slow(x[5:], w, b, STOCHASTIC, first_row=5)  # the rational twin, one rounding at a time
    assert np.array_equal(slow, whole[5:])
    assert not np.array_equal(linear(x[5:], w, b, STOCHASTIC), whole[5:])  # row 0 draws other bits than row 5


def test_first_row_must_be_a_non_negative_integer():
    with pytest.raises(DataError, match="first_row"):
        linear(np.ones((1, 2)), np.ones((1, 2)), None, STOCHASTIC, first_row=-1)


def test_network_batches_draw_the_bits_of_their_samples():
    net = load_model("digits-relu")
    x = load_model_data(net).x[:30]
    whole = net.forward(x, acc=STOCHASTIC)
    parts = [net.forward(x[a:a + 7], acc=STOCHASTIC, first_sample=a) for a in range(0, 30, 7)]
    assert np.array_equal(np.concatenate(parts), whole)


MEASURED = ("components", "uncovered", "max_abs_error", "max_rel_error", "median_rel_error", "worst_relative")


def _measured(record: dict) -> dict:
    """What a validation measures of the emulated values, apart from the bounds (whose
    upward float64 evaluation through BLAS may differ in its last bits between batch
    shapes, which is why every executor keeps the same batches)."""
    summaries = [part[kind] for part in record["layers"] for kind in ("local", "global")]
    return {"flips": record["flips"], "summaries": [{k: s[k] for k in MEASURED} for s in summaries]}


def test_validate_measures_the_same_errors_whatever_the_batch_size():
    net = load_model("digits-relu")
    data = load_model_data(net).head(40)
    results = [_measured(validate(net, data.x, STOCHASTIC, labels=data.y, batch_size=size).to_dict())
               for size in (40, 9, 1)]
    assert results[0] == results[1] == results[2]


def test_graph_validation_and_emulation_do_not_depend_on_the_batch_size():
    graph = load_model("digits-cnn")
    data = load_model_data(graph).head(10)
    spec = "bf16:rounding=stochastic:seed=5"
    a = validate_graph(graph, data, spec, batch_size=10).to_dict()
    b = validate_graph(graph, data, spec, batch_size=3).to_dict()
    assert _measured(a) == _measured(b)
    assert emulate(graph, data, spec, batch_size=10).to_dict() == emulate(graph, data, spec, batch_size=4).to_dict()


def _batches(rng, ties: bool):
    for start in range(0, 60, 12):
        computed = rng.standard_normal((12, 5))
        reference = computed + (np.full((12, 5), 1e-3) if ties else rng.standard_normal((12, 5)) * 1e-3)
        covered = rng.random((12, 5)) > 0.1
        if start == 12:
            covered[:] = False
        yield (start, computed, reference, np.zeros((12, 5)), np.full((12, 5), 2e-3), rng.random((12, 5)), covered,
               rng.random((12, 5)) > 0.8)


@pytest.mark.parametrize("ties", [False, True])
def test_collectors_merged_equal_one_collector(ties):
    sequential, parts = Collector(0.0, False), []
    for batch in _batches(np.random.default_rng(1), ties):
        sequential.add(*batch)
        part = Collector(0.0, False)
        part.add(*batch)
        parts.append(part)
    merged = parts[0]
    for later in parts[1:]:
        merged.merge(later)
    assert merged.summary().to_dict() == sequential.summary().to_dict()
