"""float32 exp and the activations built on it, written so that LLVM vectorises them.

Numba compiles `math.exp` / `math.tanh` / `math.log1p` to calls into the C library: one
value at a time, and slower for some values than others (glibc's exp takes a slow path
for arguments that underflow, and denormal results cost microcode assists on Intel
CPUs). The functions here are straight-line float32 arithmetic and selects (no calls, no
branches left after if-conversion), so a loop over an array of them becomes AVX2/AVX-512
code whose time does not depend on the values.

exp: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for
e^r (the coefficients of Cephes' expf, evaluated by Estrin's scheme: half the dependent
steps of Horner's, so more values are in flight at once), and 2^n added to the exponent
bits of the result (n from -126 to 128: arguments are clamped to where e^x is a normal
float32, and the ends are selected after). Products and sums are fused where the CPU has
FMA (llvm.fmuladd): results can differ by an ulp from a CPU without it. Every activation
then needs one exp:

    logistic(x) = 1 / (1 + e^-x)
    swish(x)    = x / (1 + e^-x)    (one rounding fewer than x * logistic(x))
    tanh(x)     = x + x^3 P(x^2) for |x| < 0.625 (Cephes' tanhf), else
                  sign(x) (1 - 2 / (e^2|x| + 1))
    mish(x)     = x tanh(softplus(x)) = x n / (n + 2),  n = e^x (e^x + 2)

The range ends and NaN are selects after the arithmetic, once per function (a function
built on another does not repeat them): about 0.8 ns a value for exp, 1.1 for logistic
and swish, where each select and each dependent step shows (AMD EPYC, AVX2, one thread).

Accuracy (tests/test_vmath.py measures it against float64 over the whole float32 range,
including |x| > 20, denormals, +-inf and NaN): a few ulp where the exact result is at
least 2^-100 in magnitude; smaller exact results may come back as 0 (absolute error
below 2^-100: no activation value of interest is that small), and inputs under 2^-100
count as 0. No function takes in or makes a denormal number, whose arithmetic costs a
microcode assist on many x86 cores. NaN in, NaN out.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .config import jit

F = np.float32


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the low 32 bits of the integer `bits` (an LLVM
    bitcast: vectorises)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if bits.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(bits), codegen


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float32, as an int32 (a bitcast)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a b + c in float32, fused into one rounding where the CPU has FMA (llvm.fmuladd:
    one vfmadd per vector; separate multiply and add elsewhere)."""
    if not all(t == types.float32 for t in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(f32, [f32, f32, f32]), "llvm.fmuladd.f32")
        return builder.call(fn, args)
    return types.float32(types.float32, types.float32, types.float32), codegen


_LOG2E = F(1.44269504088896341)
_LN2_HI = F(0.693359375)               # ln 2 split so that n * _LN2_HI is exact
_LN2_LO = F(-2.12194440e-4)
_ROUND = F(12582912.0)                 # 1.5 * 2^23: adding and subtracting rounds to integer
_EXP_HI = F(89.0)                      # e^89 overflows: inf (exp_wide's clamp)
_OVER = F(88.72283172607421875)        # the largest float32 x whose e^x is finite in float32
_TINY = F(-87.0)                       # e^-87 ~ 2^-125.5: below, 0 (no denormal is made)
_FLUSH = F(2.0 ** -100)                # inputs smaller than this in magnitude count as 0
_SQRT_EPS = F(2.0 ** -24)              # below, r^2 is lost beside r in float32


@jit(inline="always")
def _ftz(x):
    # |x| < 2^-100 as 0 (NaN kept): arithmetic on denormal numbers, or making them, costs
    # 5-10x on many x86 cores (a microcode assist), so no function here lets one in or
    # makes one; a result that small is documented as possibly 0 anyway
    return F(0.0) if abs(x) < _FLUSH else x


@jit(inline="always")
def _scale2(p, n):
    # p 2^n for integer-valued float32 n in [-126, 129], in two normal steps (2^128 alone
    # is not a float32)
    k = np.int32(n)
    h = k >> 1
    return (p * _f32_from_bits((h + 127) << 23)) * _f32_from_bits((k - h + 127) << 23)


