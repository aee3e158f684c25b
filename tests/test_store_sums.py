"""Storing the outputs of sums (``FMT:sums``, ``--store-sums``): the engine rounds the
output of every sum operator to the storage format (checked against numpy and ml_dtypes
on data whose float64 sums are exact), the default keeps them in the accumulator format,
MLPs refuse it, tensor-core specs leave a graph's plain sums to fp32, and the bounds, the
policy, the presets and the command line take it into account."""

from __future__ import annotations

import argparse
import json

import ml_dtypes
import numpy as np
import pytest

from analysis.cli import report as report_cli
from analysis.graph_policy import recompute_graph, uniform_graph
from analysis.presets import PRESETS
from analysis.report.presets import BUNDLED
from analysis.validation import validate
from emulator.data import load_model_data
from emulator.errors import FormatSpecError
from emulator.graph import Emulated, Graph, Node, Site, TensorInfo, forward
from emulator.graph.arithmetic import CUDA_CORE_SUMS, AccumulationPlan, default_at
from emulator.graph.engine import prepare, run_graph
from emulator.linear import linear
from emulator.modelio import load_model
from emulator.network import Layer, Network
from emulator.storage import Storage, parse_storage

RNG = np.random.default_rng(17)
TC = "tensorcore:h100:fp8-e4m3fn"
SUM_TENSORS = ("h", "s", "t", "m")


def f8(a) -> np.ndarray:
    """round to fp8-e4m3fn (ml_dtypes, to nearest even)."""
    return np.asarray(a, dtype=np.float64).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)


def chain() -> Graph:
    """Gemm -> Reshape -> Transpose -> MatMul (activation x activation) -> ReduceSum ->
    ReduceMean: four sum operators feeding one another through moves."""
    w = RNG.integers(-8, 9, (8, 6)) / 8
    b = RNG.integers(-8, 9, 8) / 8
    nodes = [Node("fc", "Gemm", ("x", "w", "b"), ("h",), {"transB": 1}),
             Node("heads", "Reshape", ("h", "shape"), ("r",)),
             Node("t", "Transpose", ("r",), ("rt",), {"perm": (0, 2, 1)}),
             Node("scores", "MatMul", ("r", "rt"), ("s",)),
             Node("rows", "ReduceSum", ("s", "axis2"), ("t",), {"keepdims": 0}),
             Node("mean", "ReduceMean", ("t",), ("m",), {"axes": (1,), "keepdims": 0})]
    inits = {"w": w, "b": b, "shape": np.array([-1, 2, 4]), "axis2": np.array([2])}
    return Graph(nodes, [TensorInfo("x", "float", (None, 6))], ["m"], inits, "chain")


def dyadic_input(n: int = 5) -> np.ndarray:
    return RNG.integers(-8, 9, (n, 6)) / 4


def by_hand(graph: Graph, x: np.ndarray, rnd) -> dict:
    """The chain in float64, exact on these dyadic operands, each sum's output passed
    through ``rnd``; inputs and weights rounded to fp8 first."""
    w, b = f8(graph.initializers["w"]), f8(graph.initializers["b"])
    h = rnd(f8(x) @ w.T + b)
    r = f8(h.reshape(-1, 2, 4))
    s = rnd(r @ f8(r.transpose(0, 2, 1)))
    t = rnd(s.sum(axis=2))
    return {"h": h, "s": s, "t": t, "m": rnd(t.sum(axis=1) / 2)}


def test_storage_spec_with_sums():
    for spec, want in (("fp8-e4m3fn:sums", Storage(parse_storage("fp8-e4m3fn").fmt, sums=True)),
                       ("e4m3:saturate:sums", Storage(parse_storage("e4m3").fmt, saturate=True, sums=True))):
        st = parse_storage(spec)
        assert st == want and st.spec == spec and parse_storage(st.spec) == st
    mx = parse_storage("mxfp8-e4m3:sums")
    assert mx.sums and mx.mx is not None and mx.spec == "mxfp8-e4m3:sums"
    assert not parse_storage("fp16").sums and parse_storage("fp16").storing_sums() == parse_storage("fp16:sums")
    for bad in ("fp16:sums:saturate", "fp16:sums:sums", "mxfp8-e4m3:saturate:sums"):
        with pytest.raises(FormatSpecError):
            parse_storage(bad)


def test_sum_outputs_are_stored_once():
    graph, x = chain(), dyadic_input()
    run = forward(graph, {"x": x}, None, "fp8-e4m3fn:sums", keep=True)
    want = by_hand(graph, x, f8)
    for name in SUM_TENSORS:
        np.testing.assert_array_equal(run.values[name], want[name])
    np.testing.assert_array_equal(run.values["r"], want["h"].reshape(-1, 2, 4))


