"""The recompute policy at every accumulation site of a graph: the consumer rules on
hand-built graphs, the mixed pass against ``linear`` (and the Fraction oracle) at the
recorded operands, the limits tau = inf / 0, LAMP, the matched baselines, the cost of a
component, the MLP as its graph, and ``mixacc recompute`` on a graph."""

import json
import math

import numpy as np
import pytest

from analysis.baselines import local_oracle_selection, random_selection, uniform_high, uniform_low
from analysis.consumers import GraphConsumers, SiteView
from analysis.criteria import get_criterion
from analysis.graph_policy import (guided_ranked_graph, lamp_graph, local_oracle_graph, random_graph, recompute_graph,
                                   uniform_graph)
from analysis.graph_sweep import graph_sweep
from analysis.opconditioning import lamp_relaxed, lamp_strict, layer_norm_condition
from analysis.policy import PolicyError, recompute
from analysis.sweep import sweep
from emulator.accumulation import parse_accumulation
from emulator.graph import Graph, Node, TensorInfo, forward
from emulator.graph.arithmetic import Emulated, Site
from emulator.linear import linear
from emulator.modelio import load_model
from emulator.data import load_model_data
from emulator.network import Layer, Network

from oracles import accumulate_matrix

RNG = np.random.default_rng(11)


def native_values(graph: Graph, feeds: dict) -> dict:
    run = forward(graph, feeds, None, keep=True)
    return {**feeds, **run.values, **run.outputs}


def view(graph: Graph, feeds: dict, site: str, y_tensor: str, shape=None, y=None) -> SiteView:
    """The consumers of ``site`` seen from its float64 sums: ``y``, or the native value of
    ``y_tensor`` in the site's shape."""
    values = native_values(graph, feeds)
    consumers = GraphConsumers(graph)
    constants = consumers.constants({**graph.initializers}, None)
    lookup = (lambda name: values.get(name, constants.get(name)))
    if y is None:
        y = values[y_tensor].reshape(shape or (-1, values[y_tensor].shape[-1]))
    return SiteView(consumers.sites[site], graph, y, lookup, None)


def dense_graph(consumer_nodes, extra_inits=None, outputs=("out",), inputs=None):
    """x (N, 4) -> MatMul W (4 -> 6) 'site' -> the given nodes."""
    inits = {"W": RNG.standard_normal((4, 6)), **(extra_inits or {})}
    nodes = [Node("site", "MatMul", ("x", "W"), ("y",)), *consumer_nodes]
    return Graph(nodes, inputs or [TensorInfo("x", "float", (None, 4))], list(outputs), inits, "hand")


X = RNG.standard_normal((5, 4))


# --- consumer rules ----------------------------------------------------------------------


def test_activation_after_bias_add_and_reshapes():
    # ŷ -> + b (constant) -> Reshape (N, 2, 3) -> Transpose -> Tanh: kappa_tanh(v) |ŷ| / |v|
    # at v = ŷ + b, in the site's own component order.
    b = RNG.standard_normal(6)
    g = dense_graph([Node("bias", "Add", ("y", "b"), ("v",)),
                     Node("split", "Reshape", ("v", "shape"), ("v3",)),
                     Node("swap", "Transpose", ("v3",), ("vt",), {"perm": (0, 2, 1)}),
                     Node("act", "Tanh", ("vt",), ("out",))], {"b": b, "shape": np.array([-1, 2, 3])})
    v = view(g, {"x": X}, "site", "y")
    y = X @ g.initializers["W"]
    pre = y + b
    want = np.abs(pre * (1 - np.tanh(pre) ** 2) / np.tanh(pre)) * np.abs(y) / np.abs(pre)
    np.testing.assert_allclose(v.sensitivity(), want, rtol=1e-10)
    assert GraphConsumers(g).sites["site"].rules == ["activation"]


