"""The native layout of a network as named arrays and strings (docs/method.md#model-files):
``layer{k}.weight`` (out x in), optional ``layer{k}.bias`` (out,) and
``layer{k}.activation`` (a string) for k = 0..L-1, plus optional ``name`` and ``meta`` (a
JSON object). Model files (``.npz``, ``.safetensors``) and state dicts in this layout go
through these two functions."""

from __future__ import annotations

import json
import re
from typing import Mapping

import numpy as np

from .errors import ModelFileError
from .network import Layer, Network

__all__ = ["network_from_arrays", "network_to_arrays"]

_LAYER_KEY = re.compile(r"^layer(\d+)\.(weight|bias|activation)$")
_EXTRA_KEYS = ("name", "meta")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"meta value of type {type(obj).__name__} is not JSON-serialisable")


def _as_text(value, where: str) -> str:
    if isinstance(value, str):
        return value
    a = np.asarray(value)
    if a.ndim == 0 and a.dtype.kind == "U":
        return str(a.item())
    if a.ndim == 0 and a.dtype.kind == "S":
        return a.item().decode("utf-8")
    raise ModelFileError(f"{where} must be a string, got an array of dtype {a.dtype} and shape {a.shape}.")


def network_from_arrays(arrays: Mapping[str, object], where: str, name: str = "") -> Network:
    """A network from the native layout (``layer{k}.weight`` / ``.bias`` /
    ``.activation``, optional ``name`` and JSON ``meta``); ``where`` prefixes errors."""
    layers: dict[int, dict[str, object]] = {}
    for key, value in arrays.items():
        m = _LAYER_KEY.match(key)
        if m:
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif key not in _EXTRA_KEYS:
            raise ModelFileError(
                f"{where}: unexpected key {key!r}; expected layer{{k}}.weight, layer{{k}}.bias, layer{{k}}.activation, name, meta."
            )
    if not layers:
        raise ModelFileError(f"{where}: no layer0.weight found; not a mixacc model file.")
    built = []
    for k in range(max(layers) + 1):
        parts = layers.get(k, {})
        for required in ("weight", "activation"):
            if required not in parts:
                raise ModelFileError(f"{where}: missing layer{k}.{required}.")
        act = _as_text(parts["activation"], f"{where}: layer{k}.activation")
        built.append(Layer(parts["weight"], parts.get("bias"), act, where=f"{where}: layer{k}"))
    meta = {}
    if "meta" in arrays:
        try:
            meta = json.loads(_as_text(arrays["meta"], f"{where}: meta"))
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{where}: meta is not valid JSON ({exc.msg}).") from None
        if not isinstance(meta, dict):
            raise ModelFileError(f"{where}: meta must be a JSON object.")
    stored_name = _as_text(arrays["name"], f"{where}: name") if "name" in arrays else ""
    return Network(built, name or stored_name, meta, where=where)


def network_to_arrays(network: Network) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, strings) of the native layout: float64 weights and biases; activation
    names, ``name`` and the JSON ``meta`` as strings."""
    arrays: dict[str, np.ndarray] = {}
    strings: dict[str, str] = {"name": network.name, "meta": json.dumps(network.meta, default=_json_default)}
    for k, layer in enumerate(network.layers):
        arrays[f"layer{k}.weight"] = np.ascontiguousarray(layer.weight, dtype=np.float64)
        if layer.bias is not None:
            arrays[f"layer{k}.bias"] = np.ascontiguousarray(layer.bias, dtype=np.float64)
        strings[f"layer{k}.activation"] = layer.activation.name
    return arrays, strings
