"""``mixacc models`` as a subprocess: the listing, describing and evaluating models, and
exit status 2 with one line on stderr for bad models and data."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("args, fragment", [
    (["models", "{tmp}/absent.npz"], "Model file '{tmp}/absent.npz' does not exist."),
    (["models", "no-such-model"], "Unknown model 'no-such-model'"),
    (["models", "{tmp}/corrupt.npz"], "corrupt or truncated npz"),
    (["models", "{tmp}/evil.pkl"], "refused: pickle files are never loaded"),
    (["models", "mnist1d-relu", "--evaluate", "--data", "digits"], "has 64 features but the model takes 40 inputs"),
    (["models", "--evaluate"], "--evaluate needs at least one MODEL"),
])
def test_bad_input_exits_2_with_one_line(run_cli, tmp_path, args, fragment):
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04" + b"\0" * 20)
    (tmp_path / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    code, out, err = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mixacc: error: ")
    assert fragment.format(tmp=tmp_path) in err
