"""Model files: load and save networks, and the bundled models.

The native layout (docs/method.md#model-files), in ``.npz`` and ``.safetensors``:
``layer{k}.weight`` (out x in), optional ``layer{k}.bias`` (out,) and
``layer{k}.activation`` (a string) for k = 0..L-1, plus optional ``name`` and ``meta``
(a JSON object). In ``.safetensors`` the strings live in the header's metadata.
Other files go through :mod:`emulator.importers` (``.onnx``: a Network for a chain of
dense layers, else a Graph; PyTorch state dicts ``.pt``/``.pth``; scikit-learn
``.skops``). Pickle is never loaded: ``.pkl`` files, npz members holding object arrays
and pickled PyTorch modules are refused unread.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from . import importers
from .atomic import write_atomic
from .errors import ModelFileError
from .layout import network_from_arrays, network_to_arrays
from .graph.io import GRAPH_KEY, graph_from_arrays, save_graph
from .graph.ir import Graph
from .network import Network
from .packaged import PACKAGED_MODELS, load_packaged
from .registry import Registry

__all__ = [
    "load_model", "save_model", "bundled_models",
    "from_sklearn", "from_torch", "from_onnx", "MODEL_FILE_TYPES", "BUNDLED_DIR",
]

from_sklearn = importers.from_sklearn
from_torch = importers.from_torch
from_onnx = importers.from_onnx

BUNDLED_DIR = Path(__file__).resolve().parent / "models"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = (b"\x80",)


def _sniff(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


def _refuse_pickle(path: Path, **_) -> Network:
    raise ModelFileError(f"{path}: refused: pickle files are never loaded (they can run code); save as .npz, .safetensors or .skops.")


def _load_npz(path: Path, **_) -> "Network | Graph":
    head = _sniff(path)
    if head.startswith(_PICKLE_MAGIC):
        _refuse_pickle(path)
    if not head.startswith(_ZIP_MAGIC):
        raise ModelFileError(f"{path}: not an npz archive (corrupt or truncated).")
    arrays: dict[str, object] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                value = archive[key]
                if not isinstance(value, np.ndarray):
                    raise ModelFileError(f"{path}: member {key!r} is not a numpy array.")
                arrays[key] = value
    except ValueError as exc:
        if isinstance(exc, ModelFileError):
            raise
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise ModelFileError(f"{path}: refused: holds object arrays (pickled data), which are never loaded.") from None
        raise ModelFileError(f"{path}: corrupt or truncated npz ({exc}).") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated npz ({type(exc).__name__}: {exc}).") from None
    if GRAPH_KEY in arrays:
        return graph_from_arrays(arrays, str(path))
    return network_from_arrays(arrays, str(path), "")


def _save_npz(network: "Network | Graph", path: Path) -> None:
    if isinstance(network, Graph):
        save_graph(network, path)
        return
    arrays, strings = network_to_arrays(network)
    payload = {**arrays, **{k: np.array(v) for k, v in strings.items()}}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)

    write_atomic(path, write)


def _load_safetensors(path: Path, **_) -> Network:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as fh:
            strings = dict(fh.metadata() or {})
            arrays = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated safetensors file ({str(exc).splitlines()[0]}).") from None
    strings.pop("format", None)
    return network_from_arrays({**arrays, **strings}, str(path), "")


def _save_safetensors(network: Network, path: Path) -> None:
    from safetensors.numpy import save_file

    arrays, strings = network_to_arrays(network)
    write_atomic(path, lambda tmp: save_file(arrays, str(tmp), metadata={**strings, "format": "mixacc"}))


@dataclass(frozen=True)
class ModelFileType:
    """A kind of model file: its suffix, what it holds, how to load it (``load(path,
    **options)``) and, for the native layout, how to save it."""

    suffix: str
    description: str
    load: Callable[..., Network]
    save: "Callable[[Network, Path], None] | None" = None


MODEL_FILE_TYPES: Registry[ModelFileType] = Registry("model file type")
for _t in (
    ModelFileType(".npz", "native layout, numpy archive", _load_npz, _save_npz),
    ModelFileType(".safetensors", "native layout, safetensors", _load_safetensors, _save_safetensors),
    ModelFileType(".onnx", "ONNX model: a Network when it is a chain of dense layers, else a Graph (extra: onnx)",
                  importers.load_onnx_file),
    ModelFileType(".pt", "PyTorch state dict, loaded with weights_only=True (extra: torch)", importers.load_torch_file),
    ModelFileType(".pth", "PyTorch state dict, loaded with weights_only=True (extra: torch)", importers.load_torch_file),
    ModelFileType(".skops", "scikit-learn MLPClassifier/MLPRegressor saved with skops", importers.load_skops_file),
    ModelFileType(".pkl", "pickle: refused", _refuse_pickle),
    ModelFileType(".pickle", "pickle: refused", _refuse_pickle),
    ModelFileType(".joblib", "joblib pickle: refused", _refuse_pickle),
):
    MODEL_FILE_TYPES.add(_t.suffix, _t)


@lru_cache(maxsize=1)
def _bundled_index() -> dict:
    index = BUNDLED_DIR / "index.json"
    if not index.exists():
        return {}
    return json.loads(index.read_text(encoding="utf-8"))


def bundled_models() -> dict[str, dict]:
    """The bundled models, name -> model card data (architecture, data, seed, train and
    test accuracy, ...), in the order of ``emulator/models/index.json``."""
    return {name: dict(card) for name, card in _bundled_index().items()}


def _load_bundled(name: str) -> "Network | Graph":
    net = _load_npz(BUNDLED_DIR / f"{name}.npz")
    return _renamed(net, name, {**bundled_models()[name], **net.meta})


def _renamed(model: "Network | Graph", name: str, meta: dict) -> "Network | Graph":
    if isinstance(model, Graph):
        return model.renamed(name, meta)
    return Network(model.layers, name, meta)


def load_model(spec, *, activations=None, name: str = "") -> "Network | Graph":
    """A :class:`Network` or :class:`Graph` from ``spec``: a path (.npz, .safetensors,
    .onnx, .pt/.pth state dict, .skops), a bundled model's name (see
    :func:`bundled_models`), a Network or Graph, or an in-memory scikit-learn MLP, PyTorch
    ``nn.Sequential``/state dict or ONNX ``ModelProto``. An ONNX model is a Network when
    it is a chain of dense layers, else a Graph. ``activations`` completes state dicts
    that do not name theirs. A packaged model's name (``emulator.packaged``, installed by
    an extra) or a BERT directory (config.json + model.safetensors) gives a Graph."""
    if isinstance(spec, (Network, Graph)):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        return importers.from_object(spec, activations=activations, name=name)
    text = os.fspath(spec)
    if isinstance(spec, str) and text in _bundled_index():
        net = _load_bundled(text)
        return _renamed(net, name, net.meta) if name else net
    if isinstance(spec, str) and text in PACKAGED_MODELS:
        graph = load_packaged(text)
        return _renamed(graph, name, graph.meta) if name else graph
    path = Path(text)
    if not path.exists():
        if path.suffix or os.sep in text:
            raise ModelFileError(f"Model file '{text}' does not exist.")
        raise ModelFileError(
            f"Unknown model '{text}': no such file and no bundled model of that name. "
            f"Bundled models are: {', '.join(_bundled_index()) or '(none)'}; packaged (optional extras): "
            f"{', '.join(PACKAGED_MODELS.names())}."
        )
    if path.is_dir():
        from .graph.bert import graph_from_bert

        return graph_from_bert(path, name or path.name)
    kind = MODEL_FILE_TYPES.get(path.suffix.lower())
    net = kind.load(path, activations=activations)
    final_name = name or net.name or path.stem
    return net if final_name == net.name else _renamed(net, final_name, net.meta)


def save_model(network: Network, path: "str | os.PathLike") -> Path:
    """Write ``network`` in the native layout (.npz or .safetensors, chosen by suffix),
    atomically."""
    path = Path(path)
    kind = MODEL_FILE_TYPES.get(path.suffix.lower())
    if kind.save is None:
        savable = [t.suffix for t in MODEL_FILE_TYPES.rows() if t.save is not None]
        raise ModelFileError(f"Cannot save to {path.suffix!r} files. Possible values are: {', '.join(savable)}.")
    kind.save(network, path)
    return path
