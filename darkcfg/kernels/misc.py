"""Small per-layer kernels: nearest upsample and sum-pool downsample, LRN, L2 norm, crop."""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, pjit


@pjit
def _upsample(x, s, scale):
    # x (N, C, H, W) -> (N, C, H*s, W*s): each cell copied to an s x s block, times scale.
    n, c, h, w = x.shape
    out = np.empty((n, c, h * s, w * s), np.float32)
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        for j in range(h * s):
            for i in range(w * s):
                out[b, k, j, i] = scale * x[b, k, j // s, i // s]
    return out


@pjit
def _downsample_sum(x, s, scale):
    # x (N, C, H, W) -> (N, C, H/s, W/s): each s x s block summed as Darknet's negative
    # stride does it (`in[..] += scale*out[..]` visiting rows, then columns, of the block).
    n, c, h, w = x.shape
    oh, ow = h // s, w // s
    out = np.zeros((n, c, oh, ow), np.float32)
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        for j in range(oh * s):
            for i in range(ow * s):
                out[b, k, j // s, i // s] += scale * x[b, k, j, i]
    return out


@pjit
def _lrn(x, size, alpha, beta, kappa):
    # x (N, C, P) -> (N, C, P): x * norm^-beta with Darknet's running window over channels.
    # The window starts as channels 0..size//2-1 (channel size//2 is never added: Darknet's
    # off-by-one, reference case `misc_layers`), then slides: at channel k it drops
    # k - (size-1)//2 - 1 and adds k + size//2.
    n, c, p = x.shape
    out = np.empty_like(x)
    half_lo, half_hi = (size - 1) // 2, size // 2
    for bq in prange(n * p):
        b, q = bq // p, bq % p
        norm = kappa
        for k in range(min(half_hi, c)):
            norm += alpha * (x[b, k, q] * x[b, k, q])
        out[b, 0, q] = x[b, 0, q] * np.float32(np.float64(norm) ** -np.float64(beta))
        for k in range(1, c):
            prev = k - half_lo - 1
            nxt = k + half_hi
            if prev >= 0:
                norm += -alpha * (x[b, prev, q] * x[b, prev, q])
            if nxt < c:
                norm += alpha * (x[b, nxt, q] * x[b, nxt, q])
            out[b, k, q] = x[b, k, q] * np.float32(np.float64(norm) ** -np.float64(beta))
    return out


@pjit
def _l2norm(x):
    # x (N, C, P) -> (N, C, P): each pixel's channel vector divided by its L2 norm
    # (Darknet adds no epsilon: an all-zero pixel gives NaN, as in Darknet).
    n, c, p = x.shape
    out = np.empty_like(x)
    for bq in prange(n * p):
        b, q = bq // p, bq % p
        total = np.float32(0.0)
        for k in range(c):
            total += x[b, k, q] * x[b, k, q]
        norm = np.float32(np.sqrt(total))
        for k in range(c):
            out[b, k, q] = x[b, k, q] / norm
    return out


def upsample(x: np.ndarray, stride: int, scale: float = 1.0) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, H*s, W*s), nearest neighbour times scale."""
    check_f32("x", x, 4)
    if stride < 1:
        raise ValueError(f"stride must be >= 1; received stride={stride}")
    return _upsample(x, stride, np.float32(scale))


def downsample_sum(x: np.ndarray, stride: int, scale: float = 1.0) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, H/s, W/s): scale * the sum of each s x s block."""
    check_f32("x", x, 4)
    h, w = x.shape[2:]
    if stride < 1 or h % stride or w % stride:
        raise ValueError(f"downsampling a {h} x {w} input needs a stride dividing both; "
                         f"received stride={stride}")
    return _downsample_sum(x, stride, np.float32(scale))


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, kappa: float) -> np.ndarray:
    """x (N, C, H, W) -> same shape: Darknet's local response normalisation across
    channels, x / (kappa + alpha * window sum of x^2)^beta (alpha not divided by size)."""
    check_f32("x", x, 4)
    n, c, h, w = x.shape
    out = _lrn(x.reshape(n, c, h * w), size, np.float32(alpha), np.float32(beta),
               np.float32(kappa))
    return out.reshape(x.shape)


def l2norm(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) -> same shape: every pixel's channel vector scaled to unit L2 norm."""
    check_f32("x", x, 4)
    n, c, h, w = x.shape
    return _l2norm(x.reshape(n, c, h * w)).reshape(x.shape)


def crop(x: np.ndarray, top: int, left: int, height: int, width: int, flip: bool = False,
         scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, height, width): the window at (top, left), mirrored
    left-right when `flip`, then value*scale + shift (Darknet's [crop] uses 2, -1)."""
    check_f32("x", x, 4)
    h, w = x.shape[2:]
    if not (0 <= top and top + height <= h and 0 <= left and left + width <= w):
        raise ValueError(f"crop {height} x {width} at ({top}, {left}) is outside the "
                         f"{h} x {w} input")
    win = x[:, :, top:top + height, left:left + width]
    if flip:
        # Darknet reads column w - left - j - 1 for output column j when flipping.
        win = x[:, :, top:top + height, w - left - width:w - left][..., ::-1]
    out = win * np.float32(scale) + np.float32(shift)
    return np.ascontiguousarray(out, dtype=np.float32)
