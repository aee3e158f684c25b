"""Rigorous componentwise bounds for block-FMA accumulation (``tensorcore:`` and
``blockfma:`` specs; docs/method.md#tensor-core-accumulation), called by
:func:`analysis.bounds.local_bound` and :func:`analysis.bounds.model_constant`.

Setting (one component, no promotion). Steps t = 1..T (T = ceil(n / STEP)) each add
C_{t-1} and the exact terms of the step (products, or exact group sums); P_t their sum,
C_0 = round_R(b) in C's register format R (nearest), D_t = C_t the step's result. With
kappa = STEP / group + 1 terms per step, F fraction bits kept, the output rounding's
u (2^-out_frac toward zero, 2^-(out_frac+1) to nearest) and eta (the output format's
smallest subnormal toward zero, half of it to nearest), omega = 2^emin_R:

* a term's exponent E (the alignment exponent: e_x + e_w, or the block scales' sum for
  a group) satisfies 2^E <= g_term, and C's 2^e(C) <= |C| + omega (a subnormal C keeps
  the exponent emin_R). So the step's quantum q_t = 2^(M_t - F) obeys
  q_t <= 2^-F (G_t + |C_{t-1}| + omega), G_t the sum of the step's g over its terms;
* truncation toward zero loses less than q_t on each nonzero term, so the truncated sum
  V_t = C_{t-1} + P_t + tau_t has |tau_t| <= phi (G_t + |C_{t-1}| + omega), phi = kappa 2^-F;
* D_t = V_t + rho_t, |rho_t| <= u |V_t| + eta (overflow is outside the bound: the
  emulator's mask).

Let eps_t bound |C_t - (b + P_1 + ... + P_t)| and a = |b| + sum_j |p_j| (so |C_{t-1}|
<= a + eps_{t-1}, |C_{t-1} + P_t| <= a + eps_{t-1}). Then
eps_t <= eps_{t-1} + |tau_t| + u (a + eps_{t-1} + |tau_t|) + eta, which with
r = (1 + u)(1 + phi) (so (1 + u) phi + u = r - 1) is

    eps_t <= r eps_{t-1} + (1 + u) phi G_t + (r - 1) a + (1 + u) phi omega + eta.

Unrolled, with sum_t r^(T-t) G_t <= r^(T-1) g (g = sum of every term's g) and
sum_{t<T} r^t <= T r^(T-1):

    |ŷ - ỹ| = eps_T <= (r^T - 1) a + r^(T-1) (1 + u) phi g + r^T eps_0
                       + T r^(T-1) ((1 + u) phi omega + eta),

eps_0 = 0 when b is representable in R, else <= u_R |b| + eta_R (nearest). g is
computed from the data (:func:`term_weights`): g <= a - |b| unless an operand is
subnormal in its format (its exponent is then raised to emin, 2^E > |p|), so without
such operands the bound has the form c a + underflow with c = r^T - 1 + r^(T-1)(1 + u) phi;
:func:`blockfma_constant` reports that c.

Promotion (every N products into an fp32 accumulator rounded to nearest, u32 = 2^-24,
eta32 = 2^-150, from round_fp32(b)): R = ceil(n / N) intervals, each a chain from C = 0
of at most T = ceil(N / STEP) steps, whose errors (the bound above with eps_0 = 0,
their a's and g's summing to at most a - |b| and g) enter the recursive fp32 sum:

    |ŷ - ỹ| <= U (r^T - 1) a + (U - 1) a + U r^(T-1) (1 + u) phi g + U eps_0
               + U R T r^(T-1) ((1 + u) phi omega + eta) + R (1 + u32)^(R-1) eta32,

U = (1 + u32)^R, eps_0 <= u32 |b| + eta32 when b is not an fp32 number.

Every constant is computed upward (``growth``'s fixed point for the powers, exact
rationals rounded up for the rest); the arrays go through ``upper_abs_matmul``,
``up_mul`` and ``up_add``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from emulator.accumulation import Accumulation
from emulator.formats import get_format
from emulator.rounding import round_to
from emulator.tensorcore_linear import operand_exponents

from .upward import float_up as _up
from .upward import growth, up_add, up_mul, upper_abs_matmul

__all__ = ["BlockConstant", "blockfma_constant", "blockfma_local_bound", "term_weights"]

_FP32 = get_format("fp32")
U32, ETA32 = Fraction(1, 2**24), Fraction(1, 2**150)


@dataclass(frozen=True)
class BlockConstant:
    """|ŷ - ỹ| <= a_coef a + g_coef g + bias_coef |b| [b not in ``bias_format``] +
    underflow + bias_underflow [b not in ``bias_format``] (module docstring)."""

    a_coef: float
    g_coef: float
    bias_coef: float
    underflow: float
    bias_underflow: float
    steps: int
    promotions: int
    first_order: float


def _output_units(hw) -> tuple[Fraction, Fraction]:
    """(u, eta) of the step's output rounding."""
    out = hw.out
    sub = Fraction(out.min_subnormal)
    if hw.rounding == "nearest":
        return Fraction(1, 2 ** out.p), sub / 2
    return Fraction(2, 2 ** out.p), sub


