"""Moving GEMM tiles in and out of (N, n, P) activations, with the conv tail fused.

A conv tile is the GEMM result `acc` (m, T) for filters f0..f0+m and T consecutive output
columns j0..j0+T of the whole batch (column j is image j // P, pixel j % P). `store`
writes it into out (N, n, P), finishing each value on the way while it is still in cache:

    mode RAW   out = acc                                   (training: BN needs the batch)
    mode BIAS  out = act(acc + biases[f])
    mode BN    out = act(float((acc - mean) * inv) * scales + biases)  (kernels.bn's math)

`act` is Darknet's activation (kernels.activations codes; NO_ACT leaves it out), rounded
exactly as kernels.activations does. `gather` is the transpose of a RAW store (dy tiles
for the backward pass). Serial kernels: the threads of kernels.parallel call them.
"""
from __future__ import annotations

import numpy as np

from .activations import LEAKY, LINEAR, LOGISTIC, MISH, RELU, SWISH, _f
from .config import jit, jit_sums

RAW, BIAS, BN = 0, 1, 2
NO_ACT = -1


# Runs: a tile's columns cut into pieces that are contiguous in the output, as rows of an
# int64 array (column in the tile, offset in the flat output of filter 0, length). The
# loops index flat arrays with unsigned offsets and keep every test of mode and
# activation outside them: slicing a view per run (reference counts) and run-time tests
# inside (no vectorisation) made a store of 28-wide rows 6x slower.
U64 = np.uint64


@jit
def runs_of(j0, T, pitch, oh, ow, n, runs):
    # fill runs (>= T // pitch + 2, 3) for batch columns j0..j0+T; returns their count
    P = oh * ow
    PW = oh * pitch
    b = j0 // PW
    q = j0 - b * PW
    oy = q // pitch
    ox = q - oy * pitch
    col = 0
    k = 0
    while col < T:
        if pitch == ow:                 # contiguous to the end of the image
            L = min(PW - q, T - col)
            v = L
            dst = b * n * P + q
        else:
            L = min(pitch - ox, T - col)
            v = min(L, ow - ox)
            dst = b * n * P + oy * ow + ox
        if v > 0:
            runs[k, 0] = col
            runs[k, 1] = dst
            runs[k, 2] = v
            k += 1
        col += L
        if pitch == ow:
            q = 0
            b += 1
        else:
            ox = 0
            oy += 1
            if oy == oh:
                oy = 0
                b += 1
    return k


@jit(inline="always")
def _act_runs(o, base, runs, nr, code):
    # the activation in place on o[base + run]
    if code == LEAKY:
        for k in range(nr):
            d = base + U64(runs[k, 1])
            for t in range(U64(runs[k, 2])):
                o[d + t] = _f(np.float64(o[d + t]), LEAKY)
    elif code == RELU:
        for k in range(nr):
            d = base + U64(runs[k, 1])
            for t in range(U64(runs[k, 2])):
                o[d + t] = _f(np.float64(o[d + t]), RELU)
    elif code == LOGISTIC:
        for k in range(nr):
            d = base + U64(runs[k, 1])
            for t in range(U64(runs[k, 2])):
                o[d + t] = _f(np.float64(o[d + t]), LOGISTIC)
    elif code == MISH:
        for k in range(nr):
            d = base + U64(runs[k, 1])
            for t in range(U64(runs[k, 2])):
                o[d + t] = _f(np.float64(o[d + t]), MISH)
    elif code == SWISH:
        for k in range(nr):
            d = base + U64(runs[k, 1])
            for t in range(U64(runs[k, 2])):
                o[d + t] = _f(np.float64(o[d + t]), SWISH)
    elif code not in (NO_ACT, LINEAR):
        for k in range(nr):
            d = base + U64(runs[k, 1])
            for t in range(U64(runs[k, 2])):
                o[d + t] = _f(np.float64(o[d + t]), code)


@jit
def tail_runs(out, f0, m, runs, nr, mode, mean, inv, scales, biases, code):
    # the tail in place on the runs of filters f0..f0+m of out (N, n, oh, ow)
    P = out.shape[2] * out.shape[3]
    o = out.reshape(-1)
    for i in range(m):
        f = f0 + i
        base = U64(f * P)
        if mode == BN:
            mf, rf, sf, bf = mean[f], inv[f], scales[f], biases[f]
            for k in range(nr):
                d = base + U64(runs[k, 1])
                for t in range(U64(runs[k, 2])):
                    v = np.float32(np.float64(o[d + t] - mf) * rf)
                    o[d + t] = v * sf + bf
        elif mode == BIAS:
            bf = biases[f]
            for k in range(nr):
                d = base + U64(runs[k, 1])
                for t in range(U64(runs[k, 2])):
                    o[d + t] = o[d + t] + bf
        _act_runs(o, base, runs, nr, code)


