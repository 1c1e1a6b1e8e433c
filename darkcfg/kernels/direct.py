"""Direct (no im2col) convolution for grouped convs with few filters per group.

Depthwise convs (groups = channels) make one 1 x k*k by k*k x P GEMM per channel, far
too small for BLAS; this loop is memory-bound instead. Each output sums its terms in the
im2col row order (ci, ky, kx), as the GEMM does.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import jit, jit_sums, pjit, pjit_sums
from .epilogue import U64, tail_runs


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


# Inference depthwise convs (one filter per channel) with the tail fused. Each task copies
# its input plane into zero-padded phase planes (for stride s, plane (py, px) holds the
# padded pixels (s r + py, s c + px), as im2col.pad_phases lays out a whole tensor; one
# plane at a time stays in cache, and the copy was 8-30 % of these convs' time when made
# for the whole tensor first), so every tap of every output becomes one run of
# consecutive values: output (oy, ox) at flat position oy*Wq + ox of a plane Wq wide reads
# tap (ky, kx) at the same position plus a constant offset. The columns past ow are
# computed and dropped. A few output rows at a time keep the sums in L1.
_CHUNK = 2048       # sums per block of output rows (8 KB)


@jit(inline="always")
def _fill_phases(xf, x0, H, W, pad, sy, sx, Hq, Wq, buf):
    # buf <- the padded plane x[x0 : x0 + H*W] split into sy*sx phase planes of Hq x Wq
    for i in range(buf.size):
        buf[i] = 0.0
    for iy in range(H):
        yp = iy + pad
        row = ((yp % sy) * sx * Hq + yp // sy) * Wq
        for px in range(sx):            # the columns ix with (ix + pad) % sx == px
            ix0 = (px - pad) % sx
            if ix0 >= W:
                continue
            d0 = U64(row + px * Hq * Wq + (ix0 + pad) // sx)
            s0 = U64(x0 + iy * W + ix0)
            for j in range(U64((W - ix0 + sx - 1) // sx)):
                buf[d0 + j] = xf[s0 + j * U64(sx)]


@pjit
def conv_depthwise(x, w, sy, sx, pad, d, out, mode, mean, inv, scales, biases, code,
                   blocks):
    # x (N, C, H, W); w (C, 1, k, k); out (N, C, oh, ow) = tail(conv), fully overwritten;
    # the terms of each output summed in conv_direct's order (ky, kx), the tail by
    # epilogue.tail_runs
    N, C, H, W = x.shape
    k = w.shape[2]
    oh, ow = out.shape[2], out.shape[3]
    Hq = (H + 2 * pad + sy - 1) // sy
    Wq = (W + 2 * pad + sx - 1) // sx
    rows = max(1, min(oh, _CHUNK // Wq))
    # the last row's dropped columns read up to k*d past the planes
    size = sy * sx * Hq * Wq + Wq + k * d
    xf = x.reshape(-1)
    of = out.reshape(-1)
    per = -(-N * C // blocks)
    for blk in prange(blocks):         # planes in `blocks` runs: scratch made once a run
        buf = np.empty(size, np.float32)
        acc = np.empty(rows * Wq, np.float32)
        runs = np.empty((1, 3), np.int64)
        for t in range(blk * per, min(N * C, (blk + 1) * per)):
            b = t // C
            c = t - b * C
            _fill_phases(xf, t * H * W, H, W, pad, sy, sx, Hq, Wq, buf)
            for r0 in range(0, oh, rows):
                nr = min(rows, oh - r0)
                L = U64(nr * Wq)
                for i in range(L):
                    acc[i] = 0.0
                for ky in range(k):
                    qy = ky * d
                    for kx in range(k):
                        qx = kx * d
                        wv = w[c, 0, ky, kx]
                        s0 = U64((((qy % sy) * sx + qx % sx) * Hq + r0 + qy // sy) * Wq
                                 + qx // sx)
                        for i in range(L):
                            acc[i] += wv * buf[s0 + i]
                o0 = (b * C * oh + r0) * ow     # filter 0's plane: tail_runs adds c's
                for rr in range(nr):
                    a0 = U64(rr * Wq)
                    d0 = U64(o0 + c * oh * ow + rr * ow)
                    for j in range(U64(ow)):
                        of[d0 + j] = acc[a0 + j]
                runs[0, 0] = 0
                runs[0, 1] = o0
                runs[0, 2] = nr * ow
                tail_runs(out, c, 1, runs, 1, mode, mean, inv, scales, biases, code)
    return out


# the float64 sums may run in SIMD lanes (config.jit_sums; the tail is its own kernel)
@jit_sums
def conv_pointwise_few(x, w, out, mode, mean, inv, scales, biases, code):
    # x (N, C, P), w (n, C), out (N, n, P, 1) = tail(w @ x[b]) for each image, P small (a
    # 1x1 conv on a 1x1 map: the squeeze-excitation products), serial: each product is a
    # few microseconds
    N, C, P = x.shape
    n = w.shape[0]
    of = out.reshape(-1)
    runs = np.empty((N, 3), np.int64)
    col = np.empty(C, np.float32)
    for b in range(N):
        runs[b, 0] = 0
        runs[b, 1] = b * n * P
        runs[b, 2] = P
        for p in range(P):
            for c in range(C):
                col[c] = x[b, c, p]
            for f in range(n):
                s = 0.0
                for c in range(C):
                    s += np.float64(w[f, c]) * np.float64(col[c])
                of[(b * n + f) * P + p] = np.float32(s)
    tail_runs(out, 0, n, runs, N, mode, mean, inv, scales, biases, code)
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
