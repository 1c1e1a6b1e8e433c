"""Slow, obvious NumPy references (float64) for the conv family's kernels: activations and
their gradients, convolution, deconvolution, dense, batch normalisation (and backwards).

Written from Darknet's code read as a description (src/convolutional_layer.c,
src/deconvolutional_layer.c, src/connected_layer.c, src/batchnorm_layer.c,
src/activations.c), not from the kernels.
"""
from __future__ import annotations

import numpy as np

# --- activations (src/activations.c: activate, gradient) ---------------------------------


def activate(x: np.ndarray, name: str) -> np.ndarray:
    """f(x) in float64 for every activation name; (N, C, ...) for normalize_channels*."""
    x = np.asarray(x, np.float64)
    pos = x > 0
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "linear":
            return x.copy()
        if name == "logistic":
            return 1 / (1 + np.exp(-x))
        if name == "loggy":
            return 2 / (1 + np.exp(-x)) - 1
        if name == "relu":
            return np.where(pos, x, 0.0)
        if name == "relu6":
            return np.clip(x, 0, 6)
        if name in ("leaky", "revleaky"):
            return np.where(pos, x, 0.1 * x)
        if name == "relie":
            return np.where(pos, x, 0.01 * x)
        if name == "ramp":
            return np.where(pos, x, 0.0) + 0.1 * x
        if name == "elu":
            return np.where(x >= 0, x, np.expm1(np.minimum(x, 0)))
        if name == "selu":
            return np.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * np.expm1(np.minimum(x, 0)))
        if name == "tanh":
            return np.tanh(x)
        if name == "plse":
            return np.where(x < -4, 0.01 * (x + 4), np.where(x > 4, 0.01 * (x - 4) + 1,
                                                            0.125 * x + 0.5))
        if name == "hardtan":
            return np.clip(x, -1, 1)
        if name == "lhtan":
            return np.where(x < 0, 0.001 * x, np.where(x > 1, 0.001 * (x - 1) + 1, x))
        if name == "stair":
            n = np.floor(x)
            return np.where(n % 2 == 0, np.floor(x / 2), (x - n) + np.floor(x / 2))
        if name == "gelu":
            return 0.5 * x * (1 + np.tanh(0.797885 * x + 0.035677 * x ** 3))
        if name == "swish":
            return x / (1 + np.exp(-x))
        if name == "mish":
            sp = np.where(x > 20, x, np.where(x < -20, np.exp(x), np.log1p(np.exp(x))))
            return x * np.tanh(sp)
        if name == "hard_mish":
            return np.where(x > 0, x, np.where(x > -2, x * x / 2 + x, 0.0))
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[0], *x.shape[2:]):       # one pixel: all channels
        sl = (idx[0], slice(None), *idx[1:])
        v = x[sl]
        if name == "normalize_channels":
            out[sl] = np.where(v > 0, v, 0) / (1e-4 + v[v > 0].sum())
        elif name == "normalize_channels_softmax":
            out[sl] = np.exp(v) / (1e-4 + np.exp(v).sum())
        elif name == "normalize_channels_softmax_maxval":
            e = np.exp(v - v.max())
            out[sl] = e / (1e-4 + e.sum())
        else:
            raise ValueError(name)
    return out


def gradient(y: np.ndarray, x: np.ndarray, name: str, dy: np.ndarray) -> np.ndarray:
    """dy times the derivative as Darknet evaluates it (on y; on x for the AH ones)."""
    y, x, dy = (np.asarray(a, np.float64) for a in (y, x, dy))
    table = {
        "linear": lambda: np.ones_like(y),
        "logistic": lambda: y * (1 - y),
        "loggy": lambda: 2 * (1 - (y + 1) / 2) * ((y + 1) / 2),
        "relu": lambda: (y > 0) * 1.0,
        "relu6": lambda: ((y > 0) & (y < 6)) * 1.0,
        "leaky": lambda: np.where(y > 0, 1, 0.1),
        "revleaky": lambda: np.where(y > 0, 1, 0.1),
        "relie": lambda: np.where(y > 0, 1, 0.01),
        "ramp": lambda: (y > 0) + 0.1,
        "elu": lambda: np.where(y >= 0, 1, y + 1),
        "selu": lambda: np.where(y >= 0, 1.0507, y + 1.0507 * 1.6732),
        "tanh": lambda: 1 - y * y,
        "plse": lambda: np.where((y < 0) | (y > 1), 0.01, 0.125),
        "hardtan": lambda: ((y > -1) & (y < 1)) * 1.0,
        "lhtan": lambda: np.where((y > 0) & (y < 1), 1, 0.001),
        "stair": lambda: np.where(np.floor(y) == y, 0.0, 1.0),
        "swish": lambda: y + (1 / (1 + np.exp(-x))) * (1 - y),
        "hard_mish": lambda: np.where(x > 0, 1, np.where(x > -2, x + 1, 0.0)),
    }
    if name in table:
        return dy * table[name]()
    if name == "mish":
        sp = np.where(x > 20, x, np.where(x < -20, np.exp(x), np.log1p(np.exp(x))))
        t = np.tanh(sp)
        return dy * (t + x * (1 - t * t) * (1 - np.exp(-sp)))
    if name == "gelu":           # the analytic derivative of `activate`, at x
        u = 0.797885 * x + 0.035677 * x ** 3
        t = np.tanh(u)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (0.797885 + 3 * 0.035677 * x * x))
    # normalize_channels*: AH's per-pixel rule, g = sum_k y_k dy_k, dy_k *= g
    g = (y * dy).sum(axis=1, keepdims=True)
    if name == "normalize_channels":
        return np.where(y > 0, dy * g, dy)
    return dy * g