def test_scale_is_transparent_and_relu_zero():
    g = dense_graph([Node("scale", "Mul", ("c", "y"), ("s",)), Node("act", "Relu", ("s",), ("out",))],
                    {"c": np.array(-0.5)})
    v = view(g, {"x": X}, "site", "y")
    y = X @ g.initializers["W"]
    assert np.array_equal(v.sensitivity(), np.where(-0.5 * y > 0, 1.0, 0.0))


def test_softmax_after_scale_and_mask_perturbs_the_scores_only():
    # batched Q K^T (N, 2 heads, 3, 4) x (N, 2, 4, 3) -> * c -> + mask (from an input) ->
    # Softmax: kappa_i = |t_i| (1 - a_i) + sum_{j != i} a_j |t_j|, t = c ŷ, a = softmax(t + mask),
    # by its definition sum_j |da_i/ds_j| |t_j| / a_i; LAMP at s = t + mask.
    n, c = 3, 0.5
    nodes = [Node("scores", "MatMul", ("q", "k"), ("y",)), Node("scaled", "Mul", ("y", "c"), ("t",)),
             Node("keys", "Unsqueeze", ("m",), ("mk",), {"axes": (1, 2)}),
             Node("additive", "Where", ("mk", "zero", "fill"), ("mask",)),
             Node("masked", "Add", ("t", "mask"), ("s",)), Node("softmax", "Softmax", ("s",), ("out",), {"axis": -1})]
    g = Graph(nodes, [TensorInfo("q", "float", (None, 2, 3, 4)), TensorInfo("k", "float", (None, 2, 4, 3)),
                      TensorInfo("m", "int", (None, 3))], ["out"],
              {"c": np.array(c), "zero": np.array(0.0), "fill": np.array(-1e30)}, "attention")
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    feeds = {"q": RNG.standard_normal((n, 2, 3, 4)), "k": RNG.standard_normal((n, 2, 4, 3)), "m": mask}
    v = view(g, feeds, "scores", "y", (n * 2, 3, 3))
    values = native_values(g, feeds)
    t, s = values["t"], values["s"]
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    want = np.empty(t.shape)
    for idx in np.ndindex(*t.shape[:-1]):
        for i in range(3):
            want[idx + (i,)] = sum(abs((i == j) - a[idx + (j,)]) * abs(t[idx + (j,)]) for j in range(3))
    np.testing.assert_allclose(v.sensitivity(), want.reshape(n * 2, 3, 3), rtol=1e-12)
    assert np.array_equal(v.lamp("lamp-strict"), lamp_strict(s).reshape(n * 2, 3, 3))
    assert np.array_equal(v.lamp("lamp-relaxed"), lamp_relaxed(s).reshape(n * 2, 3, 3))
    assert np.all(v.lamp("lamp-strict").reshape(s.shape)[mask[:, None, None, :].repeat(2, 1).repeat(3, 2) == 0] == 0)
    consumers = GraphConsumers(g)
    assert consumers.sites["scores"].attention and consumers.sites["softmax.sum"].rules == ["internal"]


def test_residual_add_of_two_computed_tensors():
    g = dense_graph([Node("other", "Tanh", ("x6",), ("r",)), Node("residual", "Add", ("r", "y"), ("out",))],
                    inputs=[TensorInfo("x", "float", (None, 4)), TensorInfo("x6", "float", (None, 6))])
    feeds = {"x": X, "x6": RNG.standard_normal((5, 6))}
    values = native_values(g, feeds)
    v = view(g, feeds, "site", "y")
    y, r = values["y"], values["r"]
    np.testing.assert_allclose(v.sensitivity(), (np.abs(y) + np.abs(r)) / np.abs(y + r), rtol=1e-14)


def test_layer_norm_consumer():
    scale, bias = RNG.standard_normal(6), RNG.standard_normal(6)
    g = dense_graph([Node("norm", "LayerNormalization", ("y", "g", "b"), ("out",), {"axis": -1, "epsilon": 1e-5})],
                    {"g": scale, "b": bias})
    values = native_values(g, {"x": X})
    v = view(g, {"x": X}, "site", "y")
    want = layer_norm_condition(values["y"], values["out"], scale, bias, -1, 1e-5)
    assert np.array_equal(v.sensitivity(), want)


