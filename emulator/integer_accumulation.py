"""Integer accumulators of a fixed width (docs/method.md#accumulator-sizing): y = W x + b
for integer x, W, b (int8 x int8 products of quantised networks) summed in a B-bit
two's-complement register, recursively from the bias (s_0 = b_i, s_j = s_(j-1) +
w_ij x_j, y_i = s_n), every addition exact and then

* ``wrap``: reduced modulo 2^B into [-2^(B-1), 2^(B-1)) (the hardware's wrap-around; the
  result is the exact sum modulo 2^B, whatever happened in between);
* ``saturate``: clamped into [-2^(B-1), 2^(B-1) - 1] after every addition (the bias
  first clamped too), so an overflow changes every later partial sum.

Both return the overflow mask: components where some partial sum (the bias included) left
the register's range. The exact sum is the result where no overflow happened.
"""

from __future__ import annotations

import numba
import numpy as np

from .errors import FormatSpecError, ShapeError

__all__ = ["INTEGER_OVERFLOW", "integer_linear"]

INTEGER_OVERFLOW = ("wrap", "saturate")
"""What a register does when a partial sum leaves its range."""

_MAX_BITS = 62  # partial sums are held in int64; |w x| terms must leave headroom


@numba.njit(cache=True)
def _accumulate(x, w, b, bits, saturate):
    n_rows, n = x.shape
    m = w.shape[0]
    lo = -(np.int64(1) << (bits - 1))
    hi = (np.int64(1) << (bits - 1)) - 1
    span = np.int64(1) << bits
    y = np.empty((n_rows, m), dtype=np.int64)
    overflow = np.zeros((n_rows, m), dtype=np.bool_)
    for r in range(n_rows):
        for i in range(m):
            s = b[i]
            out = False
            for j in range(-1, n):
                if j >= 0:
                    s += w[i, j] * x[r, j]
                if s < lo or s > hi:
                    out = True
                    if saturate:
                        s = lo if s < lo else hi
                    else:
                        s = ((s - lo) % span) + lo
            y[r, i] = s
            overflow[r, i] = out
    return y, overflow


def _integers(a, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu" or arr.ndim != ndim:
        raise ShapeError(f"{name} must be a {ndim}-d integer array, got {arr.dtype} of shape {arr.shape}.")
    return np.ascontiguousarray(arr, dtype=np.int64)


def integer_linear(x_q, w_q, b_q=None, bits: int = 32, overflow: str = "wrap") -> tuple[np.ndarray, np.ndarray]:
    """(y, overflow mask), both (N, m), of x_q (N, n) and w_q (m, n) integer arrays and the
    integer bias b_q (m,) (None: 0) accumulated in a ``bits``-bit register that wraps
    or saturates (see the module docstring). ``bits`` is 2..62; every |w_ij x_j| and
    |b_i| must be below 2^62 - 2^bits so that int64 holds each addition exactly."""
    if overflow not in INTEGER_OVERFLOW:
        raise FormatSpecError(f"Unknown integer overflow {overflow!r}. Possible values are: {', '.join(INTEGER_OVERFLOW)}.")
    if not 2 <= int(bits) <= _MAX_BITS:
        raise FormatSpecError(f"bits == {bits}, must be in 2..{_MAX_BITS}.")
    x = _integers(x_q, "x_q", 2)
    w = _integers(w_q, "w_q", 2)
    b = np.zeros(w.shape[0], dtype=np.int64) if b_q is None else _integers(b_q, "b_q", 1)
    if x.shape[1] != w.shape[1] or b.shape[0] != w.shape[0]:
        raise ShapeError(f"x_q {x.shape}, w_q {w.shape} and b_q {b.shape} do not fit.")
    limit = (1 << _MAX_BITS) - (1 << int(bits))
    largest = max(int(np.max(np.abs(w), initial=0)) * int(np.max(np.abs(x), initial=0)),
                  int(np.max(np.abs(b), initial=0)))
    if largest >= limit:
        raise ShapeError(f"terms up to {largest} do not leave int64 headroom for a {bits}-bit register.")
    return _accumulate(x, w, b, int(bits), overflow == "saturate")