# --- convolution family (src/convolutional_layer.c, src/deconvolutional_layer.c) ----------


def conv2d(x, w, sy=1, sx=1, pad=0, d=1, groups=1):
    """x (N, C, H, W), w (n, C/g, k, k) -> (N, n, oh, ow) float64, `pad` applied per side:
    out[b,f,oy,ox] = sum_{ci,ky,kx} w[f,ci,ky,kx] x[b, g*C/g+ci, oy*sy-pad+ky*d, ox*sx-pad+kx*d]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    n, cg, k, _ = w.shape
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    xp[:, :, pad:pad + H, pad:pad + W] = x
    oh = (H + 2 * pad - d * (k - 1) - 1) // sy + 1
    ow = (W + 2 * pad - d * (k - 1) - 1) // sx + 1
    out = np.zeros((N, n, oh, ow))
    for f in range(n):
        g = f // (n // groups)
        for ci in range(cg):
            for ky in range(k):
                for kx in range(k):
                    y0, x0 = ky * d, kx * d
                    win = xp[:, g * cg + ci, y0:y0 + sy * (oh - 1) + 1:sy,
                             x0:x0 + sx * (ow - 1) + 1:sx]
                    out[:, f] += w[f, ci, ky, kx] * win
    return out


def deconv2d(x, w, s=1, pad=0):
    """x (N, C, h, w), w (C, n, k, k) -> (N, n, (h-1)s+k-2pad, (w-1)s+k-2pad) float64:
    every input pixel scatters w[c, :, :, :] * x onto a k x k patch at (y*s, x*s), then
    `pad` rows and columns are cut from each side."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, h, wd = x.shape
    _, n, k, _ = w.shape
    full = np.zeros((N, n, (h - 1) * s + k, (wd - 1) * s + k))
    for b in range(N):
        for c in range(C):
            for y in range(h):
                for xx in range(wd):
                    full[b, :, y * s:y * s + k, xx * s:xx * s + k] += x[b, c, y, xx] * w[c]
    oh, ow = full.shape[2] - 2 * pad, full.shape[3] - 2 * pad
    return full[:, :, pad:pad + oh, pad:pad + ow]


def dense(x, w):
    """x (N, ...) flattened in C,H,W order, w (n, inputs) -> (N, n) float64."""
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    out = np.zeros((x.shape[0], w.shape[0]))
    for b in range(x.shape[0]):
        for o in range(w.shape[0]):
            out[b, o] = np.dot(w[o].astype(np.float64), x[b])
    return out


