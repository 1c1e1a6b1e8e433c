"""Backward passes of the conv family, [activation] and [batchnorm] against central finite
differences of their own train-mode forward.

The loss is L = sum(out * R) for a fixed random R (accumulated in float64), so dLoss/dout
= R is what each layer's backward receives. The tested layer is layer 1, after an
identity [activation] (linear) layer, so that its input gradient is computed too. The
forward runs in float32: finite differences carry ~1e-6 of rounding noise, so steps are
1e-2 (3e-3 through batch statistics) and the bar is 1e-3 of the largest gradient (a 1/N
slip in BN's variance term at the sizes below is 3e-3 to 3e-2 and fails it).
Batch-normalised layers are checked with `exact_bn` (the true derivative); Darknet's own
rule is checked against a transcription in test_kernels_conv.py and against Darknet in
test_reference_train.py.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from darkcfg.activations import ACTIVATIONS
from darkcfg.errors import CfgError
from darkcfg.graph import load_graph
from darkcfg.kernels import activations as act
from darkcfg.network import Network

from . import naive_conv as naive
from .helpers import assert_close, check_gradient, numeric_gradient

EPS = 1e-2
EPS_BN = 3e-3       # batch statistics curve more: a smaller step (less truncation)
BAR = 1e-3
# where Darknet's activations (and so their derivatives) have kinks
KINKS = np.array([0, 1, -1, 2, -2, 4, -4, 6, 20, -20], np.float64)


def build(tmp_path, shape, body: str, batch: int, dialect: str | None = None,
          seed: int = 0) -> Network:
    c, h, w = shape
    cfg = tmp_path / "t.cfg"
    cfg.write_text(f"[net]\nchannels={c}\nheight={h}\nwidth={w}\n"
                   "[activation]\nactivation=linear\n" + textwrap.dedent(body))
    net = Network(load_graph(cfg, batch=batch, dialect=dialect))
    rng = np.random.default_rng(seed)
    layer = net.layers[1]
    for name, arr in layer.params.items():
        if name == "rolling_variance":
            arr[...] = rng.random(arr.shape) + 0.5
        elif name == "scales":
            arr[...] = rng.uniform(0.5, 1.5, arr.shape) * rng.choice([-1, 1], arr.shape)
        else:
            arr[...] = rng.standard_normal(arr.shape) * 0.5
    layer.exact_bn = True
    return net


def run(net: Network, x: np.ndarray, R: np.ndarray) -> float:
    """The train-mode loss sum(out * R) in float64."""
    net.train = True
    try:
        out = net.forward(x)
    finally:
        net.train = False
    return float(np.sum(out.astype(np.float64) * R))


def analytic(net: Network, x: np.ndarray, R: np.ndarray):
    """(dx, {param: grad}) from the layer's backward after one train-mode forward."""
    layer = net.layers[1]
    run(net, x, R)
    for g in layer.grads.values():
        g[...] = 0
    dx = layer.backward(R.astype(np.float32), net)
    return dx.copy(), {k: v.copy() for k, v in layer.grads.items()}


def loss_of(net: Network, x: np.ndarray, R: np.ndarray):
    """The loss as a function of nothing: x and the parameters are perturbed in place."""
    return lambda: run(net, x, R)


def indices(arr: np.ndarray, rng, most: int = 300):
    """Every flat index of arr, or `most` of them drawn at random."""
    if arr.size <= most:
        return range(arr.size)
    return rng.choice(arr.size, most, replace=False)


def check(net: Network, x: np.ndarray, seed: int = 1, skip=(), eps: float = EPS) -> None:
    """Every gradient the layer produces (input, weights, biases, scales) against finite
    differences, each within BAR of the largest value."""
    rng = np.random.default_rng(seed)
    layer = net.layers[1]
    R = rng.standard_normal((x.shape[0], *layer.out_shape))
    dx, grads = analytic(net, x, R)
    targets = [("x", x, dx)] + [(k, layer.params[k], g) for k, g in grads.items()
                                if k not in skip]
    for name, arr, g in targets:
        check_gradient(loss_of(net, x, R), arr, g, indices(arr, rng), eps=eps, rtol=BAR,
                       floor=1e-3, what=name)


def conv_body(n, k, sy, sx, padding, d, g, bn, activation):
    return f"""
        [convolutional]
        filters={n}
        size={k}
        stride_y={sy}
        stride_x={sx}
        padding={padding}
        dilation={d}
        groups={g}
        batch_normalize={bn}
        activation={activation}
    """


