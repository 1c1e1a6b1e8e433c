"""The parallel loops of the packed convs: one Numba prange over a conv's tasks.

A task is a tile of output columns (pixels of the batch) times a block of filters: pack
the tile's patches (kernels.gemm.pack_patches, or Winograd's input transform), multiply
(kernels.gemm), store with the tail (kernels.epilogue, or Winograd's output transform).
Running the tasks inside one parallel region instead of from Python threads saves the
~100 us a Python thread pool takes to wake and join per conv (timed on this 2-core VM),
and keeps the GIL out of the loop. Each thread works in its own rows of the scratch
arrays (numba.get_thread_id); the tasks write disjoint parts of the output, and the
per-tile moments are added in tile order by the caller, so the numbers do not depend on
which thread ran what.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from . import epilogue, gemm, winograd
from .activations import LINEAR
from .config import jit, pjit
from .im2col import col2im_direct, col2im_wide, crop_input, im2col_direct, im2col_wide


@jit(inline="always")
def _task(i, fblocks, width, count, per_block, n):
    # task i: tile ti of `width` columns from j0 (T of them, Wt once padded to whole
    # panels) times panels p0 .. p0+np_ of the filters (f0 .. f1); np_ <= 0: nothing
    ti = i // fblocks
    j0 = ti * width
    T = min(width, count - j0)
    p0 = (i - ti * fblocks) * per_block
    np_ = min(-(-n // gemm.MR), p0 + per_block) - p0
    f0 = p0 * gemm.MR
    f1 = min(n, (p0 + np_) * gemm.MR)
    return ti, j0, T, p0, np_, f0, f1, -(-T // gemm.NR) * gemm.NR


@pjit
def packed(src, row_off, count, width, fblocks, per_block, oh, ow, pitch, image_stride,
           ap, shared, bp_all, acc_all, out, mode, mean, inv, scales, biases, code, parts,
           first, n):
    # Filters first .. first+n of out (one group), from the patch rows in row_off:
    # src flat (the zero-padded / phase-split input), row_off (K,) int64; columns of
    # `width` (a multiple of NR) per tile, filters in blocks of `per_block` panels;
    # shared: the patches of all columns packed once (fblocks > 1), else empty;
    # bp_all (threads, >= packed_cols(width)*K), acc_all (threads, >= rows*W) scratch;
    # parts (tiles, all filters, 2) float64 per-tile moments, or an empty array
    K = row_off.shape[0]
    tiles = -(-count // width)
    for i in prange(tiles * fblocks):
        ti, j0, T, p0, np_, f0, f1, Wt = _task(i, fblocks, width, count, per_block, n)
        if np_ <= 0:
            continue
        me = numba.get_thread_id()
        if shared.size:
            bp = shared
        else:
            bp = bp_all[me]
            gemm.pack_patches(src, row_off, j0, T, oh, ow, pitch, image_stride, bp)
        acc = acc_all[me, :np_ * gemm.MR * Wt]
        gemm.gemm_packed(ap, 0, p0, np_, bp, 0, K, acc, 0, Wt, Wt)
        rows = acc[:(f1 - f0) * Wt].reshape(f1 - f0, Wt)
        if parts.size:
            epilogue.store_moments(rows, T, j0, ow, oh, ow,
                                   parts[ti, first + f0:first + f1])
        epilogue.store(rows, T, out, j0, first + f0, ow, mode, mean, inv, scales, biases,
                       code)


@pjit
def gathered(src, row_off, packed_off, pitch, image_stride, ap, K, rows_per_task, fblocks,
             per_block, edge_all, out, mode, mean, inv, scales, biases, code):
    # A conv with the micro-kernel reading its B panels straight from the input (no
    # packing): src flat, the zero-padded (phase-split when strided) input as for
    # gemm.pack_patches, patch element k at row_off[k] past a patch's origin, output
    # rows `pitch` apart and images `image_stride` apart in src. Tasks: runs of
    # `rows_per_task` output rows of one image times blocks of `per_block` filter panels;
    # per NR output pixels of a row, every panel's MR x NR tile is computed over the
    # whole depth K and stored into out in place (masked at the row's end and past the
    # last filter), then the tail on the row while it is in cache. A last pixel group
    # whose reads would run past src is copied into edge (zero-padded) first.
    # packed_off: k * NR for k < K; edge_all (threads, >= K * NR) scratch.
    N, n, oh, ow = out.shape
    P = oh * ow
    of = out.reshape(-1)
    per_image = -(-oh // rows_per_task)
    reach = 0
    for k in range(K):
        reach = max(reach, row_off[k])
    reach += gemm.NR
    tail = mode != epilogue.RAW or (code != epilogue.NO_ACT and code != LINEAR)
    for i in prange(N * per_image * fblocks):
        ti = i // fblocks
        b = ti // per_image
        oy0 = (ti - b * per_image) * rows_per_task
        p0 = (i - ti * fblocks) * per_block
        f0 = p0 * gemm.MR
        f1 = min(n, (p0 + per_block) * gemm.MR)
        if f0 >= f1:
            continue
        edge = edge_all[numba.get_thread_id()]
        run = np.empty((1, 3), np.int64)
        for oy in range(oy0, min(oh, oy0 + rows_per_task)):
            for ox0 in range(0, ow, gemm.NR):
                cols = min(gemm.NR, ow - ox0)
                base = b * image_stride + oy * pitch + ox0
                b_src, b_off, offs = src, base, row_off
                if base + reach > src.size:         # copy the group, zero-padded
                    for k in range(K):
                        for u in range(gemm.NR):
                            j = base + row_off[k] + u
                            edge[k * gemm.NR + u] = src[j] if j < src.size else 0.0
                    b_src, b_off, offs = edge, 0, packed_off
                for f in range(f0, f1, gemm.MR):
                    gemm._microkernel_off(ap, f * K, b_src, b_off, offs, of,
                                          (b * n + f) * P + oy * ow + ox0, K, P, False,
                                          min(gemm.MR, f1 - f), cols)
            if tail:
                run[0, 0] = 0
                run[0, 1] = b * n * P + oy * ow
                run[0, 2] = ow
                epilogue.tail_runs(out, f0, f1 - f0, run, 1, mode, mean, inv, scales,
                                   biases, code)


@pjit
def pointwise(x, ap, width, fblocks, per_block, chunk, edge_all, out, mode, mean, inv,
              scales, biases, code):
    # A 1x1 stride-1 conv without padding, x (N, C, H, W) -> out (N, n, H, W):
    # tasks are tiles of `width` pixels of one image times blocks of `per_block` filter
    # panels; each multiplies the packed weights by x read in place into out in place
    # (gemm.gemm_inplace), then applies the tail to its block while it is in cache.
    # edge_all (threads, >= NR * KC) scratch.
    N, C, H, W = x.shape
    P = H * W
    n = out.shape[1]
    per_image = -(-P // width)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for i in prange(N * per_image * fblocks):
        ti = i // fblocks
        b = ti // per_image
        j0 = (ti - b * per_image) * width
        T = min(width, P - j0)
        p0 = (i - ti * fblocks) * per_block
        f0 = p0 * gemm.MR
        f1 = min(n, (p0 + per_block) * gemm.MR)
        if f0 >= f1:
            continue
        gemm.gemm_inplace(ap, p0, f1 - f0, C, xf, b * C * P + j0, P, of,
                          (b * n + f0) * P + j0, P, T, edge_all[numba.get_thread_id()],
                          chunk)
        if mode != epilogue.RAW or (code != epilogue.NO_ACT and code != LINEAR):
            run = np.empty((1, 3), np.int64)
            run[0, 0] = 0
            run[0, 1] = b * n * P + j0
            run[0, 2] = T
            epilogue.tail_runs(out, f0, f1 - f0, run, 1, mode, mean, inv, scales, biases,
                               code)


@pjit
def winograd_tiles(xp, th, tw, count, width, fblocks, per_block, C, U, v_all, vstride,
                   m_all, mstride, out, mode, mean, inv, scales, biases, code):
    # Winograd F(2x2, 3x3) tasks on kernels.gemm: `width` tiles (a multiple of NR) per
    # task, filters in blocks of `per_block` panels; U (16, packed_rows(n) * C) the packed
    # transformed filters; v_all (threads, 16 * vstride), m_all (threads, 16 * mstride)
    n = out.shape[1]
    tasks = -(-count // width)
    for i in prange(tasks * fblocks):
        _, t0, T, p0, np_, f0, f1, Wt = _task(i, fblocks, width, count, per_block, n)
        if np_ <= 0:
            continue
        me = numba.get_thread_id()
        V = v_all[me]
        M = m_all[me]
        winograd.input_transform(xp, th, tw, t0, T, V, vstride, gemm.NR)
        gemm.gemm_planes(U, U.shape[1], p0, np_, V, vstride, C, M, mstride, Wt, Wt, 16)
        winograd.output_transform(M, mstride, Wt, f1 - f0, T, th, tw, t0, f0, out, mode,
                                  mean, inv, scales, biases, code)


def empty() -> np.ndarray:
    """The empty array the loops take for `shared` / `parts` when there is none."""
    return np.empty(0, np.float32)


EMPTY_PARTS = np.empty((0, 0, 2))


# Layouts of a conv's patch columns in `backward` (kernels.conv._Patches)
PLAIN, WIDE, COMPACT = 0, 1, 2


@pjit
def backward(x, xp, layout, k, sy, sx, pad, d, oh, ow, pitch, dy, wg, width, per_task,
             nt, partial, lanes_all, cols_all, dz_all, dcols_all, target, dx, src, row_off,
             src_pitch, src_stride, dwp_all, ap_all, bp_all, origins_all):
    # The weight gradient, and dx unless target is empty, of a conv with groups wg
    # (groups, m, K): tasks are runs of `per_task` whole images, cut into tiles of `width`
    # batch columns (`pitch` per output row). Slot s of partial runs tasks s, s + S, s + 2S,
    # ... in order (S = partial.shape[0]): the caller adds the slots in order, so the
    # numbers do not depend on the threads.
    # dW: with one group and `src` given (the input laid out as for the forward's
    # pack_patches, row_off its patch offsets), the patches are gathered straight into
    # packed columns (gemm.pack_patches_t) and dY into packed rows, DW_CHUNK pixels at a
    # time, and the micro-kernel adds up dwp_all[s] (padded n x K); otherwise im2col into
    # cols and partial[s, g] += dZ_g cols_g^T (gemm_nt's loop when `nt`, else the packed
    # GEMM). dx: cols = W_g^T dZ_g added back (col2im) into target (dx itself, or a padded
    # copy cropped into dx per task).
    N = x.shape[0]
    groups, m, K = wg.shape
    n = groups * m
    rows = groups * K
    per = oh * pitch
    P = oh * ow
    tasks = -(-N // per_task)
    S = partial.shape[0]
    padded = target.size > 0 and target.shape[2] != x.shape[2]
    direct = src.size > 0
    Kp = -(-K // gemm.NR) * gemm.NR
    panels = -(-n // gemm.MR)
    for s in prange(S):
        cols = cols_all[s]
        dzb = dz_all[s]
        dcb = dcols_all[s]
        lanes = lanes_all[s]
        for i in range(s, tasks, S):
            b0 = i * per_task
            b1 = min(N, b0 + per_task)
            if target.size:
                target[b0:b1] = 0.0
            if direct:
                for c0 in range(b0 * P, b1 * P, DW_CHUNK):
                    L = min(DW_CHUNK, b1 * P - c0)
                    gemm.pack_patches_t(src, row_off, c0, L, oh, ow, src_pitch, src_stride,
                                        origins_all[s], bp_all[s])
                    _pack_dy(dy, c0, L, ap_all[s])
                    gemm.gemm_packed(ap_all[s], 0, 0, panels, bp_all[s], 0, L, dwp_all[s], 0,
                                     Kp, Kp, True)
            for j0 in range(b0 * per, b1 * per, width):
                if direct and target.size == 0:
                    break
                T = min(width, b1 * per - j0)
                dz = dzb[:n * T].reshape(n, T)
                epilogue.gather(dy, j0, 0, pitch, dz)
                if not direct:
                    c2 = cols[:rows * T].reshape(rows, T)
                    if layout == WIDE:
                        im2col_wide(xp, k, d, oh, j0, c2)
                    elif layout == COMPACT:
                        im2col_direct(xp, k, sy, sx, pad, d, oh, ow, j0, c2)
                    else:
                        _plain_columns(xp, j0, per, c2)
                    for g in range(groups):
                        a = dz[g * m:(g + 1) * m]
                        b = c2[g * K:(g + 1) * K]
                        if nt:
                            lanes[:m * K * gemm.VW] = 0.0
                            gemm.gemm_nt_into(a, b, partial[s, g], lanes)
                        else:
                            gemm.gemm_into(a, b.T, partial[s, g], True)
                if target.size == 0:
                    continue
                dc = dcb[:rows * T].reshape(rows, T)
                for g in range(groups):
                    gemm.gemm_into(wg[g].T, dz[g * m:(g + 1) * m], dc[g * K:(g + 1) * K],
                                   False)
                if layout == WIDE:
                    col2im_wide(dc, k, d, oh, j0, target)
                else:
                    col2im_direct(dc, k, sy, sx, pad, d, oh, ow, j0, target)
            if padded:
                crop_input(target, pad, b0, b1, dx)
        if direct:
            dwp = dwp_all[s]
            for f in range(m):
                for r in range(K):
                    partial[s, 0, f, r] += dwp[f * Kp + r]


# Pixels per packing of the direct weight gradient: its packed patches (K x DW_CHUNK) and
# dY (n x DW_CHUNK) stay in L2 while the micro-kernel runs over them.
DW_CHUNK = 512


@jit
def _pack_dy(dy, c0, L, ap):
    # dY of batch pixels c0..c0+L (compact: image, then row-major pixel) as the packed
    # rows of kernels.gemm (MR filters per panel, zero rows past n), depth L
    N, n = dy.shape[0], dy.shape[1]
    P = dy.shape[2] * dy.shape[3]
    flat = dy.reshape(N, n, P)
    MR = gemm.MR
    for p in range(0, n, MR):
        rows = min(MR, n - p)
        base = p * L
        t = 0
        while t < L:
            j = c0 + t
            b = j // P
            q = j - b * P
            run = min(L - t, P - q)
            for i in range(rows):
                plane = flat[b, p + i, q:q + run]
                o = base + t * MR + i
                for u in range(run):
                    ap[o + u * MR] = plane[u]
            for i in range(rows, MR):
                o = base + t * MR + i
                for u in range(run):
                    ap[o + u * MR] = 0.0
            t += run


@jit
def _plain_columns(x, j0, per, cols):
    # cols (C, T) <- batch columns j0..j0+T of x (N, C, H, W) for a 1x1 stride-1 conv
    C, T = cols.shape
    col = 0
    while col < T:
        j = j0 + col
        b = j // per
        q = j - b * per
        L = min(per - q, T - col)
        for c in range(C):
            src = x[b, c].reshape(-1)[q:q + L]
            dst = cols[c, col:col + L]
            for t in range(L):
                dst[t] = src[t]
        col += L

