"""Backward passes of the pooling, softmax, shortcut, route, upsample, reorg, crop, dropout,
cost, logistic, LRN, l2norm, scale_channels, sam and empty layers.

- Finite differences: every layer's input gradient against central differences of
  loss = sum(out * R) (R fixed and random), on small batches of 2. The loss is accumulated
  in float64 and divided by the perturbation float32 really applied. Inputs are spaced
  values (a shuffled grid, gaps >= 2/n) so that +-eps never swaps a max or a route through
  a kink; activations in these nets are smooth.
- Losses: values and gradients against the NumPy statements in naive_layers.py.
- Darknet: the layers of reference cases train_small and train_resid that these modules
  own, fed with Darknet's train-mode outputs and deltas (grads.npz; delta = minus our
  gradient), independently of the conv/connected/BN backward.
"""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.errors import CfgError
from darkcfg.graph import load_graph
from darkcfg.network import Network

from . import naive_layers as naive
from .conftest import CASES, need
from .helpers import assert_close, check_gradient, tiny_net
from .reference import REL_BAR, rel_error


def spaced(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Distinct values in (-1, 1), pairwise at least 2/n apart, in random order."""
    n = int(np.prod(shape))
    grid = (np.arange(n) + 0.5) / n * 2 - 1
    return rng.permutation(grid).reshape(shape).astype(np.float32)


def forward(net: Network, x: np.ndarray, truth=None, seed: int = 0) -> float:
    """A training forward with the random draws (dropout, crop) of `seed`."""
    net.rng = np.random.default_rng(seed)
    return net.forward_train(x, truth)


def backward_from(net: Network, dy: np.ndarray | None) -> np.ndarray | None:
    """Network.backward, but starting from dLoss/d(last output) = dy; returns
    dLoss/d(network input), read as the gradient of layer 0's output (an [empty])."""
    n = len(net.layers)
    net.grads = [None] * n
    net.grads[-1] = None if dy is None else dy.copy()
    for i in range(n - 1, -1, -1):
        dx = net.layers[i].backward(net.grads[i], net)
        if dx is not None and i > 0:
            net.add_grad(i - 1, dx)
    return net.grads[0]


def fd_check(body: str, c: int = 4, h: int = 6, w: int = 6, seed: int = 0,
             eps: float = 1e-3, tol: float = 1e-3) -> Network:
    """Input gradient of sum(out * R) through the cfg `body` (after an [empty] layer 0)
    against central differences."""
    net = tiny_net("[empty]\n\n" + body, c, h, w)
    rng = np.random.default_rng(seed)
    x = spaced(rng, 2, c, h, w)
    forward(net, x)
    r = rng.standard_normal(net.outputs[-1].shape).astype(np.float32)

    def loss():
        forward(net, x)
        return float(np.sum(net.outputs[-1].astype(np.float64) * r))

    forward(net, x)
    ours = backward_from(net, r)
    assert ours is not None and ours.shape == x.shape and ours.dtype == np.float32
    check_gradient(loss, x, ours, eps=eps, rtol=tol)
    return net


# --- pooling -----------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [
    "size=2\nstride=2",
    "size=3\nstride=1",                      # overlapping: one cell the max of several
    "size=3\nstride=2\npadding=2",
    "size=2\nstride=1",                      # default padding size-1: border windows
    "size=3\nstride_x=2\nstride_y=1\npadding=1",
    "size=5\nstride=3\npadding=4",
])
def test_maxpool(opts):
    fd_check(f"[maxpool]\n{opts}\n", w=7)


def test_maxpool_window_wholly_in_padding_gets_no_gradient():
    net = tiny_net("[maxpool]\nsize=2\nstride=1\npadding=6\n", c=1, h=3, w=3)
    x = spaced(np.random.default_rng(0), 2, 1, 3, 3)
    forward(net, x)
    r = np.ones(net.outputs[0].shape, np.float32)
    dx = net.layers[0].backward(r, net)
    assert net.layers[0].indexes.min() == -1
    assert dx.sum() == r[net.layers[0].indexes >= 0].sum()


