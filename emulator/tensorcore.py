"""Block-FMA accumulation: GPU tensor cores as MMA-Sim models them
(docs/method.md#tensor-core-accumulation).

One fused step adds C and ``step`` exact products A_j B_j: every term t (C, or a product
whose operand exponents are e_a, e_b: its exponent E_t = e_a + e_b) is truncated toward
zero to a multiple of 2^(M - F), M = max_t E_t and F the fraction bits kept; the
truncated terms are added exactly and the sum is rounded once to the output format
(toward zero for fp32, to nearest even for fp16). An operand's exponent is
max(floor(log2 |v|), emin of its format) (a subnormal keeps emin; zeros never set M);
C's is the same in the output format. A length n is done in steps of ``step`` in
increasing order, C_0 = b rounded to nearest in C's register format (fp32 for the 13-bit
fp32 variant, else the output format), C_{t+1} = D_t; with ``promote=N`` every N
products start from C = 0 and their D is added into an fp32 accumulator rounded to
nearest, which starts from round_fp32(b).

Specs::

    tensorcore:ARCH:INPUT[:out=fp16][:promote=N]      a preset from ARCHITECTURES
    blockfma:STEP:F:OUT[:rz|rn][:in=FMT][:promote=N]  free parameters

``in=FMT`` (a format or an MX format) fixes the operands' exponent convention; without it
an operand's exponent is that of its float64 value.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FormatSpecError
from .formats import Format, get_format
from .mx import MX_FORMATS, MXFormat, get_mx
from .registry import Registry

__all__ = ["BlockFMA", "TensorCoreShape", "Architecture", "ARCHITECTURES", "parse_blockfma", "HARDWARE_KINDS",
           "operand_format", "MAX_SUM_BITS"]

FP32, FP16 = get_format("fp32"), get_format("fp16")
FP32_E8M13 = get_format("e8m13")  # fp32's exponent range, 13 fraction bits (Ada / Hopper fp8)
MAX_SUM_BITS = 53  # a step's aligned integer sum must be exact in float64
HARDWARE_KINDS = ("tensorcore", "blockfma")
_ROUNDING = {"rz": "zero", "rn": "nearest"}


@dataclass(frozen=True)
class BlockFMA:
    """A block-FMA model: ``step`` products per fused step (``group`` products summed
    exactly into one term, exponent = the block scales', MX fp4 only), ``fraction_bits``
    F, output format ``out`` rounded ``rounding`` ("zero" or "nearest"), the operands'
    format ``inputs`` (None: float64 exponents), ``promote`` N (0: none). ``arch`` and
    ``k`` name the preset it came from (None, 0 for ``blockfma``)."""

    step: int
    fraction_bits: int
    out: Format
    rounding: str = "zero"
    inputs: "Format | MXFormat | None" = None
    promote: int = 0
    arch: "str | None" = None
    k: int = 0
    group: int = 1

    @property
    def kind(self) -> str:
        return "tensorcore" if self.arch else "blockfma"

    @property
    def register(self) -> Format:
        """The format C is held in: fp32 for the 13-bit fp32 variant (its C operand is a
        full fp32 register), else ``out``."""
        return FP32 if self.out == FP32_E8M13 else self.out

    @property
    def output(self) -> Format:
        """The format of the result: fp32 with promotion, else ``out``."""
        return FP32 if self.promote else self.out

    @property
    def spec(self) -> str:
        promote = [f"promote={self.promote}"] if self.promote else []
        if self.arch:
            out = ["out=fp16"] if self.out == FP16 else []
            return ":".join(["tensorcore", self.arch, self.inputs.name, *out, *promote])
        rnd = ["rn"] if self.rounding == "nearest" else []
        inputs = [f"in={self.inputs.name}"] if self.inputs is not None else []
        return ":".join(["blockfma", str(self.step), str(self.fraction_bits), self.out.name, *rnd, *inputs, *promote])

    def describe(self) -> dict:
        return {"kind": self.kind, "arch": self.arch, "k": self.k or None, "step": self.step,
                "fraction_bits": self.fraction_bits, "out": self.out.name, "out_rounding": self.rounding,
                "inputs": None if self.inputs is None else self.inputs.name, "group": self.group,
                "promote": self.promote or None}


@dataclass(frozen=True)
class TensorCoreShape:
    """One input format on one architecture: k products per instruction, ``step`` per
    fused step, F fraction bits kept, the fp32 output format (fp32 or its 13-bit
    variant), whether fp16 output exists, ``group`` (block-scaled fp4 only)."""

    k: int
    step: int
    fraction_bits: int
    out32: Format = FP32
    fp16_out: bool = True
    group: int = 1


@dataclass(frozen=True)
class Architecture:
    """A GPU generation: its name, the instruction MMA-Sim models, the shapes by input."""

    name: str
    instruction: str
    shapes: dict


def _fp8(shape: TensorCoreShape) -> dict:
    return {"fp8-e4m3fn": shape, "fp8-e5m2": shape}


ARCHITECTURES: Registry[Architecture] = Registry("tensor-core architecture")
for _arch in (
    Architecture("v100", "Volta mma.m8n8k4", {"fp16": TensorCoreShape(4, 4, 23)}),
    Architecture("a100", "Ampere mma.sync (k split in two steps)", {
        "fp16": TensorCoreShape(16, 8, 24), "bf16": TensorCoreShape(16, 8, 24),
        "tf32": TensorCoreShape(8, 4, 24, fp16_out=False)}),
    Architecture("ada", "Ada Lovelace mma.sync (k split in two steps)",
                 _fp8(TensorCoreShape(32, 16, 13, FP32_E8M13))),
    Architecture("h100", "Hopper wgmma", {
        "fp16": TensorCoreShape(16, 16, 25), "bf16": TensorCoreShape(16, 16, 25),
        "tf32": TensorCoreShape(8, 8, 25, fp16_out=False), **_fp8(TensorCoreShape(32, 32, 13, FP32_E8M13))}),
    Architecture("b200", "Blackwell tcgen05.mma", {
        "fp16": TensorCoreShape(16, 16, 25), "bf16": TensorCoreShape(16, 16, 25),
        "tf32": TensorCoreShape(8, 8, 25, fp16_out=False), **_fp8(TensorCoreShape(32, 32, 25)),
        "mxfp8-e4m3": TensorCoreShape(32, 32, 25, fp16_out=False),
        "mxfp8-e5m2": TensorCoreShape(32, 32, 25, fp16_out=False),
        "mxfp4-e2m1": TensorCoreShape(64, 64, 35, fp16_out=False, group=16)}),
):
    ARCHITECTURES.add(_arch.name, _arch)


def operand_format(name: str) -> "Format | MXFormat":
    """A format or an MX format by name."""
    return get_mx(name) if name in MX_FORMATS else get_format(name)


def _int(text: str, what: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FormatSpecError(f"{what} == {text!r} in {spec!r}, must be an integer.") from None
    return value


def _options(tokens: list[str], keys: tuple[str, ...], spec: str, flags: tuple[str, ...] = ()) -> tuple[dict, list]:
    opts, flags_seen = {}, []
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if eq and key in keys:
            opts[key] = value.strip()
        elif not eq and tok in flags:
            flags_seen.append(tok)
        else:
            raise FormatSpecError(f"Unknown option {tok!r} in {spec!r}. Possible options are: "
                                  f"{', '.join([*(k + '=' for k in keys), *flags])}.")
    return opts, flags_seen


def _promote(opts: dict, multiple: int, spec: str) -> int:
    if "promote" not in opts:
        return 0
    n = _int(opts["promote"], "promote", spec)
    if n < 1 or n % multiple:
        raise FormatSpecError(f"promote == {n} in {spec!r}, must be a positive multiple of {multiple} "
                              "(the products of one instruction).")
    return n


def _check(model: BlockFMA, spec: str) -> BlockFMA:
    terms = model.step // model.group + 1
    if model.step < 1 or model.step % model.group:
        raise FormatSpecError(f"step == {model.step} in {spec!r}, must be a positive multiple of {model.group}.")
    term_bits = 2 if model.group == 1 else 10  # |a b| < 4 2^E; a group: 16 fp4 products <= 36 each
    if model.fraction_bits < 1 or model.fraction_bits + term_bits + terms.bit_length() > MAX_SUM_BITS:
        raise FormatSpecError(f"F == {model.fraction_bits} in {spec!r}: needs 1 <= F and F + 2 + "
                              f"bits({terms} terms) <= {MAX_SUM_BITS} (the aligned sum must be exact in float64).")
    if model.out.p > 53 - 1 or model.out.specials != "ieee":
        raise FormatSpecError(f"output format {model.out.name} in {spec!r} must be an IEEE-like format (with inf) "
                              "of at most 52 bits of precision.")
    return model


def _tensorcore(tokens: list[str], spec: str) -> BlockFMA:
    if len(tokens) < 2:
        raise FormatSpecError(f"Accumulation spec {spec!r}: takes the form tensorcore:ARCH:INPUT[:out=fp16][:promote=N].")
    arch = ARCHITECTURES.get(tokens[0])
    if tokens[1] not in arch.shapes:
        raise FormatSpecError(f"Architecture {arch.name} ({arch.instruction}) has no input format {tokens[1]!r}; "
                              f"it has: {', '.join(arch.shapes)}.")
    shape = arch.shapes[tokens[1]]
    opts, _ = _options(tokens[2:], ("out", "promote"), spec)
    out = opts.get("out", "fp32")
    if out not in ("fp32", "fp16"):
        raise FormatSpecError(f"out == {out!r} in {spec!r}, must be fp32 or fp16.")
    if out == "fp16" and not shape.fp16_out:
        raise FormatSpecError(f"{arch.name} {tokens[1]} has no fp16 output (out=fp16 in {spec!r}); use out=fp32.")
    out_fmt, rounding = (FP16, "nearest") if out == "fp16" else (shape.out32, "zero")
    return _check(BlockFMA(shape.step, shape.fraction_bits, out_fmt, rounding, operand_format(tokens[1]),
                           _promote(opts, shape.k, spec), arch.name, shape.k, shape.group), spec)


def _blockfma(tokens: list[str], spec: str) -> BlockFMA:
    if len(tokens) < 3:
        raise FormatSpecError(f"Accumulation spec {spec!r}: takes the form blockfma:STEP:F:OUT[:rz|rn][:in=FMT][:promote=N].")
    step, frac = _int(tokens[0], "STEP", spec), _int(tokens[1], "F", spec)
    out = get_format(tokens[2])
    opts, flags = _options(tokens[3:], ("in", "promote"), spec, flags=tuple(_ROUNDING))
    if len(flags) > 1:
        raise FormatSpecError(f"Accumulation spec {spec!r} names more than one output rounding.")
    inputs = operand_format(opts["in"]) if "in" in opts else None
    model = BlockFMA(step, frac, out, _ROUNDING[flags[0]] if flags else "zero", inputs, 0)
    _check(model, spec)
    return BlockFMA(step, frac, out, model.rounding, inputs, _promote(opts, step, spec))


def parse_blockfma(spec: str) -> BlockFMA:
    """The :class:`BlockFMA` of a ``tensorcore:...`` or ``blockfma:...`` spec."""
    head, *tokens = [t.strip() for t in spec.strip().split(":")]
    return _tensorcore(tokens, spec) if head == "tensorcore" else _blockfma(tokens, spec)
