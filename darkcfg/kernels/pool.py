"""Pooling: Darknet's windowed max and average pools, channel max pool, global average,
each with its backward (dLoss/d(input) from dLoss/d(output)) after the wrappers.

Window geometry (cfg-format.md §5.4, reference case `pooling`): `padding` is the TOTAL
padding, the window for output (i, j) starts at (i*stride_y - padding//2,
j*stride_x - padding//2), and cells outside the image are skipped.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, pjit

# Darknet starts a max at -FLT_MAX (not -inf): a window lying wholly in the padding gives it.
FLT_MAX = np.float32(3.4028234663852886e38)


def pool_out_size(n: int, size: int, stride: int, padding: int) -> int:
    """Output length along one axis: (n + padding - size) // stride + 1."""
    return (n + padding - size) // stride + 1


@pjit
def _maxpool(x, size, sy, sx, pad, oh, ow):
    # x (N, C, H, W) -> out (N, C, oh, ow), arg (N, C, oh, ow) int32: flat index of the
    # maximum within the sample's C*H*W input (first maximum wins: strict >), -1 if none.
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow), np.float32)
    arg = np.empty((n, c, oh, ow), np.int32)
    off = pad // 2
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        for i in range(oh):
            y0 = i * sy - off
            for j in range(ow):
                x0 = j * sx - off
                best = -FLT_MAX
                where = -1
                for dy in range(size):
                    y = y0 + dy
                    if y < 0 or y >= h:
                        continue
                    for dx in range(size):
                        xx = x0 + dx
                        if xx < 0 or xx >= w:
                            continue
                        v = x[b, k, y, xx]
                        if v > best:
                            best = v
                            where = (k * h + y) * w + xx
                out[b, k, i, j] = best
                arg[b, k, i, j] = where
    return out, arg


@pjit
def _avgpool_window(x, size, sy, sx, pad, oh, ow):
    # x (N, C, H, W) -> (N, C, oh, ow): mean over the in-image cells of each window
    # (AH [local_avgpool]: the divisor counts only valid cells).
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow), np.float32)
    off = pad // 2
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        for i in range(oh):
            y0 = i * sy - off
            for j in range(ow):
                x0 = j * sx - off
                total = np.float32(0.0)
                count = 0
                for dy in range(size):
                    y = y0 + dy
                    if y < 0 or y >= h:
                        continue
                    for dx in range(size):
                        xx = x0 + dx
                        if 0 <= xx < w:
                            total += x[b, k, y, xx]
                            count += 1
                out[b, k, i, j] = total / np.float32(count)
    return out


@pjit
def _maxpool_depth(x, out_c):
    # x (N, C, H, W) -> out (N, out_c, H, W), arg (N, out_c, H, W) int32 (flat index in the
    # sample): output channel g is the max over input channels g, g+out_c, g+2*out_c, ...
    n, c, h, w = x.shape
    out = np.empty((n, out_c, h, w), np.float32)
    arg = np.empty((n, out_c, h, w), np.int32)
    for bg in prange(n * out_c):
        b, g = bg // out_c, bg % out_c
        for i in range(h):
            for j in range(w):
                best = -FLT_MAX
                where = -1
                for k in range(g, c, out_c):
                    v = x[b, k, i, j]
                    if v > best:
                        best = v
                        where = (k * h + i) * w + j
                out[b, g, i, j] = best
                arg[b, g, i, j] = where
    return out, arg


@pjit
def _global_avgpool(x):
    # x (N, C, H, W) -> (N, C): Darknet sums each plane in order, then divides by h*w.
    n, c, h, w = x.shape
    out = np.empty((n, c), np.float32)
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        total = np.float32(0.0)
        for i in range(h):
            for j in range(w):
                total += x[b, k, i, j]
        out[b, k] = total / np.float32(h * w)
    return out


def maxpool(x: np.ndarray, size: int, stride_y: int, stride_x: int,
            padding: int) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, H, W) -> (out (N, C, oh, ow), argmax (N, C, oh, ow) int32 flat per sample)."""
    check_f32("x", x, 4)
    _, _, h, w = x.shape
    oh = pool_out_size(h, size, stride_y, padding)
    ow = pool_out_size(w, size, stride_x, padding)
    if size < 1 or oh < 1 or ow < 1:
        raise ValueError(f"pool window {size} (padding {padding}) does not fit a {h} x {w} "
                         "input")
    return _maxpool(x, size, stride_y, stride_x, padding, oh, ow)


def local_avgpool(x: np.ndarray, size: int, stride_y: int, stride_x: int,
                  padding: int) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, oh, ow): windowed mean over in-image cells."""
    check_f32("x", x, 4)
    _, _, h, w = x.shape
    oh = pool_out_size(h, size, stride_y, padding)
    ow = pool_out_size(w, size, stride_x, padding)
    if size < 1 or oh < 1 or ow < 1:
        raise ValueError(f"pool window {size} (padding {padding}) does not fit a {h} x {w} "
                         "input")
    return _avgpool_window(x, size, stride_y, stride_x, padding, oh, ow)


