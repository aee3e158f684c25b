"""The exact reference: the forward pass in exact arithmetic, every returned value with a
certified bound on its distance to the exact value (docs/method.md#the-exact-reference).

Layer k computes y = W z + b and z' = sigma(y); nothing is rounded between layers (the
input of layer k+1 is the exact sigma(y) of layer k). Each value v is returned as the
float64 nearest the carried value c plus a radius r >= |float64 - v|; by default
|c - v| <= tol |v| with tol = 2^-60, so r <= |float64 - c| + 2^-60 |v| (or
|c - v| <= 2^-1060 for values near or below the float64 underflow threshold).

Two paths give the same certified values:

* ``mpmath`` (the definition): inner products exact in integers (every float64 and every
  mpmath number is m 2^e; no ``mpmath.fdot``, which drops far-apart terms), sigma by
  mpmath at ``precision + 24`` bits on the two ends of the input interval (sigma is
  monotone there; registered activations only), each trusted to 2^-precision relative
  — the one assumption of this path, checked against 500-bit evaluations in the tests.
  ``sympy:`` activations, whose shape is unknown, take sigma(c) checked at two precisions
  plus |sigma'(c)| r (a first-order enclosure). Where a radius misses ``tol``, the
  sample is recomputed at twice the precision, up to 16 times ``precision``.
* ``fast``: Dot2-style compensated inner products in float64 with a proven bound
  (``_exactdot.compensated_dot``), an exact expansion sum where that bound is too weak,
  double-double ("dd") activations with proven relative error bounds, enclosing sigma
  over the input interval by its values at the ends. Components it cannot certify go
  to mpmath: an activation its kernel does not cover is evaluated by mpmath for that
  component; a radius that misses ``tol`` sends the whole sample down the mpmath path
  (``ExactForward.fallback`` marks them). Tolerances below ``FAST_TOL_MIN`` use the mpmath
  path throughout and also return the mpmath numbers.

A single layer at a float64 input is exact: ``exact_linear`` returns RN(W x + b) (round
to nearest, ties to even) of the exact sum.
"""

from __future__ import annotations

import hashlib
import math
import types
from collections import OrderedDict
from dataclasses import dataclass
from functools import cmp_to_key, lru_cache
from operator import mul

import mpmath
import numpy as np
import sympy
from mpmath import libmp

from . import _exactdot as K
from .activations import Y, Activation, get_activation
from .arrays import real_array
from .errors import FormatSpecError, MixaccError, ModelFileError, ShapeError
from .registry import Registry

__all__ = ["exact_linear", "exact_layer", "exact_forward", "ExactForward", "PATHS", "DEFAULT_TOL", "FAST_TOL_MIN"]

DEFAULT_TOL = 2.0**-60
FAST_TOL_MIN = 2.0**-80
GUARD_BITS = 24
MAX_DOUBLINGS = 4
BATCH = 2048  # samples per fast pass: memory ~ 12 (BATCH, width) float64 arrays
_SLACK = 1.0 + 2.0**-40
ABS_FLOOR = 2.0**-1060  # a radius this small is certified whatever the value (2^-60 of 2^-1000)


@dataclass(frozen=True)
class Path:
    """An evaluation path of the reference."""

    name: str
    description: str


PATHS: Registry[Path] = Registry("reference path")
for _p in (
    Path("fast", "compensated float64 / double-double with proven bounds, mpmath where they fall short"),
    Path("mpmath", "exact integer inner products and mpmath activations (the definition)"),
):
    PATHS.add(_p.name, _p)


@dataclass
class ExactForward:
    """The exact forward pass, per layer: ``preactivations`` and ``outputs`` (float64
    nearest the carried values), ``pre_radius`` / ``out_radius`` >= |float64 - exact|,
    ``certified`` (carried value within ``tol`` relative of the exact one), ``fallback``
    (components whose activation or whole sample went through the mpmath path). ``mp_*``
    hold the mpmath numbers (``mpmath.matrix`` (N, m)) and bounds on their distance to
    the exact values when the mpmath path ran for every sample, else None."""

    preactivations: list
    outputs: list
    pre_radius: list
    out_radius: list
    certified: list
    fallback: list
    precision: int
    tol: float
    path: str
    mp_preactivations: list | None = None
    mp_outputs: list | None = None
    mp_pre_radius: list | None = None
    mp_out_radius: list | None = None


# ---------------------------------------------------------------------------------------
# activation models: which dd kernel, which shape (for the two-ends enclosure)


