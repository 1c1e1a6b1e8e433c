"""Normalisation across channels, each with its backward: local response normalisation
of [normalization] (Darknet's src/normalization_layer.c: forward_normalization_layer) and
the unit L2 norm of [l2norm] (src/blas.c: l2normalize_cpu)."""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, pjit


@pjit
def _lrn(x, size, alpha, beta, kappa):
    # x (N, C, P) -> out (N, C, P) = x * factor, factor (N, C, P) = norm^-beta with
    # Darknet's running window over channels.
    # The window starts as channels 0..size//2-1 (channel size//2 is never added: Darknet's
    # off-by-one, reference case `misc_layers`), then slides: at channel k it drops
    # k - (size-1)//2 - 1 and adds k + size//2.
    n, c, p = x.shape
    out = np.empty_like(x)
    factor = np.empty_like(x)
    half_lo, half_hi = (size - 1) // 2, size // 2
    for bq in prange(n * p):
        b, q = bq // p, bq % p
        norm = kappa
        for k in range(min(half_hi, c)):
            norm += alpha * (x[b, k, q] * x[b, k, q])
        f = np.float32(np.float64(norm) ** -np.float64(beta))
        factor[b, 0, q] = f
        out[b, 0, q] = x[b, 0, q] * f
        for k in range(1, c):
            prev = k - half_lo - 1
            nxt = k + half_hi
            if prev >= 0:
                norm += -alpha * (x[b, prev, q] * x[b, prev, q])
            if nxt < c:
                norm += alpha * (x[b, nxt, q] * x[b, nxt, q])
            f = np.float32(np.float64(norm) ** -np.float64(beta))
            factor[b, k, q] = f
            out[b, k, q] = x[b, k, q] * f
    return out, factor


@pjit
def _l2norm(x):
    # x (N, C, P) -> out (N, C, P), each pixel's channel vector divided by its L2 norm, and
    # the norms (N, P) (Darknet adds no epsilon: an all-zero pixel gives NaN, as in Darknet).
    n, c, p = x.shape
    out = np.empty_like(x)
    norms = np.empty((n, p), np.float32)
    for bq in prange(n * p):
        b, q = bq // p, bq % p
        total = np.float32(0.0)
        for k in range(c):
            total += x[b, k, q] * x[b, k, q]
        norm = np.float32(np.sqrt(total))
        norms[b, q] = norm
        for k in range(c):
            out[b, k, q] = x[b, k, q] / norm
    return out, norms


@pjit
def _l2norm_backward(dy, y, norms):
    # dy, y (N, C, P), norms (N, P) -> dx (N, C, P): the exact derivative of y = x/|x|,
    # dx = (dy - y * sum_k y_k dy_k) / |x|.
    n, c, p = dy.shape
    dx = np.empty_like(dy)
    for bq in prange(n * p):
        b, q = bq // p, bq % p
        dot = np.float32(0.0)
        for k in range(c):
            dot += y[b, k, q] * dy[b, k, q]
        for k in range(c):
            dx[b, k, q] = (dy[b, k, q] - y[b, k, q] * dot) / norms[b, q]
    return dx


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, kappa: float) -> np.ndarray:
    """x (N, C, H, W) -> same shape: Darknet's local response normalisation across
    channels, x / (kappa + alpha * window sum of x^2)^beta (alpha not divided by size)."""
    return lrn_train(x, size, alpha, beta, kappa)[0]


def lrn_train(x: np.ndarray, size: int, alpha: float, beta: float,
              kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """As `lrn`, also returning the factor norm^-beta (N, C, H, W) by which x was scaled."""
    check_f32("x", x, 4)
    n, c, h, w = x.shape
    out, factor = _lrn(x.reshape(n, c, h * w), size, np.float32(alpha), np.float32(beta),
                       np.float32(kappa))
    return out.reshape(x.shape), factor.reshape(x.shape)


def lrn_backward(dy: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """dy (N, C, H, W) -> dx = dy * factor: Darknet's LRN backward, an APPROXIMATION that
    treats the norms as constants (pjreddie's own comment: "This is approximate"); the exact
    derivative has a second term, -2*alpha*beta*x_j * sum_k dy_k*out_k/norm_k over the
    windows holding channel j, small while alpha*sum(x^2) << kappa."""
    check_f32("dy", dy)
    return dy * factor


def l2norm(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) -> same shape: every pixel's channel vector scaled to unit L2 norm."""
    return l2norm_train(x)[0]


def l2norm_train(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """As `l2norm`, also returning each pixel's norm (N, H, W)."""
    check_f32("x", x, 4)
    n, c, h, w = x.shape
    out, norms = _l2norm(x.reshape(n, c, h * w))
    return out.reshape(x.shape), norms.reshape(n, h, w)


def l2norm_backward(dy: np.ndarray, y: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """dy, y (N, C, H, W) (y the forward output), norms (N, H, W) -> dx: the exact gradient
    (pjreddie's CPU backward passes dy through unchanged, ignoring the normalisation)."""
    check_f32("dy", dy, 4)
    check_f32("y", y, 4)
    n, c, h, w = dy.shape
    dx = _l2norm_backward(dy.reshape(n, c, h * w), y.reshape(n, c, h * w),
                          np.ascontiguousarray(norms, np.float32).reshape(n, h * w))
    return dx.reshape(dy.shape)
