"""The verdict: labels against thresholds (safe at fp16 and unsafe at fp8 on a model built
for it, flipping exactly at the thresholds), the cheapest policy run against a brute-force
search, the verdict and the tables below it built from the same numbers, and the verdict
lines of ``mixacc validate`` / ``recompute`` / ``report``."""

import json
import math

import numpy as np
import pytest

from analysis.cli import main
from analysis.methods import METHODS, UNIFORM_LOW
from analysis.report import ReportConfig, build_report
from analysis.report.compose import compose
from analysis.report.render import Table, format_number
from analysis.validation import validate
from analysis.verdict import (SAFE, SAFE_WITH_RECOMPUTE, UNSAFE, Thresholds, ThresholdError, flip_rate_of, format_rows,
                              report_verdict, verdict, verdict_lines)
from emulator.modelio import save_model
from emulator.network import Layer, Network

SAMPLES = 200


def margin_network() -> Network:
    """Three logits proportional to one positive row (ratios 1, 1.05, 0.9) on positive
    inputs: the exact class is always 1, with a 5 % relative margin. In fp16 (n = 8,
    u = 2^-11) the deterministic bound, about 8u relative, cannot close that margin, so no
    sample flips; in fp8-e4m3fn (u = 2^-4) it can."""
    row = np.random.default_rng(0).uniform(0.5, 1.5, (1, 8))
    return Network([Layer(np.vstack([row, 1.05 * row, 0.9 * row]), None, "identity")], "margin")


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(1).uniform(1.0, 2.0, (SAMPLES, 8))


@pytest.fixture(scope="module")
def records(inputs):
    net = margin_network()
    return {acc: validate(net, inputs, acc).to_dict() for acc in ("fp16", "fp8-e4m3fn")}


def labels(data: dict) -> dict:
    return {f["spec"]: f["label"] for f in data["formats"]}


def test_safe_at_fp16_unsafe_at_fp8(records):
    assert records["fp16"]["flip_rate"] == 0.0
    assert records["fp8-e4m3fn"]["flip_rate"] > 0.05
    data = verdict(list(records.values()), None, Thresholds())
    assert labels(data) == {"fp16:recursive": SAFE, "fp8-e4m3fn:recursive": UNSAFE}
    assert all(f["bound"] == "held" and f["policy"] is None for f in data["formats"])


def test_labels_flip_exactly_at_the_thresholds(records):
    fp8 = records["fp8-e4m3fn"]
    fp16_error = records["fp16"]["layers"][-1]["global"]["max_rel_error"]
    assert fp16_error > 0
    at = Thresholds(max_flip_rate=fp8["flip_rate"])
    below = Thresholds(max_flip_rate=math.nextafter(fp8["flip_rate"], 0))
    assert labels(verdict([fp8], None, at)) == {"fp8-e4m3fn:recursive": SAFE}
    assert labels(verdict([fp8], None, below)) == {"fp8-e4m3fn:recursive": UNSAFE}
    error_at = Thresholds(max_rel_error=fp16_error)
    error_below = Thresholds(max_rel_error=math.nextafter(fp16_error, 0))
    assert labels(verdict([records["fp16"]], None, error_at)) == {"fp16:recursive": SAFE}
    assert labels(verdict([records["fp16"]], None, error_below)) == {"fp16:recursive": UNSAFE}
    assert labels(verdict([records["fp16"]], None, Thresholds(max_flip_rate=0.0))) == {"fp16:recursive": SAFE}


def test_bound_status_names_violations_vacuous_layers_and_failure_probability(records):
    fp16 = records["fp16"]
    cases = [({"violations": 3}, "VIOLATED (3 components)"),
             ({"vacuous_layers": [0]}, "held (vacuous in 0)"),
             ({"vacuous_layers": [0, 1, 2, 3]}, "held (vacuous in 4 layers: 0, 1, 2, ...)"),
             ({"vacuous_layers": ["a", "b", "c", "d"], "sites": []}, "held (vacuous in 4 sites: a, b, c, ...)"),
             ({"bound_assumption": "independent errors", "failure_probability": 0.25},
              "held (probabilistic, fails w.p. <= 0.25)"),
             ({"bound_assumption": "independent errors", "failure_probability": 2.0},
              "held (probabilistic, fails w.p. <= 2 (guarantees nothing))")]
    for change, text in cases:
        assert format_rows([{**fp16, **change}], None)[0].bound == text


def test_an_embedding_model_flips_its_nearest_neighbour():
    """Without classes the flip rate is the share of samples whose nearest neighbour
    changes (a graph validation's metrics, a sweep run's key)."""
    record = {"flip_rate": None, "metrics": {"neighbour_flip_rate": 0.25}}
    assert flip_rate_of(record) == 0.25 and flip_rate_of({"neighbour_flip_rate": 0.0}) == 0.0
    assert flip_rate_of({"flip_rate": 0.125, "neighbour_flip_rate": 0.5}) == 0.125
    assert flip_rate_of({"flip_rate": None}) is None
    assert not Thresholds().met(None, None) and Thresholds(None, None).met(None, None)


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_bad_threshold(value):
    with pytest.raises(ThresholdError, match="must be >= 0"):
        Thresholds(max_flip_rate=value)


