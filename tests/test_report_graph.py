"""``mixacc report`` on a graph model (the bundled ``digits-cnn``): per-site records equal
to ``mixacc validate --json`` and ``mixacc recompute --json``, kappa quantiles per site,
the heat maps, the verdict, and the (block, role) layout of site names."""

import json

import numpy as np
import pytest

from analysis.cli import main
from analysis.report import ReportConfig, build_report, write_report
from analysis.report.graph_sites import block_role, site_conditioning
from emulator.data import load_model_data
from emulator.modelio import load_model

SAMPLES = 12
SUMMARY_KEYS = ("components", "violations", "max_abs_error", "max_rel_error", "median_rel_error", "median_tightness",
                "spearman_predicted_vs_measured")


@pytest.fixture(scope="module")
def report():
    config = ReportConfig(model="digits-cnn", samples=SAMPLES, accs=("bf16",), low="fp8-e4m3fn", high="fp32",
                          taus=(3.0,), point_samples=6)
    return build_report(config)


def test_site_records_match_mixacc_validate(report, tmp_path, capsys):
    path = tmp_path / "v.json"
    assert main(["--quiet", "validate", "digits-cnn", "--samples", str(SAMPLES), "--acc", "bf16", "--json",
                 str(path)]) == 0, capsys.readouterr().err
    cli = json.loads(path.read_text())
    mine = report["validations"][0]
    assert [s["name"] for s in mine["sites"]] == [s["name"] for s in cli["sites"]] == ["conv1", "conv2", "pool2",
                                                                                      "classifier"]
    for a, b in zip(mine["sites"], cli["sites"]):
        for kind in ("local", "global"):
            for key in SUMMARY_KEYS:
                assert a[kind][key] == b[kind][key], (a["name"], kind, key)
    assert mine["flip_rate"] == cli["flip_rate"] and mine["violations"] == cli["violations"] == 0


def test_sweep_matches_mixacc_recompute(report, tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["--quiet", "recompute", "digits-cnn", "--samples", str(SAMPLES), "--low", "fp8-e4m3fn", "--high",
                 "fp32", "--tau", "3", "--json", str(path)]) == 0, capsys.readouterr().err
    cli = json.loads(path.read_text())
    keys = ("method", "criterion", "tau", "flip_rate", "median_rel_error", "max_rel_error", "recompute_fraction",
            "site_recompute_fraction", "relative_cost")
    assert [{k: r[k] for k in keys} for r in report["sweep"]["runs"]] == [{k: r[k] for k in keys} for r in cli["runs"]]


def test_kappa_quantiles_per_site(report):
    sites = report["conditioning"]["sites"]
    assert [s["name"] for s in sites] == [s["name"] for s in report["validations"][0]["sites"]]
    for s in sites:
        q = [s["quantiles"][k] for k in ("q50", "q90", "q99", "q100")]
        assert q == sorted(q) and q[0] >= 0
        assert (s["block"], s["role"]) == ("", s["name"])


def test_kappa_of_the_classifier_by_hand():
    """The classifier is a Gemm: kappa_i = (|b_i| + sum_j |w_ij x_j|) / |y_i| at the
    operands of the pass; its largest value recomputed with numpy from the emulated pass's
    own operands (the pooled features), in float64 (the comparison allows the few ulps
    numpy's summation order may differ by)."""
    from emulator.graph import forward

    graph = load_model("digits-cnn")
    data = load_model_data(graph, None).head(4)
    got = {s["name"]: s for s in site_conditioning(graph, data, "bf16")["sites"]}["classifier"]
    feeds = data.feeds([t.name for t in graph.inputs])
    gemm = next(n for n in graph.nodes if n.name == "classifier")
    values = forward(graph, feeds, acc="bf16", keep=(gemm.inputs[0], gemm.outputs[0])).values
    x, y = values[gemm.inputs[0]], values[gemm.outputs[0]]
    w, b = graph.initializers[gemm.inputs[1]], graph.initializers[gemm.inputs[2]]
    w = w.T if gemm.attrs.get("transB") else w
    kappa = (np.abs(x) @ np.abs(w) + np.abs(b)) / np.abs(y)
    assert got["quantiles"]["q100"] == pytest.approx(kappa.max(), rel=1e-12)
    assert got["components"] == kappa.size


def test_figures_and_verdict(report, tmp_path):
    out = write_report(report, tmp_path / "rep")
    data = json.loads((out / "report.json").read_text())
    assert {f["file"] for f in data["figures"]} == {"sweep.png", "kappa.png", "recompute_fraction.png"}
    assert [f["spec"] for f in data["verdict"]["formats"]] == ["bf16:recursive", "fp8-e4m3fn:recursive"]
    assert data["verdict"]["formats"][1]["bound"] == "not checked"
    html = (out / "report.html").read_text()
    assert html.index('id="verdict"') < html.index('id="accumulation-bf16-recursive"') < html.index('id="condition-numbers"')


@pytest.mark.parametrize("name, expected", [
    ("block0.attention.query", ("block0", "attention.query")), ("block12.norm1.mean", ("block12", "norm1.mean")),
    ("encoder.layer.0.output.dense", ("encoder.layer.0", "output.dense")), ("conv1", ("", "conv1")),
    ("embeddings.LayerNorm.mean", ("", "embeddings.LayerNorm.mean")), ("a1.b2.c", ("a1", "b2.c")),
    ("layer3.fc", ("layer3", "fc")),
])
def test_block_role(name, expected):
    assert block_role(name) == expected
