"""The smallest safe accumulators (docs/method.md#accumulator-sizing): every bundled MLP's
sizing checks out by emulation, formats with one bit less fail a check, the search is
the brute-force minimum, the input boxes hold every computed input, the range check is
what stops a real overflow, integer widths against Python ints, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.bounds import local_bound
from analysis.sizing import (EXPONENT_BITS, SIGNIFICAND_BITS, InputBox, input_boxes, integer_sizing,
                             size_layers)
from analysis.sizing_checks import check_sizing
from emulator import linear, load_data, load_model
from emulator.accumulation import parse_accumulation
from emulator.activations import get_activation
from emulator.formats import get_format
from emulator.modelio import bundled_models
from emulator.network import Layer, Network

from oracles import fraction

MLPS = [name for name in bundled_models() if isinstance(load_model(name), Network)]


def _range(net: Network, samples: "int | None" = None):
    data = load_data(net.meta["default_data"]).head(samples)
    return data, data.x.min(axis=0), data.x.max(axis=0)


def _fails_a_check(fmt: str, layer, box: InputBox, allowed) -> bool:
    """The format certainly fails: its bound at x* exceeds the target somewhere, or a lower
    estimate of a_i(x*) (exact, rationals) plus its bound exceeds the format's max."""
    x_star = box.extreme
    bound = local_bound(x_star, layer.weight, layer.bias, f"{fmt}:recursive")
    if np.any(bound > allowed):
        return True
    i = int(np.argmax(np.abs(layer.weight) @ np.abs(x_star)))
    reach = sum(abs(fraction(w) * fraction(x)) for w, x in zip(layer.weight[i], x_star))
    reach += 0 if layer.bias is None else abs(fraction(layer.bias[i]))
    return reach + fraction(bound[i]) > fraction(get_format(fmt).max)


@pytest.mark.slow
@pytest.mark.parametrize("name", MLPS)
@pytest.mark.parametrize("target", [1e-2, 1e-3])
def test_every_bundled_mlp_is_sized_and_checks_out(name, target):
    net = load_model(name)
    data, lo, hi = _range(net)
    layers = size_layers(net, lo, hi, target)
    checks = check_sizing(net, data.x[:48], layers)
    for layer, check, net_layer in zip(layers, checks, net.layers):
        assert np.max(layer.chosen.bound) <= target
        parse_accumulation(layer.chosen.name)
        assert check["outside_box"] == 0
        for key in ("overflows", "violations", "above_target"):
            assert check["chosen"][key] == 0 and check["channels"][key] == 0, (layer.index, key, check)
        for mode in ("wrap", "saturate"):
            assert check["integer"][mode] == {"overflows": 0, "mismatches": 0, "fits_with_one_bit_less": 0}
        assert len(layer.smaller) == 2
        for smaller in layer.smaller:
            assert not smaller.ok.all()
            assert _fails_a_check(smaller.name, net_layer, layer.box, target), (layer.index, smaller.name)


def _small_layer(seed: int) -> tuple[Layer, InputBox]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, 10)) * 2.0 ** rng.integers(-3, 4, (6, 1))
    b = rng.standard_normal(6)
    lo = -rng.uniform(0, 3, 10)
    return Layer(w, b, get_activation("relu")), InputBox(lo, lo + rng.uniform(0, 6, 10))


@pytest.mark.parametrize("seed", range(3))
def test_the_search_is_the_brute_force_minimum(seed):
    layer, box = _small_layer(seed)
    target = 10.0 ** -(seed + 2)
    net = Network([layer])
    sized = size_layers(net, box.lo, box.hi, target)[0]
    passing = [(1 + x + y, y, f"e{x}m{y}") for x in EXPONENT_BITS for y in SIGNIFICAND_BITS
               if not _fails_a_check(f"e{x}m{y}", layer, box, target)]
    bits, _, best = min(passing, key=lambda p: (p[0], -p[1]))
    assert sized.chosen.name == best and 1 + sum(int(v) for v in best[1:].split("m")) == bits
    for i, fmt in enumerate(sized.channels.formats):
        one = Layer(layer.weight[i:i + 1], layer.bias[i:i + 1], layer.activation)
        ok = [(1 + x + y, -y) for x in EXPONENT_BITS for y in SIGNIFICAND_BITS
              if not _fails_a_check(f"e{x}m{y}", one, box, target)]
        x, y = (int(v) for v in fmt[1:].split("m"))
        assert (1 + x + y, -y) == min(ok)


