"""Accumulation models: how y = W x + b is summed, and in which arithmetic.

An :class:`Accumulation` names the accumulator format F (or ``exact``), the summation
order, the product format, the rounding mode and the bias placement — the semantics of
docs/method.md#accumulation-models. Compact strings (the CLI's ``--acc``)::

    fp16                      recursive, exact products, nearest, bias first
    bf16:pairwise             balanced binary tree, bias added last
    fp8-e4m3fn:blocked:32     recursive blocks of 32, block sums accumulated from the bias
    fp16:fused:4              4 products + running sum added exactly, rounded once
    e4m3:promote:128:fp32     blocks of 128 in F, each block sum added into an fp32 accumulator
    exact | exact:200         the exact reference, mpmath working precision 200 bits
    tensorcore:h100:fp8-e4m3fn:promote=128   a GPU tensor core (``emulator.tensorcore``)
    blockfma:16:24:fp32       its model with free parameters (16 products per step, F = 24)

followed by optional ``key=value`` items: ``products=fp16|exact``, ``rounding=...``,
``bias=first|last``, ``seed=N``, and the flags ``saturate`` and ``ftz``
(e.g. ``fp16:recursive:products=fp16:rounding=stochastic:seed=3``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FormatSpecError
from .formats import Format, get_format
from .registry import Registry
from .rounding import RoundingMode, get_rounding
from .tensorcore import HARDWARE_KINDS, BlockFMA, parse_blockfma

__all__ = ["Order", "ORDERS", "Accumulation", "parse_accumulation", "EXACT_DEFAULT_PRECISION"]

EXACT_DEFAULT_PRECISION = 113


@dataclass(frozen=True)
class Order:
    """A summation order: its name, how many integer parameters it takes and whether it
    names a second (wide) format."""

    name: str
    params: tuple[str, ...]
    wide_format: bool
    description: str


ORDERS: Registry[Order] = Registry("accumulation order")
for _o in (
    Order("recursive", (), False, "s_j = round(s_{j-1} + p_j) in index order, from the bias"),
    Order("pairwise", (), False, "balanced binary tree over the products, bias added last"),
    Order("blocked", ("B",), False, "recursive sums of blocks of B, block sums accumulated from the bias"),
    Order("fused", ("K",), False, "K products and the running sum added exactly, rounded once"),
    Order("promote", ("B",), True, "blocks of B summed in F, each block sum added into the wide format G"),
):
    ORDERS.add(_o.name, _o)

_BIAS = ("first", "last")


@dataclass(frozen=True)
class Accumulation:
    """An accumulation model (see module docstring). ``fmt`` is a format (name or row) or
    ``"exact"``; ``order`` is an order name, or carries its parameters
    (``"blocked:32"``, ``"promote:128:fp32"``), which are then held in ``block`` (B or
    K) and ``wide`` (G); ``products`` is ``"exact"`` or a format.

    Rows are canonical, so equal models compare equal and ``dataclasses.replace`` works:
    ``pairwise`` always adds the bias last (``bias="last"``); ``seed`` is kept only with
    stochastic rounding (None otherwise); an exact row keeps only its ``precision`` and
    an emulated one the default precision.

    A block-FMA row (``tensorcore:...``, ``blockfma:...``) carries its model in
    ``hardware`` and mirrors it in the other fields: ``fmt`` the tensor core's output
    format, ``order`` "tensorcore" or "blockfma", ``rounding`` its output rounding,
    ``block`` the products per step, ``wide`` fp32 with promotion."""

    fmt: "Format | str"
    order: str = "recursive"
    products: "Format | str" = "exact"
    rounding: "RoundingMode | str" = "nearest"
    saturate: bool = False
    subnormals: bool = True
    bias: str = "first"
    seed: int | None = None
    precision: int = EXACT_DEFAULT_PRECISION
    block: int = 0
    wide: "Format | str | None" = None
    hardware: "BlockFMA | None" = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.hardware is not None:
            self._set_hardware()
            return
        if isinstance(self.fmt, str) and self.fmt.strip().split(":")[0] == "exact":
            if self.precision < 53:
                raise FormatSpecError(f"exact precision == {self.precision}, must be >= 53 bits.")
            for name, value in (("fmt", "exact"), ("order", "recursive"), ("products", "exact"),
                                ("rounding", get_rounding("nearest")), ("saturate", False), ("subnormals", True),
                                ("bias", "first"), ("seed", None), ("block", 0), ("wide", None)):
                set_(self, name, value)
            return
        set_(self, "fmt", get_format(self.fmt))
        set_(self, "products", "exact" if self.products in (None, "exact") else get_format(self.products))
        set_(self, "rounding", get_rounding(self.rounding))
        set_(self, "precision", EXACT_DEFAULT_PRECISION)
        if self.bias not in _BIAS:
            raise FormatSpecError(f"bias == {self.bias!r}, must be one of {', '.join(_BIAS)}.")
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
                raise FormatSpecError(f"seed == {self.seed!r}, must be an integer or None.")
            set_(self, "seed", int(self.seed) if self.rounding.name == "stochastic" else None)
        self._set_order()
        if self.order == "pairwise":
            set_(self, "bias", "last")

    def _set_hardware(self) -> None:
        """Check the fields against ``hardware`` and normalise them (a block-FMA row has
        exact products, no saturation or flushing, the bias first)."""
        hw = self.hardware
        if not isinstance(hw, BlockFMA):
            raise FormatSpecError(f"hardware == {hw!r}, must be a BlockFMA (parse a tensorcore: or blockfma: spec).")
        want = {"fmt": hw.out, "order": hw.kind, "products": "exact", "rounding": get_rounding(hw.rounding),
                "saturate": False, "subnormals": True, "bias": "first", "block": hw.step,
                "wide": get_format("fp32") if hw.promote else None}
        got = {"fmt": get_format(self.fmt), "order": self.order,
               "products": "exact" if self.products in (None, "exact") else get_format(self.products),
               "rounding": get_rounding(self.rounding), "saturate": self.saturate, "subnormals": self.subnormals,
               "bias": self.bias, "block": self.block or hw.step,
               "wide": None if self.wide is None else get_format(self.wide)}
        for name, value in want.items():
            if got[name] != value:
                raise FormatSpecError(f"{hw.spec} fixes {name} == {getattr(value, 'name', value)!r}, got "
                                      f"{getattr(got[name], 'name', got[name])!r}.")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "seed", None)
        object.__setattr__(self, "precision", EXACT_DEFAULT_PRECISION)

    def _set_order(self) -> None:
        """Split ``order`` into its name, ``block`` and ``wide``, checking what the
        order takes."""
        set_ = object.__setattr__
        name, *args = str(self.order).split(":")
        row = ORDERS.get(name)
        usage = ":".join([name, *row.params, *(["G"] if row.wide_format else [])])
        block, wide = self.block, self.wide
        if args:
            if len(args) != len(row.params) + row.wide_format:
                raise FormatSpecError(f"Order {self.order!r} takes the form {usage}.")
            if row.params:
                try:
                    block = int(args[0])
                except ValueError:
                    raise FormatSpecError(
                        f"{row.params[0]} == {args[0]!r} in {self.order!r}, must be an integer >= 1.") from None
            if row.wide_format:
                wide = args[-1]
            if (self.block and self.block != block) or (self.wide is not None and get_format(self.wide) != get_format(wide)):
                raise FormatSpecError(f"Order {self.order!r} disagrees with block={self.block}, wide={self.wide}.")
        if row.params:
            if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
                raise FormatSpecError(f"{row.params[0]} == {block} in {self.order!r}, must be an integer >= 1 "
                                      f"(the order takes the form {usage}).")
        elif block:
            raise FormatSpecError(f"Order {name!r} takes no block size (got {block}).")
        if row.wide_format and wide is None:
            raise FormatSpecError(f"Order {self.order!r} takes the form {usage}.")
        if not row.wide_format and wide is not None:
            raise FormatSpecError(f"Order {name!r} takes no wide format (got {wide}).")
        set_(self, "order", name)
        set_(self, "block", int(block))
        set_(self, "wide", None if wide is None else get_format(wide))

    @property
    def is_exact(self) -> bool:
        return self.fmt == "exact"

    @property
    def order_spec(self) -> str:
        """The order with its parameters, e.g. ``blocked:32`` or ``promote:128:fp32``."""
        if self.hardware is not None:
            return self.hardware.spec
        parts = [self.order]
        if self.block:
            parts.append(str(self.block))
        if self.wide is not None:
            parts.append(self.wide.name)
        return ":".join(parts)

    @property
    def spec(self) -> str:
        """The canonical compact string; ``parse_accumulation(a.spec) == a``."""
        if self.is_exact:
            return "exact" if self.precision == EXACT_DEFAULT_PRECISION else f"exact:{self.precision}"
        if self.hardware is not None:
            return self.hardware.spec
        items = [self.fmt.name, self.order_spec]
        if self.products != "exact":
            items.append(f"products={self.products.name}")
        if self.rounding.name != "nearest":
            items.append(f"rounding={self.rounding.name}")
        if self.bias != "first" and self.order != "pairwise":
            items.append(f"bias={self.bias}")
        if self.seed is not None:
            items.append(f"seed={self.seed}")
        if self.saturate:
            items.append("saturate")
        if not self.subnormals:
            items.append("ftz")
        return ":".join(items)

    def describe(self) -> dict:
        """JSON-ready description of every choice."""
        if self.is_exact:
            return {"spec": self.spec, "format": "exact", "precision": self.precision}
        return {
            "spec": self.spec, "format": self.fmt.name, "order": self.order, "block": self.block or None,
            "wide": self.wide.name if self.wide else None,
            "products": self.products if self.products == "exact" else self.products.name,
            "rounding": self.rounding.name, "saturate": self.saturate, "subnormals": self.subnormals,
            "bias": self.bias, "seed": self.seed, "u": self.fmt.u,
            **({"hardware": self.hardware.describe()} if self.hardware is not None else {}),
        }


_FLAGS = {"saturate": ("saturate", True), "ftz": ("subnormals", False)}
_KEYS = ("products", "rounding", "bias", "seed")


def parse_accumulation(spec: "str | Accumulation") -> Accumulation:
    """An :class:`Accumulation` from its compact string (or returned as is)."""
    if isinstance(spec, Accumulation):
        return spec
    if not isinstance(spec, str):
        raise FormatSpecError(f"Accumulation spec must be a string or an Accumulation, got {type(spec).__name__} {spec!r}.")
    if not spec.strip():
        raise FormatSpecError(f"Accumulation spec {spec!r} is empty; expected e.g. fp16, bf16:pairwise, exact.")
    head, *rest = [t.strip() for t in spec.strip().split(":")]
    if head == "exact":
        if len(rest) > 1 or (rest and not rest[0].isdigit()):
            raise FormatSpecError(f"Accumulation spec {spec!r}: exact takes the form exact or exact:BITS.")
        return Accumulation("exact", precision=int(rest[0]) if rest else EXACT_DEFAULT_PRECISION)
    if head in HARDWARE_KINDS:
        hw = parse_blockfma(spec)
        return Accumulation(hw.out, hw.kind, rounding=hw.rounding, block=hw.step,
                            wide="fp32" if hw.promote else None, hardware=hw)
    order_tokens, kwargs = [], {}
    for tok in rest:
        if "=" in tok:
            key, _, value = tok.partition("=")
            if key not in _KEYS:
                raise FormatSpecError(f"Unknown option {key!r} in {spec!r}. Possible options are: {', '.join(_KEYS)}, saturate, ftz.")
            if key == "seed":
                try:
                    value = int(value)
                except ValueError:
                    raise FormatSpecError(f"seed == {value!r} in {spec!r}, must be an integer.") from None
            kwargs[key] = value
        elif tok in _FLAGS:
            kwargs[_FLAGS[tok][0]] = _FLAGS[tok][1]
        else:
            order_tokens.append(tok)
    return Accumulation(head, order=":".join(order_tokens) or "recursive", **kwargs)