@dataclass(frozen=True)
class _Model:
    code: int | None  # dd kernel (None: mpmath for every value)
    shape: int | None  # K.SHAPE_INCREASING, K.SHAPE_UNIMODAL (minimum at y0), None unknown
    y0: float
    lipschitz: float  # max |sigma'| (unimodal enclosures that contain the minimum)
    alpha: float


def _signed(alpha: float, code: int) -> _Model:
    inc = alpha >= 0
    return _Model(code, K.SHAPE_INCREASING if inc else K.SHAPE_UNIMODAL, 0.0, max(1.0, abs(alpha)), alpha)


_MODELS = {
    "relu": lambda a: _Model(K.ACT_RELU, K.SHAPE_INCREASING, 0.0, 1.0, 0.0),
    "identity": lambda a: _Model(K.ACT_IDENTITY, K.SHAPE_INCREASING, 0.0, 1.0, 0.0),
    "leaky_relu": lambda a: _signed(0.01 if a is None else a, K.ACT_LEAKY),
    "elu": lambda a: _signed(1.0 if a is None else a, K.ACT_ELU),
    "tanh": lambda a: _Model(K.ACT_TANH, K.SHAPE_INCREASING, 0.0, 1.0, 0.0),
    "sigmoid": lambda a: _Model(K.ACT_SIGMOID, K.SHAPE_INCREASING, 0.0, 0.25, 0.0),
    "softplus": lambda a: _Model(K.ACT_SOFTPLUS, K.SHAPE_INCREASING, 0.0, 1.0, 0.0),
    "silu": lambda a: _Model(K.ACT_SILU, K.SHAPE_UNIMODAL, _minimiser("silu", -1.28), 1.2, 0.0),
    "gelu": lambda a: _Model(K.ACT_GELU, K.SHAPE_UNIMODAL, _minimiser("gelu", -0.75), 1.2, 0.0),
    "gelu_tanh": lambda a: _Model(K.ACT_GELU_TANH, K.SHAPE_UNIMODAL, _minimiser("gelu_tanh", -0.75), 1.2, 0.0),
}
_UNKNOWN = _Model(None, None, 0.0, math.inf, 0.0)


@lru_cache(maxsize=None)
def _minimiser(name: str, guess: float) -> float:
    """The zero of sigma' (to ~1e-25; the kernels keep 1e-9 away from it)."""
    f = get_activation(name).mp
    with mpmath.workprec(100):
        return float(mpmath.findroot(lambda t: mpmath.diff(f, t), guess))


@lru_cache(maxsize=256)
def _model(act: Activation) -> _Model:
    """The model of a registered activation (checked by its sympy form, so a renamed
    custom row is not mistaken for it); anything else is unknown."""
    base, _, arg = act.name.partition(":")
    if base not in _MODELS:
        return _UNKNOWN
    try:
        registered = get_activation(act.name)
    except MixaccError:
        return _UNKNOWN
    if registered.expr != act.expr:
        return _UNKNOWN
    return _MODELS[base](float(arg) if arg else None)


# ---------------------------------------------------------------------------------------
# exact numbers: float64 and mpmath values as (integer mantissa, exponent)


