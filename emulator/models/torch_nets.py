"""The PyTorch modules the bundled models trained with torch are trained as (extra
``torch``; imported by the training scripts only). Each graph model's module computes
exactly what its graph in :mod:`emulator.models.digits_graphs` computes, operation for
operation, and names its parameters as the graph names its initialisers
(``conv1.weight``, ``block0.attention.query.bias``, ...); :func:`relu_mlp` is the plain
multilayer perceptron ``emulator.importers.from_torch`` reads as a Network."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .digits_graphs import SIDE, CnnShape, TransformerShape

__all__ = ["DigitsCNN", "DigitsTransformer", "MODULES", "module_for", "relu_mlp"]


class DigitsCNN(nn.Module):
    """See :class:`~emulator.models.digits_graphs.CnnShape`."""

    def __init__(self, shape: CnnShape):
        super().__init__()
        (c1, c2), k = shape.channels, shape.kernel
        self.shape = shape
        self.conv1 = nn.Conv2d(1, c1, k, padding=k // 2)
        self.conv2 = nn.Conv2d(c1, c2, k)
        self.classifier = nn.Linear(c2, shape.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x.reshape(-1, 1, SIDE, SIDE))), self.shape.pool)
        h = F.relu(self.conv2(h)).mean(dim=(2, 3))
        return self.classifier(h)


class PositionEmbedding(nn.Module):
    """x + weight, one learned row per token (initialised N(0, 0.02^2))."""

    def __init__(self, tokens: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(tokens, d_model) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


class Attention(nn.Module):
    """Multi-head self-attention: softmax((x Wq^T + bq)(x Wk^T + bk)^T / sqrt(head_dim))
    (x Wv^T + bv) per head, heads concatenated, then the output projection."""

    def __init__(self, shape: TransformerShape):
        super().__init__()
        d = shape.d_model
        self.shape = shape
        self.query, self.key, self.value, self.output = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        heads, hd = self.shape.heads, self.shape.head_dim
        q = self.query(x).reshape(n, t, heads, hd).permute(0, 2, 1, 3)
        k = self.key(x).reshape(n, t, heads, hd).permute(0, 2, 3, 1)
        v = self.value(x).reshape(n, t, heads, hd).permute(0, 2, 1, 3)
        p = torch.softmax((q @ k) * self.shape.scale, dim=-1)
        return self.output((p @ v).permute(0, 2, 1, 3).reshape(n, t, d))


class FeedForward(nn.Module):
    """fc2(gelu(fc1 x)), GELU in its erf form."""

    def __init__(self, shape: TransformerShape):
        super().__init__()
        self.fc1 = nn.Linear(shape.d_model, shape.ffn)
        self.fc2 = nn.Linear(shape.ffn, shape.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Pre-norm: x + attention(norm1 x), then x + ffn(norm2 x)."""

    def __init__(self, shape: TransformerShape):
        super().__init__()
        self.norm1 = nn.LayerNorm(shape.d_model, eps=shape.epsilon)
        self.attention = Attention(shape)
        self.norm2 = nn.LayerNorm(shape.d_model, eps=shape.epsilon)
        self.ffn = FeedForward(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class DigitsTransformer(nn.Module):
    """See :class:`~emulator.models.digits_graphs.TransformerShape`; blocks are the
    submodules ``block0``, ``block1``, ..."""

    def __init__(self, shape: TransformerShape):
        super().__init__()
        self.shape = shape
        self.embed = nn.Linear(SIDE, shape.d_model)
        self.position = PositionEmbedding(SIDE, shape.d_model)
        for i in range(shape.layers):
            self.add_module(f"block{i}", EncoderBlock(shape))
        self.norm = nn.LayerNorm(shape.d_model, eps=shape.epsilon)
        self.classifier = nn.Linear(shape.d_model, shape.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.position(self.embed(x.reshape(-1, SIDE, SIDE)))
        for i in range(self.shape.layers):
            h = getattr(self, f"block{i}")(h)
        return self.classifier(self.norm(h).mean(dim=1))


MODULES = {CnnShape: DigitsCNN, TransformerShape: DigitsTransformer}
"""The module class of each shape."""


def module_for(shape: "CnnShape | TransformerShape") -> nn.Module:
    """A fresh module of ``shape`` (initialised from torch's global RNG)."""
    return MODULES[type(shape)](shape)


def relu_mlp(widths) -> nn.Sequential:
    """Linear layers ``lin1``, ``lin2``, ... of widths[0] -> widths[1] -> ... with bias, a
    ReLU (``act1``, ...) after every one but the last (logits), as the authors of arXiv
    2503.15568 build theirs (initialised from torch's global RNG)."""
    modules: "OrderedDict[str, nn.Module]" = OrderedDict()
    for k, (n, m) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        modules[f"lin{k}"] = nn.Linear(n, m)
        if k < len(widths) - 1:
            modules[f"act{k}"] = nn.ReLU()
    return nn.Sequential(modules)
