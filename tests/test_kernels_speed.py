"""The speed paths against the plain ones: the fused conv tail, Winograd F(2x2, 3x3), the
convs reading their input in place (gathered, pointwise), the size-2 stride-2 max pool,
the thread split (deterministic), against tests/naive_conv.py and tests/naive_layers.py."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.kernels import activations as act
from darkcfg.kernels import bn, conv, parallel, pool
from darkcfg.kernels.winograd import filter_transform

from . import naive_conv as naive
from . import naive_layers
from .helpers import rand, rel

REL = 1e-5


@pytest.mark.parametrize("activation", ["leaky", "linear", "logistic", "mish", "swish",
                                        "relu", "tanh", "normalize_channels"])
@pytest.mark.parametrize("batch_normalize", [True, False])
def test_fused_tail_equals_separate_kernels(activation, batch_normalize):
    rng = np.random.default_rng(len(activation))
    x, w = rand(rng, 2, 5, 9, 7), rand(rng, 6, 5, 3, 3)
    p = {"biases": rand(rng, 6), "scales": rand(rng, 6), "mean": rand(rng, 6),
         "variance": rng.uniform(0.5, 2, 6).astype(np.float32)}
    ref, _ = conv.conv2d(x, w, pad=1)
    if batch_normalize:
        bn.bn_inference(ref, p["scales"], p["mean"], p["variance"], p["biases"])
        tail = conv.make_tail(6, p["biases"], p["scales"], p["mean"], p["variance"],
                              activation=activation)
    else:
        bn.add_bias(ref, p["biases"])
        tail = conv.make_tail(6, p["biases"], activation=activation)
    if activation not in act.PER_PIXEL:
        act.activate(ref, activation)
    out, _ = conv.conv2d(x, w, pad=1, tail=tail)
    # the same float operations in the same order: equal to the last bit
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("dialect", ["pjreddie", "alexeyab"])
def test_fused_bn_leaky_store_keeps_special_values(dialect):
    """The packed path's BN + leaky store (one pass, leaky chosen in float32) against
    BN then leaky as separate kernels, bit for bit, on products holding NaN, +-inf,
    +-0, denormals, the smallest and largest floats and values near the BN mean."""
    from darkcfg.kernels import epilogue
    rng = np.random.default_rng(5)
    n, oh, ow = 4, 6, 10
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-39,
                        -1e-39, 1.2e-38, -1.2e-38, 3.4e38, -3.4e38, 1e-30, -1e-30,
                        0.5, -0.5], np.float32)
    acc = rand(rng, n, oh * ow)
    acc[:, :special.size] = special
    mean = np.array([0.0, 0.5, -0.5, 1e-30], np.float32)
    scales = np.array([1.0, 2.0, -1.5, 1e-3], np.float32)
    biases = np.array([0.0, -0.25, 0.1, 0.0], np.float32)
    variance = np.array([1.0, 0.25, 4.0, 1e-6], np.float32)
    tail = conv.make_tail(n, biases, scales, mean, variance, dialect, "leaky")
    out = np.full((1, n, oh, ow), 7.0, np.float32)
    epilogue.store(acc, oh * ow, out, 0, 0, ow, tail.mode, tail.mean, tail.inv,
                   tail.scales, tail.biases, tail.code)
    ref = acc.reshape(1, n, oh, ow).copy()
    bn.bn_inference(ref, scales, mean, variance, biases, dialect)
    act.activate(ref, "leaky")
    assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))


# (N, C, H, W, filters, pad)
WINOGRAD_CASES = [
    (1, 64, 9, 11, 64, 1),      # odd sizes: a half tile at the right and bottom
    (2, 64, 8, 8, 80, 1),       # batch 2: tiles of two images in one task
    (1, 96, 13, 13, 128, 1),    # yolov3-tiny's 13 x 13
    (1, 64, 13, 12, 64, 0),     # no padding
    (3, 64, 5, 9, 72, 2),       # padding 2
]


@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=str)
def test_winograd_matches_naive(case, monkeypatch):
    monkeypatch.setattr(conv, "WINOGRAD_MIN_TILES", 1)       # small test images
    N, C, H, W, n, pad = case
    rng = np.random.default_rng(sum(case))
    x, w = rand(rng, N, C, H, W), rand(rng, n, C, 3, 3)
    assert conv.winograd_pays(N, C, n, 3, 1, 1, 1, 1, H + 2 * pad - 2, W + 2 * pad - 2)
    cache: dict = {}
    out, _ = conv.conv2d(x, w, pad=pad, cache=cache)
    assert "U" in cache
    assert rel(out, naive.conv2d(x, w, 1, 1, pad, 1, 1)) <= REL
    # weights redrawn in place: the cached transform is noticed stale and redone
    w[...] = rand(rng, n, C, 3, 3)
    out, _ = conv.conv2d(x, w, pad=pad, cache=cache)
    assert rel(out, naive.conv2d(x, w, 1, 1, pad, 1, 1)) <= REL


# (N, C, H, W, filters, k, stride, pad, dilation)
GATHERED_CASES = [
    (1, 8, 20, 37, 13, 3, 1, 1, 1),     # rows not whole micro-tiles, filters not whole panels
    (2, 16, 17, 23, 32, 3, 2, 1, 1),    # strided (phase-split input), batch 2
    (1, 12, 8, 37, 6, 3, 1, 0, 1),      # no padding: the last pixel groups would read past x
    (3, 8, 16, 16, 9, 3, 1, 2, 2),      # dilation, batch 3
    (1, 9, 15, 15, 8, 5, 2, 2, 1),      # 5 x 5, stride 2
    (1, 64, 20, 20, 7, 3, 2, 1, 1),     # the deepest patches taken (576)
]


def _tail(rng, n, activation):
    return conv.make_tail(n, rand(rng, n), rand(rng, n), rand(rng, n),
                          rng.uniform(0.5, 2, n).astype(np.float32), activation=activation)


def _spy(monkeypatch, name):
    from darkcfg.kernels import conv_tiles
    calls = []
    kernel = getattr(conv_tiles, name)
    monkeypatch.setattr(conv_tiles, name, lambda *a: (calls.append(1), kernel(*a)))
    return calls


@pytest.mark.parametrize("activation", ["leaky", "mish"])
@pytest.mark.parametrize("case", GATHERED_CASES, ids=str)
def test_gathered_conv_matches_naive(case, activation, monkeypatch):
    # the micro-kernel reading the input in place, masked stores at the rows' ends and
    # past the last filter: the raw product against the naive loop, and with the tail
    # against the packed path's
    N, C, H, W, n, k, s, pad, d = case
    rng = np.random.default_rng(sum(case))
    x, w = rand(rng, N, C, H, W), rand(rng, n, C, k, k)
    ow = conv.conv_out_hw(H, W, k, s, s, pad, d)[1]
    assert conv.gathered_pays(C, n, k, 1, ow)
    calls = _spy(monkeypatch, "gathered")
    out, _ = conv.conv2d(x, w, sy=s, sx=s, pad=pad, d=d)
    assert rel(out, naive.conv2d(x, w, s, s, pad, d, 1)) <= REL
    tail = _tail(rng, n, activation)
    out, _ = conv.conv2d(x, w, sy=s, sx=s, pad=pad, d=d, tail=tail)
    assert len(calls) == 2
    monkeypatch.setattr(conv, "GATHERED", False)
    ref, _ = conv.conv2d(x, w, sy=s, sx=s, pad=pad, d=d, tail=tail)
    assert len(calls) == 2 and rel(out, ref) <= 1e-6


# (N, C, H, W, filters)
POINTWISE_CASES = [
    (1, 96, 5, 7, 13),      # pixels and filters not whole micro-tiles
    (2, 128, 9, 9, 255),    # batch 2, a yolo head's 255 filters
    (1, 300, 4, 4, 7),      # deeper than a KC block: the sum in two blocks
    (3, 16, 10, 10, 20),    # few channels on a small map
    (1, 16, 96, 100, 24),   # few channels on a map of more than 8k pixels
]


@pytest.mark.parametrize("case", POINTWISE_CASES, ids=str)
def test_pointwise_conv_matches_naive(case, monkeypatch):
    N, C, H, W, n = case
    rng = np.random.default_rng(sum(case))
    x, w = rand(rng, N, C, H, W), rand(rng, n, C, 1, 1)
    assert conv.pointwise_pays(C, H * W)
    calls = _spy(monkeypatch, "pointwise")
    out, _ = conv.conv2d(x, w)
    assert rel(out, naive.conv2d(x, w, 1, 1, 0, 1, 1)) <= REL
    tail = _tail(rng, n, "leaky")
    out, _ = conv.conv2d(x, w, tail=tail)
    assert len(calls) == 2
    monkeypatch.setattr(conv, "POINTWISE", False)
    ref, _ = conv.conv2d(x, w, tail=tail)
    assert len(calls) == 2 and rel(out, ref) <= 1e-6


def test_filter_transform_of_a_delta_kernel():
    # g = centre tap 1: G g G^T = outer(G[:, 1], G[:, 1])
    w = np.zeros((1, 1, 3, 3), np.float32)
    w[0, 0, 1, 1] = 1
    col = np.array([0, 0.5, -0.5, 0])
    assert np.array_equal(filter_transform(w).reshape(4, 4), np.outer(col, col))


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 4, 7, 9), (2, 2, 5, 6), (1, 1, 2, 3)])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("stride", [1, 2])
def test_maxpool_2x2_matches_naive(shape, padding, stride):
    rng = np.random.default_rng(sum(shape) + padding)
    x = rand(rng, *shape)
    x.flat[::7] = -np.inf                    # -FLT_MAX start: -inf never wins
    x.flat[5::13] = x.flat[4::13][:x.flat[5::13].size]      # ties: the first one wins
    out, arg = pool.maxpool(x, 2, stride, stride, padding)
    ref, ref_arg = naive_layers.maxpool(x, 2, stride, stride, padding)
    assert np.array_equal(out, ref) and np.array_equal(arg, ref_arg)
    out2, none = pool.maxpool(x, 2, stride, stride, padding, want_arg=False)
    assert none is None and np.array_equal(out2, ref)
    # NaN (strict >: never wins), against the general kernel's Darknet order
    x.flat[3::11] = np.nan
    out, arg = pool.maxpool(x, 2, stride, stride, padding)
    ref, ref_arg = np.empty_like(out), np.empty_like(arg)
    pool._maxpool(x, 2, stride, stride, padding, ref, ref_arg, True)
    assert np.array_equal(out, ref) and np.array_equal(arg, ref_arg)
    out2, _ = pool.maxpool(x, 2, stride, stride, padding, want_arg=False)
    assert np.array_equal(out2, ref)
    # signed zeros: the first maximum in Darknet's order, sign included
    x[...] = np.where(rng.random(x.shape) < 0.5, np.float32(-0.0), np.float32(0.0))
    pool._maxpool(x, 2, stride, stride, padding, ref, ref_arg, True)
    out2, _ = pool.maxpool(x, 2, stride, stride, padding, want_arg=False)
    assert np.array_equal(np.signbit(out2), np.signbit(ref))


def test_thread_split_is_deterministic(monkeypatch):
    # forward tiles and backward partial sums: the same bits every run
    monkeypatch.setattr(parallel, "SMALL_WORK", 0)      # split even this small conv
    rng = np.random.default_rng(7)
    x, w = rand(rng, 9, 6, 12, 10), rand(rng, 8, 6, 3, 3)
    outs, dws, dxs = [], [], []
    for _ in range(3):
        out, _ = conv.conv2d(x, w, pad=1)
        dw = np.zeros_like(w)
        dx, _ = conv.conv2d_backward(x, w, out, dw, pad=1)
        outs.append(out.copy())
        dws.append(dw)
        dxs.append(dx.copy())
    for a, b, c in zip(outs, dws, dxs):
        assert np.array_equal(a, outs[0]) and np.array_equal(b, dws[0])
        assert np.array_equal(c, dxs[0])
    ref_dw, ref_dx = naive.conv2d_backward(x, w, outs[0], 1, 1, 1, 1, 1)
    assert rel(dws[0], ref_dw) <= REL and rel(dxs[0], ref_dx) <= REL


@pytest.mark.parametrize("static", [False, True])
def test_run_calls_every_task_once(static):
    seen = []
    used = parallel.run(lambda i, t: seen.append((i, t)), 11, static=static)
    assert sorted(i for i, _ in seen) == list(range(11))
    assert 1 <= used <= max(1, parallel.threads())
    if static:
        assert all(t == i % used for i, t in seen)


def test_scratch_grows_and_is_reused():
    a = parallel.scratch("test", (3, 4))
    b = parallel.scratch("test", (2, 5))
    assert a.shape == (3, 4) and b.shape == (2, 5)
    assert np.shares_memory(a, b)
    c = parallel.scratch("test", (10, 10))
    assert c.shape == (10, 10)
    # Winograd's 16 planes start 5 cache sets (of 64-byte lines) apart
    for values in (64, 1024, 4096 * 3, 7777):
        step = conv._plane_stride(values)
        assert step >= values and (step // 16) % 64 == 5


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 4, 7, 9), (2, 2, 5, 6)])
@pytest.mark.parametrize("padding", [0, 1])
def test_maxpool_2x2_backward_matches_scatter(shape, padding):
    rng = np.random.default_rng(sum(shape) * 3 + padding)
    x = rand(rng, *shape)
    out, arg = pool.maxpool(x, 2, 2, 2, padding)
    dy = rand(rng, *out.shape)
    ref = pool.maxpool_backward(dy, arg, shape[1:])
    buf = np.full(x.shape, np.nan, np.float32)      # every cell must be written
    assert np.array_equal(pool.maxpool_backward_into(dy, arg, shape[1:], buf), ref)


@pytest.mark.parametrize("activation", ["leaky", "relu", "logistic", "linear"])
@pytest.mark.parametrize("batch_normalize", [True, False])
def test_fused_bn_gradient_equals_separate_kernels(activation, batch_normalize):
    from darkcfg.kernels import bn_train
    rng = np.random.default_rng(11)
    z = rand(rng, 4, 5, 3, 3)
    scales = rng.uniform(0.5, 1.5, 5).astype(np.float32)
    y, xhat = z.copy(), np.empty_like(z)
    _, var = bn_train.forward(y, scales, None, np.zeros(5, np.float32),
                              np.ones(5, np.float32), "pjreddie", xhat)
    act.activate(y, activation)
    dy = rand(rng, *z.shape)
    ref = dy.copy()
    act.gradient(ref, y, None, activation)
    g1 = [np.zeros(5, np.float32), np.zeros(5, np.float32)]
    g2 = [np.zeros(5, np.float32), np.zeros(5, np.float32)]
    out = np.empty_like(dy)
    if batch_normalize:
        bn_train.backward(ref, xhat, scales, var, "pjreddie", *g1)
        got = bn_train.backward(dy, xhat, scales, var, "pjreddie", *g2, y=y,
                                activation=activation, out=out)
    else:
        bn_train.bias_grad(ref, g1[1])
        got = bn_train.bias_grad(dy, g2[1], y=y, activation=activation, out=out)
    assert got is out
    assert rel(out, ref) <= 1e-6 and rel(g2[1], g1[1]) <= 1e-6
    assert rel(g2[0], g1[0]) <= 1e-6


def test_bn_statistics_from_conv_moments():
    from darkcfg.kernels import bn_train
    rng = np.random.default_rng(12)
    x, w = rand(rng, 6, 3, 9, 8) + 2.0, rand(rng, 7, 3, 3, 3)
    moments = np.empty((7, 2))
    z, _ = conv.conv2d(x, w, pad=1, moments=moments)
    z64 = z.astype(np.float64)
    assert np.allclose(moments[:, 0], z64.sum(axis=(0, 2, 3)), rtol=1e-12)
    assert np.allclose(moments[:, 1], (z64 ** 2).sum(axis=(0, 2, 3)), rtol=1e-12)
    ref_mean, ref_var = np.empty(7, np.float32), np.empty(7, np.float32)
    bn_train._stats(z.reshape(6, 7, -1), ref_mean, ref_var)
    one = np.ones(7, np.float32)
    mean, var = bn_train.forward(z.copy(), one, None, np.zeros(7, np.float32), one.copy(),
                                 "pjreddie", np.empty_like(z), moments)
    assert rel(mean, ref_mean) <= 1e-6 and rel(var, ref_var) <= 1e-6


# (N, C, H, W, k, stride_y, stride_x, pad applied, dilation)
DEPTHWISE_CASES = [
    (1, 8, 13, 11, 3, 1, 1, 1, 1),      # odd sizes, stride 1
    (2, 5, 14, 14, 5, 2, 2, 2, 1),      # efficientnet's 5x5 stride 2, batch 2
    (1, 4, 9, 16, 3, 2, 1, 0, 2),       # anisotropic stride, dilated, no padding
    (1, 6, 12, 12, 3, 3, 3, 1, 1),      # stride 3: nine phase planes
    (1, 3, 1, 1, 3, 1, 1, 1, 1),        # a 1x1 map: one tap inside the padding's zeros
    (1, 2, 70, 40, 3, 1, 1, 1, 1),      # more output rows than one block of sums
    # outputs at most conv.DEPTHWISE_BLOCKED_OW wide run in channel blocks of 8:
    (1, 13, 7, 7, 5, 1, 1, 2, 1),       # 13 channels: a block and a part of one
    (2, 19, 14, 14, 5, 2, 2, 2, 1),     # strided, batch 2, three blocks
    (1, 16, 9, 11, 3, 1, 1, 2, 2),      # dilated, four pixels and a rest per row
    (1, 9, 40, 36, 3, 2, 2, 1, 1),      # 18 wide: plane by plane, strided
]


def test_depthwise_cases_cover_both_paths():
    wide = [conv.conv_out_hw(H, W, k, sy, sx, pad, d)[1] > conv.DEPTHWISE_BLOCKED_OW
            for _, _, H, W, k, sy, sx, pad, d in DEPTHWISE_CASES]
    assert any(wide) and not all(wide)


@pytest.mark.parametrize("activation", ["swish", "leaky", "logistic"])
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=str)
def test_depthwise_conv_with_its_tail_equals_separate_kernels(case, activation):
    # conv_depthwise: the phase planes against the naive loop (raw), and the fused BN or
    # bias + activation bit for bit against the separate kernels on conv_direct's product
    from darkcfg.kernels.direct import conv_direct
    N, C, H, W, k, sy, sx, pad, d = case
    rng = np.random.default_rng(sum(case))
    x, w = rand(rng, N, C, H, W), rand(rng, C, 1, k, k)
    out, _ = conv.conv2d(x, w, sy=sy, sx=sx, pad=pad, d=d, groups=C)
    assert rel(out, naive.conv2d(x, w, sy, sx, pad, d, C)) <= REL
    direct = np.empty_like(out)
    conv_direct(x, w, sy, sx, pad, d, C, direct)
    assert np.array_equal(out, direct)        # the same terms in the same order
    for batch_normalize in (True, False):
        p = {"biases": rand(rng, C), "scales": rand(rng, C), "mean": rand(rng, C),
             "variance": rng.uniform(0.5, 2, C).astype(np.float32)}
        ref = direct.copy()
        if batch_normalize:
            bn.bn_inference(ref, p["scales"], p["mean"], p["variance"], p["biases"])
            tail = conv.make_tail(C, p["biases"], p["scales"], p["mean"], p["variance"],
                                  activation=activation)
        else:
            bn.add_bias(ref, p["biases"])
            tail = conv.make_tail(C, p["biases"], activation=activation)
        act.activate(ref, activation)
        got, _ = conv.conv2d(x, w, sy=sy, sx=sx, pad=pad, d=d, groups=C, tail=tail)
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("activation", ["logistic", "swish", "linear"])
@pytest.mark.parametrize("shape", [(1, 960, 1, 1, 64), (3, 24, 1, 1, 384), (1, 40, 1, 2, 7)],
                         ids=str)
def test_pointwise_conv_on_a_few_pixels_matches_naive(shape, activation):
    # the squeeze-excitation products (a 1x1 conv on a 1x1 map) with their tail
    N, C, H, W, n = shape
    rng = np.random.default_rng(C + n)
    x, w = rand(rng, N, C, H, W), rand(rng, n, C, 1, 1)
    out, _ = conv.conv2d(x, w)
    assert rel(out, naive.conv2d(x, w, 1, 1, 0, 1, 1)) <= REL
    biases = rand(rng, n)
    ref = naive.conv2d(x, w, 1, 1, 0, 1, 1).astype(np.float32)
    bn.add_bias(ref, biases)
    got, _ = conv.conv2d(x, w, tail=conv.make_tail(n, biases, activation=activation))
    assert rel(got, naive.activate(ref, activation)) <= REL


@pytest.mark.parametrize("shape", [(1, 40, 7, 9, 50), (2, 112, 5, 5, 40), (1, 96, 12, 12, 30)],
                         ids=str)
def test_pointwise_plans_for_any_thread_count_give_the_same_bits(shape, monkeypatch):
    # the tile plans (pixel tiles, filter blocks, the whole image split by filters when
    # it is small and there are fewer images than threads) change who computes what,
    # never an output's terms or their order
    N, C, H, W, n = shape
    rng = np.random.default_rng(C)
    x, w = rand(rng, N, C, H, W), rand(rng, n, C, 1, 1)
    tail = _tail(rng, n, "leaky")
    plan = conv.pointwise_tiles
    outs = []
    for threads in (1, 2, 3, 4):
        monkeypatch.setattr(conv, "pointwise_tiles",
                            lambda N_, C_, n_, P_, _t, k=threads: plan(N_, C_, n_, P_, k))
        outs.append(conv.conv2d(x, w, tail=tail)[0].copy())
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])
    raw, _ = conv.conv2d(x, w)
    assert rel(raw, naive.conv2d(x, w, 1, 1, 0, 1, 1)) <= REL
    if N == 1:
        width, fblocks, _, _ = plan(N, C, n, H * W, 2)
        assert (width, fblocks) == (H * W, 2)        # whole image, filters halved


@pytest.mark.parametrize("shape,pad,sy,sx", [
    ((1, 3, 9, 10), 1, 2, 2), ((2, 4, 17, 9), 3, 4, 4), ((1, 2, 8, 11), 0, 2, 3),
    ((1, 5, 7, 5), 4, 2, 2), ((1, 2, 5, 5), 6, 2, 2), ((3, 2, 33, 30), 2, 3, 1),
    ((1, 64, 20, 22), 1, 2, 2)])        # the last one on the parallel twin
def test_pad_phases_equals_pad_then_stride_slices(shape, pad, sy, sx):
    """The strided convs' source: padded pixel (i, j) of every plane at row i // sy,
    phase (i % sy, j % sx), column j // sx, zeros past the padded input."""
    from darkcfg.kernels.im2col import pad_phases
    x = rand(np.random.default_rng(sum(shape) + pad), *shape)
    n, c, h, w = shape
    hq, wq = -(-(h + 2 * pad) // sy), -(-(w + 2 * pad) // sx)
    out = np.full((n, c, hq, sy, sx, wq), np.nan, np.float32)
    pad_phases(x, pad, sy, sx, out)
    big = np.zeros((n, c, hq * sy, wq * sx), np.float32)
    big[:, :, pad:pad + h, pad:pad + w] = x
    for py in range(sy):
        for px in range(sx):
            np.testing.assert_array_equal(out[:, :, :, py, px], big[:, :, py::sy, px::sx])


@pytest.mark.parametrize("shape,stride,scale", [
    ((1, 3, 5, 7), 2, 1.0), ((2, 2, 4, 3), 3, 0.5), ((1, 1, 2, 2), 4, -2.0),
    ((1, 4, 3, 5), 1, 1.5), ((1, 70, 13, 13), 2, 1.0)])     # the last on the parallel twin
def test_upsample_equals_repeat(shape, stride, scale):
    """[upsample]: each cell an s x s block times scale (NaN and inf carried), the same
    through a kept buffer on the second call."""
    from darkcfg.kernels.resample import upsample
    x = rand(np.random.default_rng(stride + len(shape)), *shape)
    x.flat[::5] = np.nan
    x.flat[1::7] = np.inf
    want = np.float32(scale) * x.repeat(stride, axis=2).repeat(stride, axis=3)
    out = upsample(x, stride, scale)
    np.testing.assert_array_equal(out, want)
    again = upsample(x[:, ::-1].copy(), stride, scale, out=out)
    assert again is out
    np.testing.assert_array_equal(out, want[:, ::-1])
