"""The element-wise losses of [cost] and [logistic] (Darknet's src/cost_layer.c:
forward_cost_layer, src/logistic_layer.c: forward_logistic_layer): per-element error and
gradient in one pass."""
from __future__ import annotations

import numpy as np
from numba import prange

from .config import check_f32, pjit

# Darknet's delta for these is `t - p` (src/blas.c: l2_cpu, smooth_l1_cpu, l1_cpu,
# logistic_x_ent_cpu); the kernels return the gradient, its negative. Per-element errors
# are what Darknet stores in l.output.
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
                # pjreddie's smooth_l1_cpu (src/blas.c) writes -sign(diff), a sign bug.
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
