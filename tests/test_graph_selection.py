"""Budgets, target errors and granularities at every accumulation site of a graph
(analysis.selection through analysis.graph_policy): budget 0 and 1 against the uniform runs
bit for bit on the bundled CNN and transformer, the site budgets respected, whole output
channels and tiles of each site's (rows x outputs) matrix, the target error met for the
predicted error at every site, an MLP's graph choosing as the MLP does, and the JSON of
``mixacc recompute`` on a graph."""

import dataclasses
import json
import math

import numpy as np
import pytest

from analysis.baselines import random_selection, uniform_high, uniform_low
from analysis.graph_policy import _guided, guided_scores, mixed_graph_forward, random_graph, recompute_graph
from analysis.policy import recompute
from analysis.selection import make_rule
from emulator.data import load_model_data
from emulator.formats import get_format
from emulator.graph.engine import STREAM_BATCH
from emulator.modelio import load_model
from emulator.network import Layer, Network

GRANULARITIES = [("component", (16, 16)), ("row", (16, 16)), ("tile", (8, 4))]
SAMPLES = {"digits-cnn": 3, "digits-transformer": 8}


@pytest.fixture(scope="module", params=sorted(SAMPLES))
def model(request):
    g = load_model(request.param)
    return g, {"x": load_model_data(g).x[:SAMPLES[request.param]]}


def _matrix(choice: np.ndarray) -> np.ndarray:
    """A site's choices as its (rows x outputs) matrix."""
    return choice.reshape(-1, choice.shape[-1])


@pytest.mark.parametrize("granularity, tile", GRANULARITIES)
def test_budget_zero_is_uniform_low_and_full_budget_uniform_high(model, granularity, tile):
    g, feeds = model
    low, high = uniform_low(g, feeds, "e4m3", "fp16"), uniform_high(g, feeds, "e4m3", "fp16")
    for criterion in ("kappa", "kappa-prime"):
        none = recompute(g, feeds, "e4m3", "fp16", None, criterion, budget=0, granularity=granularity, tile=tile)
        full = recompute(g, feeds, "e4m3", "fp16", None, criterion, budget=1, granularity=granularity, tile=tile)
        assert none.fraction == 0 and full.fraction == 1
        for name in g.outputs:
            assert none.outputs[name].tobytes() == low.outputs[name].tobytes()
            assert full.outputs[name].tobytes() == high.outputs[name].tobytes()
        assert full.selection == {"granularity": granularity, "budget": 1.0, "target_error": None,
                                  **({"tile": f"{tile[0]}x{tile[1]}"} if granularity == "tile" else {})}
        assert full.tau is None and full.criterion == criterion


@pytest.mark.parametrize("granularity, tile", GRANULARITIES)
def test_site_budgets_are_respected_and_units_recomputed_whole(model, granularity, tile):
    g, feeds = model
    budget = 0.3
    run = recompute(g, feeds, "e4m3", "fp16", None, "kappa-prime", budget=budget, granularity=granularity, tile=tile)
    partial = 0
    for site in run.sites:
        mask = _matrix(site.choice) > 0
        rows, m = mask.shape
        unit = {"component": 1, "row": rows, "tile": min(tile[0], rows) * min(tile[1], m)}[granularity]
        allowance = math.floor(budget * mask.size)
        assert mask.sum() <= allowance, site.site.name
        assert allowance - mask.sum() < unit or mask.all(), site.site.name  # the next unit would not have fitted
        if granularity == "row":
            assert np.all(mask == mask[:1]), site.site.name  # an output channel for every row, or not at all
        if granularity == "tile":
            for r in range(0, rows, tile[0]):
                for c in range(0, m, tile[1]):
                    block = mask[r:r + tile[0], c:c + tile[1]]
                    assert block.all() or not block.any(), (site.site.name, r, c)
        partial += 0 < mask.mean() < 1
    assert partial > 0


def test_a_mixed_pass_decides_on_the_whole_batch():
    """More samples than the engine streams per batch: one choice per site over every
    sample, the site's budget and its output channels those of the whole batch."""
    g = load_model("digits-cnn")
    samples = STREAM_BATCH + 4
    feeds = {"x": load_model_data(g).x[:samples]}
    one = {"x": feeds["x"][:1]}
    run = recompute(g, feeds, "e4m3", "fp16", None, "kappa-prime", budget=0.3, granularity="row")
    per_sample = uniform_low(g, one, "e4m3", "fp16").sites
    assert [s.site.name for s in run.sites] == [s.site.name for s in per_sample]
    for site, single in zip(run.sites, per_sample):
        mask = _matrix(site.choice) > 0
        assert mask.shape[0] == samples * _matrix(single.choice).shape[0], site.site.name
        assert mask.sum() <= math.floor(0.3 * mask.size) and np.all(mask == mask[:1]), site.site.name
    assert 0 < run.fraction < 1
    assert random_graph(g, feeds, run).fraction >= run.fraction


@pytest.mark.parametrize("granularity, tile", GRANULARITIES)
def test_target_error_is_met_at_every_site(model, granularity, tile):
    """The guided selector watched at each site of the run: every component left in low
    has u_low s_i <= E and is not forced; per component, exactly those above E are taken."""
    g, feeds = model
    target = 0.5
    selector = _guided("kappa", make_rule(target=target, granularity=granularity, tile=tile))
    seen = []

    def watched(state):
        mask = selector.choose(state)
        seen.append((state.site.name, guided_scores(state, "kappa"), state.forced, mask))
        return mask

    run = mixed_graph_forward(g, feeds, ("e4m3", "fp16"), dataclasses.replace(selector, choose=watched))
    u = get_format("e4m3").u
    assert [name for name, *_ in seen] == [s.site.name for s in run.sites]
    for (name, score, must, mask), site in zip(seen, run.sites):
        assert np.array_equal(site.choice > 0, mask), name
        low = ~mask
        with np.errstate(invalid="ignore"):
            assert np.all(u * score[low] <= target) and not must[low].any(), name
            if granularity == "component":
                assert np.array_equal(mask, must | ~(u * score <= target)), name
    assert 0 < run.fraction < 1


def test_an_mlp_graph_chooses_as_the_mlp():
    rng = np.random.default_rng(4)
    net = Network([Layer(rng.standard_normal((12, 9)), rng.standard_normal(12), "tanh"),
                   Layer(rng.standard_normal((5, 12)), None, "identity")], "mlp")
    x = rng.standard_normal((11, 9))
    for rule in (dict(budget=0.3), dict(target_error=0.5), dict(budget=0.6, target_error=0.1)):
        for granularity, tile in GRANULARITIES[:2] + [("tile", (4, 3))]:
            a = recompute(net, x, "e4m3", "fp16", None, "kappa", granularity=granularity, tile=tile, **rule)
            b = recompute(net.graph, {"x": x}, "e4m3", "fp16", None, "kappa", granularity=granularity, tile=tile,
                          **rule)
            assert [m.tolist() for m in a.masks] == [m.tolist() for m in b.masks.values()]
            assert np.array_equal(a.outputs, b.outputs["layer1.out"]) and a.cost.total == b.cost.total
            assert a.selection == b.selection
            ra, rb = random_selection(net, x, a, 3), random_selection(net.graph, {"x": x}, b, 3)
            assert [m.tolist() for m in ra.masks] == [m.tolist() for m in rb.masks.values()]
            assert rb.selection == b.selection


def test_matched_baselines_carry_the_rule():
    g = load_model("digits-transformer")
    feeds = {"x": load_model_data(g).x[:6]}
    guided = recompute_graph(g, feeds, "e4m3", "fp16", None, budget=0.2, granularity="row")
    matched = random_graph(g, feeds, guided, 1)
    assert matched.selection == guided.selection == {"granularity": "row", "budget": 0.2, "target_error": None}
    for a, b in zip(guided.sites, matched.sites):
        per_sample = (lambda c: (c > 0).reshape(6, -1).sum(axis=1))
        assert np.array_equal(per_sample(a.choice), per_sample(b.choice)), b.site.name


def test_cli_recompute_budgets_on_a_graph(tmp_path, run_cli):
    out = tmp_path / "budget.json"
    code, stdout, stderr = run_cli("--quiet", "recompute", "digits-transformer", "--samples", 6, "--low", "e4m3",
                                   "--high", "fp16", "--tau", 1, "--budget", 0, 1, "--granularity", "tile", "--tile", "8x4",
                                   "--json", out, timeout=300)
    assert code == 0, stderr
    assert "B=0/tile8x4" in stdout and "B=1/tile8x4" in stdout and "1/tile8x4" in stdout
    record = json.loads(out.read_text())
    assert {"model", "architecture", "data", "samples", "low", "high", "criterion", "taus", "cost_model", "storage",
            "runs", "provenance", "sites", "task", "lamp", "lamp_taus"} <= set(record)
    assert record["budgets"] == [0.0, 1.0] and record["target_errors"] is None
    assert record["granularity"] == "tile" and record["tile"] == "8x4" and record["taus"] == [1.0]
    guided = [r for r in record["runs"] if r["method"] == "guided"]
    assert [(r["tau"], r["selection"]["budget"]) for r in guided] == [(1.0, None), (None, 0.0), (None, 1.0)]
    assert all(r["selection"]["granularity"] == "tile" and r["selection"]["tile"] == "8x4" for r in guided)
    low, high = record["runs"][0], record["runs"][1]
    assert guided[1]["kl_mean"] == low["kl_mean"] and guided[1]["max_rel_error"] == low["max_rel_error"]
    assert guided[2]["kl_mean"] == high["kl_mean"] and guided[2]["recompute_fraction"] == 1.0
    lamp = [r for r in record["runs"] if r["method"] == "lamp"]
    assert lamp and all("selection" not in r for r in lamp)
    keys = set(record["sites"][0]["recompute_fraction"])
    assert {"guided:kappa:1/tile8x4", "guided:kappa:B=0/tile8x4", "guided:kappa:B=1/tile8x4",
            "random:kappa:B=1/tile8x4", "lamp:lamp-strict:1"} <= keys
    assert all(s["recompute_fraction"]["guided:kappa:B=1/tile8x4"] == 1.0 for s in record["sites"])
    assert all(s["recompute_fraction"]["guided:kappa:B=0/tile8x4"] == 0.0 for s in record["sites"])