def _man_exp(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a = man 2^exp exactly (man int64 with |man| < 2^53)."""
    f, e = np.frexp(a)
    return (f * 2.0**53).astype(np.int64), e.astype(np.int64) - 53


def _rn(man: int, exp: int) -> float:
    """RN(man 2^exp) to float64 (CPython int -> float and int / int are correctly
    rounded, subnormals included); overflow gives +-inf."""
    try:
        return float(man << exp) if exp >= 0 else man / (1 << -exp)
    except OverflowError:
        return math.inf if man > 0 else -math.inf


def _raw(man: int, exp: int):
    return libmp.from_man_exp(man, exp)


def _raw_man_exp(raw) -> tuple[int, int]:
    sign, man, exp, _ = raw
    return (-man if sign else man), exp


def _raw_dd(raw) -> tuple[float, float, float]:
    """(h, l, err): the dd nearest to the exact number ``raw`` (h = RN(v), l = RN(v - h))
    and err >= |h + l - v|."""
    man, exp = _raw_man_exp(raw)
    h = _rn(man, exp)
    if not math.isfinite(h):
        return h, 0.0, math.inf
    f, he = math.frexp(h)
    hm, he = int(f * 2.0**53), he - 53
    lo_exp = min(exp, he)
    rem = (man << (exp - lo_exp)) - (hm << (he - lo_exp))
    l = _rn(rem, lo_exp)
    return h, l, abs(l) * 2.0**-52 + K.MIN_SUBNORMAL


def _up(raw) -> float:
    """A float64 >= |raw|."""
    f = libmp.to_float(libmp.mpf_abs(raw), rnd=libmp.round_ceiling)
    return f * (1.0 + 2.0**-52) + K.MIN_SUBNORMAL


def _meets(value: np.ndarray, radius: np.ndarray, tol: float) -> np.ndarray:
    """radius <= tol |exact| for every exact value within radius of ``value`` (a float64
    within a relative 2^-50 of the carried value), or radius <= ABS_FLOOR (values below
    the float64 range, whose final rounding is larger than the value itself)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return (radius * _SLACK <= tol * (np.abs(value) * (1.0 - 2.0**-50) - radius)) | (radius <= ABS_FLOOR)


# ---------------------------------------------------------------------------------------
# validation


def _positive_int(precision, name="precision") -> int:
    if isinstance(precision, bool) or not isinstance(precision, (int, np.integer)):
        raise FormatSpecError(f"{name} == {precision!r}, must be an integer number of bits >= 53.")
    if not 53 <= precision <= 1_000_000:
        raise FormatSpecError(f"{name} == {precision}, must be between 53 and 1000000 bits.")
    return int(precision)


def _check_tol(tol) -> float:
    try:
        t = float(tol)
    except (TypeError, ValueError):
        raise FormatSpecError(f"tol == {tol!r}, must be a number in (0, 1).") from None
    if not 0.0 < t < 1.0:
        raise FormatSpecError(f"tol == {tol!r}, must be in (0, 1).")
    return t


@dataclass(frozen=True)
class _Layer:
    W: np.ndarray  # (m, n) C-contiguous
    WT: np.ndarray  # (n, m) C-contiguous
    b: np.ndarray  # (m,), zeros without bias
    act: Activation
    model: _Model


def _layer(W, b, act, where: str) -> _Layer:
    W = real_array(W, f"{where} weight", ndim=2, nonempty=True, finite=True)
    if W.shape[1] > K.MAX_TERMS:
        raise ShapeError(f"{where} has {W.shape[1]} inputs, at most {K.MAX_TERMS} are supported.")
    if b is None:
        b = np.zeros(W.shape[0])
    else:
        b = real_array(b, f"{where} bias", ndim=1, finite=True)
        if b.shape != (W.shape[0],):
            raise ShapeError(f"{where} bias has shape {b.shape}, expected ({W.shape[0]},).")
    act = get_activation(act)
    return _Layer(W, np.ascontiguousarray(W.T), b, act, _model(act))


def _layers(network) -> list[_Layer]:
    layers = getattr(network, "layers", None)
    if layers is None or isinstance(layers, (str, bytes)):
        raise ModelFileError(f"{type(network).__name__} has no 'layers': expected a network with a list of layers.")
    out = []
    for k, layer in enumerate(layers):
        for attr in ("weight", "bias", "activation"):
            if not hasattr(layer, attr):
                raise ModelFileError(f"layer {k} has no attribute {attr!r} (needs weight, bias, activation).")
        out.append(_layer(layer.weight, layer.bias, layer.activation, f"layer {k}"))
        if k and out[k].W.shape[1] != out[k - 1].W.shape[0]:
            n, m = out[k].W.shape[1], out[k - 1].W.shape[0]
            raise ShapeError(f"layer {k} takes {n} inputs but layer {k - 1} has {m} outputs.")
    if not out:
        raise ModelFileError("the network has no layers.")
    return out


def _input(x, n: int) -> tuple[np.ndarray, bool]:
    X = real_array(x, "x", ndim=(1, 2), finite=True)
    single = X.ndim == 1
    X = np.ascontiguousarray(X.reshape(1, -1) if single else X)
    if X.shape[1] != n:
        raise ShapeError(f"x has {X.shape[1]} features per sample, the first layer takes {n}.")
    return X, single


# ---------------------------------------------------------------------------------------
# exact linear layer


def _int_rows(W: np.ndarray) -> tuple[list, list]:
    """Rows of W as Python integers on a common exponent per row: W[i] = ints[i] 2^e[i]."""
    man, exp = _man_exp(W)
    ints, exps = [], []
    for mr, er in zip(man.tolist(), exp.tolist()):
        nz = [e for m_, e in zip(mr, er) if m_]
        e0 = min(nz) if nz else 0
        ints.append([m_ << (e - e0) if m_ else 0 for m_, e in zip(mr, er)])
        exps.append(e0)
    return ints, exps


def _int_vector(values) -> tuple[list, int]:
    """Exact numbers given as (man, exp) pairs on a common exponent: ints 2^e0."""
    pairs = list(values)
    nz = [e for m_, e in pairs if m_]
    e0 = min(nz) if nz else 0
    return [m_ << (e - e0) if m_ else 0 for m_, e in pairs], e0


class _IntLayer:
    """A layer in integers for the exact (mpmath-path) inner products."""

    def __init__(self, layer: _Layer):
        self.rows, self.exps = _int_rows(layer.W)
        bm, be = _man_exp(layer.b)
        self.bias = list(zip(bm.tolist(), be.tolist()))

    def dot(self, i: int, xs: list, xe: int) -> tuple[int, int]:
        """b_i + sum_j w_ij x_j exactly, as (man, exp)."""
        total = sum(map(mul, self.rows[i], xs))
        exp = self.exps[i] + xe
        bm, be = self.bias[i]
        if bm:
            if be >= exp:
                total += bm << (be - exp)
            else:
                total = (total << (exp - be)) + bm
                exp = be
        return total, exp


_INT_LAYERS: "OrderedDict[bytes, _IntLayer]" = OrderedDict()
_INT_LAYER_CACHE = 8


def _int_layer(layer: _Layer) -> _IntLayer:
    """The integer form of ``layer``, cached by the digest of its weights and bias (the
    few layers a validation revisits batch after batch are converted once)."""
    h = hashlib.blake2b(digest_size=16)
    for a in (layer.W, layer.b):
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a).view(np.uint8))
    key = h.digest()
    if key not in _INT_LAYERS:
        _INT_LAYERS[key] = _IntLayer(layer)
        while len(_INT_LAYERS) > _INT_LAYER_CACHE:
            _INT_LAYERS.popitem(last=False)
    _INT_LAYERS.move_to_end(key)
    return _INT_LAYERS[key]


