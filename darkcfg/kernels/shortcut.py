"""Residual sums: P's [shortcut] (alpha/beta, channel overlap, integer-factor spatial
mixing) and AH's flat sum over several `from` layers, with their backward passes; and
[scale_channels]' product of a map by one factor per channel."""
from __future__ import annotations

import numpy as np
from numba import prange

from .activations import LEAKY, LINEAR, RELU, _f
from .config import check_f32, pjit, pjit_dual


@pjit
def _shortcut_mix(out, add, alpha, beta):
    # out (N, C, H, W) in place, add (N, Ca, Ha, Wa). Over the overlapping channels and the
    # min(H, Ha) x min(W, Wa) grid: a larger `add` is read every `stride`-th cell, a smaller
    # one lands on every `sample`-th cell of out (sparse, not nearest-neighbour).
    n, c, h, w = out.shape
    ca, ha, wa = add.shape[1], add.shape[2], add.shape[3]
    stride = max(1, wa // w)
    sample = max(1, w // wa)
    minc, minh, minw = min(c, ca), min(h, ha), min(w, wa)
    for bk in prange(n * minc):
        b, k = bk // minc, bk % minc
        for j in range(minh):
            for i in range(minw):
                o = out[b, k, j * sample, i * sample]
                out[b, k, j * sample, i * sample] = (alpha * o
                                                     + beta * add[b, k, j * stride, i * stride])


@pjit_dual
def _shortcut_same(x, add, alpha, beta, out, code):
    # x, add, out (n,) flat, same shape: out = alpha*x + beta*add in float32 (P's formula),
    # then the activation `code` (LINEAR, LEAKY or RELU; others are applied afterwards)
    if code == LEAKY:
        for i in prange(x.size):
            out[i] = _f(np.float64(alpha * x[i] + beta * add[i]), LEAKY)
    elif code == RELU:
        for i in prange(x.size):
            out[i] = _f(np.float64(alpha * x[i] + beta * add[i]), RELU)
    else:
        for i in prange(x.size):
            out[i] = alpha * x[i] + beta * add[i]


def shortcut_mix(x: np.ndarray, add: np.ndarray, alpha: float = 1.0,
                 beta: float = 1.0, out: np.ndarray | None = None,
                 activation: str = "linear") -> tuple[np.ndarray, bool]:
    """x (N, C, H, W), add (N, Ca, Ha, Wa) -> (N, C, H, W): alpha*x + beta*add where they
    overlap (reference case `shortcut`); the other cells keep x's value, unscaled.
    Spatial sizes must be equal or differ by one integer factor on both axes. `out` is a
    buffer to reuse when its shape fits (it must not be x or add). Returns (out, done):
    done when `activation` (leaky, relu or linear with equal shapes) was applied in the
    same pass, else the caller applies it."""
    check_f32("x", x, 4)
    check_f32("add", add, 4)
    (n, _, h, w), (na, _, ha, wa) = x.shape, add.shape
    big, small = (wa, w) if wa >= w else (w, wa)
    bigh, smallh = (ha, h) if wa >= w else (h, ha)
    if na != n or big % small or bigh % smallh or big // small != bigh // smallh:
        raise ValueError(f"cannot add shape {add.shape} to {x.shape}: batch must match and "
                         "the spatial sizes must differ by one integer factor on both axes")
    if out is None or out.shape != x.shape:
        out = np.empty_like(x)
    if add.shape == x.shape:
        code = _FUSED.get(activation, -1)
        _shortcut_same(x.reshape(-1), add.reshape(-1), np.float32(alpha), np.float32(beta),
                       out.reshape(-1), code)
        return out, code != -1
    np.copyto(out, x)
    _shortcut_mix(out, add, np.float32(alpha), np.float32(beta))
    return out, activation == "linear"


_FUSED = {"linear": LINEAR, "leaky": LEAKY, "relu": RELU}


def shortcut_sum(x: np.ndarray, adds: list[np.ndarray]) -> np.ndarray:
    """x (N, ...) plus each of `adds` (N, ...), per sample on the flat buffers: add k
    contributes to the first min(len) values only (AH's several-`from` [shortcut])."""
    n = x.shape[0]
    out = np.array(x, dtype=np.float32, order="C")
    flat = out.reshape(n, -1)
    for a in adds:
        af = np.asarray(a, dtype=np.float32).reshape(n, -1)
        m = min(flat.shape[1], af.shape[1])
        flat[:, :m] += af[:, :m]
    return out


@pjit_dual
def _scale_planes(src, factors, out):
    # out[i, :] = src[i, :] * factors[i] over planes i (each image's channels)
    planes, P = src.shape
    for i in prange(planes):
        v = factors[i]
        for j in range(np.uint64(P)):
            out[i, j] = src[i, j] * v
    return out


def scale_planes(src: np.ndarray, factors: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out (N, C, H, W) = src (N, C, H, W) times factors (N, C, 1, 1), channel by channel
    (NumPy's broadcast multiply gives the same bits but walks the planes row by row:
    1.6-1.8x slower on efficientnet_b0's maps, one thread)."""
    check_f32("src", src, 4)
    check_f32("factors", factors, 4)
    N, C, H, W = src.shape
    if factors.shape != (N, C, 1, 1) or out.shape != src.shape:
        raise ValueError(f"factors {factors.shape} and out {out.shape} do not fit src "
                         f"{src.shape}")
    _scale_planes(src.reshape(N * C, H * W), factors.reshape(N * C), out.reshape(N * C, H * W))
    return out


@pjit
def _shortcut_mix_backward(g, dadd, alpha, beta):
    # g (N, C, H, W): in place, alpha where the forward mixed, 1 elsewhere (the cells that
    # passed through); dadd (N, Ca, Ha, Wa) zeros on entry: beta * g at the cells the
    # forward read. The pairs are _shortcut_mix's; each dadd cell is read at most once.
    n, c, h, w = g.shape
    ca, ha, wa = dadd.shape[1], dadd.shape[2], dadd.shape[3]
    stride = max(1, wa // w)
    sample = max(1, w // wa)
    minc, minh, minw = min(c, ca), min(h, ha), min(w, wa)
    for bk in prange(n * minc):
        b, k = bk // minc, bk % minc
        for j in range(minh):
            for i in range(minw):
                d = g[b, k, j * sample, i * sample]
                dadd[b, k, j * stride, i * stride] = beta * d
                g[b, k, j * sample, i * sample] = alpha * d


def shortcut_mix_backward(g: np.ndarray, add_shape: tuple[int, ...], alpha: float = 1.0,
                          beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """g (N, C, H, W) = dLoss/d(shortcut_mix output) -> (dx (N, C, H, W), dadd (N,
    *add_shape)). The exact transpose of `shortcut_mix`: the cells outside the overlap
    passed through unscaled, so their gradient is g, not alpha*g (P's CPU backward scales
    every cell by alpha; the two agree whenever alpha = 1 or the shapes match)."""
    check_f32("g", g, 4)
    n = g.shape[0]
    if tuple(add_shape[-3:]) == g.shape[1:]:
        # same shapes: alpha*g and beta*g, g itself (both of them) when they are 1; the
        # caller's Network.add_grad copies whatever two gradients share
        a, b = np.float32(alpha), np.float32(beta)
        return (g if a == 1 else a * g), (g if b == 1 else b * g)
    dx = g.copy()
    dadd = np.zeros((n, *add_shape[-3:]), np.float32)
    _shortcut_mix_backward(dx, dadd, np.float32(alpha), np.float32(beta))
    return dx, dadd


def shortcut_sum_backward(g: np.ndarray, add_shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """g (N, ...) = dLoss/d(shortcut_sum output) -> the gradient of each add (N, *shape):
    g's first min(len) values per sample, zeros beyond (the previous layer's gradient is g
    itself)."""
    n = g.shape[0]
    gf = np.asarray(g, np.float32).reshape(n, -1)
    out = []
    for shape in add_shapes:
        da = np.zeros((n, *shape[-3:]), np.float32)
        flat = da.reshape(n, -1)
        m = min(flat.shape[1], gf.shape[1])
        flat[:, :m] = gf[:, :m]
        out.append(da)
    return out


# --- AH's weighted [shortcut] (src/blas.c: shortcut_multilayer_cpu) ----------------------
EPS_FUSION = np.float32(1e-4)        # the `eps` of shortcut_multilayer_cpu's normaliser


def normalize_fusion(w: np.ndarray, kind: str) -> np.ndarray:
    """w (n+1, k) raw fusion weights (k = 1 per_feature, C per_channel) -> the weights
    shortcut_multilayer_cpu multiplies by, normalised over the n+1 inputs (axis 0), in
    float32 as Darknet: relu: max(w, 0) / (1e-4 + Σ max(w, 0)); softmax: exp(w - max) /
    (1e-4 + Σ exp(w - max)); none: w itself."""
    w = np.asarray(w, np.float32)
    if kind == "relu":
        r = np.maximum(w, np.float32(0))
    elif kind == "softmax":
        r = np.exp(w - w.max(axis=0, keepdims=True))
    else:
        return w.copy()
    return (r / (EPS_FUSION + r.sum(axis=0, keepdims=True, dtype=np.float32))).astype(
        np.float32)


def normalize_fusion_backward(w: np.ndarray, wn: np.ndarray, dwn: np.ndarray,
                              kind: str) -> np.ndarray:
    """The gradient at the raw weights w (n+1, k) from the one at the normalised wn =
    normalize_fusion(w, kind): the exact derivative, including the 1e-4 in the sum and
    (softmax) the subtracted max, which the 1e-4 makes count. (Darknet's CPU backward
    adds the gradient at wn to w unchanged: README, "Deliberate differences".)"""
    w, wn, dwn = (np.asarray(a, np.float64) for a in (w, wn, dwn))
    if kind == "none":
        return dwn.astype(np.float32)
    dot = (dwn * wn).sum(axis=0, keepdims=True)          # Σ_i dwn_i wn_i per column
    if kind == "relu":
        r = np.maximum(w, 0)
        s = EPS_FUSION + r.sum(axis=0, keepdims=True)
        return ((w > 0) / s * (dwn - dot)).astype(np.float32)
    # softmax: wn_i = e_i / S, e = exp(w - m), S = eps + Σ e; d/dw_j with m fixed is
    # wn_j (dwn_j - dot); m = max(w) (the first one, as `max_val < w` keeps it) adds
    # dL/dm = -eps/S * dot to that entry
    e = np.exp(w - w.max(axis=0, keepdims=True))
    s = EPS_FUSION + e.sum(axis=0, keepdims=True)
    g = wn * (dwn - dot)
    first = w.argmax(axis=0)
    cols = np.arange(w.shape[1])
    g[first, cols] += (-float(EPS_FUSION) / s * dot)[0]
    return g.astype(np.float32)


def _per_flat(wn_k: np.ndarray, c: int, hw: int, m: int) -> np.ndarray:
    # one input's weights (k,) -> one per flat C,H,W index, its first m
    return np.repeat(np.broadcast_to(wn_k, (c,)), hw)[:m]


def shortcut_weighted(x: np.ndarray, adds: list[np.ndarray], wn: np.ndarray) -> np.ndarray:
    """x (N, C, H, W), adds [(N, ...)], wn (n+1, k) normalised weights (k = 1 or C) ->
    (N, C, H, W): wn[0]*x + Σ wn[j+1]*adds[j] over each add's first min(len) values of the
    flat per-sample buffer, per channel of the output (shortcut_multilayer_cpu)."""
    n, c, h, w = x.shape
    hw = h * w
    wn = np.asarray(wn, np.float32)
    out = x * np.broadcast_to(wn[0], (c,))[None, :, None, None]
    flat = out.reshape(n, -1)
    for j, a in enumerate(adds):
        af = a.reshape(n, -1)
        m = min(flat.shape[1], af.shape[1])
        flat[:, :m] += af[:, :m] * _per_flat(wn[j + 1], c, hw, m)
    return out


def shortcut_weighted_backward(g: np.ndarray, x: np.ndarray, adds: list[np.ndarray],
                               wn: np.ndarray) -> tuple[np.ndarray, list[np.ndarray],
                                                        np.ndarray]:
    """g (N, C, H, W) = dLoss/d(shortcut_weighted output) -> (dx (N, C, H, W), [dadd
    (N, ...)], dwn (n+1, k)): the transpose of `shortcut_weighted` and the gradient at
    its normalised weights (per_feature: summed over the channels)."""
    n, c, h, w = g.shape
    hw = h * w
    wn = np.asarray(wn, np.float32)
    k = wn.shape[1]
    dx = g * np.broadcast_to(wn[0], (c,))[None, :, None, None]
    dwn = np.zeros((wn.shape[0], c), np.float64)
    dwn[0] = np.einsum("bchw,bchw->c", g, x, dtype=np.float64)
    gf = g.reshape(n, -1)
    dadds = []
    for j, a in enumerate(adds):
        af = a.reshape(n, -1)
        m = min(gf.shape[1], af.shape[1])
        da = np.zeros(a.shape, np.float32)
        da.reshape(n, -1)[:, :m] = gf[:, :m] * _per_flat(wn[j + 1], c, hw, m)
        dadds.append(da)
        prod = np.zeros(c * hw, np.float64)
        prod[:m] = np.einsum("bi,bi->i", gf[:, :m], af[:, :m], dtype=np.float64)
        dwn[j + 1] = prod.reshape(c, hw).sum(axis=1)
    if k == 1:
        dwn = dwn.sum(axis=1, keepdims=True)
    return dx, dadds, dwn.astype(np.float32)
