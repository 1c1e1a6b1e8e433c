"""[local] (locally connected): Darknet's reference case train_local (outputs, gradients,
weights after two SGD steps), a naive NumPy loop on other shapes, finite differences, and
the refusal of the pad/size pairs Darknet computes garbage for."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.errors import CfgError
from darkcfg.graph import load_graph
from darkcfg.network import Network

from . import naive_yolov1 as naive
from .conftest import REFERENCE, need
from .helpers import check_gradient, rand, tiny_net
from .reference import REL_BAR, check_sgd_steps, rel_error

RLY = REFERENCE / "recurrent_local_yolov1" / "cases"


def train_local() -> tuple[Network, np.ndarray, np.ndarray]:
    case = need(RLY / "train_local")
    net = Network(load_graph(case / "net.cfg"))
    net.load_weights(case / "weights.weights")
    x = np.fromfile(case / "input.bin", "<f4").reshape(1, *net.input_shape)
    truth = np.fromfile(case / "truth.bin", "<f4")[None]
    return net, x, truth


def test_train_local_outputs_and_gradients_match_darknet():
    net, x, truth = train_local()
    case = RLY / "train_local"
    ref = np.load(case / "grads.npz")
    cost = net.forward_train(x, truth)
    assert cost == pytest.approx(1.94716859, rel=1e-5)      # train_meta.txt, step 1
    for i in range(4):
        assert rel_error(net.outputs[i], ref[f"train_out_{i:03d}"]) <= REL_BAR, i
    net.backward(keep=True)
    # Darknet's *_updates are minus the gradient
    for i in range(3):
        for ours, theirs in (("biases", "gbias"), ("weights", "gweight")):
            err = rel_error(-net.layers[i].grads[ours], ref[f"{theirs}_{i:03d}"])
            assert err <= REL_BAR, (i, ours, err)


def test_train_local_weights_after_one_and_two_steps():
    net, x, truth = train_local()
    check_sgd_steps(net, x, truth, RLY / "train_local", costs=[1.94716859, 1.22518909])


def test_inference_output_matches_darknet():
    net, x, _ = train_local()
    ref = np.load(RLY / "train_local" / "outputs.npz")
    net.forward(x)
    for i in range(4):
        assert rel_error(net.outputs[i], ref[f"layer_{i:03d}"]) <= REL_BAR, i


SHAPES = [  # c, h, w, filters, size, stride, pad
    (3, 7, 9, 4, 3, 1, 1),
    (2, 8, 5, 3, 3, 2, 1),
    (2, 6, 7, 2, 3, 2, 0),
    (3, 5, 6, 2, 1, 1, 0),
    (1, 9, 8, 2, 5, 2, 2),     # pad = (size-1)/2: the grids agree
    (2, 6, 6, 3, 2, 2, 0),
]


def local_net(c, h, w, filters, size, stride, pad, act="tanh"):
    # an [empty] first, so that [local] passes a gradient down
    return tiny_net(f"[empty]\n[local]\nfilters={filters}\nsize={size}\nstride={stride}\n"
                    f"pad={pad}\nactivation={act}\n", c=c, h=h, w=w)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_naive_loop(shape, rng):
    net = local_net(*shape, act="linear")
    lay = net.layers[1]
    for arr in lay.params.values():
        arr[...] = rand(rng, *arr.shape)
    x = rand(rng, 2, *net.input_shape)
    out = net.forward(x)
    ref = naive.local(x, lay.params["weights"], lay.params["biases"], shape[5], shape[6])
    assert out.shape == ref.shape
    assert rel_error(out, ref) <= 1e-6


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_backward_matches_finite_differences(shape, rng):
    """A linear function of the output through tanh: every gradient against central
    differences of the naive forward in float64."""
    c, h, w, _, _, stride, pad = shape
    net = local_net(*shape)
    lay = net.layers[1]
    for arr in lay.params.values():
        arr[...] = rand(rng, *arr.shape, scale=0.5)
    x = rand(rng, 2, c, h, w)
    net.train = True
    y = lay.forward(x, net)
    r = rand(rng, *y.shape)
    dx = lay.backward(r.copy(), net)
    net.train = False
    p = {k: v.astype(np.float64) for k, v in lay.params.items()}
    xd = x.astype(np.float64)

    def loss() -> float:
        return float(np.sum(np.tanh(naive.local(xd, p["weights"], p["biases"], stride,
                                                pad)) * r))
    check_gradient(loss, xd, dx, eps=1e-4, rtol=1e-4, what="dx")
    check_gradient(loss, p["biases"], lay.grads["biases"], eps=1e-4, rtol=1e-4, what="db")
    entries = rng.choice(p["weights"].size, 60, replace=False)
    check_gradient(loss, p["weights"], lay.grads["weights"], entries, eps=1e-4, rtol=1e-4,
                   what="dw")


def test_pad_that_darknet_mis_sizes_is_refused(write_cfg):
    path = write_cfg("[net]\nwidth=8\nheight=8\nchannels=2\n[local]\nfilters=2\nsize=5\n"
                     "stride=1\npad=1\n")
    graph = load_graph(path)                 # summarises: Darknet sizes it 8 x 8
    assert graph.layers[0].out_shape == (2, 8, 8)
    with pytest.raises(CfgError, match=r"size=5 and pad=1.*use pad=2"):
        Network(graph)


def test_init_draws_every_location(rng):
    net = local_net(3, 6, 6, 4, 3, 1, 1)
    net.init_weights(seed=0)
    wt = net.layers[1].params["weights"]
    bound = np.sqrt(2.0 / 27)
    assert np.all(np.abs(wt) <= bound) and np.all(np.abs(wt).reshape(len(wt), -1).max(1) > 0)
