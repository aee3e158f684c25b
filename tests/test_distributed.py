"""Scale-out: ``--workers N`` / ``--scheduler`` give the same JSON as the in-process run
(apart from the provenance, which records the cluster and the time), a worker killed
mid-run costs nothing or fails the command with one line and no JSON, the flags without
Dask exit 2 naming the extra, and ``mixacc sweep`` runs, keeps and checks its studies."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from analysis import distributed as dist
from analysis.cli import main


def _status(argv: list[str]) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def _record(path) -> dict:
    record = json.loads(path.read_text())
    record.pop("provenance", None)
    return record


def _same_json_on_every_executor(tmp_path, argv: list) -> dict:
    tmp_path.mkdir(exist_ok=True)
    records = []
    for extra in ([], ["--workers", "1"], ["--workers", "2"]):
        out = tmp_path / f"{len(records)}.json"
        assert _status([*argv, "--json", out, *extra]) == 0
        records.append(_record(out))
    assert records[0] == records[1] == records[2]
    return records[0]


def test_flags_without_dask_exit_2_naming_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    out = tmp_path / "v.json"
    assert _status(["validate", "digits-relu", "--samples", "5", "--workers", "2", "--json", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'mixacc[dask]'" in err
    assert not out.exists()


def test_workers_must_be_positive_and_exclusive_with_scheduler(capsys):
    assert _status(["validate", "digits-relu", "--samples", "5", "--workers", "0"]) == 2
    assert "--workers == 0" in capsys.readouterr().err
    assert _status(["validate", "digits-relu", "--workers", "1", "--scheduler", "tcp://127.0.0.1:1"]) == 2


def test_validate_same_json_in_process_and_on_one_or_two_workers(tmp_path):
    pytest.importorskip("distributed")
    record = _same_json_on_every_executor(tmp_path, ["validate", "digits-cnn", "--samples", "40", "--acc",
                                                     "bf16:rounding=stochastic", "--seed", "3"])
    assert record["samples"] == 40  # 3 batches of the graph path


def test_recompute_and_exact_emulation_same_json_on_every_executor(tmp_path):
    pytest.importorskip("distributed")
    _same_json_on_every_executor(tmp_path / "r", ["recompute", "digits-relu", "--samples", "60", "--low", "fp16",
                                                  "--high", "fp32", "--tau", "0.01", "1", "--criterion", "kappa",
                                                  "kappa-prime"])
    record = _same_json_on_every_executor(tmp_path / "e", ["emulate", "digits-relu", "--samples", "300", "--acc",
                                                           "exact"])
    assert record["output_error"]["max_abs"] == 0.0


def test_certify_same_json_on_every_executor(tmp_path):
    pytest.importorskip("distributed")
    _same_json_on_every_executor(tmp_path / "m", ["certify", "digits-relu", "--samples", "300", "--acc", "fp16:pairwise",
                                                  "--until-certified", "--high", "fp32"])
    record = _same_json_on_every_executor(tmp_path / "g", ["certify", "digits-cnn", "--samples", "40", "--acc",
                                                           "fp16:pairwise", "--until-certified", "--high", "fp32"])
    assert len(record["samples"]) == 40


def test_scheduler_runs_on_an_existing_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    argv = ["validate", "digits-relu", "--samples", "300", "--acc", "bf16:rounding=stochastic", "--seed", "1"]
    assert _status([*argv, "--json", tmp_path / "local.json"]) == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        assert _status([*argv, "--scheduler", address, "--json", tmp_path / "remote.json"]) == 0
    remote = json.loads((tmp_path / "remote.json").read_text())
    assert remote["provenance"]["cluster"] == {"scheduler": address}
    assert _record(tmp_path / "remote.json") == _record(tmp_path / "local.json")


def _killing_bar(killed: dict, when: int = 1):
    """A progress bar that kills a worker busy with tasks when ``when`` tasks are done."""

    class Bar:
        done = 0

        def update(self, n: int = 1) -> None:
            self.done += n
            if self.done != when or killed:
                return
            client = dist.current_executor().client
            busy = {w: keys for w, keys in client.processing().items() if keys}
            victim = sorted(busy)[0]
            pid = client.run(os.getpid, workers=[victim])[victim]
            killed.update(pid=pid, tasks=len(busy[victim]))
            os.kill(pid, signal.SIGKILL)

        def close(self) -> None:
            pass

    return lambda total, desc="": Bar()


KILL_RUN = ["validate", "digits-cnn", "--samples", "96", "--acc", "fp16", "--quiet"]


def test_a_killed_worker_is_replaced_and_the_result_is_identical(monkeypatch, tmp_path):
    pytest.importorskip("distributed")
    assert _status([*KILL_RUN, "--json", tmp_path / "local.json"]) == 0
    killed: dict = {}
    monkeypatch.setattr(dist, "progress_bar", _killing_bar(killed))
    assert _status([*KILL_RUN, "--workers", "2", "--json", tmp_path / "cluster.json"]) == 0
    assert killed["tasks"] >= 1  # a worker died holding tasks, which ran again elsewhere
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert _record(tmp_path / "cluster.json") == _record(tmp_path / "local.json")


def test_tasks_lost_for_good_fail_with_one_line_and_no_json(monkeypatch, capsys, tmp_path):
    pytest.importorskip("distributed")
    import dask

    killed: dict = {}
    monkeypatch.setattr(dist, "progress_bar", _killing_bar(killed))
    out = tmp_path / "cluster.json"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        assert _status([*KILL_RUN, "--workers", "2", "--json", out]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mixacc: error")]
    assert len(err) == 1 and "lost" in err[0] and "no result was written" in err[0]
    assert killed["tasks"] >= 1 and not out.exists()


STUDY = """
analysis = ["validate", "recompute"]
models = ["digits-relu"]
samples = 30
storage = ["none", "bf16"]
acc = ["fp16", "bf16:rounding=stochastic"]
low = ["fp16"]
high = ["fp32"]
taus = [0.01, 1.0]
"""


def _study_files(directory) -> dict:
    return {p.name: _record(p) for p in sorted(directory.glob("*.json"))}


def test_sweep_writes_one_json_per_configuration_and_keeps_them(tmp_path, capsys):
    config = tmp_path / "study.toml"
    config.write_text(STUDY)
    assert _status(["sweep", config, "--out", tmp_path / "a"]) == 0
    files = _study_files(tmp_path / "a")
    assert len(files) == 7 and "summary.json" in files  # 2 x 2 validate + 2 recompute, and the summary
    rows = files["summary.json"]["configurations"]
    assert [r["analysis"] for r in rows] == ["validate"] * 4 + ["recompute"] * 2
    for row in rows:
        record = files[f"{row['configuration']}.json"]
        assert record["configuration_hash"] and record["configuration"]["model"] == "digits-relu"
    assert (tmp_path / "a" / "summary.md").read_text().startswith("| configuration |")
    capsys.readouterr()
    assert _status(["sweep", config, "--out", tmp_path / "a"]) == 0
    assert "0 run, 6 kept" in capsys.readouterr().out
    config.write_text(STUDY.replace("taus = [0.01, 1.0]", "taus = [0.01, 0.5]"))
    assert _status(["sweep", config, "--out", tmp_path / "a"]) == 0
    assert "2 run, 4 kept" in capsys.readouterr().out


def test_sweep_same_files_on_two_workers(tmp_path):
    pytest.importorskip("distributed")
    config = tmp_path / "study.toml"
    config.write_text(STUDY)
    assert _status(["sweep", config, "--out", tmp_path / "a"]) == 0
    assert _status(["sweep", config, "--out", tmp_path / "b", "--workers", "2"]) == 0
    assert _study_files(tmp_path / "a") == _study_files(tmp_path / "b")


@pytest.mark.parametrize("text, message", [
    ("models = ['digits-relu']\nacc = ['fp16']\nanalysis = 'validate'\nbogus = 1", "unknown key 'bogus'"),
    ("models = ['digits-relu']\nacc = ['fp16']\nanalysis = 'nonsense'", "analysis 'nonsense'"),
    ("models = ['digits-relu']\nacc = []\nanalysis = 'validate'", "'acc' is an empty list"),
    ("models = ['digits-relu']\nanalysis = 'validate'", "'acc' is required"),
    ("models = ['digits-relu']\nacc = ['fp17']\nanalysis = 'validate'", "fp17"),
    ("models = ['digits-relu']\nacc = ['fp16']\nanalysis = 'validate'\nsamples = 0", "samples == 0"),
    ("models = [1]\nacc = ['fp16']\nanalysis = 'validate'", "must be strings"),
    ("models = ['digits-relu'", "not valid TOML"),
    ("models = ['digits-relu']\nlow = ['fp16']\nhigh = ['fp32']\nanalysis = 'recompute'", "'taus' is required"),
])
def test_sweep_config_errors_are_one_line_exit_2(tmp_path, capsys, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert _status(["sweep", config, "--out", tmp_path / "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_study_same_json_on_two_workers(tmp_path):
    pytest.importorskip("distributed")
    from analysis import study

    records = []
    for extra in ([], ["--workers", "2"]):
        out = tmp_path / str(len(records))
        assert study.main(["--models", "digits-tanh", "digits-cnn", "--samples", "8", "--quiet", "--out", str(out),
                           *extra]) == 0
        record = json.loads((out / "study.json").read_text())
        for key in ("provenance", "command", "seconds"):
            record.pop(key)
        records.append(record)
    assert records[0] == records[1]
    assert all(len(records[0]["models"][name]["pairs"]) == len(study.PAIRS) for name in ("digits-tanh", "digits-cnn"))
