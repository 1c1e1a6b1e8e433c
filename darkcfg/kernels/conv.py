"""Convolution, transposed convolution and dense products: im2col + one SGEMM per group;
their backward passes (weight gradients accumulated, input gradients returned).

The GEMMs are NumPy matmuls on float32 arrays (OpenBLAS sgemm); the patch gathering is
the Numba im2col/col2im. Nothing here adds biases or activates: the layers do that with
kernels.bn and kernels.activations.
"""
from __future__ import annotations

import numpy as np

from .config import check_f32
from .direct import (
    conv_direct,
    conv_direct_backward_input,
    conv_direct_backward_weights,
)
from .im2col import col2im_add, im2col

# Depthwise convs with at most this many filters per channel run as direct loops: their
# per-channel GEMMs (1 or 2 rows) are too small for BLAS (timed on 2 cores: 2-4x faster
# at 1 filter per channel, even at 2, slower from 4 on and whenever C/groups > 1).
DIRECT_MAX = 2


def reuse(buf: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """`buf` when it already is a float32 array of `shape`, else a new (uninitialised) one."""
    shape = tuple(int(s) for s in shape)
    if buf is not None and buf.shape == shape:
        return buf
    return np.empty(shape, np.float32)


def _direct(cg: int, n: int, groups: int) -> bool:
    # the depthwise convs conv2d runs as direct loops
    return cg == 1 and groups > 1 and n // groups <= DIRECT_MAX


def conv_out_hw(h: int, w: int, k: int, sy: int, sx: int, pad: int, d: int
                ) -> tuple[int, int]:
    """Output (oh, ow) of a k x k conv with dilation d and `pad` pixels applied per side."""
    extent = d * (k - 1) + 1
    return (h + 2 * pad - extent) // sy + 1, (w + 2 * pad - extent) // sx + 1


def conv2d(x: np.ndarray, weights: np.ndarray, *, sy: int = 1, sx: int = 1, pad: int = 0,
           d: int = 1, groups: int = 1, out: np.ndarray | None = None,
           work: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """x (N, C, H, W), weights (n, C/groups, k, k) -> out (N, n, oh, ow), no bias.

    `pad` is the padding applied per side (Darknet AH: padding * dilation). Returns
    (out, work): `work` is the im2col buffer, (C*k*k, oh*ow), to pass back next call.
    A 1x1 kernel at stride 1 without padding reads x directly (P also skips im2col for
    strided or padded 1x1 convs, which is wrong there: DECISIONS §3).
    """
    check_f32("x", x, 4)
    check_f32("weights", weights, 4)
    N, C, H, W = x.shape
    n, cg, k, k2 = weights.shape
    if k != k2 or cg * groups != C or n % groups:
        raise ValueError(f"weights {weights.shape} do not fit x {x.shape} with "
                         f"groups={groups}")
    oh, ow = conv_out_hw(H, W, k, sy, sx, pad, d)
    out = reuse(out, (N, n, oh, ow))
    K, P = cg * k * k, oh * ow
    wg = weights.reshape(groups, n // groups, K)
    if k == 1 and sy == 1 and sx == 1 and pad == 0:
        # (N, g, K, P) stacked GEMMs in one call, no copy of x
        np.matmul(wg, x.reshape(N, groups, K, P), out=out.reshape(N, groups, n // groups, P))
        return out, work
    if _direct(cg, n, groups):
        for b in range(N):
            conv_direct(x[b], weights, sy, sx, pad, d, groups, out[b])
        return out, work
    work = reuse(work, (C * k * k, P))
    colg = work.reshape(groups, K, P)
    for b in range(N):
        im2col(x[b], k, sy, sx, pad, d, oh, ow, work)
        np.matmul(wg, colg, out=out[b].reshape(groups, n // groups, P))
    return out, work


def deconv_out_hw(h: int, w: int, k: int, s: int, pad: int) -> tuple[int, int]:
    return (h - 1) * s + k - 2 * pad, (w - 1) * s + k - 2 * pad


def deconv2d(x: np.ndarray, weights: np.ndarray, *, s: int = 1, pad: int = 0,
             out: np.ndarray | None = None, work: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Transposed conv: x (N, C, h, w), weights (C, n, k, k) -> out (N, n, OH, OW), no
    bias; OH = (h-1)*s + k - 2*pad. As Darknet P: columns = W^T x, (n*k*k, h*w), then
    col2im into a zeroed output. Returns (out, work) like conv2d."""
    check_f32("x", x, 4)
    check_f32("weights", weights, 4)
    N, C, h, w = x.shape
    c, n, k, k2 = weights.shape
    if k != k2 or c != C:
        raise ValueError(f"weights {weights.shape} do not fit x {x.shape}")
    oh, ow = deconv_out_hw(h, w, k, s, pad)
    out = reuse(out, (N, n, oh, ow))
    out.fill(0.0)
    work = reuse(work, (n * k * k, h * w))
    wt = weights.reshape(C, n * k * k).T
    for b in range(N):
        np.matmul(wt, x[b].reshape(C, h * w), out=work)
        col2im_add(work, k, s, s, pad, 1, h, w, out[b])
    return out, work


def dense(x: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None
          ) -> np.ndarray:
    """x (N, ...) flattened to (N, inputs), weights (n, inputs) -> out (N, n, 1, 1) = x W^T,
    no bias (Darknet [connected], weights [output][input])."""
    check_f32("x", x)
    check_f32("weights", weights, 2)
    N = x.shape[0]
    n, inputs = weights.shape
    if x.size != N * inputs:
        raise ValueError(f"x {x.shape} does not flatten to (N, {inputs}) for weights "
                         f"{weights.shape}")
    out = reuse(out, (N, n, 1, 1))
    np.matmul(x.reshape(N, inputs), weights.T, out=out.reshape(N, n))
    return out


def conv2d_backward(x: np.ndarray, weights: np.ndarray, dy: np.ndarray, dw: np.ndarray, *,
                    sy: int = 1, sx: int = 1, pad: int = 0, d: int = 1, groups: int = 1,
                    need_dx: bool = True, dx: np.ndarray | None = None,
                    work: np.ndarray | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Backward of `conv2d(x, weights, ...)` (same geometry): dy (N, n, oh, ow) is dLoss/d
    out. Accumulates dw (n, C/groups, k, k) += dLoss/dweights (summed over the batch) and
    returns (dx, work): dx (N, C, H, W) = dLoss/dx (None unless need_dx; `dx` is a buffer
    to reuse), `work` the column buffer to pass back next call.

    Per image and group: dW_g += dY_g cols_g^T, dcols_g = W_g^T dY_g, then col2im (the
    transpose of im2col) into dx, as Darknet P's backward_convolutional_layer.
    """
    for name, a, nd in (("x", x, 4), ("weights", weights, 4), ("dy", dy, 4), ("dw", dw, 4)):
        check_f32(name, a, nd)
    N, C, H, W = x.shape
    n, cg, k, _ = weights.shape
    oh, ow = conv_out_hw(H, W, k, sy, sx, pad, d)
    if dy.shape != (N, n, oh, ow) or dw.shape != weights.shape or cg * groups != C:
        raise ValueError(f"conv2d_backward: x {x.shape}, weights {weights.shape}, dy "
                         f"{dy.shape}, dw {dw.shape} do not fit (groups={groups}, out "
                         f"{oh} x {ow})")
    dx = reuse(dx, x.shape) if need_dx else None
    K, P, m = cg * k * k, oh * ow, n // groups
    wg = weights.reshape(groups, m, K)
    dwg = dw.reshape(groups, m, K)
    dyg = dy.reshape(N, groups, m, P)
    if k == 1 and sy == 1 and sx == 1 and pad == 0:
        xg = x.reshape(N, groups, K, P)
        dwg += np.matmul(dyg, xg.transpose(0, 1, 3, 2)).sum(axis=0)
        if dx is not None:
            np.matmul(wg.transpose(0, 2, 1), dyg, out=dx.reshape(N, groups, K, P))
        return dx, work
    if _direct(cg, n, groups):
        for b in range(N):
            conv_direct_backward_weights(x[b], dy[b], sy, sx, pad, d, groups, dw)
            if dx is not None:
                conv_direct_backward_input(dy[b], weights, sy, sx, pad, d, groups, dx[b])
        return dx, work
    work = reuse(work, (C * k * k, P))
    colg = work.reshape(groups, K, P)
    part = np.empty((groups, m, K), np.float32)
    for b in range(N):
        im2col(x[b], k, sy, sx, pad, d, oh, ow, work)
        np.matmul(dyg[b], colg.transpose(0, 2, 1), out=part)
        dwg += part
        if dx is not None:
            np.matmul(wg.transpose(0, 2, 1), dyg[b], out=colg)
            dx[b] = 0.0
            col2im_add(work, k, sy, sx, pad, d, oh, ow, dx[b])
    return dx, work


def deconv2d_backward(x: np.ndarray, weights: np.ndarray, dy: np.ndarray, dw: np.ndarray, *,
                      s: int = 1, pad: int = 0, need_dx: bool = True,
                      dx: np.ndarray | None = None, work: np.ndarray | None = None
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Backward of `deconv2d(x, weights, s=s, pad=pad)`: dy (N, n, OH, OW). The forward's
    col2im has im2col as its transpose, so per image (P backward_deconvolutional_layer):
    dcols = im2col(dy) (n*k*k, h*w); dW (C, n*k*k) += x dcols^T; dx = W dcols.
    Accumulates dw (C, n, k, k); returns (dx or None, work) like conv2d_backward."""
    for name, a in (("x", x), ("weights", weights), ("dy", dy), ("dw", dw)):
        check_f32(name, a, 4)
    N, C, h, w = x.shape
    _, n, k, _ = weights.shape
    oh, ow = deconv_out_hw(h, w, k, s, pad)
    if dy.shape != (N, n, oh, ow) or dw.shape != weights.shape or weights.shape[0] != C:
        raise ValueError(f"deconv2d_backward: x {x.shape}, weights {weights.shape}, dy "
                         f"{dy.shape}, dw {dw.shape} do not fit")
    dx = reuse(dx, x.shape) if need_dx else None
    work = reuse(work, (n * k * k, h * w))
    w2 = weights.reshape(C, n * k * k)
    dw2 = dw.reshape(C, n * k * k)
    part = np.empty_like(dw2)
    for b in range(N):
        im2col(dy[b], k, s, s, pad, 1, h, w, work)
        xb = x[b].reshape(C, h * w)
        np.matmul(xb, work.T, out=part)
        dw2 += part
        if dx is not None:
            np.matmul(w2, work, out=dx[b].reshape(C, h * w))
    return dx, work


def dense_backward(x: np.ndarray, weights: np.ndarray, dy: np.ndarray, dw: np.ndarray, *,
                   need_dx: bool = True, dx: np.ndarray | None = None) -> np.ndarray | None:
    """Backward of `dense(x, weights)`: dy (N, n, 1, 1). Accumulates dw (n, inputs) +=
    dY^T X; returns dx = dY W with x's shape (None unless need_dx)."""
    for name, a in (("x", x), ("weights", weights), ("dy", dy), ("dw", dw)):
        check_f32(name, a)
    N = x.shape[0]
    n, inputs = weights.shape
    if dy.size != N * n or dw.shape != weights.shape or x.size != N * inputs:
        raise ValueError(f"dense_backward: x {x.shape}, weights {weights.shape}, dy "
                         f"{dy.shape}, dw {dw.shape} do not fit")
    d2 = dy.reshape(N, n)
    dw += d2.T @ x.reshape(N, inputs)
    if not need_dx:
        return None
    dx = reuse(dx, x.shape)
    np.matmul(d2, weights, out=dx.reshape(N, inputs))
    return dx
