"""Binary floating-point formats: precision p (implicit bit included), exponent range
[emin, emax], and which special values exist.

A value of a format is ``(-1)^s * m * 2^(e - p + 1)`` with integer ``0 <= m < 2^p`` and
``emin <= e <= emax``; ``u = 2^-p`` is the unit roundoff of round-to-nearest. Every
emulated value is held in float64, which contains every format here (p <= 53,
emin >= -1022, emax <= 1023).

Special values (``specials``):

* ``ieee``   — the top exponent field is reserved for inf and NaN (fp16, bf16, e5m2, eXmY);
* ``fn``     — no inf, one NaN pattern (all ones): the top binade loses its largest
  significand (OCP fp8-e4m3fn, max 448);
* ``finite`` — neither inf nor NaN: overflow always saturates (OCP fp6/fp4 elements).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import FormatSpecError
from .registry import Registry

__all__ = ["Format", "get_format", "format_names", "FORMATS"]

SPECIALS = ("ieee", "fn", "finite")


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: ``ebits`` exponent bits, ``mbits`` stored
    significand bits (p = mbits + 1), exponent ``bias`` and ``specials``."""

    name: str
    ebits: int
    mbits: int
    bias: int
    specials: str = "ieee"

    def __post_init__(self) -> None:
        if self.specials not in SPECIALS:
            raise FormatSpecError(f"specials == {self.specials!r}, must be one of {', '.join(SPECIALS)}.")
        if not 1 <= self.mbits <= 52:
            raise FormatSpecError(f"{self.name}: mbits == {self.mbits}, must be in 1..52 (p <= 53, held in float64).")
        if not 1 <= self.ebits <= 11:
            raise FormatSpecError(f"{self.name}: ebits == {self.ebits}, must be in 1..11 (held in float64).")
        if self.emax < self.emin or self.emin < -1022 or self.emax > 1023:
            raise FormatSpecError(
                f"{self.name}: exponent range [{self.emin}, {self.emax}] is empty or exceeds float64's [-1022, 1023]."
            )

    @property
    def p(self) -> int:
        """Precision in bits, implicit bit included."""
        return self.mbits + 1

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number, 1 - bias."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite binade."""
        top = 2**self.ebits - 1
        return (top - 1 if self.specials == "ieee" else top) - self.bias

    @property
    def bits(self) -> int:
        """Storage bits: sign + exponent + stored significand."""
        return 1 + self.ebits + self.mbits

    @property
    def u(self) -> float:
        """Unit roundoff of round-to-nearest, 2^-p."""
        return float(np.ldexp(1.0, -self.p))

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "finite"

    @cached_property
    def max(self) -> float:
        """Largest finite value: (2 - 2^(1-p)) 2^emax, or (2 - 2^(2-p)) 2^emax for ``fn``."""
        lost = 2 if self.specials == "fn" else 1
        return float(np.ldexp(2.0**self.p - lost, self.emax - self.p + 1))

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, 2^emin."""
        return float(np.ldexp(1.0, self.emin))

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal value, 2^(emin - p + 1)."""
        return float(np.ldexp(1.0, self.emin - self.p + 1))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Values (float64) of the integer encodings ``codes`` (sign | exponent | significand)."""
        c = np.asarray(codes, dtype=np.int64)
        if np.any((c < 0) | (c >= 2**self.bits)):
            raise FormatSpecError(f"{self.name}: encodings must lie in [0, 2^{self.bits}).")
        sign = np.where((c >> (self.bits - 1)) & 1, -1.0, 1.0)
        e_field = (c >> self.mbits) & (2**self.ebits - 1)
        m_field = c & (2**self.mbits - 1)
        normal = e_field > 0
        sig = np.where(normal, m_field + 2**self.mbits, m_field).astype(np.float64)
        exp = np.where(normal, e_field, 1) - self.bias - self.mbits
        with np.errstate(over="ignore"):  # the top exponent field of ieee formats, replaced below
            value = sign * np.ldexp(sig, exp)
        top_e = e_field == 2**self.ebits - 1
        if self.specials == "ieee":
            value = np.where(top_e & (m_field == 0), sign * np.inf, value)
            value = np.where(top_e & (m_field != 0), np.nan, value)
        elif self.specials == "fn":
            value = np.where(top_e & (m_field == 2**self.mbits - 1), np.nan, value)
        return value

    def describe(self) -> dict:
        """The format's constants as a JSON-ready dict."""
        return {
            "name": self.name, "p": self.p, "emin": self.emin, "emax": self.emax, "u": self.u,
            "max": self.max, "min_normal": self.min_normal, "min_subnormal": self.min_subnormal,
            "bits": self.bits, "inf": self.has_inf, "nan": self.has_nan,
        }


FORMATS: Registry[Format] = Registry("format")
for _row in (
    Format("fp64", 11, 52, 1023),
    Format("fp32", 8, 23, 127),
    Format("tf32", 8, 10, 127),
    Format("fp16", 5, 10, 15),
    Format("bf16", 8, 7, 127),
    Format("fp8-e5m2", 5, 2, 15),
    Format("fp8-e4m3fn", 4, 3, 7, "fn"),
    Format("fp6-e3m2", 3, 2, 3, "finite"),
    Format("fp6-e2m3", 2, 3, 1, "finite"),
    Format("fp4-e2m1", 2, 1, 1, "finite"),
):
    FORMATS.add(_row.name, _row)

_CUSTOM = re.compile(r"^e(\d+)m(\d+)$")


def get_format(name: "str | Format") -> Format:
    """The format called ``name``: a registered name or an IEEE-like custom ``eXmY``
    (X exponent bits, Y stored significand bits, bias 2^(X-1) - 1, with inf and NaN;
    ``e4m3`` has max 240)."""
    if isinstance(name, Format):
        return name
    if isinstance(name, str):
        m = _CUSTOM.match(name.strip())
        if m:
            x, y = int(m.group(1)), int(m.group(2))
            if not 2 <= x <= 11 or not 1 <= y <= 52:
                raise FormatSpecError(
                    f"Custom format {name!r}: needs 2 <= X <= 11 exponent bits and 1 <= Y <= 52 significand bits "
                    "(eXmY must fit in float64)."
                )
            return Format(name.strip(), x, y, 2 ** (x - 1) - 1, "ieee")
        name = name.strip()
    return FORMATS.get(name, extra_possible=("eXmY (e.g. e4m3, e5m10, e8m7)",))


def format_names() -> list[str]:
    """Registered format names (custom eXmY formats are accepted besides)."""
    return FORMATS.names()