def _f64_pairs(row: np.ndarray):
    man, exp = _man_exp(row)
    return zip(man.tolist(), exp.tolist())


def exact_linear(x, W, b=None, precision: int = 113, *, path: str = "fast") -> np.ndarray:
    """RN(W x + b): the float64 nearest (ties to even) to the exact value of each
    component. x (N, n) or (n,), W (m, n), b (m,) or None -> (N, m) or (m,). Results
    beyond the float64 range are +-inf. ``precision`` is accepted for the common
    signature (the result is exact at any precision)."""
    _positive_int(precision)
    PATHS.get(path)
    layer = _layer(W, b, "identity", "linear layer")
    X, single = _input(x, layer.W.shape[1])
    if path == "mpmath":
        out = _linear_int(X, layer, np.ones((X.shape[0], layer.W.shape[0]), dtype=bool))
    else:
        out = _linear_fast(X, layer)
    return out[0] if single else out


def _compensated(XH, XL, XR, layer: _Layer):
    """``_exactdot.compensated_dot`` on fresh arrays: (YH, YL, YE, YR, BAD)."""
    N, m = XH.shape[0], layer.W.shape[0]
    YH, YL, YE, YR = (np.empty((N, m)) for _ in range(4))
    BAD = np.empty((N, m), dtype=np.bool_)
    K.compensated_dot(XH, XL, XR, layer.WT, layer.b, YH, YL, YE, YR, BAD)
    return YH, YL, YE, YR, BAD


def _linear_fast(X: np.ndarray, layer: _Layer) -> np.ndarray:
    zeros = np.zeros_like(X)
    YH, YL, YE, _, BAD = _compensated(X, zeros, zeros, layer)
    return _round_nearest(X, layer, YH, YL, YE, ~BAD)


