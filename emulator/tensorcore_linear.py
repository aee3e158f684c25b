"""W x + b under a block-FMA accumulation (``tensorcore:`` / ``blockfma:`` specs): operand
checks, operand exponents, and the call of the numba kernel (``emulator._blockfma``).

The exponent of an operand v is what the hardware aligns on
(docs/method.md#tensor-core-accumulation): max(floor(log2 |v|), emin) in its format; for
an MX format, with the block's scale s, max(floor(log2 |v|), emin_elem + s), so that a
product's exponent is e_a + e_b + s_a + s_b as in a block-scaled MMA; for the grouped
fp4 kind, the block's scale alone; without a format (``blockfma`` without ``in=``), the
float64 exponent.
"""

from __future__ import annotations

import numpy as np

from . import _blockfma as K
from .accumulation import Accumulation
from .errors import FormatSpecError
from .formats import Format, get_format
from .mx import MXFormat
from .rounding import kernel_params, round_to

__all__ = ["emulate_blockfma", "operand_exponents", "check_operands", "MAX_FREE_BITS"]

MAX_FREE_BITS = 26  # operands without a format: at most 26 significant bits (exact float64 products)
FREE_MIN, FREE_MAX = 2.0**-400, 2.0**400  # and magnitudes whose products' exponents stay within the kernel's M range


def _float_exponents(v: np.ndarray) -> np.ndarray:
    _, e = np.frexp(v)
    return e.astype(np.int64) - 1


def operand_exponents(v: np.ndarray, fmt: "Format | MXFormat | None", group: int = 1) -> np.ndarray:
    """The int32 alignment exponent of every operand of ``v`` (blocks along the last
    axis), ``ZERO_EXP`` for zeros (see the module docstring)."""
    finite = np.isfinite(v)
    safe = np.where(finite, v, 0.0)
    e = _float_exponents(safe)
    if isinstance(fmt, MXFormat):
        s = fmt.scales(safe)
        e = s if group > 1 else np.maximum(e, fmt.element.emin + s)
    elif fmt is not None:
        e = np.maximum(e, fmt.emin)
    e = np.where(safe != 0.0, e, K.ZERO_EXP) if group == 1 else e
    return np.where(finite, e, 0).astype(np.int32)


def _offending(v: np.ndarray, bad: np.ndarray, name: str, what: str) -> FormatSpecError:
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return FormatSpecError(f"{name}[{', '.join(map(str, idx))}] == {float(v[idx])!r} is not {what}; "
                           f"round the operands first (e.g. --storage FMT; FMT:sums where a graph's sum feeds them).")


def check_operands(v: np.ndarray, fmt: "Format | MXFormat | None", name: str) -> None:
    """Refuse operands the model cannot take, naming the first: values not exactly
    representable in ``fmt`` (MX: in its blocks of the last axis), or, without a
    format, with more than 26 significant bits or a nonzero magnitude outside
    [2^-400, 2^400)."""
    finite = np.isfinite(v)
    if isinstance(fmt, MXFormat):
        if not finite.all():
            raise _offending(v, ~finite, name, f"representable in {fmt.name}")
        bad = fmt.quantise(v, where=name) != v
        what = f"representable in {fmt.name} (blocks of {fmt.block} along the reduction axis)"
    elif fmt is not None:
        r = round_to(v, fmt)
        bad = ~((r == v) | (np.isnan(v) & fmt.has_nan))
        what = f"representable in {fmt.name}"
    else:
        safe = np.where(finite, v, 0.0)
        m, _ = np.frexp(safe)
        scaled = np.ldexp(m, MAX_FREE_BITS)
        bad = (scaled != np.trunc(scaled)) | ((safe != 0) & ((np.abs(safe) < FREE_MIN) | (np.abs(safe) >= FREE_MAX)))
        what = (f"a float of at most {MAX_FREE_BITS} significant bits and magnitude 0 or in [2^-400, 2^400) "
                "(blockfma without in=FMT)")
    if bad.any():
        raise _offending(v, bad, name, what)


def emulate_blockfma(x: np.ndarray, w: np.ndarray, bias, a: Accumulation, in_threads) -> "tuple[np.ndarray, np.ndarray]":
    """(y, overflow mask) of W x + b under the block-FMA row ``a`` (x (N, n), w (m, n));
    ``in_threads(run, N, products_per_row)`` runs ``run(r0, r1)`` over the samples."""
    hw = a.hardware
    check_operands(x, hw.inputs, "x")
    check_operands(w, hw.inputs, "W")
    nsamp, m = x.shape[0], w.shape[0]
    y = np.empty((nsamp, m))
    ovf = np.zeros((nsamp, m), dtype=np.bool_)
    if nsamp == 0 or m == 0:
        return y, ovf
    fp32 = get_format("fp32")
    b = np.zeros(m) if bias is None else np.asarray(bias, dtype=np.float64)
    c0 = np.ascontiguousarray(round_to(b, hw.register))
    acc0 = np.ascontiguousarray(round_to(b, fp32))
    wt = np.ascontiguousarray(w.T)
    ewt = np.ascontiguousarray(operand_exponents(w, hw.inputs, hw.group).T)
    ex = operand_exponents(x, hw.inputs, hw.group)
    specials = not (np.isfinite(x).all() and np.isfinite(w).all())
    out = hw.out
    args = (c0, acc0, hw.step, hw.group, hw.fraction_bits, out.p - 1, out.emin, float(out.max),
            hw.rounding == "nearest", hw.promote, specials, kernel_params(fp32, False, True))

    def run(r0: int, r1: int) -> None:
        K.kernel_blockfma(x, ex, wt, ewt, *args, r0, r1, y[r0:r1], ovf[r0:r1])

    in_threads(run, nsamp, w.shape[0] * w.shape[1])
    return y, ovf
