"""Pool, softmax, shortcut, reorg, upsample, LRN, l2norm and crop kernels against the slow
references in naive_layers.py, on random shapes; the layer forwards that no Darknet reference
case covers (AH options, training-mode dropout and crop) on small cfgs."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from darkcfg.kernels import normalize, pool, reorg, resample, shortcut, softmax
from darkcfg.network import Network

from . import naive_layers as naive
from .helpers import tiny_net

RTOL = 1e-5


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(-1, 1, shape).astype(np.float32)


def close(ours: np.ndarray, ref: np.ndarray, rtol: float = RTOL) -> None:
    """max|ours - ref| <= rtol * max|ref|, with NaN required exactly where ref has NaN."""
    ref = np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(ours), nan)
    ours, ref = ours[~nan], ref[~nan]
    scale = max(np.abs(ref).max(initial=0.0), 1e-6)
    assert np.abs(ours - ref).max(initial=0.0) <= rtol * scale


# --- pooling -----------------------------------------------------------------------------
POOLS = [(size, sy, sx, pad) for size, sy, sx in itertools.product((1, 2, 3, 5), (1, 2, 3),
                                                                    (1, 2, 3))
         for pad in sorted({0, 1, 2, size - 1, size + 1})]


@pytest.mark.parametrize("size,sy,sx,pad", POOLS)
def test_maxpool_every_geometry(size, sy, sx, pad):
    rng = np.random.default_rng(size * 100 + sy * 10 + sx + pad * 1000)
    x = rand(rng, 2, 3, 7, 8)
    out, arg = pool.maxpool(x, size, sy, sx, pad)
    ref, ref_arg = naive.maxpool(x, size, sy, sx, pad)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(arg, ref_arg)


@pytest.mark.parametrize("size,pad", [(3, 2), (5, 4), (9, 8), (13, 12), (3, 0), (5, 1),
                                      (5, 7), (4, 3), (2, 1), (2, 0), (2, 3), (7, 6),
                                      (16, 15)])
@pytest.mark.parametrize("shape", [(2, 3, 7, 8), (1, 8, 26, 24), (3, 5, 13, 13),
                                   (1, 2, 2, 9)])     # serial, parallel
def test_maxpool_stride1_without_argmax_separable(size, pad, shape):
    """The inference path at stride 1 (SPP's 5/9/13 windows, yolov3-tiny's 2 x 2) takes
    rows, then columns, in log steps: the same maxima as Darknet's cell-by-cell window,
    with -inf, NaN and ties, windows wider than the map and wholly in the padding."""
    if min(shape[2:]) + pad < size:
        pytest.skip("the window does not fit the padded map (maxpool refuses it)")
    rng = np.random.default_rng(size * 10 + pad)
    x = rand(rng, *shape)
    x.flat[::7] = -np.inf
    x.flat[5::13] = x.flat[4::13][:x.flat[5::13].size]
    out, none = pool.maxpool(x, size, 1, 1, pad, want_arg=False)
    ref, _ = naive.maxpool(x, size, 1, 1, pad)
    assert none is None
    np.testing.assert_array_equal(out, ref)
    # NaN (strict >: never wins), against the cell-by-cell kernel in Darknet's order
    x.flat[2::11] = np.nan
    out, _ = pool.maxpool(x, size, 1, 1, pad, want_arg=False)
    ref = np.empty_like(out)
    pool._maxpool(x, size, 1, 1, pad, ref, np.zeros((1, 1, 1, 1), np.int32), False)
    np.testing.assert_array_equal(out, ref)


def test_maxpool_window_in_padding_gives_minus_flt_max():
    # padding 6 with size 2: the first window lies wholly left of / above the image
    out, arg = pool.maxpool(np.ones((1, 1, 3, 3), np.float32), 2, 1, 1, 6)
    assert out[0, 0, 0, 0] == -naive.FLT_MAX and arg[0, 0, 0, 0] == -1
    assert out.shape == (1, 1, 8, 8)


def test_maxpool_ties_take_the_first():
    x = np.zeros((1, 1, 2, 2), np.float32)
    _, arg = pool.maxpool(x, 2, 2, 2, 0)
    assert arg[0, 0, 0, 0] == 0


@pytest.mark.parametrize("size,sy,sx,pad", POOLS[::3])
@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_local_avgpool_every_geometry(size, sy, sx, pad):
    # a window wholly in the padding averages no cells: 0/0 = NaN, as in AH
    rng = np.random.default_rng(7 + size + pad)
    x = rand(rng, 2, 3, 6, 9)
    close(pool.local_avgpool(x, size, sy, sx, pad), naive.local_avgpool(x, size, sy, sx, pad))


@pytest.mark.parametrize("c,out_c", [(6, 1), (6, 2), (6, 4), (5, 3), (3, 3)])
def test_maxpool_depth(c, out_c):
    x = rand(np.random.default_rng(c * out_c), 2, c, 4, 5)
    out, arg = pool.maxpool_depth(x, out_c)
    np.testing.assert_array_equal(out, naive.maxpool_depth(x, out_c))
    flat = x.reshape(2, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, arg.reshape(2, -1), 1),
                                  out.reshape(2, -1))


def test_global_avgpool():
    x = rand(np.random.default_rng(3), 2, 5, 7, 3)
    close(pool.global_avgpool(x), naive.global_avgpool(x))


# --- softmax -----------------------------------------------------------------------------
@pytest.mark.parametrize("groups,temperature", [(1, 1.0), (1, 3.0), (4, 1.0), (12, 0.5),
                                                (60, 2.0), (5, 1.0)])
def test_softmax_groups(groups, temperature):
    x = rand(np.random.default_rng(groups), 2, 4, 3, 5) * 10
    out = softmax.softmax_groups(x, groups, temperature)
    close(out, naive.softmax_chunks(x, groups, temperature))
    assert out.shape == x.shape


def test_softmax_middle_axis_slice():
    # [region]: softmax over entries lo..hi-1 with stride S, the rest untouched
    x = rand(np.random.default_rng(1), 3, 9, 7) * 5
    y = softmax.softmax_(x.copy(), 4, 9)
    np.testing.assert_array_equal(y[:, :4], x[:, :4])
    ref = naive.softmax_chunks(np.ascontiguousarray(x[:, 4:].transpose(0, 2, 1)).reshape(21, 5),
                               1, 1.0).reshape(3, 7, 5).transpose(0, 2, 1)
    close(y[:, 4:], ref)


def test_softmax_rejects_groups_not_dividing():
    with pytest.raises(ValueError, match="groups=7"):
        softmax.softmax_groups(np.zeros((1, 4, 2, 2), np.float32), 7)


# --- shortcut ----------------------------------------------------------------------------
SHORTCUTS = [((4, 6, 6), (4, 6, 6)), ((4, 6, 6), (7, 6, 6)), ((7, 6, 6), (4, 6, 6)),
             ((3, 4, 4), (5, 8, 8)), ((5, 8, 8), (3, 4, 4)), ((2, 3, 3), (2, 9, 9)),
             ((6, 9, 9), (6, 3, 3)), ((4, 6, 4), (2, 12, 8))]


@pytest.mark.parametrize("xs,adds", SHORTCUTS)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (-1.0, 0.25)])
def test_shortcut_mix(xs, adds, alpha, beta):
    rng = np.random.default_rng(sum(xs) + sum(adds))
    x, add = rand(rng, 2, *xs), rand(rng, 2, *adds)
    out, done = shortcut.shortcut_mix(x, add, alpha, beta)
    assert done
    close(out, naive.shortcut_p(x, add, alpha, beta))


@pytest.mark.parametrize("xs,adds", SHORTCUTS[:3])
@pytest.mark.parametrize("activation", ["leaky", "relu", "logistic"])
def test_shortcut_mix_with_activation(xs, adds, activation):
    # leaky and relu are fused into the sum when the shapes agree; otherwise the caller
    # is told to apply the activation itself
    rng = np.random.default_rng(sum(xs) + sum(adds))
    x, add = rand(rng, 2, *xs), rand(rng, 2, *adds)
    out, done = shortcut.shortcut_mix(x, add, 0.5, 2.0, activation=activation)
    assert done == (xs == adds and activation != "logistic")
    s = naive.shortcut_p(x, add, 0.5, 2.0)
    want = {"leaky": np.where(s > 0, s, np.float32(0.1) * s), "relu": np.maximum(s, 0),
            "logistic": 1 / (1 + np.exp(-s))}[activation] if done else s
    close(out, want)


@pytest.mark.parametrize("xs,adds", SHORTCUTS)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (-1.0, 0.25)])
def test_shortcut_mix_backward_is_the_transpose(xs, adds, alpha, beta):
    # the mix is linear in (x, add): <g, mix(x, add)> = <dx, x> + <dadd, add>
    rng = np.random.default_rng(sum(xs) * 3 + sum(adds))
    x, add, g = rand(rng, 2, *xs), rand(rng, 2, *adds), rand(rng, 2, *xs)
    out, _ = shortcut.shortcut_mix(x, add, alpha, beta)
    dx, dadd = shortcut.shortcut_mix_backward(g.copy(), add.shape, alpha, beta)
    assert dx.shape == x.shape and dadd.shape == add.shape
    f64 = np.float64
    lhs = np.sum(g.astype(f64) * out)
    rhs = np.sum(dx.astype(f64) * x) + np.sum(dadd.astype(f64) * add)
    assert abs(lhs - rhs) <= 1e-5 * max(1.0, abs(lhs))


def test_shortcut_mix_rejects_non_integer_factor():
    with pytest.raises(ValueError, match="integer factor"):
        shortcut.shortcut_mix(np.zeros((1, 2, 6, 6), np.float32),
                              np.zeros((1, 2, 4, 4), np.float32))


def test_shortcut_flat_sum_of_several():
    rng = np.random.default_rng(5)
    x = rand(rng, 2, 4, 3, 3)
    adds = [rand(rng, 2, 4, 3, 3), rand(rng, 2, 2, 3, 3), rand(rng, 2, 6, 3, 3)]
    close(shortcut.shortcut_sum(x, adds), naive.shortcut_flat(x, adds))


# --- reorg -------------------------------------------------------------------------------
@pytest.mark.parametrize("c,h,w,s", [(4, 6, 8, 2), (8, 4, 4, 2), (9, 6, 3, 3), (16, 2, 4, 2),
                                     (4, 3, 5, 1)])
@pytest.mark.parametrize("forward", [False, True])
def test_reorg_permutation(c, h, w, s, forward):
    x = rand(np.random.default_rng(c + h + w), 2, c, h, w)
    np.testing.assert_array_equal(reorg.reorg_permute(x, w, h, c, s, forward),
                                  naive.reorg_formula(x, w, h, c, s, forward))


@pytest.mark.parametrize("c,h,w,s", [(4, 6, 8, 2), (16, 4, 4, 2), (9, 6, 3, 3)])
def test_reorg_darknet_reverse_is_depth_to_space_but_does_not_undo_forward(c, h, w, s):
    # P's reverse [reorg] is a true depth-to-space; its forward [reorg] is not the matching
    # space-to-depth, so reverse after forward is not the identity (in Darknet too: case
    # `upsample_reorg`, layer 8 is a permutation of layer 6, not a copy)
    x = rand(np.random.default_rng(c * h), 1, c, h, w)
    y = naive.space_to_depth(x, s)
    np.testing.assert_array_equal(reorg.reorg_darknet(y, s, reverse=True).reshape(x.shape), x)
    fwd = reorg.reorg_darknet(x, s, reverse=False).reshape(y.shape)
    assert not np.array_equal(fwd, y)


@pytest.mark.parametrize("c,h,w,s", [(3, 4, 6, 2), (2, 6, 9, 3), (5, 2, 2, 1)])
def test_space_to_depth_and_back(c, h, w, s):
    x = rand(np.random.default_rng(c + s), 2, c, h, w)
    y = reorg.space_to_depth(x, s)
    np.testing.assert_array_equal(y, naive.space_to_depth(x, s))
    np.testing.assert_array_equal(reorg.depth_to_space(y, s), x)


def test_reorg_rejects_channels_not_divisible():
    with pytest.raises(ValueError, match="divisible by 4"):
        reorg.reorg_permute(np.zeros((1, 6 * 4 * 4), np.float32), 4, 4, 6, 2, False)


# --- upsample, LRN, l2norm, crop ---------------------------------------------------------
@pytest.mark.parametrize("s,scale", [(1, 1.0), (2, 1.0), (3, 0.5), (4, -2.0)])
def test_upsample(s, scale):
    x = rand(np.random.default_rng(s), 2, 3, 4, 5)
    close(resample.upsample(x, s, scale), naive.upsample(x, s, scale))


@pytest.mark.parametrize("s,scale", [(1, 1.0), (2, 0.25), (3, 1.5)])
def test_downsample_sum(s, scale):
    x = rand(np.random.default_rng(s + 10), 2, 3, 3 * s, 4 * s)
    close(resample.downsample_sum(x, s, scale), naive.downsample_sum(x, s, scale))


@pytest.mark.parametrize("c,size", [(8, 5), (8, 1), (8, 2), (3, 5), (10, 7), (2, 9), (6, 4)])
def test_lrn_darknet_window(c, size):
    x = rand(np.random.default_rng(c * size), 2, c, 3, 4)
    close(normalize.lrn(x, size, 0.1, 0.75, 1.5), naive.lrn(x, size, 0.1, 0.75, 1.5))


def test_l2norm():
    x = rand(np.random.default_rng(11), 2, 6, 3, 5)
    close(normalize.l2norm(x), naive.l2norm(x))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("top,left", [(0, 0), (1, 2), (3, 4)])
def test_crop(flip, top, left):
    x = rand(np.random.default_rng(top + left), 2, 3, 7, 9)
    close(resample.crop(x, top, left, 4, 5, flip, 2.0, -1.0),
          naive.crop(x, top, left, 4, 5, flip, 2.0, -1.0))


# --- layer forwards no Darknet reference case covers -------------------------------------
def run(net: Network, seed: int = 0) -> np.ndarray:
    c, h, w = net.input_shape
    return net.forward(rand(np.random.default_rng(seed), 2, c, h, w))


def test_route_groups_take_a_channel_slice_of_each_source():
    net = tiny_net("[maxpool]\nsize=1\nstride=1\n\n[upsample]\nstride=1\nscale=2\n\n"
                  "[route]\nlayers=0,1\ngroups=2\ngroup_id=1\n")
    run(net)
    a, b = net.outputs[0], net.outputs[1]
    np.testing.assert_array_equal(net.outputs[2],
                                  np.concatenate([a[:, 2:], b[:, 2:]], axis=1))


def test_shortcut_several_from_is_a_flat_sum_then_activation():
    net = tiny_net("[empty]\n\n[upsample]\nstride=1\nscale=-1\n\n[upsample]\nstride=1\n"
                  "scale=3\n\n[shortcut]\nfrom=0,1\nactivation=relu\n")
    run(net, 2)
    o = net.outputs
    close(net.outputs[3], np.maximum(naive.shortcut_flat(o[2], [o[0], o[1]]), 0))


def test_reorg3d_layer_is_space_to_depth_and_reverse_inverts_it():
    net = tiny_net("[reorg3d]\nstride=2\n\n[reorg3d]\nstride=2\nreverse=1\n")
    x = rand(np.random.default_rng(3), 2, *net.input_shape)
    net.forward(x)
    np.testing.assert_array_equal(net.outputs[0], naive.space_to_depth(x, 2))
    np.testing.assert_array_equal(net.outputs[1], x)


def test_maxpool_depth_and_local_avgpool_layers():
    net = tiny_net("[empty]\n\n[maxpool]\nmaxpool_depth=1\nout_channels=2\n\n"
                  "[route]\nlayers=0\n\n[local_avgpool]\nsize=3\nstride=2\n", c=4, h=5, w=7)
    run(net, 4)
    x = rand(np.random.default_rng(4), 2, 4, 5, 7)
    np.testing.assert_array_equal(net.outputs[1], naive.maxpool_depth(x, 2))
    close(net.outputs[3], naive.local_avgpool(x, 3, 2, 2, 2))


def test_scale_channels_and_sam():
    net = tiny_net("[empty]\n\n[avgpool]\n\n[scale_channels]\nfrom=0\n\n"
                  "[sam]\nfrom=2\nactivation=logistic\n", c=3)
    run(net, 5)
    x = rand(np.random.default_rng(5), 2, 3, 6, 6)
    scaled = x * x.mean(axis=(2, 3), keepdims=True)
    close(net.outputs[2], scaled)
    close(net.outputs[3], 1 / (1 + np.exp(-scaled.astype(np.float64) ** 2)))


def test_yolo_scale_x_y_and_new_coords():
    head = "[yolo]\nmask=0,1\nanchors=1,1,2,2\nnum=2\nclasses=1\n"
    x = rand(np.random.default_rng(6), 2, 12, 6, 6)
    plain = tiny_net(head, c=12)
    plain.forward(x)
    scaled = tiny_net(head + "scale_x_y=1.2\n", c=12)
    scaled.forward(x)
    raw = tiny_net(head + "new_coords=1\n", c=12)
    raw.forward(x)
    sig = 1 / (1 + np.exp(-x.astype(np.float64)))
    ref = x.astype(np.float64).reshape(2, 2, 6, 36)
    ref[:, :, [0, 1, 4, 5]] = sig.reshape(2, 2, 6, 36)[:, :, [0, 1, 4, 5]]
    close(plain.outputs[0], ref.reshape(x.shape))
    ref[:, :, :2] = ref[:, :, :2] * 1.2 - 0.1
    close(scaled.outputs[0], ref.reshape(x.shape))
    np.testing.assert_array_equal(raw.outputs[0], x)


def test_region_without_softmax_is_logistic_on_classes():
    net = tiny_net("[region]\nnum=2\ncoords=4\nclasses=3\n", c=16, h=3, w=3)
    x = rand(np.random.default_rng(8), 1, 16, 3, 3)
    net.forward(x)
    ref = x.astype(np.float64).reshape(1, 2, 8, 9)
    idx = [0, 1, 4, 5, 6, 7]
    ref[:, :, idx] = 1 / (1 + np.exp(-ref[:, :, idx]))
    close(net.outputs[0], ref.reshape(x.shape))


def test_dropout_training_is_inverted_and_keeps_its_mask():
    net = tiny_net("[dropout]\nprobability=0.25\n", c=8, h=16, w=16)
    x = rand(np.random.default_rng(9), 2, 8, 16, 16)
    np.testing.assert_array_equal(net.forward(x), x)          # inference: identity
    net.train = True
    y = net.forward(x)
    mask = net.layers[0].mask
    assert set(np.unique(mask)) == {np.float32(0), np.float32(1 / 0.75)}
    assert abs((mask == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(y, x * mask)


def test_crop_training_window_lies_inside_the_input():
    net = tiny_net("[crop]\ncrop_height=3\ncrop_width=4\nflip=1\nnoadjust=1\n", c=2, h=5, w=6)
    x = rand(np.random.default_rng(10), 1, 2, 5, 6)
    net.train = True
    windows = {tuple(x[0, :, i:i + 3, j:j + 4][..., ::f].ravel())
               for i in range(3) for j in range(3) for f in (1, -1)}
    for _ in range(10):
        assert tuple(net.forward(x)[0].ravel()) in windows


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 40, 9, 9), (1, 70, 64, 64)], ids=str)
def test_scale_planes_equals_numpy_broadcast(shape):
    # [scale_channels]' per-channel product, serial (small) and parallel (large) twins
    from darkcfg.kernels.shortcut import scale_planes
    rng = np.random.default_rng(sum(shape))
    src = rng.standard_normal(shape).astype(np.float32)
    factors = rng.standard_normal((*shape[:2], 1, 1)).astype(np.float32)
    out = np.full_like(src, np.nan)
    assert np.array_equal(scale_planes(src, factors, out), src * factors)
    with pytest.raises(ValueError, match="do not fit"):
        scale_planes(src, factors[:, :1].copy(), out)
