"""Residual sums: P's [shortcut] (alpha/beta, channel overlap, integer-factor spatial
mixing) and AH's flat sum over several `from` layers, with their backward passes."""
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
