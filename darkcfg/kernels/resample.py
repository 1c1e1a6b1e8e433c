"""Spatial resampling kernels, each with its backward: nearest upsample and the sum-pool
downsample of [upsample] (Darknet's src/blas.c: upsample_cpu, a negative stride
downsampling), and the window of [crop] (src/crop_layer.c: forward_crop_layer)."""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, pjit, pjit_dual


@pjit_dual
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


def upsample_backward(dy: np.ndarray, stride: int, scale: float = 1.0) -> np.ndarray:
    """dy (N, C, H*s, W*s) -> dx (N, C, H, W) of `upsample`: scale * the sum over each
    block, in Darknet's order (its backward is the negative-stride forward)."""
    return downsample_sum(dy, stride, scale)


def downsample_sum_backward(dy: np.ndarray, stride: int, scale: float = 1.0) -> np.ndarray:
    """dy (N, C, H/s, W/s) -> dx (N, C, H, W) of `downsample_sum`: scale * dy broadcast
    over each block."""
    return upsample(dy, stride, scale)


def crop(x: np.ndarray, top: int, left: int, height: int, width: int, flip: bool = False,
         scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, height, width): the window at (top, left), mirrored
    left-right when `flip`, then value*scale + shift (Darknet's [crop] uses 2, -1)."""
    check_f32("x", x, 4)
    h, w = x.shape[2:]
    if not (top >= 0 and top + height <= h and left >= 0 and left + width <= w):
        raise ValueError(f"crop {height} x {width} at ({top}, {left}) is outside the "
                         f"{h} x {w} input")
    win = x[:, :, top:top + height, left:left + width]
    if flip:
        # Darknet reads column w - left - j - 1 for output column j when flipping.
        win = x[:, :, top:top + height, w - left - width:w - left][..., ::-1]
    out = win * np.float32(scale) + np.float32(shift)
    return np.ascontiguousarray(out, dtype=np.float32)


def crop_backward(dy: np.ndarray, in_hw: tuple[int, int], top: int, left: int,
                  flip: bool = False, scale: float = 1.0) -> np.ndarray:
    """dy (N, C, height, width) -> dx (N, C, H, W) of `crop`: scale * dy back in the
    window (mirrored back when flipped), zero outside. (pjreddie's CPU [crop] has an empty
    backward; darkcfg differentiates its forward.)"""
    check_f32("dy", dy, 4)
    h, w = in_hw
    n, c, height, width = dy.shape
    if not (top >= 0 and top + height <= h and left >= 0 and left + width <= w):
        raise ValueError(f"crop {height} x {width} at ({top}, {left}) is outside the "
                         f"{h} x {w} input")
    dx = np.zeros((n, c, h, w), np.float32)
    g = dy * np.float32(scale)
    if flip:
        dx[:, :, top:top + height, w - left - width:w - left] = g[..., ::-1]
    else:
        dx[:, :, top:top + height, left:left + width] = g
    return dx
