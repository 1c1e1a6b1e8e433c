"""kernels.gemm (the explicit-vector micro-kernels) and the conv paths built on it, against
float64 NumPy products and tests/naive_conv.py loops, at the sizes where their blocking,
edges and task splits change."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.kernels import conv, dense, gemm

from . import helpers
from . import naive_conv as naive
from .helpers import rand

pytestmark = pytest.mark.skipif(not gemm.ENABLED, reason="no AVX2/FMA: NumPy's BLAS runs")

MR, NR, VW, KC = gemm.MR, gemm.NR, gemm.VW, gemm.KC


def rel(ours, ref) -> float:
    return helpers.rel(ours, ref, floor=1e-12)


# (M, K, N): micro-tile multiples, edges in every direction, depth over one and several
# KC blocks, more columns than one NC block, a single column
GEMM_SHAPES = [(MR, 8, NR), (MR + 1, 5, NR + 3), (2 * MR - 1, KC + 7, 3 * NR - 5),
               (1, 3 * KC, 1), (37, 19, gemm.NC + 45), (200, 300, 70)]


@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=str)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True),
                                   (True, True)])
def test_gemm_matches_float64_product(shape, ta, tb):
    M, K, N = shape
    rng = np.random.default_rng(M * 7 + K + N)
    a = rand(rng, K, M).T if ta else rand(rng, M, K)       # transposed views as given
    b = rand(rng, N, K).T if tb else rand(rng, K, N)
    want = a.astype(np.float64) @ b.astype(np.float64)
    c = np.full((M, N), np.nan, np.float32)
    gemm.gemm(a, b, c)
    assert rel(c, want) < 1e-5
    gemm.gemm(a, b, c, accumulate=True)
    assert rel(c, 2 * want) < 1e-5


def test_gemm_empty_depth_and_shape_errors():
    c = np.full((3, 4), 5.0, np.float32)
    gemm.gemm(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), c, accumulate=True)
    assert (c == 5.0).all()
    gemm.gemm(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), c)
    assert (c == 0.0).all()
    with pytest.raises(ValueError, match="do not agree"):
        gemm.gemm(np.zeros((3, 2), np.float32), np.zeros((3, 4), np.float32), c)
    with pytest.raises(ValueError, match="C-contiguous"):
        gemm.gemm(np.zeros((4, 2), np.float32), np.zeros((2, 3), np.float32),
                  np.zeros((3, 4), np.float32).T)


# (M, N, K) of c (M, N) += a (M, K) @ b (N, K).T: blocks and the 1-row / 1-column edge
# kernels, depth not a multiple of VW, shorter than VW, over several depth chunks
NT_SHAPES = [(gemm.RA, gemm.RB, 4 * VW), (gemm.RA + 1, gemm.RB + 2, 3 * VW + 5),
             (1, 1, VW - 3), (9, 13, gemm.DEPTH * 2 + 11), (32, 27, 3600)]


@pytest.mark.parametrize("shape", NT_SHAPES, ids=str)
def test_gemm_nt_matches_float64_product(shape):
    M, N, K = shape
    rng = np.random.default_rng(M + 3 * N + K)
    a, b = rand(rng, M, K), rand(rng, N, K)
    want = a.astype(np.float64) @ b.astype(np.float64).T
    c = np.full((M, N), np.nan, np.float32)
    gemm.gemm_nt(a, b, c)
    assert rel(c, want) < 1e-5
    gemm.gemm_nt(a, b, c, accumulate=True)
    assert rel(c, 2 * want) < 1e-5


# --- the convs on the packed GEMM ------------------------------------------------------------
# (N, C, H, W, filters, k, sy, sx, pad, d): many filters and few pixels (the filters split
# over the tasks, patches packed once), tiles across images, phases of strided and
# dilated convs, 1x1 plain, a first layer with 3 channels
PACKED_CASES = [
    (1, 40, 7, 7, 100, 3, 1, 1, 1, 1),
    (1, 24, 5, 6, 130, 1, 1, 1, 0, 1),
    (3, 8, 17, 15, 20, 3, 1, 1, 1, 1),
    (2, 6, 19, 21, 13, 3, 2, 2, 1, 1),
    (1, 5, 23, 22, 9, 3, 3, 2, 2, 2),
    (2, 3, 31, 29, 16, 7, 2, 2, 3, 1),
    (4, 16, 6, 6, 70, 1, 1, 1, 0, 1),
]


@pytest.mark.parametrize("case", PACKED_CASES, ids=str)
def test_packed_conv_matches_naive(case):
    N, C, H, W, n, k, sy, sx, pad, d = case
    rng = np.random.default_rng(sum(case))
    x, w = rand(rng, N, C, H, W), rand(rng, n, C, k, k)
    want = naive.conv2d(x, w, sy, sx, pad, d, 1)
    out, _ = conv.conv2d(x, w, sy=sy, sx=sx, pad=pad, d=d)
    assert rel(out, want) < 1e-5
    # the channel sums the training BN takes from the product kernel
    moments = np.empty((n, 2))
    out, _ = conv.conv2d(x, w, sy=sy, sx=sx, pad=pad, d=d, moments=moments)
    w64 = np.asarray(want, np.float64)
    assert rel(moments[:, 0], w64.sum(axis=(0, 2, 3))) < 1e-5
    assert rel(moments[:, 1], (w64 ** 2).sum(axis=(0, 2, 3))) < 1e-5
    # inference with a cache (packed weights kept) and the BN + leaky tail fused
    cache: dict = {}
    mean, var = rand(rng, n), 1 + rng.random(n).astype(np.float32)
    scales, biases = rand(rng, n), rand(rng, n)
    tail = conv.make_tail(n, biases, scales, mean, var, activation="leaky")
    for _ in range(2):
        out, _ = conv.conv2d(x, w, sy=sy, sx=sx, pad=pad, d=d, tail=tail, cache=cache)
        z = naive.batchnorm(want, scales, mean, var, biases)
        assert rel(out, np.where(z > 0, z, np.float32(0.1) * z)) < 1e-5


@pytest.mark.parametrize("groups", [2, 8])
def test_grouped_packed_conv_matches_naive(groups):
    # one group after another into the same output, the training moments included
    rng = np.random.default_rng(groups)
    x, w = rand(rng, 2, 16, 9, 10), rand(rng, 24, 16 // groups, 3, 3)
    want = naive.conv2d(x, w, 1, 1, 1, 1, groups)
    moments = np.empty((24, 2))
    out, _ = conv.conv2d(x, w, pad=1, groups=groups, moments=moments)
    assert rel(out, want) < 1e-5
    assert rel(moments[:, 0], np.asarray(want, np.float64).sum(axis=(0, 2, 3))) < 1e-5


def test_winograd_with_filters_split_over_tasks():
    # a 7 x 7 map at batch 1 with many filters: each task transforms all 16 tiles and
    # multiplies its block of filters
    rng = np.random.default_rng(11)
    x, w = rand(rng, 1, 48, 7, 7), rand(rng, 140, 48, 3, 3)
    assert conv.winograd_pays(1, 48, 140, 3, 1, 1, 1, 1, 7, 7)
    out, _ = conv.conv2d(x, w, pad=1, cache={})
    assert rel(out, naive.conv2d(x, w, 1, 1, 1, 1, 1)) < 1e-5


# (N, C, H, W, filters, k, sy, sx, pad, d, groups): dx as a forward conv of the turned
# filters (stride 1, as many input channels as filters; 1x1), and the col2im route
# (fewer input channels, strided, grouped), with tasks of several images; dW from
# gathered patches (one group) or im2col (grouped)
BACKWARD_CASES = [
    (3, 20, 9, 8, 12, 3, 1, 1, 1, 1, 1),
    (2, 9, 6, 7, 9, 3, 1, 1, 2, 2, 1),
    (5, 12, 4, 5, 7, 1, 1, 1, 0, 1, 1),
    (4, 5, 8, 9, 16, 3, 1, 1, 1, 1, 1),
    (2, 6, 11, 10, 8, 3, 2, 2, 1, 1, 1),
    (3, 8, 7, 7, 12, 3, 1, 1, 1, 1, 4),
    (6, 6, 24, 23, 10, 3, 1, 1, 1, 1, 1),      # dW gathered in chunks across images
    (2, 3, 30, 31, 14, 7, 2, 2, 3, 1, 1),      # a strided first layer (no dx needed)
]


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=str)
def test_backward_matches_naive(case):
    N, C, H, W, n, k, sy, sx, pad, d, g = case
    rng = np.random.default_rng(sum(case))
    x, w = rand(rng, N, C, H, W), rand(rng, n, C // g, k, k)
    out, _ = conv.conv2d(x, w, sy=sy, sx=sx, pad=pad, d=d, groups=g)
    dy = rand(rng, *out.shape)
    dw = np.full(w.shape, 0.5, np.float32)          # accumulated into
    dx, _ = conv.conv2d_backward(x, w, dy, dw, sy=sy, sx=sx, pad=pad, d=d, groups=g)
    want_dw, want_dx = naive.conv2d_backward(x, w, dy, sy, sx, pad, d, g)
    assert rel(dx, want_dx) < 1e-5
    assert rel(dw - 0.5, want_dw) < 1e-5
    dw[...] = 0                                     # a first layer: no dx wanted
    dx, _ = conv.conv2d_backward(x, w, dy, dw, sy=sy, sx=sx, pad=pad, d=d, groups=g,
                                 need_dx=False)
    assert dx is None and rel(dw, want_dw) < 1e-5


AVX2 = ("+64bit,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+avx,+avx2,+fma,"
        "+f16c,+bmi,+bmi2,+lzcnt,+movbe")
OTHER_ISA = """
import numpy as np
from darkcfg.kernels import conv, dense, gemm
from tests import naive_conv as naive
print(gemm.ENABLED, gemm.VW, gemm.MR, gemm.NR)
rng = np.random.default_rng(0)
a, b = rng.random((29, 70), np.float32), rng.random((70, 45), np.float32)
c = np.empty((29, 45), np.float32)
gemm.gemm(a, b, c)
assert np.abs(c - a.astype(np.float64) @ b).max() < 1e-4
x = rng.standard_normal((2, 20, 9, 8), np.float32)
w = rng.standard_normal((70, 20, 3, 3), np.float32)
out, _ = conv.conv2d(x, w, pad=1)
want = naive.conv2d(x, w, 1, 1, 1, 1, 1)
assert np.abs(out - want).max() / np.abs(want).max() < 1e-5
dy = rng.standard_normal(out.shape, np.float32)
dw = np.zeros_like(w)
dx, _ = conv.conv2d_backward(x, w, dy, dw, pad=1)
want_dw, want_dx = naive.conv2d_backward(x, w, dy, 1, 1, 1, 1, 1)
assert np.abs(dx - want_dx).max() / np.abs(want_dx).max() < 1e-5
assert np.abs(dw - want_dw).max() / np.abs(want_dw).max() < 1e-5
"""


def _run_as(cpu: str, features: str) -> str:
    # a new process compiling for another instruction set (Numba caches it apart)
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", OTHER_ISA], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_avx2_kernels_in_a_process_compiled_for_haswell():
    # what a CPU without AVX-512 runs: 8-wide vectors, 6 x 16 tiles
    assert _run_as("haswell", AVX2) == ["True", "8", "6", "16"]


@pytest.mark.slow
def test_numpy_blas_paths_without_avx2():
    # a CPU without AVX2/FMA: the convs keep NumPy's matmul
    assert _run_as("nehalem", "+64bit,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,"
                   "+cx16")[0] == "False"


def test_dense_on_the_threads_matches_naive():
    # a [connected] layer at batch 20: kernels.gemm over column blocks, forward and back
    rng = np.random.default_rng(4)
    x, w = rand(rng, 20, 6, 5, 7), rand(rng, 77, 210)
    assert dense.MATMUL_MIN_ROWS <= 20
    out = dense.dense(x, w)
    assert rel(out.reshape(20, 77), naive.dense(x, w).reshape(20, 77)) < 1e-5
    dy = rand(rng, 20, 77, 1, 1)
    dw = np.full(w.shape, 1.5, np.float32)
    dx = dense.dense_backward(x, w, dy, dw)
    want_dw, want_dx = naive.dense_backward(x, w, dy)
    assert rel(dw - 1.5, want_dw) < 1e-5
    assert rel(dx.reshape(20, 210), want_dx) < 1e-5
