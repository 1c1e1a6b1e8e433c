"""Small per-layer kernels: nearest upsample and sum-pool downsample, LRN, L2 norm, crop,
each with its backward; the element-wise losses of [cost] and [logistic]."""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, pjit, pjit_dual


@pjit_dual
def _upsample(x, s, scale):
    # x (N, C, H, W) -> (N, C, H*s, W*s): each cell copied to an s x s block, times scale.
    n, c, h, w = x.shape
    out = np.empty((n, c, h * s, w * s), np.float32)
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        for j in range(h * s):
            for i in range(w * s):
                out[b, k, j, i] = scale * x[b, k, j // s, i // s]
    return out


@pjit
def _downsample_sum(x, s, scale):
    # x (N, C, H, W) -> (N, C, H/s, W/s): each s x s block summed as Darknet's negative
    # stride does it (`in[..] += scale*out[..]` visiting rows, then columns, of the block).
    n, c, h, w = x.shape
    oh, ow = h // s, w // s
    out = np.zeros((n, c, oh, ow), np.float32)
    for bk in prange(n * c):
        b, k = bk // c, bk % c
        for j in range(oh * s):
            for i in range(ow * s):
                out[b, k, j // s, i // s] += scale * x[b, k, j, i]
    return out


@pjit
def _lrn(x, size, alpha, beta, kappa):
    # x (N, C, P) -> out (N, C, P) = x * factor, factor (N, C, P) = norm^-beta with
    # Darknet's running window over channels.
    # The window starts as channels 0..size//2-1 (channel size//2 is never added: Darknet's
    # off-by-one, reference case `misc_layers`), then slides: at channel k it drops
    # k - (size-1)//2 - 1 and adds k + size//2.
    n, c, p = x.shape
    out = np.empty_like(x)
    factor = np.empty_like(x)
    half_lo, half_hi = (size - 1) // 2, size // 2
    for bq in prange(n * p):
        b, q = bq // p, bq % p
        norm = kappa
        for k in range(min(half_hi, c)):
            norm += alpha * (x[b, k, q] * x[b, k, q])
        f = np.float32(np.float64(norm) ** -np.float64(beta))
        factor[b, 0, q] = f
        out[b, 0, q] = x[b, 0, q] * f
        for k in range(1, c):
            prev = k - half_lo - 1
            nxt = k + half_hi
            if prev >= 0:
                norm += -alpha * (x[b, prev, q] * x[b, prev, q])
            if nxt < c:
                norm += alpha * (x[b, nxt, q] * x[b, nxt, q])
            f = np.float32(np.float64(norm) ** -np.float64(beta))
            factor[b, k, q] = f
            out[b, k, q] = x[b, k, q] * f
    return out, factor


@pjit
def _l2norm(x):
    # x (N, C, P) -> out (N, C, P), each pixel's channel vector divided by its L2 norm, and
    # the norms (N, P) (Darknet adds no epsilon: an all-zero pixel gives NaN, as in Darknet).
    n, c, p = x.shape
    out = np.empty_like(x)
    norms = np.empty((n, p), np.float32)
    for bq in prange(n * p):
        b, q = bq // p, bq % p
        total = np.float32(0.0)
        for k in range(c):
            total += x[b, k, q] * x[b, k, q]
        norm = np.float32(np.sqrt(total))
        norms[b, q] = norm
        for k in range(c):
            out[b, k, q] = x[b, k, q] / norm
    return out, norms


@pjit
def _l2norm_backward(dy, y, norms):
    # dy, y (N, C, P), norms (N, P) -> dx (N, C, P): the exact derivative of y = x/|x|,
    # dx = (dy - y * sum_k y_k dy_k) / |x|.
    n, c, p = dy.shape
    dx = np.empty_like(dy)
    for bq in prange(n * p):
        b, q = bq // p, bq % p
        dot = np.float32(0.0)
        for k in range(c):
            dot += y[b, k, q] * dy[b, k, q]
        for k in range(c):
            dx[b, k, q] = (dy[b, k, q] - y[b, k, q] * dot) / norms[b, q]
    return dx


def upsample(x: np.ndarray, stride: int, scale: float = 1.0) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, H*s, W*s), nearest neighbour times scale."""
    check_f32("x", x, 4)
    if stride < 1:
        raise ValueError(f"stride must be >= 1; received stride={stride}")
    return _upsample(x, stride, np.float32(scale))


def downsample_sum(x: np.ndarray, stride: int, scale: float = 1.0) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, H/s, W/s): scale * the sum of each s x s block."""
    check_f32("x", x, 4)
    h, w = x.shape[2:]
    if stride < 1 or h % stride or w % stride:
        raise ValueError(f"downsampling a {h} x {w} input needs a stride dividing both; "
                         f"received stride={stride}")
    return _downsample_sum(x, stride, np.float32(scale))


def upsample_backward(dy: np.ndarray, stride: int, scale: float = 1.0) -> np.ndarray:
    """dy (N, C, H*s, W*s) -> dx (N, C, H, W) of `upsample`: scale * the sum over each
    block, in Darknet's order (its backward is the negative-stride forward)."""
    return downsample_sum(dy, stride, scale)


def downsample_sum_backward(dy: np.ndarray, stride: int, scale: float = 1.0) -> np.ndarray:
    """dy (N, C, H/s, W/s) -> dx (N, C, H, W) of `downsample_sum`: scale * dy broadcast
    over each block."""
    return upsample(dy, stride, scale)


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, kappa: float) -> np.ndarray:
    """x (N, C, H, W) -> same shape: Darknet's local response normalisation across
    channels, x / (kappa + alpha * window sum of x^2)^beta (alpha not divided by size)."""
    return lrn_train(x, size, alpha, beta, kappa)[0]


