"""IEEE float32 arithmetic for graphs (docs/method.md#graphs): every operator of any graph
run in float32 with numpy, as hardware runs a float32 model: constants and inputs rounded
to float32 once, every elementwise function computed on float32 arrays, every sum a
float32 matmul (BLAS), nothing rounded again (``store`` is the identity). It is the speed
baseline of the hardware format and an independent float32 evaluation, not an emulation:
its sums are in whatever order and with whatever blocking the BLAS uses.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ..activations import get_activation
from .arithmetic import Arithmetic, Site, contraction_shapes
from .math import Float64Math

__all__ = ["as_float32", "Float32Math", "FLOAT32", "Float32"]

_MAX32 = float(np.finfo(np.float32).max)


def as_float32(array) -> np.ndarray:
    """``array`` rounded to the nearest float32; finite values beyond float32's range
    become +-max (a finite constant, such as a -1.8e308 mask fill, stays finite), inf and
    NaN stay themselves."""
    a = np.asarray(array)
    if a.dtype == np.float32:
        return a
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        big = np.isfinite(a) & (np.abs(a) > _MAX32)
    if big.any():
        a = np.where(big, np.copysign(_MAX32, a), a)
    with np.errstate(over="ignore"):
        return a.astype(np.float32)


def _gelu32(y: np.ndarray) -> np.ndarray:
    """y/2 (1 + erf(y / sqrt 2)) in float32, the formula float32 kernels evaluate."""
    return np.float32(0.5) * y * (np.float32(1.0) + special.erf(y * np.float32(np.sqrt(0.5))))


_FORMULAS = {"gelu": _gelu32}
"""Activations whose float64 row does not stay in float32 (its accurate form mixes in
float64 constants), as the plain float32 formula."""


class Float32Math(Float64Math):
    """The ``math`` namespace on float32 arrays: numpy keeps float32 operands in float32
    (Python scalars do not promote them)."""

    name = "float32"

    @staticmethod
    def reciprocal(a):
        with np.errstate(divide="ignore"):
            return np.reciprocal(a)

    @staticmethod
    def activation(name: str, y):
        """sigma(y) in float32: the registered row's numpy form on the float32 array, or
        the float32 formula of :data:`_FORMULAS`; a row that computes in float64 anyway
        (``sympy:`` rows) is rounded to float32."""
        formula = _FORMULAS.get(name)
        out = formula(y) if formula is not None else get_activation(name).f(y)
        return out if out.dtype == np.float32 else as_float32(out)


FLOAT32 = Float32Math()


class Float32(Arithmetic):
    """Every operator in float32 (see the module docstring). Read-only constants (a
    graph's initialisers) are rounded once per instance: reuse an instance to time the
    forward pass without that conversion."""

    name = "float32"

    def __init__(self):
        super().__init__(None)
        self.math = FLOAT32
        self._constants: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def lift(self, array: np.ndarray):
        if array.flags.writeable:
            return as_float32(array)
        hit = self._constants.get(id(array))
        if hit is None or hit[0] is not array:  # the original is held, so its id is not reused
            hit = self._constants[id(array)] = (array, as_float32(array))
        return hit[1]

    def store(self, tensor):
        return tensor

    def contract(self, site: Site, x, w, bias=None, *, batched: bool = False):
        """y = x w^T (+ b) as one float32 matmul (stacked over the groups when batched)."""
        x, w = as_float32(x), as_float32(w)
        bias = None if bias is None else as_float32(bias)
        x, w, bias, lead = contraction_shapes(self.math, site, x, w, bias, batched)
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.matmul(x, np.swapaxes(w, -1, -2))
            if bias is not None:
                y = y + bias
        self.overflow[site.name] = ~np.isfinite(y).reshape(*lead, y.shape[-1])
        return y.reshape(*lead, y.shape[-1])

    def divide(self, site: Site, total, count):
        """total / count in float32."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.divide(total, np.asarray(count, dtype=np.float32))
