"""Batch normalisation in training (Darknet's src/batchnorm_layer.c: forward_batchnorm_layer,
backward_batchnorm_layer) and per-channel bias gradients.

Arrays are (N, C, P) views: per channel c the statistics run over the N*P values of the
mini-batch (P = H*W; 1 for [connected]). Public API:

    forward(x, scales, biases, rolling_mean, rolling_variance, dialect, xhat)
        x = scales * xhat + biases in place, xhat = (x - mean) / D(var) with the batch
        mean and the UNBIASED batch variance; rolling stats <- 0.99 rolling + 0.01 batch
        stat (both dialects; see MOMENTUM); returns (mean, var) float32 (C,)
    backward(dy, xhat, scales, var, dialect, gscales, gbiases, exact=False)
        gscales += sum dy*xhat, gbiases += sum dy; dy <- dLoss/d(x) in place
    bias_grad(dy, gbiases)            gbiases += sum of dy over (N, P)

Darknet's backward (P `backward_batchnorm_layer`, every lineage's CPU code) is not the
derivative of its forward: the variance's chain term divides by N where the forward's
variance divides by N - 1, and P's backward uses sqrt(var + 1e-5) where its forward
divides by sqrt(var) + 1e-6. Reference cases train_small and train_resid pin both (the
N - 1 form is ~0.5 % off at N = 144). darkcfg follows that rule; for 'alexeyab' the
backward uses sqrt(var + 1e-5) throughout, the denominator of its own forward (AH's CPU
normalize_delta_cpu divides the delta by sqrt(var) + 1e-5, an inconsistency: README,
"Deliberate differences from Darknet"). `exact=True`
gives the true derivative of the forward instead, for finite-difference checks.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .activations import LEAKY, LINEAR, LOGISTIC, RELU, _f, _g
from .bn import bn_denominator
from .config import check_f32, jit, pjit, pjit_sums

# rolling = 0.99 rolling + 0.01 batch stat in both dialects: pjreddie's forward_batchnorm_layer
# and AlexeyAB's GPU path use .99 (AH's CPU path uses .9; the networks were trained on GPUs)
MOMENTUM = 0.99
EPS = np.float32(1e-5)           # Darknet's .00001f in the backward


# Sums of float32 rows in float64, inlined into kernels compiled with config.pjit_sums
# (reassociation allowed, so they run in SIMD lanes).
@jit(inline="always")
def _sum(row):
    a = 0.0
    for p in range(row.size):
        a += row[p]
    return a


@jit(inline="always")
def _sum_sq_dev(row, m):
    # sum of float64(row - m)^2, the difference taken in float32 as Darknet does
    a = 0.0
    for p in range(row.size):
        t = np.float64(row[p] - m)
        a += t * t
    return a


@jit(inline="always")
def _sum_prod(d, h):
    # (sum d, sum d*h) in float64
    a = 0.0
    q = 0.0
    for p in range(d.size):
        a += d[p]
        q += np.float64(d[p]) * h[p]
    return a, q


@pjit_sums
def _stats(x, mean, var):
    # x (N, C, P) float32; mean, var (C,) float32 out: batch mean and unbiased variance,
    # summed in float64 and rounded once (Darknet rounds each partial sum to float).
    N, C, P = x.shape
    for c in prange(C):
        s = 0.0
        for b in range(N):
            s += _sum(x[b, c])
        m = np.float32(s / (N * P))
        q = 0.0
        for b in range(N):
            q += _sum_sq_dev(x[b, c], m)
        mean[c] = m
        var[c] = np.float32(q / (N * P - 1))


@pjit
def _normalize(x, mean, inv, scales, biases, xhat, code):
    # x (N, C, P) float32 in place; xhat (N, C, P) out; inv (C,) float64 (1/D). Darknet's
    # rounding: xhat = float((x - mean) / D), x = xhat * scale + bias in float; then the
    # activation `code` (LEAKY, RELU, LOGISTIC; anything else: none) in the same pass.
    N, C, P = x.shape
    for t in prange(N * C):
        b = t // C
        c = t - b * C
        m, r, s, o = mean[c], inv[c], scales[c], biases[c]
        row = x[b, c]
        hrow = xhat[b, c]
        for p in range(P):
            v = np.float32(np.float64(row[p] - m) * r)
            hrow[p] = v
            row[p] = v * s + o
        if code == LEAKY:
            for p in range(P):
                row[p] = _f(np.float64(row[p]), LEAKY)
        elif code == RELU:
            for p in range(P):
                row[p] = _f(np.float64(row[p]), RELU)
        elif code == LOGISTIC:
            for p in range(P):
                row[p] = _f(np.float64(row[p]), LOGISTIC)


@pjit_sums
def _channel_moments(x, sums):
    # x (N, C, P) float32 -> sums (C, 2) float64: sum x, sum x^2
    N, C = x.shape[0], x.shape[1]
    for c in prange(C):
        a = 0.0
        q = 0.0
        for b in range(N):
            u, v = _sum_prod(x[b, c], x[b, c])
            a += u
            q += v
        sums[c, 0] = a
        sums[c, 1] = q


@pjit_sums
def _sums(dy, xhat, s1, s2):
    # dy, xhat (N, C, P) float32; s1, s2 (C,) float64 out: sum dy, sum dy * xhat
    N, C = dy.shape[0], dy.shape[1]
    for c in prange(C):
        a = 0.0
        q = 0.0
        for b in range(N):
            u, v = _sum_prod(dy[b, c], xhat[b, c])
            a += u
            q += v
        s1[c] = a
        s2[c] = q


@pjit
def _affine(dy, xhat, a, k, m):
    # dy (N, C, P) float32 in place: dy = a[c] * dy + k[c] * xhat + m[c] (float64 math)
    N, C, P = dy.shape
    for t in prange(N * C):
        b = t // C
        c = t - b * C
        ac, kc, mc = a[c], k[c], m[c]
        d = dy[b, c]
        h = xhat[b, c]
        for p in range(P):
            d[p] = np.float32(ac * d[p] + kc * h[p] + mc)


@pjit_sums
def _grad_sums(dy, y, xhat, code, dz, s1, s2, with_xhat):
    # dz = float(dy * f'(y)) for a classic activation `code` (Darknet's derivative from
    # the output: LEAKY, RELU, LOGISTIC, LINEAR), with the channel sums s1 = sum dz and,
    # when with_xhat, s2 = sum dz * xhat (float64): kernels.activations.gradient, the
    # copy before it and the sums of `backward` in one pass. All (N, C, P) float32.
    N, C = dy.shape[0], dy.shape[1]
    for c in prange(C):
        a = 0.0
        q = 0.0
        for b in range(N):
            d, yy, z = dy[b, c], y[b, c], dz[b, c]
            P = d.size
            # leaky and relu in float32 as Darknet (delta *= a float gradient of 1, .1f
            # or 0), branch-free so that the loops run in SIMD lanes
            if code == LEAKY:
                for p in range(P):
                    z[p] = d[p] * (np.float32(1.0) if yy[p] > 0 else np.float32(0.1))
            elif code == RELU:
                for p in range(P):
                    z[p] = d[p] if yy[p] > 0 else np.float32(0.0)
            elif code == LOGISTIC:
                for p in range(P):
                    z[p] = np.float32(np.float64(d[p])
                                      * _g(np.float64(yy[p]), 0.0, LOGISTIC))
            else:
                for p in range(P):
                    z[p] = d[p]
            if with_xhat:
                u, v = _sum_prod(z, xhat[b, c])
                q += v
            else:
                u = _sum(z)
            a += u
        s1[c] = a
        s2[c] = q


@pjit_sums
def _channel_sum(dy, s1):
    # dy (N, C, P) float32; s1 (C,) float64 out
    N, C = dy.shape[0], dy.shape[1]
    for c in prange(C):
        a = 0.0
        for b in range(N):
            a += _sum(dy[b, c])
        s1[c] = a


def _channels(name: str, a: np.ndarray, c: int | None = None) -> np.ndarray:
    # (N, C, H, W) or (N, C) -> (N, C, H*W) view
    check_f32(name, a)
    if a.ndim < 2 or (c is not None and a.shape[1] != c):
        raise ValueError(f"{name} must be (N, {c if c is not None else 'C'}, ...); "
                         f"received shape {a.shape}")
    return a.reshape(a.shape[0], a.shape[1], -1)


def _param(name: str, a: np.ndarray | None, c: int) -> np.ndarray:
    if a is None:
        return np.zeros(c, np.float32)
    check_f32(name, a)
    if a.size != c:
        raise ValueError(f"{name} must have {c} values; received {a.size}")
    return a.reshape(-1)


def values_per_channel(x: np.ndarray) -> int:
    """N * H * W: how many values each channel's batch statistics run over."""
    return x.shape[0] * (x.size // (x.shape[0] * x.shape[1]))


# Activations whose training forward and gradient this module fuses with BN (the
# classic ones, differentiated from their output y)
FUSED = {"leaky": LEAKY, "relu": RELU, "logistic": LOGISTIC, "linear": LINEAR}


def forward(x: np.ndarray, scales: np.ndarray, biases: np.ndarray | None,
            rolling_mean: np.ndarray, rolling_variance: np.ndarray, dialect: str,
            xhat: np.ndarray, sums: np.ndarray | None = None, activation: str = "linear"
            ) -> tuple[np.ndarray, np.ndarray]:
    """Training BN on x (N, C, ...) in place; xhat (same shape) receives the normalised
    values; rolling_mean / rolling_variance (C,) are updated in place. biases None means
    zeros. Returns the batch (mean, var), float32 (C,); var is unbiased (divisor N*P - 1),
    so N*P must be at least 2.

    `sums` (C, 2) float64, the channel sums of x and x^2 when the caller has them (the
    conv kernel adds them up while its output tiles are in cache), saves the two passes
    of the statistics: var = (sum x^2 - 2 m sum x + count m^2) / (count - 1) with m the
    float mean, Darknet's sum of (x - m)^2 without rounding each difference to float.
    `activation` in FUSED is applied in the normalising pass (x then holds the output)."""
    c = scales.size
    x3 = _channels("x", x, c)
    h3 = _channels("xhat", xhat, c)
    if h3.shape != x3.shape:
        raise ValueError(f"xhat must have the shape of x {x.shape}; received {xhat.shape}")
    count = values_per_channel(x)
    if count < 2:
        raise ValueError("batch normalisation in training needs at least 2 values per "
                         f"channel (N*H*W); received x of shape {x.shape}")
    rm, rv = _param("rolling_mean", rolling_mean, c), _param("rolling_variance",
                                                             rolling_variance, c)
    if sums is None:
        mean, var = np.empty(c, np.float32), np.empty(c, np.float32)
        _stats(x3, mean, var)
    else:
        mean = (sums[:, 0] / count).astype(np.float32)
        m = mean.astype(np.float64)
        q = sums[:, 1] - 2.0 * m * sums[:, 0] + count * m * m
        var = (np.maximum(q, 0.0) / (count - 1)).astype(np.float32)
    # Darknet: scal(.99) then axpy(.01), each rounded to float
    for roll, stat in ((rm, mean), (rv, var)):
        roll *= np.float32(MOMENTUM)
        roll += np.float32(1 - MOMENTUM) * stat
    _normalize(x3, mean, 1.0 / bn_denominator(var, dialect), _param("scales", scales, c),
               _param("biases", biases, c), h3, FUSED.get(activation, LINEAR))
    return mean, var


def moments(x: np.ndarray) -> np.ndarray:
    """(C, 2) float64 channel sums of x and x^2 over (N, ...), for `forward`'s sums."""
    x3 = _channels("x", x)
    sums = np.empty((x3.shape[1], 2))
    _channel_moments(x3, sums)
    return sums


def backward_coefficients(scales: np.ndarray, var: np.ndarray, s1: np.ndarray,
                          s2: np.ndarray, count: int, dialect: str, exact: bool = False
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel (a, k, m), float64, with dLoss/dx = a*dy + k*xhat + m, given
    s1 = sum dy, s2 = sum dy*xhat over the `count` values of the channel.

    With D the forward's denominator (x - mean = xhat * D) and g = scales, Darknet's rule:
        delta   = g * dy
        dmean   = -sum(delta) / E,  dvar = sum(delta * (x - mean)) * -0.5 (var+eps)^-1.5
        dx      = delta / E + dvar * 2 (x - mean) / count + dmean / count
    with E = sqrt(var + 1e-5). exact=True: E = D, the variance term through D's own
    derivative and divided by count - 1 (the unbiased variance the forward used)."""
    g = scales.astype(np.float64)
    v = var.astype(np.float64)
    d = bn_denominator(var, dialect)
    if exact:
        # d/dv of D: P sqrt(v) + 1e-6 -> 1/(2 sqrt(v)); A sqrt(v + eps) -> 1/(2 D)
        dd = 0.5 / (np.sqrt(v) if dialect == "pjreddie" else d)
        return g / d, -2.0 * g * s2 * dd / (count - 1), -g * s1 / (d * count)
    e = np.sqrt((var + EPS).astype(np.float64))
    dvar = g * d * s2 * -0.5 * e ** -3.0
    return g / e, dvar * 2.0 * d / count, -g * s1 / (e * count)


def backward(dy: np.ndarray, xhat: np.ndarray, scales: np.ndarray, var: np.ndarray,
             dialect: str, gscales: np.ndarray, gbiases: np.ndarray | None,
             exact: bool = False, y: np.ndarray | None = None, activation: str = "linear",
             out: np.ndarray | None = None) -> np.ndarray:
    """dy (N, C, ...) = dLoss/d(BN output), replaced in place by dLoss/d(BN input); xhat
    and var from `forward`. Accumulates gscales += sum dy*xhat and gbiases += sum dy
    (None: no biases). Returns dy.

    With `out` (a buffer like dy) and y, the activation's output: dy is left intact and
    dLoss/d(BN input) is written to `out`, going first through `activation` (in FUSED),
    its gradient taken in the same pass as the sums."""
    c = scales.size
    d3 = _channels("dy", dy, c)
    h3 = _channels("xhat", xhat, c)
    if h3.shape != d3.shape:
        raise ValueError(f"xhat must have the shape of dy {dy.shape}; received {xhat.shape}")
    s1, s2 = np.empty(c), np.empty(c)
    if out is None:
        _sums(d3, h3, s1, s2)
        target = dy
    else:
        o3, y3 = _channels("out", out, c), _channels("y", y, c)
        _grad_sums(d3, y3, h3, FUSED[activation], o3, s1, s2, True)
        target, d3 = out, o3
    gscales += s2.astype(np.float32)
    if gbiases is not None:
        gbiases += s1.astype(np.float32)
    a, k, m = backward_coefficients(_param("scales", scales, c), var, s1, s2,
                                    values_per_channel(dy), dialect, exact)
    _affine(d3, h3, a, k, m)
    return target


def bias_grad(dy: np.ndarray, gbiases: np.ndarray, y: np.ndarray | None = None,
              activation: str = "linear", out: np.ndarray | None = None) -> np.ndarray:
    """gbiases (C,) += sum of dy (N, C, ...) over everything but the channel axis; returns
    dy. With `out` and y: out = dy through `activation`'s gradient (FUSED) first, summed
    in the same pass; returns out."""
    c = gbiases.size
    s1 = np.empty(c)
    if out is None:
        _channel_sum(_channels("dy", dy, c), s1)
        gbiases += s1.astype(np.float32)
        return dy
    d3 = _channels("dy", dy, c)
    _grad_sums(d3, _channels("y", y, c), d3, FUSED[activation], _channels("out", out, c),
               s1, np.empty(c), False)
    gbiases += s1.astype(np.float32)
    return out