# (N, C, H, W, filters, size, stride_y, stride_x, padding (cfg: applied x dilation),
#  dilation, groups)
CONV_GEOMETRIES = [
    (2, 3, 7, 8, 4, 3, 1, 1, 1, 1, 1),      # plain 3x3 same, batch 2
    (1, 4, 8, 7, 6, 3, 2, 1, 1, 1, 2),      # stride_y != stride_x, groups
    (1, 3, 9, 10, 4, 3, 1, 2, 2, 2, 1),     # dilation 2 with padding 2 (applied 4)
    (1, 3, 11, 10, 2, 3, 3, 2, 0, 3, 1),    # dilation 3, no padding
    (2, 5, 6, 7, 5, 3, 1, 1, 1, 1, 5),      # depthwise (direct loops)
    (1, 4, 9, 8, 8, 3, 2, 2, 1, 2, 4),      # depthwise x2, strided, dilated (direct)
    (1, 3, 6, 6, 12, 3, 1, 2, 1, 1, 3),     # depthwise x4 (GEMM)
    (1, 6, 8, 7, 6, 5, 2, 3, 2, 1, 3),      # 2 channels per group, anisotropic stride
    (1, 5, 7, 7, 4, 1, 2, 2, 0, 1, 1),      # strided 1x1 (wrong in Darknet P)
    (1, 5, 4, 5, 4, 1, 1, 1, 1, 1, 1),      # padded 1x1 (wrong in Darknet P)
    (3, 8, 3, 4, 8, 1, 1, 1, 0, 1, 4),      # 1x1 fast path, grouped, batch 3
    (1, 2, 6, 7, 3, 4, 1, 1, 2, 1, 1),      # even kernel
    (2, 3, 5, 6, 2, 5, 1, 1, 0, 1, 1),      # kernel as tall as the image (BN over 4)
]


@pytest.mark.parametrize("bn", [0, 1], ids=["bias", "bn"])
@pytest.mark.parametrize("geom", CONV_GEOMETRIES, ids=str)
def test_conv_gradients(tmp_path, geom, bn):
    N, C, H, W, n, k, sy, sx, padding, d, g = geom
    activation = "logistic" if bn else "linear"
    net = build(tmp_path, (C, H, W), conv_body(n, k, sy, sx, padding, d, g, bn, activation),
                N, seed=sum(geom))
    x = np.random.default_rng(sum(geom) + bn).standard_normal((N, C, H, W)).astype(np.float32)
    check(net, x, eps=EPS_BN if bn else EPS)


@pytest.mark.parametrize("dialect", ["pjreddie", "alexeyab"])
def test_conv_bn_gradients_in_both_dialects(tmp_path, dialect):
    body = conv_body(4, 3, 1, 1, 1, 1, 1, 1, "tanh")
    net = build(tmp_path, (3, 5, 6), body, 2, dialect=dialect, seed=3)
    x = np.random.default_rng(4).standard_normal((2, 3, 5, 6)).astype(np.float32)
    check(net, x, eps=EPS_BN)


# (N, C, h, w, filters, size, stride, padding)
DECONV_GEOMETRIES = [
    (2, 3, 4, 5, 2, 4, 2, 1),
    (1, 2, 3, 3, 3, 3, 1, 1),
    (1, 3, 4, 4, 2, 2, 2, 0),
    (1, 2, 3, 4, 3, 3, 3, 0),
]


@pytest.mark.parametrize("bn", [0, 1], ids=["bias", "bn"])
@pytest.mark.parametrize("geom", DECONV_GEOMETRIES, ids=str)
def test_deconv_gradients(tmp_path, geom, bn):
    N, C, h, w, n, k, s, padding = geom
    body = f"""
        [deconvolutional]
        filters={n}
        size={k}
        stride={s}
        padding={padding}
        batch_normalize={bn}
        activation={"mish" if bn else "linear"}
    """
    net = build(tmp_path, (C, h, w), body, N, seed=sum(geom))
    x = np.random.default_rng(sum(geom)).standard_normal((N, C, h, w)).astype(np.float32)
    check(net, x, eps=EPS_BN if bn else EPS)