def test_several_consumers_take_the_largest_and_sliced_components_one():
    # y feeds Tanh and a Slice of its first 2 columns into Relu: the first columns take
    # max(kappa_tanh, kappa_relu); the others only tanh's. A Slice-only route leaves the
    # sliced-away columns at 1.
    g = dense_graph([Node("act", "Tanh", ("y",), ("out",)),
                     Node("cut", "Slice", ("y", "starts", "ends", "axes"), ("part",)),
                     Node("act2", "Relu", ("part",), ("out2",))],
                    {"starts": np.array([0]), "ends": np.array([2]), "axes": np.array([1])}, outputs=("out", "out2"))
    v = view(g, {"x": X}, "site", "y")
    y = X @ g.initializers["W"]
    tanh_k = np.abs(y * (1 - np.tanh(y) ** 2) / np.tanh(y))
    want = tanh_k.copy()
    want[:, :2] = np.maximum(tanh_k[:, :2], (y[:, :2] > 0).astype(float))
    np.testing.assert_allclose(v.sensitivity(), want, rtol=1e-10)
    cut = dense_graph([Node("cut", "Slice", ("y", "starts", "ends", "axes"), ("part",)),
                       Node("act2", "Relu", ("part",), ("out",))],
                      {"starts": np.array([0]), "ends": np.array([2]), "axes": np.array([1])})
    s = view(cut, {"x": X}, "site", "y").sensitivity()
    y = X @ cut.initializers["W"]
    assert np.array_equal(s[:, 2:], np.ones((5, 4))) and np.array_equal(s[:, :2], (y[:, :2] > 0).astype(float))


def test_conv_components_map_through_its_layout():
    # the conv's sums are (N * L, C_out); its output (N, C_out, H, W); Relu after it: the
    # sensitivity of sum (row, c) is relu's kappa at its own value.
    nodes = [Node("conv", "Conv", ("x", "w", "b"), ("y",), {"kernel_shape": (2, 2)}), Node("act", "Relu", ("y",), ("out",))]
    g = Graph(nodes, [TensorInfo("x", "float", (None, 2, 4, 4))], ["out"],
              {"w": RNG.standard_normal((3, 2, 2, 2)), "b": RNG.standard_normal(3)}, "conv")
    feeds = {"x": RNG.standard_normal((2, 2, 4, 4))}
    y = native_values(g, feeds)["y"]  # (2, 3, 3, 3)
    sums = y.transpose(0, 2, 3, 1).reshape(-1, 3)
    v = view(g, feeds, "conv", "y", y=sums)
    assert np.array_equal(v.sensitivity(), (sums > 0).astype(float))


def test_graph_output_and_other_consumers_are_one():
    g = dense_graph([Node("twice", "Mul", ("y", "y"), ("out",))])
    assert np.array_equal(view(g, {"x": X}, "site", "y").sensitivity(), np.ones((5, 6)))
    assert GraphConsumers(g).sites["site"].rules == ["other"]
    out = dense_graph([], outputs=("y",))
    assert GraphConsumers(out).sites["site"].rules == ["output"]


# --- the mixed pass ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformer():
    g = load_model("digits-transformer")
    return g, {"x": load_model_data(g).x[:24]}


def test_tau_inf_is_uniform_low_and_tau_zero_uniform_high(transformer):
    g, feeds = transformer
    low, high = forward(g, feeds, "bf16").outputs["logits"], forward(g, feeds, "fp32").outputs["logits"]
    for criterion in ("kappa", "kappa-prime"):
        at_inf = recompute(g, feeds, "bf16", "fp32", math.inf, criterion)
        at_zero = recompute(g, feeds, "bf16", "fp32", 0.0, criterion)
        assert at_inf.fraction == 0.0 and np.array_equal(at_inf.logits, low)
        assert at_zero.fraction == 1.0 and np.array_equal(at_zero.logits, high)
    assert np.array_equal(uniform_low(g, feeds, "bf16", "fp32").logits, low)
    assert np.array_equal(uniform_high(g, feeds, "bf16", "fp32").logits, high)


