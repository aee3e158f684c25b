"""Importers: networks from scikit-learn MLPs, PyTorch ``nn.Sequential`` modules and
state dicts, and ONNX graphs — each turned into the same :class:`~emulator.network.Network`
(weights converted exactly to float64, W of shape (out, in)).

Only chains of affine layers and elementwise activations are accepted; anything else is
refused with a message naming the piece (module type, ONNX op, state-dict key). Nothing
is unpickled: PyTorch files load with ``weights_only=True`` and skops files trust only
the optimiser state types that an MLP carries.
"""

from __future__ import annotations

import importlib
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import ModelFileError
from .layout import network_from_arrays
from .network import Layer, Network

__all__ = [
    "from_sklearn", "from_torch", "from_onnx", "from_object", "load_onnx_file", "load_torch_file", "load_skops_file",
    "SKLEARN_ACTIVATIONS", "TORCH_ACTIVATIONS", "ONNX_ACTIVATIONS",
]

_EXTRAS = {"torch": "torch", "onnx": "onnx", "skops": "test"}


def _require(module: str):
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelFileError(
            f"This model needs the optional package {module!r}: pip install 'mixacc[{_EXTRAS[module]}]'."
        ) from None


def _layers_from_lists(weights, biases, activations, where: str) -> list[Layer]:
    return [Layer(w, b, a, where=f"{where}: layer{k}") for k, (w, b, a) in enumerate(zip(weights, biases, activations))]


def _expand_activations(activations, n_layers: int, where: str) -> list[str]:
    """One activation per layer: a list as given, or one name for every hidden layer
    with the identity on the output layer."""
    if activations is None:
        raise ModelFileError(
            f"{where}: the state dict does not name its activations; pass activations=[one per layer] "
            "or one name for the hidden layers."
        )
    if isinstance(activations, str):
        return [activations] * (n_layers - 1) + ["identity"]
    activations = list(activations)
    if len(activations) != n_layers:
        raise ModelFileError(f"{where}: {len(activations)} activations given for {n_layers} layers.")
    return activations


# ---- scikit-learn ---------------------------------------------------------------------

SKLEARN_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": "identity"}


