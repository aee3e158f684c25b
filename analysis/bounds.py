"""Rigorous componentwise error bounds for y = W x + b accumulated in low precision.

Model of one rounding (Higham 2002, Thm 2.2 with underflow, eq. 2.8): the result of
rounding a real v to a format F is v (1 + delta) + eta with |delta| <= u_F, |eta| <= eta_F
and delta eta = 0, where

* u_F = 2^-p for round-to-nearest, 2^(1-p) for directed and stochastic rounding
  (:func:`unit_roundoff`);
* eta_F = half the smallest subnormal (nearest), the smallest subnormal (other modes), or
  the smallest normal when subnormals are flushed to zero (:func:`underflow_unit`).

Overflow is outside the model: components whose accumulation overflowed (the emulator's
overflow mask) are not covered and are reported separately.

Local bound. Write the exact value as the sum of its terms t: the products
p_j = w_ij x̂_j and the bias b_i. Every accumulation model (docs/method.md#accumulation-models) computes
ŷ_i = sum_t t (1 + theta_t) + e_i, where 1 + theta_t is the product of the (1 + delta)
of the roundings on term t's path to the result (at most k_F in F, k_G in the wide format
G, k_P in the product format P) and e_i collects the eta's of every rounding, each
magnified by at most the later roundings. Since |prod (1 + delta) - 1| <= prod (1 + |delta|)
- 1,

    |ŷ_i - ỹ_i| <= c_prod sum_j |w_ij x̂_j| + c_bias |b_i| + E,
    c = (1 + u_F)^k_F (1 + u_G)^k_G (1 + u_P)^k_P - 1,
    E = (N_F eta_F + N_G eta_G + N_P eta_P) (1 + c_max),

N_* the number of roundings performed in each format. c <= gamma_{k_F}(u_F) when only F
rounds (Higham 2002, Lemma 3.1), and stays finite when k u >= 1, where gamma_k is
infinite. So the bound is c(n) a_i(x̂) + E with c(n) = max(c_prod, c_bias). The path
counts of each model are derived in :data:`STRUCTURES`.

Probabilistic bound (Higham & Mary, SIAM J. Sci. Comput. 41 (2019) A2815, Thm 2.4 and
3.1): if the delta's on a path are independent (or mean independent: stochastic rounding,
Connolly, Higham & Mary, SIAM J. Sci. Comput. 43 (2021) A566, Thm 4.6) with mean zero
and |delta| <= u, then |prod (1 + delta) - 1| <= gamma~_k(lambda) = exp(lambda sqrt(k) u +
k u^2 / (1 - u)) - 1 fails with probability at most 2 exp(-lambda^2 (1 - u)^2 / 2); the
union over the T = n (+1 with a bias) terms of a component gives its failure probability
T * 2 exp(-lambda^2 (1 - u)^2 / 2) (the paper's Q(lambda, n) = 1 - n (1 - P(lambda))).
Here the F and P roundings of a path are taken probabilistically with
u = max(u_F, u_P); the G roundings and the eta terms stay deterministic.

Global bound (docs/method.md#global-propagation): with |x̂ - x| <= D,

    |ŷ - y| <= |W| D + local bound,   Delta <= L |ŷ - y| + (float64 sigma) + (storage),

L the largest |sigma'| on [ŷ - E, ŷ + E] (which contains y), the float64 evaluation of
sigma within :data:`ACTIVATION_EVAL_ERROR` (|sigma(ŷ)| + |ŷ|) (``sympy:`` activations:
measured with mpmath), and storage rounding to nearest within u_S |z| + eta_S.

Rigour of the float64 evaluation. Constants are computed upward in exact integer
arithmetic. Elementwise operations use :func:`up_add` / :func:`up_mul`: the next float64
above the round-to-nearest result, never below the exact result (RN errs by at most half
an ulp of the result, the step by a full one). The sums |W| v (v >= 0) go through
:func:`upper_abs_matmul`, whose inflation is proved there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Callable

import mpmath
import numpy as np

from emulator.accumulation import Accumulation, parse_accumulation
from emulator.arrays import real_array
from emulator.errors import FormatSpecError, ShapeError
from emulator.formats import Format, get_format
from emulator.registry import Registry
from emulator.rounding import get_rounding, round_to

from .conditioning import max_abs_derivative
from .tensorcore_bounds import blockfma_constant, blockfma_local_bound
from .upward import float_up as _float_up
from .upward import growth, up_add, up_mul, upper_abs_matmul

__all__ = [
    "BoundSpec", "parse_bound", "PROBABILISTIC_ASSUMPTION", "unit_roundoff", "underflow_unit", "gamma", "growth", "gamma_tilde",
    "failure_probability", "Counts", "Structure", "STRUCTURES", "ModelConstant", "model_constant",
    "up_add", "up_mul", "upper_abs_matmul", "local_bound", "GlobalBound", "global_bound",
    "activation_eval_error", "storage_error", "mx_storage_error", "predicted_relative_error", "ACTIVATION_EVAL_ERROR",
]

ACTIVATION_EVAL_ERROR = 2.0**-44
"""|fl64(sigma(y)) - sigma(y)| <= 2^-44 (|fl64(sigma(y))| + |y|) + 2^-1000 is assumed of the
float64 activations (closed forms of a few libm calls, each within a few ulps; the slack
is over 100 times that). tests/test_bounds.py checks it against mpmath for every row."""


# ----------------------------------------------------------------------------- bound kinds


PROBABILISTIC_ASSUMPTION = (
    "the rounding errors of a component are independent (or mean independent) random variables of mean zero: "
    "true of stochastic rounding, an assumption (not a proof) under round-to-nearest and directed rounding"
)


@dataclass(frozen=True)
class BoundSpec:
    """``deterministic`` or ``probabilistic`` with its lambda > 0."""

    kind: str
    lam: float | None = None

    @property
    def spec(self) -> str:
        return self.kind if self.lam is None else f"{self.kind}:{self.lam:g}"

    @property
    def assumption(self) -> "str | None":
        """What a probabilistic bound assumes (None: a deterministic bound is a proof)."""
        return PROBABILISTIC_ASSUMPTION if self.kind == "probabilistic" else None


def parse_bound(spec: "str | BoundSpec") -> BoundSpec:
    """``"deterministic"`` or ``"probabilistic:LAMBDA"`` (LAMBDA > 0)."""
    if isinstance(spec, BoundSpec):
        return spec
    text = str(spec).strip()
    kind, _, arg = text.partition(":")
    if kind == "deterministic" and not arg:
        return BoundSpec("deterministic")
    if kind == "probabilistic":
        try:
            lam = float(arg)
        except ValueError:
            raise FormatSpecError(f"Bound {text!r}: lambda {arg!r} is not a number; use probabilistic:LAMBDA, e.g. probabilistic:4.") from None
        if not (lam > 0 and math.isfinite(lam)):
            raise FormatSpecError(f"Bound {text!r}: lambda == {arg}, must be a finite number > 0.")
        return BoundSpec("probabilistic", lam)
    raise FormatSpecError(f"Unknown bound {text!r}. Possible values are: deterministic, probabilistic:LAMBDA.")


# ------------------------------------------------------------------- scalar constants, upward


def unit_roundoff(fmt: "Format | str", rounding="nearest") -> float:
    """Bound on |delta| of one rounding: 2^-p (nearest), 2^(1-p) (directed, stochastic)."""
    f = get_format(fmt)
    return f.u if get_rounding(rounding).name == "nearest" else 2.0 * f.u


def underflow_unit(fmt: "Format | str", rounding="nearest", subnormals: bool = True) -> float:
    """Bound on |eta| of one rounding: half the smallest subnormal (nearest), the smallest
    subnormal (other modes), the smallest normal (flush to zero)."""
    f = get_format(fmt)
    if not subnormals:
        return f.min_normal
    if get_rounding(rounding).name == "nearest":
        return _float_up(Fraction(f.min_subnormal) / 2)
    return f.min_subnormal


def gamma(k: int, u: float) -> float:
    """gamma_k(u) = k u / (1 - k u) (Higham 2002, eq. 3.8), rounded up; inf when k u >= 1."""
    ku = k * Fraction(u)
    return math.inf if ku >= 1 else _float_up(ku / (1 - ku))


def gamma_tilde(k: int, u: float, lam: float) -> float:
    """gamma~_k(lambda) = exp(lambda sqrt(k) u + k u^2 / (1 - u)) - 1 (Higham & Mary 2019,
    Thm 2.4), evaluated at 200 bits and rounded up."""
    if k == 0:
        return 0.0
    with mpmath.workprec(200):
        u_, lam_ = mpmath.mpf(u), mpmath.mpf(lam)
        value = mpmath.expm1(lam_ * mpmath.sqrt(k) * u_ + k * u_**2 / (1 - u_))
        value *= 1 + mpmath.ldexp(1, -150)
        out = float(value)
        return out if mpmath.mpf(out) >= value else math.nextafter(out, math.inf)


def failure_probability(lam: float, u: float, terms: int) -> float:
    """Upper bound on the probability that the probabilistic bound fails for one
    component of ``terms`` terms: min(1, terms * 2 exp(-lambda^2 (1 - u)^2 / 2))."""
    with mpmath.workprec(200):
        p = terms * 2 * mpmath.exp(-mpmath.mpf(lam) ** 2 * (1 - mpmath.mpf(u)) ** 2 / 2) * (1 + mpmath.ldexp(1, -150))
        out = float(p)
        out = out if mpmath.mpf(out) >= p else math.nextafter(out, math.inf)
    return min(1.0, out)


# ------------------------------------------------------------- rounding structure of models


@dataclass(frozen=True)
class Counts:
    """Numbers of roundings in the accumulator F, the wide format G, the product format P."""

    F: int = 0
    G: int = 0
    P: int = 0

    def plus(self, other: "Counts") -> "Counts":
        return Counts(self.F + other.F, self.G + other.G, self.P + other.P)


@dataclass(frozen=True)
class Structure:
    """How an accumulation order rounds: ``paths(acc, n, has_bias)`` gives (the longest
    path of a product, the path of a representable bias, the roundings performed);
    ``bias_format`` is where a bias that is not representable is rounded ("F" or "G")."""

    name: str
    paths: Callable[[Accumulation, int, bool], tuple[Counts, Counts, Counts]]
    bias_format: str = "F"


def _bias_last(acc: Accumulation, has_bias: bool) -> int:
    return int(has_bias and acc.bias == "last")


def _recursive(acc: Accumulation, n: int, has_bias: bool):
    """s_0 = round_F(b) (0 without bias), s_j = round_F(s_{j-1} + p_j): p_1 passes the n
    additions, the bias the same n plus its own rounding when not representable. With
    bias=last, s_0 = 0 and ŷ = round_F(s_n + b): p_1 passes n + 1, the bias 1. At most
    n + 2 roundings happen (n additions, the bias's own, the final bias addition)."""
    last = _bias_last(acc, has_bias)
    return Counts(F=n + last), Counts(F=1 if last else n), Counts(F=n + 2 * has_bias)


def _pairwise(acc: Accumulation, n: int, has_bias: bool):
    """A balanced binary tree over p_1..p_n (adjacent pairs level by level), every node
    rounded: a leaf lies at depth <= ceil(log2 n); a lone product is rounded on its own
    (depth 1). The bias is always added last: one more rounding for every product; the
    bias passes that one, plus its own when not representable. Roundings: n - 1 nodes
    (or the lone product's), the final addition, the bias's own."""
    depth = max(math.ceil(math.log2(n)), 1) if n > 1 else 1
    return Counts(F=depth + int(has_bias)), Counts(F=1), Counts(F=n + 1 + int(has_bias))


def _blocked(acc: Accumulation, n: int, has_bias: bool):
    """Blocks of B products summed recursively from 0 (the first product of the first
    block passes min(B, n) roundings), then the nb = ceil(n / B) block sums accumulated
    recursively from round_F(b) (nb more; the bias passes nb). With bias=last the bias is
    added at the end: products nb + min(B, n) + 1, bias 1. Roundings: n + nb + 2."""
    nb = math.ceil(n / acc.block)
    last = _bias_last(acc, has_bias)
    return Counts(F=min(acc.block, n) + nb + last), Counts(F=1 if last else nb), Counts(F=n + nb + 2)


def _fused(acc: Accumulation, n: int, has_bias: bool):
    """s_k = round_F(s_{k-1} + K products), all added exactly and rounded once, for
    k = 1..ceil(n / K), s_0 = round_F(b): the first products pass ceil(n / K) roundings,
    as does the bias. bias=last: one more for the products, the bias 1. Roundings:
    ceil(n / K) + 2."""
    nb = math.ceil(n / acc.block)
    last = _bias_last(acc, has_bias)
    return Counts(F=nb + last), Counts(F=1 if last else nb), Counts(F=nb + 2)


def _promote(acc: Accumulation, n: int, has_bias: bool):
    """Blocks of B products summed in F from 0 (min(B, n) roundings in F), each block sum
    added into an accumulator in G that starts from round_G(b): nb = ceil(n / B) roundings
    in G for the first block and for the bias. bias=last: one more G rounding for the
    products, the bias 1. Roundings: n in F, nb + 2 in G."""
    nb = math.ceil(n / acc.block)
    last = _bias_last(acc, has_bias)
    return (Counts(F=min(acc.block, n), G=nb + last), Counts(G=1 if last else nb), Counts(F=n, G=nb + 2))


def _exact(acc: Accumulation, n: int, has_bias: bool):
    """The exact sum rounded once to the nearest float64."""
    return Counts(F=1), Counts(F=1), Counts(F=1)


STRUCTURES: Registry[Structure] = Registry("accumulation order")
for _s in (
    Structure("recursive", _recursive),
    Structure("pairwise", _pairwise),
    Structure("blocked", _blocked),
    Structure("fused", _fused),
    Structure("promote", _promote, bias_format="G"),
    Structure("exact", _exact),
):
    STRUCTURES.add(_s.name, _s)


# ---------------------------------------------------------------------------- the constants


@dataclass(frozen=True)
class ModelConstant:
    """The local bound of one accumulation model for inner products of length ``n``:
    |ŷ_i - ỹ_i| <= product * sum_j |w_ij x̂_j| + bias * |b_i| + underflow, with ``bias``
    = ``bias_exact`` or ``bias_inexact`` as b_i is representable in ``bias_format`` or
    not. ``first_order`` is the paper's c u (sum of k u over the product path);
    ``failure`` the probability that a probabilistic bound fails for one component
    (0 for deterministic bounds); ``output_max`` the largest finite value of the format
    the result is held in (F, G for promote, float64 for exact)."""

    spec: str
    bound: str
    n: int
    product_path: Counts
    bias_path: Counts
    roundings: Counts
    product: float
    bias_exact: float
    bias_inexact: float
    underflow: float
    first_order: float
    failure: float
    bias_format: Format
    output_max: float

    @property
    def constant(self) -> float:
        """c(n) = max over the terms, so that the bound is c(n) a_i + underflow."""
        return max(self.product, self.bias_inexact)

    @property
    def vacuous(self) -> bool:
        """c(n) >= 1: the bound c(n) a_i is valid but no smaller than |ỹ_i| <= a_i, so it
        cannot tell ŷ_i from 0; the first-order estimate c u kappa is then outside the
        range where (1 + u)^k - 1 ~ k u holds."""
        return not self.constant < 1

    def describe(self) -> dict:
        return {
            "n": self.n, "bound": self.bound, "product_path": vars(self.product_path), "bias_path": vars(self.bias_path),
            "roundings": vars(self.roundings), "c_product": self.product, "c_bias_exact": self.bias_exact,
            "c_bias_inexact": self.bias_inexact, "underflow": self.underflow, "first_order": self.first_order,
            "failure_probability": self.failure, "vacuous": self.vacuous, "first_order_in_range": not self.vacuous,
            "output_max": self.output_max,
        }


_FP64 = get_format("fp64")


def _formats(acc: Accumulation):
    """(F, G, P) with their (u, eta); exact arithmetic rounds once to nearest fp64."""
    if acc.is_exact:
        unit = (unit_roundoff(_FP64), underflow_unit(_FP64))
        return {"F": (_FP64, *unit), "G": (None, 0.0, 0.0), "P": (None, 0.0, 0.0)}
    mode, sub = acc.rounding, acc.subnormals
    out = {"F": (acc.fmt, unit_roundoff(acc.fmt, mode), underflow_unit(acc.fmt, mode, sub))}
    out["G"] = (acc.wide, unit_roundoff(acc.wide, mode), underflow_unit(acc.wide, mode, sub)) if acc.wide else (None, 0.0, 0.0)
    prod = acc.products
    out["P"] = (prod, unit_roundoff(prod, mode), underflow_unit(prod, mode, sub)) if prod != "exact" else (None, 0.0, 0.0)
    return out


def _path_constant(path: Counts, units: dict, spec: BoundSpec) -> float:
    (_, uF, _), (_, uG, _), (_, uP, _) = units["F"], units["G"], units["P"]
    if spec.kind == "deterministic":
        return growth((path.F, uF), (path.G, uG), (path.P, uP))
    prob = gamma_tilde(path.F + path.P, max(uF, uP), spec.lam)
    det = growth((path.G, uG))
    if not (math.isfinite(prob) and math.isfinite(det)):
        return math.inf
    return _float_up((1 + Fraction(prob)) * (1 + Fraction(det)) - 1)


@lru_cache(maxsize=1024)
def _model_constant(acc: Accumulation, n: int, has_bias: bool, spec: BoundSpec) -> ModelConstant:
    structure = STRUCTURES.get("exact" if acc.is_exact else acc.order)
    prod_path, bias_path, ops = structure.paths(acc, n, has_bias)
    units = _formats(acc)
    if units["P"][0] is not None:
        prod_path = prod_path.plus(Counts(P=1))
        ops = ops.plus(Counts(P=n))
    bias_extra = Counts(G=1) if structure.bias_format == "G" else Counts(F=1)
    c_prod = _path_constant(prod_path, units, spec)
    c_bias = _path_constant(bias_path, units, spec)
    c_bias_inexact = _path_constant(bias_path.plus(bias_extra), units, spec)
    worst = max(growth(*((k, units[f][1]) for f, k in vars(path).items())) for path in (prod_path, bias_path.plus(bias_extra)))
    eta = Fraction(0)
    for f, count in vars(ops).items():
        eta += count * Fraction(units[f][2])
    underflow = _float_up(eta * (1 + Fraction(worst))) if math.isfinite(worst) else (math.inf if eta else 0.0)
    first = sum(k * Fraction(units[f][1]) for f, k in vars(prod_path).items())
    failure = 0.0
    if spec.kind == "probabilistic":
        failure = failure_probability(spec.lam, max(units["F"][1], units["P"][1]), n + int(has_bias))
    bias_fmt = units[structure.bias_format][0]
    out_fmt = _FP64 if acc.is_exact else (acc.wide or acc.fmt)
    return ModelConstant(
        acc.spec, spec.spec, n, prod_path, bias_path, ops, c_prod, c_bias, c_bias_inexact, underflow,
        _float_up(first), failure, bias_fmt, float(out_fmt.max),
    )


def model_constant(acc, n: int, has_bias: bool = True, bound="deterministic") -> ModelConstant:
    """The :class:`ModelConstant` of accumulation ``acc`` (spec or row) for inner
    products of length ``n`` (with or without a bias), for ``bound`` =
    ``deterministic`` or ``probabilistic:LAMBDA``. Block-FMA rows (``tensorcore:``,
    ``blockfma:``) get their deterministic constant for both kinds (truncation errors
    are not of mean zero), see :mod:`analysis.tensorcore_bounds`."""
    if int(n) < 1:
        raise ShapeError(f"n == {n}, must be >= 1.")
    acc = parse_accumulation(acc)
    if acc.hardware is not None:
        return _hardware_constant(acc, int(n), bool(has_bias), parse_bound(bound))
    return _model_constant(acc, int(n), bool(has_bias), parse_bound(bound))


def _hardware_constant(acc: Accumulation, n: int, has_bias: bool, spec: BoundSpec) -> ModelConstant:
    """A block-FMA row's constants as a :class:`ModelConstant`: ``product`` is
    c = a_coef + g_coef, the bound's constant when no operand is subnormal in its format
    (g <= a); ``local_bound`` uses g itself. Paths count steps in F and promotions in G."""
    c = blockfma_constant(acc, n)
    hw = acc.hardware
    product = _float_up(Fraction(c.a_coef) + Fraction(c.g_coef))
    roundings = Counts(F=-(-n // hw.step), G=c.promotions + int(has_bias and bool(hw.promote)))
    path = Counts(F=c.steps, G=c.promotions)
    bias_fmt = get_format("fp32") if hw.promote else hw.register
    return ModelConstant(
        acc.spec, spec.spec, n, path, path, roundings, product, c.a_coef,
        _float_up(Fraction(c.a_coef) + Fraction(c.bias_coef)), _float_up(Fraction(c.underflow) + Fraction(c.bias_underflow)),
        c.first_order, 0.0, bias_fmt, float(hw.output.max),
    )


# --------------------------------------------------------------- rigorous array evaluation


def _representable(b: np.ndarray, fmt: Format) -> np.ndarray:
    return round_to(b, fmt) == b


def local_bound(x_hat, weight, bias, acc, bound="deterministic", *, return_capped: bool = False):
    """Upper bound on |ŷ_i - ỹ_i|, ŷ the accumulation ``acc`` of W x̂ + b and ỹ its exact
    value at the same input: min(c_prod |W||x̂| + c_bias |b| + underflow, max_out + a_i)
    (see module docstring), rounded up. The cap holds for every component that did not
    overflow: |ŷ_i| <= max_out (the largest value of the result's format) and
    |ỹ_i| <= a_i = |b_i| + sum_j |w_ij x̂_j|; it is what is left when the constant is
    vacuous (c >= 1). Shape (N, m) for x̂ (N, n), (m,) for (n,). Non-finite x̂ give inf.
    With ``return_capped`` also the mask of components where the cap is the bound."""
    W = real_array(weight, "W", ndim=2)
    x_hat = real_array(x_hat, "x̂", ndim=(1, 2))
    if x_hat.shape[-1] != W.shape[1]:
        raise ShapeError(f"x̂ of shape {x_hat.shape} does not fit W of shape {W.shape}.")
    acc = parse_accumulation(acc)
    c = model_constant(acc, W.shape[1], bias is not None, bound)
    sums = upper_abs_matmul(np.abs(x_hat), W)
    magnitude = sums if bias is None else up_add(sums, np.abs(np.asarray(bias, dtype=np.float64)))
    if acc.hardware is not None:
        out = blockfma_local_bound(x_hat, W, bias, acc, sums)
    else:
        out = up_mul(c.product, sums)
        if bias is not None:
            b = np.abs(np.asarray(bias, dtype=np.float64))
            cb = np.where(_representable(b, c.bias_format), c.bias_exact, c.bias_inexact)
            out = up_add(out, up_mul(cb, b))
        out = up_add(out, c.underflow)
    cap = up_add(magnitude, c.output_max)
    capped = cap < out
    out = np.where(capped, cap, out)
    return (out, capped) if return_capped else out


def activation_eval_error(v, y, activation=None) -> np.ndarray:
    """Bound on |fl64(sigma(y)) - sigma(y)|, v = fl64(sigma(y)): 2^-44 (|v| + |y|) + 2^-1000
    for the registered closed forms; for ``sympy:`` activations (float64 formulas of
    unknown accuracy) the error itself, measured with mpmath (see
    :func:`_measured_eval_error`)."""
    if activation is not None and activation.name.startswith("sympy:"):
        return _measured_eval_error(activation, np.asarray(v, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return up_add(up_mul(ACTIVATION_EVAL_ERROR, up_add(np.abs(v), np.abs(y))), 2.0**-1000)


def _measured_eval_error(act, v: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|v - sigma(y)| <= |v - s2| + |s2 - s1| + 2^-200 |s2|, s1 and s2 sigma(y) by mpmath at
    256 and 512 bits (their difference stands for s2's own error), rounded up; inf where
    y or v is not finite or mpmath fails."""
    out = np.full(v.shape, np.inf)
    flat_v, flat_y, flat_out = v.reshape(-1), y.reshape(-1), out.reshape(-1)
    for k in np.flatnonzero(np.isfinite(flat_v) & np.isfinite(flat_y)):
        try:
            with mpmath.workprec(256):
                s1 = act.mp(mpmath.mpf(float(flat_y[k])))
            with mpmath.workprec(512):
                s2 = act.mp(mpmath.mpf(float(flat_y[k])))
                err = abs(mpmath.mpf(float(flat_v[k])) - s2) + abs(s2 - s1) + abs(s2) * mpmath.ldexp(1, -200)
        except (ZeroDivisionError, ValueError, OverflowError, TypeError):
            continue
        if mpmath.isfinite(err):
            value = float(err)
            flat_out[k] = value if mpmath.mpf(value) >= err else math.nextafter(value, math.inf)
    return out


def storage_error(v, storage) -> np.ndarray:
    """Bound on |round_S(v) - v| for round-to-nearest into the storage format S:
    u_S |v| + eta_S; inf where |v| > max_S (overflow or saturation is not covered).
    MX storage: :func:`mx_storage_error`."""
    if storage.mx is not None:
        return mx_storage_error(v, storage.mx)
    fmt = storage.fmt
    err = up_add(up_mul(fmt.u, np.abs(v)), underflow_unit(fmt))
    return np.where(np.abs(v) <= fmt.max, err, np.inf)


def mx_storage_error(v, mx) -> np.ndarray:
    """Bound on |q - v| for the MX quantisation q of v (blocks along the last axis, scale
    2^s of v's block): max(u_e, (2^(emax_e + 1) - max_e) / max_e) |v| + 2^(s + emin_e - p_e).
    Proof: |v| / 2^s < 2^(emax_e + 1) by the choice of s; below max_e the element is
    rounded to nearest (relative error u_e, or half the subnormal quantum 2^(emin_e - p_e)
    scaled by 2^s); above it the value saturates to max_e 2^s, an error below
    |v| (2^(emax_e + 1) - max_e) / max_e. inf where v is not finite or the scale would
    exceed E8M0's."""
    from emulator.mx import SCALE_MAX, block_scales

    v = np.asarray(v, dtype=np.float64)
    el = mx.element
    finite = np.isfinite(v)
    s = block_scales(np.where(finite, v, 0.0), el, mx.block, refuse=False)
    rel = _float_up(max(Fraction(el.u), (Fraction(2) ** (el.emax + 1) - Fraction(el.max)) / Fraction(el.max)))
    with np.errstate(over="ignore"):
        under = np.ldexp(1.0, np.minimum(s, SCALE_MAX) + el.emin - el.p)
    err = up_add(up_mul(rel, np.abs(v)), under)
    ok = finite & np.all(finite, axis=-1, keepdims=True) & (s <= SCALE_MAX)
    return np.where(ok, err, np.inf)


@dataclass(frozen=True)
class GlobalBound:
    """Bounds against the exact forward pass: ``pre`` on |ŷ - y| and ``out`` on the
    layer output |ẑ - sigma(y)| (after the float64 activation and storage rounding);
    ``capped`` marks the outputs whose bound is the activation's range cap."""

    pre: np.ndarray
    out: np.ndarray
    capped: np.ndarray


def global_bound(y_hat, local, weight, activation, input_bound=None, storage=None) -> GlobalBound:
    """Propagate through one layer: E = |W| D + local (D = ``input_bound``, None for an
    input the reference shares), L = max |sigma'| on [ŷ - E, ŷ + E] (it contains y),
    Delta = L E + float64 activation error + storage error, all rounded up. A bounded
    activation (``image`` [lo, hi] contains sigma(y)) caps Delta at
    max(ẑ - lo, hi - ẑ), ẑ the computed output. Non-finite ŷ give inf."""
    from emulator.activations import get_activation

    y_hat = np.asarray(y_hat, dtype=np.float64)
    act = get_activation(activation)
    pre = np.asarray(local, dtype=np.float64)
    if input_bound is not None:
        pre = up_add(upper_abs_matmul(input_bound, weight), pre)
    finite = np.isfinite(y_hat)
    pre = np.where(finite, pre, np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        lo = np.nextafter(y_hat - pre, -np.inf)
        hi = np.nextafter(y_hat + pre, np.inf)
    lo = np.where(finite, lo, -np.inf)
    hi = np.where(finite, hi, np.inf)
    slope = max_abs_derivative(act, lo, hi)
    with np.errstate(all="ignore"):
        v = act.f(np.where(finite, y_hat, 0.0))
    out = up_add(up_mul(slope, pre), activation_eval_error(v, y_hat, act))
    if storage is not None:
        out = up_add(out, storage_error(v, storage))
    out = np.where(finite & np.isfinite(pre), out, np.inf)
    capped = np.zeros(out.shape, dtype=bool)
    if act.image is not None:
        low, high = act.image
        z_hat = storage.round(v) if storage is not None else v
        cap = np.where(finite, np.maximum(up_add(z_hat, -low), up_add(high, -z_hat)), np.inf)
        capped = cap < out
        out = np.where(capped, cap, out)
    return GlobalBound(pre, out, capped)


def predicted_relative_error(kappa_sigma, kappa, cu: float, eps_in=0.0) -> np.ndarray:
    """The paper's first-order prediction kappa_sigma(y) kappa_i (c u + eps_in) of the
    relative error of a layer output (0 where kappa_sigma = 0, even if kappa = inf)."""
    ks = np.asarray(kappa_sigma, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = ks * np.asarray(kappa, dtype=np.float64) * (cu + np.asarray(eps_in, dtype=np.float64))
    return np.where(ks == 0, 0.0, out)