def test_forced_zero_sum_recomputed_at_tau_inf():
    # x = (1, 1): the first sum is 1 - 1 = 0 (forced), the second 1 + 1 is not.
    g = Graph([Node("site", "Gemm", ("x", "W"), ("y",), {"transB": 1}), Node("act", "Tanh", ("y",), ("out",))],
              [TensorInfo("x", "float", (None, 2))], ["out"], {"W": np.array([[1.0, -1.0], [1.0, 1.0]])}, "zero")
    run = recompute_graph(g, {"x": np.array([[1.0, 1.0], [2.0, 0.5]])}, "fp16", "fp32", math.inf)
    assert run.masks["site"].tolist() == [[True, False], [False, False]]


def test_mixed_sums_are_linear_low_and_high_at_the_recorded_operands(transformer):
    g, feeds = transformer
    run = recompute_graph(g, feeds, "bf16", "fp32", 3.0, "kappa", record=True)
    assert 0 < run.fraction < 1 and len(run.records) == len(run.sites)
    for record, choice in zip(run.records, run.sites):
        groups = [(record.x[k], record.w[k]) for k in range(record.x.shape[0])] if record.batched else \
            [(record.x, record.w)]
        low = np.stack([linear(x, w, record.bias, "bf16") for x, w in groups])
        high = np.stack([linear(x, w, record.bias, "fp32") for x, w in groups])
        want = np.where(choice.choice.reshape(low.shape) > 0, high, low)
        assert np.array_equal(record.y.reshape(want.shape), want), record.site.name


def test_mixed_sums_against_the_fraction_oracle():
    # a small MLP-like graph: every recorded sum is the oracle's fp16 or fp32 sum, as chosen.
    W1, W2 = RNG.standard_normal((5, 3)), RNG.standard_normal((2, 5))
    g = Graph([Node("l0", "Gemm", ("x", "W1", "b1"), ("y0",), {"transB": 1}), Node("a0", "Tanh", ("y0",), ("z0",)),
               Node("l1", "Gemm", ("z0", "W2"), ("out",), {"transB": 1})],
              [TensorInfo("x", "float", (None, 3))], ["out"], {"W1": W1, "b1": RNG.standard_normal(5), "W2": W2}, "tiny")
    run = recompute_graph(g, {"x": RNG.standard_normal((4, 3))}, "fp16", "fp32", 2.0, "kappa-prime", record=True)
    assert 0 < run.fraction < 1
    for record, choice in zip(run.records, run.sites):
        low, _ = accumulate_matrix(record.x, record.w, record.bias, "fp16")
        high, _ = accumulate_matrix(record.x, record.w, record.bias, "fp32")
        assert np.array_equal(record.y, np.where(choice.choice > 0, high, low))


def test_mean_divided_in_the_format_of_its_sum():
    # ReduceMean over 3 values per row: recomputed rows are divided in fp32, the others in fp16.
    g = Graph([Node("mean", "ReduceMean", ("x", "axes"), ("out",), {"keepdims": 0})],
              [TensorInfo("x", "float", (None, 3))], ["out"], {"axes": np.array([1])}, "mean")
    x = np.array([[1.0, -1.0, 1e-3], [1.0, 2.0, 3.0], [0.1, 0.2, 0.3 + 1e-4]])
    run = recompute_graph(g, {"x": x}, "fp16", "fp32", 10.0, "kappa", record=True)
    mask = run.masks["mean"][:, 0]
    assert mask.tolist() == [True, False, False]
    site, sums = Site("mean", "ReduceMean"), run.records[0].y[:, 0]
    low, high = Emulated("fp16").divide(site, sums, 3), Emulated("fp32").divide(site, sums, 3)
    assert not np.array_equal(low, high)
    assert np.array_equal(run.outputs["out"], np.where(mask, high, low))


# --- LAMP and the matched baselines -----------------------------------------------------