def maxpool_depth(x: np.ndarray, out_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, H, W) -> (out (N, out_channels, H, W), argmax int32): max across channels."""
    check_f32("x", x, 4)
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1; received {out_channels}")
    return _maxpool_depth(x, out_channels)


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, 1, 1): the mean of each channel plane."""
    check_f32("x", x, 4)
    n, c = x.shape[:2]
    return _global_avgpool(x).reshape(n, c, 1, 1)


# --- backward ------------------------------------------------------------------------------
@pjit
def _scatter_argmax(dy, arg, length):
    # dy, arg (N, Co, P) -> dx (N, length): dx[b, arg[b, g, q]] += dy[b, g, q], skipping -1
    # (a window wholly in the padding). Race-free over (b, g): output channel g only ever
    # points into its own input channels (g itself, or g, g+Co, ... for maxpool_depth).
    n, co, p = dy.shape
    dx = np.zeros((n, length), np.float32)
    for bg in prange(n * co):
        b, g = bg // co, bg % co
        for q in range(p):
            a = arg[b, g, q]
            if a >= 0:
                dx[b, a] += dy[b, g, q]
    return dx


@pjit
def _avgpool_window_backward(dy, size, sy, sx, pad, h, w):
    # dy (N, C, oh, ow) -> dx (N, C, h, w): each output's gradient shared equally by the
    # in-image cells of its window (the forward's divisor).
    n, c, oh, ow = dy.shape
    dx = np.zeros((n, c, h, w), np.float32)
    off = pad // 2
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        for i in range(oh):
            y0 = i * sy - off
            ylo, yhi = max(y0, 0), min(y0 + size, h)
            for j in range(ow):
                x0 = j * sx - off
                xlo, xhi = max(x0, 0), min(x0 + size, w)
                if yhi <= ylo or xhi <= xlo:
                    continue                    # wholly in the padding: NaN forward
                g = dy[b, k, i, j] / np.float32((yhi - ylo) * (xhi - xlo))
                for y in range(ylo, yhi):
                    for xx in range(xlo, xhi):
                        dx[b, k, y, xx] += g
    return dx


def maxpool_backward(dy: np.ndarray, argmax: np.ndarray,
                     in_shape: tuple[int, int, int]) -> np.ndarray:
    """dy (N, Co, oh, ow), argmax from `maxpool`/`maxpool_depth` -> dx (N, *in_shape): each
    output's gradient goes to its arg-max cell (first maximum wins, as in the forward)."""
    check_f32("dy", dy, 4)
    if argmax.shape != dy.shape:
        raise ValueError(f"argmax must have the shape of dy {dy.shape}; received "
                         f"{argmax.shape}")
    n, co = dy.shape[:2]
    c, h, w = in_shape
    dx = _scatter_argmax(dy.reshape(n, co, -1), argmax.reshape(n, co, -1), c * h * w)
    return dx.reshape(n, c, h, w)


def local_avgpool_backward(dy: np.ndarray, size: int, stride_y: int, stride_x: int,
                           padding: int, in_hw: tuple[int, int]) -> np.ndarray:
    """dy (N, C, oh, ow) -> dx (N, C, h, w) of `local_avgpool`: dy / (valid cells) spread
    over each window's in-image cells. (AH's CPU backward divides by size*size, which does
    not match its own forward near the border; darkcfg differentiates its forward.)"""
    check_f32("dy", dy, 4)
    h, w = in_hw
    if dy.shape[2:] != (pool_out_size(h, size, stride_y, padding),
                        pool_out_size(w, size, stride_x, padding)):
        raise ValueError(f"dy of shape {dy.shape} is not the pool output of a {h} x {w} "
                         "input")
    return _avgpool_window_backward(dy, size, stride_y, stride_x, padding, h, w)


def global_avgpool_backward(dy: np.ndarray, in_hw: tuple[int, int]) -> np.ndarray:
    """dy (N, C, 1, 1) or (N, C) -> dx (N, C, h, w): dy / (h*w) at every cell."""
    h, w = in_hw
    n, c = dy.shape[:2]
    g = np.asarray(dy, np.float32).reshape(n, c, 1, 1) / np.float32(h * w)
    return np.ascontiguousarray(np.broadcast_to(g, (n, c, h, w)))
