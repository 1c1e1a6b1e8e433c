"""Per-channel bias and batch normalisation at inference, in place on float32 arrays.

    add_bias(x, biases)                                   x (N, C, ...) += biases[c]
    bn_inference(x, scales, mean, variance, biases, dialect)
        x = (x - mean) / D(variance) * scales + biases    per channel c

D is Darknet's denominator (src/blas.c: normalize_cpu of each lineage): `sqrt(var) + 1e-6`
for 'pjreddie' (the reference cases), `sqrt(var + 1e-5)` for 'alexeyab'.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ..netcfg import DIALECTS
from .config import check_f32, pjit_dual


def bn_denominator(variance: np.ndarray, dialect: str) -> np.ndarray:
    """(C,) float32 -> (C,) float64 denominator, rounded exactly as Darknet's C does it:
    P `sqrt(variance[f]) + .000001f` (double sqrt, float constant promoted), AH
    `sqrt(variance[f] + .00001f)` (the sum in float, the sqrt in double)."""
    v = np.asarray(variance, dtype=np.float32)
    if dialect == "pjreddie":
        return np.sqrt(v.astype(np.float64)) + np.float64(np.float32(1e-6))
    if dialect == "alexeyab":
        return np.sqrt((v + np.float32(1e-5)).astype(np.float64))
    raise ValueError(f"unknown dialect '{dialect}'; use one of {', '.join(DIALECTS)}")


@pjit_dual
def _bn(x, mean, inv, scales, biases):
    # x (N, C, P) float32 in place; mean, scales, biases (C,) float32; inv (C,) float64,
    # 1 / D. Darknet's three passes fused: normalize (float difference, double division),
    # then scale_bias, then add_bias, each rounded to float. The division is a multiply by
    # the double reciprocal (4x cheaper): within one double rounding of the quotient, the
    # same float almost always (a 2^-28 chance of a 1-ulp difference).
    N, C, P = x.shape
    for t in prange(N * C):
        b = t // C
        c = t - b * C
        m, r, s, o = mean[c], inv[c], scales[c], biases[c]
        row = x[b, c]                   # a view: the inner loop vectorises
        for p in range(P):
            v = np.float32(np.float64(row[p] - m) * r)
            row[p] = v * s + o


@pjit_dual
def _add_bias(x, biases):
    # x (N, C, P) float32 in place; biases (C,)
    N, C, P = x.shape
    for t in prange(N * C):
        o = biases[t % C]
        row = x[t // C, t % C]
        for p in range(P):
            row[p] += o


def _channels(x: np.ndarray, c: int) -> np.ndarray:
    # (N, C, H, W) or (N, C) -> (N, C, H*W) view
    check_f32("x", x)
    if x.ndim < 2 or x.shape[1] != c:
        raise ValueError(f"x must be (N, {c}, ...) for {c} per-channel parameters; "
                         f"received shape {x.shape}")
    return x.reshape(x.shape[0], c, -1)


def _vec(name: str, a: np.ndarray | None, c: int) -> np.ndarray:
    if a is None:
        return np.zeros(c, np.float32)
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    if a.size != c:
        raise ValueError(f"{name} must have {c} values; received {a.size}")
    return a


def add_bias(x: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """x (N, C, ...) += biases (C,) per channel, in place; returns x."""
    c = biases.size
    _add_bias(_channels(x, c), _vec("biases", biases, c))
    return x


def bn_inference(x: np.ndarray, scales: np.ndarray, mean: np.ndarray,
                 variance: np.ndarray, biases: np.ndarray | None,
                 dialect: str = "pjreddie") -> np.ndarray:
    """Inference batch norm on x (N, C, ...) in place with rolling statistics; returns x.
    biases None means zeros (P's standalone [batchnorm] has none in the file)."""
    c = scales.size
    _bn(_channels(x, c), _vec("rolling_mean", mean, c), 1.0 / bn_denominator(_vec(
        "rolling_variance", variance, c), dialect), _vec("scales", scales, c),
        _vec("biases", biases, c))
    return x