@pytest.mark.parametrize("out_c", [1, 2, 3])
def test_maxpool_depth(out_c):
    fd_check(f"[maxpool]\nmaxpool_depth=1\nout_channels={out_c}\n", c=6)


@pytest.mark.parametrize("opts", ["size=2\nstride=2", "size=3\nstride=1",
                                  "size=3\nstride=2\npadding=2", "size=4\nstride=3"])
def test_local_avgpool(opts):
    # border windows average fewer cells: the divisor is the count of in-image cells
    fd_check(f"[local_avgpool]\n{opts}\n", w=7)


def test_avgpool():
    fd_check("[avgpool]\n", h=5, w=3)


# --- element-wise and copies -------------------------------------------------------------
def test_dropout_uses_the_forward_mask():
    net = fd_check("[dropout]\nprobability=0.4\n")
    mask = net.layers[1].mask
    dy = np.ones(mask.shape, np.float32)
    np.testing.assert_array_equal(net.layers[1].backward(dy, net), mask)


def test_empty():
    fd_check("[empty]\n")


@pytest.mark.parametrize("body", [
    "[upsample]\nstride=2\n",
    "[upsample]\nstride=3\nscale=0.5\n",
    "[upsample]\nstride=-2\nscale=1.5\n",
    "[upsample]\nstride=-3\n",
])
def test_upsample(body):
    fd_check(body)


@pytest.mark.parametrize("body,c,h,w", [
    ("[reorg]\nstride=2\n", 8, 4, 6),
    ("[reorg]\nstride=2\nreverse=1\n", 8, 2, 3),
    ("[reorg3d]\nstride=2\n", 3, 4, 6),
    ("[reorg3d]\nstride=2\nreverse=1\n", 8, 2, 3),
])
def test_reorg(body, c, h, w):
    fd_check(body, c, h, w)


@pytest.mark.parametrize("opts", ["", "noadjust=1\n", "flip=1\n"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_training_window(opts, seed):
    fd_check(f"[crop]\ncrop_height=3\ncrop_width=4\n{opts}", c=2, h=5, w=6, seed=seed)


def test_crop_gradient_is_zero_outside_the_window():
    net = tiny_net("[crop]\ncrop_height=3\ncrop_width=4\n", c=2, h=5, w=6)
    forward(net, spaced(np.random.default_rng(0), 2, 2, 5, 6))
    dx = net.layers[0].backward(np.ones((2, 2, 3, 4), np.float32), net)
    assert dx.sum() == 2 * 2 * 3 * 4 * 2          # the x2 of 2x - 1
    assert np.count_nonzero(dx) == 2 * 2 * 3 * 4


# --- route -------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    "[route]\nlayers=0\n",
    # the previous layer is a source, layer 0 twice
    "[upsample]\nstride=1\nscale=2\n\n[route]\nlayers=0,-1,0\n",
    "[upsample]\nstride=1\nscale=-1\n\n[route]\nlayers=0,1\ngroups=2\ngroup_id=1\n",
    "[upsample]\nstride=1\nscale=3\n\n[route]\nlayers=1,0\ngroups=4\ngroup_id=0\n",
])
def test_route(body):
    fd_check(body)


def test_route_sends_nothing_to_a_previous_layer_it_does_not_read():
    net = tiny_net("[empty]\n\n[upsample]\nstride=1\n\n[route]\nlayers=0\n")
    forward(net, spaced(np.random.default_rng(0), 2, 4, 6, 6))
    net.grads = [None] * 3
    assert net.layers[2].backward(np.ones((2, 4, 6, 6), np.float32), net) is None
    assert net.grads[1] is None and net.grads[0] is not None


