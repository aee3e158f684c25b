"""``mixacc demo`` as a subprocess: it validates mnist1d-tanh in fp16, bf16 and
fp8-e4m3fn, runs the tau sweep, writes the report and prints a short summary with the
report's path (here on fewer samples than the default, to keep the suite fast)."""

import json

from analysis.report.presets import DEMO


def test_demo_writes_the_report_and_prints_its_path(run_cli, tmp_path):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli("--quiet", "demo", "--out", out, "--samples", 40, timeout=300)
    assert code == 0, stderr
    assert stderr == ""
    for name in ("report.html", "report.md", "report.json", "sweep.png", "kappa.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["name"] == "mnist1d-tanh" and report["data"]["samples"] == 40
    specs = [v["accumulation"]["format"] for v in report["validations"]]
    assert specs == ["fp16", "bf16", "fp8-e4m3fn"]
    assert report["sweep"]["low"] == DEMO.low and report["sweep"]["high"] == DEMO.high
    assert len(report["sweep"]["runs"]) == 2 + 3 * len(DEMO.taus) * len(DEMO.criteria)
    assert f"report: {out / 'report.html'}" in stdout
    for spec in ("fp16:recursive", "bf16:recursive", "fp8-e4m3fn:recursive", "tau sweep", "uniform-low"):
        assert spec in stdout


def test_demo_help_names_the_default_output(run_cli):
    code, stdout, _ = run_cli("demo", "--help")
    assert code == 0 and "reports/demo" in stdout