def test_lamp_selects_attention_scores_by_its_rule(transformer):
    g, feeds = transformer
    consumers = GraphConsumers(g)
    for form, score in (("lamp-strict", lamp_strict), ("lamp-relaxed", lamp_relaxed)):
        run = lamp_graph(g, feeds, "bf16", "fp32", 0.05, form, record=True)
        for record, choice in zip(run.records, run.sites):
            name = record.site.name
            if not consumers.sites[name].attention:
                assert choice.choice.sum() == 0, name  # nothing forced in this model and data
                continue
            # the low-precision scores at the recorded operands, scaled as the softmax sees them
            low = np.stack([linear(x, w, None, "bf16") for x, w in zip(record.x, record.w)])
            scaled = low * g.initializers["attention.scale"]
            assert np.array_equal(choice.choice > 0, score(scaled, -1) > 0.05), name


def test_matched_baselines_budget_per_site_and_sample(transformer):
    g, feeds = transformer
    guided = recompute_graph(g, feeds, "bf16", "fp32", 3.0, "kappa")
    lamp = lamp_graph(g, feeds, "bf16", "fp32", 0.05)
    runs = [(guided, random_graph(g, feeds, guided, 1)), (guided, local_oracle_graph(g, feeds, guided)),
            (lamp, random_graph(g, feeds, lamp, 2)), (lamp, guided_ranked_graph(g, feeds, lamp, "kappa-prime"))]
    for like, run in runs:
        assert (run.criterion, run.tau) == (like.criterion, like.tau)
        for a, b in zip(like.sites, run.sites):
            per_sample = (lambda c: (c > 0).reshape(24, -1).sum(axis=1))
            assert np.array_equal(per_sample(a.choice), per_sample(b.choice)), b.site.name
    again = random_graph(g, feeds, guided, 1)
    assert all(np.array_equal(a, b) for a, b in zip(again.masks.values(), runs[0][1].masks.values()))


def test_local_oracle_takes_the_largest_true_error():
    # row sums 1 - 0.75 (exact in fp16, kappa 7) and 1 + 2^-12 (rounds to 1, kappa 1):
    # guided at tau 5 takes the first, the oracle with the same budget the second.
    g = Graph([Node("site", "Gemm", ("x", "W"), ("out",), {"transB": 1})], [TensorInfo("x", "float", (None, 4))],
              ["out"], {"W": np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])}, "oracle")
    x = {"x": np.array([[1.0, 0.75, 1.0, 2.0**-12]])}
    guided = recompute_graph(g, x, "fp16", "fp32", 5.0, "kappa")
    assert guided.masks["site"].tolist() == [[True, False]]
    assert local_oracle_graph(g, x, guided).masks["site"].tolist() == [[False, True]]
    assert local_oracle_selection(g, x, guided, "absolute").masks["site"].tolist() == [[False, True]]


# --- cost --------------------------------------------------------------------------------


def test_component_cost_conv_and_attention_score():
    cnn = load_model("digits-cnn")
    x = {"x": load_model_data(cnn).x[:3]}
    run = uniform_graph(cnn, x, "bf16", "fp32", 1)
    conv2 = next(s for s in run.sites if s.site.name == "conv2")
    assert conv2.n == 8 * 3 * 3  # C_in kh kw
    k = [s.site.name for s in run.sites].index("conv2")
    assert run.cost.layers[k] == conv2.choice.size * 72 * 32
    tr = load_model("digits-transformer")
    run = uniform_graph(tr, {"x": load_model_data(tr).x[:3]}, "bf16", "fp32", 0)
    k = [s.site.name for s in run.sites].index("block0.attention.scores")
    scores = run.sites[k]
    assert scores.n == 8 and scores.shape == (3 * 4, 8, 8)  # d_head; (N heads, tokens, tokens)
    assert run.cost.layers[k] == 3 * 4 * 8 * 8 * 8 * 16
    assert run.cost.relative == 0.5