def _round_nearest(X, layer: _Layer, YH, YL, YE, valid) -> np.ndarray:
    """RN of the exact values b + W x (x float64): YH where the dd (YH, YL) with error YE
    (valid where ``valid``) decides it, else an exact expansion sum, else integers."""
    N, m = YH.shape
    ok = np.zeros(N * m, dtype=np.bool_)
    K.rn_certified(YH.ravel(), YL.ravel(), YE.ravel(), ok)
    ok = ok.reshape(N, m) & valid
    out = YH.copy()
    if not ok.all():
        rows, cols = np.nonzero(~ok)
        vals = np.empty(rows.shape[0])
        exact = np.empty(rows.shape[0], dtype=np.bool_)
        K.exact_rn(X, layer.W, layer.b, rows, cols, vals, exact)
        out[rows[exact], cols[exact]] = vals[exact]
        left = np.zeros((N, m), dtype=bool)
        left[rows[~exact], cols[~exact]] = True
        if left.any():
            out[left] = _linear_int(X, layer, left)[left]
    return out


def _linear_int(X: np.ndarray, layer: _Layer, mask: np.ndarray) -> np.ndarray:
    """RN of the exact value, in Python integers, for the components in ``mask``."""
    ints = _int_layer(layer)
    out = np.zeros(mask.shape)
    for s in np.unique(np.nonzero(mask)[0]):
        xs, xe = _int_vector(_f64_pairs(X[s]))
        for i in np.nonzero(mask[s])[0]:
            out[s, i] = _rn(*ints.dot(int(i), xs, xe))
    return out


# ---------------------------------------------------------------------------------------
# mpmath path


@lru_cache(maxsize=64)
def _sympy_derivative(act: Activation):
    return sympy.lambdify(Y, sympy.diff(act.expr, Y), modules="mpmath")


def _eval(act: Activation, raw, prec: int):
    """sigma at the exact number ``raw``, by mpmath at ``prec`` bits (a raw result)."""
    with mpmath.workprec(prec):
        return mpmath.mpf(act.mp(mpmath.mp.make_mpf(raw)))._mpf_


def _mp_enclose(act: Activation, model: _Model, y, ry: float, prec: int):
    """(centre, radius): sigma over [y - ry, y + ry] (y an exact mpmath raw number) is
    within ``radius`` (a float64) of ``centre`` (a raw number of prec + GUARD_BITS bits).
    mpmath's sigma at w = prec + GUARD_BITS bits is trusted to 2^-prec relative."""
    w = prec + GUARD_BITS
    rel = libmp.from_man_exp(1, -prec)
    r = libmp.from_float(float(ry))
    if model.shape is None:
        return _mp_enclose_unknown(act, y, r, prec)
    if ry == 0.0 and y[3] <= w:
        ends = [y]
    else:
        ends = [libmp.mpf_sub(y, r, w, libmp.round_floor), libmp.mpf_add(y, r, w, libmp.round_ceiling)]
    vals = sorted((_eval(act, e, w) for e in ends), key=_ORDER)
    low, high = vals[0], vals[-1]
    err = libmp.mpf_mul(max(libmp.mpf_abs(low), libmp.mpf_abs(high), key=_ORDER), rel)
    if model.shape == K.SHAPE_UNIMODAL and len(ends) == 2:
        lo_f, hi_f = libmp.to_float(ends[0]), libmp.to_float(ends[1])
        if not (hi_f < model.y0 - 1e-9 or lo_f > model.y0 + 1e-9):
            width = libmp.mpf_sub(ends[1], ends[0])
            low = libmp.mpf_sub(low, libmp.mpf_mul(libmp.from_float(model.lipschitz), width))
    return _centre(low, high, err, w)


_ORDER = cmp_to_key(libmp.mpf_cmp)


def _centre(low, high, err, w: int):
    """Centre (w bits) and float radius of [low - err, high + err]."""
    mid = libmp.mpf_shift(libmp.mpf_add(low, high), -1)
    c = libmp.mpf_pos(mid, w, libmp.round_nearest)
    half = libmp.mpf_shift(libmp.mpf_sub(high, low), -1)
    radius = libmp.mpf_add(libmp.mpf_add(libmp.mpf_abs(half), err), libmp.mpf_abs(libmp.mpf_sub(c, mid)))
    return c, _up(radius)


def _mp_enclose_unknown(act: Activation, y, r, prec: int):
    """sympy activations: sigma(y) at w and 2w bits (their difference plus 2^-prec
    relative bounds the evaluation) and |sigma'(y)| r (first order) for the interval."""
    w = prec + GUARD_BITS
    v = _eval(act, y, w)
    v2 = _eval(act, y, 2 * w)
    rel = libmp.mpf_mul(libmp.mpf_abs(v), libmp.from_man_exp(1, -prec))
    err = libmp.mpf_add(libmp.mpf_abs(libmp.mpf_sub(v, v2)), rel)
    if r != libmp.fzero:
        with mpmath.workprec(w):
            d = mpmath.mpf(_sympy_derivative(act)(mpmath.mp.make_mpf(y)))._mpf_
        slope = libmp.mpf_mul(libmp.mpf_abs(d), libmp.from_float(1.0 + 2.0**-10))
        err = libmp.mpf_add(err, libmp.mpf_mul(slope, r))
    return _centre(v, v, err, w)