# --- shortcut, scale_channels, sam -------------------------------------------------------
SHORTCUTS = {
    "same": "[upsample]\nstride=1\nscale=0.5\n\n[shortcut]\nfrom=0\n",
    "from_larger": "[maxpool]\nsize=2\nstride=2\n\n[shortcut]\nfrom=0\n",
    "from_smaller": "[upsample]\nstride=2\n\n[shortcut]\nfrom=0\n",
    "prev_more_channels": "[route]\nlayers=0,0\n\n[shortcut]\nfrom=0\n",
    "prev_fewer_channels": "[route]\nlayers=0\ngroups=2\ngroup_id=1\n\n[shortcut]\nfrom=0\n",
}


@pytest.mark.parametrize("kind", SHORTCUTS)
@pytest.mark.parametrize("mix", ["", "alpha=0.5\nbeta=-2\n"])
@pytest.mark.parametrize("act", ["linear", "logistic", "mish"])
def test_shortcut_p(kind, mix, act):
    fd_check(f"{SHORTCUTS[kind]}activation={act}\n{mix}", tol=2e-3)


@pytest.mark.parametrize("act", ["linear", "tanh", "swish"])
def test_shortcut_several_from(act):
    # AH's flat sum: layer 0 (4 channels) and layer 1 (8) onto the previous layer (8)
    fd_check("[route]\nlayers=0,0\n\n[upsample]\nstride=1\nscale=-1\n\n"
             f"[shortcut]\nfrom=0,1\nactivation={act}\n", tol=2e-3)


def test_shortcut_dy_becomes_darknets_delta():
    # Darknet multiplies the layer's delta by the activation derivative in place
    net = tiny_net("[empty]\n\n[shortcut]\nfrom=0\nactivation=logistic\n")
    forward(net, spaced(np.random.default_rng(0), 2, 4, 6, 6))
    y = net.outputs[1].astype(np.float64)
    dy = np.ones(y.shape, np.float32)
    net.grads = [None] * 2
    dx = net.layers[1].backward(dy, net)
    np.testing.assert_allclose(dy, y * (1 - y), rtol=1e-6)
    np.testing.assert_array_equal(dx, dy)
    np.testing.assert_array_equal(net.grads[0], dy)


@pytest.mark.parametrize("act", ["linear", "logistic", "swish"])
def test_scale_channels(act):
    # eps 1e-2: every output of a channel moves with its mean, their rounding adds up
    fd_check(f"[avgpool]\n\n[scale_channels]\nfrom=0\nactivation={act}\n", eps=1e-2,
             tol=2e-3)


@pytest.mark.parametrize("act", ["linear", "tanh"])
def test_scale_channels_wh(act):
    fd_check("[route]\nlayers=0\ngroups=4\ngroup_id=2\n\n"
             f"[scale_channels]\nfrom=0\nscale_wh=1\nactivation={act}\n", tol=2e-3)


@pytest.mark.parametrize("act", ["linear", "logistic", "mish"])
def test_sam(act):
    fd_check(f"[upsample]\nstride=1\nscale=-1.5\n\n[sam]\nfrom=0\nactivation={act}\n",
             eps=1e-2, tol=2e-3)


# --- l2norm and LRN ----------------------------------------------------------------------
def test_l2norm():
    fd_check("[l2norm]\n", eps=1e-2, tol=2e-3)


@pytest.mark.parametrize("size,alpha,beta,kappa", [(5, 0.0001, 0.75, 1.0), (3, 0.5, 0.75, 2.0),
                                                   (4, 0.2, 0.5, 1.0)])
def test_lrn_backward_is_darknets_approximation(size, alpha, beta, kappa):
    # dy * norm^-beta, the norms treated as constants (Darknet's rule)
    net = tiny_net(f"[lrn]\nsize={size}\nalpha={alpha}\nbeta={beta}\nkappa={kappa}\n", c=6)
    x = spaced(np.random.default_rng(size), 2, 6, 6, 6)
    forward(net, x)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    dx = net.layers[0].backward(dy, net)
    assert_close(dx, dy * naive.lrn_norms(x, size, alpha, kappa) ** -beta, 1e-5)


