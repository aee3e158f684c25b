"""Published configurations of the recompute policy, as data (``mixacc recompute
--preset NAME``; the committed report of the same model uses the same row)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.registry import Registry

__all__ = ["Preset", "PRESETS"]


@dataclass(frozen=True)
class Preset:
    """A published configuration: model, weights/biases storage, arithmetic, taus, criteria."""

    name: str
    model: str
    weights: str
    low: str
    high: str
    taus: tuple[float, ...]
    criteria: tuple[str, ...]
    note: str


PRESETS: Registry[Preset] = Registry("preset")
PRESETS.add("paper", Preset(
    "paper", "paper-mlp-mnist", "e4m3:saturate", "e4m3:recursive:bias=last:saturate", "fp16:recursive:bias=last",
    (1.0, 0.5, 0.3, 0.1), ("kappa-prime",),
    "preset 'paper' (El Arar, Filip, Mary, Riccietti): their network (784 -> 784 -> 128 -> 10 ReLU, trained as their "
    "script does) on real MNIST digits (mnist5k); weights and biases rounded to e4m3 (max 240, saturating), "
    "low e4m3 / high fp16 accumulation, exact products, recursive, bias last. It follows the analysis for the "
    "identity output layer (kappa_sigma = 1, so negative logits can be recomputed); the released code used the "
    "ReLU indicator there and never recomputed negative logits.",
))