class _Chain:
    """One sample through the mpmath path at a given precision: per layer, the exact
    pre-activations (raw), their radii (float64 >= |raw - exact|), the output centres
    and radii."""

    def __init__(self, layers: list[_Layer], ints: list[_IntLayer], x: np.ndarray, prec: int):
        self.pre, self.pre_r, self.out, self.out_r = [], [], [], []
        self._floats: dict = {}
        xs = [_raw(m_, e) for m_, e in _f64_pairs(x)]
        r = np.zeros(x.shape[0])
        for layer, il in zip(layers, ints):
            vec, e0 = _int_vector(_raw_man_exp(v) for v in xs)
            pre = [_raw(*il.dot(i, vec, e0)) for i in range(layer.W.shape[0])]
            pre_r = _propagated(layer.W, r)
            outs = [_mp_enclose(layer.act, layer.model, y, float(ry), prec) for y, ry in zip(pre, pre_r)]
            xs = [c for c, _ in outs]
            r = np.array([rad for _, rad in outs])
            self.pre.append(pre)
            self.pre_r.append(pre_r)
            self.out.append(xs)
            self.out_r.append(r)

    def floats(self, k: int, which: str) -> "_Values":
        """Layer k's pre-activations (``which`` = "pre") or outputs as float64 arrays."""
        if (k, which) not in self._floats:
            self._floats[k, which] = self._convert(k, which)
        return self._floats[k, which]

    def _convert(self, k: int, which: str) -> "_Values":
        vals, rad = (self.pre[k], self.pre_r[k]) if which == "pre" else (self.out[k], self.out_r[k])
        dd = np.array([_raw_dd(v) for v in vals]).reshape(-1, 3)
        h, l, e = dd[:, 0], dd[:, 1], dd[:, 2]
        with np.errstate(invalid="ignore"):
            return _Values(h, l, (e + rad) * K.INFLATE, rad, (np.abs(l) + e + rad) * K.INFLATE)


@dataclass
class _Values:
    """Values of one layer of a chain: the dd (hi, lo) nearest the mpmath numbers with
    radius ``dd_radius``; ``mp_radius`` of the mpmath numbers themselves; hi = RN(mpmath
    number) is the float64 value, within ``radius`` of the exact one."""

    hi: np.ndarray
    lo: np.ndarray
    dd_radius: np.ndarray
    mp_radius: np.ndarray
    radius: np.ndarray


def _propagated(W: np.ndarray, r: np.ndarray) -> np.ndarray:
    """An upper bound on |W| r in float64: the computed sum of n nonnegative products is
    within gamma_(n+1) < 2 (n+1) u of the exact one, plus 2^-1074 per underflowing product."""
    if not r.any():
        return np.zeros(W.shape[0])
    n = W.shape[1]
    return (np.abs(W) @ r) * ((1.0 + 2.0 * (n + 1) * 2.0**-53) * K.INFLATE) + (n + 1) * K.MIN_SUBNORMAL


def _certified_chain(layers, ints, x, precision: int, tol: float) -> _Chain:
    """The mpmath path for one sample, doubling the precision until every radius meets
    ``tol`` (at most MAX_DOUBLINGS times)."""
    prec = precision
    for _ in range(MAX_DOUBLINGS + 1):
        chain = _Chain(layers, ints, x, prec)
        if all(_chain_meets(chain, k, tol).all() for k in range(len(layers))):
            break
        prec *= 2
    return chain


def _chain_meets(chain: _Chain, k: int, tol: float) -> np.ndarray:
    pre, out = chain.floats(k, "pre"), chain.floats(k, "out")
    return _meets(pre.hi, pre.mp_radius, tol) & _meets(out.hi, out.mp_radius, tol)


# ---------------------------------------------------------------------------------------
# forward passes


