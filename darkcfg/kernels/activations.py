"""Activations and their gradients, in place on float32 arrays (Darknet's src/activations.c:
activate_array, gradient_array; AlexeyAB's adds gradient_array_swish, _mish, _hard_mish).

Public API:
    activate(x, name)           x (N, C, H, W) or any shape; in place, returns x
    needs_input(name)           True when the gradient needs the pre-activation input
    gradient(dy, y, x, name)    dy *= f'(.) exactly as Darknet evaluates it; in place

Darknet's classic activations differentiate from the OUTPUT y (P `gradient_array`);
mish, hard_mish and swish (AH) from the stored pre-activation input x; darkcfg does the
same for gelu (AH's gradient_array hands gelu_gradient the output y, a bug: README,
"Deliberate differences from Darknet"). A layer that trains keeps a copy of x before
`activate` when `needs_input(name)`.

The piecewise-linear activations are computed in float64 and rounded once: P's formulas
are C `double` expressions on a float argument (`.1*x`), so this is exactly what Darknet
computes. The ones with an exponential (logistic, tanh, loggy, elu, selu, gelu, swish,
mish and their gradients) use kernels.vmath's float32 exp, within a few ulp of the exact
value: a libm call per value would keep LLVM from vectorising the loops, and its time
would depend on the values.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from ..activations import ACTIVATIONS, CODES
from . import vmath as vm
from .config import check_f32, jit, pjit, pjit_dual

(LOGISTIC, RELU, RELIE, LINEAR, RAMP, TANH, PLSE, LEAKY, ELU, LOGGY, STAIR, HARDTAN, LHTAN,
 SELU, RELU6, REVLEAKY, GELU, SWISH, MISH, HARD_MISH, NORM_CHAN, NORM_CHAN_SOFTMAX,
 NORM_CHAN_SOFTMAX_MAXVAL) = range(23)
assert CODES["normalize_channels_softmax_maxval"] == NORM_CHAN_SOFTMAX_MAXVAL
assert CODES["hard_mish"] == HARD_MISH and CODES["selu"] == SELU

# Gradients from the stored input x rather than the output y.
FROM_INPUT = frozenset({"gelu", "swish", "mish", "hard_mish"})
# Per pixel across channels: need the (N, C, H*W) view.
PER_PIXEL = frozenset({"normalize_channels", "normalize_channels_softmax",
                       "normalize_channels_softmax_maxval"})

SELU_A = 1.0507
SELU_B = 1.0507 * 1.6732
GELU_A = 0.797885
GELU_B = 0.035677


@jit(inline="always")
def _f(x: float, code: int) -> float:
    """One activation value, x float64."""
    if code == LEAKY or code == REVLEAKY:  # noqa: SIM109 (folds to a constant when inlined)
        # x if x > 0 else 0.1 * x, the same bits, written as a product: stored back in
        # place, `x if ...` would be a store of the value just loaded on one branch, which
        # LLVM drops, leaving a masked store (vmaskmovps, slow on AMD: 0.83 ns a value
        # against 0.35 ns this way on Zen 3)
        return x * (1.0 if x > 0.0 else 0.1)
    if code == LOGISTIC:
        return np.float64(vm.logistic(np.float32(x)))
    if code == RELU:
        return max(0.0, x)
    if code == MISH:
        return np.float64(vm.mish(np.float32(x)))
    if code == SWISH:
        return np.float64(vm.swish(np.float32(x)))
    if code == RELIE:
        return x if x > 0.0 else 0.01 * x
    if code == RAMP:
        return max(0.0, x) + 0.1 * x
    if code == TANH:
        # P's (e^2x - 1)/(e^2x + 1) (src/activations.h: tanh_activate) is NaN once e^2x
        # overflows (x > ~354 in double); darkcfg's tanh is 1.0 there.
        return np.float64(vm.tanh(np.float32(x)))
    if code == PLSE:
        if x < -4.0:
            return 0.01 * (x + 4.0)
        if x > 4.0:
            return 0.01 * (x - 4.0) + 1.0
        return 0.125 * x + 0.5
    if code == ELU:
        return x if x >= 0.0 else np.float64(vm.expm1(np.float32(x)))
    if code == LOGGY:
        return np.float64(vm.loggy(np.float32(x)))
    if code == STAIR:
        n = math.floor(x)
        # C's n % 2 is -1 for odd negative n: "odd" is any non-zero remainder
        if int(n) % 2 == 0:
            return math.floor(x / 2.0)
        return np.float64(np.float32(x) - np.float32(n)) + math.floor(x / 2.0)
    if code == HARDTAN:
        return -1.0 if x < -1.0 else min(x, 1.0)
    if code == LHTAN:
        if x < 0.0:
            return 0.001 * x
        if x > 1.0:
            return 0.001 * (x - 1.0) + 1.0
        return x
    if code == SELU:
        return SELU_A * x if x >= 0.0 else SELU_B * np.float64(vm.expm1(np.float32(x)))
    if code == RELU6:
        return min(max(x, 0.0), 6.0)
    if code == GELU:
        return np.float64(vm.gelu(np.float32(x), np.float32(GELU_A), np.float32(GELU_B)))
    if code == HARD_MISH:
        if x > 0.0:
            return x
        if x > -2.0:
            return x * x / 2.0 + x
        return 0.0
    return x                                    # LINEAR


@jit(inline="always")
def _g(y: float, x: float, code: int) -> float:
    """Darknet's derivative: from the output y, or from the input x for FROM_INPUT."""
    if code == LEAKY or code == REVLEAKY:  # noqa: SIM109 (folds when inlined)
        return 1.0 if y > 0.0 else 0.1
    if code == LOGISTIC:
        return (1.0 - y) * y
    if code == RELU:
        return 1.0 if y > 0.0 else 0.0
    if code == MISH:
        return np.float64(vm.mish_gradient(np.float32(x)))
    if code == SWISH:
        s = np.float64(vm.logistic(np.float32(x)))
        return y + s * (1.0 - y)
    if code == RELIE:
        return 1.0 if y > 0.0 else 0.01
    if code == RAMP:
        return (1.0 if y > 0.0 else 0.0) + 0.1
    if code == TANH:
        return 1.0 - y * y
    if code == PLSE:
        return 0.01 if (y < 0.0 or y > 1.0) else 0.125
    if code == ELU:
        return 1.0 if y >= 0.0 else y + 1.0
    if code == LOGGY:
        t = (y + 1.0) / 2.0
        return 2.0 * (1.0 - t) * t
    if code == STAIR:
        return 0.0 if math.floor(y) == y else 1.0
    if code == HARDTAN:
        return 1.0 if (y > -1.0 and y < 1.0) else 0.0
    if code == LHTAN:
        return 1.0 if (y > 0.0 and y < 1.0) else 0.001
    if code == SELU:
        return SELU_A if y >= 0.0 else y + SELU_B
    if code == RELU6:
        return 1.0 if (y > 0.0 and y < 6.0) else 0.0
    if code == GELU:
        return np.float64(vm.gelu_gradient(np.float32(x), np.float32(GELU_A),
                                           np.float32(GELU_B)))
    if code == HARD_MISH:
        if x > 0.0:
            return 1.0
        if x > -2.0:
            return x + 1.0
        return 0.0
    return 1.0                                  # LINEAR


