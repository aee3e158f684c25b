"""``mixacc validate`` and ``mixacc emulate`` as subprocesses: exit codes, the table, the
documented JSON keys (written atomically), thresholds, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.cli import main

LAYER_KEYS = {"index", "inputs", "outputs", "activation", "local", "global"}
SUMMARY_KEYS = {"components", "violations", "max_abs_error", "max_rel_error", "median_rel_error", "median_tightness",
                "spearman_predicted_vs_measured"}


def _exit_code(argv: list[str]) -> int:
    """``main(argv)``'s status, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_validate_writes_the_table_and_json(run_cli, tmp_path):
    out = tmp_path / "v.json"
    code, stdout, stderr = run_cli("validate", "digits-relu", "--samples", "12", "--acc", "fp16:pairwise",
                                   "--json", out, timeout=300)
    assert code == 0, stderr
    assert "digits-relu" in stdout and "violations: 0" in stdout
    assert sum(line.startswith(("0 ", "1 ", "2 ")) for line in stdout.splitlines()) == 6  # 3 layers x local/global
    record = json.loads(out.read_text())
    assert {"model", "data", "samples", "accumulation", "storage", "bound", "violations", "layers", "provenance"} <= set(record)
    assert record["model"] == "digits-relu" and record["data"] == "digits" and record["samples"] == 12
    assert record["accumulation"]["order"] == "pairwise" and record["bound"] == "deterministic"
    assert record["violations"] == 0 and len(record["layers"]) == 3
    for layer in record["layers"]:
        assert LAYER_KEYS <= set(layer)
        assert SUMMARY_KEYS <= set(layer["local"]) and SUMMARY_KEYS <= set(layer["global"])
    assert [p.name for p in tmp_path.iterdir()] == ["v.json"]  # no temporary left behind


def test_validate_seeded_subset_and_probabilistic(run_cli, tmp_path):
    out = tmp_path / "p.json"
    code, stdout, stderr = run_cli("validate", "mnist1d-tanh", "--samples", "5", "--seed", "3", "--acc", "bf16",
                                   "--bound", "probabilistic:8", "--storage", "bf16", "--json", out, timeout=300)
    assert code == 0, stderr
    record = json.loads(out.read_text())
    assert record["bound"] == "probabilistic:8" and record["storage"] == "bf16" and record["samples"] == 5
    assert record["provenance"]["seed"] == 3
    assert "fails with probability <= " in stdout and "not a proof) under round-to-nearest" in stdout
    assert "warning" not in stdout
    assert "independent" in record["bound_assumption"] and 0 < record["failure_probability"] < 1


def test_probabilistic_bound_that_guarantees_nothing_says_so(run_cli, tmp_path):
    out = tmp_path / "p.json"
    code, stdout, stderr = run_cli("validate", "digits-tanh", "--samples", "3", "--acc", "fp8-e4m3fn",
                                   "--bound", "probabilistic:1", "--json", out, timeout=300)
    assert code == 0, stderr
    assert "probability <= 1;" in stdout and "warning: the failure probability is >= 1" in stdout
    record = json.loads(out.read_text())
    assert record["failure_probability"] == 1.0 and record["layers"][0]["local"]["failure_probability"] == 1.0


def test_vacuous_bounds_are_flagged_and_capped(run_cli, tmp_path):
    """fp8-e4m3fn over n = 784 inputs: c = (1 + 2^-4)^785 - 1 >> 1, valid but vacuous."""
    out = tmp_path / "v.json"
    code, stdout, stderr = run_cli("validate", "paper-mlp", "--samples", "3", "--acc", "fp8-e4m3fn", "--storage",
                                   "fp8-e4m3fn:saturate", "--json", out, timeout=300)
    assert code == 0, stderr
    assert "layer 1: the bound is vacuous" in stdout and "first-order prediction is outside its range" in stdout
    record = json.loads(out.read_text())
    assert 1 in record["vacuous_layers"] and record["violations"] == 0
    layer = record["layers"][1]
    assert layer["constant"]["vacuous"] and not layer["constant"]["first_order_in_range"]
    assert layer["local"]["vacuous"] and layer["global"]["vacuous"] and layer["local"]["capped"] > 0
    assert not record["layers"][0]["local"]["vacuous"] or record["layers"][0]["constant"]["c_product"] >= 1


