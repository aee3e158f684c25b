"""Optional heavy packages (torch, onnx, skops, ...), imported only when a feature needs
them, with one error naming the extra that installs them."""

from __future__ import annotations

import importlib

from .errors import ModelFileError

__all__ = ["require", "EXTRAS"]

EXTRAS = {"torch": "torch", "onnx": "onnx", "skops": "test", "onnxruntime": "test"}
"""Package -> the ``mixacc[EXTRA]`` that installs it."""


def require(module: str, what: str = "This model"):
    """``importlib.import_module(module)``, or a :class:`ModelFileError` saying which
    extra installs it (``what`` names the feature that needs it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module.split(".")[0]]
        raise ModelFileError(f"{what} needs the optional package {module!r}: pip install 'mixacc[{extra}]'.") from None