def exact_forward(network, x, precision: int = 113, tol: float = DEFAULT_TOL, *, path: str = "fast") -> ExactForward:
    """The exact forward pass of ``network`` (``.layers``, each with ``.weight`` (m, n),
    ``.bias`` (m,) or None, ``.activation``) at the float64 input x (N, n) or (n,).
    Every value comes with a radius >= its distance to the exact value; by default the
    carried value is within ``tol`` = 2^-60 relative of it (``certified``), so the
    radius is at most the final rounding to float64 plus tol |exact|. ``precision`` is the
    working precision (bits) of the mpmath path; ``path`` is "fast" or "mpmath"; tol below
    FAST_TOL_MIN runs the mpmath path and returns its numbers in ``mp_*``."""
    precision = _positive_int(precision)
    tol = _check_tol(tol)
    PATHS.get(path)
    layers = _layers(network)
    X, single = _input(x, layers[0].W.shape[1])
    if path == "mpmath" or tol < FAST_TOL_MIN:
        result = _forward_mp(layers, X, precision, tol)
    else:
        parts = [_forward_fast(layers, X[s:s + BATCH], precision, tol) for s in range(0, X.shape[0], BATCH)]
        result = parts[0] if len(parts) == 1 else _concatenate(parts)
    if single:
        for name in ("preactivations", "outputs", "pre_radius", "out_radius", "certified", "fallback",
                     "mp_pre_radius", "mp_out_radius"):
            values = getattr(result, name)
            if values is not None:
                setattr(result, name, [v[0] for v in values])
    return result


def _concatenate(parts: list[ExactForward]) -> ExactForward:
    """The batches of a fast pass, joined along the samples."""
    names = ("preactivations", "outputs", "pre_radius", "out_radius", "certified", "fallback")
    joined = {name: [np.concatenate(arrays) for arrays in zip(*(getattr(p, name) for p in parts))] for name in names}
    return ExactForward(**joined, precision=parts[0].precision, tol=parts[0].tol, path=parts[0].path)