def test_no_policy_run_meets_them(records):
    sweep = {"low": "fp8-e4m3fn", "high": "fp16", "cost_model": "bits", "runs": [
        {"method": UNIFORM_LOW, "criterion": None, "tau": None, "flip_rate": 0.5, "max_rel_error": 1.0,
         "median_rel_error": 0.1, "recompute_fraction": 0.0, "relative_cost": 0.5},
        {"method": "guided", "criterion": "kappa", "tau": 1.0, "flip_rate": 0.2, "max_rel_error": 1.0,
         "median_rel_error": 0.1, "recompute_fraction": 0.5, "relative_cost": 0.9},
        {"method": "local-oracle", "criterion": "kappa", "tau": 1.0, "flip_rate": 0.0, "max_rel_error": 1.0,
         "median_rel_error": 0.1, "recompute_fraction": 0.5, "relative_cost": 0.7},
        {"method": "uniform-high", "criterion": None, "tau": None, "flip_rate": 0.0, "max_rel_error": 0.0,
         "median_rel_error": 0.0, "recompute_fraction": 1.0, "relative_cost": 1.0}]}
    data = verdict([records["fp8-e4m3fn"]], sweep, Thresholds())
    entry = data["formats"][0]
    assert entry["label"] == UNSAFE and entry["policy"] == {"run": None, "high": "fp16:recursive"}
    assert "no policy run (high fp16:recursive) meets them" in verdict_lines(data)[1]
    sweep["runs"][1].update(flip_rate=0.005, relative_cost=1.25)
    line = verdict_lines(verdict([records["fp8-e4m3fn"]], sweep, Thresholds()))[1]
    assert line.endswith("-> safe with recompute: guided kappa tau=1 recomputes 50.0% in fp16:recursive (relative cost "
                         "1.250, bits cost; more than uniform-high)")


@pytest.fixture(scope="module")
def report(tmp_path_factory, inputs):
    d = tmp_path_factory.mktemp("verdict")
    save_model(margin_network(), d / "m.npz")
    np.savez(d / "data.npz", x=inputs, y=np.ones(SAMPLES, dtype=np.int64))
    config = ReportConfig(model=str(d / "m.npz"), data=str(d / "data.npz"), samples=SAMPLES,
                          accs=("fp16", "fp8-e4m3fn"), low="fp8-e4m3fn", high="fp16", taus=(30.0, 3.0, 1.0, 0.3),
                          points=50, point_samples=20)
    return build_report(config)


def brute_force_cheapest(runs: list[dict], limit: float) -> dict:
    best = None
    for r in runs:
        row = METHODS.get(r["method"])
        if row.uniform or row.matched or r["flip_rate"] > limit:
            continue
        if best is None or (r["relative_cost"], r["recompute_fraction"]) < (best["relative_cost"],
                                                                            best["recompute_fraction"]):
            best = r
    return best


def test_report_verdict_names_the_cheapest_policy_run(report):
    data = report["verdict"]
    assert data == report_verdict(report)
    assert labels(data) == {"fp16:recursive": SAFE, "fp8-e4m3fn:recursive": SAFE_WITH_RECOMPUTE}
    policy = data["formats"][1]["policy"]
    best = brute_force_cheapest(report["sweep"]["runs"], 0.01)
    assert (policy["method"], policy["criterion"], policy["tau"]) == (best["method"], best["criterion"], best["tau"])
    assert policy["relative_cost"] == best["relative_cost"] and policy["recompute_fraction"] == best["recompute_fraction"]
    assert policy["flip_rate"] <= 0.01


def tables(report: dict) -> list[Table]:
    document, _ = compose(report)
    return [b for s in document.sections for b in s.blocks if isinstance(b, Table)]


def cells(table: Table) -> list[str]:
    return [format_number(v) for row in table.rows for v in row]


def verdict_and_rest(report: dict) -> tuple[Table, list[Table]]:
    found = tables(report)
    assert found[0].columns[-1] == "verdict"
    return found[0], found[1:]


