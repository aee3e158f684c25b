"""BERT-style encoders from a Hugging Face / sentence-transformers directory, as a graph
of the operator rows (docs/method.md#bert-encoders).

``graph_from_bert(directory)`` reads ``config.json`` and ``model.safetensors`` (or the
shards a ``model.safetensors.index.json`` lists; pickled ``pytorch_model.bin`` files are
refused) in the layout of Hugging Face's ``BertModel``, keys bare or under one prefix
(``bert.``, ``0.auto_model.``, ...), and, when the directory holds a sentence-transformers
pipeline (``modules.json``), its pooling (``1_Pooling/config.json``: mean, CLS, max,
mean_sqrt_len) and L2 normalisation. The graph:

* embeddings: word (Gather of ``input_ids``) + token type (Gather of ``token_type_ids``,
  or of type 0) + position (Gather of 0..T-1), LayerNormalization;
* per layer: Q, K, V as MatMul with the transposed weight (one site each) + bias, split
  into heads, scores Q K^T (a batched site) times 1/sqrt(d_head), plus the additive mask,
  Softmax (site ``.sum``), context P V (a batched site), heads merged, output dense +
  bias + residual, LayerNormalization, intermediate dense + bias + activation, output
  dense + bias + residual, LayerNormalization;
* the additive mask is Hugging Face's float64 eager mask: where(attention_mask != 0, 0,
  finfo(float64).min), shape (B, 1, 1, T), added to the scaled scores of every layer;
* sentence-transformers pooling: tokens weighted by the mask (mean, mean_sqrt_len) or
  those whose mask is non-zero (max, cls); then x / max(||x||_2, 1e-12).

Node names follow Hugging Face's parameter names (``encoder.layer.0.attention.self.query``,
``...attention.self.scores``, ``...attention.self.softmax``, ``...attention.self.context``,
``...attention.output.dense``, ``...intermediate.dense``, ``...output.dense``,
``pooling.mean``, ``normalize.sum``); a MatMul's weight is the initialiser
``<parameter>.weight.T`` (in x out).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import ModelFileError
from ..registry import Registry
from .ir import INT, Graph, Node, TensorInfo

__all__ = ["graph_from_bert", "BertConfig", "HIDDEN_ACTIVATIONS", "POOLING_MODES", "MASK_FILL"]

MASK_FILL = float(np.finfo(np.float64).min)
"""What a masked key position adds to the scaled scores (Hugging Face's float64 eager mask)."""

NORMALIZE_EPS = 1e-12
"""torch.nn.functional.normalize's default: x / max(||x||, eps)."""

COUNT_EPS = 1e-9
"""sentence-transformers' clamp of the token count of mean pooling."""

WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_DOUBLE = 11  # ONNX TensorProto.DOUBLE


@dataclass(frozen=True)
class HiddenActivation:
    """A ``hidden_act`` of the config: the operator row that computes it and its attributes."""

    name: str
    op: str
    attrs: tuple = ()


HIDDEN_ACTIVATIONS: Registry[HiddenActivation] = Registry("hidden_act")
for _act in (
    HiddenActivation("gelu", "Gelu"),
    HiddenActivation("gelu_new", "Gelu", (("approximate", "tanh"),)),
    HiddenActivation("gelu_pytorch_tanh", "Gelu", (("approximate", "tanh"),)),
    HiddenActivation("relu", "Relu"),
):
    HIDDEN_ACTIVATIONS.add(_act.name, _act)

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
"""The sentence-transformers pooling modes supported, in its concatenation order."""

_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class BertConfig:
    """The fields of ``config.json`` the graph depends on."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    layer_norm_eps: float
    max_position_embeddings: int
    type_vocab_size: int

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def read(cls, path: Path) -> "BertConfig":
        doc = _json(path)
        model_type = doc.get("model_type", "bert")
        if model_type != "bert":
            raise ModelFileError(f"{path}: model_type {model_type!r}; only BERT encoders (model_type 'bert') are supported.")
        if doc.get("position_embedding_type", "absolute") != "absolute":
            raise ModelFileError(f"{path}: position_embedding_type {doc['position_embedding_type']!r}; only 'absolute' "
                                 "is supported.")
        if doc.get("is_decoder", False):
            raise ModelFileError(f"{path}: is_decoder is true; only bidirectional encoders are supported.")
        fields = {"vocab_size": int, "hidden_size": int, "num_hidden_layers": int, "num_attention_heads": int,
                  "intermediate_size": int, "hidden_act": str, "layer_norm_eps": float,
                  "max_position_embeddings": int, "type_vocab_size": int}
        missing = [k for k in fields if k not in doc]
        if missing:
            raise ModelFileError(f"{path}: missing {', '.join(missing)}.")
        try:
            config = cls(**{k: kind(doc[k]) for k, kind in fields.items()})
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: malformed value ({exc}).") from None
        if config.hidden_act not in HIDDEN_ACTIVATIONS:
            raise ModelFileError(f"{path}: hidden_act {config.hidden_act!r} is not supported; supported: "
                                 f"{', '.join(HIDDEN_ACTIVATIONS.names())}.")
        sizes = [config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
                 config.intermediate_size, config.max_position_embeddings, config.type_vocab_size]
        if min(sizes) < 1 or config.hidden_size % config.num_attention_heads:
            raise ModelFileError(f"{path}: sizes must be >= 1 and hidden_size ({config.hidden_size}) a multiple of "
                                 f"num_attention_heads ({config.num_attention_heads}).")
        if not config.layer_norm_eps > 0:
            raise ModelFileError(f"{path}: layer_norm_eps == {config.layer_norm_eps}, must be > 0.")
        return config

    def describe(self) -> str:
        return (f"BERT encoder: {self.num_hidden_layers} layers, hidden {self.hidden_size}, "
                f"{self.num_attention_heads} heads of {self.head_size}, feed-forward {self.intermediate_size} "
                f"{self.hidden_act}, vocabulary {self.vocab_size}, {self.max_position_embeddings} positions")


@dataclass(frozen=True)
class Pipeline:
    """The sentence-transformers modules after the encoder: pooling modes (empty: none,
    the graph returns the token embeddings) and whether the result is L2-normalised."""

    encoder_dir: Path
    pooling: tuple[str, ...] = ()
    normalize: bool = False


def _json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not a readable JSON file ({type(exc).__name__}).") from None
    if not isinstance(doc, (dict, list)):
        raise ModelFileError(f"{path}: expected a JSON object.")
    return doc


def _module_kind(entry: Mapping) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def _pooling_modes(path: Path) -> tuple[str, ...]:
    """The modes of a sentence-transformers Pooling config (new ``pooling_mode`` or the
    legacy ``pooling_mode_*`` flags, mean when none is set)."""
    doc = _json(path)
    if "pooling_mode" in doc:
        raw = doc["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if doc.get(key, False)) or ("mean",)
    if not doc.get("include_prompt", True):
        raise ModelFileError(f"{path}: include_prompt is false; pooling that excludes a prompt is not supported.")
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad or not modes:
        raise ModelFileError(f"{path}: pooling mode {bad[0] if bad else modes!r} is not supported; supported: "
                             f"{', '.join(POOLING_MODES)}.")
    return modes


def _pipeline(directory: Path) -> Pipeline:
    modules_path = directory / "modules.json"
    if not modules_path.is_file():
        return Pipeline(directory)
    modules = _json(modules_path)
    if not isinstance(modules, list) or not modules:
        raise ModelFileError(f"{modules_path}: expected a non-empty list of modules.")
    modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    kinds = [_module_kind(m) for m in modules]
    if kinds[0] != "Transformer":
        raise ModelFileError(f"{modules_path}: the first module is {kinds[0]!r}, expected a Transformer.")
    pooling: tuple[str, ...] = ()
    normalize = False
    for entry, kind in zip(modules[1:], kinds[1:]):
        if kind == "Pooling" and not pooling and not normalize:
            pooling = _pooling_modes(directory / str(entry.get("path", "")) / "config.json")
        elif kind == "Normalize" and pooling and not normalize:
            normalize = True
        else:
            raise ModelFileError(f"{modules_path}: module {kind!r} (at {entry.get('path', '')!r}) is not supported; "
                                 "supported: Transformer, then Pooling, then Normalize.")
    return Pipeline(directory / str(modules[0].get("path", "")), pooling, normalize)


def _read_weights(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of the safetensors file(s), read with ``framework="np"``."""
    from safetensors import SafetensorError, safe_open

    single, index = directory / WEIGHTS, directory / SHARD_INDEX
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = _json(index).get("weight_map", {})
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
    else:
        pickled = [name for name in PICKLED if (directory / name).exists()]
        if pickled:
            raise ModelFileError(f"{directory}: refused {pickled[0]} (pickle files can run code); convert the weights "
                                 f"to {WEIGHTS}.")
        raise ModelFileError(f"{directory}: no {WEIGHTS} (a BERT directory needs config.json and {WEIGHTS}).")
    out: dict[str, np.ndarray] = {}
    for path in files:
        key = None
        try:
            with safe_open(str(path), framework="np") as fh:
                for key in fh.keys():
                    out[key] = fh.get_tensor(key)
        except (SafetensorError, OSError, ValueError, TypeError) as exc:
            what = f", tensor {key!r}" if key else ""
            raise ModelFileError(f"{path}: unreadable safetensors file{what} ({str(exc).splitlines()[0]}).") from None
    return out


_ANCHOR = "embeddings.word_embeddings.weight"


class _Parameters:
    """The checkpoint's tensors under Hugging Face ``BertModel`` names (the prefix
    stripped; ``LayerNorm.gamma``/``beta`` read as ``weight``/``bias``), checked
    against the config's shapes on access."""

    def __init__(self, tensors: Mapping[str, np.ndarray], where: str):
        prefixes = [k[:-len(_ANCHOR)] for k in tensors if k.endswith(_ANCHOR)]
        if len(prefixes) != 1:
            raise ModelFileError(f"{where}: expected one {_ANCHOR!r} (any prefix), found {len(prefixes)}.")
        prefix = prefixes[0]
        self.tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.where = where

    def __contains__(self, name: str) -> bool:
        return self._key(name) is not None

    @property
    def n_floats(self) -> int:
        """Floating-point numbers in the checkpoint, used or not (the pooler, say)."""
        return int(sum(np.asarray(v).size for v in self.tensors.values() if np.asarray(v).dtype.kind == "f"))

    def _key(self, name: str) -> "str | None":
        if name in self.tensors:
            return name
        legacy = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        return legacy if legacy in self.tensors else None

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        key = self._key(name)
        if key is None:
            raise ModelFileError(f"{self.where}: missing tensor {name!r}.")
        a = np.asarray(self.tensors[key])
        if a.dtype.kind != "f":
            raise ModelFileError(f"{self.where}: tensor {name!r} has dtype {a.dtype}, expected floats.")
        if a.shape != shape:
            raise ModelFileError(f"{self.where}: tensor {name!r} has shape {a.shape}, the config implies {shape}.")
        return a.astype(np.float64)


class _Builder:
    """Nodes and initialisers in order; every node writes one tensor named after it."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.built: dict[str, tuple] = {}

    def init(self, name: str, value) -> str:
        self.initializers[name] = np.asarray(value)
        return name

    def op(self, name: str, op: str, *inputs: str, **attrs) -> str:
        """The node ``name`` (built once: shared nodes such as ``input.shape`` are asked
        for by several parts of the graph, always with the same definition)."""
        definition = (op, inputs, repr(sorted(attrs.items())))
        if name in self.built:
            if self.built[name] != definition:
                raise ValueError(f"node {name!r} defined twice differently")
            return name
        self.built[name] = definition
        self.nodes.append(Node(name, op, inputs, (name,), attrs))
        return name

    def constant(self, name: str, value: float) -> str:
        """A float scalar as a Constant node (rounded to the storage format like any
        operator output; not a model parameter)."""
        return self.op(name, "Constant", value=np.array(float(value)))

    def dense(self, params: _Parameters, name: str, x: str, n_in: int, n_out: int) -> str:
        """x W^T + b: MatMul (the site ``name``) with the initialiser ``name.weight.T``,
        then Add the initialiser ``name.bias`` (node ``name.add_bias``)."""
        w = self.init(f"{name}.weight.T", params.get(f"{name}.weight", (n_out, n_in)).T.copy())
        b = self.init(f"{name}.bias", params.get(f"{name}.bias", (n_out,)))
        return self.op(f"{name}.add_bias", "Add", self.op(name, "MatMul", x, w), b)

    def layer_norm(self, params: _Parameters, name: str, x: str, size: int, eps: float) -> str:
        scale = self.init(f"{name}.weight", params.get(f"{name}.weight", (size,)))
        bias = self.init(f"{name}.bias", params.get(f"{name}.bias", (size,)))
        return self.op(name, "LayerNormalization", x, scale, bias, axis=-1, epsilon=float(eps))


def _embeddings(b: _Builder, p: _Parameters, c: BertConfig, token_types: bool) -> str:
    h = c.hidden_size
    words = b.init("embeddings.word_embeddings.weight", p.get("embeddings.word_embeddings.weight", (c.vocab_size, h)))
    types = b.init("embeddings.token_type_embeddings.weight",
                   p.get("embeddings.token_type_embeddings.weight", (c.type_vocab_size, h)))
    positions = b.init("embeddings.position_embeddings.weight",
                       p.get("embeddings.position_embeddings.weight", (c.max_position_embeddings, h)))
    word = b.op("embeddings.word_embeddings", "Gather", words, "input_ids", axis=0)
    type_ids = "token_type_ids" if token_types else b.init("embeddings.token_type_ids.default", np.int64(0))
    summed = b.op("embeddings.add_token_type", "Add", word, b.op("embeddings.token_type_embeddings", "Gather", types,
                                                                  type_ids, axis=0))
    position = b.op("embeddings.position_embeddings", "Gather", positions, _position_ids(b), axis=0)
    summed = b.op("embeddings.add_position", "Add", summed, position)
    return b.layer_norm(p, "embeddings.LayerNorm", summed, h, c.layer_norm_eps)


def _length(b: _Builder) -> str:
    """T, the number of tokens (an int64 scalar)."""
    shape = b.op("input.shape", "Shape", "input_ids")
    return b.op("input.length", "Gather", shape, b.init("input.axis.tokens", np.int64(1)), axis=0)


def _position_ids(b: _Builder) -> str:
    """0, 1, ..., T - 1."""
    zero, one = b.init("input.zero", np.int64(0)), b.init("input.one", np.int64(1))
    return b.op("embeddings.position_ids", "Range", zero, _length(b), one)


def _additive_mask(b: _Builder) -> str:
    """where(attention_mask != 0, 0, finfo(float64).min), shape (B, 1, 1, T)."""
    keys = b.op("attention_mask.keys", "Unsqueeze", "attention_mask", axes=(1, 2))
    return b.op("attention_mask.additive", "Where", keys, b.constant("attention_mask.keep", 0.0),
                b.constant("attention_mask.fill", MASK_FILL))


def _attention(b: _Builder, p: _Parameters, c: BertConfig, x: str, prefix: str, mask: str) -> str:
    h, heads, d = c.hidden_size, c.num_attention_heads, c.head_size
    split = b.init("attention.split_heads", np.array([0, 0, heads, d], dtype=np.int64))
    merge = b.init("attention.merge_heads", np.array([0, 0, h], dtype=np.int64))
    self_ = f"{prefix}.attention.self"

    def heads_of(role: str, perm: tuple[int, ...]) -> str:
        y = b.dense(p, f"{self_}.{role}", x, h, h)
        return b.op(f"{self_}.{role}.heads", "Transpose", b.op(f"{self_}.{role}.split", "Reshape", y, split), perm=perm)

    q, k, v = heads_of("query", (0, 2, 1, 3)), heads_of("key", (0, 2, 3, 1)), heads_of("value", (0, 2, 1, 3))
    scores = b.op(f"{self_}.scores", "MatMul", q, k)
    scaled = b.op(f"{self_}.scaled", "Mul", scores, b.constant("attention.scaling", d ** -0.5))
    probs = b.op(f"{self_}.softmax", "Softmax", b.op(f"{self_}.masked", "Add", scaled, mask), axis=-1)
    context = b.op(f"{self_}.context", "MatMul", probs, v)
    merged = b.op(f"{self_}.context.merge", "Reshape",
                  b.op(f"{self_}.context.heads", "Transpose", context, perm=(0, 2, 1, 3)), merge)
    out = b.dense(p, f"{prefix}.attention.output.dense", merged, h, h)
    residual = b.op(f"{prefix}.attention.output.residual", "Add", out, x)
    return b.layer_norm(p, f"{prefix}.attention.output.LayerNorm", residual, h, c.layer_norm_eps)


def _feed_forward(b: _Builder, p: _Parameters, c: BertConfig, x: str, prefix: str) -> str:
    act = HIDDEN_ACTIVATIONS.get(c.hidden_act)
    inner = b.dense(p, f"{prefix}.intermediate.dense", x, c.hidden_size, c.intermediate_size)
    inner = b.op(f"{prefix}.intermediate.act", act.op, inner, **dict(act.attrs))
    out = b.dense(p, f"{prefix}.output.dense", inner, c.intermediate_size, c.hidden_size)
    residual = b.op(f"{prefix}.output.residual", "Add", out, x)
    return b.layer_norm(p, f"{prefix}.output.LayerNorm", residual, c.hidden_size, c.layer_norm_eps)


def _pooler(b: _Builder, p: _Parameters, c: BertConfig, hidden: str) -> str:
    """BertModel's pooler: tanh(dense(first token))."""
    first = b.op("pooler.first_token", "Gather", hidden, b.init("input.zero", np.int64(0)), axis=1)
    dense = b.dense(p, "pooler.dense", first, c.hidden_size, c.hidden_size)
    return b.op("pooler_output", "Tanh", dense)


def _token_count(b: _Builder) -> str:
    """max(sum_t mask_t, 1e-9), (B, 1), float (the mask summed as integers)."""
    count = b.op("pooling.count", "ReduceSum", "attention_mask", axes=(1,), keepdims=1)
    return b.op("pooling.count.clamp", "Clip", b.op("pooling.count.float", "Cast", count, to=_DOUBLE), min=COUNT_EPS)


def _masked_tokens(b: _Builder, hidden: str) -> str:
    """The token embeddings times the mask."""
    mask = b.op("pooling.mask", "Cast", b.op("pooling.mask.tokens", "Unsqueeze", "attention_mask", axes=(2,)),
                to=_DOUBLE)
    return b.op("pooling.masked", "Mul", hidden, mask)


def _pool_mean(b: _Builder, c: BertConfig, hidden: str) -> str:
    total = b.op("pooling.mean", "ReduceSum", _masked_tokens(b, hidden), axes=(1,), keepdims=0)
    return b.op("pooling.mean.divide", "Div", total, _token_count(b))


def _pool_mean_sqrt_len(b: _Builder, c: BertConfig, hidden: str) -> str:
    total = b.op("pooling.mean_sqrt_len", "ReduceSum", _masked_tokens(b, hidden), axes=(1,), keepdims=0)
    root = b.op("pooling.count.sqrt", "Sqrt", _token_count(b))
    return b.op("pooling.mean_sqrt_len.divide", "Div", total, root)


def _pool_max(b: _Builder, c: BertConfig, hidden: str) -> str:
    keep = b.op("pooling.mask.tokens", "Unsqueeze", "attention_mask", axes=(2,))
    filled = b.op("pooling.max.masked", "Where", keep, hidden, b.constant("pooling.max.fill", MASK_FILL))
    return b.op("pooling.max", "ReduceMax", filled, axes=(1,), keepdims=0)


def _pool_cls(b: _Builder, c: BertConfig, hidden: str) -> str:
    """The embedding of the first token of largest mask (the first unmasked token; token
    0 when every token is masked): with s_t = mask_t (T - t), first = (T - max_t s_t)
    mod T, gathered from the (B T, H) rows at row b T + first."""
    length = _length(b)
    score = b.op("pooling.cls.score", "Mul", "attention_mask",
                 b.op("pooling.cls.reverse", "Sub", length, _position_ids(b)))
    gap = b.op("pooling.cls.gap", "Sub", length, b.op("pooling.cls.best", "ReduceMax", score, axes=(1,), keepdims=0))
    wraps = b.op("pooling.cls.wraps", "Mul", b.op("pooling.cls.quotient", "Div", gap, length), length)
    first = b.op("pooling.cls.first", "Sub", gap, wraps)
    batch = b.op("input.batch", "Gather", b.op("input.shape", "Shape", "input_ids"),
                 b.init("input.zero", np.int64(0)), axis=0)
    rows = b.op("pooling.cls.rows", "Range", b.init("input.zero", np.int64(0)), batch, b.init("input.one", np.int64(1)))
    index = b.op("pooling.cls.index", "Add", b.op("pooling.cls.offsets", "Mul", rows, length), first)
    flat = b.op("pooling.cls.rows_of_tokens", "Reshape", hidden,
                b.init("pooling.cls.flat_shape", np.array([-1, c.hidden_size], dtype=np.int64)))
    return b.op("pooling.cls", "Gather", flat, index, axis=0)


_POOLERS = {"cls": _pool_cls, "max": _pool_max, "mean": _pool_mean, "mean_sqrt_len_tokens": _pool_mean_sqrt_len}


def _normalize(b: _Builder, x: str) -> str:
    """x / max(sqrt(sum x^2), 1e-12) over the last axis; the sum is the site ``normalize.sum``."""
    total = b.op("normalize.sum", "ReduceSum", b.op("normalize.square", "Mul", x, x), axes=(-1,), keepdims=1)
    norm = b.op("normalize.clamp", "Clip", b.op("normalize.norm", "Sqrt", total), min=NORMALIZE_EPS)
    return b.op("normalize", "Div", x, norm)


def graph_from_bert(directory: "str | Path", name: str = "", *, token_type_ids: bool = False) -> Graph:
    """The graph of the BERT encoder (and sentence-transformers pipeline) in
    ``directory`` (see the module docstring). Inputs: ``input_ids`` and
    ``attention_mask`` (int, (B, T)), and ``token_type_ids`` when asked (else every
    token has type 0). Output: ``sentence_embedding`` (B, H x modes) for a pipeline with
    pooling, else ``last_hidden_state`` (B, T, H) and, when the checkpoint has one,
    ``pooler_output`` (B, H)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"{directory} is not a directory (a BERT directory holds config.json and {WEIGHTS}).")
    pipeline = _pipeline(directory)
    if not (pipeline.encoder_dir / "config.json").is_file():
        raise ModelFileError(f"{pipeline.encoder_dir} is a directory without config.json (a BERT directory holds "
                             f"config.json and {WEIGHTS}).")
    config = BertConfig.read(pipeline.encoder_dir / "config.json")
    params = _Parameters(_read_weights(pipeline.encoder_dir), str(pipeline.encoder_dir))
    b = _Builder()
    hidden = _embeddings(b, params, config, token_type_ids)
    mask = _additive_mask(b)
    for i in range(config.num_hidden_layers):
        prefix = f"encoder.layer.{i}"
        hidden = _feed_forward(b, params, config, _attention(b, params, config, hidden, prefix, mask), prefix)
    hidden = b.op("last_hidden_state", "Identity", hidden)
    if pipeline.pooling:
        pooled = [_POOLERS[mode](b, config, hidden) for mode in pipeline.pooling]
        out = pooled[0] if len(pooled) == 1 else b.op("pooling.concat", "Concat", *pooled, axis=-1)
        out = _normalize(b, out) if pipeline.normalize else out
        outputs = [b.op("sentence_embedding", "Identity", out)]
    else:
        outputs = [hidden]
        if "pooler.dense.weight" in params:
            outputs.append(_pooler(b, params, config, hidden))
    inputs = [TensorInfo("input_ids", INT, (None, None)), TensorInfo("attention_mask", INT, (None, None))]
    if token_type_ids:
        inputs.append(TensorInfo("token_type_ids", INT, (None, None)))
    summary = config.describe()
    if pipeline.pooling:
        summary += f"; {' + '.join(pipeline.pooling)} pooling" + (", L2-normalised" if pipeline.normalize else "")
    meta = {"architecture": summary, "config": asdict(config),
            "pooling": list(pipeline.pooling), "normalize": pipeline.normalize}
    graph = Graph(b.nodes, inputs, outputs, b.initializers, name or directory.name, meta)
    return graph.renamed(meta={**meta, "n_params": graph.n_params, "checkpoint_params": params.n_floats,
                               "operators": graph.op_types})