@jit(inline="always")
def _moments(a, s0, L):
    # (sum, sum of squares) of a[s0:s0+L] in float64 (SIMD lanes under config.jit_sums)
    s = 0.0
    q = 0.0
    for t in range(L):
        v = np.float64(a[s0 + t])
        s += v
        q += v * v
    return s, q


@jit_sums
def store_moments(acc, T, j0, pitch, oh, ow, sums):
    # sums (m, 2) float64 <- per filter, the sum and sum of squares of the tile's kept
    # columns (the raw product, for the training BN statistics); acc (m, >= T): rows of
    # T columns, any padding after them ignored
    m, ld = acc.shape
    runs = np.empty((T // pitch + 2, 3), np.int64)
    nr = runs_of(j0, T, pitch, oh, ow, 1, runs)
    a = acc.reshape(-1)
    for i in range(m):
        sa = U64(i * ld)
        s = 0.0
        q = 0.0
        for k in range(nr):
            u, v = _moments(a, sa + U64(runs[k, 0]), U64(runs[k, 2]))
            s += u
            q += v
        sums[i, 0] = s
        sums[i, 1] = q


@jit
def store(acc, T, out, j0, f0, pitch, mode, mean, inv, scales, biases, code):
    # acc (m, >= T) -> out (N, n, oh, ow), filters f0.., batch columns j0..j0+T laid out
    # `pitch` per output row (pitch > ow: the wide layout of kernels.im2col, whose extra
    # columns are dropped), then the tail; mean, scales, biases (n,) float32, inv (n,)
    # float64
    n, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    m, ld = acc.shape
    P = oh * ow
    runs = np.empty((T // pitch + 2, 3), np.int64)
    nr = runs_of(j0, T, pitch, oh, ow, n, runs)
    a = acc.reshape(-1)
    o = out.reshape(-1)
    for i in range(m):
        f = f0 + i
        sa = U64(i * ld)
        base = U64(f * P)
        if mode == BN and code == LEAKY:        # the common case in one pass
            # leaky as _f's (Darknet's .1 * x in double), the choice made in float32:
            # 0.8x the time of selecting between doubles (same bits; not in place, so
            # no masked store)
            mf, rf, sf, bf = mean[f], inv[f], scales[f], biases[f]
            for k in range(nr):
                s0 = sa + U64(runs[k, 0])
                d = base + U64(runs[k, 1])
                for t in range(U64(runs[k, 2])):
                    v = np.float32(np.float64(a[s0 + t] - mf) * rf) * sf + bf
                    y = np.float32(np.float64(v) * 0.1)
                    o[d + t] = v if v > 0 else y
            continue
        for k in range(nr):
            s0 = sa + U64(runs[k, 0])
            d = base + U64(runs[k, 1])
            for t in range(U64(runs[k, 2])):
                o[d + t] = a[s0 + t]
    if not (mode == BN and code == LEAKY) and (mode != RAW or code not in (NO_ACT, LINEAR)):
        tail_runs(out, f0, m, runs, nr, mode, mean, inv, scales, biases, code)


@jit
def gather(src, j0, f0, pitch, dst):
    # the transpose of a RAW store: src (N, n, oh, ow) -> dst (m, T), zeros in the
    # columns a wide layout drops
    n, oh, ow = src.shape[1], src.shape[2], src.shape[3]
    m, T = dst.shape
    P = oh * ow
    runs = np.empty((T // pitch + 2, 3), np.int64)
    nr = runs_of(j0, T, pitch, oh, ow, n, runs)
    s = src.reshape(-1)
    d = dst.reshape(-1)
    for i in range(m):
        base = U64((f0 + i) * P)
        row = U64(i * T)
        if pitch != ow:
            for t in range(U64(T)):
                d[row + t] = 0.0
        for k in range(nr):
            c = row + U64(runs[k, 0])
            e = base + U64(runs[k, 1])
            for t in range(U64(runs[k, 2])):
                d[c + t] = s[e + t]
