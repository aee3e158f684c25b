"""Operators as data (ONNX semantics, opsets 13 to 21): one :class:`Op` row per operator
type, registered in :data:`OPS` by the family modules of this package.

A row's ``evaluate(ctx, args)`` computes the node's outputs from its inputs (``None`` for
omitted optional inputs) with the context's ``math`` namespace and its accumulation sites
(``ctx.contract``, ``ctx.sum``, ``ctx.mean``), so the same code runs in every arithmetic.
``sums`` names the roles of its accumulation sites (``""`` is the node's own contraction);
``raw`` marks operators whose outputs are sums, left in the accumulator format rather than
rounded to the storage format; ``check(node)`` refuses, when a graph is built, attribute
values the row does not implement (Gemm alpha != 1, an Einsum that is not a matrix
product, ...), with one line naming the op type and the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ...registry import Registry

__all__ = ["Op", "OPS", "FAMILIES", "register"]

FAMILIES = ("contraction", "reduction", "normalization", "pooling", "activation", "elementwise", "shape")


@dataclass(frozen=True)
class Op:
    """An operator type: how it evaluates, which family it belongs to, the roles of its
    accumulation sites and whether its outputs are sums (``raw``)."""

    name: str
    family: str
    evaluate: Callable = field(repr=False)
    sums: tuple[str, ...] = ()
    raw: bool = False
    description: str = ""
    check: "Callable | None" = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"Op {self.name!r}: family {self.family!r} is not one of {', '.join(FAMILIES)}.")

    def site_roles(self, node) -> tuple[str, ...]:
        """The roles of the sites a node of this type creates."""
        return self.sums

    def validate(self, node) -> None:
        """Refuse (``ModelFileError``) a node whose attributes this row does not implement."""
        if self.check is not None:
            self.check(node)


OPS: Registry[Op] = Registry("operator")


def register(name: str, family: str, *, sums: tuple[str, ...] = (), raw: bool = False, description: str = "",
             check: "Callable | None" = None):
    """Decorator: register ``evaluate(ctx, args) -> list`` as operator ``name`` (``check``:
    the static attribute check, see :meth:`Op.validate`)."""

    def wrap(fn: Callable) -> Callable:
        OPS.add(name, Op(name, family, fn, sums, raw, description or (fn.__doc__ or "").strip().splitlines()[0],
                         check))
        return fn

    return wrap


from . import contraction, elementwise, normalization, shape  # noqa: E402,F401  (they register the rows)
