"""``mixacc recompute`` as a subprocess: exit codes, the printed table, the JSON record,
and bad input (exit 2, one line on stderr)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from analysis.cli import main
from emulator.modelio import save_model
from emulator.network import Layer, Network

RUN_KEYS = {"method", "criterion", "tau", "accuracy", "flip_rate", "median_rel_error", "max_rel_error",
            "recompute_fraction", "layer_recompute_fraction", "relative_cost"}
TOP_KEYS = {"model", "data", "samples", "low", "high", "criterion", "cost_model", "runs", "provenance"}


def mixacc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "analysis.cli", "--quiet", "recompute", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 10-6-3 tanh/identity model and 12 labelled samples (the last 4 for calibration)."""
    d = tmp_path_factory.mktemp("recompute")
    rng = np.random.default_rng(2)
    net = Network([Layer(rng.standard_normal((6, 10)), rng.standard_normal(6), "tanh"),
                   Layer(rng.standard_normal((3, 6)), None, "identity")], "tiny")
    save_model(net, d / "tiny.npz")
    np.savez(d / "data.npz", x=rng.standard_normal((12, 10)), y=rng.integers(0, 3, 12))
    return d


def test_table_and_json(files):
    out = files / "runs.json"
    r = mixacc(files / "tiny.npz", "--data", files / "data.npz", "--samples", 8, "--low", "bf16", "--high", "fp32",
               "--tau", "inf", "2", "--criterion", "kappa", "kappa-prime", "--levels", "bf16,fp16,fp32",
               "--static", 4, "--cost", "quadratic", "--json", out)
    assert r.returncode == 0, r.stderr
    for word in ("uniform-low", "uniform-high", "guided", "random", "local-oracle", "static", "multi-level", "rel cost"):
        assert word in r.stdout
    record = json.loads(out.read_text())
    assert TOP_KEYS <= set(record)
    assert (record["model"], record["samples"], record["low"], record["high"]) == ("tiny", 8, "bf16", "fp32")
    assert record["criterion"] == ["kappa", "kappa-prime"] and record["cost_model"] == "quadratic"
    runs = record["runs"]
    assert len(runs) == 2 + 2 * 2 * 5
    assert all(RUN_KEYS <= set(run) for run in runs)
    assert {run["method"] for run in runs} == {"guided", "random", "local-oracle", "uniform-low", "uniform-high", "static",
                                               "multi-level"}
    low, high = runs[0], runs[1]
    assert low["tau"] is None and high["tau"] is None and low["criterion"] is None
    assert high["relative_cost"] == 1.0 and low["relative_cost"] == 64 / 576
    assert all(len(run["layer_recompute_fraction"]) == 2 for run in runs)
    assert runs[2]["tau"] == "inf" and runs[2]["recompute_fraction"] == 0.0  # JSON keeps inf as "inf"


def test_json_is_written_atomically_only_on_success(files):
    out = files / "never.json"
    r = mixacc(files / "tiny.npz", "--data", files / "data.npz", "--low", "bf16", "--high", "fp99", "--tau", 1,
               "--json", out)
    assert r.returncode == 2 and not out.exists()
    assert not list(files.glob(".never.json*"))


