"""im2col / col2im: image patches as GEMM columns, in Darknet's row order.

Row r of the column matrix is (c, ky, kx) with r = (c*k + ky)*k + kx; column j is the
output pixel (oy, ox) with j = oy*ow + ox. Patch element (c, ky, kx) of output pixel
(oy, ox) reads x[c, oy*sy - pad + ky*d, ox*sx - pad + kx*d] (zero outside the image);
`pad` is the padding actually applied (padding * dilation for AH dilated convs).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import jit, pjit, pjit_dual


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


# --- serial, over a range of the batch's output columns (kernels.parallel tasks) ---------
# Column j of the batch is image j // (oh*ow), pixel j % (oh*ow); a task handles columns
# j0 .. j0+T, cut into runs that stay within one output row.

@pjit_dual
def pad_input(x, pad, xp):
    # x (N, C, H, W) -> xp (N, C, Hp, Wp): x at offset (pad, pad), zeros elsewhere
    # (Hp >= H + pad, Wp >= W + pad; the extra rows and columns are zeros too)
    N, C, H, W = x.shape
    Hp, Wp = xp.shape[2], xp.shape[3]
    for t in prange(N * C):
        b = t // C
        c = t - b * C
        dst = xp[b, c]
        for y in range(pad):
            dst[y, :] = 0.0
        for y in range(pad + H, Hp):
            dst[y, :] = 0.0
        for y in range(H):
            row = dst[pad + y]
            for i in range(pad):
                row[i] = 0.0
            for i in range(pad + W, Wp):
                row[i] = 0.0
            src = x[b, c, y]
            inner = row[pad:pad + W]
            for i in range(W):
                inner[i] = src[i]


@jit(inline="always")
def _run_bounds(ox0, L, off, sx, W):
    # (lo, hi): the t in [0, L) with 0 <= (ox0 + t)*sx + off < W (empty: lo == hi)
    lo = 0
    if ox0 * sx + off < 0:
        lo = min(L, (-off + sx - 1) // sx - ox0)
    if W - 1 - off < 0:
        return lo, lo
    hi = min(L, (W - 1 - off) // sx + 1 - ox0)
    return lo, max(lo, hi)


@jit
def im2col_direct(x, k, sy, sx, pad, d, oh, ow, j0, cols):
    # im2col_range on flat arrays with unsigned offsets (no view per run, no padded copy
    # of x): cols (C*k*k, T) fully overwritten, zeros where a patch leaves the image
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    K, T = cols.shape
    P = oh * ow
    kk = k * k
    src = x.reshape(-1)
    dst = cols.reshape(-1)
    b0 = j0 // P
    q0 = j0 - b0 * P
    oy0 = q0 // ow
    ox00 = q0 - oy0 * ow
    ux = np.uint64(sx)
    for r in range(K):
        c = r // kk
        ky = (r // k) % k
        kx = r % k
        off = kx * d - pad
        flo, fhi = _run_bounds(0, ow, off, sx, W)      # a whole output row (no division
        b, oy, ox0 = b0, oy0, ox00                      # per run: small images)
        col = 0
        while col < T:
            L = min(ow - ox0, T - col)
            d0 = np.uint64(r * T + col)
            iy = oy * sy - pad + ky * d
            if iy < 0 or iy >= H:
                lo = hi = 0
            elif ox0 == 0 and ow == L:
                lo, hi = flo, fhi
            else:
                lo, hi = _run_bounds(ox0, L, off, sx, W)
            for t in range(np.uint64(lo)):
                dst[d0 + t] = 0.0
            for t in range(np.uint64(hi), np.uint64(L)):
                dst[d0 + t] = 0.0
            if hi > lo:
                s0 = np.uint64(((b * C + c) * H + iy) * W + (ox0 + lo) * sx + off)
                dl = d0 + np.uint64(lo)
                if sx == 1:
                    for t in range(np.uint64(hi - lo)):
                        dst[dl + t] = src[s0 + t]
                else:
                    for t in range(np.uint64(hi - lo)):
                        dst[dl + t] = src[s0 + t * ux]
            col += L
            ox0 = 0
            oy += 1
            if oy == oh:
                oy = 0
                b += 1


@jit
def col2im_direct(cols, k, sy, sx, pad, d, oh, ow, j0, out):
    # the transpose of im2col_direct: cols (C*k*k, T) added (+=) into out (N, C, H, W)
    C, H, W = out.shape[1], out.shape[2], out.shape[3]
    K, T = cols.shape
    P = oh * ow
    kk = k * k
    src = cols.reshape(-1)
    dst = out.reshape(-1)
    b0 = j0 // P
    q0 = j0 - b0 * P
    oy0 = q0 // ow
    ox00 = q0 - oy0 * ow
    ux = np.uint64(sx)
    for r in range(K):
        c = r // kk
        ky = (r // k) % k
        kx = r % k
        off = kx * d - pad
        flo, fhi = _run_bounds(0, ow, off, sx, W)
        b, oy, ox0 = b0, oy0, ox00
        col = 0
        while col < T:
            L = min(ow - ox0, T - col)
            iy = oy * sy - pad + ky * d
            if 0 <= iy < H:
                if ox0 == 0 and ow == L:
                    lo, hi = flo, fhi
                else:
                    lo, hi = _run_bounds(ox0, L, off, sx, W)
                if hi > lo:
                    s0 = np.uint64(r * T + col + lo)
                    d0 = np.uint64(((b * C + c) * H + iy) * W + (ox0 + lo) * sx + off)
                    if sx == 1:
                        for t in range(np.uint64(hi - lo)):
                            dst[d0 + t] += src[s0 + t]
                    else:
                        for t in range(np.uint64(hi - lo)):
                            dst[d0 + t * ux] += src[s0 + t]
            col += L
            ox0 = 0
            oy += 1
            if oy == oh:
                oy = 0
                b += 1


# --- stride 1: the "wide" layout ----------------------------------------------------------
# With x zero-padded to Wp = W + 2*pad columns (and one spare row), patch row (c, ky, kx)
# of every output pixel of an image is ONE contiguous run of the padded plane if the
# output is taken Wp wide: column q = oy*Wp + ox reads xp[c].flat[q + ky*d*Wp + kx*d].
# Columns ox >= ow of each row are garbage (they wrap into the next row) and are
# dropped when stored; a batch column j is image j // (oh*Wp), q = j % (oh*Wp).

@jit
def im2col_wide(xp, k, d, oh, j0, cols):
    # xp (N, C, Hp + 1, Wp) from pad_input; cols (C*k*k, T) <- wide columns j0..j0+T
    N, C, Hq, Wp = xp.shape
    K, T = cols.shape
    PW = oh * Wp
    flat = xp.reshape(N, C, Hq * Wp)
    kk = k * k
    b0 = j0 // PW
    q0 = j0 - b0 * PW
    for r in range(K):
        c = r // kk
        off = ((r // k) % k) * d * Wp + (r % k) * d
        dst_row = cols[r]
        b, q, col = b0, q0, 0
        while col < T:
            L = min(PW - q, T - col)
            dst = dst_row[col:col + L]
            src = flat[b, c, off + q:off + q + L]
            for t in range(L):
                dst[t] = src[t]
            col += L
            q = 0
            b += 1


@jit
def col2im_wide(cols, k, d, oh, j0, dxp):
    # the transpose of im2col_wide: cols (C*k*k, T) added (+=) into dxp (N, C, Hp + 1, Wp)
    # (garbage columns of cols must be zeros: they land in the padding or wrap)
    N, C, Hq, Wp = dxp.shape
    K, T = cols.shape
    PW = oh * Wp
    flat = dxp.reshape(N, C, Hq * Wp)
    kk = k * k
    b0 = j0 // PW
    q0 = j0 - b0 * PW
    for r in range(K):
        c = r // kk
        off = ((r // k) % k) * d * Wp + (r % k) * d
        src_row = cols[r]
        b, q, col = b0, q0, 0
        while col < T:
            L = min(PW - q, T - col)
            src = src_row[col:col + L]
            dst = flat[b, c, off + q:off + q + L]
            for t in range(L):
                dst[t] += src[t]
            col += L
            q = 0
            b += 1


@jit
def crop_input(xp, pad, b0, b1, x):
    # x[b0:b1] <- the interior of xp (N, C, >= H + 2*pad, >= W + 2*pad)
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for b in range(b0, b1):
        for c in range(C):
            for y in range(H):
                src = xp[b, c, pad + y, pad:pad + W]
                dst = x[b, c, y]
                for i in range(W):
                    dst[i] = src[i]


@pjit_dual
def pad_phases(x, pad, sy, sx, out):
    # x (N, C, H, W) -> out (N, C, Hq, sy, sx, Wq): the zero-padded input split by
    # position modulo the stride, padded pixel (i, j) at out[b, c, i // sy, i % sy,
    # j % sx, j // sx] (zeros past the padded input). A stride-s conv's patches then read
    # runs of consecutive values: output (oy, ox) takes its element (ky, kx) from phase
    # (ky % sy, kx % sx) at (oy + ky // sy, ox + kx // sx). The phases of a row of the
    # input lie together, so that a patch's values span a few rows of one plane rather
    # than sy x sx planes (fewer pages: on Zen 3 the conv over the other layout, phase
    # planes apart, ran at 0.4-0.5x the speed of the same conv at stride 1).
    # The padded rows in order (x read once, front to back, out written in order), each
    # phase row's in-image columns found once instead of tested per value, unsigned
    # offsets so that LLVM vectorises the strided copy.
    N, C, H, W = x.shape
    Hq, Wq = out.shape[2], out.shape[5]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    zero = np.float32(0.0)
    usx = np.uint64(sx)
    for t in prange(N * C):
        plane = np.uint64(t * H * W)
        obase = t * Hq * sy * sx * Wq
        for yp in range(sy * Hq):
            y = yp - pad
            for px in range(sx):
                o = np.uint64(obase + (yp * sx + px) * Wq)
                if y < 0 or y >= H:
                    for u in range(np.uint64(Wq)):
                        of[o + u] = zero
                    continue
                # the columns u with 0 <= u * sx + px - pad < W
                lo = min(Wq, max(0, -(-(pad - px) // sx)))
                hi = max(lo, min(Wq, (W - 1 - px + pad) // sx + 1))
                for u in range(np.uint64(lo)):
                    of[o + u] = zero
                src = plane + np.uint64(y * W + lo * sx + px - pad)
                dst = o + np.uint64(lo)
                for u in range(np.uint64(hi - lo)):
                    of[dst + u] = xf[src + u * usx]
                for u in range(np.uint64(hi), np.uint64(Wq)):
                    of[o + u] = zero