def test_default_keeps_sums_in_the_accumulator_format():
    graph, x = chain(), dyadic_input()
    run = forward(graph, {"x": x}, None, "fp8-e4m3fn", keep=True)
    want = by_hand(graph, x, lambda a: a)
    for name in SUM_TENSORS:
        np.testing.assert_array_equal(run.values[name], want[name])
    assert not np.array_equal(run.values["h"], f8(run.values["h"]))  # the test can tell the two apart


def test_emulated_sums_are_the_stored_linear_sums_at_stored_operands():
    """Under an accumulation spec each sum operator's output is round_S of the site's
    emulated sum (``linear`` at the recorded operands), and the next site reads it."""
    graph = chain()
    prepared, feeds, st = prepare(graph, {"x": RNG.standard_normal((4, 6))}, "fp8-e4m3fn:sums")
    arith = Emulated("fp16", st, record=True)
    run = run_graph(prepared, feeds, arith, keep=True)
    records = {r.site.name: r for r in arith.records}
    fc, scores, rows = records["fc"], records["scores"], records["rows"]
    np.testing.assert_array_equal(run.values["h"], f8(linear(fc.x, fc.w, fc.bias, "fp16")))
    for g in range(scores.x.shape[0]):
        np.testing.assert_array_equal(scores.y[g], linear(scores.x[g], scores.w[g], None, "fp16"))
    np.testing.assert_array_equal(run.values["s"], f8(scores.y.reshape(run.values["s"].shape)))
    np.testing.assert_array_equal(scores.x, f8(scores.x))
    np.testing.assert_array_equal(run.values["t"], f8(rows.y.reshape(run.values["t"].shape)))
    assert not np.array_equal(fc.y, f8(fc.y))


def test_mlps_refuse_stored_sums():
    net = Network([Layer(RNG.standard_normal((3, 4)), None, "tanh")], "mlp")
    with pytest.raises(FormatSpecError, match="':sums' stores the outputs of a graph's sum operators"):
        net.forward(RNG.standard_normal((2, 4)), "fp16", "fp16:sums")
    with pytest.raises(FormatSpecError, match="an MLP layer applies its activation"):
        validate(net, RNG.standard_normal((2, 4)), "fp16", storage="fp16:sums")


def test_hardware_specs_leave_plain_sums_to_fp32():
    tc = AccumulationPlan(TC).default
    for op, role in (("Gemm", ""), ("MatMul", ""), ("Conv", ""), ("Einsum", "")):
        assert default_at(tc, Site("n", op, role)) is tc
    for op, role in (("Softmax", "sum"), ("LayerNormalization", "var"), ("ReduceMean", ""), ("AveragePool", "")):
        assert default_at(tc, Site("n", op, role)) is CUDA_CORE_SUMS
        assert AccumulationPlan(TC).resolve(Site("n", op, role)).spec == "fp32:recursive"
    assert AccumulationPlan({"ReduceMean": TC, "*": TC}).resolve(Site("pool", "ReduceMean")) is not CUDA_CORE_SUMS
    bf16 = AccumulationPlan("bf16")
    assert bf16.resolve(Site("n", "Softmax", "sum")) is bf16.default


@pytest.fixture(scope="module")
def transformer():
    g = load_model("digits-transformer")
    return g, load_model_data(g).head(2)


def test_tensor_cores_run_digits_transformer_once_its_sums_are_stored(transformer):
    g, data = transformer
    with pytest.raises(FormatSpecError, match="not representable in fp8-e4m3fn"):
        forward(g, data.feeds(["x"]), TC, "fp8-e4m3fn")
    emulated = Emulated(TC, parse_storage("fp8-e4m3fn:sums"), record=True)
    prepared, feeds, _ = prepare(g, data.feeds(["x"]), "fp8-e4m3fn:sums")
    run_graph(prepared, feeds, emulated)
    specs = {r.site.name: r.acc.spec for r in emulated.records}
    assert specs["block0.attention.scores"] == specs["classifier"] == TC
    assert specs["block0.attention.softmax.sum"] == specs["block0.norm1.var"] == specs["pool"] == "fp32:recursive"


@pytest.mark.parametrize("spec, storage", [(TC, "fp8-e4m3fn:sums"), (f"{TC}:promote=128", "fp8-e4m3fn:sums"),
                                           (f"{TC}:out=fp16", "fp8-e4m3fn:sums"),
                                           ("tensorcore:a100:bf16", "bf16:sums"), ("bf16", "fp8-e4m3fn:sums")])
def test_no_violations_with_stored_sums(transformer, spec, storage):
    g, data = transformer
    result = validate(g, data, spec, storage=storage, labels=data.y)
    assert result.violations == 0 and result.storage == storage
    tensors = {t.name: t.global_ for t in result.tensors}
    assert tensors["block0.attention.query"].components > 0


