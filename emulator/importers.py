"""Importers: networks from scikit-learn MLPs, PyTorch ``nn.Sequential`` modules and
state dicts, and ONNX models — each turned into the same :class:`~emulator.network.Network`
(weights converted exactly to float64, W of shape (out, in)) when it is a chain of dense
layers and elementwise activations.

Any other ONNX model, and any PyTorch module given with an example input (exported to
ONNX), becomes a :class:`~emulator.graph.Graph` (``emulator.graph.onnx_import``).
Otherwise the piece that is not a dense chain is refused by name (module type,
state-dict key). Nothing is unpickled: PyTorch files load with ``weights_only=True`` and
skops files trust only the optimiser state types that an MLP carries.
"""

from __future__ import annotations

import importlib
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .errors import ModelFileError
from .layout import network_from_arrays
from .network import Layer, Network
from .optional import require

if TYPE_CHECKING:
    from .graph.ir import Graph

__all__ = [
    "from_sklearn", "from_torch", "from_onnx", "from_object", "load_onnx_file", "load_torch_file", "load_skops_file",
    "network_from_graph", "SKLEARN_ACTIVATIONS", "TORCH_ACTIVATIONS", "ONNX_ACTIVATIONS",
]

def _require(module: str):
    """Import an optional dependency, or say which extra installs it."""
    return require(module, "This model")


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
            f"PyTorch module {type(module).__name__} is not supported: give an nn.Sequential of Linear and activation "
            "modules, or an example input to export it (from_torch(module, example))."
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
                f"{', '.join([*TORCH_ACTIVATIONS, *_TORCH_PASSTHROUGH])}; give an example input to export any "
                "other module (from_torch(module, example))."
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


def from_torch(obj, example=None, name: str = "", *, activations: "Sequence[str] | str | None" = None
               ) -> "Network | Graph":
    """A PyTorch model. Without ``example``: an ``nn.Sequential`` of Linear and activation
    modules (Identity, Flatten and Dropout pass through), or a state dict plus
    ``activations`` (one per layer, or one name for the hidden layers with the identity
    on the output), as a :class:`Network`. With ``example`` (a tensor, or a tuple of
    positional arguments, batch first): any module, exported by torch's TorchScript
    exporter (``emulator.graph.torch_export``) and read as an ONNX model by
    :func:`from_onnx` (a Network for a plain chain of dense layers, else a Graph)."""
    torch = _require("torch")
    if isinstance(obj, Mapping):
        return _from_state_dict(obj, activations, name)
    if not isinstance(obj, torch.nn.Module):
        raise ModelFileError(f"from_torch takes an nn.Module or a state dict, got {type(obj).__name__}.")
    if example is None:
        return _from_torch_module(obj, name)
    from .graph.torch_export import export_onnx

    return from_onnx(export_onnx(obj, example), name)


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

# op -> activation spec from the node's attributes (float attributes are snapped on import)
ONNX_ACTIVATIONS: dict[str, Callable[[Mapping], str]] = {
    "Relu": lambda a: "relu",
    "Tanh": lambda a: "tanh",
    "Sigmoid": lambda a: "sigmoid",
    "Softplus": lambda a: "softplus",
    "Silu": lambda a: "silu",
    "LeakyRelu": lambda a: f"leaky_relu:{float(a.get('alpha', 0.01))!r}",
    "Elu": lambda a: f"elu:{float(a.get('alpha', 1.0))!r}",
    "Gelu": lambda a: {"none": "gelu", "tanh": "gelu_tanh"}[str(a.get("approximate", "none"))],
}
_CHAIN_PASSTHROUGH = ("Identity", "Dropout")


def _vector(value: np.ndarray, m: int) -> "np.ndarray | None":
    """A constant that broadcasts as a bias of length m: (m,), (1, m), or one element."""
    if value.size == 1:
        return np.full(m, float(value.ravel()[0]))
    if value.ndim == 0 or value.ndim > 2 or any(d != 1 for d in value.shape[:-1]):
        return None
    return value.reshape(-1)


