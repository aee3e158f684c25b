"""Certified predictions (docs/method.md#certified-predictions): the certificate rule
against a rational oracle, certificates that are tight enough to matter and that a
weakened bound breaks, the grid over every bundled model and format with stochastic
rounding (no certified sample flips), the recompute policy and its cost on MLPs and
graphs, the command."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from analysis import certify
from analysis.certificates import certificates
from emulator import load_data, load_model
from emulator.activations import get_activation
from emulator.metrics import flipped, predicted_class
from emulator.modelio import bundled_models
from emulator.network import Layer, Network

from oracles import fraction

FORMATS = ("fp16", "bf16", "fp8-e4m3fn", "fp8-e5m2")
SEEDS = range(5)


def _oracle(z: np.ndarray, r: np.ndarray) -> bool:
    """Certified by the definition, in rationals: finite, and ẑ_top - Δ_top > ẑ_j + Δ_j for
    every j != top (one logit: |ẑ| > Δ), top the first largest."""
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(r))):
        return False
    zf, rf = [fraction(v) for v in z], [fraction(v) for v in r]
    if len(zf) == 1:
        return abs(zf[0]) > rf[0]
    top = max(range(len(zf)), key=lambda j: (zf[j], -j))
    return all(zf[top] - rf[top] > zf[j] + rf[j] for j in range(len(zf)) if j != top)


def _near_ties(rng, rows: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits with gaps that the float64 subtraction rounds, radii around the gaps, exact
    ties, neighbours one ulp apart, zeros, infinite radii and NaN logits."""
    z = rng.standard_normal((rows, m)) * 10.0 ** rng.integers(-3, 4, (rows, 1))
    gap = np.abs(z[:, :1] - (z[:, 1:2] if m > 1 else 0.0))
    scale = rng.choice([0.25, 0.5, 0.4999999999999999, 0.5000000000000001, 1.0], (rows, 1))
    r = np.abs(rng.standard_normal((rows, m))) * gap * scale
    if m == 1:
        r[::5] = gap[::5]                                    # |ẑ| == Δ: not certified
        z[1::11] = 0.0
    else:
        z[::7, 1] = z[::7, 0]                                # exact ties
        z[1::11, 1] = np.nextafter(z[1::11, 0], np.inf)      # one ulp apart
        z[3::17, 2 % m] = np.nan
    r[2::13, 0] = np.inf
    return z, r


@pytest.mark.parametrize("m", [1, 2, 10])
def test_certificates_match_the_rational_definition(m):
    rng = np.random.default_rng(m)
    z, r = _near_ties(rng, 600, m)
    cert = certificates(z, r)
    want = np.array([_oracle(z[s], r[s]) for s in range(len(z))])
    np.testing.assert_array_equal(cert.certified, want)
    assert 0 < want.sum() < len(want)
    np.testing.assert_array_equal(cert.certified, cert.margin > cert.bound)
    np.testing.assert_array_equal(cert.predicted, predicted_class(z))
    for s in np.flatnonzero(cert.certified & (m > 1)):
        top, j = cert.predicted[s], cert.competitor[s]
        assert j != top and fraction(cert.margin[s]) <= fraction(z[s, top]) - fraction(z[s, j])
        assert fraction(cert.bound[s]) >= fraction(r[s, top]) + fraction(r[s, j])


def _boundary_network(rng) -> tuple[Network, np.ndarray]:
    """One identity layer of two inputs whose two logits are close on many samples: fp8
    flips some of them and certifies most others."""
    base = rng.standard_normal(2)
    w = np.stack([base, base + 0.5 * rng.standard_normal(2)])
    x = rng.uniform(-1, 1, (3000, 2))
    return Network([Layer(w, np.zeros(2), get_activation("identity"))], "boundary"), x