def test_lrn_approximation_is_close_at_the_usual_alpha():
    # with alpha = 1e-4 the neglected term is ~1e-4 of the gradient: finite differences
    # of the true function agree to 1e-3
    fd_check("[lrn]\nsize=5\nalpha=0.0001\nbeta=0.75\nkappa=1\n", c=6, eps=1e-2, tol=1e-3)


def test_lrn_approximation_differs_from_the_derivative_at_large_alpha():
    with pytest.raises(AssertionError):
        fd_check("[lrn]\nsize=3\nalpha=1\nbeta=0.75\nkappa=1\n", c=6, eps=1e-2, tol=0.05)


# --- losses ------------------------------------------------------------------------------
def one_hot(rng: np.random.Generator, n: int, groups: int, k: int) -> np.ndarray:
    t = np.zeros((n, groups, k), np.float32)
    for b in range(n):
        for g in range(groups):
            t[b, g, rng.integers(k)] = 1
    return t.reshape(n, groups * k)


@pytest.mark.parametrize("groups,temperature", [(1, 1.0), (3, 1.0), (2, 2.5), (1, 0.5)])
def test_softmax_cross_entropy(groups, temperature):
    net = tiny_net(f"[empty]\n\n[softmax]\ngroups={groups}\ntemperature={temperature}\n",
                  c=12, h=1, w=1)
    rng = np.random.default_rng(groups)
    x = (rng.standard_normal((2, 12, 1, 1)) * 2).astype(np.float32)
    t = one_hot(rng, 2, groups, 12 // groups)
    cost = forward(net, x, t)
    p = net.outputs[1]
    ref_cost, ref_grad = naive.softmax_xent(p.reshape(2, -1), t)
    assert cost == pytest.approx(ref_cost, rel=1e-6)
    net.backward(keep=True)
    # p - t whatever the temperature (Darknet's delta t - p; the true gradient would be
    # (p - t)/T)
    assert_close(net.grads[0].reshape(2, -1), ref_grad, 1e-6)
    if temperature == 1.0:
        # then it is the derivative of the cross-entropy
        check_gradient(lambda: forward(net, x, t), x, net.grads[0], eps=1e-2, rtol=1e-3)


def test_softmax_cost_counts_every_nonzero_truth_fully():
    # Darknet's error is -ln(p) wherever t != 0, not -t ln(p)
    net = tiny_net("[softmax]\n", c=4, h=1, w=1)
    x = np.array([[1, 2, 3, 4]], np.float32).reshape(1, 4, 1, 1)
    t = np.array([[0.5, 0, 0.25, 0]], np.float32)
    cost = forward(net, x, t)
    p = net.outputs[0].ravel().astype(np.float64)
    assert cost == pytest.approx(-np.log(p[0]) - np.log(p[2]), rel=1e-6)


def test_softmax_noloss_and_no_truth_pass_the_gradient_through():
    for body, truth in (("[softmax]\nnoloss=1\n", np.eye(1, 8, dtype=np.float32)),
                        ("[softmax]\n", None)):
        net = tiny_net("[empty]\n\n" + body, c=8, h=1, w=1)
        cost = forward(net, spaced(np.random.default_rng(0), 1, 8, 1, 1), truth)
        assert cost == 0.0 and net.layers[1].cost is None
        dy = np.arange(8, dtype=np.float32).reshape(1, 8, 1, 1)
        np.testing.assert_array_equal(backward_from(net, dy), dy)
        net.backward()
        assert net.grads[0] is None


def test_cost_after_softmax_doubles_the_gradient():
    # reference case train_resid: delta = 2(t - p) below the softmax, and the reported
    # cost is the mean of the cross-entropy and the sse
    net = tiny_net("[empty]\n\n[softmax]\n\n[cost]\n", c=6, h=1, w=1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 1, 1)).astype(np.float32)
    t = one_hot(rng, 2, 1, 6)
    cost = forward(net, x, t)
    p = net.outputs[1].reshape(2, -1)
    xent, g = naive.softmax_xent(p, t)
    sse = naive.cost_loss(p, t, "sse")[0]
    assert cost == pytest.approx((xent + sse) / 2, rel=1e-6)
    net.backward(keep=True)
    assert_close(net.grads[0].reshape(2, -1), 2 * g, 1e-6)
    assert_close(net.grads[1].reshape(2, -1), 2 * g, 1e-6)     # Darknet's softmax delta