@pytest.mark.parametrize("bn", [0, 1], ids=["bias", "bn"])
def test_connected_gradients(tmp_path, bn):
    body = f"""
        [connected]
        output=7
        batch_normalize={bn}
        activation={"swish" if bn else "linear"}
    """
    net = build(tmp_path, (3, 2, 4), body, 5 if bn else 2, seed=7)
    x = np.random.default_rng(8).standard_normal((5 if bn else 2, 3, 2, 4)).astype(np.float32)
    check(net, x, eps=EPS_BN if bn else EPS)


@pytest.mark.parametrize("dialect", ["pjreddie", "alexeyab"])
def test_batchnorm_gradients(tmp_path, dialect):
    net = build(tmp_path, (4, 3, 5), "[batchnorm]\n", 2, dialect=dialect, seed=9)
    layer = net.layers[1]
    # P's layout has no biases (and darkcfg trains only the scales); A's has them
    assert set(layer.grads) == ({"scales"} if dialect == "pjreddie" else {"scales", "biases"})
    x = (np.random.default_rng(10).standard_normal((2, 4, 3, 5)) * 2 + 1).astype(np.float32)
    check(net, x, eps=EPS_BN)


SMOOTH_EVERYWHERE = [a for a in ACTIVATIONS if a != "stair"
                     and not a.startswith("normalize_channels")]


@pytest.mark.parametrize("name", SMOOTH_EVERYWHERE)
def test_activation_layer_gradient(tmp_path, name):
    # element-wise: perturbing all of x at once gives every partial derivative; values
    # stay 5 steps away from the kinks so no difference straddles one
    net = build(tmp_path, (3, 4, 5), f"[activation]\nactivation={name}\n", 2)
    rng = np.random.default_rng(12)
    x64 = rng.uniform(-7, 7, (2, 3, 4, 5))
    far = np.abs(x64[..., None] - KINKS).min(axis=-1) > 5 * EPS
    x64 = np.where(far, x64, x64 + 0.5)
    x = x64.astype(np.float32)
    R = rng.standard_normal(x.shape)
    dx, _ = analytic(net, x, R)
    out = []
    for sign in (1, -1):
        net.train = True
        out.append(net.forward((x64 + sign * EPS).astype(np.float32)).astype(np.float64))
    net.train = False
    fd = R * (out[0] - out[1]) / (2 * EPS)
    err = np.abs(dx - fd).max() / np.abs(fd).max()
    assert err <= BAR, err


@pytest.mark.parametrize("name", ["stair", "normalize_channels", "normalize_channels_softmax",
                                  "normalize_channels_softmax_maxval"])
def test_activation_layer_darknet_rules(tmp_path, name):
    # not derivatives in Darknet: checked against the NumPy transcription of its rule
    net = build(tmp_path, (3, 4, 5), f"[activation]\nactivation={name}\n", 2)
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((2, 3, 4, 5)) * 3).astype(np.float32)
    R = rng.standard_normal(x.shape)
    dx, _ = analytic(net, x, R)
    y = net.outputs[1]
    ref = naive.gradient(y, x, name, R)
    np.testing.assert_allclose(dx, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SMOOTH_EVERYWHERE)
def test_conv_activation_gradient(tmp_path, name):
    # the activation inside a conv (from the output y, or from the kept input for mish
    # & co.): bias gradients by finite differences, each with a step that keeps all the
    # channel's pre-activations on one side of every kink
    body = conv_body(3, 3, 1, 1, 1, 1, 1, 0, name)
    net = build(tmp_path, (2, 3, 3), body, 2, seed=14)
    layer = net.layers[1]
    rng = np.random.default_rng(15)
    x = (rng.standard_normal((2, 2, 3, 3)) * 2).astype(np.float32)
    R = rng.standard_normal((2, *layer.out_shape))
    _, grads = analytic(net, x, R)
    z = naive.conv2d(x, layer.params["weights"], pad=1) + \
        layer.params["biases"].reshape(1, -1, 1, 1)
    checked = 0
    for f in range(3):
        gap = np.abs(z[:, f, ..., None] - KINKS).min()
        eps = min(EPS, gap / 3)
        if eps < 1e-3:
            continue
        _, fd = numeric_gradient(loss_of(net, x, R), layer.params["biases"], [f], eps)
        assert_close(grads["biases"][f:f + 1], fd, BAR, floor=1.0, what=f)
        checked += 1
    assert checked >= 2