def batchnorm(x, scales, mean, variance, biases=None, dialect="pjreddie"):
    """Inference BN per channel (axis 1), float64 (the lineage's epsilon: README,
    "Deliberate differences from Darknet")."""
    x = np.asarray(x, np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    v = np.asarray(variance, np.float64)
    den = np.sqrt(v) + 1e-6 if dialect == "pjreddie" else np.sqrt(v + 1e-5)
    b = np.zeros_like(den) if biases is None else np.asarray(biases, np.float64)
    return ((x - np.reshape(mean, shape)) / den.reshape(shape) * np.reshape(scales, shape)
            + b.reshape(shape))


def conv2d_backward(x, w, dy, sy=1, sx=1, pad=0, d=1, groups=1):
    """Gradients of `conv2d(x, w, ...)` for dy = dLoss/d(out): (dw, dx) float64, by the
    same window loops as conv2d, transposed: dw[f,ci,ky,kx] = sum dy[:, f] * window,
    dx[window] += w[f,ci,ky,kx] * dy[:, f] (padding cut off at the end)."""
    x, w, dy = (np.asarray(a, np.float64) for a in (x, w, dy))
    N, C, H, W = x.shape
    n, cg, k, _ = w.shape
    _, _, oh, ow = dy.shape
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    xp[:, :, pad:pad + H, pad:pad + W] = x
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for f in range(n):
        g = f // (n // groups)
        for ci in range(cg):
            for ky in range(k):
                for kx in range(k):
                    y0, x0 = ky * d, kx * d
                    win = (slice(None), g * cg + ci, slice(y0, y0 + sy * (oh - 1) + 1, sy),
                           slice(x0, x0 + sx * (ow - 1) + 1, sx))
                    dw[f, ci, ky, kx] = np.sum(dy[:, f] * xp[win])
                    dxp[win] += w[f, ci, ky, kx] * dy[:, f]
    return dw, dxp[:, :, pad:pad + H, pad:pad + W]


def deconv2d_backward(x, w, dy, s=1, pad=0):
    """Gradients of `deconv2d(x, w, s, pad)`: (dw, dx) float64. Every input pixel's k x k
    patch of the (uncut) output gives dx[b,c,y,x] = sum w[c] * dy_patch and
    dw[c] += x[b,c,y,x] * dy_patch."""
    x, w, dy = (np.asarray(a, np.float64) for a in (x, w, dy))
    N, _, h, wd = x.shape
    _, n, k, _ = w.shape
    full = np.zeros((N, n, (h - 1) * s + k, (wd - 1) * s + k))
    full[:, :, pad:pad + dy.shape[2], pad:pad + dy.shape[3]] = dy
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for b in range(N):
        for y in range(h):
            for xx in range(wd):
                patch = full[b, :, y * s:y * s + k, xx * s:xx * s + k]     # (n, k, k)
                dx[b, :, y, xx] = np.tensordot(w, patch, axes=3)
                dw += x[b, :, y, xx, None, None, None] * patch[None]
    return dw, dx


def dense_backward(x, w, dy):
    """Gradients of `dense(x, w)` for dy (N, n): (dw (n, inputs), dx (N, inputs))."""
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    dy = np.asarray(dy, np.float64).reshape(x.shape[0], -1)
    return dy.T @ x, dy @ np.asarray(w, np.float64)


def batchnorm_train(x, scales, biases=None, dialect="pjreddie"):
    """Training BN per channel (axis 1) with the batch mean and the unbiased batch
    variance over every other axis (src/batchnorm_layer.c: forward_batchnorm_layer):
    (y, xhat, mean, var) float64."""
    x = np.asarray(x, np.float64)
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes)
    var = x.var(axis=axes, ddof=1)
    den = np.sqrt(var) + 1e-6 if dialect == "pjreddie" else np.sqrt(var + 1e-5)
    xhat = (x - mean.reshape(shape)) / den.reshape(shape)
    b = np.zeros_like(mean) if biases is None else np.asarray(biases, np.float64)
    y = xhat * np.reshape(scales, shape) + b.reshape(shape)
    return y, xhat, mean, var


def batchnorm_backward_darknet(x, dy, scales, dialect="pjreddie"):
    """Darknet P's backward_batchnorm_layer, transcribed step by step in float64 with
    the true-gradient sign (src/batchnorm_layer.c: backward_batchnorm_layer), on the
    forward of `batchnorm_train`: (dx, dscales, dbiases). Both dialects take
    sqrt(var + 1e-5) here (kernels/bn_train)."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    _, xhat, mean, var = batchnorm_train(x, scales, None, dialect)
    m = x.size // x.shape[1]
    dbiases = dy.sum(axis=axes)                               # backward_bias
    dscales = (dy * xhat).sum(axis=axes)                      # backward_scale_cpu
    delta = dy * np.reshape(scales, shape)                    # scale_bias
    mean_delta = delta.sum(axis=axes) * (-1 / np.sqrt(var + 1e-5))
    xc = x - mean.reshape(shape)
    var_delta = (delta * xc).sum(axis=axes) * -0.5 * (var + 1e-5) ** -1.5
    dx = (delta / np.sqrt(var + 1e-5).reshape(shape) + var_delta.reshape(shape) * 2 * xc / m
          + mean_delta.reshape(shape) / m)                    # normalize_delta_cpu
    return dx, dscales, dbiases
