"""``mixacc models`` as a subprocess: the listing, describing and evaluating models, and
exit status 2 with one line on stderr for bad models and data."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from emulator.modelio import bundled_models, save_model
from emulator.network import Layer, Network


def test_lists_bundled_models_with_test_accuracy(run_cli):
    code, out, err = run_cli("models")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["name", "architecture", "data"]
    cards = bundled_models()
    assert len(lines) == 1 + len(cards)
    for line, (name, card) in zip(lines[1:], cards.items()):
        assert line.startswith(name) and f"{card['test_accuracy']:.4f}" in line and card["architecture"] in line


def test_json_listing_is_the_cards(run_cli):
    code, out, _ = run_cli("models", "--json")
    assert code == 0 and json.loads(out) == bundled_models()


def test_describe_and_evaluate(run_cli, tmp_path):
    net = Network([Layer(np.eye(64)[:10], np.zeros(10), "identity")], "pick", {"default_data": "digits"})
    save_model(net, tmp_path / "pick.npz")
    code, out, err = run_cli("models", "digits-relu", str(tmp_path / "pick.npz"), "--evaluate", "--json")
    assert code == 0, err
    relu, pick = json.loads(out)
    card = bundled_models()["digits-relu"]
    assert relu["architecture"] == card["architecture"]
    assert relu["evaluation"]["accuracy"] == card["test_accuracy"] and relu["evaluation"]["samples"] == 360
    assert pick["widths"] == [64, 10] and pick["evaluation"]["data"] == "digits"
    code, out, err = run_cli("models", "digits-tanh", "--evaluate", "--samples", "50", "--split", "train")
    assert code == 0, err
    assert "measured accuracy" in out and "train, 50 samples" in out


def test_listing_gives_graphs_their_operators_and_sites(run_cli):
    code, out, err = run_cli("models")
    assert code == 0, err
    lines = out.strip().splitlines()
    header = re.split(r"\s{2,}", lines[0])
    assert header == ["name", "architecture", "data", "params", "sites", "train acc", "test acc"]
    rows = {cells[0]: dict(zip(header, cells)) for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}
    cards = bundled_models()
    assert rows["digits-relu"]["sites"] == "3" and rows["paper-mlp"]["sites"] == "4"
    for name in ("digits-cnn", "digits-transformer"):
        card = cards[name]
        ops = ", ".join(op if n == 1 else f"{op} x{n}" for op, n in card["operators"].items())
        assert rows[name]["architecture"] == ops and rows[name]["data"] == "digits"
        assert rows[name]["sites"] == str(card["accumulation_sites"]) and rows[name]["params"] == str(card["n_params"])
    assert rows["digits-cnn"]["architecture"].startswith("Reshape, Conv x2, Relu x2, MaxPool")


def test_describe_and_evaluate_graph_models(run_cli):
    code, out, err = run_cli("models", "digits-cnn", "digits-transformer", "--evaluate", "--json")
    assert code == 0, err
    for info in json.loads(out):
        card = bundled_models()[info["name"]]
        assert info["operators"] == card["operators"] and info["n_params"] == card["n_params"]
        assert len(info["sites"]) == info["accumulation_sites"] == card["accumulation_sites"]
        assert info["evaluation"]["accuracy"] == card["test_accuracy"] and info["evaluation"]["samples"] == 360
    code, out, err = run_cli("models", "digits-cnn", "--evaluate", "--acc", "fp16", "--samples", "60")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("digits-cnn: Reshape, Conv x2") and lines[0].endswith("(1418 parameters, 4 accumulation sites)")
    assert "  sites: conv1, conv2, pool2, classifier" in lines
    assert "measured accuracy" in out and "test, 60 samples, acc fp16" in out


@pytest.mark.parametrize("args, fragment", [
    (["models", "{tmp}/absent.npz"], "Model file '{tmp}/absent.npz' does not exist."),
    (["models", "no-such-model"], "Unknown model 'no-such-model'"),
    (["models", "{tmp}/corrupt.npz"], "corrupt or truncated npz"),
    (["models", "{tmp}/evil.pkl"], "refused: pickle files are never loaded"),
    (["models", "mnist1d-relu", "--evaluate", "--data", "digits"], "has 64 features but the model takes 40 inputs"),
    (["models", "digits-cnn", "--evaluate", "--data", "mnist1d"], "has 40 features but the model takes 64 inputs"),
    (["models", "--evaluate"], "--evaluate needs at least one MODEL"),
])
def test_bad_input_exits_2_with_one_line(run_cli, tmp_path, args, fragment):
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04" + b"\0" * 20)
    (tmp_path / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    code, out, err = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mixacc: error: ")
    assert fragment.format(tmp=tmp_path) in err
