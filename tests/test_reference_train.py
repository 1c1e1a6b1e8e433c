"""Training steps against Darknet: train-mode outputs, gradients, and weights after 1 and 2
SGD steps (reference cases train_small and train_resid)."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.graph import load_graph
from darkcfg.network import Network

from .reference import REL_BAR, case_dirs, case_input, check_sgd_steps, rel_error, weights_path

CASES = [c for c in case_dirs("train_") if c.name in ("train_small", "train_resid")]


def make(case, tmp_path) -> Network:
    net = Network(load_graph(case / "net.cfg"))
    net.load_weights(weights_path(case, tmp_path))
    return net


def inputs(case, net):
    c, h, w = net.input_shape
    x = case_input(case).reshape(1, c, h, w)
    truth = np.fromfile(case / "truth.bin", dtype="<f4")[None]
    return x, truth


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_outputs_and_gradients_match_darknet(case, tmp_path):
    net = make(case, tmp_path)
    x, truth = inputs(case, net)
    ref = np.load(case / "grads.npz")
    cost = net.forward_train(x, truth)
    meta = (case / "train_meta.txt").read_text().split()
    assert cost == pytest.approx(float(meta[meta.index("cost") + 1]), rel=1e-4)
    for layer in net.layers:
        key = f"train_out_{layer.index:03d}"
        if key in ref and layer.type != "cost":
            assert rel_error(net.outputs[layer.index], ref[key]) <= REL_BAR, key
    net.backward(keep=True)
    for layer in net.layers:
        i = layer.index
        # Darknet's delta is minus the gradient; for conv/connected it is taken inside the
        # layer (before BN and activation), so compare those through their parameters.
        if layer.type not in ("convolutional", "connected") and net.grads[i] is not None:
            assert rel_error(-net.grads[i], ref[f"delta_{i:03d}"]) <= REL_BAR, (i, layer.type)
        for ours, theirs in (("biases", "gbias"), ("weights", "gweight"), ("scales", "gscale")):
            key = f"{theirs}_{i:03d}"
            if key in ref:
                assert rel_error(-layer.grads[ours], ref[key]) <= REL_BAR, key


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_weights_after_one_and_two_steps(case, tmp_path):
    net = make(case, tmp_path)
    x, truth = inputs(case, net)
    check_sgd_steps(net, x, truth, case)
