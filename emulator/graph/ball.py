"""The tensor type of the exact arithmetic's fast path (docs/method.md#the-exact-arithmetic):
a :class:`Ball` holds, elementwise, a double-double centre ``hi + lo`` (normalised:
hi = RN(hi + lo)) and a radius ``rad`` such that the exact value lies in
[hi + lo - rad, hi + lo + rad]. ``lo`` and ``rad`` are None where they are zero (an
exact float64 tensor: constants, inputs, and what only moves them).

Infinities: a centre +-inf with radius 0 is that infinity exactly (a -inf attention mask,
exp(+inf)); radius inf means the value is not known (an overflow, a NaN, a ball that
reaches a pole), and its ``hi`` is then the IEEE float64 result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _exactdot as K
from ..reference import _meets
from ._ballkernels import INFLATE

__all__ = ["Ball", "ExactValue"]


class Ball:
    """An enclosure tensor: exact value within ``rad`` of ``hi + lo`` (see the module
    docstring). Shape functions apply to every part."""

    __slots__ = ("hi", "lo", "rad")

    def __init__(self, hi, lo=None, rad=None):
        self.hi = np.asarray(hi, dtype=np.float64)
        self.lo = None if lo is None else np.asarray(lo, dtype=np.float64)
        self.rad = None if rad is None else np.asarray(rad, dtype=np.float64)

    def __repr__(self) -> str:
        return f"Ball(shape={self.shape}, exact={self.exact})"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.hi.shape

    @property
    def size(self) -> int:
        return self.hi.size

    @property
    def exact(self) -> bool:
        """Every element is its float64 ``hi`` exactly."""
        return self.lo is None and self.rad is None

    def map(self, fn) -> "Ball":
        return Ball(fn(self.hi), None if self.lo is None else fn(self.lo), None if self.rad is None else fn(self.rad))

    @staticmethod
    def join(tensors: list, fn) -> "Ball":
        """``fn`` on the lists of hi, lo and rad parts (zeros where a tensor has none)."""
        parts = []
        for attr in ("hi", "lo", "rad"):
            arrays = [getattr(t, attr) for t in tensors]
            if all(a is None for a in arrays):
                parts.append(None)
            else:
                parts.append(fn([np.zeros(t.shape) if a is None else a for a, t in zip(arrays, tensors)]))
        return Ball(*parts)

    def padded(self, pad_width, mode: str, value: float) -> "Ball":
        """Constant padding adds exact ``value`` cells; reflect / edge copy cells with their parts."""
        if mode == "constant":
            return Ball(np.pad(self.hi, pad_width, mode="constant", constant_values=value),
                        *(None if p is None else np.pad(p, pad_width, mode="constant") for p in (self.lo, self.rad)))
        return self.map(lambda p: np.pad(p, pad_width, mode=mode))

    def parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hi, lo, rad) with zeros for the missing parts."""
        zeros = None if self.lo is not None and self.rad is not None else np.zeros(self.shape)
        return self.hi, zeros if self.lo is None else self.lo, zeros if self.rad is None else self.rad

    def value(self) -> np.ndarray:
        """The float64 nearest the centre (``hi``)."""
        return np.array(self.hi)

    def radius(self) -> np.ndarray:
        """A bound >= |value - exact|: |lo| + rad rounded upward (0 for an exact
        infinity, inf where the value is not known)."""
        _, lo, rad = self.parts()
        with np.errstate(invalid="ignore", over="ignore"):
            out = (np.abs(lo) + rad) * INFLATE
        return np.where(np.isnan(self.hi), np.inf, out)

    def rounded(self) -> np.ndarray:
        """True where ``value`` is certainly RN(exact): the ball lies strictly inside
        the rounding interval of ``hi`` (decided for 2^-1000 <= |hi| <= 2^1000, and for
        exact float64 values)."""
        hi, lo, rad = self.parts()
        ok = np.empty(self.size, dtype=np.bool_)
        flat = [np.require(p, np.float64, ("C", "W")).reshape(-1) for p in (hi, lo, rad)]
        K.rn_certified(*flat, ok)
        return ok.reshape(self.shape) | ((lo == 0) & (rad == 0) & ~np.isnan(hi))


@dataclass
class ExactValue:
    """One tensor of an exact pass: ``value`` (float64 nearest the carried value),
    ``radius`` >= |value - exact| (upward float64), ``rounded`` (value certainly is the
    correctly rounded exact value)."""

    value: np.ndarray
    radius: np.ndarray
    rounded: np.ndarray

    def meets(self, tol: float) -> np.ndarray:
        """radius <= tol |exact| for every exact value within radius of ``value`` (or
        radius <= 2^-1060, values near or below the float64 underflow threshold)."""
        return _meets(self.value, self.radius, tol)

    @classmethod
    def of(cls, ball: Ball) -> "ExactValue":
        return cls(ball.value(), ball.radius(), ball.rounded())
