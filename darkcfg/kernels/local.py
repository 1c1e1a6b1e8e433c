"""Locally connected product ([local]): a separate filter bank per output location.

Shapes (Darknet's src/local_layer.c layout): x (N, C, H, W); weights (L, n, C, k, k) with
L = oh*ow and location j = oy*ow + ox; out / dz (N, n, oh, ow). Patch element (c, ky, kx)
of location (oy, ox) reads x[c, oy*stride - pad + ky, ox*stride - pad + kx], zero outside
the image (im2col's rule with `pad` as the amount).
"""
from __future__ import annotations

import numpy as np

from .config import check_f32
from .im2col import col2im_add, im2col

# The patches are im2col's columns (kernels/im2col.py), one row of K = C*k*k values per
# location; each location's product is then one small GEMM, batched over the locations
# by np.matmul: (L, n, K) @ (L, K, N). Darknet (src/local_layer.c) runs the same GEMM
# location by location, one image at a time.


def _patches(x: np.ndarray, k: int, stride: int, pad: int, oh: int, ow: int) -> np.ndarray:
    """x (N, C, H, W) -> (L, K, N): location j's patch of every image, as a GEMM operand."""
    n_img, c = x.shape[:2]
    cols = np.empty((n_img, c * k * k, oh * ow), np.float32)
    for b in range(n_img):
        im2col(x[b], k, stride, stride, pad, 1, oh, ow, cols[b])
    return np.ascontiguousarray(cols.transpose(2, 1, 0))


def local_forward(x: np.ndarray, weights: np.ndarray, biases: np.ndarray, stride: int,
                  pad: int, out: np.ndarray) -> np.ndarray:
    """out (N, n, oh, ow) = biases (one per output value) + the per-location products;
    returns the patches (L, K, N) for the backward."""
    for name, a in (("x", x), ("weights", weights), ("out", out)):
        check_f32(name, a)
    n_img, n, oh, ow = out.shape
    L, k = oh * ow, weights.shape[-1]
    cols = _patches(x, k, stride, pad, oh, ow)
    prod = np.matmul(weights.reshape(L, n, -1), cols)                  # (L, n, N)
    out.reshape(n_img, n, L)[...] = prod.transpose(2, 1, 0)
    out += biases.reshape(out.shape[1:])
    return cols


def local_backward(cols: np.ndarray, x_shape: tuple[int, ...], weights: np.ndarray,
                   dz: np.ndarray, dw: np.ndarray, db: np.ndarray, stride: int, pad: int,
                   need_dx: bool) -> np.ndarray | None:
    """cols: local_forward's patches. Accumulates dLoss/dweights into dw and
    dLoss/dbiases into db (flat, one per output value); returns dLoss/dx (a new array,
    x_shape) when `need_dx`."""
    for name, a in (("weights", weights), ("dz", dz), ("dw", dw)):
        check_f32(name, a)
    n_img, n, oh, ow = dz.shape
    L, k = oh * ow, weights.shape[-1]
    db += dz.sum(axis=0, dtype=np.float64).reshape(-1).astype(np.float32)
    g = np.ascontiguousarray(dz.reshape(n_img, n, L).transpose(2, 1, 0))    # (L, n, N)
    dw.reshape(L, n, -1)[...] += np.matmul(g, cols.transpose(0, 2, 1))
    if not need_dx:
        return None
    dcols = np.matmul(weights.reshape(L, n, -1).transpose(0, 2, 1), g)      # (L, K, N)
    dx = np.zeros(x_shape, np.float32)
    per_image = np.ascontiguousarray(dcols.transpose(2, 1, 0))             # (N, K, L)
    for b in range(n_img):
        col2im_add(per_image[b], k, stride, stride, pad, 1, oh, ow, dx[b])
    return dx
