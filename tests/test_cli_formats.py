"""``mixacc formats`` as a subprocess: exit code, stdout, stderr."""

from __future__ import annotations

import json

import pytest

from emulator.formats import FORMATS, get_format


def test_table_lists_every_format(run_cli):
    code, out, err = run_cli("formats")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["name", "p", "emin", "emax", "u", "max", "min", "normal", "min", "subnormal", "bits",
                                "inf", "nan"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert list(rows) == FORMATS.names()
    assert rows["fp16"][:3] == ["11", "-14", "15"] and rows["fp16"][4] == "65504"
    assert rows["fp8-e4m3fn"][4] == "448" and rows["fp8-e4m3fn"][-2:] == ["no", "yes"]
    assert rows["fp4-e2m1"][-2:] == ["no", "no"] and rows["tf32"][-3] == "19"


def test_json_round_trips_the_constants(run_cli):
    code, out, err = run_cli("formats", "--json", "e4m3", "e3m4")
    assert code == 0 and err == ""
    rows = json.loads(out)
    assert [r["name"] for r in rows] == FORMATS.names() + ["e4m3", "e3m4"]
    for row in rows:
        assert row == get_format(row["name"]).describe()
    assert rows[-2]["max"] == 240.0 and rows[-1]["max"] == 15.5


def test_custom_formats_are_appended_to_the_table(run_cli):
    code, out, _ = run_cli("formats", "e4m3", "e5m10", "e8m7")
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["e4m3"][:3] == ["4", "-6", "7"] and rows["e4m3"][4] == "240"
    assert rows["e5m10"] == rows["fp16"] and rows["e8m7"] == rows["bf16"]


@pytest.mark.parametrize("args, message", [
    (["fp9"], "mixacc: error: Unknown format 'fp9'. Possible values are: fp64, fp32, tf32, fp16, bf16"),
    (["e12m3"], "mixacc: error: Custom format 'e12m3': needs 2 <= X <= 11 exponent bits"),
    (["e4m0"], "mixacc: error: Custom format 'e4m0': needs"),
    (["--bogus"], "mixacc: error: unrecognized arguments: --bogus"),
])
def test_bad_input_exits_2_with_one_line(run_cli, args, message):
    code, out, err = run_cli("formats", *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
