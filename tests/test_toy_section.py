"""Adding a section is one new file in darkcfg/layers and nothing else.

A toy section module is written to a temporary folder that is made part of the
darkcfg.layers package; the package's discovery imports it (no list to edit), its
`@register` makes cfgs with it build, and it runs through the summary, forward, backward
and the .weights round trip like any shipped section. Afterwards it is gone again (the
README's table is generated from the registry and must not list it).
"""
from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import darkcfg.layers
from darkcfg import CfgError
from darkcfg.cfg import parse_cfg
from darkcfg.docs import sections_markdown
from darkcfg.graph import build_graph
from darkcfg.layers import REGISTRY
from darkcfg.network import Network
from darkcfg.summary import format_table

from .conftest import ROOT
from .helpers import check_gradient, rand

TOY = '''"""[toy_affine] / [toy]: y = weights[c] * x + biases[c] + shift, per channel."""
from __future__ import annotations

import numpy as np

from ..options import Opt
from .base import Layer, register


@register
class ToyAffine(Layer):
    type = "toy_affine"
    aliases = ("toy",)
    doc = "a test's section"
    options = {"shift": Opt("float", 0.0, "added to every output")}

    def param_shapes(self):
        c = self.in_shape[0]
        return [("biases", (c,)), ("weights", (c,))]

    def flops(self):
        return 2.0 * self.outputs

    def row(self):
        return f"toy_affine                                     {self.inputs:4d}"

    def forward(self, x, net):
        self._x = x if net.train else None
        w = self.params["weights"][None, :, None, None]
        b = self.params["biases"][None, :, None, None]
        return (x * w + b + np.float32(self.opts["shift"])).astype(np.float32)

    def backward(self, dy, net):
        if dy is None:
            return None
        self.grads["weights"] += (dy * self._x).sum(axis=(0, 2, 3))
        self.grads["biases"] += dy.sum(axis=(0, 2, 3))
        return dy * self.params["weights"][None, :, None, None]

    # the file holds every array back to front (a layout of its own, via the hooks)
    def weights_from_file(self, name, flat, header):
        return flat[::-1].reshape(self.params[name].shape)

    def weights_to_file(self, name, array, header):
        return array.reshape(-1)[::-1]
'''

CFG = """[net]
width=5
height=4
channels=3

[convolutional]
filters=2
size=3
pad=1
activation=linear

[toy]
shift=0.25

[convolutional]
filters=3
size=1
activation=linear
"""


@contextmanager
def toy_section(folder: Path):
    """darkcfg.layers with toy_affine.py in `folder`, imported by the package's own
    discovery; restored afterwards."""
    (folder / "toy_affine.py").write_text(TOY)
    package = darkcfg.layers
    old_path = list(package.__path__)
    package.__path__.append(str(folder))
    importlib.invalidate_caches()
    try:
        package._import_sections()
        yield REGISTRY["toy_affine"]
    finally:
        package.__path__[:] = old_path
        REGISTRY.pop("toy_affine", None)
        sys.modules.pop("darkcfg.layers.toy_affine", None)
    assert "toy_affine" not in REGISTRY
    assert sections_markdown() in (ROOT / "README.md").read_text()


def toy_net() -> Network:
    net = Network(build_graph(parse_cfg(CFG, "toy.cfg")))
    rng = np.random.default_rng(3)
    for layer in net.layers:
        for arr in layer.params.values():
            arr[...] = rand(rng, *arr.shape)
    net.params_changed()
    return net


def test_unknown_before_the_toy_file_exists():
    with pytest.raises(CfgError, match=r"toy.cfg:12: unknown section \[toy\]"):
        build_graph(parse_cfg(CFG, "toy.cfg"))


def test_summary_lists_the_toy_section(tmp_path):
    with toy_section(tmp_path) as cls:
        graph = build_graph(parse_cfg(CFG, "toy.cfg"))
        assert type(graph.layers[1]) is cls and graph.layers[1].section.name == "toy_affine"
        table = format_table(graph)
        row = table.splitlines()[2]
        assert row.startswith("    1 toy_affine") and row.split()[3] == "4"  # 2 + 2 params
        # conv 3->2 (2 + 2*3*3*3) + toy (2 + 2) + conv 2->3 (3 + 3*2)
        assert "params 69 " in table
        assert "`[toy_affine]` (`[toy]`)" in sections_markdown()


def test_forward_and_backward_through_the_toy_section(tmp_path, rng):
    with toy_section(tmp_path):
        net = toy_net()
        toy = net.layers[1]
        x = rand(rng, 2, 3, 4, 5)
        y = net.forward(x)
        # the toy's own output, computed here from its definition
        mid = net.outputs[0]
        w, b = toy.params["weights"], toy.params["biases"]
        want = mid * w[None, :, None, None] + b[None, :, None, None] + np.float32(0.25)
        np.testing.assert_allclose(net.outputs[1], want, rtol=1e-6, atol=1e-6)
        assert y.shape == (2, 3, 4, 5)

        # backward against central differences of the loss sum(y * r)
        r = rand(rng, *y.shape)

        def loss() -> float:
            net.train = True
            try:
                out = net._run(np.ascontiguousarray(x))
            finally:
                net.train = False
            return float(np.sum(out.astype(np.float64) * r))

        for layer in net.layers:
            for g in layer.grads.values():
                g[...] = 0
        loss()
        net.train = True
        net.backward(dy=r)
        net.train = False
        for name in ("weights", "biases"):
            check_gradient(loss, toy.params[name], toy.grads[name].copy(), eps=1e-2,
                           rtol=2e-3, what=name)
        first = net.layers[0]
        check_gradient(loss, first.params["weights"], first.grads["weights"].copy(),
                       range(0, first.params["weights"].size, 7), eps=1e-2, rtol=2e-3,
                       what="conv below the toy")


def test_weights_round_trip_uses_the_toy_layout(tmp_path):
    with toy_section(tmp_path):
        net = toy_net()
        path = tmp_path / "toy.weights"
        net.save_weights(path)
        data = np.fromfile(path, "<f4", offset=20)
        conv0 = 2 + 2 * 3 * 9
        toy = net.layers[1].params
        # the toy's arrays follow conv 0's, biases then weights, each back to front
        np.testing.assert_array_equal(data[conv0:conv0 + 2], toy["biases"][::-1])
        np.testing.assert_array_equal(data[conv0 + 2:conv0 + 4], toy["weights"][::-1])
        assert data.size == 69

        fresh = Network(build_graph(parse_cfg(CFG, "toy.cfg")))
        fresh.load_weights(path)
        for a, b in zip(net.layers, fresh.layers):
            for name in a.params:
                np.testing.assert_array_equal(a.params[name], b.params[name])
        fresh.save_weights(tmp_path / "again.weights")
        assert (tmp_path / "again.weights").read_bytes() == path.read_bytes()
