"""The dense products of [connected] layers, forward and backward, and `matmul`: C (+)=
A @ B on kernels.gemm with the columns of C spread over the threads (NumPy's BLAS for a
matrix-vector product at batch 1, or where the micro-kernel is not available)."""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from . import gemm, parallel
from .config import check_f32, pjit
from .conv import reuse


def dense(x: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None
          ) -> np.ndarray:
    """x (N, ...) flattened to (N, inputs), weights (n, inputs) -> out (N, n, 1, 1) = x W^T,
    no bias (Darknet [connected], weights [output][input])."""
    check_f32("x", x)
    check_f32("weights", weights, 2)
    N = x.shape[0]
    n, inputs = weights.shape
    if x.size != N * inputs:
        raise ValueError(f"x {x.shape} does not flatten to (N, {inputs}) for weights "
                         f"{weights.shape}")
    out = reuse(out, (N, n, 1, 1))
    matmul(x.reshape(N, inputs), weights.T, out.reshape(N, n))
    return out


# Products with at least this many rows run on kernels.gemm over the threads (column
# blocks); fewer (a connected layer at batch 1: a matrix-vector product) on NumPy's BLAS.
MATMUL_MIN_ROWS = 8


def matmul(a: np.ndarray, b: np.ndarray, c: np.ndarray, accumulate: bool = False) -> None:
    """c = a @ b (c += a @ b with `accumulate`) for the dense layers: a (M, K), b (K, N)
    float32 of any strides, c (M, N) C-contiguous; split by columns over the threads."""
    M, N = c.shape
    if not gemm.ENABLED or M < MATMUL_MIN_ROWS:
        with parallel.single_threaded_blas():   # kernels.parallel: OpenBLAS's threads
            if accumulate:
                c += a @ b
            else:
                np.matmul(a, b, out=c)
        return
    threads = numba.get_num_threads()
    width = gemm.packed_cols(max(gemm.NR, -(-N // (2 * threads))))
    _matmul_columns(a, b, c, accumulate, width)


@pjit
def _matmul_columns(a, b, c, accumulate, width):
    # c (+)= a @ b with the columns of c cut into blocks of `width` (a multiple of
    # kernels.gemm.NR), one task each; a (M, K), b (K, N) of any strides, c rows contiguous
    N = c.shape[1]
    for t in prange(-(-N // width)):
        j0 = t * width
        j1 = min(N, j0 + width)
        gemm.gemm_into(a, b[:, j0:j1], c[:, j0:j1], accumulate)


def dense_backward(x: np.ndarray, weights: np.ndarray, dy: np.ndarray, dw: np.ndarray, *,
                   need_dx: bool = True, dx: np.ndarray | None = None) -> np.ndarray | None:
    """Backward of `dense(x, weights)`: dy (N, n, 1, 1). Accumulates dw (n, inputs) +=
    dY^T X; returns dx = dY W with x's shape (None unless need_dx)."""
    for name, a in (("x", x), ("weights", weights), ("dy", dy), ("dw", dw)):
        check_f32(name, a)
    N = x.shape[0]
    n, inputs = weights.shape
    if dy.size != N * n or dw.shape != weights.shape or x.size != N * inputs:
        raise ValueError(f"dense_backward: x {x.shape}, weights {weights.shape}, dy "
                         f"{dy.shape}, dw {dw.shape} do not fit")
    d2 = dy.reshape(N, n)
    matmul(d2.T, x.reshape(N, inputs), dw, accumulate=True)
    if not need_dx:
        return None
    dx = reuse(dx, x.shape)
    matmul(d2, weights, dx.reshape(N, inputs))
    return dx