# One parallel loop per activation with a constant code: after inlining, LLVM folds `_f`'s
# chain of tests away and vectorises each loop (one loop over a runtime code, or serial
# loops called from a prange, run 5-20x slower). The cost is compile time (~8 s per
# kernel, once: cache=True). REVLEAKY arrives as LEAKY; LINEAR never arrives.
@pjit_dual
def _activate_flat(x, code):
    # x (n,) float32, in place
    n = x.size
    if code == LEAKY:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), LEAKY)
    elif code == LOGISTIC:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), LOGISTIC)
    elif code == RELU:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), RELU)
    elif code == MISH:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), MISH)
    elif code == SWISH:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), SWISH)
    elif code == RELIE:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), RELIE)
    elif code == RAMP:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), RAMP)
    elif code == TANH:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), TANH)
    elif code == PLSE:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), PLSE)
    elif code == ELU:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), ELU)
    elif code == LOGGY:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), LOGGY)
    elif code == STAIR:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), STAIR)
    elif code == HARDTAN:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), HARDTAN)
    elif code == LHTAN:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), LHTAN)
    elif code == SELU:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), SELU)
    elif code == RELU6:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), RELU6)
    elif code == GELU:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), GELU)
    elif code == HARD_MISH:
        for i in prange(n):
            x[i] = _f(np.float64(x[i]), HARD_MISH)


