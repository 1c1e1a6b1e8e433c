"""Helpers of the metric-learning loss ([triplet]) and of `darkcfg embed`/`compare`: the
L2 normalisation of embeddings, the B x B distance matrix and its backward.

Everything is in float64 over (B, D) rows: B (a mini-batch, 128 or so) is small enough
for the B x B (and B x B x B for batch-all mining) arrays, and float64 keeps the Gram
matrix trick |a|^2 + |b|^2 - 2 a.b free of cancellation at small distances.
"""
from __future__ import annotations

import numpy as np

DISTANCES = ("euclidean", "squared", "cosine")
# Below this a norm is treated as this (an all-zero embedding, e.g. dead ReLUs, would
# otherwise divide by zero); EUCLID_EPS smooths sqrt at 0 so that coinciding embeddings
# have distance 1e-6 and gradient 0 instead of NaN.
NORM_EPS = 1e-12
EUCLID_EPS = 1e-12


def l2_normalize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (B, D) -> (x / |x| per row, the norms (B, 1), at least NORM_EPS)."""
    norms = np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), NORM_EPS)[:, None]
    return x / norms, norms


def l2_normalize_backward(g: np.ndarray, y: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """d/dx of y = x / |x| applied to g = dL/dy: (g - y <y, g>) / |x| per row (a clamped
    norm passes g / NORM_EPS: y is then x scaled by a constant)."""
    clamped = norms <= NORM_EPS
    proj = g - y * np.einsum("ij,ij->i", y, g)[:, None]
    return np.where(clamped, g, proj) / norms


def distance_matrix(y: np.ndarray, kind: str) -> np.ndarray:
    """y (B, D) -> D (B, B): euclidean |a - b|, squared |a - b|^2 or cosine 1 - cos(a, b)
    between every two rows."""
    if kind == "cosine":
        u, _ = l2_normalize(y)
        return 1.0 - u @ u.T
    sq = np.einsum("ij,ij->i", y, y)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (y @ y.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    return d2 if kind == "squared" else np.sqrt(d2 + EUCLID_EPS)


def distance_backward(grad_d: np.ndarray, y: np.ndarray, d: np.ndarray,
                      kind: str) -> np.ndarray:
    """dL/dy (B, D) from dL/dD (B, B) for D = distance_matrix(y, kind). The diagonal of
    grad_d must be zero (a row's distance to itself is no distance)."""
    w = grad_d + grad_d.T                     # each D[i, j] = D[j, i] depends on both rows
    if kind == "cosine":
        # D = 1 - u_i.u_j with u = y / |y|: dL/du_i = -sum_j w_ij u_j, then through u
        u, norms = l2_normalize(y)
        return l2_normalize_backward(-(w @ u), u, norms)
    if kind == "euclidean":
        w = w / (2.0 * d)                     # d sqrt(s) / ds = 1 / (2 sqrt(s))
    # d |y_i - y_j|^2 / d y_i = 2 (y_i - y_j)
    return 2.0 * (w.sum(1)[:, None] * y - w @ y)

