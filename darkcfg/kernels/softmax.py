"""Softmax over the middle axis of (A, K, S) arrays, Darknet's way.

Darknet's `softmax(input, n, temp, stride)` takes the largest value, then
exp(x/temp - largest/temp), sums, divides. [softmax] with `groups=g` is (N*g, n, 1) and
[region] classes are (N*num, classes, h*w) (reference cases `softmax`, `real_yolov2_tiny`).
`softmax_cross_entropy` is [softmax]'s training loss.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, jit, pjit

FLT_MAX = np.float32(3.4028234663852886e38)


@pjit
def _softmax_mid(x, lo, hi, temp):
    # x (A, K, S), in place: for every (a, s), softmax of x[a, lo:hi, s] at temperature temp.
    a_n, _, s_n = x.shape
    for a in prange(a_n):
        for s in range(s_n):
            largest = -FLT_MAX
            for k in range(lo, hi):
                largest = max(largest, x[a, k, s])
            total = np.float32(0.0)
            top = largest / temp
            for k in range(lo, hi):
                e = np.float32(np.exp(np.float64(x[a, k, s] / temp - top)))
                total += e
                x[a, k, s] = e
            for k in range(lo, hi):
                x[a, k, s] /= total


def softmax_(x: np.ndarray, lo: int = 0, hi: int | None = None,
             temperature: float = 1.0) -> np.ndarray:
    """In place on x (A, K, S): softmax along axis 1 over channels lo..hi-1; returns x."""
    check_f32("x", x, 3)
    hi = x.shape[1] if hi is None else hi
    if not 0 <= lo < hi <= x.shape[1]:
        raise ValueError(f"softmax range {lo}..{hi} is outside the {x.shape[1]} entries")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; received temperature={temperature}")
    _softmax_mid(x, lo, hi, np.float32(temperature))
    return x


def softmax_groups(x: np.ndarray, groups: int, temperature: float = 1.0) -> np.ndarray:
    """x (N, ...) -> same shape: softmax over each of `groups` contiguous chunks of every
    sample's flat C,H,W buffer (chunks need not align with channels: case `softmax`)."""
    n = x.shape[0]
    if groups < 1 or (x.size // max(n, 1)) % groups:
        raise ValueError(f"groups must divide the {x.size // max(n, 1)} values per sample; "
                         f"received groups={groups}")
    flat = np.array(x, dtype=np.float32, order="C").reshape(n * groups, -1, 1)
    return softmax_(flat, 0, flat.shape[1], temperature).reshape(x.shape)


@jit
def _xent(p, t, error, grad):
    # p, t, error, grad (n,): Darknet's softmax_x_ent_cpu with the gradient's sign
    for i in range(p.size):
        # -log(p) wherever t != 0, whatever t's value (Darknet: `(t) ? -log(p) : 0`)
        error[i] = np.float32(-np.log(np.float64(p[i]))) if t[i] != 0 else np.float32(0.0)
        grad[i] = p[i] - t[i]


def softmax_cross_entropy(p: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """p (N, ...) softmax output, truth of the same size -> (cost, grad): cost = sum of
    -ln(p) over the entries with truth != 0 (one-hot truth: the cross-entropy), grad = p -
    truth (N, ...): Darknet's delta `t - p` negated, the gradient w.r.t. the LOGITS of a
    softmax with cross-entropy (whatever the groups and temperature)."""
    check_f32("p", p)
    t = np.ascontiguousarray(truth, dtype=np.float32)
    if t.size != p.size:
        raise ValueError(f"truth must have the {p.size} values of p; received {t.size}")
    error = np.empty(p.size, np.float32)
    grad = np.empty(p.shape, np.float32)
    _xent(p.reshape(-1), t.reshape(-1), error, grad.reshape(-1))
    return float(error.sum(dtype=np.float64)), grad
