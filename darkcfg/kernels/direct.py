"""Direct (no im2col) convolution for grouped convs with few filters per group.

Depthwise convs (groups = channels) make one 1 x k*k by k*k x P GEMM per channel, far
too small for BLAS; this loop is memory-bound instead. Each output sums its terms in the
im2col row order (ci, ky, kx), as the GEMM does.
"""
from __future__ import annotations

from numba import prange

from .config import pjit


@pjit
def conv_direct(x, w, sy, sx, pad, d, groups, out):
    # x (C, H, W); w (n, C/groups, k, k); out (n, oh, ow), fully overwritten.
    # out[f, oy, ox] = sum_{ci,ky,kx} w[f,ci,ky,kx] x[g*cg+ci, oy*sy-pad+ky*d, ox*sx-pad+kx*d]
    _, H, W = x.shape
    n, cg, k, _ = w.shape
    _, oh, ow = out.shape
    per_group = n // groups
    for t in prange(n * oh):
        f = t // oh
        oy = t - f * oh
        c0 = (f // per_group) * cg
        row = out[f, oy]
        row[:] = 0.0
        for ci in range(cg):
            for ky in range(k):
                iy = oy * sy - pad + ky * d
                if iy < 0 or iy >= H:
                    continue
                src = x[c0 + ci, iy]
                for kx in range(k):
                    wv = w[f, ci, ky, kx]
                    off = kx * d - pad
                    # ox range with 0 <= ox*sx + off < W
                    lo = 0 if off >= 0 else (-off + sx - 1) // sx
                    hi = min(ow, (W - 1 - off) // sx + 1) if W - 1 - off >= 0 else 0
                    if sx == 1:
                        # slices indexed from 0: Numba drops its negative-index
                        # wraparound test, and LLVM vectorises the loop
                        dst, s = row[lo:hi], src[lo + off:hi + off]
                        for j in range(hi - lo):
                            dst[j] += wv * s[j]
                    else:
                        for ox in range(lo, hi):
                            row[ox] += wv * src[ox * sx + off]
    return out



@pjit
def conv_direct_backward_input(dy, w, sy, sx, pad, d, groups, dx):
    # dy (n, oh, ow); w (n, C/groups, k, k); dx (C, H, W), fully overwritten with
    # dx[c, oy*sy-pad+ky*d, ox*sx-pad+kx*d] += w[f,ci,ky,kx] dy[f, oy, ox] (the transpose
    # of conv_direct). One task per input channel: its filters scatter only into it.
    C, H, W = dx.shape
    n, cg, k, _ = w.shape
    _, oh, ow = dy.shape
    per_group = n // groups
    for c in prange(C):
        g = c // cg
        ci = c - g * cg
        dx[c] = 0.0
        for f in range(g * per_group, (g + 1) * per_group):
            for oy in range(oh):
                src = dy[f, oy]
                for ky in range(k):
                    iy = oy * sy - pad + ky * d
                    if iy < 0 or iy >= H:
                        continue
                    dst = dx[c, iy]
                    for kx in range(k):
                        wv = w[f, ci, ky, kx]
                        off = kx * d - pad
                        lo = 0 if off >= 0 else min(ow, (-off + sx - 1) // sx)
                        hi = max(lo, min(ow, (W - 1 - off) // sx + 1)) if W - 1 - off >= 0 \
                            else lo
                        if sx == 1:
                            dd, s = dst[lo + off:hi + off], src[lo:hi]
                            for j in range(hi - lo):
                                dd[j] += wv * s[j]
                        else:
                            for ox in range(lo, hi):
                                dst[ox * sx + off] += wv * src[ox]
    return dx


@pjit
def conv_direct_backward_weights(x, dy, sy, sx, pad, d, groups, dw):
    # x (C, H, W); dy (n, oh, ow); dw (n, C/groups, k, k) accumulated (+=) with
    # sum_{oy,ox} dy[f, oy, ox] x[g*cg+ci, oy*sy-pad+ky*d, ox*sx-pad+kx*d]. One task per
    # weight row (f, ci, ky): k sums over the output image.
    _, H, W = x.shape
    n, cg, k, _ = dw.shape
    _, oh, ow = dy.shape
    per_group = n // groups
    for t in prange(n * cg * k):
        f = t // (cg * k)
        ci = (t // k) % cg
        ky = t % k
        c = (f // per_group) * cg + ci
        for kx in range(k):
            off = kx * d - pad
            lo = 0 if off >= 0 else min(ow, (-off + sx - 1) // sx)
            hi = max(lo, min(ow, (W - 1 - off) // sx + 1)) if W - 1 - off >= 0 else lo
            acc = 0.0
            for oy in range(oh):
                iy = oy * sy - pad + ky * d
                if iy < 0 or iy >= H:
                    continue
                g = dy[f, oy]
                if sx == 1:
                    s, gg = x[c, iy, lo + off:hi + off], g[lo:hi]
                    for j in range(hi - lo):
                        acc += gg[j] * s[j]
                else:
                    for ox in range(lo, hi):
                        acc += g[ox] * x[c, iy, ox * sx + off]
            dw[f, ci, ky, kx] += acc
    return dw
