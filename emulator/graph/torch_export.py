"""PyTorch modules as ONNX models, through torch's TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``, which needs neither onnxscript nor a network),
for :func:`emulator.importers.from_torch` (docs/method.md#onnx-import).

The module is exported in evaluation mode with its parameters as they are (convert it
with ``.double()`` first for float64 weights), constants folded, every input named after
the parameter of ``forward`` it feeds and its first axis (the batch) left dynamic.
"""

from __future__ import annotations

import inspect
import io
import warnings

from ..errors import ModelFileError
from ..optional import require

__all__ = ["export_onnx", "DEFAULT_OPSET"]

DEFAULT_OPSET = 20
"""The exporter's opset: LayerNormalization (17) and Gelu (20) are written fused."""

_NEEDS = "Exporting a PyTorch module"


def _as_args(example) -> tuple:
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def _input_names(module, args: tuple) -> list[str]:
    """The names of ``forward``'s positional parameters for the given (non-None) args."""
    try:
        params = [p.name for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [params[k] if k < len(params) else f"input_{k}" for k in range(len(args))]
    return [n for n, a in zip(names, args) if a is not None]


def _output_names(torch, module, args: tuple) -> list[str]:
    with torch.no_grad():
        out = module(*args)
    count = len(out) if isinstance(out, (tuple, list)) else 1
    return ["output"] if count == 1 else [f"output_{k}" for k in range(count)]


def export_onnx(module, example, *, opset: int = DEFAULT_OPSET) -> bytes:
    """The serialised ONNX model of ``module`` called on ``example`` (a tensor, or a tuple
    of positional arguments, None for skipped ones), batch axis dynamic."""
    torch = require("torch", _NEEDS)
    require("onnx", _NEEDS)
    if not isinstance(module, torch.nn.Module):
        raise ModelFileError(f"Only torch.nn.Module objects can be exported, got {type(module).__name__}.")
    args = _as_args(example)
    where = type(module).__name__
    was_training = module.training
    module.eval()
    buffer = io.BytesIO()
    try:
        inputs, outputs = _input_names(module, args), _output_names(torch, module, args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
                              input_names=inputs, output_names=outputs,
                              dynamic_axes={n: {0: "batch"} for n in [*inputs, *outputs]})
    except (RuntimeError, TypeError, ValueError, torch.onnx.errors.OnnxExporterError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelFileError(f"{where}: torch.onnx.export failed ({first.strip()}).") from None
    finally:
        module.train(was_training)
    return buffer.getvalue()
