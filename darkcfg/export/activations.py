"""Every activation of darkcfg/activations.py as ONNX operators, by the formulas
darkcfg/kernels/activations.py computes (Darknet's src/activations.c of both lineages).

Built from elementary operators (Sigmoid, Tanh, Softplus, Where, ...) rather than opset
18's Mish or opset 20's Gelu, so that one graph serves every opset from 13 on, and so
that gelu keeps Darknet's own constants (0.797885, 0.035677), which are not ONNX's.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .builder import Builder

Emit = Callable[[Builder, str], str]

# kernels/activations.py: SELU_A, SELU_B, GELU_A, GELU_B (Darknet's constants)
SELU_A, SELU_B = 1.0507, 1.0507 * 1.6732
GELU_A, GELU_B = 0.797885, 0.035677


def _where(b: Builder, cond: str, yes: str, no: str) -> str:
    return b.op("Where", [cond, yes, no])


def _less(b: Builder, x: str, v: float) -> str:
    return b.op("Less", [x, b.const(np.float32(v), "bound")])


def _greater(b: Builder, x: str, v: float) -> str:
    return b.op("Greater", [x, b.const(np.float32(v), "bound")])


def _leaky(slope: float) -> Emit:
    return lambda b, x: b.op("LeakyRelu", [x], alpha=slope)


def _ramp(b: Builder, x: str) -> str:
    # max(0, x) + 0.1 x
    return b.op("Add", [b.op("Relu", [x]), b.scale_shift(x, 0.1)])


def _plse(b: Builder, x: str) -> str:
    # x < -4: .01 (x + 4); x > 4: .01 (x - 4) + 1; else .125 x + .5
    low = b.scale_shift(b.scale_shift(x, 1.0, 4.0), 0.01)
    high = b.scale_shift(b.scale_shift(x, 1.0, -4.0), 0.01, 1.0)
    mid = b.scale_shift(x, 0.125, 0.5)
    return _where(b, _less(b, x, -4.0), low, _where(b, _greater(b, x, 4.0), high, mid))


def _lhtan(b: Builder, x: str) -> str:
    # x < 0: .001 x; x > 1: .001 (x - 1) + 1; else x
    low = b.scale_shift(x, 0.001)
    high = b.scale_shift(b.scale_shift(x, 1.0, -1.0), 0.001, 1.0)
    return _where(b, _less(b, x, 0.0), low, _where(b, _greater(b, x, 1.0), high, x))


def _stair(b: Builder, x: str) -> str:
    # n = floor(x); n even: floor(x/2); odd (any non-zero remainder, C's n % 2): x - n +
    # floor(x/2)
    n = b.op("Floor", [x])
    half = b.op("Floor", [b.scale_shift(x, 0.5)])
    odd = b.op("Add", [b.op("Sub", [x, n]), half])
    rem = b.op("Mod", [n, b.const(np.float32(2), "two")], fmod=1)
    even = b.op("Equal", [rem, b.const(np.float32(0), "zero")])
    return _where(b, even, half, odd)


def _elu(b: Builder, x: str) -> str:
    return b.op("Elu", [x], alpha=1.0)


def _selu(b: Builder, x: str) -> str:
    # x >= 0: SELU_A x; else SELU_B (e^x - 1)
    pos = b.scale_shift(x, SELU_A)
    neg = b.scale_shift(b.scale_shift(b.op("Exp", [x]), 1.0, -1.0), SELU_B)
    return _where(b, _less(b, x, 0.0), neg, pos)


def _clip(lo: float, hi: float) -> Emit:
    return lambda b, x: b.op("Clip", [x, b.const(np.float32(lo), "min"),
                                      b.const(np.float32(hi), "max")])


def _loggy(b: Builder, x: str) -> str:
    # 2 / (1 + e^-x) - 1 = tanh(x / 2) (kernels/vmath.py: loggy)
    return b.op("Tanh", [b.scale_shift(x, 0.5)])


def _gelu(b: Builder, x: str) -> str:
    # 0.5 x (1 + tanh(u)) = x logistic(2u), u = a x + b x^3 (kernels/vmath.py: gelu)
    inner = b.scale_shift(b.op("Mul", [x, x]), 2 * GELU_B, 2 * GELU_A)
    return b.op("Mul", [x, b.op("Sigmoid", [b.op("Mul", [x, inner])])])


def _swish(b: Builder, x: str) -> str:
    return b.op("Mul", [x, b.op("Sigmoid", [x])])


def _mish(b: Builder, x: str) -> str:
    return b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])])


def _hard_mish(b: Builder, x: str) -> str:
    # x > 0: x; x > -2: x^2 / 2 + x; else 0
    mid = b.op("Add", [b.scale_shift(b.op("Mul", [x, x]), 0.5), x])
    zero = b.const(np.float32(0), "zero")
    return _where(b, _greater(b, x, 0.0), x, _where(b, _greater(b, x, -2.0), mid, zero))


def _normalize_channels(b: Builder, x: str) -> str:
    # per pixel across channels: the positive values over (1e-4 + their sum)
    r = b.op("Relu", [x])
    total = b.scale_shift(b.reduce("ReduceSum", r, [1]), 1.0, 1e-4)
    return b.op("Div", [r, total])


def _channel_softmax(maxval: bool) -> Emit:
    def emit(b: Builder, x: str) -> str:
        if maxval:          # exp(x - max) over (1e-4 + the sum)
            x = b.op("Sub", [x, b.reduce("ReduceMax", x, [1])])
        e = b.op("Exp", [x])
        return b.op("Div", [e, b.scale_shift(b.reduce("ReduceSum", e, [1]), 1.0, 1e-4)])
    return emit


ACTIVATIONS: dict[str, Emit | None] = {
    "linear": None,
    "logistic": lambda b, x: b.op("Sigmoid", [x]),
    "relu": lambda b, x: b.op("Relu", [x]),
    "relie": _leaky(0.01),
    "ramp": _ramp,
    "tanh": lambda b, x: b.op("Tanh", [x]),
    "plse": _plse,
    "leaky": _leaky(0.1),
    "revleaky": _leaky(0.1),        # darkcfg (and Darknet's CPU code) compute it as leaky
    "elu": _elu,
    "loggy": _loggy,
    "stair": _stair,
    "hardtan": _clip(-1.0, 1.0),
    "lhtan": _lhtan,
    "selu": _selu,
    "relu6": _clip(0.0, 6.0),
    "gelu": _gelu,
    "swish": _swish,
    "mish": _mish,
    "hard_mish": _hard_mish,
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": _channel_softmax(False),
    "normalize_channels_softmax_maxval": _channel_softmax(True),
}


def activate(b: Builder, x: str, name: str) -> str:
    """The activation `name` applied to x (x itself for linear)."""
    emit = ACTIVATIONS[name]
    return x if emit is None else emit(b, x)
