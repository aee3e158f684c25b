"""The cost model of mixed-precision inference (docs/method.md#the-cost-model).

One multiply-add step in format F costs c(F). An inner product of length n under an
accumulation spec costs (:func:`inner_product_cost`)

    n c(F)                          every order but promote,
    n c(F) + ceil(n / B) c(G)       promote:B:G (each block sum added into G),

F the accumulator format. A tensor-core spec (``tensorcore:``, ``blockfma:``) is charged
by its operand format, since a tensor core's throughput scales with it (fp8 runs twice
as many multiply-adds as fp16 per cycle), plus each fp32 promotion:

    n c(INPUT) + ceil(n / N) c(fp32)   tensorcore:ARCH:INPUT[:promote=N]

(INPUT the element format of an MX input, the block scales not charged; a ``blockfma``
without ``in=`` is charged by its output format). A product rounded to a product format P is part of its
multiply-add step and is not charged apart (an exact product, i.e. a fused multiply-add,
is charged the same c(F)); activations, storage rounding and the bias addition are not
charged. A layer's work is the number of inner products done under each accumulation
spec (one per component, sample and pass), plus the single operations of a certified
estimate (``analysis.estimates``, c(F) each in its format F), so a run costs
sum_k (sum_acc count_{k,acc} cost(acc, n_k) + sum_F steps_{k,F} c(F)), and its relative cost is that divided by the
same network run in uniform high precision: N sum_k m_k cost(H, n_k).

Cost models (``COST_MODELS``, or a JSON table): ``bits`` — c(F) = storage bits (fp8 8,
fp16/bf16 16, tf32 19, fp32 32, fp64 64); ``quadratic`` — c(F) = p^2 (multiplier area);
a path to a JSON object ``{"fp16": 1.0, "e4m3": 0.25, ...}`` giving c(F) by format name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from emulator.accumulation import Accumulation, parse_accumulation
from emulator.errors import MixaccError
from emulator.formats import Format, get_format
from emulator.registry import Registry

__all__ = [
    "CostError", "CostModel", "COST_MODELS", "get_cost_model", "cost_model_names", "accumulation_format",
    "inner_product_cost", "LayerWork", "Cost", "run_cost",
]


class CostError(MixaccError):
    """A cost model, cost table or costed computation that cannot be used."""


@dataclass(frozen=True)
class CostModel:
    """c(F), the cost of one multiply-accumulate step in format F (arbitrary units)."""

    name: str
    description: str
    unit_cost: Callable[[Format], float] = field(repr=False)

    def __call__(self, fmt: "Format | str") -> float:
        return float(self.unit_cost(get_format(fmt)))


COST_MODELS: Registry[CostModel] = Registry("cost model")
for _row in (
    CostModel("bits", "c(F) = storage bits of F (fp8 8, fp16/bf16 16, tf32 19, fp32 32, fp64 64)", lambda f: f.bits),
    CostModel("quadratic", "c(F) = p^2, p the precision of F (multiplier area)", lambda f: f.p**2),
):
    COST_MODELS.add(_row.name, _row)


def cost_model_names() -> list[str]:
    return COST_MODELS.names()


def _table_model(path: Path) -> CostModel:
    """A cost model read from a JSON object mapping format names to positive costs."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CostError(f"Cost table {path}: not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    if not isinstance(table, dict) or not table:
        raise CostError(f"Cost table {path}: must be a non-empty JSON object mapping format names to costs.")
    costs: dict[str, float] = {}
    for name, value in table.items():
        try:
            fmt = get_format(name)
        except MixaccError as exc:
            raise CostError(f"Cost table {path}: {exc}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise CostError(f"Cost table {path}: cost of {name!r} == {value!r}, must be a finite number > 0.")
        costs[fmt.name] = float(value)

    def unit_cost(fmt: Format) -> float:
        try:
            return costs[fmt.name]
        except KeyError:
            raise CostError(
                f"Cost table {path} has no entry for format {fmt.name!r}. Entries: {', '.join(costs)}."
            ) from None

    return CostModel(f"table:{path}", f"c(F) from the table {path}", unit_cost)


def get_cost_model(spec: "str | CostModel | Path") -> CostModel:
    """The cost model ``spec``: a registered name (``bits``, ``quadratic``), a path to a
    JSON table, or a row."""
    if isinstance(spec, CostModel):
        return spec
    if isinstance(spec, str) and spec in COST_MODELS:
        return COST_MODELS.get(spec)
    path = Path(spec) if isinstance(spec, (str, Path)) else None
    if path is not None and (path.suffix == ".json" or path.exists()):
        if not path.is_file():
            raise CostError(f"Cost table {path} does not exist (or is not a file).")
        return _table_model(path)
    return COST_MODELS.get(spec, extra_possible=("PATH.json (a table of costs by format name)",))


def accumulation_format(acc: "Accumulation | str") -> Format:
    """The format whose cost an accumulation is charged: its accumulator format F (a
    tensor core's operand format, see the module docstring)."""
    acc = parse_accumulation(acc)
    if acc.is_exact:
        raise CostError(f"Accumulation {acc.spec!r} is exact and has no cost; use a format (e.g. fp16, fp32).")
    hw = acc.hardware
    if hw is not None and hw.inputs is not None:
        return getattr(hw.inputs, "element", hw.inputs)
    return acc.fmt


def inner_product_cost(acc: "Accumulation | str", n: int, model: "CostModel | str" = "bits") -> float:
    """Cost of one inner product of length ``n`` under ``acc``: n c(F), plus
    ceil(n / B) c(G) for promote:B:G, ceil(n / N) c(fp32) for a tensor core's promote=N
    (see the module docstring)."""
    acc = parse_accumulation(acc)
    model = get_cost_model(model)
    cost = n * model(accumulation_format(acc))
    if acc.order == "promote":
        cost += -(-n // acc.block) * model(acc.wide)
    elif acc.hardware is not None and acc.hardware.promote:
        cost += -(-n // acc.hardware.promote) * model(acc.wide)
    return float(cost)


@dataclass(frozen=True)
class LayerWork:
    """The inner products one layer computed: ``counts[acc]`` inner products of length
    ``n`` under accumulation ``acc`` (summed over samples, components and passes), and
    ``steps[F]`` single operations in format F (a certified estimate's arithmetic)."""

    n: int
    counts: Mapping[Accumulation, int]
    steps: Mapping[str, int] = field(default_factory=dict)

    def cost(self, model: CostModel) -> float:
        """sum_acc counts[acc] · cost(acc, n) + sum_F steps[F] · c(F)."""
        return float(sum(count * inner_product_cost(acc, self.n, model) for acc, count in self.counts.items())
                     + sum(count * model(fmt) for fmt, count in self.steps.items()))


@dataclass(frozen=True)
class Cost:
    """Cost of a run (``total``), of the same run in uniform high precision
    (``reference``), and their ratio ``relative``; ``layers`` holds each layer's cost."""

    model: str
    total: float
    reference: float
    layers: tuple[float, ...]

    @property
    def relative(self) -> float:
        return self.total / self.reference if self.reference else float("nan")

    def describe(self) -> dict:
        return {"model": self.model, "total": self.total, "reference": self.reference, "relative": self.relative,
                "layers": list(self.layers)}


def run_cost(work: "list[LayerWork]", components: "list[int]", samples: int,
             high: "Accumulation | str | Sequence[Accumulation | str]", model: "CostModel | str" = "bits") -> Cost:
    """Cost of the per-layer ``work`` of a run on ``samples`` inputs, against uniform
    ``high`` (one format, or one per layer): reference = samples · sum_k m_k
    cost(high_k, n_k), m_k = ``components[k]``."""
    model = get_cost_model(model)
    if len(work) != len(components):
        raise CostError(f"{len(work)} layers of work but {len(components)} component counts.")
    highs = list(high) if isinstance(high, (list, tuple)) else [high] * len(work)
    layers = tuple(w.cost(model) for w in work)
    reference = float(sum(samples * m * inner_product_cost(h, w.n, model) for w, m, h in zip(work, components, highs)))
    return Cost(model.name, float(sum(layers)), reference, layers)
