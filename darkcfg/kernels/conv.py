"""Convolution and transposed convolution, and their backward passes (weight gradients
accumulated, input gradients returned). The dense products are in kernels.dense.

conv2d, on CPUs with AVX2+FMA (kernels.gemm.ENABLED), cuts the batch's output pixels
into column tiles (or, for small maps, the filters into blocks), one task each, run in
one Numba parallel loop (kernels.conv_tiles): per task the patches packed straight from
the zero-padded or stride-phase-split input (gemm.pack_patches), the micro-kernel GEMM
against the weights packed once per layer (kept in the caller's `cache` until they
change), and the store (kernels.epilogue), which at inference also applies BN or the
bias and the activation (`Tail`) while the tile is in cache. 3x3 stride-1 convs with
enough channels use Winograd F(2x2, 3x3) at inference (kernels.winograd) on the same
micro-kernel (grouped convs one group after another); depthwise convs run as direct
loops (kernels.direct); every conv on CPUs without the micro-kernel takes im2col
columns and NumPy's single-threaded BLAS on Python threads (kernels.parallel). Without
a tail the product is raw and the layers finish it with kernels.bn_train.

The backward pass works on runs of whole images, one per task (conv_tiles.backward): dW
from the patches gathered into packed columns (or from im2col columns), dx as a forward
conv of the turned filters (stride 1, n <= C) or as W^T dZ added back by col2im.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from . import bn_train, conv_tiles, epilogue, gemm, parallel, winograd
from .activations import LINEAR
from .bn import bn_denominator
from .config import check_f32
from .direct import (
    LANES,
    conv_depthwise,
    conv_depthwise_blocked,
    conv_direct,
    conv_direct_backward_input,
    conv_direct_backward_weights,
    conv_pointwise_few,
)
from .im2col import (
    col2im_add,
    col2im_direct,
    col2im_wide,
    crop_input,
    im2col,
    im2col_direct,
    im2col_wide,
    pad_input,
    pad_phases,
)

# Depthwise convs with at most this many filters per channel run as direct loops: their
# per-channel GEMMs (1 or 2 rows) are too small for BLAS (timed on 2 cores: 2-4x faster
# at 1 filter per channel, even at 2, slower from 4 on and whenever C/groups > 1).
DIRECT_MAX = 2
# Winograd from these sizes on. Timed per 3x3 conv of yolov3-tiny, darknet19 and resnet18
# on 2 threads, both paths on kernels.gemm: 0.65-0.85x the packed im2col GEMM's time from
# 32 channels and 16 tiles (a 7 x 7 output) on; no gain with 16 channels (the transforms
# cost what the GEMM saves).
WINOGRAD_MIN_C = 32
WINOGRAD_MIN_N = 32
WINOGRAD_MIN_TILES = 16
# Inference depthwise convs with outputs at most this wide run channel-blocked
# (direct.conv_depthwise_blocked), wider ones plane by plane (direct.conv_depthwise).
# Timed per conv on one Zen 3 core (efficientnet_b0's shapes, BN and swish, against the
# plane-by-plane kernel with its sums in registers too): 7 x 7 outputs 1.5-1.9x faster
# blocked, 9 and 10 wide 1.1-1.3x, 14 x 14 1.1-1.3x; 28 x 28 0.86x, 56 x 56 0.73-0.93x,
# 112 x 112 0.70-0.77x.
DEPTHWISE_BLOCKED_OW = 16
# 1x1 stride-1 convs through _conv_pointwise (False: the packed path, for comparison)
POINTWISE = True
# Inference convs whose patches are this deep or less read the input in place
# (_conv_gathered; False: the packed path, for comparison)
GATHERED = True
GATHERED_MAX_K = 576
GATHERED_MIN_C = 8


def reuse(buf: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """`buf` when it already is a float32 array of `shape`, else a new (uninitialised) one."""
    shape = tuple(int(s) for s in shape)
    if buf is not None and buf.shape == shape:
        return buf
    return np.empty(shape, np.float32)


def _direct(cg: int, n: int, groups: int) -> bool:
    # the depthwise convs conv2d runs as direct loops
    return cg == 1 and groups > 1 and n // groups <= DIRECT_MAX


def conv_out_hw(h: int, w: int, k: int, sy: int, sx: int, pad: int, d: int
                ) -> tuple[int, int]:
    """Output (oh, ow) of a k x k conv with dilation d and `pad` pixels applied per side."""
    extent = d * (k - 1) + 1
    return (h + 2 * pad - extent) // sy + 1, (w + 2 * pad - extent) // sx + 1


class Tail(NamedTuple):
    """The layer tail a conv can apply while its output tile is in cache (kernels.epilogue):
    mode RAW/BIAS/BN, per-filter (n,) mean, inv (float64 1/D, kernels.bn), scales, biases,
    and the
    activation code (epilogue.NO_ACT: none)."""
    mode: int
    mean: np.ndarray
    inv: np.ndarray
    scales: np.ndarray
    biases: np.ndarray
    code: int


def make_tail(n: int, biases: np.ndarray | None = None, scales: np.ndarray | None = None,
              mean: np.ndarray | None = None, variance: np.ndarray | None = None,
              dialect: str = "pjreddie", activation: str = "linear") -> Tail:
    """Inference tail: BN when `scales` is given (else a bias, else nothing), then the
    activation (per-pixel ones such as normalize_channels are left to kernels.activations)."""
    from .activations import CODES, LEAKY, PER_PIXEL, REVLEAKY
    zeros = np.zeros(n, np.float32)
    code = epilogue.NO_ACT if activation in PER_PIXEL else CODES[activation]
    code = LEAKY if code == REVLEAKY else code
    if scales is not None:
        return Tail(epilogue.BN, _f32(mean, n), 1.0 / bn_denominator(_f32(variance, n), dialect),
                    _f32(scales, n), _f32(biases, n) if biases is not None else zeros, code)
    mode = epilogue.BIAS if biases is not None else epilogue.RAW
    return Tail(mode, zeros, np.ones(n), zeros, _f32(biases, n) if biases is not None
                else zeros, code)


def _f32(a: np.ndarray | None, n: int) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    if a.size != n:
        raise ValueError(f"per-filter parameters must have {n} values; received {a.size}")
    return a


def _raw(n: int) -> Tail:
    zeros = np.zeros(n, np.float32)
    return Tail(epilogue.RAW, zeros, np.ones(n), zeros, zeros, epilogue.NO_ACT)


def _apply_tail(out: np.ndarray, tail: Tail) -> None:
    # the tail on a finished (N, n, oh, ow) output, with the parallel kernels
    from .activations import _activate_flat
    from .bn import _add_bias, _bn
    o3 = out.reshape(out.shape[0], out.shape[1], -1)
    if tail.mode == epilogue.BN:
        _bn(o3, tail.mean, tail.inv, tail.scales, tail.biases)
    elif tail.mode == epilogue.BIAS:
        _add_bias(o3, tail.biases)
    if tail.code not in (epilogue.NO_ACT, LINEAR) and out.size:
        _activate_flat(out.reshape(-1), tail.code)


def _column_tiles(cols: int, K: int, threads: int) -> tuple[int, int]:
    """(tile width, tile count) for `cols` GEMM columns of depth K: about 2 MB of patches
    per tile (timed: single-threaded sgemm is flat from ~256 columns on), at least two
    tiles per thread when there are enough columns, a multiple of the thread count."""
    width = min(4096, max(256, (1 << 19) // max(K, 1)))
    count = -(-cols // width)
    if threads > 1:
        count = max(count, min(2 * threads, -(-cols // 64)))
        count = -(-count // threads) * threads
    width = -(-cols // count)
    return width, -(-cols // width)


def winograd_pays(N: int, C: int, n: int, k: int, sy: int, sx: int, d: int, groups: int,
                  oh: int, ow: int) -> bool:
    """Whether conv2d uses Winograd F(2x2, 3x3): 3x3, stride 1, no dilation, no groups, and
    enough channels that the 16 GEMMs dominate the transforms."""
    tiles = N * -(-oh // 2) * -(-ow // 2)
    return (k == 3 and sy == 1 and sx == 1 and d == 1 and groups == 1 and C >= WINOGRAD_MIN_C
            and n >= WINOGRAD_MIN_N and tiles >= WINOGRAD_MIN_TILES)


def _plane_stride(values: int) -> int:
    # a plane of `values` float32 padded so that consecutive planes start 5 cache sets
    # apart: the 16 planes a Winograd transform reads or writes together then do not all
    # map to one cache set (a plane size that is a multiple of 4 KiB made it ~20x slower)
    lines = -(-values // 16)
    lines += (5 - lines) % 64
    return lines * 16


def _conv_winograd(x: np.ndarray, weights: np.ndarray, pad: int, out: np.ndarray,
                   tail: Tail, cache: dict) -> None:
    N, C = x.shape[:2]
    n = weights.shape[0]
    oh, ow = out.shape[2], out.shape[3]
    th, tw = -(-oh // 2), -(-ow // 2)
    packed = gemm.ENABLED
    key = (weights.ctypes.data, weights.shape, winograd.fingerprint(weights))
    if cache.get("winograd") != key:
        U = winograd.filter_transform(weights)
        if packed:      # each of the 16 (n, C) planes packed for kernels.gemm
            rows = gemm.packed_rows(n)
            Up = np.empty((16, rows * C), np.float32)
            for e in range(16):
                gemm.pack_weights(U[e], Up[e])
            U = Up
        cache["U"], cache["winograd"] = U, key
    U = cache["U"]
    xp = parallel.scratch("xp", (N, C, 2 * th + 2, 2 * tw + 2))
    pad_input(x, pad, xp)
    threads = numba.get_num_threads() if packed else parallel.threads()
    tiles_all = N * th * tw
    # Tasks: runs of tiles (V about 512 KB, so that the transformed input stays in L2
    # for the 16 GEMMs: timed against 2 MB on Zen 3, 0.75-0.95x the time at one and two
    # threads on yolov3-tiny's and yolov4-tiny's 3x3 convs), at least two per thread;
    # with too few tiles for GEMMs of >= 128 columns, blocks of filters instead (each task
    # then transforms the whole input, cheap next to its GEMMs when there are few tiles)
    width = min(1024, max(64, 8192 // C))
    count = -(-tiles_all // width)
    fblocks = 1
    if threads > 1 and count < 2 * threads:
        if tiles_all < 128 * 2 * threads and n >= 64:
            fblocks = min(threads, n // 32)
            width, count = tiles_all, 1
        else:
            count = -(-max(count, min(2 * threads, -(-tiles_all // 32))) // threads) * threads
            width = -(-tiles_all // count)
            count = -(-tiles_all // width)
    if packed:      # whole panels of tiles, spread evenly over the tasks
        width = gemm.packed_cols(-(-tiles_all // count))
        panels = gemm.packed_rows(n) // gemm.MR
        per_block = -(-panels // fblocks)
        vstride = _plane_stride(C * width)
        mstride = _plane_stride(per_block * gemm.MR * width)
        slots = numba.config.NUMBA_NUM_THREADS
        conv_tiles.winograd_tiles(
            xp, th, tw, tiles_all, width, fblocks, per_block, C, U,
            parallel.scratch("wv", (slots, 16 * vstride)), vstride,
            parallel.scratch("wm", (slots, 16 * mstride)), mstride, out, tail.mode,
            tail.mean, tail.inv, tail.scales, tail.biases, tail.code)
        return
    rows = -(-n // fblocks)

    def task(i: int, _t: int) -> None:
        ti, fi = divmod(i, fblocks)
        t0 = ti * width
        T = min(width, tiles_all - t0)
        f0, f1 = fi * rows, min(n, (fi + 1) * rows)
        if f0 >= f1:
            return
        vstride = _plane_stride(C * T)
        V = parallel.scratch("wv", (16 * vstride,))
        winograd.input_transform(xp, th, tw, t0, T, V, vstride, T)
        m = f1 - f0
        mstride = _plane_stride(m * T)
        M = parallel.scratch("wm", (16 * mstride,))
        V3 = np.lib.stride_tricks.as_strided(V, (16, C, T), (vstride * 4, T * 4, 4))
        M3 = np.lib.stride_tricks.as_strided(M, (16, m, T), (mstride * 4, T * 4, 4))
        np.matmul(U[:, f0:f1], V3, out=M3)
        winograd.output_transform(M, mstride, T, m, T, th, tw, t0, f0, out, tail.mode,
                                  tail.mean, tail.inv, tail.scales, tail.biases, tail.code)

    parallel.run(task, count * fblocks, work=32.0 * n * C * tiles_all)


class _Patches:
    """Where a conv's GEMM columns come from: Darknet's im2col from the zero-padded input
    (`pitch` = ow), or for stride 1 the wide layout (kernels.im2col: each patch row one
    contiguous copy; `pitch` = padded width, the extra columns computed and dropped),
    whichever costs less by a model timed on one core (wide: the padded copy and the
    im2col at ~0.15 ns a value, plus the GEMM on the extra columns; compact: ~0.1 + 4/ow
    ns a value, the runs being one output row long). Column j of the batch is image
    j // (oh*pitch), and `count` = N*oh*pitch."""

    def __init__(self, x: np.ndarray, k: int, sy: int, sx: int, pad: int, d: int,
                 oh: int, ow: int, n: int, fill: bool = True):
        # fill=False: the layout only (the padded copy left unwritten, for a caller that
        # reads no patches through it)
        N, C, H, W = x.shape
        self.k, self.sy, self.sx, self.d, self.pad, self.oh, self.ow = k, sy, sx, d, pad, oh, ow
        self.rows = C * k * k
        self.plain = sy == 1 and sx == 1 and k == 1 and pad == 0    # x itself, no copy
        self.wide = False
        if sy == 1 and sx == 1 and not self.plain:
            pitch = W + 2 * pad
            wide = self.rows * oh * (0.15 * pitch + 2 * n * (pitch - ow) / 100)
            compact = self.rows * oh * ow * (0.1 + 4 / ow)
            self.wide = wide < compact
        if self.wide:
            # one spare zero row: the last garbage columns read up to k-1 values past
            self.xp = parallel.scratch("xpad", (N, C, H + 2 * pad + 1, W + 2 * pad))
            if fill:
                pad_input(x, pad, self.xp)
            self.pitch = W + 2 * pad
        else:           # the compact layout reads x itself, zeros where patches leave it
            self.xp, self.pitch = x, ow
        self.per_image = oh * self.pitch
        self.count = N * self.per_image

    def columns(self, j0: int, T: int) -> np.ndarray:
        """(C*k*k, T) patches of columns j0..j0+T: a view of x for a plain 1x1 conv
        within one image (BLAS reads it with its stride), else a per-thread buffer."""
        b, q = divmod(j0, self.per_image)
        if self.plain and q + T <= self.per_image:
            return self.xp.reshape(self.xp.shape[0], self.rows, -1)[b, :, q:q + T]
        cols = parallel.scratch("cols", (self.rows, T))
        if self.wide:
            im2col_wide(self.xp, self.k, self.d, self.oh, j0, cols)
        else:
            im2col_direct(self.xp, self.k, self.sy, self.sx, self.pad, self.d, self.oh,
                          self.ow, j0, cols)
        return cols

    def add_columns(self, cols: np.ndarray, j0: int, dxp: np.ndarray) -> None:
        """The transpose of `columns`: cols added into dxp, a buffer shaped like `xp`."""
        if self.wide:
            col2im_wide(cols, self.k, self.d, self.oh, j0, dxp)
        else:
            col2im_direct(cols, self.k, self.sy, self.sx, self.pad, self.d, self.oh, self.ow,
                          j0, dxp)