@pjit
def _gradient_flat(dy, y, x, code):
    # dy, y, x (n,) float32; dy in place. x is ignored unless the code needs it.
    n = dy.size
    if code == LEAKY:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), LEAKY))
    elif code == LOGISTIC:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), LOGISTIC))
    elif code == RELU:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), RELU))
    elif code == MISH:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), MISH))
    elif code == SWISH:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), SWISH))
    elif code == RELIE:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), RELIE))
    elif code == RAMP:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), RAMP))
    elif code == TANH:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), TANH))
    elif code == PLSE:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), PLSE))
    elif code == ELU:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), ELU))
    elif code == LOGGY:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), LOGGY))
    elif code == STAIR:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), STAIR))
    elif code == HARDTAN:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), HARDTAN))
    elif code == LHTAN:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), LHTAN))
    elif code == SELU:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), SELU))
    elif code == RELU6:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), RELU6))
    elif code == GELU:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i]) * _g(np.float64(y[i]), np.float64(x[i]), GELU))
    elif code == HARD_MISH:
        for i in prange(n):
            dy[i] = np.float32(np.float64(dy[i])
                               * _g(np.float64(y[i]), np.float64(x[i]), HARD_MISH))


@pjit
def _normalize_channels(x, code):
    # x (N, C, P) float32, in place: per (n, p), across the C channels (AH
    # activate_array_normalize_channels[_softmax]; eps 1e-4 added to the sum).
    N, C, P = x.shape
    for t in prange(N * P):
        b = t // P
        p = t - b * P
        s = 1e-4
        if code == NORM_CHAN:
            for k in range(C):
                if x[b, k, p] > 0:
                    s += x[b, k, p]
            for k in range(C):
                v = x[b, k, p]
                x[b, k, p] = np.float32(v / s) if v > 0 else np.float32(0.0)
        else:
            m = 0.0
            if code == NORM_CHAN_SOFTMAX_MAXVAL:
                m = -3.4028234663852886e38
                for k in range(C):
                    m = max(m, x[b, k, p])
            for k in range(C):
                s += math.exp(x[b, k, p] - m)
            for k in range(C):
                x[b, k, p] = np.float32(math.exp(x[b, k, p] - m) / s)


@pjit
def _normalize_channels_gradient(dy, y, code):
    # dy, y (N, C, P); dy in place. AlexeyAB's rule (src/activations.c:
    # gradient_array_normalize_channels[_softmax], not the true Jacobian): per pixel
    # g = sum_k y_k dy_k, then dy_k *= g (for normalize_channels only where y_k > 0).
    N, C, P = dy.shape
    for t in prange(N * P):
        b = t // P
        p = t - b * P
        g = np.float32(0.0)
        for k in range(C):
            g += y[b, k, p] * dy[b, k, p]
        for k in range(C):
            if code != NORM_CHAN or y[b, k, p] > 0:
                dy[b, k, p] = dy[b, k, p] * g


def _code(name: str) -> int:
    try:
        return CODES[name]
    except KeyError:
        raise ValueError(f"unknown activation '{name}'; known: {', '.join(ACTIVATIONS)}") \
            from None


def _per_pixel(a: np.ndarray) -> np.ndarray:
    # (N, C, H, W) or (N, C) -> (N, C, H*W) view
    if a.ndim < 2:
        raise ValueError("normalize_channels* activations need an (N, C, ...) array; "
                         f"received shape {a.shape}")
    return a.reshape(a.shape[0], a.shape[1], -1)


def needs_input(name: str) -> bool:
    """Whether `gradient` needs the pre-activation input x (keep a copy before activate)."""
    _code(name)
    return name in FROM_INPUT


def activate(x: np.ndarray, name: str) -> np.ndarray:
    """Apply activation `name` to x in place; returns x."""
    code = _code(name)
    check_f32("x", x)
    if code == LINEAR or x.size == 0:
        return x
    if name in PER_PIXEL:
        _normalize_channels(_per_pixel(x), code)
    else:
        _activate_flat(x.reshape(-1), LEAKY if code == REVLEAKY else code)
    return x


def gradient(dy: np.ndarray, y: np.ndarray, x: np.ndarray | None, name: str) -> np.ndarray:
    """dy *= f'(.) in place and return dy: y is the activation's output, x its input
    (needed only when `needs_input(name)`; may be None otherwise)."""
    code = _code(name)
    check_f32("dy", dy)
    check_f32("y", y)
    if y.shape != dy.shape:
        raise ValueError(f"y must have the shape of dy {dy.shape}; received {y.shape}")
    if name in FROM_INPUT:
        if x is None:
            raise ValueError(f"the '{name}' gradient needs the pre-activation input x")
        check_f32("x", x)
        if x.shape != dy.shape:
            raise ValueError(f"x must have the shape of dy {dy.shape}; received {x.shape}")
    else:
        x = y
    if code == LINEAR or dy.size == 0:
        return dy
    if name in PER_PIXEL:
        _normalize_channels_gradient(_per_pixel(dy), _per_pixel(y), code)
    else:
        _gradient_flat(dy.reshape(-1), y.reshape(-1), x.reshape(-1),
                       LEAKY if code == REVLEAKY else code)
    return dy