def test_thresholds_exit_1_saying_which(run_cli):
    code, stdout, stderr = run_cli("validate", "digits-tanh", "--samples", "40", "--acc", "fp8-e5m2",
                                   "--max-rel-error", "0", "--max-flip-rate", "0", timeout=300)
    assert code == 1 and "violations: 0" in stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 2
    assert "exceeds --max-rel-error 0" in lines[0] and "component" in lines[0] and "sample" in lines[0]
    assert "flip rate" in lines[1] and "exceeds --max-flip-rate 0" in lines[1]


def test_thresholds_met_exit_0(capsys):
    assert main(["--quiet", "validate", "digits-relu", "--samples", "6", "--acc", "fp32", "--max-rel-error", "1e-3",
                 "--max-flip-rate", "0"]) == 0
    assert capsys.readouterr().err == ""


def test_bad_input_as_a_subprocess(run_cli):
    code, stdout, stderr = run_cli("validate", "digits-relu", "--acc", "fp9")
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [stderr.strip()] and "Unknown format 'fp9'" in stderr


@pytest.mark.parametrize("args, fragment", [
    (["validate", "digits-relu", "--bound", "sure"], "Unknown bound 'sure'"),
    (["validate", "digits-relu", "--samples", "0"], "--samples == 0, must be >= 1"),
    (["validate", "no-such-model"], "no-such-model"),
    (["validate", "digits-relu", "--data", "missing.npy"], "missing.npy"),
    (["validate", "digits-relu", "--storage", "fp7"], "fp7"),
    (["validate", "digits-relu", "--max-flip-rate", "-1"], "--max-flip-rate == -1.0, must be >= 0"),
    (["validate", "digits-relu", "--samples", "x"], "invalid int value: 'x'"),
    (["emulate", "digits-relu"], "the following arguments are required: --acc"),
    (["emulate", "digits-relu", "--acc", "fp16:blocked:0"], "B == 0"),
])
def test_bad_input_exits_2_with_one_line(capsys, args, fragment):
    assert _exit_code(["--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1, err


def test_emulate_reports_and_saves_outputs(run_cli, tmp_path):
    npz, js = tmp_path / "out.npz", tmp_path / "e.json"
    code, stdout, stderr = run_cli("emulate", "digits-tanh", "--data", "digits", "--acc", "bf16", "--samples", "30",
                                   "--storage", "bf16", "--save-outputs", npz, "--all-tensors", "--json", js, timeout=300)
    assert code == 0, stderr
    assert "accuracy" in stdout and "flip rate" in stdout and "KL divergence" in stdout
    with np.load(npz, allow_pickle=False) as f:
        assert sorted(f.files) == [f"layer{k}.{w}" for k in range(3) for w in ("out", "pre")]
        assert f["layer0.pre"].shape == (30, 128) and f["layer2.out"].dtype == np.float64
    record = json.loads(js.read_text())
    assert record["samples"] == 30 and record["storage"] == "bf16" and 0 <= record["accuracy"] <= 1
    assert {"flip_rate", "output_error", "exact_accuracy", "provenance"} <= set(record)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "out.npz"]


def test_emulate_a_graph_saves_its_outputs_by_name(run_cli, tmp_path):
    npz, js = tmp_path / "out.npz", tmp_path / "e.json"
    code, stdout, stderr = run_cli("emulate", "digits-cnn", "--acc", "fp8-e4m3fn", "--samples", "20",
                                   "--save-outputs", npz, "--json", js, timeout=300)
    assert code == 0, stderr
    assert "digits-cnn" in stdout and "flip rate" in stdout
    with np.load(npz, allow_pickle=False) as f:
        assert f.files == ["logits"] and f["logits"].shape == (20, 10)
    record = json.loads(js.read_text())
    assert record["task"] == "classification" and set(record["outputs"]) == {"logits"}
    assert {"kl_mean", "kl_max", "flip_rate"} <= set(record["metrics"])
    code, _, _ = run_cli("emulate", "digits-cnn", "--acc", "fp16", "--samples", "3", "--save-outputs", npz,
                         "--all-tensors", timeout=300)
    with np.load(npz, allow_pickle=False) as f:
        assert {"image", "conv1", "relu1", "pool1", "logits"} <= set(f.files) and f["conv1"].shape == (3, 8, 8, 8)