@jit(inline="always")
def _poly(r):
    # e^r - 1 for |r| <= ln2/2 (no 1 added: expm1 needs it without the rounding of 1 + q):
    # r + r^2 P(r), P of degree 5 by Estrin's scheme
    r2 = r * r
    a = _fma(F(1.6666665459e-1), r, F(5.0000001201e-1))
    b = _fma(F(8.3334519073e-3), r, F(4.1665795894e-2))
    c = _fma(F(1.9875691500e-4), r, F(1.3981999507e-3))
    p = _fma(_fma(c, r2, b), r2, a)
    # r^2 is lost beside r below 2^-24 and could be a denormal: zero the factor first
    # (both arms of a select are computed, so selecting the product would not help)
    rs = r if abs(r) >= _SQRT_EPS else F(0.0)
    return _fma(p, rs * rs, r)


@jit(inline="always")
def _reduce(c):
    # c = n ln2 + r, |r| <= ln2/2, for c in [-87, 89]; returns n and e^r - 1
    n = _fma(c, _LOG2E, _ROUND) - _ROUND
    return n, _poly(_fma(n, -_LN2_LO, _fma(n, -_LN2_HI, c)))


@jit(inline="always")
def _pow2(p, n):
    # p 2^n by adding n to p's exponent bits: exact while the result is a normal float32
    return _f32_from_bits(_bits(p) + (np.int32(n) << 23))


@jit(inline="always")
def _exp_in(c):
    """e^c for c in [-87, _OVER] (clamped by the caller): a normal float32, no selects."""
    n, q = _reduce(c)
    return _pow2(q + F(1.0), n)


@jit(inline="always")
def _clamp(x):
    return min(max(x, _TINY), _OVER)


@jit(inline="always")
def _exp_ends(x, y):
    # e^x's ends: 0 below -87, inf above _OVER; NaN stays NaN
    y = F(0.0) if x < _TINY else y
    y = F(np.inf) if x > _OVER else y
    return x if x != x else y