def test_guided_cost_counts_the_estimation_passes(transformer):
    g, feeds = transformer
    for criterion, passes in (("kappa", 2), ("kappa-prime", 1)):
        run = recompute_graph(g, feeds, "bf16", "fp32", 3.0, criterion)
        want = sum(s.n * (passes * s.choice.size * 16 + int(s.choice.sum()) * 32) for s in run.sites)
        assert run.cost.total == want
        assert run.cost.reference == sum(s.n * s.choice.size * 32 for s in run.sites)
    # matched to LAMP, the guided ranking pays its magnitude pass only where it ranks: at
    # the attention scores (LAMP recomputes nothing elsewhere, nothing is forced)
    lamp = lamp_graph(g, feeds, "bf16", "fp32", 0.05)
    ranked = guided_ranked_graph(g, feeds, lamp, "kappa")
    consumers = GraphConsumers.of(g)
    for s in ranked.sites:
        passes = 2 if consumers.sites[s.site.name].attention else 1
        assert s.work[parse_accumulation("bf16")] == passes * s.choice.size, s.site.name


def test_certified_estimates_charge_their_operations_and_activation_norms(transformer):
    g, feeds = transformer
    for criterion in ("kappa-holder", "kappa-blocked:4"):
        est = get_criterion(criterion).estimate
        run = recompute_graph(g, feeds, "bf16", "fp32", 3.0, criterion)
        for s, layer_cost in zip(run.sites, run.cost.layers):
            rows, m = s.choice.shape[-2], s.choice.shape[-1]
            steps = s.groups * (rows * est.steps(s.n, m) + (est.weight_steps(s.n, m) if s.groups > 1 else 0))
            assert s.steps == {"fp32": steps}
            assert layer_cost == s.n * (s.choice.size * 16 + int(s.choice.sum()) * 32) + 32 * steps
        assert any(s.groups > 1 for s in run.sites)


# --- an MLP as its graph -----------------------------------------------------------------


def test_mlp_graph_policy_equals_the_mlp_policy():
    net = Network([Layer(RNG.standard_normal((7, 5)), RNG.standard_normal(7), "tanh"),
                   Layer(RNG.standard_normal((6, 7)), None, "relu"), Layer(RNG.standard_normal((3, 6)), None, "identity")],
                  "mlp")
    x = RNG.standard_normal((9, 5))
    for storage in (None, "bf16"):
        for criterion in ("kappa", "kappa-prime", "kappa-holder", "kappa-blocked:3"):
            a = recompute(net, x, "fp16", "fp32", 4.0, criterion, storage)
            b = recompute(net.graph, {"x": x}, "fp16", "fp32", 4.0, criterion, storage)
            assert 0 < a.fraction < 1
            assert [m.tolist() for m in a.masks] == [m.tolist() for m in b.masks.values()]
            assert np.array_equal(a.outputs, b.outputs["layer2.out"])
            assert a.cost.total == b.cost.total and a.cost.reference == b.cost.reference
            ra, rb = random_selection(net, x, a, 5, storage), random_selection(net.graph, {"x": x}, b, 5, storage)
            assert [m.tolist() for m in ra.masks] == [m.tolist() for m in rb.masks.values()]
            assert np.array_equal(ra.outputs, rb.outputs["layer2.out"])


# --- sweep, CLI and errors ---------------------------------------------------------------


def test_sweep_on_a_graph(transformer):
    g, feeds = transformer
    labels = load_model_data(g).y[:24]
    result = sweep(g, feeds, "bf16", "fp32", [3.0], ["kappa"], labels=labels, lamp=["lamp-strict"])
    methods = [(r.method, r.criterion) for r in result.runs]
    assert methods == [("uniform-low", None), ("uniform-high", None), ("guided", "kappa"), ("random", "kappa"),
                       ("local-oracle", "kappa"), ("lamp", "lamp-strict"), ("random", "lamp-strict"),
                       ("local-oracle", "lamp-strict"), ("guided-ranked", "lamp-strict")]
    high = result.runs[1]
    assert high.kl_mean < 1e-9 and high.flip_rate == 0.0 and high.relative_cost == 1.0
    record = result.runs[2].describe()
    assert {"kl_mean", "kl_max", "accuracy", "flip_rate", "site_recompute_fraction"} <= set(record)
    assert set(record["site_recompute_fraction"]) == set(g.site_names)


def test_embedding_metrics_in_a_graph_sweep():
    # a two-sample "embedding" graph: cosine and neighbour metrics instead of flips
    g = Graph([Node("site", "Gemm", ("x", "W"), ("embedding",), {"transB": 1})], [TensorInfo("x", "float", (None, 4))],
              ["embedding"], {"W": RNG.standard_normal((3, 4))}, "emb")
    result = graph_sweep(g, {"x": RNG.standard_normal((6, 4))}, "e4m3", "fp32", [1.0])
    assert result.task == "embedding"
    low = result.runs[0]
    assert low.flip_rate is None and -1 <= low.cosine_min <= low.cosine_median <= 1
    assert 0 <= low.neighbour_flip_rate <= 1 and result.runs[1].cosine_min == pytest.approx(1.0, abs=1e-12)


TOP_KEYS = {"model", "architecture", "data", "samples", "low", "high", "criterion", "taus", "cost_model", "storage",
            "runs", "provenance", "sites", "task"}


def test_cli_recompute_digits_transformer(tmp_path, run_cli):
    out = tmp_path / "runs.json"
    code, stdout, stderr = run_cli("--quiet", "recompute", "digits-transformer", "--samples", 12, "--low", "bf16",
                                   "--high", "fp32", "--tau", 1, 0.1, "--json", out, timeout=300)
    assert code == 0, stderr
    for word in ("guided", "lamp", "guided-ranked", "kl mean", "rel cost"):
        assert word in stdout
    record = json.loads(out.read_text())
    assert TOP_KEYS <= set(record) and record["task"] == "classification"
    assert len(record["runs"]) == 2 + 2 * 3 + 2 * 2 * 4
    assert all({"method", "criterion", "tau", "recompute_fraction", "site_recompute_fraction", "relative_cost",
                "kl_mean", "flip_rate"} <= set(r) for r in record["runs"])
    sites = {s["name"]: s for s in record["sites"]}
    assert set(sites) == set(load_model("digits-transformer").site_names)
    scores = sites["block0.attention.scores"]
    assert scores["op"] == "MatMul" and scores["shape"] == [48, 8, 8] and scores["n"] == 8
    assert scores["consumer"]["attention"] and scores["consumer"]["rules"] == ["softmax"]


@pytest.mark.parametrize("args, fragment", [
    (["digits-transformer", "--static", "5"], "--static: the static variant is for MLPs only"),
    (["digits-transformer", "--levels", "bf16,fp16,fp32"], "--levels: the multi-level variant is for MLPs only"),
    (["digits-relu", "--lamp", "lamp-strict"], "LAMP guards the attention scores of graphs"),
])
def test_cli_graph_only_and_mlp_only_options(args, fragment, run_cli):
    code, _, stderr = run_cli("recompute", *args, "--samples", 3, "--low", "bf16", "--high", "fp32", "--tau", 1)
    assert code == 2 and fragment in stderr and len(stderr.strip().splitlines()) == 1


def test_errors(transformer):
    g, feeds = transformer
    guided = recompute_graph(g, feeds, "bf16", "fp32", 3.0)
    with pytest.raises(PolicyError, match="LAMP criterion 'lamp-loose'"):
        lamp_graph(g, feeds, "bf16", "fp32", 1.0, "lamp-loose")
    with pytest.raises(PolicyError, match="the run to match has 24 samples but the input has 12"):
        random_graph(g, {"x": feeds["x"][:12]}, guided)
    with pytest.raises(PolicyError, match="is not in the run to match"):
        random_graph(load_model("digits-cnn"), {"x": feeds["x"]}, guided)
    with pytest.raises(PolicyError, match="tau == -1.0"):
        recompute(g, feeds, "bf16", "fp32", -1.0)
    with pytest.raises(PolicyError, match="multi-level variant is for MLPs only"):
        sweep(g, feeds, "bf16", "fp32", [1.0], levels=["bf16", "fp32"])
