"""The contract every registered section keeps: it builds, its forward has the declared
shape and is finite, its gradients equal finite differences, its weights round-trip and it
has a summary row. A newly registered section fails `test_every_section_is_covered` until
its file gives an `example` (layers/base.py)."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.activations import ACTIVATIONS
from darkcfg.cfg import parse_cfg
from darkcfg.graph import build_graph
from darkcfg.layers import REGISTRY
from darkcfg.network import Network

from .helpers import check_gradient

NET = "[net]\nwidth=6\nheight=6\nchannels=4\n[empty]\n"   # layer 0 carries d(loss)/d(input)

# Each section's own file carries its case (`Layer.example`, `Layer.example_loss`).
CASES = {name: (cls.example, cls.example_loss) for name, cls in REGISTRY.items()
         if cls.example is not None}
# Sections whose loss and gradient are tested elsewhere (detection losses need box truths:
# tests/test_yolo_loss.py, tests/test_yolov1.py, tests/test_gaussian_yolo.py; AlexeyAB's
# [contrastive] deltas are not the derivative of its cost: tests/test_contrastive.py).
ELSEWHERE = {"yolo", "region", "contrastive", "detection", "Gaussian_yolo"}
# Darknet's rules for these are not derivatives (src/activations.c: gradient);
# tests/test_kernels_conv.py checks them against a transcription of Darknet's rule instead.
NOT_DERIVATIVES = {"stair", "normalize_channels", "normalize_channels_softmax",
                   "normalize_channels_softmax_maxval"}
RUNNABLE = sorted(name for name, cls in REGISTRY.items() if cls.runnable)


def test_every_section_is_covered():
    missing = set(RUNNABLE) - set(CASES) - ELSEWHERE
    assert not missing, f"sections without an `example` for the contract: {sorted(missing)}"


def build(text: str) -> Network:
    net = Network(build_graph(parse_cfg(NET + text, "contract.cfg")))
    net.init_weights(1)
    for layer in net.layers:
        # Darknet's BN backward is not the exact derivative of its forward (N vs N-1 in
        # the variance): the true one is checked here, Darknet's by train_small/resid.
        if hasattr(layer, "exact_bn"):
            layer.exact_bn = True
    rng = np.random.default_rng(2)
    for layer in net.layers:
        for name, arr in layer.params.items():
            if name == "biases":
                arr[...] = rng.uniform(-0.5, 0.5, arr.shape)
            elif name == "scales" or name == "rolling_variance":
                arr[...] = rng.uniform(0.5, 1.5, arr.shape)
    return net


class Objective:
    """Σ out·R for an ordinary layer, factor·cost for a loss layer; evaluated in float64
    with the same dropout/crop draws every time."""

    def __init__(self, net: Network, factor: float | None, n: int = 3):
        rng = np.random.default_rng(3)
        self.net, self.factor = net, factor
        c, h, w = net.input_shape
        self.x = rng.uniform(-1, 1, (n, c, h, w)).astype(np.float32)
        last = net.layers[-1]
        self.truth = None
        if factor is not None:
            t = rng.uniform(0, 1, (n, last.outputs)).astype(np.float32)
            if last.type == "softmax":                 # a one-hot target per group
                g = last.groups
                size = last.outputs // g
                t = np.eye(size, dtype=np.float32)[rng.integers(0, size, (n, g))]
                t = t.reshape(n, -1)
            if last.type == "triplet":                 # classes 0, 0, 1: two triplets
                t = np.eye(2, dtype=np.float32)[np.arange(n) // 2 % 2]
            self.truth = t
        self.R = rng.standard_normal((n, *last.out_shape)).astype(np.float32)

    def __call__(self, x=None) -> float:
        self.net.rng = np.random.default_rng(11)
        self.net.forward_train(self.x if x is None else x, self.truth)
        last = self.net.layers[-1]
        if self.factor is not None:
            return self.factor * float(last.cost)
        return float(np.sum(self.net.outputs[last.index].astype(np.float64) * self.R))

    def gradients(self):
        for layer in self.net.layers:
            for g in layer.grads.values():
                g[...] = 0
        self()
        self.net.backward(keep=True, dy=None if self.factor is not None else self.R)
        return self.net.grads[0]


def fd_check(obj: Objective, arrays, eps: float = 1e-2, count: int = 12):
    """Central differences at `count` random entries of each (name, array, gradient) and at
    its largest gradient (random entries of a max pool's input can all have none), each
    within 2e-2 of the gradient's largest value (+ 1e-3)."""
    rng = np.random.default_rng(5)
    for name, arr, grad in arrays:
        picks = rng.choice(arr.size, min(count, arr.size), replace=False)
        picks = [*picks, int(np.abs(grad).argmax())]
        check_gradient(obj, arr, grad, picks, eps=eps, rtol=2e-2, atol=1e-3,
                       scale=max(np.abs(grad).max(), 1e-3), what=name)


@pytest.mark.parametrize("section", sorted(CASES))
def test_section_contract(section, tmp_path):
    text, factor = CASES[section]
    net = build(text)
    layer = net.layers[-1]
    assert layer.type == section
    assert layer.row()                                  # a summary row
    # inference: declared shape, finite
    obj = Objective(net, factor)
    out = net.forward(obj.x)
    assert net.outputs[layer.index].shape == (len(obj.x), *layer.out_shape)
    assert np.all(np.isfinite(out))
    # training: gradients w.r.t. the input and this layer's parameters
    dx = obj.gradients()
    assert dx is not None and dx.shape == obj.x.shape
    grads = {k: v.copy() for k, v in layer.grads.items()}
    dx = dx.copy()
    arrays = [("input", obj.x, dx)] + [(k, layer.params[k], grads[k]) for k in grads]
    fd_check(obj, arrays)
    # weights round trip, byte for byte
    path = tmp_path / "a.weights"
    net.save_weights(path)
    again = build(text)
    again.load_weights(path)
    for a, b in zip(net.layers, again.layers):
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k])
    again.save_weights(tmp_path / "b.weights")
    assert (tmp_path / "b.weights").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", [a for a in ACTIVATIONS if a not in NOT_DERIVATIVES])
def test_activation_gradient(name):
    net = build(f"[activation]\nactivation={name}\n")
    obj = Objective(net, None)
    # keep away from the kinks at 0 (and ±1, ±4, 6 for hardtan/lhtan/plse/relu6)
    obj.x = np.where(np.abs(obj.x) < 0.05, 0.3, obj.x).astype(np.float32) * 2.5
    obj.x = np.where(np.abs(np.abs(obj.x) - 1) < 0.05, 1.3, obj.x).astype(np.float32)
    dx = obj.gradients().copy()
    fd_check(obj, [("input", obj.x, dx)], eps=1e-2, count=24)
