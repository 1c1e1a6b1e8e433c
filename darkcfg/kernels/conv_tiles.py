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
           ap, shared, bp_all, acc_all, out, mode, mean, inv, scales, biases, code, parts):
    # src flat (the zero-padded / phase-split input), row_off (K,) int64; columns of
    # `width` (a multiple of NR) per tile, filters in blocks of `per_block` panels;
    # shared: the patches of all columns packed once (fblocks > 1), else empty;
    # bp_all (threads, >= packed_cols(width)*K), acc_all (threads, >= rows*W) scratch;
    # parts (tiles, n, 2) float64 per-tile moments, or an empty array
    K = row_off.shape[0]
    n = out.shape[1]
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
            epilogue.store_moments(rows, T, j0, ow, oh, ow, parts[ti, f0:f1])
        epilogue.store(rows, T, out, j0, f0, ow, mode, mean, inv, scales, biases, code)


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
             nt, partial, lanes_all, cols_all, dz_all, dcols_all, target, dx):
    # The weight gradient, and dx unless target is empty, of a conv with groups wg
    # (groups, m, K): tasks are runs of `per_task` whole images, cut into tiles of `width`
    # batch columns (`pitch` per output row); per tile the patches (from xp), dZ gathered
    # from dy, partial[s, g] += dZ_g cols_g^T (kernels.gemm.gemm_nt's loop when `nt`,
    # else the packed GEMM), and for dx cols = W_g^T dZ_g added back (col2im) into target
    # (dx itself, or a padded copy cropped into dx per task). Slot s of partial runs
    # tasks s, s + S, s + 2S, ... in order (S = partial.shape[0]): the caller adds the
    # slots in order, so the numbers do not depend on the threads.
    N = x.shape[0]
    groups, m, K = wg.shape
    n = groups * m
    rows = groups * K
    per = oh * pitch
    tasks = -(-N // per_task)
    S = partial.shape[0]
    padded = target.size > 0 and target.shape[2] != x.shape[2]
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
            for j0 in range(b0 * per, b1 * per, width):
                T = min(width, b1 * per - j0)
                c2 = cols[:rows * T].reshape(rows, T)
                if layout == WIDE:
                    im2col_wide(xp, k, d, oh, j0, c2)
                elif layout == COMPACT:
                    im2col_direct(xp, k, sy, sx, pad, d, oh, ow, j0, c2)
                else:
                    _plain_columns(xp, j0, per, c2)
                dz = dzb[:n * T].reshape(n, T)
                epilogue.gather(dy, j0, 0, pitch, dz)
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
