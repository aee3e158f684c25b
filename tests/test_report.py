"""``mixacc report``: the files it writes, their schema, the numbers against ``mixacc
validate --json`` / ``mixacc recompute --json`` for the same configuration, the drawn
points against ``validate``, self-contained HTML, Markdown links, atomic writing, and bad
input."""

import base64
import json
import re

import numpy as np
import pytest


from analysis.cli import main
from analysis.report import SCHEMA, ReportConfig, build_report, write_report
from analysis.report import write as write_module
from analysis.report.build import log_histogram, sample_points, significant
from analysis.report.components import component_errors
from analysis.report.render import format_number
from analysis.validation import rank_correlation, validate
from emulator.modelio import save_model
from emulator.network import Layer, Network

SAMPLES = 24
ACCS = ("fp16", "bf16:pairwise")
TAUS = ("30", "3")
SUMMARY_KEYS = ("components", "uncovered", "violations", "max_abs_error", "max_rel_error", "median_rel_error",
                "median_tightness", "spearman_predicted_vs_measured")
RUN_KEYS = ("method", "criterion", "tau", "accuracy", "flip_rate", "median_rel_error", "max_rel_error",
            "recompute_fraction", "layer_recompute_fraction", "relative_cost")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 12-16-16-5 tanh/relu/identity model and 30 labelled samples."""
    d = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(7)
    net = Network([Layer(rng.standard_normal((16, 12)), rng.standard_normal(16), "tanh"),
                   Layer(rng.standard_normal((16, 16)) / 4, rng.standard_normal(16), "relu"),
                   Layer(rng.standard_normal((5, 16)), None, "identity")], "small")
    save_model(net, d / "small.npz")
    np.savez(d / "data.npz", x=rng.standard_normal((30, 12)), y=rng.integers(0, 5, 30))
    return d


def common(files):
    return [files / "small.npz", "--data", files / "data.npz", "--samples", SAMPLES]


@pytest.fixture(scope="module")
def report_dir(files, tmp_path_factory):
    """``mixacc report`` run once as a subprocess: (directory, stdout)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("out") / "rep"
    args = [*common(files), "--acc", *ACCS, "--low", "fp16", "--high", "fp32", "--tau", *TAUS,
            "--criterion", "kappa", "kappa-prime", "--points", 50, "--point-samples", 10, "--out", out]
    proc = subprocess.run([sys.executable, "-m", "analysis.cli", "--quiet", "report", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet, and not a terminal anyway: no progress bars
    return out, proc.stdout


@pytest.fixture(scope="module")
def report(report_dir):
    return json.loads((report_dir[0] / "report.json").read_text())


def test_files_exist_and_summary_names_the_report(report_dir, report):
    out, stdout = report_dir
    for name in ("report.html", "report.md", "report.json"):
        assert (out / name).stat().st_size > 0
    pngs = {f["file"] for f in report["figures"]}
    expected = {"kappa.png", "sweep.png", "recompute_fraction.png", "bound_fp16_recursive.png",
                "predicted_fp16_recursive.png", "bound_bf16_pairwise.png", "predicted_bf16_pairwise.png"}
    assert pngs == expected
    assert {p.name for p in out.glob("*.png")} == expected
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"report: {out / 'report.html'}" in stdout
    assert "fp16:recursive" in stdout and "bf16:pairwise" in stdout and "guided tau=30 (kappa)" in stdout


def test_json_schema(report, files):
    assert report["schema"] == SCHEMA
    assert set(report) >= {"title", "model", "data", "config", "validations", "conditioning", "sweep", "timing",
                           "provenance", "figures"}
    assert report["model"]["name"] == "small" and report["model"]["widths"] == [12, 16, 16, 5]
    assert report["data"] == {"spec": str(files / "data.npz"), "split": "test", "samples": SAMPLES, "labelled": True}
    config = report["config"]
    assert config["accs"] == list(ACCS) and config["taus"] == [30.0, 3.0] and config["seed"] == 0
    prov = report["provenance"]
    assert prov["seed"] == 0 and prov["config"] == config
    assert prov["versions"]["numpy"] == np.__version__ and "matplotlib" in prov["versions"]
    for v in report["validations"]:
        assert len(v["layers"]) == len(v["points"]["layers"]) == 3
        for layer in v["points"]["layers"]:
            for kind in ("local", "global"):
                pts = layer[kind]
                assert len(pts["abs_error"]) == len(pts["bound"]) == len(pts["rel_error"]) == len(pts["predicted"])
                assert len(pts["abs_error"]) == pts["drawn"] <= 50
                assert pts["components"] == 10 * (5 if layer["index"] == 2 else 16)
    for layer in report["conditioning"]["layers"]:
        for key in ("kappa", "kappa_sigma"):
            hist = layer[key]
            assert len(hist["edges_log10"]) == len(hist["counts"]) + 1
            assert sum(hist["counts"]) + hist["zero"] + hist["inf"] + hist["nan"] == 10 * (5 if layer["index"] == 2 else 16)
    assert all(isinstance(t, float) for t in report["timing"].values())


def mixacc(*args) -> int:
    """``mixacc ARGS`` in this process (the same code path as the console command)."""
    return main(["--quiet", *map(str, args)])


def test_validation_numbers_match_mixacc_validate(report, files, tmp_path, capsys):
    for acc, record in zip(ACCS, report["validations"]):
        path = tmp_path / f"{acc.replace(':', '_')}.json"
        assert mixacc("validate", *common(files), "--acc", acc, "--json", path) == 0, capsys.readouterr().err
        cli = json.loads(path.read_text())
        assert cli["accumulation"] == record["accumulation"]
        for key in ("samples", "bound", "violations", "flip_rate", "accuracy"):
            assert cli[key] == record[key], key
        for mine, theirs in zip(record["layers"], cli["layers"]):
            for kind in ("local", "global"):
                for key in SUMMARY_KEYS:
                    assert mine[kind][key] == theirs[kind][key], (acc, mine["index"], kind, key)


def test_sweep_numbers_match_mixacc_recompute(report, files, tmp_path, capsys):
    path = tmp_path / "runs.json"
    code = mixacc("recompute", *common(files), "--low", "fp16", "--high", "fp32", "--tau", *TAUS,
                  "--criterion", "kappa", "kappa-prime", "--json", path)
    assert code == 0, capsys.readouterr().err
    cli = json.loads(path.read_text())
    mine = report["sweep"]
    for key in ("model", "samples", "low", "high", "criterion", "cost_model"):
        assert mine[key] == cli[key], key
    assert len(mine["runs"]) == len(cli["runs"]) == 2 + 2 * 2 * 3
    for a, b in zip(mine["runs"], cli["runs"]):
        assert {k: a[k] for k in RUN_KEYS} == {k: b[k] for k in RUN_KEYS}


@pytest.mark.parametrize("acc", ["fp16", "bf16:pairwise", "fp8-e4m3fn:blocked:4"])
def test_drawn_components_are_the_ones_validate_measures(files, acc):
    """component_errors on the first samples gives the maxima, violations and Spearman
    rank correlations that validate reports for the same samples."""
    from emulator.data import load_data
    from emulator.modelio import load_model

    net = load_model(str(files / "small.npz"))
    x = load_data(str(files / "data.npz")).x[:10]
    v = validate(net, x, acc)
    for layer, summary in zip(component_errors(net, x, acc), v.layers):
        for data, theirs in ((layer.local, summary.local), (layer.global_, summary.global_)):
            covered = data["covered"]
            abs_err, rel, pred, bound = (np.asarray(data[k])[covered] for k in ("abs_error", "rel_error", "predicted", "bound"))
            assert covered.sum() == theirs.components
            assert abs_err.max() == theirs.max_abs_error
            assert rel.max() == theirs.max_rel_error
            assert np.count_nonzero(abs_err > bound) == theirs.violations == 0
            assert rank_correlation(pred, rel)[0] == pytest.approx(theirs.spearman_predicted_vs_measured, abs=1e-12)


def test_markdown_references_only_files_that_exist(report_dir):
    out = report_dir[0]
    text = (out / "report.md").read_text()
    targets = re.findall(r"\]\(([^)]*)\)", text)
    assert len(targets) == 7
    for target in targets:
        assert "/" not in target and ":" not in target, target
        assert (out / target).is_file(), target
    assert "http" not in text


def test_html_is_self_contained(report_dir):
    out = report_dir[0]
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "@import" not in html and "<link" not in html.lower() and "<script" not in html.lower()
    assert "url(" not in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 7
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert embedded == {p.read_bytes() for p in out.glob("*.png")}


def test_report_is_rebuilt_from_its_json_alone(report_dir, report, tmp_path):
    """Every figure and table is drawn from report.json: rendering the JSON again gives
    the same Markdown, HTML and PNG bytes."""
    out = report_dir[0]
    again = write_report(report, tmp_path / "again")
    for name in ["report.md", "report.html", "report.json", *(f["file"] for f in report["figures"])]:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def _fail(*args, **kwargs):
    raise RuntimeError("disk full (simulated)")


def _small(report: dict) -> dict:
    """The report cut to one format and no sweep (two figures: quicker to render)."""
    return {**report, "validations": report["validations"][:1], "conditioning": None, "sweep": None}


def test_failed_write_leaves_no_directory(report, tmp_path, monkeypatch):
    """The failure comes after the figures were written into the temporary directory."""
    monkeypatch.setattr(write_module, "render_markdown", _fail)
    with pytest.raises(RuntimeError, match="simulated"):
        write_report(_small(report), tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_report(report, tmp_path, monkeypatch):
    old = write_report(_small(report), tmp_path / "rep")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    monkeypatch.setattr(write_module, "render_markdown", _fail)
    with pytest.raises(RuntimeError, match="simulated"):
        write_report({**_small(report), "title": "a new title"}, old)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


BAD = [
    (["--low", "fp16"], "--low and --high go together"),
    (["--low", "fp16", "--high", "fp32"], "needs at least one --tau"),
    (["--low", "fp16", "--high", "exact", "--tau", "1"], "exact"),
    (["--samples", "0"], "samples == 0, must be >= 1"),
    (["--points", "0"], "points == 0, must be >= 1"),
    (["--bound", "loose"], "Unknown bound 'loose'"),
    (["--low", "fp16", "--high", "fp32", "--tau", "-1"], "tau == -1"),
    (["--cost", "area"], "Unknown cost model 'area'"),
    (["--acc", "fp16", "fp9"], "Unknown format 'fp9'"),
    (["--storage", "fp16:clamp"], "FMT or FMT:saturate"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, extra, message):
    code = mixacc("report", files / "small.npz", "--data", files / "data.npz", *extra, "--out", tmp_path / "r")
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_unknown_model_as_a_subprocess(run_cli, tmp_path):
    code, out, err = run_cli("report", "no-such-model", "--out", tmp_path / "r")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "Unknown model 'no-such-model'" in err
    assert not (tmp_path / "r").exists()


def test_log_histogram_counts_by_hand():
    values = np.array([0.0, np.inf, np.nan, 1.0, 10.0, 10.0, 100.0, 1000.0])
    hist = log_histogram(values, bins=3)
    assert (hist["zero"], hist["inf"], hist["nan"]) == (1, 1, 1)
    assert hist["edges_log10"] == [0.0, 1.0, 2.0, 3.0]
    assert hist["counts"] == [1, 2, 2]  # [1, 10), [10, 100), [100, 1000]
    single = log_histogram(np.array([5.0, 5.0]), bins=2)  # one value: a unit-wide range around it
    assert single["edges_log10"] == pytest.approx([np.log10(5) - 0.5, np.log10(5), np.log10(5) + 0.5])
    assert single["counts"] == [0, 2]
    assert log_histogram(np.zeros(3), bins=4) == {"zero": 3, "inf": 0, "nan": 0, "edges_log10": [], "counts": []}


def test_sample_points_keeps_violations_and_drops_zero_errors():
    err = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, np.inf])
    bound = np.array([1.0, 2.0, 1.0, 4.0, 5.0, 6.0, 1.0])
    pts = sample_points({"abs_error": err, "bound": bound}, err > bound, 2, np.random.default_rng(0))
    assert (pts["components"], pts["zero_error"], pts["drawn"]) == (7, 1, 2)
    assert 2.0 in pts["abs_error"]  # the one finite violation is always drawn
    assert pts["abs_error"][pts["violations"][0]] == 2.0 and len(pts["violations"]) == 1
    everything = sample_points({"abs_error": err, "bound": bound}, err > bound, 100, np.random.default_rng(0))
    assert everything["abs_error"] == [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize("value, digits, expected", [
    (1.23456789, 4, 1.235), (-0.000123456, 3, -0.000123), (12345.0, 2, 12000.0), (float("inf"), 4, float("inf")),
])
def test_significant(value, digits, expected):
    assert significant(np.array([value]), digits) == [expected]


@pytest.mark.parametrize("value, text", [
    (None, "–"), (True, "yes"), (0.0, "0"), (0.5, "0.5"), (1234.5678, "1235"), (1e-5, "1.000e-05"),
    (123456.0, "1.235e+05"), (float("inf"), "inf"), (float("nan"), "nan"), (7, "7"), ("fp16", "fp16"),
])
def test_format_number(value, text):
    assert format_number(value) == text


def test_validation_only_and_sweep_only_reports(files, tmp_path):
    """The library entry points: each half of a report on its own."""
    common_config = dict(model=str(files / "small.npz"), data=str(files / "data.npz"), samples=6, points=20,
                         point_samples=3)
    only_validation = build_report(ReportConfig(accs=("fp16",), **common_config))
    assert only_validation["sweep"] is None and only_validation["validations"][0]["samples"] == 6
    only_sweep = build_report(ReportConfig(accs=(), low="bf16", high="fp32", taus=(1.0,), **common_config))
    assert only_sweep["validations"] == [] and only_sweep["conditioning"] is None
    files_written = {
        name: {p.name for p in write_report(data, tmp_path / name).glob("*.png")}
        for name, data in (("validation", only_validation), ("sweep", only_sweep))
    }
    assert files_written == {"validation": {"bound_fp16_recursive.png", "predicted_fp16_recursive.png", "kappa.png"},
                             "sweep": {"sweep.png", "recompute_fraction.png"}}
