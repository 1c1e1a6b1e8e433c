"""Darknet's reorg permutation and the space-to-depth / depth-to-space built on it.

Everything is one flat permutation `perm(W, H, C, s)` of a sample's W*H*C values
(Darknet's src/blas.c: reorg_cpu): for k < C, j < H, i < W with C' = C / s^2, off = k // C',
  src = i + W*(j + H*k),  dst = (i*s + off % s) + W*s*((j*s + off // s) + H*s*(k % C')).
Forward moves x[src] to out[dst]; backward moves x[dst] to out[src]. Every function here
is a permutation, so its gradient is the inverse permutation (`*_backward` below).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, pjit


@pjit
def _reorg(x, w, h, c, s, forward):
    # x (N, L) with L = w*h*c -> out (N, L), the permutation above in either direction.
    n = x.shape[0]
    out = np.empty_like(x)
    cq = c // (s * s)
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        c2 = k % cq
        off = k // cq
        for j in range(h):
            h2 = j * s + off // s
            for i in range(w):
                src = i + w * (j + h * k)
                dst = (i * s + off % s) + w * s * (h2 + h * s * c2)
                if forward:
                    out[b, dst] = x[b, src]
                else:
                    out[b, src] = x[b, dst]
    return out


def reorg_permute(x: np.ndarray, w: int, h: int, c: int, stride: int,
                  forward: bool) -> np.ndarray:
    """x (N, ...) holding w*h*c values per sample -> (N, w*h*c): Darknet's `reorg_cpu`."""
    check_f32("x", x)
    n = x.shape[0]
    if x.size != n * w * h * c:
        raise ValueError(f"reorg over {w} x {h} x {c} needs {w * h * c} values per sample; "
                         f"received shape {x.shape}")
    if stride < 1 or c % (stride * stride):
        raise ValueError(f"reorg with stride {stride} needs channels divisible by "
                         f"{stride * stride}; received c={c}")
    return _reorg(x.reshape(n, -1), w, h, c, stride, bool(forward))


def reorg_darknet(x: np.ndarray, stride: int, reverse: bool) -> np.ndarray:
    """P's [reorg] on x (N, C, H, W), called with the INPUT dims: backward direction when
    not reversed (the YOLOv2 passthrough, case `upsample_reorg`), forward when reversed.
    Returns the flat (N, C*H*W) result for the caller to shape."""
    _, c, h, w = x.shape
    return reorg_permute(x, w, h, c, stride, forward=reverse)


def space_to_depth(x: np.ndarray, stride: int) -> np.ndarray:
    """x (N, C, H, W) -> (N, C*s^2, H/s, W/s), AH [reorg3d]: out channel off*C + k at (j, i)
    is in channel k at (j*s + off//s, i*s + off%s) (the permutation with the OUTPUT dims)."""
    n, c, h, w = x.shape
    s = stride
    if h % s or w % s:
        raise ValueError(f"space-to-depth by {s} needs height and width divisible by {s}; "
                         f"received {h} x {w}")
    out = reorg_permute(x, w // s, h // s, c * s * s, s, forward=False)
    return out.reshape(n, c * s * s, h // s, w // s)


def depth_to_space(x: np.ndarray, stride: int) -> np.ndarray:
    """x (N, C, H, W) -> (N, C/s^2, H*s, W*s): the exact inverse of `space_to_depth`."""
    n, c, h, w = x.shape
    s = stride
    out = reorg_permute(x, w, h, c, s, forward=True)
    return out.reshape(n, c // (s * s), h * s, w * s)


def reorg_darknet_backward(dy: np.ndarray, in_shape: tuple[int, int, int], stride: int,
                           reverse: bool) -> np.ndarray:
    """dy (N, ...) = dLoss/d(`reorg_darknet` output) -> dx (N, *in_shape): the same
    permutation (input dims) in the other direction."""
    c, h, w = in_shape
    n = dy.shape[0]
    dy = np.ascontiguousarray(dy, dtype=np.float32)
    return reorg_permute(dy, w, h, c, stride, forward=not reverse).reshape(n, c, h, w)


def space_to_depth_backward(dy: np.ndarray, stride: int) -> np.ndarray:
    """dy (N, C*s^2, H/s, W/s) -> dx (N, C, H, W): the inverse, `depth_to_space`."""
    return depth_to_space(np.ascontiguousarray(dy, dtype=np.float32), stride)


def depth_to_space_backward(dy: np.ndarray, stride: int) -> np.ndarray:
    """dy (N, C/s^2, H*s, W*s) -> dx (N, C, H, W): the inverse, `space_to_depth`."""
    return space_to_depth(np.ascontiguousarray(dy, dtype=np.float32), stride)
