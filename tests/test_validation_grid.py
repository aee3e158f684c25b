"""The validation grid: its specs spell every format x order x product mode, its rows
count what the validations checked, and on a reduced grid (every format, order and product
mode on a few samples of each bundled graph model) no deterministic bound is violated.
The full grid (200 samples) is ``mixacc grid --samples 200`` (docs/method.md#the-validation-grid)."""

from __future__ import annotations

import json

import pytest

from analysis.cli import main
from analysis.validation_grid import GRID_FORMATS, GRID_ORDERS, grid_specs, run_grid
from emulator.accumulation import parse_accumulation
from emulator.formats import get_format


def test_grid_specs_spell_every_format_order_and_product_mode():
    specs = grid_specs()
    assert len(specs) == len(set(specs)) == 4 * 3 * 2
    seen = set()
    for spec in specs:
        acc = parse_accumulation(spec)
        rounded = acc.products != "exact"
        assert not rounded or acc.products == acc.fmt
        seen.add((acc.fmt.name, acc.order, acc.block, rounded))
    want = {(get_format(f).name, o.split(":")[0], int(o.split(":")[1]) if ":" in o else 0, r)
            for f in GRID_FORMATS for o in GRID_ORDERS for r in (False, True)}
    assert seen == want


@pytest.mark.slow
@pytest.mark.parametrize("model, samples", [("digits-cnn", 16), ("digits-transformer", 4)])
def test_reduced_grid_has_no_violation(model, samples):
    rows = run_grid([model], grid_specs(), samples)
    assert len(rows) == 24
    for row in rows:
        assert row.samples == samples and row.local_components > 0 and row.global_components > 0, row
        assert row.violations == 0, row
        assert row.local_tightness >= 1 and row.global_tightness >= 1, row


def test_grid_command_prints_one_row_per_spec_and_writes_json(tmp_path, capsys):
    out = tmp_path / "grid.json"
    code = main(["--quiet", "grid", "digits-cnn", "--formats", "bf16,fp8-e5m2", "--orders", "pairwise",
                 "--products", "rounded", "--samples", "3", "--json", str(out)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "accumulation", "samples"]
    assert [line.split()[1] for line in lines[1:3]] == ["bf16:pairwise:products=bf16",
                                                        "fp8-e5m2:pairwise:products=fp8-e5m2"]
    assert lines[-1] == "2 validations, 0 certain violations"
    record = json.loads(out.read_text())
    assert record["violations"] == 0 and [r["spec"] for r in record["rows"]] == [l.split()[1] for l in lines[1:3]]
    # per sample: conv1 8 x 8 x 8, conv2 16 x 2 x 2, the pooled 16 and the 10 logits
    assert all(r["local_components"] == 3 * (512 + 64 + 16 + 10) for r in record["rows"])
