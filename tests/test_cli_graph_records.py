"""The JSON records of ``mixacc validate`` and ``mixacc recompute`` on a graph: every
top-level key of the same command's record for an MLP, plus ``sites``, one object per
accumulation site with its name, operator, shape and summaries (the same site names and
shapes in both records for the same samples)."""

from __future__ import annotations

import json

from analysis.cli import main
from emulator import load_model

from test_cli_validate import SUMMARY_KEYS

SAMPLES = "20"  # more than one validation batch of 16


def _record(tmp_path, name: str, *argv) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["--quiet", *map(str, argv), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_validate_and_recompute_records_of_a_graph(tmp_path):
    graph = load_model("digits-transformer")
    mlp = _record(tmp_path, "mlp", "validate", "digits-relu", "--samples", 5, "--acc", "bf16")
    validated = _record(tmp_path, "graph", "validate", "digits-transformer", "--samples", SAMPLES, "--acc", "bf16")
    assert set(mlp) <= set(validated) and {"sites", "tensors", "task", "metrics"} <= set(validated)
    sites = {s["name"]: s for s in validated["sites"]}
    assert list(sites) == graph.site_names and validated["violations"] == 0
    for site in sites.values():
        assert {"name", "op", "shape", "inputs", "outputs", "groups", "accumulation", "local", "global"} <= set(site)
        assert SUMMARY_KEYS <= set(site["local"]) and SUMMARY_KEYS <= set(site["global"])
    scores = sites["block0.attention.scores"]
    assert scores["op"] == "MatMul" and scores["inputs"] == 8
    assert scores["local"]["components"] == 20 * 4 * 8 * 8 == scores["shape"][0] * 8 * 8

    mlp = _record(tmp_path, "mlp-runs", "recompute", "digits-relu", "--samples", 5, "--low", "bf16", "--high", "fp32",
                  "--tau", 1)
    runs = _record(tmp_path, "graph-runs", "recompute", "digits-transformer", "--samples", SAMPLES, "--low", "bf16",
                   "--high", "fp32", "--tau", 1, "--lamp")
    assert set(mlp) <= set(runs) and "sites" in set(runs)
    assert [s["name"] for s in runs["sites"]] == graph.site_names
    for site in runs["sites"]:
        assert {"name", "op", "shape", "n", "recompute_fraction"} <= set(site)
        assert (site["op"], site["shape"], site["n"]) == (sites[site["name"]]["op"], sites[site["name"]]["shape"],
                                                          sites[site["name"]]["inputs"])