def exact_layer(x, layer, precision: int = 113) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One layer evaluated exactly at the float64 input x (the local reference):
    (pre, pre_radius, out, out_radius); pre = RN(W x + b) exactly."""
    f = exact_forward(types.SimpleNamespace(layers=[layer]), x, precision)
    return f.preactivations[0], f.pre_radius[0], f.outputs[0], f.out_radius[0]


def _forward_mp(layers, X, precision, tol) -> ExactForward:
    ints = [_int_layer(layer) for layer in layers]
    chains = [_certified_chain(layers, ints, X[s], precision, tol) for s in range(X.shape[0])]
    res = ExactForward([], [], [], [], [], [], precision, tol, "mpmath", [], [], [], [])
    for k in range(len(layers)):
        pre = [c.floats(k, "pre") for c in chains]
        out = [c.floats(k, "out") for c in chains]
        res.preactivations.append(np.array([v.hi for v in pre]))
        res.pre_radius.append(np.array([v.radius for v in pre]))
        res.mp_pre_radius.append(np.array([v.mp_radius for v in pre]))
        res.mp_preactivations.append(_matrix([c.pre[k] for c in chains]))
        res.outputs.append(np.array([v.hi for v in out]))
        res.out_radius.append(np.array([v.radius for v in out]))
        res.mp_out_radius.append(np.array([v.mp_radius for v in out]))
        res.mp_outputs.append(_matrix([c.out[k] for c in chains]))
        res.certified.append(np.array([_chain_meets(c, k, tol) for c in chains]))
        res.fallback.append(np.ones(res.outputs[-1].shape, dtype=bool))
    return res


def _matrix(rows: list) -> mpmath.matrix:
    mat = mpmath.matrix(len(rows), len(rows[0]))
    for s, row in enumerate(rows):
        for i, v in enumerate(row):
            mat[s, i] = mpmath.mp.make_mpf(v)
    return mat


def _forward_fast(layers, X, precision, tol) -> ExactForward:
    N = X.shape[0]
    XH, XL, XR = X, np.zeros_like(X), np.zeros_like(X)
    ints = None
    chains: dict[int, _Chain] = {}
    res = ExactForward([], [], [], [], [], [], precision, tol, "fast")
    for k, layer in enumerate(layers):
        m = layer.W.shape[0]
        YH, YL, YE, YR, BAD = _compensated(XH, XL, XR, layer)
        ok_pre = ~BAD & _meets(YH, YE + YR, tol)
        retry = ~ok_pre & (BAD | _meets(YH, 2.0 * YR, tol))
        if retry.any():
            _exact_tier(XH, XL, layer, retry, YH, YL, YE)
            ok_pre = _meets(YH, YE + YR, tol) & np.isfinite(YH)
        RY = (YE + YR) * K.INFLATE
        if k == 0:
            pre = _round_nearest(XH, layer, YH, YL, YE, ~BAD | retry)
            with np.errstate(invalid="ignore"):
                pre_rad = np.where(np.isfinite(pre), (np.abs(pre - YH) * K.INFLATE + np.abs(YL) + YE) * K.INFLATE, np.inf)
        else:
            pre, pre_rad = YH.copy(), (np.abs(YL) + RY) * K.INFLATE
        ZH, ZL, RZ = (np.zeros((N, m)) for _ in range(3))
        ok_act = np.zeros(N * m, dtype=np.bool_)
        model = layer.model
        if model.code is not None:
            K.enclose_activation(model.code, model.alpha, model.shape, model.y0, YH.ravel(), YL.ravel(), RY.ravel(),
                                 ZH.ravel(), ZL.ravel(), RZ.ravel(), ok_act)
        ok_act = ok_act.reshape(N, m) & ok_pre
        todo = ok_pre & ~ok_act
        if todo.any():
            _mp_activation(layer, todo, YH, YL, RY, ZH, ZL, RZ, precision)
        ok_out = _meets(ZH, RZ, tol) & ok_pre
        failed = np.nonzero(~ok_out.all(axis=1))[0]
        new = [int(s) for s in failed if int(s) not in chains]
        if new:
            ints = ints or [_int_layer(layer_) for layer_ in layers]
            for s in new:
                chains[s] = _certified_chain(layers, ints, X[s], precision, tol)
        fallback = todo.copy()
        certified = ok_out.copy()
        out_rad = (np.abs(ZL) + RZ) * K.INFLATE
        for s, chain in chains.items():
            p, z = chain.floats(k, "pre"), chain.floats(k, "out")
            pre[s], pre_rad[s], ZH[s], ZL[s], RZ[s], out_rad[s] = p.hi, p.radius, z.hi, z.lo, z.dd_radius, z.radius
            certified[s] = _meets(p.hi, p.mp_radius, tol) & _meets(z.hi, z.mp_radius, tol)
            fallback[s] = True
        res.preactivations.append(pre)
        res.pre_radius.append(pre_rad)
        res.outputs.append(ZH.copy())
        res.out_radius.append(out_rad)
        res.certified.append(certified)
        res.fallback.append(fallback)
        XH, XL, XR = ZH, ZL, RZ
    return res


def _exact_tier(XH, XL, layer: _Layer, mask, YH, YL, YE) -> None:
    """Replace the compensated values of the masked components by exact sums (an
    expansion in numba; Python integers where a product is not error-free)."""
    rows, cols = np.nonzero(mask)
    h, l, e = (np.empty(rows.shape[0]) for _ in range(3))
    ok = np.empty(rows.shape[0], dtype=np.bool_)
    K.exact_dot_dd(XH, XL, layer.W, layer.b, rows, cols, h, l, e, ok)
    YH[rows, cols], YL[rows, cols], YE[rows, cols] = h, l, e
    if not ok.all():
        ints = _int_layer(layer)
        n = XH.shape[1]
        for s, i in zip(rows[~ok], cols[~ok]):
            xs, xe = _int_vector([*_f64_pairs(XH[s]), *_f64_pairs(XL[s])])
            with_bias, exp = ints.dot(int(i), xs[:n], xe)
            low = sum(map(mul, ints.rows[i], xs[n:]))  # at exponent ints.exps[i] + xe >= exp
            total = with_bias + (low << (ints.exps[i] + xe - exp))
            YH[s, i], YL[s, i], YE[s, i] = _raw_dd(_raw(total, exp))


def _mp_activation(layer: _Layer, mask, YH, YL, RY, ZH, ZL, RZ, precision: int) -> None:
    """sigma by mpmath (``_mp_enclose``) for the masked components, once per distinct
    input interval."""
    cache = {}
    for s, i in zip(*np.nonzero(mask)):
        key = (YH[s, i], YL[s, i], RY[s, i])
        if key not in cache:
            y = libmp.mpf_add(libmp.from_float(float(key[0])), libmp.from_float(float(key[1])))
            c, r = _mp_enclose(layer.act, layer.model, y, float(key[2]), precision)
            h, l, e = _raw_dd(c)
            cache[key] = (h, l, (r + e) * K.INFLATE)
        ZH[s, i], ZL[s, i], RZ[s, i] = cache[key]
