"""Pooling: Darknet's windowed max and average pools, channel max pool, global average,
each with its backward (dLoss/d(input) from dLoss/d(output)) after the wrappers.

Window geometry (Darknet's src/maxpool_layer.c: make_maxpool_layer, forward_maxpool_layer;
the reference case `pooling` of tests/test_reference_forward.py): `padding` is the TOTAL
padding, the window for output (i, j) starts at (i*stride_y - padding//2,
j*stride_x - padding//2), and cells outside the image are skipped.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .config import check_f32, jit, pjit, pjit_dual, pjit_sums
from .gemm import prefetch

# Darknet starts a max at -FLT_MAX (not -inf): a window lying wholly in the padding gives it.
FLT_MAX = np.float32(3.4028234663852886e38)


_NO_ARG = np.zeros((1, 1, 1, 1), np.int32)      # stands in for arg when it is not wanted


def pool_out_size(n: int, size: int, stride: int, padding: int) -> int:
    """Output length along one axis: (n + padding - size) // stride + 1."""
    return (n + padding - size) // stride + 1


@pjit_dual
def _maxpool(x, size, sy, sx, pad, out, arg, want_arg):
    # x (N, C, H, W) -> out (N, C, oh, ow) and, when want_arg, arg (N, C, oh, ow) int32:
    # flat index of the maximum within the sample's C*H*W input, -1 if none. Each output
    # cell sees its window's cells in Darknet's order (row, then column; strict >, so the
    # first maximum wins and a NaN never does), one output row at a time so the inner
    # loop runs along the row and vectorises.
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    off = pad // 2
    for t in prange(n * c * oh):
        bk = t // oh
        i = t - bk * oh
        b, k = bk // c, bk % c
        row = out[b, k, i]
        row[:] = -FLT_MAX
        where = arg[b, k, i] if want_arg else arg[0, 0, 0]
        if want_arg:
            where[:] = -1
        for dy in range(size):
            y = i * sy - off + dy
            if y < 0 or y >= h:
                continue
            src = x[b, k, y]
            base = (k * h + y) * w
            for dx in range(size):
                o = dx - off
                # output columns j with 0 <= j*sx + o < w
                lo = 0 if o >= 0 else min(ow, (-o + sx - 1) // sx)
                hi = max(lo, min(ow, (w - 1 - o) // sx + 1)) if w - 1 - o >= 0 else lo
                dst = row[lo:hi]
                if want_arg:
                    wh = where[lo:hi]
                    s0 = src[lo * sx + o:]
                    i0 = base + lo * sx + o
                    for j in range(hi - lo):
                        v = s0[j * sx]
                        better = v > dst[j]
                        dst[j] = v if better else dst[j]
                        wh[j] = i0 + j * sx if better else wh[j]
                elif sx == 2:
                    s2 = src[lo * 2 + o:]
                    for j in range(hi - lo):
                        v = s2[2 * j]
                        dst[j] = v if v > dst[j] else dst[j]
                else:
                    s1 = src[lo * sx + o:]
                    for j in range(hi - lo):
                        v = s1[j * sx]
                        dst[j] = v if v > dst[j] else dst[j]


@jit(inline="always")
def _pair_max(src, dst, n, shift):
    # dst[p] = max(src[p], src[p + shift]) for p < n: two arrays and unsigned offsets, so
    # LLVM vectorises it (within one array the unknown shift blocks that)
    us = np.uint64(shift)
    for p in range(np.uint64(n)):
        v = src[p + us]
        c = src[p]
        dst[p] = v if v > c else c


@jit(inline="always")
def _window_max(a, b, n, size, unit):
    # The max over windows of `size` steps of `unit` values, for the first n values of a
    # (which holds n + (size - 1) * unit), in log steps: windows of 1, 2, 4, ... steps,
    # then the last as two overlapping ones. Ping-pongs between a and b; returns the
    # array holding the result.
    have = 1
    src, dst = a, b
    while 2 * have <= size:
        _pair_max(src, dst, n + (size - 2 * have) * unit, have * unit)
        src, dst = dst, src
        have *= 2
    if have < size:
        _pair_max(src, dst, n, (size - have) * unit)
        src, dst = dst, src
    return src


@pjit_dual
def _maxpool_s1(x, size, pad, out, chunks):
    # _maxpool at stride 1 without argmax (inference: the SPP blocks' 5/9/13 windows,
    # yolov3-tiny's 2 x 2), separable and in log steps: per plane, each row laid out with
    # -FLT_MAX on both sides (NaN cells turned into -FLT_MAX: they never win), the row
    # windows' max in log2(size) + 1 vectorised passes, then the same down the columns
    # (rows stacked with -FLT_MAX rows around). The cells compared are the same in-image
    # ones and the max of a set does not depend on the order, so the result equals
    # _maxpool's (-FLT_MAX for a window wholly in the padding, as Darknet starts there).
    # 3-10x faster than a pass per window column (512 x 13 x 13, Zen 3).
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    off = pad // 2
    wp = ow + size - 1                  # a row with its windows' reach
    hp = oh + size - 1
    planes = n * c
    per = -(-planes // chunks)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    lo = -FLT_MAX
    m = max(h * wp, hp * ow) + size
    uw, uwp, uow, uoff = np.uint64(w), np.uint64(wp), np.uint64(ow), np.uint64(off)
    for ch in prange(chunks):
        a = np.empty(m, np.float32)
        b = np.empty(m, np.float32)
        for t in range(ch * per, min(planes, (ch + 1) * per)):
            src = np.uint64(t * h * w)
            for y in range(np.uint64(h)):
                r = y * uwp
                for u in range(uoff):
                    a[r + u] = lo
                s = src + y * uw
                d = r + uoff
                for u in range(uw):
                    v = xf[s + u]
                    a[d + u] = v if v > lo else lo
                for u in range(uoff + uw, uwp):
                    a[r + u] = lo
            rows = _window_max(a, b, h * wp, size, 1)      # past ow in a row: unused
            cols = b if rows is a else a
            for q in range(uoff * uow):
                cols[q] = lo
            for y in range(np.uint64(h)):
                s = y * uwp
                d = (y + uoff) * uow
                for j in range(uow):
                    cols[d + j] = rows[s + j]
            for q in range(np.uint64((off + h) * ow), np.uint64(m)):
                cols[q] = lo
            res = _window_max(cols, rows, oh * ow, size, ow)
            dst = np.uint64(t * oh * ow)
            for q in range(np.uint64(oh * ow)):
                of[dst + q] = res[q]


@jit(inline="always")
def _take(v, idx, best, where):
    # one window cell in Darknet's order: strict >, so the first maximum wins
    better = v > best
    return (v if better else best), (idx if better else where)


@pjit_dual
def _maxpool2(x, s, out, arg, want_arg):
    # _maxpool for the common size 2, stride s (1 or 2), padding 0 or 1 (window at
    # (s*i, s*j)): one plane per task, the interior columns as branch-free selects in
    # Darknet's cell order (row, then column)
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for t in prange(n * c):
        b, k = t // c, t % c
        for i in range(oh):
            y0 = s * i
            two = y0 + 1 < h
            r0 = x[b, k, y0]
            r1 = x[b, k, y0 + 1] if two else r0
            o = out[b, k, i]
            base = (k * h + y0) * w
            full = min(ow, (w - 2) // s + 1)    # windows with both columns in the image
            if want_arg:
                a = arg[b, k, i]
                for j in range(full):
                    m, wh = _take(r0[s * j], base + s * j, -FLT_MAX, -1)
                    m, wh = _take(r0[s * j + 1], base + s * j + 1, m, wh)
                    if two:
                        m, wh = _take(r1[s * j], base + w + s * j, m, wh)
                        m, wh = _take(r1[s * j + 1], base + w + s * j + 1, m, wh)
                    o[j] = m
                    a[j] = wh
            else:
                for j in range(full):
                    m = -FLT_MAX
                    v = r0[s * j]
                    m = v if v > m else m
                    v = r0[s * j + 1]
                    m = v if v > m else m
                    if two:
                        v = r1[s * j]
                        m = v if v > m else m
                        v = r1[s * j + 1]
                        m = v if v > m else m
                    o[j] = m
            for j in range(full, ow):       # a last column with one cell in the image
                m, wh = _take(r0[s * j], base + s * j, -FLT_MAX, -1)
                if two:
                    m, wh = _take(r1[s * j], base + w + s * j, m, wh)
                o[j] = m
                if want_arg:
                    arg[b, k, i, j] = wh


@pjit
def _avgpool_window(x, size, sy, sx, pad, oh, ow):
    # x (N, C, H, W) -> (N, C, oh, ow): mean over the in-image cells of each window
    # (AH [local_avgpool]: the divisor counts only valid cells).
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow), np.float32)
    off = pad // 2
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        for i in range(oh):
            y0 = i * sy - off
            for j in range(ow):
                x0 = j * sx - off
                total = np.float32(0.0)
                count = 0
                for dy in range(size):
                    y = y0 + dy
                    if y < 0 or y >= h:
                        continue
                    for dx in range(size):
                        xx = x0 + dx
                        if 0 <= xx < w:
                            total += x[b, k, y, xx]
                            count += 1
                out[b, k, i, j] = total / np.float32(count)
    return out


@pjit
def _maxpool_depth(x, out_c):
    # x (N, C, H, W) -> out (N, out_c, H, W), arg (N, out_c, H, W) int32 (flat index in the
    # sample): output channel g is the max over input channels g, g+out_c, g+2*out_c, ...
    n, c, h, w = x.shape
    out = np.empty((n, out_c, h, w), np.float32)
    arg = np.empty((n, out_c, h, w), np.int32)
    for bg in prange(n * out_c):
        b, g = bg // out_c, bg % out_c
        for i in range(h):
            for j in range(w):
                best = -FLT_MAX
                where = -1
                for k in range(g, c, out_c):
                    v = x[b, k, i, j]
                    if v > best:
                        best = v
                        where = (k * h + i) * w + j
                out[b, g, i, j] = best
                arg[b, g, i, j] = where
    return out, arg


# the float64 sums may run in SIMD lanes (config.pjit_sums)
@pjit_sums
def _global_avgpool(x):
    # x (N, C, H, W) -> (N, C): each plane's sum, then divided by h*w as Darknet does.
    # Darknet adds the plane up in float32, one value after the other; the float64 sum
    # here is the exact sum rounded once, and runs in SIMD lanes (a chain of float32
    # additions made the squeeze-excitation pools of efficientnet_b0 cost 3.6 ms).
    n, c, h, w = x.shape
    out = np.empty((n, c), np.float32)
    flat = x.reshape(n * c, h * w)
    for bk in prange(n * c):
        total = 0.0
        for i in range(h * w):
            total += np.float64(flat[bk, i])
        out[bk // c, bk % c] = np.float32(total) / np.float32(h * w)
    return out


# How many input rows ahead _maxpool2_s2 asks for: a map too big for the caches comes
# from memory, where the hardware prefetchers, following one plane's rows, start late
# (timed on Zen 3 with the input evicted: 1.15-2.3x faster from 2 to 8 rows ahead)
POOL_AHEAD = 4


@pjit_dual
def _maxpool2_s2(x, out):
    # _maxpool2 at stride 2 without argmax (inference), in flat loops LLVM vectorises
    # (unsigned offsets: no negative-index checks): per output, the first maximum of each
    # row's column pair, then of the two rows; that is the first maximum in Darknet's
    # cell order (row, then column), so the result equals _maxpool2's, NaN cells skipped
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    full = min(ow, (w - 2) // 2 + 1)        # windows with both columns in the image
    xf = x.reshape(-1)
    of = out.reshape(-1)
    lo = -FLT_MAX
    two = np.uint64(2)
    ahead = np.uint64(POOL_AHEAD * w)
    for t in prange(n * c):
        for i in range(oh):
            r0 = np.uint64((t * h + 2 * i) * w)
            r1 = np.uint64((t * h + 2 * i + 1) * w) if 2 * i + 1 < h else r0
            o = np.uint64((t * oh + i) * ow)
            for q in range(0, 2 * w, 16):        # the rows two outputs on, one line each
                prefetch(xf, r0 + ahead + np.uint64(q))
            for j in range(np.uint64(full)):
                a = xf[r0 + two * j]
                m = a if a > lo else lo
                a = xf[r0 + two * j + np.uint64(1)]
                m = a if a > m else m
                a = xf[r1 + two * j]
                m2 = a if a > lo else lo
                a = xf[r1 + two * j + np.uint64(1)]
                m2 = a if a > m2 else m2
                of[o + j] = m2 if m2 > m else m
            for j in range(full, ow):       # a last window with one column in the image
                a = xf[r0 + np.uint64(2 * j)]
                m = a if a > lo else lo
                a = xf[r1 + np.uint64(2 * j)]
                of[o + np.uint64(j)] = a if a > m else m


def maxpool(x: np.ndarray, size: int, stride_y: int, stride_x: int, padding: int, *,
            out: np.ndarray | None = None, arg: np.ndarray | None = None,
            want_arg: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """x (N, C, H, W) -> (out (N, C, oh, ow), argmax (N, C, oh, ow) int32 flat per sample,
    or None unless want_arg). `out` and `arg` are buffers to reuse when their shape fits."""
    check_f32("x", x, 4)
    nb, c, h, w = x.shape
    oh = pool_out_size(h, size, stride_y, padding)
    ow = pool_out_size(w, size, stride_x, padding)
    if size < 1 or oh < 1 or ow < 1:
        raise ValueError(f"pool window {size} (padding {padding}) does not fit a {h} x {w} "
                         "input")
    shape = (nb, c, oh, ow)
    if out is None or out.shape != shape:
        out = np.empty(shape, np.float32)
    kernel = _maxpool
    if size == 2 and stride_y == stride_x and stride_x in (1, 2) and padding in (0, 1):
        kernel = _maxpool2
    if want_arg:
        if arg is None or arg.shape != shape:
            arg = np.empty(shape, np.int32)
    else:
        arg = None
    if kernel is _maxpool2 and not want_arg and stride_x == 2:
        _maxpool2_s2(x, out)
    elif not want_arg and stride_y == stride_x == 1 and size >= 2:
        # tasks of whole planes, each with its own two row buffers
        _maxpool_s1(x, size, padding, out, max(1, min(nb * c, 4 * numba.get_num_threads())))
    elif kernel is _maxpool2:
        _maxpool2(x, stride_x, out, _NO_ARG if arg is None else arg, want_arg)
    else:
        _maxpool(x, size, stride_y, stride_x, padding, out, _NO_ARG if arg is None else arg,
                 want_arg)
    return out, arg


def local_avgpool(x: np.ndarray, size: int, stride_y: int, stride_x: int,
                  padding: int) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, oh, ow): windowed mean over in-image cells."""
    check_f32("x", x, 4)
    _, _, h, w = x.shape
    oh = pool_out_size(h, size, stride_y, padding)
    ow = pool_out_size(w, size, stride_x, padding)
    if size < 1 or oh < 1 or ow < 1:
        raise ValueError(f"pool window {size} (padding {padding}) does not fit a {h} x {w} "
                         "input")
    return _avgpool_window(x, size, stride_y, stride_x, padding, oh, ow)


def maxpool_depth(x: np.ndarray, out_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, H, W) -> (out (N, out_channels, H, W), argmax int32): max across channels."""
    check_f32("x", x, 4)
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1; received {out_channels}")
    return _maxpool_depth(x, out_channels)


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, 1, 1): the mean of each channel plane."""
    check_f32("x", x, 4)
    n, c = x.shape[:2]
    return _global_avgpool(x).reshape(n, c, 1, 1)


# --- backward ------------------------------------------------------------------------------
@pjit
def _scatter_argmax(dy, arg, length):
    # dy, arg (N, Co, P) -> dx (N, length): dx[b, arg[b, g, q]] += dy[b, g, q], skipping -1
    # (a window wholly in the padding). Race-free over (b, g): output channel g only ever
    # points into its own input channels (g itself, or g, g+Co, ... for maxpool_depth).
    n, co, p = dy.shape
    dx = np.zeros((n, length), np.float32)
    for bg in prange(n * co):
        b, g = bg // co, bg % co
        for q in range(p):
            a = arg[b, g, q]
            if a >= 0:
                dx[b, a] += dy[b, g, q]
    return dx


@pjit
def _avgpool_window_backward(dy, size, sy, sx, pad, h, w):
    # dy (N, C, oh, ow) -> dx (N, C, h, w): each output's gradient shared equally by the
    # in-image cells of its window (the forward's divisor).
    n, c, oh, ow = dy.shape
    dx = np.zeros((n, c, h, w), np.float32)
    off = pad // 2
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        for i in range(oh):
            y0 = i * sy - off
            ylo, yhi = max(y0, 0), min(y0 + size, h)
            for j in range(ow):
                x0 = j * sx - off
                xlo, xhi = max(x0, 0), min(x0 + size, w)
                if yhi <= ylo or xhi <= xlo:
                    continue                    # wholly in the padding: NaN forward
                g = dy[b, k, i, j] / np.float32((yhi - ylo) * (xhi - xlo))
                for y in range(ylo, yhi):
                    for xx in range(xlo, xhi):
                        dx[b, k, y, xx] += g
    return dx


@pjit
def _maxpool2_backward(dy, arg, dx):
    # dx (N, C, H, W) <- each output's gradient at its arg-max cell (flat index within the
    # sample, -1: none), zeros elsewhere; output channel k points into input plane k only,
    # so one plane per task: zeroed while in cache, then scattered into
    n, c, h, w = dx.shape
    P = dy.shape[2] * dy.shape[3]
    hw = h * w
    for t in prange(n * c):
        b, k = t // c, t % c
        plane = dx[b, k].reshape(-1)
        plane[:] = 0.0
        g = dy[b, k].reshape(-1)
        a = arg[b, k].reshape(-1)
        base = k * hw
        for j in range(P):
            if a[j] >= 0:
                plane[a[j] - base] += g[j]


def maxpool_backward_into(dy: np.ndarray, argmax: np.ndarray, in_shape: tuple[int, int, int],
                      out: np.ndarray | None = None) -> np.ndarray:
    """maxpool_backward for `maxpool` (not maxpool_depth, whose outputs point across
    channels) into a buffer `out` reused when its shape fits: each plane is zeroed just
    before its gradients land, instead of a zeroed array per call."""
    check_f32("dy", dy, 4)
    shape = (dy.shape[0], *in_shape)
    if out is None or out.shape != shape:
        out = np.empty(shape, np.float32)
    _maxpool2_backward(dy, argmax, out)
    return out


def maxpool_backward(dy: np.ndarray, argmax: np.ndarray,
                     in_shape: tuple[int, int, int]) -> np.ndarray:
    """dy (N, Co, oh, ow), argmax from `maxpool`/`maxpool_depth` -> dx (N, *in_shape): each
    output's gradient goes to its arg-max cell (first maximum wins, as in the forward)."""
    check_f32("dy", dy, 4)
    if argmax.shape != dy.shape:
        raise ValueError(f"argmax must have the shape of dy {dy.shape}; received "
                         f"{argmax.shape}")
    n, co = dy.shape[:2]
    c, h, w = in_shape
    dx = _scatter_argmax(dy.reshape(n, co, -1), argmax.reshape(n, co, -1), c * h * w)
    return dx.reshape(n, c, h, w)


def local_avgpool_backward(dy: np.ndarray, size: int, stride_y: int, stride_x: int,
                           padding: int, in_hw: tuple[int, int]) -> np.ndarray:
    """dy (N, C, oh, ow) -> dx (N, C, h, w) of `local_avgpool`: dy / (valid cells) spread
    over each window's in-image cells. (AH's CPU backward divides by size*size, which does
    not match its own forward near the border; darkcfg differentiates its forward.)"""
    check_f32("dy", dy, 4)
    h, w = in_hw
    if dy.shape[2:] != (pool_out_size(h, size, stride_y, padding),
                        pool_out_size(w, size, stride_x, padding)):
        raise ValueError(f"dy of shape {dy.shape} is not the pool output of a {h} x {w} "
                         "input")
    return _avgpool_window_backward(dy, size, stride_y, stride_x, padding, h, w)


def global_avgpool_backward(dy: np.ndarray, in_hw: tuple[int, int]) -> np.ndarray:
    """dy (N, C, 1, 1) or (N, C) -> dx (N, C, h, w): dy / (h*w) at every cell."""
    h, w = in_hw
    n, c = dy.shape[:2]
    g = np.asarray(dy, np.float32).reshape(n, c, 1, 1) / np.float32(h * w)
    return np.ascontiguousarray(np.broadcast_to(g, (n, c, h, w)))