@pytest.mark.parametrize("kind", ["sse", "masked", "smooth", "L1", "seg", "wgan"])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_cost_types(kind, scale):
    net = tiny_net(f"[empty]\n\n[cost]\ntype={kind}\nscale={scale}\n", c=5, h=2, w=3)
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 5, 2, 3)) * 2).astype(np.float32)
    t = (rng.standard_normal((2, 30)) * 2).astype(np.float32)
    t[0, :7] = -1234                                 # masked: no loss there
    t[1, 3] = x.reshape(2, -1)[1, 3]                 # diff exactly 0 (L1: delta -1)
    cost = forward(net, x, t)
    ref_cost, error, grad = naive.cost_loss(x.reshape(2, -1), t, kind, scale)
    assert cost == pytest.approx(ref_cost, rel=1e-6)
    assert_close(net.outputs[1].reshape(2, -1), error, 1e-6)   # Darknet's l.output
    net.backward(keep=True)
    assert_close(net.grads[0].reshape(2, -1), grad, 1e-6)
    assert (kind == "L1") == (net.grads[0].reshape(2, -1)[1, 3] == scale)


def test_cost_sse_gradient_is_half_the_derivative():
    # Darknet's sse delta is diff, not 2*diff; smooth in its quadratic part likewise
    net = tiny_net("[empty]\n\n[cost]\n", c=3, h=2, w=2)
    rng = np.random.default_rng(5)
    x = spaced(rng, 2, 3, 2, 2)
    t = rng.uniform(-1, 1, (2, 12)).astype(np.float32)
    forward(net, x, t)
    net.backward(keep=True)
    check_gradient(lambda: forward(net, x, t), x, 2 * net.grads[0], eps=1e-2, rtol=1e-3)


def test_cost_at_inference_and_without_truth_is_silent():
    net = tiny_net("[cost]\n", c=2, h=1, w=1)
    x = np.ones((1, 2, 1, 1), np.float32)
    assert not net.forward(x).any() and net.layers[0].cost is None
    assert forward(net, x) == 0.0 and net.layers[0].cost is None


def test_logistic_cross_entropy():
    net = tiny_net("[empty]\n\n[logistic]\n", c=3, h=2, w=2)
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2, 3, 2, 2)) * 2).astype(np.float32)
    t = rng.uniform(0, 1, (2, 12)).astype(np.float32)
    cost = forward(net, x, t)
    ref_cost, ref_grad = naive.logistic_xent(net.outputs[1].reshape(2, -1), t)
    assert cost == pytest.approx(ref_cost, rel=1e-6)
    net.backward(keep=True)
    assert_close(net.grads[0].reshape(2, -1), ref_grad, 1e-6)
    # p - t is the derivative of the logistic cross-entropy w.r.t. the logits
    check_gradient(lambda: forward(net, x, t), x, net.grads[0], eps=1e-2, rtol=1e-3)


def test_loss_truth_of_the_wrong_size_is_an_error():
    net = tiny_net("[softmax]\n", c=4, h=1, w=1)
    with pytest.raises(CfgError, match="truth has 3 values per image"):
        forward(net, np.zeros((1, 4, 1, 1), np.float32), np.zeros((1, 3), np.float32))