def test_verdict_and_tables_change_together(report):
    """One number changed in the data changes the verdict and the table below that shows
    it: the output's largest error, the flip rate, a policy run's cost."""
    changed = json.loads(json.dumps(report))
    changed["validations"][0]["layers"][-1]["global"]["max_rel_error"] = 123456.0
    head, rest = verdict_and_rest(changed)
    assert "1.235e+05" in cells(head) and any("1.235e+05" in cells(t) for t in rest)
    assert "1.235e+05" not in cells(verdict_and_rest(report)[0])

    changed = json.loads(json.dumps(report))
    changed["validations"][0]["flip_rate"] = 0.5
    head, _ = verdict_and_rest(changed)
    assert head.rows[0][3] == 0.5 and head.rows[0][-1] == UNSAFE

    changed = json.loads(json.dumps(report))
    policy = report["verdict"]["formats"][1]["policy"]
    run = next(r for r in changed["sweep"]["runs"]
               if (r["method"], r["criterion"], r["tau"]) == (policy["method"], policy["criterion"], policy["tau"]))
    run["relative_cost"] = 98.765
    head, rest = verdict_and_rest(changed)
    key = (policy["method"], policy["criterion"], policy["tau"])
    others = [r for r in report["sweep"]["runs"] if (r["method"], r["criterion"], r["tau"]) != key
              and r["method"] == "guided" and r["flip_rate"] <= 0.01]
    chosen = report_verdict(changed)["formats"][1]["policy"]
    assert chosen["run"] in head.rows[1][-1] and any("98.77" in cells(t) for t in rest)
    assert ("98.765" in head.rows[1][-1]) == (not others)


def test_verdict_is_the_first_section(report):
    document, _ = compose(report)
    assert document.sections[0].heading == "Verdict"
    assert [b.file for b in document.sections[0].blocks if hasattr(b, "file")] == ["sweep.png"]


def test_thresholds_reach_the_report(report):
    strict = {**report, "config": {**report["config"], "max_flip_rate": 0.0}}
    relaxed = {**report, "config": {**report["config"], "max_flip_rate": 1.0}}
    assert labels(report_verdict(relaxed))["fp8-e4m3fn:recursive"] == SAFE
    assert report_verdict(strict)["thresholds"]["max_flip_rate"] == 0.0


def mixacc(*args) -> int:
    return main(["--quiet", *map(str, args)])


@pytest.fixture(scope="module")
def files(tmp_path_factory, inputs):
    d = tmp_path_factory.mktemp("cli")
    save_model(margin_network(), d / "m.npz")
    np.savez(d / "data.npz", x=inputs, y=np.ones(SAMPLES, dtype=np.int64))
    return [d / "m.npz", "--data", d / "data.npz", "--samples", 100]


def last_lines(capsys, count: int) -> list[str]:
    return capsys.readouterr().out.rstrip("\n").splitlines()[-count:]


def test_validate_prints_the_verdict_last(files, capsys):
    assert mixacc("validate", *files, "--acc", "fp16") == 0
    head, line = last_lines(capsys, 2)
    assert head == "verdict (flip rate <= 1.0%, output relative error not checked):"
    assert line.split()[0] == "fp16:recursive" and line.endswith("-> safe")
    assert mixacc("validate", *files, "--acc", "fp8-e4m3fn") == 0  # the default threshold does not set the exit
    assert last_lines(capsys, 1)[0].endswith("-> unsafe")
    assert mixacc("validate", *files, "--acc", "fp8-e4m3fn", "--max-flip-rate", 1) == 0
    assert last_lines(capsys, 1)[0].endswith("-> safe")


def test_recompute_prints_the_verdict_of_its_low_format(files, capsys):
    assert mixacc("recompute", *files, "--low", "fp8-e4m3fn", "--high", "fp16", "--tau", 1, 0.3) == 0
    head, line = last_lines(capsys, 2)
    assert head.startswith("verdict (") and line.split()[0] == "fp8-e4m3fn:recursive"
    assert "bound not checked" in line and "-> safe with recompute: " in line and "in fp16:recursive" in line
    assert mixacc("recompute", *files, "--low", "fp8-e4m3fn", "--high", "fp16", "--tau", 1, "--max-flip-rate", 0.9) == 0
    assert last_lines(capsys, 1)[0].endswith("-> safe")


def test_report_cli_records_the_thresholds(files, tmp_path, capsys):
    assert mixacc("report", *files, "--acc", "fp16", "fp8-e4m3fn", "--max-rel-error", 1e-9, "--points", 20,
                  "--point-samples", 5, "--out", tmp_path / "r") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3].startswith("verdict (flip rate <= 1.0%, largest output relative error <= 1e-09)")
    assert out[-2].endswith("-> unsafe") and out[-1].endswith("-> unsafe")
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["config"]["max_rel_error"] == 1e-9 and data["verdict"]["thresholds"]["max_rel_error"] == 1e-9
    assert mixacc("report", *files, "--max-flip-rate", -1, "--out", tmp_path / "bad") == 2
    assert "--max-flip-rate == -1.0, must be >= 0." in capsys.readouterr().err


def test_an_output_left_out_of_the_summaries_has_an_unbounded_error():
    """Output components that overflowed (uncovered) make the worst relative error inf, not
    the largest over the components that did not."""
    from analysis.verdict import verdict

    out = {"uncovered": 0, "max_rel_error": 0.0, "median_rel_error": None}
    v = {"accumulation": "fp8-e4m3fn", "violations": 0, "flip_rate": 1.0, "layers": [{"global": out}]}
    assert verdict([v], None, Thresholds())["formats"][0]["max_rel_error"] == 0.0
    v["layers"] = [{"global": {**out, "uncovered": 3}}]
    assert verdict([v], None, Thresholds())["formats"][0]["max_rel_error"] == math.inf