def test_boxes_hold_every_computed_input():
    """Random inputs of the box and its corners, run in the chosen formats: every layer's
    computed input lies in its box."""
    rng = np.random.default_rng(5)
    for name in ("digits-relu", "mnist1d-tanh"):
        net = load_model(name)
        _, lo, hi = _range(net)
        layers = size_layers(net, lo, hi, 1e-2)
        x = np.concatenate([rng.uniform(lo, hi, (200, len(lo))), np.where(rng.random((50, len(lo))) < 0.5, lo, hi)])
        run = net.forward(x, acc=[layer.chosen.spec for layer in layers], return_all=True)
        for layer, x_hat in zip(layers, [run.input, *run.outputs[:-1]]):
            assert np.all((layer.box.lo <= x_hat) & (x_hat <= layer.box.hi)), (name, layer.index)
        boxes = input_boxes(net, lo, hi, [layer.allowed for layer in layers])
        for layer, box in zip(layers, boxes):
            np.testing.assert_array_equal(layer.box.lo, box.lo)
            np.testing.assert_array_equal(layer.box.hi, box.hi)


def test_the_range_check_stops_a_real_overflow():
    """Eight inputs of [0, 1] with weight 1: the sum reaches 8, so e2mY (max < 4) fails the
    range check, and emulating it at the box's corner overflows; the chosen format does not."""
    net = Network([Layer(np.ones((1, 8)), None, get_activation("identity"))])
    sized = size_layers(net, np.zeros(8), np.ones(8), 1e-2)[0]
    assert sized.chosen.name.startswith("e3m")
    narrow = next(c for c in sized.smaller if c.name.startswith("e2m"))
    assert narrow.bound_ok.all() and not narrow.range_ok.any()
    corner = np.ones((1, 8))
    _, overflow = linear(corner, net.layers[0].weight, None, narrow.spec, return_overflow=True)
    assert overflow.all()
    y, overflow = linear(corner, net.layers[0].weight, None, sized.chosen.spec, return_overflow=True)
    assert not overflow.any() and y[0, 0] == 8.0


def test_integer_widths_against_python_ints():
    layer, box = _small_layer(7)
    sizing = integer_sizing(box, layer.weight, layer.bias)
    s_w = max(abs(fraction(v)) for v in layer.weight.ravel()) / 127
    assert fraction(sizing.weight_scale) == pytest.approx(s_w, rel=1e-15)
    for i in range(layer.n_outputs):
        w_q = [int(v) for v in sizing.w_q[i]]
        reach = sum(abs(w) * int(m) for w, m in zip(w_q, sizing.x_max)) + abs(int(sizing.b_q[i]))
        assert int(sizing.reach[i]) == reach
        bits = int(sizing.bits[i])
        assert reach <= 2 ** (bits - 1) - 1 and reach > 2 ** (bits - 2) - 1
        x_worst, w_worst = sizing.worst(i)
        assert [int(v) for v in w_worst] == w_q
        total = int(sizing.b_q[i]) + sum(w * int(x) for w, x in zip(w_q, x_worst))
        assert abs(total) == reach
    x = np.random.default_rng(1).uniform(box.lo, box.hi, (500, box.lo.size))
    assert np.all(np.abs(sizing.quantise(x)) <= sizing.x_max)


def test_relative_targets_scale_with_a_i():
    net = load_model("digits-tanh")
    _, lo, hi = _range(net)
    for layer in size_layers(net, lo, hi, 1e-3, relative=True):
        a = np.abs(layer.box.extreme) @ np.abs(net.layers[layer.index].weight).T + np.abs(net.layers[layer.index].bias)
        assert np.all(layer.chosen.bound <= layer.allowed) and np.all(layer.allowed >= 1e-3 * a)


def test_cli_size(run_cli, tmp_path):
    out = tmp_path / "size.json"
    code, stdout, stderr = run_cli("size", "digits-tanh", "--target-error", "1e-2", "--samples", "40", "--per-channel",
                                   "--json", out)
    assert code == 0, stderr
    assert "one bit less fails" in stdout and "per channel" in stdout
    record = json.loads(out.read_text())
    assert len(record["layers"]) == 3
    for layer in record["layers"]:
        parse_accumulation(layer["float_format"])
        assert isinstance(layer["integer_bits"], int) and 0 < layer["max_bound"] <= 1e-2
        assert len(layer["channels"]) == layer["outputs"]
    assert record["failures"] == []
    code, _, stderr = run_cli("size", "digits-tanh", "--target-error", "1e-2", "--input-range", "0,0.5")
    assert code == 2 and "lie outside it" in stderr


@pytest.mark.parametrize("args, fragment", [
    (("--target-error", "0"), "target error"),
    (("--target-error", "nan"), "target error"),
    (("--target-error", "x"), "invalid float value"),
    (("--target-error", "1e-2", "--input-range", "1,0"), "LO <= HI"),
    (("--target-error", "1e-2", "--input-range", "0"), "LO,HI"),
    (("--target-error", "1e-2", "--order", "sideways"), "sideways"),
])
def test_cli_size_bad_input_exits_2_with_one_line(run_cli, args, fragment):
    code, _, stderr = run_cli("size", "digits-tanh", "--samples", "4", *args)
    assert code == 2 and fragment in stderr and len(stderr.strip().splitlines()) == 1