def from_sklearn(model, name: str = "") -> Network:
    """A fitted ``MLPClassifier`` or ``MLPRegressor``: W_l = coefs_[l].T, b_l =
    intercepts_[l], hidden activation mapped by name; the output layer is the identity
    (the classifier's softmax/logistic is left out: outputs are logits, whose argmax is
    the predicted class; ``meta['output_activation']`` records what was dropped)."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if not isinstance(model, (MLPClassifier, MLPRegressor)):
        raise ModelFileError(f"scikit-learn model of type {type(model).__name__} is not supported; expected MLPClassifier or MLPRegressor.")
    if not hasattr(model, "coefs_"):
        raise ModelFileError(f"{type(model).__name__} is not fitted (no coefs_).")
    if model.activation not in SKLEARN_ACTIVATIONS:
        raise ModelFileError(f"scikit-learn activation {model.activation!r} is not supported. Possible values are: {', '.join(SKLEARN_ACTIVATIONS)}.")
    n = len(model.coefs_)
    acts = [SKLEARN_ACTIVATIONS[model.activation]] * (n - 1) + ["identity"]
    layers = _layers_from_lists([c.T for c in model.coefs_], list(model.intercepts_), acts, name or "sklearn")
    meta = {"source": "scikit-learn", "estimator": type(model).__name__, "output_activation": model.out_activation_}
    if hasattr(model, "classes_"):
        meta["classes"] = np.asarray(model.classes_).tolist()
    return Network(layers, name, meta, where=name or "sklearn")


def load_skops_file(path: Path, **_) -> Network:
    """A scikit-learn MLP saved with skops; only the MLP's own optimiser types are
    trusted, anything else is refused by name."""
    _require("skops")
    sio = importlib.import_module("skops.io")
    trusted_ok = {
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    }
    try:
        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(set(untrusted) - trusted_ok)
        if refused:
            raise ModelFileError(f"{path}: refused: skops file holds untrusted types {', '.join(refused)}.")
        model = sio.load(path, trusted=list(untrusted))
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise ModelFileError(f"{path}: corrupt or unreadable skops file ({type(exc).__name__}).") from None
    return from_sklearn(model, name=path.stem)


# ---- PyTorch --------------------------------------------------------------------------

# module class name -> activation spec (None: passes values through unchanged)
TORCH_ACTIVATIONS: dict[str, Callable[[object], "str | None"]] = {
    "ReLU": lambda m: "relu",
    "Tanh": lambda m: "tanh",
    "Sigmoid": lambda m: "sigmoid",
    "SiLU": lambda m: "silu",
    "GELU": lambda m: {"none": "gelu", "tanh": "gelu_tanh"}[m.approximate],
    "Softplus": lambda m: "softplus" if float(m.beta) == 1.0 else None,
    "LeakyReLU": lambda m: f"leaky_relu:{float(m.negative_slope)!r}",
    "ELU": lambda m: f"elu:{float(m.alpha)!r}",
}
_TORCH_PASSTHROUGH = ("Identity", "Flatten", "Dropout")


def _tensor_to_numpy(t) -> np.ndarray:
    """Any floating torch tensor as float64 numpy (exact: every torch float embeds in float64)."""
    import torch

    if not t.is_floating_point():
        raise ModelFileError(f"tensor of dtype {t.dtype} is not floating point")
    return t.detach().to(device="cpu", dtype=torch.float64).numpy().copy()


def _flatten_modules(module, torch) -> list:
    if isinstance(module, torch.nn.Sequential):
        return [leaf for child in module for leaf in _flatten_modules(child, torch)]
    return [module]


def _from_torch_module(module, name: str) -> Network:
    torch = _require("torch")
    if not isinstance(module, (torch.nn.Sequential, torch.nn.Linear)):
        raise ModelFileError(
            f"PyTorch module {type(module).__name__} is not supported: give an nn.Sequential of Linear and activation modules."
        )
    where = name or "torch"
    specs: list[list] = []  # [weight, bias, activation]
    for index, m in enumerate(_flatten_modules(module, torch)):
        kind = type(m).__name__
        if isinstance(m, torch.nn.Linear):
            specs.append([_tensor_to_numpy(m.weight), None if m.bias is None else _tensor_to_numpy(m.bias), None])
        elif kind in _TORCH_PASSTHROUGH:
            if kind == "Flatten" and (m.start_dim, m.end_dim) != (1, -1):
                raise ModelFileError(f"{where}: module {index} Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) is not supported.")
        elif kind in TORCH_ACTIVATIONS:
            act = TORCH_ACTIVATIONS[kind](m)
            if act is None:
                raise ModelFileError(f"{where}: module {index} {kind} with these parameters is not supported ({m}).")
            if not specs:
                raise ModelFileError(f"{where}: module {index} {kind} comes before any Linear layer.")
            if specs[-1][2] is not None:
                raise ModelFileError(f"{where}: module {index} {kind} follows another activation; only one activation per Linear is supported.")
            specs[-1][2] = act
        else:
            raise ModelFileError(
                f"{where}: unsupported PyTorch module {kind} (module {index}). Supported: Linear, "
                f"{', '.join([*TORCH_ACTIVATIONS, *_TORCH_PASSTHROUGH])}."
            )
    if not specs:
        raise ModelFileError(f"{where}: the module has no Linear layer.")
    layers = _layers_from_lists([s[0] for s in specs], [s[1] for s in specs], [s[2] or "identity" for s in specs], where)
    return Network(layers, name, {"source": "torch"}, where=where)


def _from_state_dict(state: Mapping, activations, name: str) -> Network:
    """A state dict of Linear layers, in its order: ``P.weight`` (out, in) and optional
    ``P.bias`` per layer prefix P; or the native layout ``layer{k}.weight/.bias/.activation``."""
    where = name or "state dict"

    def convert(key, value):
        if isinstance(value, str):
            return value
        try:
            return _tensor_to_numpy(value)
        except (ModelFileError, AttributeError) as exc:
            raise ModelFileError(f"{where}: entry {key!r} is not a floating-point tensor ({exc}).") from None

    if any(str(k).startswith("layer") and str(k).endswith(".activation") for k in state):
        return network_from_arrays({str(k): convert(k, v) for k, v in state.items()}, where, name)
    prefixes: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        prefix, _, leaf = str(key).rpartition(".")
        if leaf not in ("weight", "bias") or isinstance(value, str):
            raise ModelFileError(f"{where}: unsupported state-dict entry {key!r}; only Linear weight and bias are supported.")
        prefixes.setdefault(prefix, {})[leaf] = convert(key, value)
    for prefix, parts in prefixes.items():
        if "weight" not in parts:
            raise ModelFileError(f"{where}: missing {prefix}.weight.")
    acts = _expand_activations(activations, len(prefixes), where)
    parts = list(prefixes.values())
    layers = _layers_from_lists([p["weight"] for p in parts], [p.get("bias") for p in parts], acts, where)
    return Network(layers, name, {"source": "torch state dict", "layer_names": list(prefixes)}, where=where)


def from_torch(obj, activations: "Sequence[str] | str | None" = None, name: str = "") -> Network:
    """An ``nn.Sequential`` of Linear and activation modules (Identity, Flatten and
    Dropout pass through), or a state dict plus ``activations`` (one per layer, or one
    name for the hidden layers with the identity on the output)."""
    torch = _require("torch")
    if isinstance(obj, torch.nn.Module):
        return _from_torch_module(obj, name)
    if isinstance(obj, Mapping):
        return _from_state_dict(obj, activations, name)
    raise ModelFileError(f"from_torch takes an nn.Sequential or a state dict, got {type(obj).__name__}.")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _pickled_what(message: str) -> str:
    """What torch's weights-only unpickler refused, from its (multi-line, ANSI-coloured)
    message: the class it would have had to import, or a generic phrase."""
    found = _UNSUPPORTED.search(_ANSI.sub("", message))
    return f"it pickles a {found.group(1)} object" if found else "it holds pickled objects"


def load_torch_file(path: Path, activations=None, **_) -> Network:
    """A state dict saved with ``torch.save``, read with ``weights_only=True`` (pickled
    modules are refused, not executed)."""
    torch = _require("torch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(f"{path}: refused: {_pickled_what(str(exc))}, not a plain state dict (only tensors are "
                             "loaded, weights_only=True); save module.state_dict() instead.") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated PyTorch file ({type(exc).__name__}).") from None
    if not isinstance(state, Mapping):
        raise ModelFileError(f"{path}: holds a {type(state).__name__}, expected a state dict.")
    return _from_state_dict(state, activations, path.stem)


# ---- ONNX -----------------------------------------------------------------------------

def _snap_float32(value: float) -> float:
    """An ONNX float attribute (stored as float32) as the shortest decimal that gives it,
    e.g. 0.01f -> 0.01, so that it matches the value the model was written with."""
    return float(str(np.float32(value)))


# op -> activation spec from the node's attributes
ONNX_ACTIVATIONS: dict[str, Callable[[dict], str]] = {
    "Relu": lambda a: "relu",
    "Tanh": lambda a: "tanh",
    "Sigmoid": lambda a: "sigmoid",
    "Softplus": lambda a: "softplus",
    "LeakyRelu": lambda a: f"leaky_relu:{_snap_float32(a.get('alpha', 0.01))!r}",
    "Elu": lambda a: f"elu:{_snap_float32(a.get('alpha', 1.0))!r}",
    "Gelu": lambda a: {"none": "gelu", "tanh": "gelu_tanh"}[a.get("approximate", "none")],
}
_ONNX_PASSTHROUGH = ("Identity", "Dropout", "Flatten")
_ONNX_SUPPORTED = ("Gemm", "MatMul", "Add", "Mul (x * Sigmoid(x), silu)", *ONNX_ACTIVATIONS, *_ONNX_PASSTHROUGH)


class _OnnxChain:
    """Walks the nodes of a graph that must form one chain input -> ... -> output."""

    def __init__(self, graph, where: str, onnx):
        self.where, self.onnx = where, onnx
        self.consts = {t.name: self._array(t) for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ModelFileError(f"{where}: the graph has {len(inputs)} data inputs ({', '.join(inputs)}); expected one.")
        self.current = inputs[0]
        self.layers: list[list] = []  # [weight, bias, activation]
        self.open_bias = False  # last layer is a MatMul still waiting for its Add
        self.sigmoid_of: "tuple[str, str] | None" = None  # (input, output) of the last Sigmoid

    def _array(self, tensor) -> np.ndarray:
        a = self.onnx.numpy_helper.to_array(tensor)
        if a.dtype.kind != "f":
            raise ModelFileError(f"{self.where}: tensor {tensor.name!r} has dtype {a.dtype}, expected floating point.")
        return np.asarray(a, dtype=np.float64)

    def _attrs(self, node) -> dict:
        out = {}
        for a in node.attribute:
            v = self.onnx.helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    def _refuse(self, node, why: str):
        raise ModelFileError(f"{self.where}: node {node.name or '(unnamed)'!r} ({node.op_type}): {why}")

    def _const(self, node, name: str) -> np.ndarray:
        if name not in self.consts:
            self._refuse(node, f"operand {name!r} must be a constant (initializer).")
        return self.consts[name]

    def _other_operand(self, node) -> str:
        ins = list(node.input)
        if len(ins) != 2 or self.current not in ins:
            self._refuse(node, "is not part of the single chain from the graph input.")
        return ins[1] if ins[0] == self.current else ins[0]

    def step(self, node) -> None:
        op = node.op_type
        if op == "Constant":
            value = self._attrs(node).get("value")
            if value is None:
                self._refuse(node, "only tensor constants are supported.")
            self.consts[node.output[0]] = self._array(value)
            return
        if op not in ("Gemm", "MatMul", "Add", "Mul", *ONNX_ACTIVATIONS, *_ONNX_PASSTHROUGH):
            raise ModelFileError(
                f"{self.where}: unsupported ONNX op {op!r} (node {node.name or '(unnamed)'!r}). "
                f"Supported: {', '.join(_ONNX_SUPPORTED)}."
            )
        if op != "Mul" and (not node.input or node.input[0] != self.current):
            self._refuse(node, "is not part of the single chain from the graph input.")
        getattr(self, f"_{op.lower()}", self._activation)(node)
        self.current = node.output[0]

    def _gemm(self, node) -> None:
        a = self._attrs(node)
        if a.get("transA", 0) != 0 or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            self._refuse(node, f"only transA=0, alpha=1, beta=1 are supported (got {a}).")
        b = self._const(node, node.input[1])
        weight = b if a.get("transB", 0) else b.T
        bias = self._const(node, node.input[2]).reshape(-1) if len(node.input) > 2 and node.input[2] else None
        if bias is not None and bias.size == 1 and weight.shape[0] != 1:
            bias = np.full(weight.shape[0], bias[0])
        self.layers.append([weight, bias, None])
        self.open_bias = bias is None

    def _matmul(self, node) -> None:
        self.layers.append([self._const(node, node.input[1]).T, None, None])
        self.open_bias = True

    def _add(self, node) -> None:
        if not self.open_bias:
            self._refuse(node, "Add is only supported as the bias of a MatMul or Gemm.")
        bias = self._const(node, self._other_operand(node))
        if bias.ndim > 1 and any(d != 1 for d in bias.shape[:-1]):
            self._refuse(node, f"bias of shape {bias.shape} is not a vector.")
        self.layers[-1][1] = bias.reshape(-1)
        self.open_bias = False

    def _mul(self, node) -> None:
        if self.sigmoid_of is None or self.current != self.sigmoid_of[1] or set(node.input) != set(self.sigmoid_of):
            self._refuse(node, "Mul is only supported as x * Sigmoid(x) (silu).")
        self.layers[-1][2] = "silu"
        self.sigmoid_of = None

    def _identity(self, node) -> None:
        pass

    _dropout = _identity

    def _flatten(self, node) -> None:
        if self._attrs(node).get("axis", 1) != 1:
            self._refuse(node, "only axis=1 is supported.")

    def _activation(self, node) -> None:
        if not self.layers:
            self._refuse(node, "activation before any Gemm/MatMul.")
        if self.layers[-1][2] is not None:
            self._refuse(node, "follows another activation; only one activation per layer is supported.")
        self.layers[-1][2] = ONNX_ACTIVATIONS[node.op_type](self._attrs(node))
        self.open_bias = False
        self.sigmoid_of = (node.input[0], node.output[0]) if node.op_type == "Sigmoid" else None


def from_onnx(model, name: str = "") -> Network:
    """An ONNX graph (path or ``ModelProto``) that is one chain of Gemm (transA=0,
    alpha=beta=1) or MatMul [+ Add] layers, each followed by at most one activation
    (Relu, Tanh, Sigmoid, Softplus, LeakyRelu, Elu, Gelu, x*Sigmoid(x)); Identity,
    Dropout and Flatten(axis=1) pass through. Any other op is refused by name."""
    onnx = _require("onnx")
    if isinstance(model, (str, Path)):
        return load_onnx_file(Path(model))
    if not isinstance(model, onnx.ModelProto):
        raise ModelFileError(f"from_onnx takes a path or an onnx.ModelProto, got {type(model).__name__}.")
    where = name or model.graph.name or "onnx"
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelFileError(f"{where}: invalid ONNX model ({str(exc).strip().splitlines()[0]}).") from None
    chain = _OnnxChain(model.graph, where, onnx)
    for node in model.graph.node:
        chain.step(node)
    outputs = [o.name for o in model.graph.output]
    if outputs != [chain.current]:
        raise ModelFileError(f"{where}: graph outputs {outputs} are not the end of the chain ({chain.current!r}).")
    if not chain.layers:
        raise ModelFileError(f"{where}: the graph has no Gemm or MatMul layer.")
    layers = _layers_from_lists([l[0] for l in chain.layers], [l[1] for l in chain.layers],
                                [l[2] or "identity" for l in chain.layers], where)
    return Network(layers, name, {"source": "onnx"}, where=where)


def load_onnx_file(path: Path, **_) -> Network:
    onnx = _require("onnx")
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path))
    except (DecodeError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated ONNX file ({type(exc).__name__}).") from None
    return from_onnx(model, name=path.stem)


# ---- dispatch on in-memory objects ----------------------------------------------------

def from_object(obj, activations=None, name: str = "") -> Network:
    """A network from an in-memory scikit-learn MLP, PyTorch module or state dict, or
    ONNX ModelProto."""
    if _is_instance(obj, "sklearn.base", "BaseEstimator"):
        return from_sklearn(obj, name=name)
    if _is_instance(obj, "torch.nn", "Module") or isinstance(obj, Mapping):
        return from_torch(obj, activations=activations, name=name)
    if _is_instance(obj, "onnx", "ModelProto"):
        return from_onnx(obj, name=name)
    raise ModelFileError(
        f"Cannot make a network from a {type(obj).__name__}: give a path, a bundled model name, a scikit-learn MLP, "
        "a torch nn.Sequential or state dict, or an onnx ModelProto."
    )


def _is_instance(obj, module: str, cls: str) -> bool:
    """isinstance(obj, module.cls), without importing a library the caller never loaded."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(obj, getattr(loaded, cls))
