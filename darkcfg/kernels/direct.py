"""Direct (no im2col) convolution for grouped convs with few filters per group.

Depthwise convs (groups = channels) make one 1 x k*k by k*k x P GEMM per channel, far
too small for BLAS; this loop is memory-bound instead. Each output sums its terms in the
im2col row order (ci, ky, kx), as the GEMM does.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .config import jit, jit_sums, pjit, pjit_sums
from .epilogue import U64, tail_runs
from .gemm import _as_int, _data, _fma_loop


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


LANES = 8      # float32 values per vector of the depthwise kernels (ymm)
PIXELS = 4     # vectors of sums held in registers at once


def _sums_intrinsic(count: int, broadcast: bool):
    """An intrinsic summing `count` vectors of LANES outputs over all taps in registers:
    (tile, s0, step, taps, wt, acc, a0) -> acc[a0 + r*LANES ..] = sum_q W_q * tile[s0 +
    taps[q] + r*step ..] for r < count, q < taps.size, the terms in the order of q, each
    a separate multiply and add. W_q is the vector wt[q*LANES ..] (a channel block's
    weights), or with `broadcast` the value wt[q] in every lane (one plane's)."""

    @intrinsic
    def pixels(typingctx, tile, s0, step, taps, wt, acc, a0):
        sig = types.void(tile, s0, step, taps, wt, acc, a0)

        def codegen(context, builder, signature, args):
            tile_a, s0_v, step_v, taps_a, wt_a, acc_a, a0_v = args
            tys = signature.args
            i64 = ir.IntType(64)
            vt = ir.VectorType(ir.FloatType(), LANES)
            s0_v = _as_int(builder, s0_v, i64)
            step_v = _as_int(builder, step_v, i64)
            ntaps = cgutils.create_struct_proxy(tys[3])(context, builder, value=taps_a).nitems
            t0 = _data(context, builder, tys[0], tile_a, s0_v)
            tp = _data(context, builder, tys[3], taps_a, ir.Constant(i64, 0))
            w0 = _data(context, builder, tys[4], wt_a, ir.Constant(i64, 0))
            zero = ir.Constant(vt, [0.0] * LANES)

            def vec(ptr):
                return builder.load(builder.bitcast(ptr, vt.as_pointer()), align=4)

            def body(q, accs):
                off = builder.load(builder.gep(tp, [q]))
                if broadcast:
                    one = builder.insert_element(ir.Constant(vt, ir.Undefined),
                                                 builder.load(builder.gep(w0, [q])),
                                                 ir.Constant(ir.IntType(32), 0))
                    wv = builder.shuffle_vector(one, one, ir.Constant(
                        ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
                else:
                    wv = vec(builder.gep(w0, [builder.mul(q, ir.Constant(i64, LANES))]))
                new = []
                for r, a in enumerate(accs):
                    at = builder.add(off, builder.mul(step_v, ir.Constant(i64, r)))
                    new.append(builder.fadd(a, builder.fmul(wv, vec(builder.gep(t0, [at])))))
                return new

            sums = _fma_loop(builder, ntaps, 1, [zero] * count, body)
            out = _data(context, builder, tys[5], acc_a, _as_int(builder, a0_v, i64))
            for r, v in enumerate(sums):
                builder.store(v, builder.bitcast(
                    builder.gep(out, [ir.Constant(i64, r * LANES)]), vt.as_pointer()),
                    align=4)
            return context.get_dummy_value()

        return sig, codegen

    return pixels


_pixels_n = _sums_intrinsic(PIXELS, False)
_pixels_1 = _sums_intrinsic(1, False)
_run_sums = _sums_intrinsic(PIXELS, True)      # PIXELS * LANES outputs of one plane


# Inference depthwise convs (one filter per channel) with the tail fused. Each task copies
# its input plane into zero-padded phase planes (for stride s, plane (py, px) holds the
# padded pixels (s r + py, s c + px), as im2col.pad_phases lays out a whole tensor; one
# plane at a time stays in cache, and the copy was 8-30 % of these convs' time when made
# for the whole tensor first), so every tap of every output becomes one run of
# consecutive values: output (oy, ox) at flat position oy*Wq + ox of a plane Wq wide reads
# tap (ky, kx) at the same position plus a constant offset. The columns past ow are
# computed and dropped. A few output rows at a time keep the sums in L1; _run_sums adds
# up 32 of them at a time in registers over all taps (1.0-1.3x faster than adding each
# tap's products into the sums in L1, one Zen 3 core).
_CHUNK = 2048       # sums per block of output rows (8 KB)


@jit(inline="always")
def _phase_spans(H, W, pad, sy, sx, Hq, Wq):
    # where _fill_phases puts the input, computed once per call (no division per row):
    # row iy starts at planes offset span[iy, 0]; within it, phase px takes the columns
    # ix0 + j sx, j < count, to offset x0 + j, where (ix0, x0, count) = span[H + px]
    span = np.zeros((H + sx, 3), np.int64)
    for iy in range(H):
        yp = iy + pad
        span[iy, 0] = ((yp % sy) * sx * Hq + yp // sy) * Wq
    for px in range(sx):                # the columns ix with (ix + pad) % sx == px
        ix0 = (px - pad) % sx
        span[H + px, 0] = ix0
        span[H + px, 1] = px * Hq * Wq + (ix0 + pad) // sx
        span[H + px, 2] = max(0, (W - ix0 + sx - 1) // sx)
    return span


@jit(inline="always")
def _fill_phases(xf, x0, H, W, sx, span, buf, lanes, lane):
    # the padded plane x[x0 : x0 + H*W] split into sy*sx phase planes (_phase_spans), with
    # `lanes` values per pixel: pixel i of the planes at buf[i * lanes + lane]. The
    # padding is left as it is in buf (the caller zeroes buf first).
    L = U64(lanes)
    for iy in range(H):
        s0 = U64(x0 + iy * W)
        for px in range(sx):
            d0 = U64((span[iy, 0] + span[H + px, 1]) * lanes + lane)
            s1 = s0 + U64(span[H + px, 0])
            for j in range(U64(span[H + px, 2])):
                buf[d0 + j * L] = xf[s1 + j * U64(sx)]


@jit(inline="always")
def _tap_offsets(k, d, sy, sx, Hq, Wq, lanes):
    # tap (ky, kx)'s offset from an output's own position in the phase planes (Hq x Wq,
    # `lanes` values per pixel), in the order ky * k + kx
    taps = np.empty(k * k, np.int64)
    for ky in range(k):
        qy = ky * d
        for kx in range(k):
            qx = kx * d
            taps[ky * k + kx] = ((((qy % sy) * sx + qx % sx) * Hq + qy // sy) * Wq
                                 + qx // sx) * lanes
    return taps


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
    run = PIXELS * LANES
    # sums in runs of `run` values: the last run of a block of rows reads up to run - 1
    # values past its end, and the last row's dropped columns up to k*d past the planes
    size = sy * sx * Hq * Wq + Wq + k * d + run
    taps = _tap_offsets(k, d, sy, sx, Hq, Wq, 1)
    span = _phase_spans(H, W, pad, sy, sx, Hq, Wq)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    wf = w.reshape(-1)
    per = -(-N * C // blocks)
    for blk in prange(blocks):         # planes in `blocks` runs: scratch made once a run
        buf = np.empty(size, np.float32)
        acc = np.empty(-(-rows * Wq // run) * run, np.float32)
        wq = np.empty(k * k, np.float32)
        runs = np.empty((1, 3), np.int64)
        for t in range(blk * per, min(N * C, (blk + 1) * per)):
            b = t // C
            c = t - b * C
            for i in range(buf.size):
                buf[i] = 0.0
            _fill_phases(xf, t * H * W, H, W, sx, span, buf, 1, 0)
            for q in range(k * k):
                wq[q] = wf[c * k * k + q]
            for r0 in range(0, oh, rows):
                nr = min(rows, oh - r0)
                for i in range(0, nr * Wq, run):
                    _run_sums(buf, r0 * Wq + i, LANES, taps, wq, acc, i)
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


# Inference depthwise convs on small maps (7 x 7 to 28 x 28: efficientnet's later
# stages), where a plane's rows are too short for vectors: channels in blocks of LANES
# instead, the vectors running across them (ONNX Runtime's NCHWc layout does the same).
# Each task copies its block's input into zero-padded phase tiles as conv_depthwise does
# with one plane, but with the LANES channels innermost, so that every tap of every
# output pixel of the block is one vector; _pixels_n sums PIXELS outputs at a time in
# registers over all taps, in conv_depthwise's order (ky, kx) with a separate multiply
# and add, so the bits are the same. The sums go back into the channels' planes and the
# tail runs on the block's planes while they are in cache.


@pjit
def conv_depthwise_blocked(x, w, sy, sx, pad, d, out, mode, mean, inv, scales, biases,
                           code, blocks):
    # x (N, C, H, W); w (C, 1, k, k); out (N, C, oh, ow) = tail(conv), fully overwritten
    N, C, H, W = x.shape
    k = w.shape[2]
    kk = k * k
    oh, ow = out.shape[2], out.shape[3]
    Hq = (H + 2 * pad + sy - 1) // sy
    Wq = (W + 2 * pad + sx - 1) // sx
    P = oh * ow
    row = ow * LANES
    step = LANES                # from one output pixel to the next in its phase tile
    cblocks = -(-C // LANES)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    wf = w.reshape(-1)
    taps = _tap_offsets(k, d, sy, sx, Hq, Wq, LANES)
    span = _phase_spans(H, W, pad, sy, sx, Hq, Wq)
    per = -(-N * cblocks // blocks)
    for blk in prange(blocks):
        tile = np.empty(sy * sx * Hq * Wq * LANES, np.float32)
        wt = np.empty(kk * LANES, np.float32)
        acc = np.empty(row, np.float32)
        runs = np.empty((1, 3), np.int64)
        for t in range(blk * per, min(N * cblocks, (blk + 1) * per)):
            b = t // cblocks
            c0 = (t - b * cblocks) * LANES
            cb = min(LANES, C - c0)
            for i in range(tile.size):
                tile[i] = 0.0
            for cc in range(cb):
                _fill_phases(xf, (b * C + c0 + cc) * H * W, H, W, sx, span, tile, LANES, cc)
            for i in range(wt.size):
                wt[i] = 0.0
            for cc in range(cb):
                for q in range(kk):
                    wt[q * LANES + cc] = wf[(c0 + cc) * kk + q]
            for oy in range(oh):
                s1 = oy * Wq * LANES
                ox = 0
                while ox + PIXELS <= ow:
                    _pixels_n(tile, s1 + ox * step, step, taps, wt, acc, ox * LANES)
                    ox += PIXELS
                while ox < ow:
                    _pixels_1(tile, s1 + ox * step, step, taps, wt, acc, ox * LANES)
                    ox += 1
                o0 = ((b * C + c0) * oh + oy) * ow
                for cc in range(cb):
                    for ox in range(ow):
                        of[o0 + cc * P + ox] = acc[ox * LANES + cc]
            runs[0, 0] = 0
            runs[0, 1] = b * C * P
            runs[0, 2] = P
            tail_runs(out, c0, cb, runs, 1, mode, mean, inv, scales, biases, code)
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