def test_the_bound_of_a_stored_sum_covers_its_storage_rounding():
    """The first Gemm reads exact operands: its global bound is at least the distance of
    its stored output to the exact sum, which the storage rounding alone can make larger
    than the local bound."""
    graph, x = chain(), dyadic_input(12)
    result = validate(graph, {"x": x}, "fp32", storage="fp8-e4m3fn:sums")
    h = next(t.global_ for t in result.tensors if t.name == "h")
    assert result.violations == 0 and h.max_abs_error > 0
    local = next(s.local for s in result.sites if s.name == "fc")
    assert local.max_abs_error == 0  # exact in fp32: every error of h is the storage rounding


@pytest.mark.parametrize("high", [f"{TC}:promote=128", "bf16"])
def test_policy_leaves_plain_sums_once_in_fp32(transformer, high):
    """Under a tensor-core low spec the plain sums run in fp32 in both passes (bf16 high
    included): nothing is chosen or charged there but one fp32 sum, the reference too."""
    g, data = transformer
    feeds = data.feeds(["x"])
    st = "fp8-e4m3fn:sums"
    assert uniform_graph(g, feeds, TC, high, 1, storage=st).cost.relative == 1.0
    guided = recompute_graph(g, feeds, TC, high, 0.0, "kappa", storage=st)
    for choice in guided.sites:
        plain = choice.site.op in ("Softmax", "LayerNormalization", "ReduceMean")
        assert (choice.formats == (CUDA_CORE_SUMS, CUDA_CORE_SUMS)) == plain
        assert choice.formats[-1].spec == ("fp32:recursive" if plain else AccumulationPlan(high).default.spec)
        assert plain == (not choice.choice.any())
        if plain:
            assert set(choice.work) == {CUDA_CORE_SUMS}


def test_presets_store_sums_on_graphs_only():
    for name in ("h100-fp8", "h100-fp8-bf16"):
        row = PRESETS.get(name)
        assert row.storage_for(graph=True) == "fp8-e4m3fn:sums" and row.storage_for(graph=False) == "fp8-e4m3fn"
    assert PRESETS.get("paper").storage_for(graph=True) is None


def _report_args(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report_cli.add_arguments(parser)
    return parser.parse_args([*argv, "--out", "unused"])


def test_report_preset_on_a_graph():
    """``mixacc report digits-transformer --preset h100-fp8`` runs the committed report's
    configuration."""
    config = report_cli.config_from_args(_report_args("digits-transformer", "--preset", "h100-fp8"))
    assert config.storage == "fp8-e4m3fn:sums" and config.low == TC and config.high == f"{TC}:promote=128"
    assert config.accs == (TC, f"{TC}:promote=128", "bf16") and config.samples is None
    assert config == BUNDLED["h100-fp8-transformer"]
    mlp = report_cli.config_from_args(_report_args("mnist1d-tanh", "--preset", "h100-fp8", "--acc", "bf16"))
    assert mlp.storage == "fp8-e4m3fn" and mlp.accs == ("bf16",)
    plain = report_cli.config_from_args(_report_args("digits-cnn", "--storage", "bf16", "--store-sums"))
    assert plain.storage == "bf16:sums" and plain.low is None and plain.criteria == ("kappa",)


def test_cli_store_sums(tmp_path, run_cli):
    out = tmp_path / "v.json"
    code, stdout, stderr = run_cli("validate", "digits-transformer", "--samples", 2, "--acc", TC, "--storage",
                                   "fp8-e4m3fn", "--store-sums", "--json", out, timeout=300)
    assert code == 0, stderr
    assert "storage fp8-e4m3fn:sums" in stdout and "violations: 0" in stdout
    assert json.loads(out.read_text())["storage"] == "fp8-e4m3fn:sums"
    code, _, stderr = run_cli("validate", "digits-transformer", "--samples", 2, "--store-sums")
    assert code == 2 and "--store-sums needs a storage format" in stderr
    code, _, stderr = run_cli("emulate", "digits-relu", "--samples", 2, "--acc", "fp16", "--storage", "fp16",
                              "--store-sums")
    assert code == 2 and "an MLP layer applies its activation" in stderr


def test_cli_recompute_preset_on_digits_transformer(run_cli):
    code, stdout, stderr = run_cli("--quiet", "recompute", "digits-transformer", "--preset", "h100-fp8",
                                   "--samples", 2, "--tau", 1, "--lamp", timeout=300)
    assert code == 0, stderr
    assert "storage fp8-e4m3fn:sums" in stdout and f"low {TC}" in stdout