@jit(inline="always")
def exp_wide(v):
    """e^v for a float64 argument v (one computed in float64, whose rounding to float32
    would cost |v| / 2^24 of relative accuracy), to float32 accuracy."""
    c = min(max(v, np.float64(_TINY)), np.float64(_EXP_HI))
    n = (c * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0
    y = _scale2(_poly(F(c - n * 0.6931471805599453)) + F(1.0), F(n))
    y = F(0.0) if v < _TINY else y
    return F(v) if v != v else y


@jit(inline="always")
def exp(x):
    """e^x for float32 x; 0 for x < -87 (results under 2^-125); NaN stays NaN."""
    x = _ftz(x)
    return _exp_ends(x, _exp_in(_clamp(x)))


@jit(inline="always")
def expm1(x):
    """e^x - 1 without the cancellation near 0 (where n = 0, e^x - 1 is q itself)."""
    x = _ftz(x)
    n, q = _reduce(_clamp(x))
    y = q if n == F(0.0) else _exp_ends(x, _pow2(q + F(1.0), n)) - F(1.0)
    return x if x != x else y


@jit(inline="always")
def _logistic_denominator(x):
    # 1 + e^-x for x >= -87 (e^-x clamped to e^87 there: the caller selects 0 below)
    return F(1.0) + _exp_in(min(max(-x, _TINY), -_TINY))


@jit(inline="always")
def logistic(x):
    """1 / (1 + e^-x); 0 below x = -87 (the division would make a denormal there)."""
    x = _ftz(x)
    y = F(1.0) / _logistic_denominator(x)
    y = F(0.0) if x < _TINY else y
    return x if x != x else y


@jit(inline="always")
def tanh(x):
    x = _ftz(x)
    a = abs(x)
    # tanh(x) = x in float32 below 2^-12 (x^3/3 < x 2^-25): x^2 there could be a
    # denormal, so the factor is zeroed first (both arms of a select are computed)
    xs = x if a >= F(2.0 ** -12) else F(0.0)
    z = xs * xs
    p = F(-5.70498872745e-3)
    p = p * z + F(2.06390887954e-2)
    p = p * z + F(-5.37397155531e-2)
    p = p * z + F(1.33314422036e-1)
    p = p * z + F(-3.33332819422e-1)
    small = x + x * (z * p)
    big = F(1.0) - F(2.0) / (_exp_in(F(2.0) * min(a, F(20.0))) + F(1.0))
    big = big if x >= F(0.0) else -big
    y = small if a < F(0.625) else big
    return x if x != x else y


@jit(inline="always")
def _mish_n(x):
    # n = e^x (e^x + 2) with x clamped to [-87, 20] (mish(x) == x in float32 above 20; the
    # callers select their value below -87)
    e = _exp_in(min(max(x, _TINY), F(20.0)))
    return e, e * (e + F(2.0))


@jit(inline="always")
def mish(x):
    """x tanh(softplus(x)) = x n / (n + 2), n = e^x (e^x + 2); 0 below x = -87 (the exact
    result is under 2^-100 there; mish(-inf) = 0)."""
    x = _ftz(x)
    _, n = _mish_n(x)
    y = F(0.0) if x < _TINY else x * (n / (n + F(2.0)))
    return x if x != x else y


@jit(inline="always")
def mish_gradient(x):
    """d mish / dx = t + x (1 - t^2) sigmoid(x), t = n / (n + 2): 1 - t^2 = 4 (n + 1) /
    (n + 2)^2 and sigmoid(x) = e / (1 + e), all from one exp."""
    x = _ftz(x)
    e, n = _mish_n(x)
    d = n + F(2.0)
    t = n / d
    g = t + x * (F(4.0) * (n + F(1.0)) / (d * d)) * (e / (F(1.0) + e))
    g = F(1.0) if x > F(20.0) else g          # 1 - t^2 < 2^-50: the capped n would not say so
    g = F(0.0) if x < _TINY else g
    return x if x != x else g


@jit(inline="always")
def swish(x):
    """x / (1 + e^-x); 0 below x = -87 (swish(-inf) = 0)."""
    x = _ftz(x)
    y = x / _logistic_denominator(x)
    y = F(0.0) if x < _TINY else y
    return x if x != x else y


@jit(inline="always")
def loggy(x):
    """Darknet's loggy 2 / (1 + e^-x) - 1, which is tanh(x / 2) (no cancellation at 0)."""
    return tanh(_ftz(x) * F(0.5))


# Beyond |x| = 20, gelu(x) is x or 0 and its gradient 1 or 0 in float32 (u > 300): x is
# clamped there so that x^3 cannot overflow.
_GELU_X = F(20.0)


@jit(inline="always")
def _gelu_es(x, a, b):
    # e = e^-2u, u = a x + b x^3 in float64 (gelu is ill-conditioned for negative x: at
    # x = -9, u = -33 and one float32 rounding of u would cost ~60 ulp), and s =
    # logistic(2u) = 1 / (1 + e), 0 where it would be under 2^-125 (a denormal)
    c = np.float64(min(max(x, -_GELU_X), _GELU_X))
    v = -2.0 * (np.float64(a) * c + np.float64(b) * c * c * c)
    e = exp_wide(min(v, -np.float64(_TINY)))
    s = F(1.0) / (F(1.0) + e)
    return e, (F(0.0) if v > -np.float64(_TINY) else s)


@jit(inline="always")
def gelu(x, a, b):
    """0.5 x (1 + tanh(u)) = x logistic(2u), u = a x + b x^3 (Darknet's tanh
    approximation): 1 + tanh(u) = 2 / (1 + e^-2u), no cancellation for negative u."""
    x = _ftz(x)
    _, s = _gelu_es(x, a, b)
    y = x * s if s != F(0.0) else F(0.0)        # gelu(-inf) = 0, not -inf * 0
    return x if x != x else y


@jit(inline="always")
def gelu_gradient(x, a, b):
    """0.5 (1 + t) + 0.5 x (1 - t^2) (a + 3 b x^2), t = tanh(u): with s = logistic(2u),
    1 + t = 2 s and 1 - t^2 = 4 s (1 - s) = 4 / (2 + e + 1/e), e = e^-2u."""
    x = _ftz(x)
    c = min(max(x, -_GELU_X), _GELU_X)
    e, s = _gelu_es(x, a, b)
    y = s + F(2.0) * c * (a + F(3.0) * b * c * c) / (F(2.0) + e + F(1.0) / e)
    y = y if s != F(0.0) else F(0.0)            # e^-2u past e^87: under 2^-100
    return x if x != x else y