def test_gradients_accumulate_and_dy_is_left_intact(tmp_path):
    net = build(tmp_path, (3, 5, 5), conv_body(4, 3, 1, 1, 1, 1, 1, 1, "leaky"), 2)
    layer = net.layers[1]
    x = np.random.default_rng(16).standard_normal((2, 3, 5, 5)).astype(np.float32)
    R = np.random.default_rng(17).standard_normal((2, 4, 5, 5)).astype(np.float32)
    _, once = analytic(net, x, R)
    dy = R.copy()
    layer.backward(dy, net)
    assert np.array_equal(dy, R)
    for k, g in layer.grads.items():
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-6, atol=1e-7)


def test_first_layer_returns_no_input_gradient(tmp_path):
    cfg = tmp_path / "t.cfg"
    cfg.write_text("[net]\nchannels=2\nheight=4\nwidth=4\n[convolutional]\nfilters=2\n"
                   "size=3\npad=1\nactivation=linear\n")
    net = Network(load_graph(cfg))
    net.train = True
    net.forward(np.ones((1, 2, 4, 4), np.float32))
    assert net.layers[0].backward(np.ones((1, 2, 4, 4), np.float32), net) is None
    assert net.layers[0].backward(None, net) is None


def test_rolling_statistics_update_and_inference_after_training(tmp_path):
    net = build(tmp_path, (3, 4, 5), conv_body(4, 3, 1, 1, 1, 1, 1, 1, "linear"), 3)
    layer = net.layers[1]
    p = layer.params
    x = np.random.default_rng(18).standard_normal((3, 3, 4, 5)).astype(np.float32)
    mean0, var0 = p["rolling_mean"].copy(), p["rolling_variance"].copy()
    run(net, x, np.zeros((3, 4, 4, 5)))
    z = naive.conv2d(x, p["weights"], pad=1)
    y, _, mean, var = naive.batchnorm_train(z, p["scales"], p["biases"])
    np.testing.assert_allclose(net.outputs[1], y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p["rolling_mean"], 0.99 * mean0 + 0.01 * mean, rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(p["rolling_variance"], 0.99 * var0 + 0.01 * var, rtol=1e-6)
    # inference uses the (updated) rolling statistics, as before training existed
    out = net.forward(x)
    ref = naive.batchnorm(z, p["scales"], p["rolling_mean"], p["rolling_variance"],
                          p["biases"])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_bn_training_on_a_single_value_is_a_clear_error(tmp_path):
    cfg = tmp_path / "t.cfg"
    cfg.write_text("[net]\nchannels=1\nheight=1\nwidth=3\n[connected]\noutput=2\n"
                   "batch_normalize=1\n")
    net = Network(load_graph(cfg))
    with pytest.raises(CfgError, match="at least 2 values per channel.*1 x 1 x 1"):
        net.forward_train(np.ones((1, 1, 1, 3), np.float32), None)


def test_training_initialisation(tmp_path):
    cfg = tmp_path / "t.cfg"
    cfg.write_text("[net]\nchannels=8\nheight=10\nwidth=10\n"
                   "[deconvolutional]\nfilters=16\nsize=4\nstride=2\npad=1\n"
                   "batch_normalize=1\n[connected]\noutput=50\n")
    net = Network(load_graph(cfg))
    net.init_weights(seed=1)
    d, c = net.layers
    # deconv (P): 0.02 N(0,1) x out_w*out_h/(w*h); pad=1 is padding 2: 18 x 18 out
    assert d.out_shape == (16, 18, 18)
    wd = d.params["weights"]
    assert abs(wd.std() / (0.02 * 3.24) - 1) < 0.05 and abs(wd.mean()) < 0.01
    assert np.all(d.params["scales"] == 1) and not d.params["rolling_variance"].any()
    # connected: sqrt(2/inputs) U(-1, 1)
    wc = c.params["weights"]
    bound = np.sqrt(2 / c.inputs)
    assert np.abs(wc).max() <= bound and np.abs(wc).max() > 0.99 * bound
    assert abs(wc.std() / (bound / np.sqrt(3)) - 1) < 0.05
    assert not c.params["biases"].any()


def test_activation_needs_input_keeps_a_copy(tmp_path):
    # mish's gradient is taken at the pre-activation values, which the output overwrote
    net = build(tmp_path, (2, 3, 3), conv_body(2, 1, 1, 1, 0, 1, 1, 0, "mish"), 1)
    layer = net.layers[1]
    run(net, np.ones((1, 2, 3, 3), np.float32), np.zeros((1, 2, 3, 3)))
    assert act.needs_input("mish") and layer._pre is not None
    assert not np.array_equal(layer._pre, net.outputs[1])