@lru_cache(maxsize=512)
def blockfma_constant(acc: Accumulation, n: int) -> BlockConstant:
    """The constants of the module docstring's bound for inner products of length n."""
    hw = acc.hardware
    u, eta = _output_units(hw)
    phi = Fraction(hw.step // hw.group + 1, 2**hw.fraction_bits)
    omega = Fraction(2) ** hw.register.emin
    width = hw.promote or n
    steps = -(-min(width, n) // hw.step)
    promotions = -(-n // hw.promote) if hw.promote else 0
    r_last = 1 + Fraction(growth((steps, float(u)), (steps, float(phi))))  # >= r^T
    r_before = 1 + Fraction(growth((steps - 1, float(u)), (steps - 1, float(phi))))  # >= r^(T-1)
    chain_a = r_last - 1
    chain_g = r_before * (1 + u) * phi
    chain_under = steps * r_before * ((1 + u) * phi * omega + eta)
    first = steps * (u + phi)
    if not hw.promote:
        ub, etab = (Fraction(1, 2 ** hw.register.p), Fraction(hw.register.min_subnormal) / 2)
        return BlockConstant(_up(chain_a), _up(chain_g), _up(r_last * ub), _up(chain_under), _up(r_last * etab),
                             steps, 0, _up(first))
    big_u = 1 + Fraction(growth((promotions, float(U32))))
    u_prev = 1 + Fraction(growth((promotions - 1, float(U32))))
    return BlockConstant(
        _up(big_u * chain_a + big_u - 1), _up(big_u * chain_g), _up(big_u * U32),
        _up(big_u * promotions * chain_under + promotions * u_prev * ETA32), _up(big_u * ETA32),
        steps, promotions, _up(first + promotions * U32))


def term_weights(x_hat: np.ndarray, W: np.ndarray, acc: Accumulation) -> np.ndarray:
    """An upper bound on g_i = sum over the terms of 2^E (E the alignment exponent of the
    term: e_x + e_w of a product, the two block scales of a group), per sample and
    component; inf where an operand is not finite."""
    hw = acc.hardware
    group = hw.group
    ex = operand_exponents(np.atleast_2d(x_hat), hw.inputs, group)[:, ::group].astype(np.float64)
    ew = operand_exponents(W, hw.inputs, group)[:, ::group].astype(np.float64)
    gx = np.where(np.isfinite(np.atleast_2d(x_hat)[:, ::group]), np.ldexp(1.0, ex.astype(np.int64)), np.inf)
    gw = np.where(np.isfinite(W[:, ::group]), np.ldexp(1.0, ew.astype(np.int64)), np.inf)
    g = upper_abs_matmul(gx, gw)
    return g if np.ndim(x_hat) == 2 else g[0]


def blockfma_local_bound(x_hat, W, bias, acc: Accumulation, sums: np.ndarray) -> np.ndarray:
    """The bound of the module docstring for every component, from ``sums`` (an upper
    bound on sum_j |w_ij x̂_j|), rounded up; without the cap of ``local_bound``."""
    c = blockfma_constant(acc, W.shape[1])
    out = up_add(up_mul(c.a_coef, sums), up_mul(c.g_coef, term_weights(x_hat, W, acc)))
    out = up_add(out, c.underflow)
    if bias is not None:
        b = np.abs(np.asarray(bias, dtype=np.float64))
        reg = _FP32 if acc.hardware.promote else acc.hardware.register
        inexact = round_to(b, reg) != b
        out = up_add(out, up_mul(c.a_coef, b))
        out = up_add(out, np.where(inexact, up_add(up_mul(c.bias_coef, b), c.bias_underflow), 0.0))
    return out