BAD = [
    # (arguments after the model, stderr fragment)
    (["--low", "fp16", "--high", "fp32"], "--tau is required"),
    (["--high", "fp32", "--tau", "1"], "--low is required"),
    (["--low", "fp99", "--high", "fp32", "--tau", "1"], "Unknown format 'fp99'"),
    (["--low", "fp16", "--high", "fp32", "--tau", "-1"], "tau == -1.0, must be a number >= 0"),
    (["--low", "fp16", "--high", "fp32", "--tau", "1", "--criterion", "kappa3"], "invalid choice: 'kappa3'"),
    (["--low", "fp16", "--high", "fp32", "--tau", "1", "--levels", "fp32,fp16"], "levels must go from least to most"),
    (["--low", "fp16", "--high", "fp32", "--tau", "1", "--levels", "fp16"], "give at least two comma-separated"),
    (["--low", "fp16", "--high", "fp32", "--tau", "1", "--cost", "cubic"], "Unknown cost model 'cubic'"),
    (["--low", "fp16", "--high", "fp32", "--tau", "1", "--samples", "0"], "--samples == 0, must be >= 1"),
    (["--low", "fp16", "--high", "fp32", "--tau", "1", "--samples", "99"], "--samples == 99, but"),
    (["--low", "fp16", "--high", "fp32", "--tau", "1", "--static", "9"], "calibration must be held out"),
    (["--low", "fp16", "--high", "fp32", "--tau", "1", "--storage", "fp16:clamp"], "takes the form FMT or FMT:saturate"),
    (["--low", "exact", "--high", "fp32", "--tau", "1"], "is exact and has no cost"),
    (["--low", "fp16", "--high", "fp32", "--budget", "-0.5"], "budget == -0.5, must be a finite number >= 0"),
    (["--low", "fp16", "--high", "fp32", "--budget", "inf"], "budget == inf, must be a finite number >= 0"),
    (["--low", "fp16", "--high", "fp32", "--target-error", "-1"], "target error == -1.0, must be a number >= 0"),
    (["--low", "fp16", "--high", "fp32", "--budget", "x"], "invalid float value: 'x'"),
    (["--low", "fp16", "--high", "fp32", "--budget", "0.5", "--granularity", "tile", "--tile", "4x0"],
     "tile == '4x0', must be RxC"),
    (["--low", "fp16", "--high", "fp32", "--budget", "0.5", "--granularity", "block"], "invalid choice: 'block'"),
    (["--low", "fp16", "--high", "fp32", "--tau", "1", "--criterion", "kappa-blocked:0"],
     "invalid choice: 'kappa-blocked:0'"),
]


@pytest.mark.parametrize("args, fragment", BAD)
def test_bad_input_exits_2(files, capsys, args, fragment):
    """In process (the same ``main`` the console script runs), to keep the suite fast."""
    try:
        code = main(["recompute", str(files / "tiny.npz"), "--data", str(files / "data.npz"), *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_bad_input_exits_2_as_a_subprocess(files):
    r = mixacc(files / "tiny.npz", "--data", files / "data.npz", "--low", "fp16", "--high", "fp32", "--tau", "-1")
    assert r.returncode == 2 and r.stderr.strip() == "mixacc: error: tau == -1.0, must be a number >= 0."


def test_missing_model_exits_2(files):
    r = mixacc(files / "nothere.npz", "--low", "fp16", "--high", "fp32", "--tau", "1")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_preset_paper_prints_its_note():
    r = mixacc("--preset", "paper", "--samples", 3, "--tau", 0.5)
    assert r.returncode == 0, r.stderr
    assert "follows the analysis for the identity output layer" in r.stdout
    assert "e4m3:recursive:bias=last:saturate" in r.stdout and "model paper-mlp-mnist" in r.stdout
    assert "data mnist5k (test)" in r.stdout
    assert "kappa-prime" in r.stdout and "0.5" in r.stdout


def test_budget_target_and_granularity_in_table_and_json(files):
    out = files / "budget.json"
    r = mixacc(files / "tiny.npz", "--data", files / "data.npz", "--samples", 8, "--low", "e4m3", "--high", "fp16",
               "--budget", 0, 1, "--target-error", 0.5, "--criterion", "kappa-holder", "kappa-blocked:4",
               "--granularity", "tile", "--tile", "4x2", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "B=0,E=0.5/tile4x2" in r.stdout and "B=1,E=0.5/tile4x2" in r.stdout
    record = json.loads(out.read_text())
    assert record["budgets"] == [0.0, 1.0] and record["target_errors"] == [0.5]
    assert record["granularity"] == "tile" and record["tile"] == "4x2" and record["taus"] == []
    assert record["criterion"] == ["kappa-holder", "kappa-blocked:4"]
    guided = [run for run in record["runs"] if run["method"] == "guided"]
    assert [(g["criterion"], g["selection"]["budget"]) for g in guided] == [
        ("kappa-holder", 0.0), ("kappa-holder", 1.0), ("kappa-blocked:4", 0.0), ("kappa-blocked:4", 1.0)]
    assert all(g["selection"] == {"granularity": "tile", "budget": g["selection"]["budget"], "target_error": 0.5,
                                  "tile": "4x2"} for g in guided)
    assert [g["recompute_fraction"] == 0 for g in guided] == [True, False, True, False]
