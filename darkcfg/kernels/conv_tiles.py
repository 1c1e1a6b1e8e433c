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
from .config import pjit


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
    MR = gemm.MR
    panels = -(-n // MR)
    tiles = -(-count // width)
    for i in prange(tiles * fblocks):
        ti = i // fblocks
        fi = i - ti * fblocks
        j0 = ti * width
        T = min(width, count - j0)
        p0 = fi * per_block
        np_ = min(panels, p0 + per_block) - p0
        if np_ <= 0:
            continue
        f0 = p0 * MR
        f1 = min(n, (p0 + np_) * MR)
        Wt = -(-T // gemm.NR) * gemm.NR
        me = numba.get_thread_id()
        if shared.size:
            bp = shared
        else:
            bp = bp_all[me]
            gemm.pack_patches(src, row_off, j0, T, oh, ow, pitch, image_stride, bp)
        acc = acc_all[me, :np_ * MR * Wt]
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
    MR = gemm.MR
    panels = -(-n // MR)
    tasks = -(-count // width)
    for i in prange(tasks * fblocks):
        ti = i // fblocks
        fi = i - ti * fblocks
        t0 = ti * width
        T = min(width, count - t0)
        p0 = fi * per_block
        np_ = min(panels, p0 + per_block) - p0
        if np_ <= 0:
            continue
        f0 = p0 * MR
        f1 = min(n, (p0 + np_) * MR)
        Wt = -(-T // gemm.NR) * gemm.NR
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
