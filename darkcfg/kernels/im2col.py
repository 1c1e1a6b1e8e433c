"""im2col / col2im: image patches as GEMM columns, in Darknet's row order.

Row r of the column matrix is (c, ky, kx) with r = (c*k + ky)*k + kx; column j is the
output pixel (oy, ox) with j = oy*ow + ox. Patch element (c, ky, kx) of output pixel
(oy, ox) reads x[c, oy*sy - pad + ky*d, ox*sx - pad + kx*d] (zero outside the image);
`pad` is the padding actually applied (padding * dilation for AH dilated convs).
"""
from __future__ import annotations

from numba import prange

from .config import pjit


@pjit
def im2col(x, k, sy, sx, pad, d, oh, ow, cols):
    # x (C, H, W) float32; cols (C*k*k, oh*ow) float32, fully overwritten
    C, H, W = x.shape
    kk = k * k
    for t in prange(C * kk * oh):
        r = t // oh
        oy = t - r * oh
        c = r // kk
        ky = (r // k) % k
        kx = r % k
        iy = oy * sy - pad + ky * d
        dst = cols[r, oy * ow:(oy + 1) * ow]
        off = kx * d - pad
        # ox range with 0 <= ox*sx + off < W; the rest of the row is padding
        lo = 0 if off >= 0 else min(ow, (-off + sx - 1) // sx)
        hi = max(lo, min(ow, (W - 1 - off) // sx + 1)) if W - 1 - off >= 0 else lo
        if iy < 0 or iy >= H:
            lo = hi = 0
        for j in range(lo):
            dst[j] = 0.0
        for j in range(ow - hi):
            dst[hi + j] = 0.0
        # slices indexed from 0 so that Numba drops its negative-index wraparound test
        inner = dst[lo:hi]
        if hi == lo:
            continue
        if sx == 1:
            src = x[c, iy, lo + off:hi + off]
            for j in range(hi - lo):
                inner[j] = src[j]
        else:
            src = x[c, iy, lo * sx + off:]
            for j in range(hi - lo):
                inner[j] = src[j * sx]


@pjit
def col2im_add(cols, k, s, pad, h, w, out):
    # cols (C*k*k, h*w) float32; out (C, OH, OW) float32, accumulated into (+=).
    # The transpose of im2col (stride s, no dilation): column (y, x) of row (c, ky, kx)
    # lands on out[c, y*s - pad + ky, x*s - pad + kx]. Each channel is one task, and
    # within it rows are added in Darknet's col2im order (ky, kx ascending).
    C, OH, OW = out.shape
    kk = k * k
    for c in prange(C):
        for q in range(kk):
            r = c * kk + q
            ky = q // k
            kx = q - ky * k
            for y in range(h):
                oy = y * s - pad + ky
                if oy < 0 or oy >= OH:
                    continue
                for x in range(w):
                    ox = x * s - pad + kx
                    if 0 <= ox < OW:
                        out[c, oy, ox] += cols[r, y * w + x]