def test_certificates_are_tight_enough_to_matter_and_a_weaker_bound_breaks_them():
    """Near the decision boundary fp8 flips some samples and certifies others; none
    certified flips, while a sixteenth of the bound (not a bound) certifies flipped ones."""
    net, x = _boundary_network(np.random.default_rng(0))
    spec = "fp8-e4m3fn:rounding=stochastic:seed=1"
    result = certify(net, x, spec, batch_size=len(x))
    assert result.certified_flips == 0
    assert result.certified.sum() >= 1000 and result.flipped.sum() >= 10
    logits = net.forward(x, acc=spec, return_all=True).preactivations[-1]
    c = result.certificates
    np.testing.assert_array_equal(predicted_class(logits), c.predicted)
    weak = certificates(logits, np.broadcast_to((c.bound / 32)[:, None], (len(x), 2)))
    assert np.count_nonzero(weak.certified & flipped(weak.predicted, result.exact_class)) > 0


def _grid_data(name: str):
    net = load_model(name)
    samples = 8 if not isinstance(net, Network) else 32
    return net, load_data(net.meta["default_data"]).head(samples)


CERTIFYING = "fp16:pairwise"
"""A low format whose bounds are small enough to certify most samples of several models."""


@pytest.mark.slow
def test_no_certified_sample_flips_on_any_bundled_model_format_and_seed():
    """Every bundled model (the first 32 test samples of an MLP, 8 of a graph) x fp16,
    bf16, fp8-e4m3fn, fp8-e5m2 in recursive order, and fp16 in pairwise order, x 5 seeds
    of stochastic rounding: no certified sample flips. In recursive order the global
    bounds exceed the logits' margins and certify nothing; pairwise order certifies, and
    fp8 flips samples, so both sides of the check are exercised."""
    checked = 0
    certified: dict = {}
    flips: dict = {}
    for name in bundled_models():
        net, data = _grid_data(name)
        for fmt in (*FORMATS, CERTIFYING):
            for seed in SEEDS:
                result = certify(net, data, f"{fmt}:rounding=stochastic:seed={seed}", labels=data.y)
                assert result.certified_flips == 0, (name, fmt, seed)
                assert result.samples == len(data)
                checked += result.samples
                certified[fmt] = certified.get(fmt, 0) + int(result.certified.sum())
                flips[fmt] = flips.get(fmt, 0) + int(result.flipped.sum())
    assert checked == sum(len(_grid_data(n)[1]) for n in bundled_models()) * (len(FORMATS) + 1) * len(SEEDS)
    assert certified[CERTIFYING] >= checked // 50
    assert flips["fp8-e4m3fn"] + flips["fp8-e5m2"] > 0


def _cost_oracle(net: Network, n_samples: int, high_counts, low_bits: int, high_bits: int) -> Fraction:
    """(low pass of every sample + high inner products) / uniform high, bits model."""
    low = sum(n_samples * l.n_outputs * l.n_inputs * low_bits for l in net.layers)
    high = sum(c * l.n_outputs * l.n_inputs * high_bits for c, l in zip(high_counts, net.layers))
    return Fraction(low + high, sum(n_samples * l.n_outputs * l.n_inputs * high_bits for l in net.layers))


def test_until_certified_recomputes_whole_samples_when_the_early_error_dominates():
    net = load_model("digits-relu")
    data = load_data("digits").head(40)
    result = certify(net, data, "fp16", labels=data.y, until_certified=True)
    p = result.policy
    assert result.certified.sum() == 0 and p.certified_fraction == 1.0
    assert [(s.start, s.samples) for s in p.stages] == [(0, 40)]
    assert np.all(p.recomputed_from == 0) and p.certified_flips == 0 and p.flipped.sum() == 0
    assert p.accuracy == result.exact_accuracy
    assert Fraction(p.cost.relative).limit_denominator(1000) == _cost_oracle(net, 40, [40, 40, 40], 16, 32)


