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
from .config import jit

RAW, BIAS, BN = 0, 1, 2
NO_ACT = -1


@jit
def act_row(row, code):
    # row (L,) float32 in place. The common activations get their own loop (vectorised,
    # the code folded away); the rest share one loop over a runtime code.
    n = row.size
    if code in (NO_ACT, LINEAR):
        return
    if code == LEAKY:
        for i in range(n):
            row[i] = _f(np.float64(row[i]), LEAKY)
    elif code == RELU:
        for i in range(n):
            row[i] = _f(np.float64(row[i]), RELU)
    elif code == LOGISTIC:
        for i in range(n):
            row[i] = _f(np.float64(row[i]), LOGISTIC)
    elif code == MISH:
        for i in range(n):
            row[i] = _f(np.float64(row[i]), MISH)
    elif code == SWISH:
        for i in range(n):
            row[i] = _f(np.float64(row[i]), SWISH)
    else:
        for i in range(n):
            row[i] = _f(np.float64(row[i]), code)


@jit
def finish_row(src, dst, mode, m, r, s, o, code):
    # dst (L,) = the tail applied to src (L,); src may be dst
    n = dst.size
    if mode == BN:
        for p in range(n):
            v = np.float32(np.float64(src[p] - m) * r)
            dst[p] = v * s + o
    elif mode == BIAS:
        for p in range(n):
            dst[p] = src[p] + o
    else:
        for p in range(n):
            dst[p] = src[p]
    act_row(dst, code)


@jit
def store(acc, out, j0, f0, pitch, mode, mean, inv, scales, biases, code):
    # acc (m, T) -> out (N, n, oh, ow), filters f0.., batch columns j0..j0+T laid out
    # `pitch` per output row (pitch > ow: the wide layout of kernels.im2col, whose extra
    # columns are dropped); mean, scales, biases (n,) float32, inv (n,) float64
    N, n, oh, ow = out.shape
    m, T = acc.shape
    PW = oh * pitch
    out3 = out.reshape(N, n, oh * ow)
    j = j0
    while j < j0 + T:
        b = j // PW
        q = j - b * PW
        c0 = j - j0
        if pitch == ow:             # runs may cover several rows
            L = min(PW - q, j0 + T - j)
            for i in range(m):
                f = f0 + i
                finish_row(acc[i, c0:c0 + L], out3[b, f, q:q + L], mode, mean[f],
                           inv[f], scales[f], biases[f], code)
        else:
            oy = q // pitch
            ox = q - oy * pitch
            L = min(pitch - ox, j0 + T - j)
            v = min(L, ow - ox)
            if v > 0:
                for i in range(m):
                    f = f0 + i
                    finish_row(acc[i, c0:c0 + v], out[b, f, oy, ox:ox + v], mode, mean[f],
                               inv[f], scales[f], biases[f], code)
        j += L


@jit
def gather(src, j0, f0, pitch, dst):
    # the transpose of a RAW store: src (N, n, oh, ow) -> dst (m, T), zeros in the
    # columns a wide layout drops
    N, n, oh, ow = src.shape
    m, T = dst.shape
    PW = oh * pitch
    src3 = src.reshape(N, n, oh * ow)
    j = j0
    while j < j0 + T:
        b = j // PW
        q = j - b * PW
        c0 = j - j0
        if pitch == ow:
            L = min(PW - q, j0 + T - j)
            for i in range(m):
                s = src3[b, f0 + i, q:q + L]
                d = dst[i, c0:c0 + L]
                for p in range(L):
                    d[p] = s[p]
        else:
            oy = q // pitch
            ox = q - oy * pitch
            L = min(pitch - ox, j0 + T - j)
            v = max(0, min(L, ow - ox))
            for i in range(m):
                d = dst[i, c0:c0 + L]
                s = src[b, f0 + i, oy, ox:ox + v]
                for p in range(v):
                    d[p] = s[p]
                for p in range(v, L):
                    d[p] = 0.0
        j += L
