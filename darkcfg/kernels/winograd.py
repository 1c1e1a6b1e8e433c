"""Winograd F(2x2, 3x3) for 3x3 stride-1 undilated ungrouped convs at inference.

Each 2x2 output tile comes from a 4x4 input patch d (zero outside the image):
    V = B^T d B,  U = G g G^T (per filter and channel),  Y = A^T (sum_c U * V) A
    B^T = [[1, 0,-1, 0], [0, 1, 1, 0], [0,-1, 1, 0], [0, 1, 0,-1]]
    G   = [[1, 0, 0], [.5, .5, .5], [.5,-.5, .5], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1,-1,-1]]
so the channel sum becomes 16 GEMMs (n x C) @ (C x tiles): 16 products per 4 outputs
instead of 36, 2.25x fewer. The transforms only add, subtract and halve, so the result
stays within a few float32 roundings of the direct sum (F(4x4, 3x3) would save more but
multiplies by 2, 4 and 8 and loses about two more decimal digits).

Layout: tiles are numbered over the batch, t = (b*th + ty)*tw + tx for th x tw tiles per
image; V is (16, C, T) and the GEMM result M (16, m, T) for a task's T tiles, and
kernels.epilogue's tail is applied to the rows a task wrote, while they are in cache.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import jit, pjit
from .epilogue import U64, tail_runs


def filter_transform(weights: np.ndarray) -> np.ndarray:
    """weights (n, C, 3, 3) float32 -> U (16, n, C) float32, U[4a+b] = (G g G^T)[a, b],
    computed in float64 and rounded once."""
    n, c = weights.shape[:2]
    u = np.empty((16, n, c), np.float32)
    _filter_transform(weights, u)
    return u


@jit(inline="always")
def _gt(g0, g1, g2):
    # G applied to one column (g0, g1, g2) of a 3x3 kernel, in float64
    return g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2


@pjit
def _filter_transform(w, u):
    n, C = w.shape[0], w.shape[1]
    for f in prange(n):
        for c in range(C):
            g = w[f, c]
            # G g: columns j = 0, 1, 2 -> rows a = 0..3 of t (t[a][j])
            a0, a1, a2, a3 = _gt(np.float64(g[0, 0]), np.float64(g[1, 0]), np.float64(g[2, 0]))
            b0, b1, b2, b3 = _gt(np.float64(g[0, 1]), np.float64(g[1, 1]), np.float64(g[2, 1]))
            c0, c1, c2, c3 = _gt(np.float64(g[0, 2]), np.float64(g[1, 2]), np.float64(g[2, 2]))
            # (G g) G^T: row a of t is (a_a, b_a, c_a)
            for k, (t0, t1, t2) in enumerate(((a0, b0, c0), (a1, b1, c1), (a2, b2, c2),
                                              (a3, b3, c3))):
                v0, v1, v2, v3 = _gt(t0, t1, t2)
                u[4 * k, f, c] = v0
                u[4 * k + 1, f, c] = v1
                u[4 * k + 2, f, c] = v2
                u[4 * k + 3, f, c] = v3


@jit(inline="always")
def _rows(xf, p, q, sign):
    # the 4 values of the patch row at p plus (sign 1) or minus (sign -1) those at q
    one = U64(1)
    if sign > 0:
        return (xf[p] + xf[q], xf[p + one] + xf[q + one], xf[p + U64(2)] + xf[q + U64(2)],
                xf[p + U64(3)] + xf[q + U64(3)])
    return (xf[p] - xf[q], xf[p + one] - xf[q + one], xf[p + U64(2)] - xf[q + U64(2)],
            xf[p + U64(3)] - xf[q + U64(3)])


@jit(inline="always")
def _store_cols(V, k, vs, e, r):
    # one row of B^T d times B, into planes e..e+3 at V[k + plane * vs]
    r0, r1, r2, r3 = r
    V[k + U64(e) * vs] = r0 - r2
    V[k + U64(e + 1) * vs] = r1 + r2
    V[k + U64(e + 2) * vs] = r2 - r1
    V[k + U64(e + 3) * vs] = r1 - r3


@jit(inline="always")
def _input_run(xf, src, wp, V, base, vs, run):
    # B^T d B of `run` tiles side by side in a tile row: tile j's 4x4 patch starts at
    # xf[src + 2j], rows wp apart; its 16 values go to V[base + j + e * vs]. Unsigned
    # offsets and no branch: LLVM vectorises it across the tiles.
    for j in range(U64(run)):
        i0 = src + U64(2) * j
        i1 = i0 + wp
        i2 = i1 + wp
        i3 = i2 + wp
        k = base + j
        # rows: B^T d; then each row times B
        _store_cols(V, k, vs, 0, _rows(xf, i0, i2, -1))
        _store_cols(V, k, vs, 4, _rows(xf, i1, i2, 1))
        _store_cols(V, k, vs, 8, _rows(xf, i2, i1, -1))
        _store_cols(V, k, vs, 12, _rows(xf, i1, i3, -1))


@jit
def input_transform(xp, th, tw, t0, T, V, vstride, lanes):
    # xp (N, C, 2*th + 2, 2*tw + 2) padded input -> B^T d B of tiles t0..t0+T into V, flat:
    # plane e (of 16) at e * vstride, and within a plane panels of `lanes` tiles, each
    # C x lanes (channel-major): tile k of channel c at (k // lanes) * C * lanes + c * lanes
    # + k % lanes. lanes = T is the plain (C, T) matrix; lanes = kernels.gemm.NR the packed
    # columns of its micro-kernel. Per channel and tile row, the tiles in runs that stay
    # within one panel (1.1-1.6x faster than a tile at a time, Zen 3).
    C, Hp, Wp = xp.shape[1], xp.shape[2], xp.shape[3]
    xf = xp.reshape(-1)
    per = th * tw
    vs = U64(vstride)
    for c in range(C):
        t = t0
        while t < t0 + T:
            b = t // per
            r = t - b * per
            ty = r // tw
            tx0 = r - ty * tw
            L = min(tw - tx0, t0 + T - t)
            row0 = ((b * C + c) * Hp + 2 * ty) * Wp + 2 * tx0
            s = 0
            while s < L:
                k = t - t0 + s
                lane = k % lanes
                run = min(L - s, lanes - lane)
                _input_run(xf, U64(row0 + 2 * s), U64(Wp), V,
                           U64((k // lanes) * C * lanes + c * lanes + lane), vs, run)
                s += run
            t += L


@jit
def output_transform(Mf, mstride, ldm, m, T, th, tw, t0, f0, out, mode, mean, inv, scales,
                     biases, code):
    # Mf flat: plane e (of 16) at e * mstride, an (m, >= T) matrix with rows ldm apart,
    # for filters f0.. and tiles t0..; out (N, n, oh, ow) <- A^T M A, then the tail
    # (kernels.epilogue) on the output runs the tiles cover
    M = np.lib.stride_tricks.as_strided(Mf, (16, m, T), (mstride * 4, ldm * 4, 4))
    n, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    P = oh * ow
    per = th * tw
    o = out.reshape(-1)
    # tile-row pieces (first tile in the task, image, tile row, first tile column, count)
    segs = np.empty((T // tw + 2, 5), np.int64)
    runs = np.empty((2 * (T // tw + 2), 3), np.int64)
    ns = nr = 0
    t = t0
    while t < t0 + T:
        b = t // per
        r = t - b * per
        ty = r // tw
        tx0 = r - ty * tw
        L = min(tw - tx0, t0 + T - t)
        segs[ns, 0], segs[ns, 1], segs[ns, 2], segs[ns, 3], segs[ns, 4] = t - t0, b, ty, tx0, L
        ns += 1
        x0 = 2 * tx0
        x1 = min(ow, 2 * (tx0 + L))
        for y in range(2 * ty, min(oh, 2 * ty + 2)):
            runs[nr, 0], runs[nr, 1], runs[nr, 2] = 0, b * n * P + y * ow + x0, x1 - x0
            nr += 1
        t += L
    for f in range(m):
        g = U64(f0 + f)
        for q in range(ns):
            k0, b, ty, tx0, L = segs[q, 0], segs[q, 1], segs[q, 2], segs[q, 3], segs[q, 4]
            y0 = 2 * ty
            two = y0 + 1 < oh
            x0 = 2 * tx0
            full = L if 2 * (tx0 + L) <= ow else L - 1      # tiles with both columns
            r0 = U64(b * n * P) + g * U64(P) + U64(y0 * ow + x0)
            r1 = r0 + U64(ow)
            for s in range(L):
                k = k0 + s
                # columns: M A, per row of the 4x4 M
                p0 = M[0, f, k] + M[1, f, k] + M[2, f, k]
                q0 = M[1, f, k] - M[2, f, k] - M[3, f, k]
                p1 = M[4, f, k] + M[5, f, k] + M[6, f, k]
                q1 = M[5, f, k] - M[6, f, k] - M[7, f, k]
                p2 = M[8, f, k] + M[9, f, k] + M[10, f, k]
                q2 = M[9, f, k] - M[10, f, k] - M[11, f, k]
                p3 = M[12, f, k] + M[13, f, k] + M[14, f, k]
                q3 = M[13, f, k] - M[14, f, k] - M[15, f, k]
                # rows: A^T (M A)
                x = U64(2 * s)
                o[r0 + x] = p0 + p1 + p2
                if s < full:
                    o[r0 + x + U64(1)] = q0 + q1 + q2
                if two:
                    o[r1 + x] = p1 - p2 - p3
                    if s < full:
                        o[r1 + x + U64(1)] = q1 - q2 - q3
    tail_runs(out, f0, m, runs, nr, mode, mean, inv, scales, biases, code)


@jit
def _fingerprint(bits, run, step):
    # position-weighted sum of runs of `run` values `step` apart, and of the last value
    h = np.uint64(0)
    n = bits.size
    for i0 in range(0, n, step):
        for i in range(i0, min(n, i0 + run)):
            h += np.uint64(bits[i]) * np.uint64(2 * i + 1)
    last = n - 1
    return h + np.uint64(bits[last]) * np.uint64(2 * last + 1)


# fingerprint reads RUNS runs of RUN consecutive values (a cache line each): ~2k values
# on 128 lines; 4096 values spread one per line cost a cache miss each (~30 us a conv
# when the weights are not in cache, ~2 ms a forward of yolov7-tiny)
RUNS, RUN = 128, 16


def fingerprint(weights: np.ndarray) -> int:
    """A position-weighted sum of the bit patterns of RUNS runs of RUN consecutive values
    spread evenly over a float32 array (all of them when it is smaller): it changes when
    the array is rewritten as a whole (new weights loaded or drawn, an SGD step), at a cost
    of a few microseconds whatever the size. A change to a few values can go unseen:
    whoever edits weights in place clears the caches keyed on it (Layer.params_changed)."""
    bits = weights.reshape(-1).view(np.uint32)
    if bits.size == 0:
        return 0
    step = max(RUN, bits.size // RUNS)
    return int(_fingerprint(bits, RUN, step))