def _wide_last_layer() -> tuple[Network, np.ndarray]:
    """Layer 0 sums four products of small integers (its bound is small); layer 1 sums
    2000 terms, whose bf16 bound is vacuous, into two logits of opposite sign:
    recomputing the last layer alone certifies, for less than uniform high."""
    rng = np.random.default_rng(3)
    w0 = rng.integers(1, 4, (2000, 4)).astype(np.float64)
    w1 = np.stack([np.full(2000, 1.0), np.full(2000, -1.0)])
    layers = [Layer(w0, None, get_activation("relu")), Layer(w1, None, get_activation("identity"))]
    return Network(layers, "wide"), rng.integers(1, 4, (12, 4)).astype(np.float64)


def test_until_certified_recomputes_only_the_last_layer_when_that_suffices():
    net, x = _wide_last_layer()
    result = certify(net, x, "bf16", until_certified=True, high="fp32")
    p = result.policy
    assert result.certified.sum() == 0 and p.certified_fraction == 1.0
    assert [(s.start, s.samples, s.certified) for s in p.stages] == [(1, 12, 12)]
    assert np.all(p.recomputed_from == 1)
    assert Fraction(p.cost.relative).limit_denominator(10**6) == _cost_oracle(net, 12, [0, 12], 16, 32)
    assert p.cost.relative < 1


def test_until_certified_on_a_graph_recomputes_the_uncertified_samples_whole():
    """digits-cnn: fp16 in pairwise order certifies most samples; the rest, recomputed in
    fp64, are certified. Bits model: every sample's sums at 16 bits, the recomputed ones'
    again at 64, against all at 64 — the sites' lengths cancel."""
    graph = load_model("digits-cnn")
    data = load_data("digits").head(20)
    result = certify(graph, data, "fp16:pairwise", labels=data.y, until_certified=True, high="fp64")
    p = result.policy
    again = np.flatnonzero(~result.certified)
    assert 0 < again.size < 20 and p.certified_fraction == 1.0 and p.certified_flips == 0
    assert [(s.start, s.samples, s.certified) for s in p.stages] == [(0, again.size, again.size)]
    np.testing.assert_array_equal(p.recomputed_from, np.where(result.certified, -1, 0))
    assert Fraction(p.cost.relative).limit_denominator(1000) == Fraction(16 * 20 + 64 * again.size, 64 * 20)
    high = certify(graph, data.x[again], "fp64")
    np.testing.assert_array_equal(p.final.margin[again], high.certificates.margin)
    np.testing.assert_array_equal(p.final.bound[again], high.certificates.bound)


def test_certify_refusals():
    x = load_data("digits").x[:2]
    with pytest.raises(Exception, match="deterministic"):
        certify(load_model("digits-relu"), x, "fp16", bound="probabilistic:4")


def test_cli_certify_writes_every_sample(run_cli, tmp_path):
    out = tmp_path / "c.json"
    code, stdout, stderr = run_cli("certify", "digits-relu", "--acc", "fp16", "--samples", "20", "--until-certified",
                                   "--json", out)
    assert code == 0, stderr
    assert "certified 0.0000 (0 of 20)" in stdout and "cost 1.500 of uniform fp32" in stdout
    record = json.loads(out.read_text())
    assert {"certified_fraction", "accuracy", "flip_rate", "samples", "policy"} <= set(record)
    assert len(record["samples"]) == 20
    for sample in record["samples"]:
        assert isinstance(sample["certified"], bool) and isinstance(sample["flipped"], bool)
        assert sample["certified"] == (sample["margin"] > sample["bound"])
        assert sample["final_certified"] and not sample["final_flipped"]
    code, _, stderr = run_cli("certify", "digits-relu", "--acc", "fp16", "--samples", "2", "--high", "fp99")
    assert code == 2 and len(stderr.strip().splitlines()) == 1


def test_cli_certify_on_a_graph(run_cli):
    code, stdout, stderr = run_cli("certify", "digits-cnn", "--acc", "fp16", "--samples", "16")
    assert code == 0, stderr
    assert "certified" in stdout and "flip rate" in stdout
