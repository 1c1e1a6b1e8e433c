"""Direct (no im2col) convolution for grouped convs with few filters per group.

Depthwise convs (groups = channels) make one 1 x k*k by k*k x P GEMM per channel, far
too small for BLAS; this loop is memory-bound instead. Each output sums its terms in the
im2col row order (ci, ky, kx), as the GEMM does.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import jit, pjit, pjit_sums


@jit(inline="always")
def _span(off, sx, W, ow):
    # the output columns ox with 0 <= ox*sx + off < W: [lo, hi)
    lo = 0 if off >= 0 else min(ow, (-off + sx - 1) // sx)
    hi = max(lo, min(ow, (W - 1 - off) // sx + 1)) if W - 1 - off >= 0 else lo
    return lo, hi


# The loops index flat arrays with unsigned offsets (no view per row: the rows of small
# images are short) and run along output rows, which LLVM vectorises for stride 1.

@pjit
def conv_direct(x, w, sy, sx, pad, d, groups, out):
    # x (N, C, H, W); w (n, C/groups, k, k); out (N, n, oh, ow), fully overwritten.
    # out[b,f,oy,ox] = sum_{ci,ky,kx} w[f,ci,ky,kx] x[b, g*cg+ci, oy*sy-pad+ky*d, ox*sx-pad+kx*d]
    # in that order of terms. One task per output plane, over the whole batch.
    N, C, H, W = x.shape
    n, cg, k, _ = w.shape
    oh, ow = out.shape[2], out.shape[3]
    per_group = n // groups
    xf = x.reshape(-1)
    of = out.reshape(-1)
    ux = np.uint64(sx)
    for t in prange(N * n):
        b = t // n
        f = t - b * n
        c0 = (f // per_group) * cg
        ob = np.uint64(t * oh * ow)
        for i in range(np.uint64(oh * ow)):
            of[ob + i] = 0.0
        for ci in range(cg):
            xb = (b * C + c0 + ci) * H
            for ky in range(k):
                for kx in range(k):
                    wv = w[f, ci, ky, kx]
                    off = kx * d - pad
                    lo, hi = _span(off, sx, W, ow)
                    for oy in range(oh):
                        iy = oy * sy - pad + ky * d
                        if iy < 0 or iy >= H or hi <= lo:
                            continue
                        o0 = ob + np.uint64(oy * ow + lo)
                        s0 = np.uint64((xb + iy) * W + lo * sx + off)
                        for j in range(np.uint64(hi - lo)):
                            of[o0 + j] += wv * xf[s0 + j * ux]
    return out


@pjit
def conv_direct_backward_input(dy, w, sy, sx, pad, d, groups, dx):
    # dy (N, n, oh, ow); w (n, C/groups, k, k); dx (N, C, H, W), fully overwritten with
    # dx[b, c, oy*sy-pad+ky*d, ox*sx-pad+kx*d] += w[f,ci,ky,kx] dy[b, f, oy, ox] (the
    # transpose of conv_direct). One task per image and input channel: its filters
    # scatter only into it.
    N, C, H, W = dx.shape
    n, cg, k, _ = w.shape
    oh, ow = dy.shape[2], dy.shape[3]
    per_group = n // groups
    df = dy.reshape(-1)
    xf = dx.reshape(-1)
    ux = np.uint64(sx)
    for t in prange(N * C):
        b = t // C
        c = t - b * C
        g = c // cg
        ci = c - g * cg
        xb = np.uint64(t * H * W)
        for i in range(np.uint64(H * W)):
            xf[xb + i] = 0.0
        for f in range(g * per_group, (g + 1) * per_group):
            yb = (b * n + f) * oh
            for ky in range(k):
                for kx in range(k):
                    wv = w[f, ci, ky, kx]
                    off = kx * d - pad
                    lo, hi = _span(off, sx, W, ow)
                    for oy in range(oh):
                        iy = oy * sy - pad + ky * d
                        if iy < 0 or iy >= H or hi <= lo:
                            continue
                        s0 = np.uint64((yb + oy) * ow + lo)
                        d0 = xb + np.uint64(iy * W + lo * sx + off)
                        for j in range(np.uint64(hi - lo)):
                            xf[d0 + j * ux] += wv * df[s0 + j]
    return dx


# the float64 sum may run in SIMD lanes (config.pjit_sums)
@pjit_sums
def conv_direct_backward_weights(x, dy, sy, sx, pad, d, groups, dw):
    # x (N, C, H, W); dy (N, n, oh, ow); dw (n, C/groups, k, k) accumulated (+=) with
    # sum_{b,oy,ox} dy[b, f, oy, ox] x[b, g*cg+ci, oy*sy-pad+ky*d, ox*sx-pad+kx*d]. One
    # task per weight row (f, ci, ky): k sums over the batch's output images.
    N, C, H, W = x.shape
    n, cg, k, _ = dw.shape
    oh, ow = dy.shape[2], dy.shape[3]
    per_group = n // groups
    xf = x.reshape(-1)
    df = dy.reshape(-1)
    ux = np.uint64(sx)
    for t in prange(n * cg * k):
        f = t // (cg * k)
        ci = (t // k) % cg
        ky = t % k
        c = (f // per_group) * cg + ci
        for kx in range(k):
            off = kx * d - pad
            lo, hi = _span(off, sx, W, ow)
            acc = 0.0
            if hi > lo:
                for b in range(N):
                    xb = (b * C + c) * H
                    yb = (b * n + f) * oh
                    for oy in range(oh):
                        iy = oy * sy - pad + ky * d
                        if iy < 0 or iy >= H:
                            continue
                        s0 = np.uint64((yb + oy) * ow + lo)
                        x0 = np.uint64((xb + iy) * W + lo * sx + off)
                        for j in range(np.uint64(hi - lo)):
                            acc += df[s0 + j] * xf[x0 + j * ux]
            dw[f, ci, ky, kx] += acc
    return dw