def _packed_weights(weights: np.ndarray, cache: dict | None, groups: int = 1
                    ) -> np.ndarray:
    """The conv's weights packed for kernels.gemm, one row per group, kept in `cache`
    (inference) and repacked whenever their bits change; packed anew each call without
    a cache."""
    n = weights.shape[0]
    m = n // groups
    w3 = weights.reshape(groups, m, -1)
    if cache is not None:
        key = (weights.ctypes.data, weights.shape, groups, winograd.fingerprint(weights))
        if cache.get("packed") == key:
            return cache["A"]
    ap = np.empty((groups, gemm.packed_rows(m) * w3.shape[2]), np.float32)
    for g in range(groups):
        gemm.pack_weights(w3[g], ap[g])
    if cache is not None:
        cache["A"], cache["packed"] = ap, key
    return ap


def _packed_source(x: np.ndarray, k: int, sy: int, sx: int, pad: int, d: int
                   ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Where gemm.pack_patches(_t) read a conv's patches: x, zero-padded, and for strided
    convs split into sy x sx phases (im2col.pad_phases: the phases of each row side by
    side), so that a patch element's values over a run of output pixels are consecutive.
    Returns (src flat, row_off: patch element r = (c, ky, kx) lies row_off[r] past a
    patch's origin, the pitch of an output row, the stride of an image)."""
    N, C, H, W = x.shape
    r = np.arange(C * k * k, dtype=np.int64)
    c, i, j = r // (k * k), (r // k) % k * d, r % k * d
    if sy > 1 or sx > 1:
        Hq, Wq = -(-(H + 2 * pad) // sy), -(-(W + 2 * pad) // sx)
        src = parallel.scratch("packed_src", (N, C, Hq, sy, sx, Wq))
        pad_phases(x, pad, sy, sx, src)
        row_off = (((c * Hq + i // sy) * sy + i % sy) * sx + j % sx) * Wq + j // sx
        return src.reshape(-1), row_off, sy * sx * Wq, src[0].size
    if pad:
        src = parallel.scratch("packed_src", (N, C, H + 2 * pad, W + 2 * pad))
        pad_input(x, pad, src)
    else:
        src = x
    Hq, Wq = src.shape[2], src.shape[3]
    return src.reshape(-1), (c * Hq + i) * Wq + j, Wq, src[0].size


def _conv_packed(x: np.ndarray, weights: np.ndarray, sy: int, sx: int, pad: int, d: int,
                 oh: int, ow: int, out: np.ndarray, tail: Tail, cache: dict | None,
                 moments: np.ndarray | None, groups: int = 1) -> None:
    # Through kernels.gemm, one group after another: per task, the tile's patches packed
    # straight from the (zero-padded) input, the micro-kernel GEMM into a per-thread tile
    # and the fused store. With few columns (small maps at batch 1) the filters are split
    # instead and the patches packed once for all tasks.
    N = x.shape[0]
    n, cg, k, _ = weights.shape
    K, m = cg * k * k, n // groups
    ap = _packed_weights(weights, cache, groups)
    flat, row_off, Wp, image_stride = _packed_source(x, k, sy, sx, pad, d)
    count = N * oh * ow
    threads = numba.get_num_threads()
    width, tiles = _column_tiles(count, K, threads)
    width = gemm.packed_cols(-(-count // tiles))        # whole panels, spread evenly
    tiles = -(-count // width)
    panels = gemm.packed_rows(m) // gemm.MR
    fblocks, shared = 1, conv_tiles.empty()
    if tiles < 2 * threads and m >= 64 and threads > 1:
        width, tiles, fblocks = count, 1, min(threads, m // 32)
        shared = parallel.scratch("bp_shared", (gemm.packed_cols(count) * K,))
    per_block = -(-panels // fblocks)
    Wt = gemm.packed_cols(width)
    slots = numba.config.NUMBA_NUM_THREADS
    bp_all = parallel.scratch("bp", (slots, 0 if shared.size else Wt * K))
    acc_all = parallel.scratch("acc", (slots, per_block * gemm.MR * Wt))
    parts = conv_tiles.EMPTY_PARTS if moments is None else np.zeros((tiles, n, 2))
    for g in range(groups):
        rows_g = row_off[g * K:(g + 1) * K]
        if shared.size:
            gemm.pack_patches(flat, rows_g, 0, count, oh, ow, Wp, image_stride, shared)
        conv_tiles.packed(flat, rows_g, count, width, fblocks, per_block, oh, ow, Wp,
                          image_stride, ap[g], shared, bp_all, acc_all, out, tail.mode,
                          tail.mean, tail.inv, tail.scales, tail.biases, tail.code, parts,
                          g * m, m)
    if moments is not None:
        moments[...] = parts[0]
        for ti in range(1, tiles):
            moments += parts[ti]


# Values of a pointwise conv's tile (its pixels of the input and of the output block)
# kept in L2 while its product and tail run (Zen 3 and Skylake-SP cores have 512 KB-1 MB)
POINTWISE_TILE = 96 * 1024
# Weights of a filter chunk (KC deep) kept in L2 while the column panels pass
POINTWISE_CHUNK = 48 * 1024


def pointwise_pays(C: int, P: int) -> bool:
    """Whether conv2d's inference runs a 1x1 stride-1 conv through _conv_pointwise: timed
    per conv against the packed path on one Zen 3 core (yolov3-tiny, yolov4 shapes),
    1.1-1.4x faster with at least 96 channels or maps of at most 8k pixels. Larger maps of
    16-64 channels were 0.8-0.95x then; timed again since (session 8, Zen 3, AVX2, BN +
    leaky, 5 interleaved rounds, same bits), they are 0.64-0.94x the packed path's time
    at one thread and 0.69-0.93x at two (64 -> 64 on 104 x 104: 0.72 / 0.69; 32 -> 64 on
    208 x 208: 0.94 / 0.83; 16 -> 96 on 112 x 112: 0.78 / 0.75), except 16 -> 32 on
    208 x 208 at one thread (1.07; 0.93 at two). With 3 channels the two are alike
    (0.97 / 1.02): such convs stay on the packed path."""
    return POINTWISE and (C >= 16 or P <= 8192)


def pointwise_tiles(N: int, C: int, n: int, P: int, threads: int
                    ) -> tuple[int, int, int, int]:
    """(width, fblocks, per_block, chunk) of a pointwise conv's tasks: tiles of `width`
    pixels of one image (a multiple of NR unless it is the whole image) whose input and
    output block fit POINTWISE_TILE; with fewer tiles than two per thread, the filters
    split into `fblocks` blocks of `per_block` panels (at least 4); `chunk` panels of
    weights at a time (POINTWISE_CHUNK). Small inputs (at most 64k values an image) with
    fewer images than threads are not cut into pixel tiles: each thread takes the whole
    image and a share of the filters (timed at 2 threads on Zen 3 over the 1x1 convs of
    efficientnet_b0, yolov3-tiny and yolov7-tiny: 0.64-0.94x the time where the tiles
    had split both ways or into pieces of a few channels, neutral elsewhere)."""
    panels = gemm.packed_rows(n) // gemm.MR
    chunk = max(1, POINTWISE_CHUNK // (gemm.MR * min(C, gemm.KC)))
    if threads > max(1, N) and C * P <= 64 * 1024 and panels > 1:
        fblocks = min(panels, -(-threads // N))
        return P, fblocks, -(-panels // fblocks), chunk
    width = max(gemm.NR, POINTWISE_TILE // (C + min(n, 256)) // gemm.NR * gemm.NR)
    count = -(-P // width)
    if threads > 1 and N * count < 4 * threads and N * count % threads:
        count = -(-count // threads) * threads        # whole rounds of the threads
    width = min(P, gemm.packed_cols(-(-P // count)))
    count = -(-P // width)
    fblocks = 1
    if threads > 1 and N * count < 2 * threads:
        fblocks = max(1, min(-(-2 * threads // (N * count)), panels // 4))
    per_block = -(-panels // fblocks)
    return width, fblocks, per_block, chunk


def _conv_pointwise(x: np.ndarray, weights: np.ndarray, out: np.ndarray, tail: Tail,
                    cache: dict | None) -> None:
    # A 1x1 stride-1 conv without padding, as the GEMM W (n, C) @ x (C, H*W) per image,
    # with x read in place and the product written straight into out, the tail applied
    # per tile while it is in cache (kernels.conv_tiles.pointwise)
    N, C, H, W = x.shape
    n = weights.shape[0]
    ap = _packed_weights(weights, cache)[0]
    width, fblocks, per_block, chunk = pointwise_tiles(N, C, n, H * W,
                                                       numba.get_num_threads())
    edge = parallel.scratch("pointwise_edge", (numba.config.NUMBA_NUM_THREADS,
                                               gemm.NR * gemm.KC))
    conv_tiles.pointwise(x, ap, width, fblocks, per_block, chunk, edge, out, tail.mode,
                         tail.mean, tail.inv, tail.scales, tail.biases, tail.code)


def gathered_pays(C: int, n: int, k: int, groups: int, ow: int) -> bool:
    """Whether conv2d's inference runs the conv with the micro-kernel reading the input
    in place (_conv_gathered): k > 1, at least GATHERED_MIN_C channels, a patch depth
    whose B rows the micro-kernel keeps in L1, output rows at least half a micro-tile
    wide. Timed per conv against the packed path on one Zen 3 core (yolov3-tiny, yolov4,
    resnet18 shapes): 1.05-1.5x faster from 8 channels up to 576 values of depth, 0.8-0.9x
    with 3 channels (the product is too short to hide the stores), 0.6-0.9x for 1x1
    convs (their rows, a whole map apart, leave the caches' sets unused)."""
    return (GATHERED and groups == 1 and k > 1 and C >= GATHERED_MIN_C
            and C * k * k <= GATHERED_MAX_K and ow >= gemm.NR // 2)


def _conv_gathered(x: np.ndarray, weights: np.ndarray, sy: int, sx: int, pad: int, d: int,
                   out: np.ndarray, tail: Tail, cache: dict | None) -> None:
    # The conv with no packed copy of its patches: per NR output pixels of a row, the
    # micro-kernel reads each patch element's NR values straight from the zero-padded
    # (phase-split when strided) input and stores into out in place, then the tail runs
    # on the row (kernels.conv_tiles.gathered)
    N = x.shape[0]
    n, C, k, _ = weights.shape
    oh = out.shape[2]
    K = C * k * k
    ap = _packed_weights(weights, cache)[0]
    flat, row_off, pitch, image_stride = _packed_source(x, k, sy, sx, pad, d)
    threads = numba.get_num_threads()
    rows = max(1, -(-N * oh // (4 * threads)))          # about four tasks per thread
    rows = -(-oh // -(-oh // min(rows, oh)))            # ... of even size
    tasks = N * -(-oh // rows)
    panels = gemm.packed_rows(n) // gemm.MR
    fblocks = 1
    if threads > 1 and tasks < 2 * threads:
        fblocks = max(1, min(-(-2 * threads // tasks), panels // 2))
    per_block = -(-panels // fblocks)
    edge = parallel.scratch("gathered_edge", (numba.config.NUMBA_NUM_THREADS,
                                              K * gemm.NR))
    conv_tiles.gathered(flat, row_off, np.arange(K, dtype=np.int64) * gemm.NR, pitch,
                        image_stride, ap, K, rows, fblocks, per_block, edge, out,
                        tail.mode, tail.mean, tail.inv, tail.scales, tail.biases, tail.code)


def conv2d(x: np.ndarray, weights: np.ndarray, *, sy: int = 1, sx: int = 1, pad: int = 0,
           d: int = 1, groups: int = 1, out: np.ndarray | None = None,
           work: np.ndarray | None = None, tail: Tail | None = None,
           cache: dict | None = None, moments: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """x (N, C, H, W), weights (n, C/groups, k, k) -> out (N, n, oh, ow); with `tail`
    (make_tail) the BN/bias and activation are applied too, else the raw product.

    `pad` is the padding applied per side (Darknet AH: padding * dilation). Returns
    (out, work); `work` is kept for the callers' sake and no longer used (patch buffers
    are per thread, kernels.parallel.scratch). The batch's output columns are cut into
    tiles (kernels.parallel tasks): each task gathers its tile's patches, runs one
    single-threaded GEMM and stores the tile with the tail applied. A 1x1 kernel at
    stride 1 without padding reads x directly (P's forward_convolutional_layer also skips
    im2col for strided or padded 1x1 convs, which is wrong there: README, "Deliberate
    differences from Darknet").

    `cache` (a dict the caller keeps between calls) allows Winograd F(2x2, 3x3) for the
    3x3 stride-1 convs where it pays (`winograd_pays`); it holds the transformed filters,
    recomputed whenever the weights change (a fingerprint of their bits is checked).

    `moments` (n, 2) float64 receives each filter's sum and sum of squares of the raw
    output (bn_train.forward's sums), added up tile by tile in a fixed order.
    """
    check_f32("x", x, 4)
    check_f32("weights", weights, 4)
    N, C, H, W = x.shape
    n, cg, k, k2 = weights.shape
    if k != k2 or cg * groups != C or n % groups:
        raise ValueError(f"weights {weights.shape} do not fit x {x.shape} with "
                         f"groups={groups}")
    oh, ow = conv_out_hw(H, W, k, sy, sx, pad, d)
    out = reuse(out, (N, n, oh, ow))
    tail = tail or _raw(n)
    if cache is not None and moments is None and winograd_pays(N, C, n, k, sy, sx, d,
                                                                  groups, oh, ow):
        _conv_winograd(x, weights, pad, out, tail, cache)
        return out, work
    if moments is None and cg == 1 and n == C == groups and oh * ow:
        if ow <= DEPTHWISE_BLOCKED_OW:
            conv_depthwise_blocked(x, weights, sy, sx, pad, d, out, tail.mode, tail.mean,
                                   tail.inv, tail.scales, tail.biases, tail.code,
                                   min(N * -(-C // LANES), 4 * parallel.threads()))
        else:
            conv_depthwise(x, weights, sy, sx, pad, d, out, tail.mode, tail.mean,
                           tail.inv, tail.scales, tail.biases, tail.code,
                           min(N * C, 4 * parallel.threads()))
        return out, work
    plain_1x1 = (k == 1 and sy == 1 and sx == 1 and pad == 0 and groups == 1
                 and moments is None)
    if plain_1x1 and N * H * W < gemm.NR // 2:
        conv_pointwise_few(x.reshape(N, C, H * W), weights.reshape(n, C),
                           out.reshape(N, n, H * W, 1), tail.mode, tail.mean, tail.inv,
                           tail.scales, tail.biases, tail.code)
        return out, work
    if _direct(cg, n, groups):
        conv_direct(x, weights, sy, sx, pad, d, groups, out)
        if moments is not None:
            moments[...] = bn_train.moments(out)
        _apply_tail(out, tail)
        return out, work
    if gemm.ENABLED and moments is None and gathered_pays(C, n, k, groups, ow):
        _conv_gathered(x, weights, sy, sx, pad, d, out, tail, cache)
        return out, work
    if gemm.ENABLED and plain_1x1 and pointwise_pays(C, H * W):
        _conv_pointwise(x, weights, out, tail, cache)
        return out, work
    if gemm.ENABLED and N * oh * ow >= gemm.NR // 2:
        _conv_packed(x, weights, sy, sx, pad, d, oh, ow, out, tail, cache, moments, groups)
        return out, work
    K, m = cg * k * k, n // groups
    w2 = weights.reshape(n, K)
    wg = weights.reshape(groups, m, K)
    src = _Patches(x, k, sy, sx, pad, d, oh, ow, n)
    threads = parallel.threads()
    width, tiles = _column_tiles(src.count, src.rows, threads)
    fblocks = 1
    if groups == 1 and tiles < 2 * threads and n >= 64 and threads > 1:
        # few columns (a small image): split the filters instead, each task reading only
        # its share of the weights
        width, tiles, fblocks = src.count, 1, min(threads, n // 32)
    rows = -(-n // fblocks)
    parts = None if moments is None else np.zeros((tiles, n, 2))

    def task(i: int, _t: int) -> None:
        ti, fi = divmod(i, fblocks)
        j0 = ti * width
        T = min(width, src.count - j0)
        f0, f1 = fi * rows, min(n, (fi + 1) * rows)
        if f0 >= f1:
            return
        cols = src.columns(j0, T)
        acc = parallel.scratch("acc", (f1 - f0, T))
        if groups == 1:
            np.matmul(w2[f0:f1], cols, out=acc)
        else:
            for g in range(groups):
                np.matmul(wg[g], cols[g * K:(g + 1) * K], out=acc[g * m:(g + 1) * m])
        if parts is not None:
            epilogue.store_moments(acc, T, j0, src.pitch, oh, ow, parts[ti, f0:f1])
        epilogue.store(acc, T, out, j0, f0, src.pitch, tail.mode, tail.mean, tail.inv,
                       tail.scales, tail.biases, tail.code)

    parallel.run(task, tiles * fblocks, work=2.0 * n * K * src.count)
    if parts is not None:
        moments[...] = parts[0]
        for ti in range(1, tiles):
            moments += parts[ti]
    return out, work


def deconv_out_hw(h: int, w: int, k: int, s: int, pad: int) -> tuple[int, int]:
    return (h - 1) * s + k - 2 * pad, (w - 1) * s + k - 2 * pad


def deconv2d(x: np.ndarray, weights: np.ndarray, *, s: int = 1, pad: int = 0,
             out: np.ndarray | None = None, work: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Transposed conv: x (N, C, h, w), weights (C, n, k, k) -> out (N, n, OH, OW), no
    bias; OH = (h-1)*s + k - 2*pad. As Darknet P: columns = W^T x, (n*k*k, h*w), then
    col2im into a zeroed output. Returns (out, work) like conv2d."""
    check_f32("x", x, 4)
    check_f32("weights", weights, 4)
    N, C, h, w = x.shape
    c, n, k, k2 = weights.shape
    if k != k2 or c != C:
        raise ValueError(f"weights {weights.shape} do not fit x {x.shape}")
    oh, ow = deconv_out_hw(h, w, k, s, pad)
    out = reuse(out, (N, n, oh, ow))
    out.fill(0.0)
    work = reuse(work, (n * k * k, h * w))
    wt = weights.reshape(C, n * k * k).T
    with parallel.single_threaded_blas():
        for b in range(N):
            np.matmul(wt, x[b].reshape(C, h * w), out=work)
            col2im_add(work, k, s, s, pad, 1, h, w, out[b])
    return out, work


def conv2d_backward(x: np.ndarray, weights: np.ndarray, dy: np.ndarray, dw: np.ndarray, *,
                    sy: int = 1, sx: int = 1, pad: int = 0, d: int = 1, groups: int = 1,
                    need_dx: bool = True, dx: np.ndarray | None = None,
                    work: np.ndarray | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Backward of `conv2d(x, weights, ...)` (same geometry): dy (N, n, oh, ow) is dLoss/d
    out. Accumulates dw (n, C/groups, k, k) += dLoss/dweights (summed over the batch) and
    returns (dx, work): dx (N, C, H, W) = dLoss/dx (None unless need_dx; `dx` is a buffer
    to reuse), `work` the column buffer to pass back next call.

    Per image and group: dW_g += dY_g cols_g^T, dcols_g = W_g^T dY_g, then col2im (the
    transpose of im2col) into dx, as Darknet P's backward_convolutional_layer.
    """
    for name, a, nd in (("x", x, 4), ("weights", weights, 4), ("dy", dy, 4), ("dw", dw, 4)):
        check_f32(name, a, nd)
    N, C, H, W = x.shape
    n, cg, k, _ = weights.shape
    oh, ow = conv_out_hw(H, W, k, sy, sx, pad, d)
    if dy.shape != (N, n, oh, ow) or dw.shape != weights.shape or cg * groups != C:
        raise ValueError(f"conv2d_backward: x {x.shape}, weights {weights.shape}, dy "
                         f"{dy.shape}, dw {dw.shape} do not fit (groups={groups}, out "
                         f"{oh} x {ow})")
    dx = reuse(dx, x.shape) if need_dx else None
    if _direct(cg, n, groups):
        conv_direct_backward_weights(x, dy, sy, sx, pad, d, groups, dw)
        if dx is not None:
            conv_direct_backward_input(dy, weights, sy, sx, pad, d, groups, dx)
        return dx, work
    # dx as a forward conv (below) where that packs fewer values than col2im scatters:
    # its patches are n*k*k per pixel against C*k*k, so with at least as many input
    # channels as filters, and for 1x1 convs (no patches at all)
    flip = (dx is not None and groups == 1 and sy == 1 and sx == 1 and gemm.ENABLED
            and pad <= d * (k - 1) and (n <= C or (k == 1 and pad == 0)))
    _conv_backward_tiles(x, weights, dy, dw, sy, sx, pad, d, groups, oh, ow,
                         None if flip else dx)
    if flip:
        # stride 1: dx is the full correlation of dy with the filters turned 180 degrees
        # and their in/out channels swapped, a forward conv (the packed GEMM with no
        # col2im); the sums run in another order than Darknet's col2im, within rounding
        flipped = np.ascontiguousarray(weights.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        _conv_packed(dy, flipped, 1, 1, d * (k - 1) - pad, d, H, W, dx, _raw(C), None, None)
    return dx, work


# When dW is taken from im2col columns (grouped convs, and fewer than DW_DIRECT_MIN patch
# rows), products with at most this many values go through kernels.gemm.gemm_nt (rows of
# dZ and of the patches dotted directly; its per-value partial sums then stay in L2):
# timed 1.2-2.6x the packed GEMM's speed for 27-144 patch rows, slower from 288 x 128 on.
NT_MAX = 16384
# Ungrouped convs with at least this many patch rows (C*k*k) gather their patches straight
# into packed columns for dW (conv_tiles.backward); fewer (first layers: 9 or 27 rows)
# waste most of a 32-wide panel there, and gemm_nt's row dots are faster (timed: the
# 1->16 3x3 conv of fashion_plain 2.7 -> 1.9 ms, the 3->32 of cifar_small 5.7 -> 5.1 ms).
DW_DIRECT_MIN = 32


def _conv_backward_tiles(x, weights, dy, dw, sy, sx, pad, d, groups, oh, ow, dx) -> None:
    # Tasks are groups of whole images (their dx planes are theirs alone), cut into column
    # tiles; per tile: patches, dW part += dZ cols^T, and for dx: cols = W^T dZ, col2im.
    # Each thread sums its dW parts in its own buffer (static task order), and the buffers
    # are added in thread order: the same numbers every run.
    N = x.shape[0]
    n, cg, k, _ = weights.shape
    K, m = cg * k * k, n // groups
    # dW from gathered patches (below) reads the input through _packed_source: the
    # layout here then only shapes the tiles and dx's col2im
    direct = gemm.ENABLED and groups == 1 and K >= DW_DIRECT_MIN
    src = _Patches(x, k, sy, sx, pad, d, oh, ow, n, fill=not direct)
    per = src.per_image
    width, _ = _column_tiles(src.count, src.rows, 1)
    per_task = max(1, width // per)
    threads = parallel.threads()
    if threads > 1:         # at least two groups per thread when the batch allows
        per_task = max(1, min(per_task, N // (2 * threads)))
    tasks = -(-N // per_task)
    used = min(threads, tasks)
    partial = np.zeros((used, groups, m, K), np.float32)
    wg = weights.reshape(groups, m, K)
    # dx by col2im into a padded copy (cropped per task) unless x itself is the layout
    dxp = None
    if dx is not None and src.xp is not x:
        dxp = parallel.scratch("dxpad", src.xp.shape)
    if gemm.ENABLED:
        # the same tasks in one Numba parallel loop (kernels.conv_tiles.backward)
        layout = (conv_tiles.PLAIN if src.plain else conv_tiles.WIDE if src.wide
                  else conv_tiles.COMPACT)
        nt = m * K <= NT_MAX
        slots = max(1, min(numba.get_num_threads(), tasks))
        partial = np.zeros((slots, groups, m, K), np.float32)
        rows, T = src.rows, min(width, per_task * per)
        target = dxp if dxp is not None else dx if dx is not None else \
            np.empty((0, 0, 0, 0), np.float32)
        chunk = conv_tiles.DW_CHUNK
        if direct:
            flat, row_off, src_pitch, src_stride = _packed_source(x, k, sy, sx, pad, d)
            Kp, nP = gemm.packed_cols(K), gemm.packed_rows(n)
            dwp = np.zeros((slots, nP * Kp), np.float32)
        else:
            flat, row_off, src_pitch, src_stride = conv_tiles.empty(), np.empty(0, np.int64), 0, 0
            Kp = nP = 0
            dwp = np.zeros((slots, 0), np.float32)
        conv_tiles.backward(
            x, src.xp, layout, k, sy, sx, pad, d, oh, ow, src.pitch, dy, wg, width,
            per_task, nt and not direct, partial,
            parallel.scratch("lanes", (slots, m * K * gemm.VW if nt and not direct else 0)),
            parallel.scratch("bcols", (slots, 0 if direct else rows * T)),
            parallel.scratch("bdz", (slots, n * T)),
            parallel.scratch("bdcols", (slots, rows * T if dx is not None else 0)),
            target, dx if dx is not None else x, flat, row_off, src_pitch, src_stride, dwp,
            parallel.scratch("dwa", (slots, nP * chunk)),
            parallel.scratch("dwb", (slots, Kp * chunk)),
            parallel.scratch("dwo", (slots, chunk if direct else 0), np.int64))
        total = partial[0]
        for t in range(1, slots):
            total += partial[t]
        dw += total.reshape(dw.shape)
        return

    def task(i: int, t: int) -> None:
        b0, b1 = i * per_task, min(N, (i + 1) * per_task)
        target = dxp if dxp is not None else dx
        if target is not None:
            target[b0:b1] = 0.0
        mine = partial[t]
        for j0 in range(b0 * per, b1 * per, width):
            T = min(width, b1 * per - j0)
            cols = src.columns(j0, T)
            dz = parallel.scratch("dz", (n, T))
            epilogue.gather(dy, j0, 0, src.pitch, dz)
            for g in range(groups):
                mine[g] += dz[g * m:(g + 1) * m] @ cols[g * K:(g + 1) * K].T
            if target is None:
                continue
            dcols = parallel.scratch("cols", (src.rows, T))
            for g in range(groups):
                np.matmul(wg[g].T, dz[g * m:(g + 1) * m], out=dcols[g * K:(g + 1) * K])
            src.add_columns(dcols, j0, target)
        if dxp is not None:
            crop_input(dxp, pad, b0, b1, dx)

    parallel.run(task, tasks, static=True)
    total = partial[0]
    for t in range(1, used):
        total += partial[t]
    dw += total.reshape(dw.shape)


def deconv2d_backward(x: np.ndarray, weights: np.ndarray, dy: np.ndarray, dw: np.ndarray, *,
                      s: int = 1, pad: int = 0, need_dx: bool = True,
                      dx: np.ndarray | None = None, work: np.ndarray | None = None
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Backward of `deconv2d(x, weights, s=s, pad=pad)`: dy (N, n, OH, OW). The forward's
    col2im has im2col as its transpose, so per image (P backward_deconvolutional_layer):
    dcols = im2col(dy) (n*k*k, h*w); dW (C, n*k*k) += x dcols^T; dx = W dcols.
    Accumulates dw (C, n, k, k); returns (dx or None, work) like conv2d_backward."""
    for name, a in (("x", x), ("weights", weights), ("dy", dy), ("dw", dw)):
        check_f32(name, a, 4)
    N, C, h, w = x.shape
    _, n, k, _ = weights.shape
    oh, ow = deconv_out_hw(h, w, k, s, pad)
    if dy.shape != (N, n, oh, ow) or dw.shape != weights.shape or weights.shape[0] != C:
        raise ValueError(f"deconv2d_backward: x {x.shape}, weights {weights.shape}, dy "
                         f"{dy.shape}, dw {dw.shape} do not fit")
    dx = reuse(dx, x.shape) if need_dx else None
    work = reuse(work, (n * k * k, h * w))
    w2 = weights.reshape(C, n * k * k)
    dw2 = dw.reshape(C, n * k * k)
    part = np.empty_like(dw2)
    with parallel.single_threaded_blas():
        for b in range(N):
            im2col(dy[b], k, s, s, pad, 1, h, w, work)
            xb = x[b].reshape(C, h * w)
            np.matmul(xb, work.T, out=part)
            dw2 += part
            if dx is not None:
                np.matmul(w2, work, out=dx[b].reshape(C, h * w))
    return dx, work
