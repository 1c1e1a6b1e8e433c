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

