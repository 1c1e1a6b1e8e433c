"""Conv, deconv, dense, BN and activation kernels (and their layers) against tests/naive_conv.py."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from darkcfg.activations import ACTIVATIONS
from darkcfg.graph import load_graph
from darkcfg.kernels import activations as act
from darkcfg.kernels import bn, bn_train, conv, dense
from darkcfg.network import Network

from . import naive_conv as naive
from .helpers import rand, rel

REL = 1e-5


# --- convolution ---------------------------------------------------------------------------
# (N, C, H, W, filters, k, stride_y, stride_x, pad applied, dilation, groups)
CONV_CASES = [
    (2, 3, 9, 11, 4, 3, 1, 1, 1, 1, 1),     # plain 3x3 same, batch 2
    (1, 4, 10, 9, 6, 3, 2, 1, 1, 1, 2),     # stride_y != stride_x, groups
    (1, 3, 12, 13, 5, 3, 1, 2, 4, 2, 1),    # dilation 2 with padding 2 (applied 2*2)
    (1, 3, 15, 14, 2, 3, 3, 2, 0, 3, 1),    # dilation 3, no padding
    (2, 6, 8, 7, 6, 3, 1, 1, 1, 1, 6),      # depthwise (direct loops)
    (1, 4, 11, 10, 8, 3, 2, 2, 2, 2, 4),    # depthwise x2, strided, dilated (direct)
    (1, 5, 9, 12, 5, 3, 1, 1, 0, 1, 5),     # depthwise without padding (direct)
    (1, 3, 7, 7, 12, 3, 1, 2, 1, 1, 3),     # depthwise x4 (GEMM)
    (1, 6, 8, 7, 12, 5, 2, 3, 2, 1, 3),     # channel multiplier, anisotropic stride
    (1, 5, 9, 9, 4, 1, 2, 2, 0, 1, 1),      # strided 1x1 (wrong in Darknet P)
    (1, 5, 6, 6, 4, 1, 1, 1, 1, 1, 1),      # padded 1x1 (wrong in Darknet P)
    (3, 8, 5, 4, 8, 1, 1, 1, 0, 1, 4),      # 1x1 fast path, grouped, batch 3
    (1, 2, 7, 8, 3, 4, 1, 1, 2, 1, 1),      # even kernel
    (1, 3, 5, 6, 2, 5, 1, 1, 0, 1, 1),      # kernel as tall as the image
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_matches_naive(case):
    N, C, H, W, n, k, sy, sx, pad, d, g = case
    rng = np.random.default_rng(sum(case))
    x, w = rand(rng, N, C, H, W), rand(rng, n, C // g, k, k)
    out, work = conv.conv2d(x, w, sy=sy, sx=sx, pad=pad, d=d, groups=g)
    assert rel(out, naive.conv2d(x, w, sy, sx, pad, d, g)) <= REL
    # buffers passed back are reused and the result is recomputed, not stale
    x2 = rand(rng, N, C, H, W)
    out2, _ = conv.conv2d(x2, w, sy=sy, sx=sx, pad=pad, d=d, groups=g, out=out, work=work)
    assert out2 is out
    assert rel(out2, naive.conv2d(x2, w, sy, sx, pad, d, g)) <= REL


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_backward_matches_naive(case):
    N, C, H, W, n, k, sy, sx, pad, d, g = case
    rng = np.random.default_rng(sum(case) + 1)
    x, w = rand(rng, N, C, H, W), rand(rng, n, C // g, k, k)
    out, _ = conv.conv2d(x, w, sy=sy, sx=sx, pad=pad, d=d, groups=g)
    dy = rand(rng, *out.shape)
    ref_dw, ref_dx = naive.conv2d_backward(x, w, dy, sy, sx, pad, d, g)
    dw = np.zeros_like(w)
    dx, work = conv.conv2d_backward(x, w, dy, dw, sy=sy, sx=sx, pad=pad, d=d, groups=g)
    assert rel(dw, ref_dw) <= REL
    assert rel(dx, ref_dx) <= REL
    # a second call accumulates into dw, reuses (and clears) dx, and may skip dx
    dx2, _ = conv.conv2d_backward(x, w, dy, dw, sy=sy, sx=sx, pad=pad, d=d, groups=g,
                                  dx=dx, work=work)
    assert dx2 is dx and rel(dx2, ref_dx) <= REL
    assert rel(dw, 2 * ref_dw) <= REL
    none, _ = conv.conv2d_backward(x, w, dy, dw, sy=sy, sx=sx, pad=pad, d=d, groups=g,
                                   need_dx=False)
    assert none is None and rel(dw, 3 * ref_dw) <= REL


def test_conv2d_rejects_bad_groups():
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError, match="groups=3"):
        conv.conv2d(x, np.zeros((6, 1, 3, 3), np.float32), groups=3)
    with pytest.raises(ValueError, match="float32"):
        conv.conv2d(x.astype(np.float64), np.zeros((6, 4, 3, 3), np.float32))


# (N, C, h, w, filters, k, stride, pad)
DECONV_CASES = [
    (2, 3, 4, 5, 2, 4, 2, 1),
    (1, 2, 3, 3, 3, 3, 1, 1),
    (1, 3, 4, 4, 2, 2, 2, 0),
    (1, 2, 3, 4, 3, 3, 3, 0),
    (1, 1, 2, 2, 1, 5, 2, 2),
]


@pytest.mark.parametrize("case", DECONV_CASES, ids=str)
def test_deconv2d_matches_naive(case):
    N, C, h, w, n, k, s, pad = case
    rng = np.random.default_rng(sum(case))
    x, wt = rand(rng, N, C, h, w), rand(rng, C, n, k, k)
    out, work = conv.deconv2d(x, wt, s=s, pad=pad)
    assert rel(out, naive.deconv2d(x, wt, s, pad)) <= REL
    x2 = rand(rng, N, C, h, w)      # the reused output must be cleared before col2im
    out2, _ = conv.deconv2d(x2, wt, s=s, pad=pad, out=out, work=work)
    assert rel(out2, naive.deconv2d(x2, wt, s, pad)) <= REL


@pytest.mark.parametrize("case", DECONV_CASES, ids=str)
def test_deconv2d_backward_matches_naive(case):
    N, C, h, w, n, k, s, pad = case
    rng = np.random.default_rng(sum(case) + 1)
    x, wt = rand(rng, N, C, h, w), rand(rng, C, n, k, k)
    out, _ = conv.deconv2d(x, wt, s=s, pad=pad)
    dy = rand(rng, *out.shape)
    ref_dw, ref_dx = naive.deconv2d_backward(x, wt, dy, s, pad)
    dw = np.zeros_like(wt)
    dx, work = conv.deconv2d_backward(x, wt, dy, dw, s=s, pad=pad)
    assert rel(dw, ref_dw) <= REL and rel(dx, ref_dx) <= REL
    dx2, _ = conv.deconv2d_backward(x, wt, dy, dw, s=s, pad=pad, dx=dx, work=work)
    assert dx2 is dx and rel(dx2, ref_dx) <= REL and rel(dw, 2 * ref_dw) <= REL


def test_dense_backward_matches_naive():
    rng = np.random.default_rng(4)
    x, w, dy = rand(rng, 3, 4, 2, 5), rand(rng, 7, 40), rand(rng, 3, 7, 1, 1)
    ref_dw, ref_dx = naive.dense_backward(x, w, dy)
    dw = np.zeros_like(w)
    dx = dense.dense_backward(x, w, dy, dw)
    assert dx.shape == x.shape
    assert rel(dw, ref_dw) <= REL and rel(dx.reshape(3, 40), ref_dx) <= REL
    assert dense.dense_backward(x, w, dy, dw, need_dx=False) is None
    assert rel(dw, 2 * ref_dw) <= REL


def test_dense_matches_naive():
    rng = np.random.default_rng(3)
    x, w = rand(rng, 3, 4, 2, 5), rand(rng, 7, 40)
    out = dense.dense(x, w)
    assert out.shape == (3, 7, 1, 1)
    assert rel(out.reshape(3, 7), naive.dense(x, w)) <= REL


# --- batch norm and bias -----------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["pjreddie", "alexeyab"])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 6)])
@pytest.mark.parametrize("with_biases", [True, False])
def test_bn_inference_matches_naive(dialect, shape, with_biases):
    rng = np.random.default_rng(5)
    c = shape[1]
    x = rand(rng, *shape, scale=3)
    scales, mean, biases = rand(rng, c), rand(rng, c), rand(rng, c)
    # tiny variances make the two denominators differ visibly
    var = (rng.random(c) * 2 + np.array([1e-5] + [0.0] * (c - 1))).astype(np.float32)
    ref = naive.batchnorm(x, scales, mean, var, biases if with_biases else None, dialect)
    out = bn.bn_inference(x.copy(), scales, mean, var, biases if with_biases else None,
                          dialect)
    assert rel(out, ref) <= REL


@pytest.mark.parametrize("dialect", ["pjreddie", "alexeyab"])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 6), (1, 4, 1, 2)])
def test_bn_train_forward_and_rolling_update(dialect, shape):
    rng = np.random.default_rng(6)
    c = shape[1]
    x = rand(rng, *shape, scale=2) + rand(rng, 1, c, *shape[2:])
    scales, biases = rand(rng, c), rand(rng, c)
    rmean, rvar = rand(rng, c), rng.random(c).astype(np.float32)
    y_ref, xhat_ref, mean, var = naive.batchnorm_train(x, scales, biases, dialect)
    rmean_ref, rvar_ref = 0.99 * rmean + 0.01 * mean, 0.99 * rvar + 0.01 * var
    out, xhat = x.copy(), np.empty_like(x)
    m, v = bn_train.forward(out, scales, biases, rmean, rvar, dialect, xhat)
    assert rel(m, mean) <= REL and rel(v, var) <= REL       # unbiased (n - 1)
    assert rel(out, y_ref) <= REL and rel(xhat, xhat_ref) <= REL
    assert rel(rmean, rmean_ref) <= REL and rel(rvar, rvar_ref) <= REL


@pytest.mark.parametrize("dialect", ["pjreddie", "alexeyab"])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 6)])
def test_bn_train_backward_is_darknets_rule(dialect, shape):
    # Darknet's rule (N in the variance term, sqrt(var + 1e-5)), not the exact
    # derivative: tests/test_backward_conv.py checks exact=True by finite differences
    rng = np.random.default_rng(8)
    c = shape[1]
    x = rand(rng, *shape, scale=2)
    scales, dy = rand(rng, c), rand(rng, *shape)
    ref_dx, ref_ds, ref_db = naive.batchnorm_backward_darknet(x, dy, scales, dialect)
    xhat = np.empty_like(x)
    _, var = bn_train.forward(x.copy(), scales, None, np.zeros(c, np.float32),
                              np.zeros(c, np.float32), dialect, xhat)
    gs, gb = np.zeros(c, np.float32), np.zeros(c, np.float32)
    dx = bn_train.backward(dy.copy(), xhat, scales, var, dialect, gs, gb)
    assert rel(dx, ref_dx) <= REL
    assert rel(gs, ref_ds) <= REL and rel(gb, ref_db) <= REL
    gb2 = np.zeros(c, np.float32)
    bn_train.bias_grad(dy, gb2)
    assert rel(gb2, ref_db) <= REL


def test_bn_train_needs_two_values_per_channel():
    x = np.ones((1, 3, 1, 1), np.float32)
    z = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        bn_train.forward(x, z + 1, None, z.copy(), z.copy(), "pjreddie", x.copy())


def test_bn_dialects_differ_and_bias_adds():
    var = np.array([1e-6], np.float32)
    p, a = bn.bn_denominator(var, "pjreddie"), bn.bn_denominator(var, "alexeyab")
    assert p[0] == pytest.approx(1e-3 + 1e-6, rel=1e-6)
    assert a[0] == pytest.approx(np.sqrt(1.1e-5), rel=1e-6)
    with pytest.raises(ValueError, match="dialect"):
        bn.bn_denominator(var, "hank")
    x = np.zeros((2, 3, 2, 2), np.float32)
    bn.add_bias(x, np.array([1, 2, 3], np.float32))
    assert np.array_equal(x[1, :, 1, 1], [1, 2, 3])


# --- activations ---------------------------------------------------------------------------
KINKS = np.array([0, 1, -1, 2, -2, 4, -4, 6, 20, -20], np.float64)
SPECIAL = [0, -0.0, 1, -1, 2, -2, 2.5, -2.5, 3, -3, 4, -4, 6, 7, 20, -20, 25, -25]


def act_input(rng, shape=(2, 5, 3, 4)):
    x = rand(rng, *shape, scale=4).ravel()
    x[: 40] = rng.uniform(-30, 30, 40).astype(np.float32)
    x[40: 40 + len(SPECIAL)] = SPECIAL
    return x.reshape(shape)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activate_matches_naive(name):
    x = act_input(np.random.default_rng(7))
    ref = naive.activate(x, name).astype(np.float32)
    out = act.activate(x.copy(), name)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_gradient_matches_darknet_form(name):
    rng = np.random.default_rng(11)
    x = act_input(rng)
    y = act.activate(x.copy(), name)
    dy = rand(rng, *x.shape)
    ref = naive.gradient(y, x, name, dy)
    out = act.gradient(dy.copy(), y, x if act.needs_input(name) else None, name)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)


# Darknet's form is the true derivative except for the normalize_channels rule (AH's own,
# not the Jacobian); stair is piecewise linear, true away from its jumps.
TRUE_DERIVATIVE = [a for a in ACTIVATIONS if not a.startswith("normalize_channels")]


@pytest.mark.parametrize("name", TRUE_DERIVATIVE)
def test_gradient_is_the_derivative(name):
    rng = np.random.default_rng(13)
    x = rng.uniform(-8, 8, 4000).astype(np.float32)
    x64 = x.astype(np.float64)
    away = np.abs(x64[:, None] - KINKS[None]).min(axis=1) > 1e-2
    if name == "stair":
        away &= np.abs(x64 - np.round(x64)) > 1e-2
    x, x64 = x[away], x64[away]
    h = 1e-5
    fd = (naive.activate(x64 + h, name) - naive.activate(x64 - h, name)) / (2 * h)
    y = act.activate(x.copy(), name)
    g = act.gradient(np.ones_like(x), y, x, name)
    np.testing.assert_allclose(g, fd, rtol=2e-4, atol=2e-5)


def test_activation_api_errors():
    x = np.zeros((1, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="unknown activation 'swishh'"):
        act.activate(x, "swishh")
    with pytest.raises(ValueError, match="float32"):
        act.activate(x.astype(np.float64), "leaky")
    with pytest.raises(ValueError, match="needs the pre-activation input"):
        act.gradient(x.copy(), x, None, "mish")
    assert act.needs_input("mish") and act.needs_input("gelu")
    assert not act.needs_input("leaky")


# --- layers through the network -----------------------------------------------------------

def build(tmp_path, text: str, batch: int = 1) -> Network:
    cfg = tmp_path / "t.cfg"
    cfg.write_text(textwrap.dedent(text))
    net = Network(load_graph(cfg, batch=batch))
    rng = np.random.default_rng(17)
    for layer in net.layers:
        for name, arr in layer.params.items():
            if name == "rolling_variance":
                arr[...] = rng.random(arr.shape) + 0.5
            else:
                arr[...] = rng.standard_normal(arr.shape) * 0.5
    return net


def test_conv_layer_dilation_and_anisotropic_stride(tmp_path):
    net = build(tmp_path, """
        [net]
        width=17
        height=13
        channels=4
        [convolutional]
        batch_normalize=1
        filters=6
        size=3
        stride_x=2
        stride_y=1
        padding=2
        dilation=2
        groups=2
        activation=mish
        [convolutional]
        filters=3
        size=1
        stride=2
        padding=1
        activation=leaky
    """)
    rng = np.random.default_rng(1)
    x = rand(rng, 2, 4, 13, 17)
    out = net.forward(x)
    l0, l1 = net.layers
    p = l0.params
    ref0 = naive.conv2d(x, p["weights"], 1, 2, 2 * 2, 2, 2)   # padding*dilation applied
    ref0 = naive.batchnorm(ref0, p["scales"], p["rolling_mean"], p["rolling_variance"],
                           p["biases"])
    ref0 = naive.activate(ref0, "mish")
    assert ref0.shape[1:] == l0.out_shape
    assert rel(net.outputs[0], ref0) <= REL
    q = l1.params
    ref1 = naive.conv2d(net.outputs[0], q["weights"], 2, 2, 1) + \
        q["biases"].reshape(1, -1, 1, 1)
    ref1 = naive.activate(ref1, "leaky")
    assert ref1.shape[1:] == l1.out_shape
    assert rel(out, ref1) <= REL


def test_deconv_connected_activation_batchnorm_layers(tmp_path):
    net = build(tmp_path, """
        [net]
        width=5
        height=4
        channels=3
        [deconvolutional]
        batch_normalize=1
        filters=4
        size=4
        stride=2
        pad=1
        activation=relu
        [batchnorm]
        [activation]
        activation=logistic
        [connected]
        batch_normalize=1
        output=6
        activation=tanh
        [connected]
        output=5
        activation=linear
    """)
    x = rand(np.random.default_rng(2), 3, 3, 4, 5)
    for _ in range(2):                      # the second pass reuses every buffer
        net.forward(x)
    d, b, _, c1, c2 = (layer.params for layer in net.layers)
    ref = naive.deconv2d(x, d["weights"], 2, 2)     # pad=1 means padding = size/2
    ref = naive.activate(naive.batchnorm(ref, d["scales"], d["rolling_mean"],
                                         d["rolling_variance"], d["biases"]), "relu")
    assert rel(net.outputs[0], ref) <= REL
    assert "biases" not in b                # P's standalone [batchnorm]: 3 arrays
    ref = naive.batchnorm(ref, b["scales"], b["rolling_mean"], b["rolling_variance"])
    assert rel(net.outputs[1], ref) <= REL
    ref = naive.activate(ref, "logistic")
    assert rel(net.outputs[2], ref) <= REL
    assert rel(net.outputs[1], naive.batchnorm(net.outputs[0], b["scales"],
               b["rolling_mean"], b["rolling_variance"])) <= REL   # input left intact
    ref = naive.dense(ref, c1["weights"])
    ref = naive.activate(naive.batchnorm(ref, c1["scales"], c1["rolling_mean"],
                                         c1["rolling_variance"], c1["biases"]), "tanh")
    ref = naive.dense(ref, c2["weights"]) + c2["biases"]
    assert rel(net.outputs[4].reshape(3, 5), ref) <= REL
    net.forward(x[:1])                      # a new batch size reallocates
    assert rel(net.outputs[4].reshape(1, 5), ref[:1]) <= REL


def test_summary_path_does_not_import_numba():
    code = ("import sys, darkcfg.graph, darkcfg.summary, darkcfg.network, darkcfg.layers; "
            "assert 'numba' not in sys.modules, 'numba imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
