"""The study's pieces: the Pareto front, the chord of uniform precision, the verdicts, and
small runs of the whole study (one model, an MLP or a graph, one pair, few samples) whose
records are checked against runs made directly."""

import numpy as np
import pytest

import analysis.study as study
from analysis.policy import recompute
from emulator.data import load_model_data
from emulator.graph import Graph, forward
from emulator.graph.exact import exact_values
from emulator.modelio import load_model


def test_front_keeps_the_lowest_flip_rate_at_each_cost():
    pts = [(0.9, 0.1), (0.5, 0.3), (0.6, 0.3), (0.7, 0.2), (0.8, 0.25), (1.0, 0.0)]
    assert study._front(pts) == [(0.5, 0.3), (0.7, 0.2), (0.9, 0.1), (1.0, 0.0)]


def test_chord_and_verdict():
    low = {"relative_cost": 0.5, "flip_rate": 0.2}
    high = {"relative_cost": 1.0, "flip_rate": 0.0}
    assert study._chord(low, high, 0.75) == pytest.approx(0.1)
    assert study._chord(low, high, 1.5) == 0.0 and study._chord(low, high, 0.2) == 0.2
    runs = [{"method": "guided", "rule": "B=0.1", "relative_cost": 0.75, "flip_rate": 0.05, "median_rel_error": 1.0},
            {"method": "random", "rule": "B=0.1", "relative_cost": 0.7, "flip_rate": 0.1, "median_rel_error": 0.5},
            {"method": "guided", "rule": "B=0.2", "relative_cost": 0.95, "flip_rate": 0.0, "median_rel_error": 0.1},
            {"method": "random", "rule": "B=0.2", "relative_cost": 0.9, "flip_rate": 0.0, "median_rel_error": 0.2}]
    v = study._verdict(runs, low, high, samples=100)
    assert v["beats_uniform"] and v["best_gain"] == pytest.approx(0.05)
    assert v["cheapest_matching_high"] == 0.95
    assert (v["better_than_random"], v["worse_than_random"]) == (1, 0)
    assert (v["lower_error_than_random"], v["higher_error_than_random"]) == (1, 1)
    # one sample short of the chord is not a win
    v = study._verdict(runs, low, high, samples=10)
    assert not v["beats_uniform"]


def _small_study(monkeypatch, name: str, samples: int, pair=("bf16", "fp32")) -> dict:
    monkeypatch.setattr(study, "PAIRS", (pair,))
    monkeypatch.setattr(study, "BUDGETS", (0.0, 0.3))
    monkeypatch.setattr(study, "TARGETS", (0.01,))
    return study.run_study([name], samples=samples)


# digits-cnn on 20 samples: more than one batch of the graph engine's stream
@pytest.mark.parametrize("name, samples", [("digits-tanh", 12), ("digits-cnn", 20)])
def test_small_study_matches_direct_runs(monkeypatch, name, samples):
    record = _small_study(monkeypatch, name, samples)
    entry = record["models"][name]
    pair = entry["pairs"]["bf16/fp32"]
    assert len(pair["settings"]) == len(study.CRITERIA) * len(study.GRANULARITIES)
    net = load_model(name)
    data = load_model_data(net, None, "test").head(samples)
    x = data if isinstance(net, Graph) else data.x
    assert entry["samples"] == samples and entry["data"] == data.name
    for setting in pair["settings"]:
        guided = [r for r in setting["runs"] if r["method"] == "guided"]
        random = [r for r in setting["runs"] if r["method"] == "random"]
        assert [r["rule"] for r in guided] == [r["rule"] for r in random] == ["B=0", "B=0.3", "E=0.01"]
        direct = recompute(net, x, "bf16", "fp32", None, setting["criterion"], budget=0.3,
                           granularity=setting["granularity"], tile="16x16")
        assert guided[1]["relative_cost"] == direct.cost.relative
        assert guided[1]["recompute_fraction"] == direct.fraction
        assert guided[0]["recompute_fraction"] == 0
        # random selection recomputes the forced components (which a budget may leave in low) and at least as
        # many as the guided run, per layer or site and sample
        assert all(r["recompute_fraction"] >= g["recompute_fraction"] for r, g in zip(random, guided))
    ranks = entry["estimate_ranking"]["bf16/fp32"]
    assert ranks["kappa-prime"]["estimate_cost"] == 0 and ranks["kappa"]["estimate_cost"] == pytest.approx(0.5)
    assert all(ranks[c]["median_overestimate"] >= 1 for c in ("kappa-holder", "kappa-blocked:16"))
    text = study.markdown(record, "python -m analysis.study", 1.0)
    assert f"| {name} | bf16/fp32 |" in text and "## Verdict" in text
    assert np.isfinite(ranks["kappa-holder"]["spearman"])


def _flips(logits: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) != np.argmax(exact, axis=1)))


def test_graph_chord_and_verdicts_are_the_mlp_rules(monkeypatch):
    """A graph's uniform runs are scored against its own exact pass, and its verdicts
    follow the chord exactly as an MLP's (recomputed here from the runs)."""
    samples = 60  # uniform fp8 flips two of them, fp16 none
    record = _small_study(monkeypatch, "digits-cnn", samples, ("fp8-e4m3fn", "fp16"))
    pair = record["models"]["digits-cnn"]["pairs"]["fp8-e4m3fn/fp16"]
    graph = load_model("digits-cnn")
    data = load_model_data(graph, None, "test").head(samples)
    exact = exact_values(forward(graph, {"x": data.x}, "exact"))[graph.outputs[0]].value
    low, high = pair["uniform_low"], pair["uniform_high"]
    for spec, run in (("fp8-e4m3fn", low), ("fp16", high)):
        emulated = next(iter(forward(graph, {"x": data.x}, spec).outputs.values()))
        assert run["flip_rate"] == _flips(emulated, exact)
    assert (low["relative_cost"], high["relative_cost"]) == (0.5, 1.0) and low["flip_rate"] > high["flip_rate"]
    for setting in pair["settings"]:
        v = setting["verdict"]
        assert v == study._verdict(setting["runs"], low, high, samples)
        gains = [low["flip_rate"] + (r["relative_cost"] - 0.5) / 0.5 * (high["flip_rate"] - low["flip_rate"])
                 - r["flip_rate"] for r in setting["runs"] if r["method"] == "guided" and 0.5 <= r["relative_cost"] < 1]
        assert v["beats_uniform"] == any(g >= 1 / samples - 1e-12 for g in gains)


@pytest.mark.parametrize("args, fragment", [
    (["--models", "no-such-model"], "'no-such-model' is not a bundled model"),
    (["--samples", "0"], "--samples == 0, must be >= 1"),
])
def test_bad_options_exit_2_with_one_line(args, fragment, capsys, tmp_path):
    assert study.main([*args, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
