"""im2col / col2im: image patches as GEMM columns, in Darknet's row order.

Row r of the column matrix is (c, ky, kx) with r = (c*k + ky)*k + kx; column j is the
output pixel (oy, ox) with j = oy*ow + ox. Patch element (c, ky, kx) of output pixel
(oy, ox) reads x[c, oy*sy - pad + ky*d, ox*sx - pad + kx*d] (zero outside the image);
`pad` is the padding actually applied (padding * dilation for AH dilated convs).
"""
from __future__ import annotations

import numpy as np
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
        j0 = oy * ow
        if iy < 0 or iy >= H:
            for ox in range(ow):
                cols[r, j0 + ox] = 0.0
        else:
            for ox in range(ow):
                ix = ox * sx - pad + kx * d
                cols[r, j0 + ox] = x[c, iy, ix] if 0 <= ix < W else np.float32(0.0)


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
