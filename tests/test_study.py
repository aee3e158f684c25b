"""The study's pieces: the Pareto front, the chord of uniform precision, the verdicts, and a
small run of the whole study (one model, one pair, few samples) whose records are checked
against runs made directly."""

import numpy as np
import pytest

import analysis.study as study
from analysis.policy import recompute
from emulator.data import load_model_data
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


def test_small_study_matches_direct_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(study, "PAIRS", (("bf16", "fp32"),))
    monkeypatch.setattr(study, "BUDGETS", (0.0, 0.3))
    monkeypatch.setattr(study, "TARGETS", (0.01,))
    record = study.run_study(["digits-tanh"], samples=12)
    pair = record["models"]["digits-tanh"]["pairs"]["bf16/fp32"]
    assert len(pair["settings"]) == len(study.CRITERIA) * len(study.GRANULARITIES)
    net = load_model("digits-tanh")
    x = load_model_data(net, None, "test").x[:12]
    for setting in pair["settings"]:
        guided = [r for r in setting["runs"] if r["method"] == "guided"]
        assert [r["rule"] for r in guided] == ["B=0", "B=0.3", "E=0.01"]
        direct = recompute(net, x, "bf16", "fp32", None, setting["criterion"], budget=0.3,
                           granularity=setting["granularity"], tile="16x16")
        assert guided[1]["relative_cost"] == direct.cost.relative
        assert guided[1]["recompute_fraction"] == direct.fraction
        assert guided[0]["recompute_fraction"] == 0
    ranks = record["models"]["digits-tanh"]["estimate_ranking"]["bf16/fp32"]
    assert ranks["kappa-prime"]["estimate_cost"] == 0 and ranks["kappa"]["estimate_cost"] == pytest.approx(0.5)
    assert all(ranks[c]["median_overestimate"] >= 1 for c in ("kappa-holder", "kappa-blocked:16"))
    text = study.markdown(record, "python -m analysis.study", 1.0)
    assert "| digits-tanh | bf16/fp32 |" in text and "## Verdict" in text
    assert np.isfinite(ranks["kappa-holder"]["spearman"])


@pytest.mark.parametrize("args, fragment", [
    (["--models", "digits-cnn"], "'digits-cnn' is not a bundled MLP"),
    (["--samples", "0"], "--samples == 0, must be >= 1"),
])
def test_bad_options_exit_2_with_one_line(args, fragment, capsys, tmp_path):
    assert study.main([*args, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
