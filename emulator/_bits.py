"""LLVM-level primitives for numba-compiled code: zero-cost reinterpretation of
float64 <-> uint64, and the fused multiply-add."""

from numba import types
from numba.extending import intrinsic


@intrinsic
def f64_bits(typingctx, x):
    """The IEEE 754 bit pattern of a float64, as uint64."""
    sig = types.uint64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint64))

    return sig, codegen


@intrinsic
def bits_f64(typingctx, b):
    """The float64 whose IEEE 754 bit pattern is the uint64 ``b``."""
    sig = types.float64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's llvm.fma.f64: fused on every target, in software
    where the hardware has no FMA)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen
