"""Spatial resampling kernels, each with its backward: nearest upsample and the sum-pool
downsample of [upsample] (Darknet's src/blas.c: upsample_cpu, a negative stride
downsampling), and the window of [crop] (src/crop_layer.c: forward_crop_layer)."""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, pjit, pjit_dual
from .conv import reuse


@pjit_dual
def _upsample(x, s, scale, out):
    # x (N, C, H, W) -> out (N, C, H*s, W*s): each cell copied to an s x s block, times
    # scale. Per input row: its first output row written (the s = 2 case as two plain
    # stores), then copied to the other s - 1; unsigned offsets, no division per value
    # (one thread, Zen 3: 128 x 52 x 52 3.1 -> 0.3 ms).
    n, c, h, w = x.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    us = np.uint64(s)
    uw = np.uint64(w)
    uow = np.uint64(w * s)
    one = np.uint64(1)
    for t in prange(n * c):
        for y in range(h):
            src = np.uint64((t * h + y) * w)
            row = np.uint64((t * h + y) * s) * uow
            if s == 2:
                for i in range(uw):
                    v = scale * xf[src + i]
                    of[row + us * i] = v
                    of[row + us * i + one] = v
            else:
                for i in range(uw):
                    v = scale * xf[src + i]
                    for k in range(us):
                        of[row + us * i + k] = v
            for r in range(one, us):
                dst = row + r * uow
                for i in range(uow):
                    of[dst + i] = of[row + i]


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


def upsample(x: np.ndarray, stride: int, scale: float = 1.0,
             out: np.ndarray | None = None) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, H*s, W*s), nearest neighbour times scale; into `out` when
    it is given with that shape (a buffer kept between calls)."""
    check_f32("x", x, 4)
    if stride < 1:
        raise ValueError(f"stride must be >= 1; received stride={stride}")
    n, c, h, w = x.shape
    out = reuse(out, (n, c, h * stride, w * stride))
    _upsample(x, stride, np.float32(scale), out)
    return out


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
