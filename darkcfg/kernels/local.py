"""Locally connected product ([local]): a separate filter bank per output location.

Shapes (Darknet's src/local_layer.c layout): x (N, C, H, W); weights (L, n, C, k, k) with
L = oh*ow and location j = oy*ow + ox; out / dz (N, n, oh, ow). Patch element (c, ky, kx)
of location (oy, ox) reads x[c, oy*stride - pad + ky, ox*stride - pad + kx], zero outside
the image (im2col's rule with `pad` as the amount).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, pjit


@pjit
def _forward(x, weights, stride, pad, out):
    # out (N, n, oh, ow) += sum over (c, ky, kx) of weights[j, f] * patch_j; out already
    # holds the biases. One task per (image, location): no two tasks write one value.
    N, C, H, W = x.shape
    L, n, _, k, _ = weights.shape
    ow = out.shape[3]
    for t in prange(N * L):
        b = t // L
        j = t - b * L
        oy = j // ow
        ox = j - oy * ow
        for f in range(n):
            acc = np.float32(0.0)
            for c in range(C):
                for ky in range(k):
                    iy = oy * stride - pad + ky
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(k):
                        ix = ox * stride - pad + kx
                        if ix >= 0 and ix < W:
                            acc += weights[j, f, c, ky, kx] * x[b, c, iy, ix]
            out[b, f, oy, ox] += acc


@pjit
def _weight_grad(x, dz, stride, pad, dw):
    # dw (L, n, C, k, k) += sum over images of dz[b, f, j] * patch_j: one task per location
    N, C, H, W = x.shape
    L, n, _, k, _ = dw.shape
    ow = dz.shape[3]
    for j in prange(L):
        oy = j // ow
        ox = j - oy * ow
        for b in range(N):
            for f in range(n):
                g = dz[b, f, oy, ox]
                for c in range(C):
                    for ky in range(k):
                        iy = oy * stride - pad + ky
                        if iy < 0 or iy >= H:
                            continue
                        for kx in range(k):
                            ix = ox * stride - pad + kx
                            if ix >= 0 and ix < W:
                                dw[j, f, c, ky, kx] += g * x[b, c, iy, ix]


@pjit
def _input_grad(weights, dz, stride, pad, dx):
    # dx (N, C, H, W) += the transpose of _forward's product: one task per image, since
    # neighbouring locations' patches overlap
    N, C, H, W = dx.shape
    L, n, _, k, _ = weights.shape
    ow = dz.shape[3]
    for b in prange(N):
        for j in range(L):
            oy = j // ow
            ox = j - oy * ow
            for f in range(n):
                g = dz[b, f, oy, ox]
                for c in range(C):
                    for ky in range(k):
                        iy = oy * stride - pad + ky
                        if iy < 0 or iy >= H:
                            continue
                        for kx in range(k):
                            ix = ox * stride - pad + kx
                            if ix >= 0 and ix < W:
                                dx[b, c, iy, ix] += weights[j, f, c, ky, kx] * g


def local_forward(x: np.ndarray, weights: np.ndarray, biases: np.ndarray, stride: int,
                  pad: int, out: np.ndarray) -> np.ndarray:
    """out (N, n, oh, ow) = biases (one per output value) + the per-location products."""
    for name, a in (("x", x), ("weights", weights), ("out", out)):
        check_f32(name, a)
    out[...] = biases.reshape(out.shape[1:])
    _forward(x, weights, stride, pad, out)
    return out


def local_backward(x: np.ndarray, weights: np.ndarray, dz: np.ndarray, dw: np.ndarray,
                   db: np.ndarray, stride: int, pad: int, need_dx: bool) -> np.ndarray | None:
    """Accumulates dLoss/dweights into dw and dLoss/dbiases into db (flat, one per output
    value); returns dLoss/dx (a new array) when `need_dx`."""
    for name, a in (("x", x), ("weights", weights), ("dz", dz), ("dw", dw)):
        check_f32(name, a)
    db += dz.sum(axis=0, dtype=np.float64).reshape(-1).astype(np.float32)
    _weight_grad(x, dz, stride, pad, dw)
    if not need_dx:
        return None
    dx = np.zeros_like(x)
    _input_grad(weights, dz, stride, pad, dx)
    return dx