def network_from_graph(graph) -> "Network | None":
    """The :class:`Network` a graph is when it is a plain chain of dense layers: one float
    input of shape (batch, n) (or unknown rank), one output, and in order Gemm (transA=0,
    constant B, constant vector C) or MatMul by a constant matrix [+ Add of a constant
    vector], each followed by at most one activation (Relu, Tanh, Sigmoid, Softplus,
    LeakyRelu, Elu, Gelu, Silu); Identity, Dropout and Flatten(axis=1) of a 2-D input
    pass through. None for any other graph."""
    from .graph.ir import FLOAT
    from .graph.ops.shape import constant_value

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return None
    source = graph.inputs[0]
    if source.dtype != FLOAT or len(source.shape) > 2:
        return None
    consts = dict(graph.initializers)
    consts.update({n.outputs[0]: constant_value(n) for n in graph.nodes if n.op == "Constant"})
    consumers = graph.consumers()
    current, layers, open_bias = source.name, [], False
    for node in graph.nodes:
        if node.op == "Constant":
            continue
        data = [t for t in node.inputs if t and t not in consts]
        if data != [current] or any(t in consumers or t in graph.outputs for t in node.outputs[1:] if t):
            return None
        operands = [consts.get(t) for t in node.inputs]
        if node.op == "Gemm" and not int(node.attr("transA", 0)) and node.inputs[0] == current \
                and operands[1] is not None and operands[1].ndim == 2:
            weight = operands[1] if int(node.attr("transB", 0)) else operands[1].T
            c = operands[2] if len(operands) > 2 else None
            bias = None if c is None else _vector(c, weight.shape[0])
            if c is not None and bias is None:
                return None
            layers.append([weight, bias, None])
            open_bias = bias is None
        elif node.op == "MatMul" and node.inputs[0] == current and operands[1] is not None and operands[1].ndim == 2:
            layers.append([operands[1].T, None, None])
            open_bias = True
        elif node.op == "Add" and open_bias and layers[-1][2] is None:
            bias = _vector(operands[1] if node.inputs[0] == current else operands[0], layers[-1][0].shape[0])
            if bias is None:
                return None
            layers[-1][1] = bias
            open_bias = False
        elif node.op in ONNX_ACTIVATIONS and layers and layers[-1][2] is None:
            layers[-1][2] = ONNX_ACTIVATIONS[node.op](node.attrs)
            open_bias = False
        elif not (node.op in _CHAIN_PASSTHROUGH
                  or (node.op == "Flatten" and int(node.attr("axis", 1)) == 1 and len(source.shape) == 2)):
            return None
        current = node.outputs[0]
    if current != graph.outputs[0] or not layers:
        return None
    where = graph.name or "onnx"
    layers = _layers_from_lists([l[0] for l in layers], [l[1] for l in layers], [l[2] or "identity" for l in layers], where)
    return Network(layers, graph.name, dict(graph.meta), where=where)


def from_onnx(model, name: str = "") -> "Network | Graph":
    """An ONNX model (a path, bytes or an ``onnx.ModelProto``): a :class:`Network` when
    its graph is a plain chain of dense layers (see :func:`network_from_graph`), else the
    :class:`~emulator.graph.Graph` (``emulator.graph.onnx_import.graph_from_onnx``)."""
    from .graph.onnx_import import graph_from_onnx

    graph = graph_from_onnx(model, name)
    network = network_from_graph(graph)
    return graph if network is None else network


def load_onnx_file(path: Path, **_) -> "Network | Graph":
    return from_onnx(path)


# ---- dispatch on in-memory objects ----------------------------------------------------

def from_object(obj, activations=None, name: str = "") -> "Network | Graph":
    """A network from an in-memory scikit-learn MLP, PyTorch module or state dict, or
    ONNX ModelProto (a Graph when it is not a chain of dense layers)."""
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
