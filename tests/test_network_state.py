"""A Network's state: declared when it is built, and its own (not its Graph's)."""
from __future__ import annotations

import numpy as np

from darkcfg.cfg import parse_cfg
from darkcfg.graph import build_graph
from darkcfg.network import Network

CFG = """[net]
batch=2
width=6
height=6
channels=2
learning_rate=0.1
momentum=0.9
decay=0.0005

[convolutional]
filters=3
size=3
pad=1
batch_normalize=1
activation=leaky

[maxpool]
size=2
stride=2

[connected]
output=4
activation=linear

[softmax]
"""


def graph():
    return build_graph(parse_cfg(CFG, "state.cfg"), batch=None)


def test_two_networks_from_one_graph_do_not_share_parameters():
    g = graph()
    a, b = Network(g), Network(g)
    a.init_weights(1)
    b.init_weights(2)
    for la, lb in zip(a.layers, b.layers):
        assert la is not lb
        for name in la.params:
            assert not np.shares_memory(la.params[name], lb.params[name]), (la.index, name)
    wa = a.layers[0].params["weights"].copy()
    assert not np.array_equal(wa, b.layers[0].params["weights"])
    # training one leaves the other where it was
    x = np.random.default_rng(0).random((2, 2, 6, 6), dtype=np.float32)
    truth = np.eye(4, dtype=np.float32)[[1, 3]]
    before = b.forward(x)
    a.train_step(x, truth)
    assert not np.array_equal(a.layers[0].params["weights"], wa)
    np.testing.assert_array_equal(b.forward(x), before)
    # the graph itself holds no parameters, and its network's graph is the network's own
    assert not hasattr(g.layers[0], "params")
    assert a.graph.layers is a.layers and a.graph.net is g.net


def test_every_attribute_is_declared_when_the_network_is_built(tmp_path):
    net = Network(graph())
    declared = set(vars(net))
    x = np.random.default_rng(0).random((2, 2, 6, 6), dtype=np.float32)
    truth = np.eye(4, dtype=np.float32)[[0, 2]]
    net.forward(x)
    net.forward_train(x, truth)
    net.backward(keep=True)
    net.add_grad(0, np.ones((2, 3, 6, 6), np.float32))
    net.train_step(x, truth)
    net.save_weights(tmp_path / "s.weights")
    net.load_weights(tmp_path / "s.weights")
    assert set(vars(net)) == declared, set(vars(net)) ^ declared
    assert net.last_rate is not None and net.header is not None