# --- against Darknet (grads.npz) ---------------------------------------------------------
def darknet_case(name: str):
    case = need(CASES / name)
    net = Network(load_graph(case / "net.cfg"))
    ref = np.load(case / "grads.npz")
    truth = np.fromfile(case / "truth.bin", dtype="<f4")[None]
    for layer in net.layers:
        net.outputs[layer.index] = ref[f"train_out_{layer.index:03d}"].reshape(
            1, *layer.out_shape)
    net.train, net.truth = True, truth
    net.grads = [None] * len(net.layers)
    cost = float((case / "train_meta.txt").read_text().split("cost")[1].split()[0])
    return net, ref, cost


def run_layer(net: Network, ref, i: int) -> float | None:
    """Layer i's train-mode forward on Darknet's input; checks the output, returns cost."""
    layer = net.layers[i]
    out = layer.forward(net.outputs[i - 1], net)
    assert rel_error(out, ref[f"train_out_{i:03d}"]) <= REL_BAR, i
    net.outputs[i] = out
    return layer.cost if hasattr(layer, "cost") else None


def leaky_grad(y: np.ndarray) -> np.ndarray:
    return np.where(y > 0, 1.0, 0.1)


def test_train_small_maxpool_and_softmax_match_darknet():
    net, ref, cost = darknet_case("train_small")
    # softmax (6): the only cost; its gradient is the delta of the connected layer below
    assert run_layer(net, ref, 6) == pytest.approx(cost, rel=1e-5)
    dx = net.layers[6].backward(None, net)
    assert rel_error(-dx, ref["delta_005"]) <= REL_BAR
    # maxpools (3, 1): Darknet's delta of the pool in, the conv below sums it (times
    # leaky') into its bias gradient
    for i in (3, 1):
        run_layer(net, ref, i)
        dy = -ref[f"delta_{i:03d}"].reshape(1, *net.layers[i].out_shape)
        dx = net.layers[i].backward(np.ascontiguousarray(dy), net)
        y = ref[f"train_out_{i - 1:03d}"].reshape(dx.shape)
        gbias = -(dx * leaky_grad(y)).sum(axis=(0, 2, 3))
        assert rel_error(gbias, ref[f"gbias_{i - 1:03d}"]) <= REL_BAR, i


def test_train_resid_shortcut_avgpool_softmax_cost_match_darknet():
    net, ref, cost = darknet_case("train_resid")
    costs = [run_layer(net, ref, i) for i in (3, 6, 7, 8)]
    assert np.mean(costs[2:]) == pytest.approx(cost, rel=1e-5)
    # cost (8) and softmax (7): t - p each, so 2(t - p) below the softmax
    d8 = net.layers[8].backward(None, net)
    assert rel_error(-d8, ref["delta_008"]) <= REL_BAR
    d7 = net.layers[7].backward(d8.copy(), net)
    assert rel_error(-d7, ref["delta_007"]) <= REL_BAR
    assert rel_error(-d7, ref["delta_006"]) <= REL_BAR
    # avgpool (6): the linear conv 5 below has its delta unchanged
    d6 = net.layers[6].backward(np.ascontiguousarray(-ref["delta_006"].reshape(1, 6, 1, 1)),
                                net)
    assert rel_error(-d6, ref["delta_005"]) <= REL_BAR
    # shortcut (3), leaky: Darknet's delta_003 is after the activation derivative
    y3 = ref["train_out_003"]
    dy = np.ascontiguousarray((-ref["delta_003"] / leaky_grad(y3)).astype(np.float32)
                              .reshape(1, 8, 10, 10))
    d3 = net.layers[3].backward(dy, net)
    assert rel_error(-dy, ref["delta_003"]) <= REL_BAR
    # conv 2 (BN, linear) sums what reached it into its bias gradient
    assert rel_error(-d3.sum(axis=(0, 2, 3)), ref["gbias_002"]) <= REL_BAR
    np.testing.assert_array_equal(net.grads[0], d3)              # from=-3, alpha = beta = 1