def lrn_train(x: np.ndarray, size: int, alpha: float, beta: float,
              kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """As `lrn`, also returning the factor norm^-beta (N, C, H, W) by which x was scaled."""
    check_f32("x", x, 4)
    n, c, h, w = x.shape
    out, factor = _lrn(x.reshape(n, c, h * w), size, np.float32(alpha), np.float32(beta),
                       np.float32(kappa))
    return out.reshape(x.shape), factor.reshape(x.shape)


def lrn_backward(dy: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """dy (N, C, H, W) -> dx = dy * factor: Darknet's LRN backward, an APPROXIMATION that
    treats the norms as constants (P's own comment: "This is approximate"); the exact
    derivative has a second term, -2*alpha*beta*x_j * sum_k dy_k*out_k/norm_k over the
    windows holding channel j, small while alpha*sum(x^2) << kappa."""
    check_f32("dy", dy)
    return dy * factor


def l2norm(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) -> same shape: every pixel's channel vector scaled to unit L2 norm."""
    return l2norm_train(x)[0]


def l2norm_train(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """As `l2norm`, also returning each pixel's norm (N, H, W)."""
    check_f32("x", x, 4)
    n, c, h, w = x.shape
    out, norms = _l2norm(x.reshape(n, c, h * w))
    return out.reshape(x.shape), norms.reshape(n, h, w)


def l2norm_backward(dy: np.ndarray, y: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """dy, y (N, C, H, W) (y the forward output), norms (N, H, W) -> dx: the exact gradient
    (P's CPU backward passes dy through unchanged, ignoring the normalisation)."""
    check_f32("dy", dy, 4)
    check_f32("y", y, 4)
    n, c, h, w = dy.shape
    dx = _l2norm_backward(dy.reshape(n, c, h * w), y.reshape(n, c, h * w),
                          np.ascontiguousarray(norms, np.float32).reshape(n, h * w))
    return dx.reshape(dy.shape)


def crop(x: np.ndarray, top: int, left: int, height: int, width: int, flip: bool = False,
         scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, height, width): the window at (top, left), mirrored
    left-right when `flip`, then value*scale + shift (Darknet's [crop] uses 2, -1)."""
    check_f32("x", x, 4)
    h, w = x.shape[2:]
    if not (top >= 0 and top + height <= h and left >= 0 and left + width <= w):
        raise ValueError(f"crop {height} x {width} at ({top}, {left}) is outside the "
                         f"{h} x {w} input")
    win = x[:, :, top:top + height, left:left + width]
    if flip:
        # Darknet reads column w - left - j - 1 for output column j when flipping.
        win = x[:, :, top:top + height, w - left - width:w - left][..., ::-1]
    out = win * np.float32(scale) + np.float32(shift)
    return np.ascontiguousarray(out, dtype=np.float32)


def crop_backward(dy: np.ndarray, in_hw: tuple[int, int], top: int, left: int,
                  flip: bool = False, scale: float = 1.0) -> np.ndarray:
    """dy (N, C, height, width) -> dx (N, C, H, W) of `crop`: scale * dy back in the
    window (mirrored back when flipped), zero outside. (P's CPU [crop] has an empty
    backward; darkcfg differentiates its forward.)"""
    check_f32("dy", dy, 4)
    h, w = in_hw
    n, c, height, width = dy.shape
    if not (top >= 0 and top + height <= h and left >= 0 and left + width <= w):
        raise ValueError(f"crop {height} x {width} at ({top}, {left}) is outside the "
                         f"{h} x {w} input")
    dx = np.zeros((n, c, h, w), np.float32)
    g = dy * np.float32(scale)
    if flip:
        dx[:, :, top:top + height, w - left - width:w - left] = g[..., ::-1]
    else:
        dx[:, :, top:top + height, left:left + width] = g
    return dx


# --- losses ------------------------------------------------------------------------------
# Darknet's delta for these is `t - p` (training.md §3, §6); the kernels return the
# gradient, its negative. Per-element errors are what Darknet stores in l.output.
SSE, SMOOTH, L1, LOGISTIC = range(4)
LOSSES = {"sse": SSE, "smooth": SMOOTH, "L1": L1, "logistic": LOGISTIC}
SECRET_NUM = np.float32(-1234.0)     # Darknet's "no truth here" marker ([cost] type=masked)


@pjit
def _loss(p, t, kind, masked, error, grad):
    # p, t, error, grad (n,) float32: per-element error and d(loss)/dp as Darknet computes
    # them (float arithmetic; log in double as C's log of a float).
    for i in prange(p.size):
        if masked and t[i] == SECRET_NUM:
            # Darknet overwrites the input with the marker, so diff is 0 there
            error[i] = 0.0
            grad[i] = 0.0
            continue
        diff = t[i] - p[i]
        a = abs(diff)
        if kind == SSE:
            # delta = diff, not 2*diff: the gradient of diff^2 / 2
            error[i] = diff * diff
            grad[i] = -diff
        elif kind == SMOOTH:
            if a < 1:
                error[i] = diff * diff
                grad[i] = -diff
            else:
                error[i] = np.float32(2) * a - np.float32(1)
                # AH's sign: delta = sign(diff), continuous with -diff at |diff| = 1.
                # P's CPU smooth_l1_cpu writes -sign(diff), a sign bug (training.md §6.2).
                grad[i] = -1.0 if diff > 0 else 1.0
        elif kind == L1:
            error[i] = a
            grad[i] = -1.0 if diff > 0 else 1.0      # delta 1 or -1, diff == 0 gives -1
        else:                                         # LOGISTIC: cross-entropy of a sigmoid
            one = np.float32(1)
            error[i] = (-np.float64(t[i]) * np.log(np.float64(p[i]))
                        - np.float64(one - t[i]) * np.log(np.float64(one - p[i])))
            grad[i] = -diff


def elementwise_loss(p: np.ndarray, truth: np.ndarray, kind: str,
                     masked: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """p (N, ...) prediction, truth of the same size -> (cost, error (N, ...), grad (N, ...)):
    Darknet's l2 (`sse`), smooth_l1 (`smooth`), l1 (`L1`) or logistic cross-entropy
    (`logistic`, grad p - t w.r.t. the sigmoid's logits); cost is the sum of the errors.
    `masked`: no error and no gradient where truth == -1234."""
    check_f32("p", p)
    t = np.ascontiguousarray(truth, dtype=np.float32)
    if t.size != p.size:
        raise ValueError(f"truth must have the {p.size} values of p; received {t.size}")
    if kind not in LOSSES:
        raise ValueError(f"unknown loss '{kind}'; known: {', '.join(LOSSES)}")
    error = np.empty(p.shape, np.float32)
    grad = np.empty(p.shape, np.float32)
    _loss(p.reshape(-1), t.reshape(-1), LOSSES[kind], bool(masked), error.reshape(-1),
          grad.reshape(-1))
    return float(error.sum(dtype=np.float64)), error, grad
