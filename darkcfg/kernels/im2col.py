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
def col2im_add(cols, k, sy, sx, pad, d, oh, ow, out):
    # cols (C*k*k, oh*ow) float32; out (C, H, W) float32, accumulated into (+=).
    # The transpose of im2col with the same arguments: column (oy, ox) of row (c, ky, kx)
    # lands on out[c, oy*sy - pad + ky*d, ox*sx - pad + kx*d] when inside. Each channel
    # is one task, and within it rows are added in Darknet's col2im order (ky, kx
    # ascending), so the sums of a deconv forward come out in Darknet's order.
    C, H, W = out.shape
    kk = k * k
    for c in prange(C):
        for q in range(kk):
            r = c * kk + q
            ky = q // k
            kx = q - ky * k
            off = kx * d - pad
            # ox range with 0 <= ox*sx + off < W, as in im2col
            lo = 0 if off >= 0 else min(ow, (-off + sx - 1) // sx)
            hi = max(lo, min(ow, (W - 1 - off) // sx + 1)) if W - 1 - off >= 0 else lo
            if hi == lo:
                continue
            for oy in range(oh):
                iy = oy * sy - pad + ky * d
                if iy < 0 or iy >= H:
                    continue
                src = cols[r, oy * ow + lo:oy * ow + hi]
                if sx == 1:
                    dst = out[c, iy, lo + off:hi + off]
                    for j in range(hi - lo):
                        dst[j] += src[j]
                else:
                    dst = out[c, iy, lo * sx + off:]
                    for j in range(hi - lo):
                        dst[j * sx] += src[j]
