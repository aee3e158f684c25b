"""Named configurations of the recompute policy (published or deployment questions), as data (``mixacc recompute
--preset NAME``; the committed report of the same model uses the same row)."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.registry import Registry
from emulator.storage import parse_storage

__all__ = ["Preset", "PRESETS"]


@dataclass(frozen=True)
class Preset:
    """A named configuration: model, weights/biases storage (``weights``, rounded once
    before anything else) or storage of everything (``storage``: weights, biases, input and
    every layer output; with ``store_sums``, on a graph, the outputs of its sum operators
    too), arithmetic, taus, criteria, and the formats its report validates (``accs``;
    default low and high)."""

    name: str
    model: str
    weights: "str | None"
    low: str
    high: str
    taus: tuple[float, ...]
    criteria: tuple[str, ...]
    note: str
    storage: "str | None" = None
    store_sums: bool = False
    accs: tuple[str, ...] = ()

    def storage_for(self, graph: bool) -> "str | None":
        """The storage spec on a graph (``graph``) or an MLP: ``storage``, with ``:sums`` on
        a graph when the preset stores sums (an MLP layer applies its activation to the
        accumulator, its sums are never stored)."""
        if not (graph and self.store_sums and self.storage):
            return self.storage
        return parse_storage(self.storage).storing_sums().spec

    @property
    def validated(self) -> tuple[str, ...]:
        """The formats a report of the preset validates: ``accs``, else low and high."""
        return self.accs or (self.low, self.high)


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

_H100_FP8 = "tensorcore:h100:fp8-e4m3fn"
_H100_NOTE = ("preset '{name}': the deployment question 'fp8 weights and activations on H100': storage fp8-e4m3fn for "
              "weights, biases, input and every layer output; low {low} (Hopper wgmma, fp8 inputs, the accumulator's "
              "truncated alignment), high {high}. Tensor-core operands must be fp8, so the storage is part of the "
              "preset; the model's widths (256) exceed the promotion interval 128. On a graph the outputs of sum "
              "operators are stored in fp8 too (fp8-e4m3fn:sums: a GEMM writes its accumulator to memory), and the "
              "plain sums (softmax denominators, normalisation statistics, reductions) run in fp32 on the CUDA cores.")
for _name, _high in (("h100-fp8", f"{_H100_FP8}:promote=128"), ("h100-fp8-bf16", "bf16")):
    PRESETS.add(_name, Preset(_name, "mnist1d-tanh", None, _H100_FP8, _high, (10.0, 3.0, 1.0, 0.3), ("kappa",),
                              _H100_NOTE.format(name=_name, low=_H100_FP8, high=_high), storage="fp8-e4m3fn",
                              store_sums=True, accs=(_H100_FP8, f"{_H100_FP8}:promote=128", "bf16")))
