"""Every layer of every reference case matches Darknet's output (rel <= 1e-4)."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.graph import load_graph
from darkcfg.network import Network

from .reference import REL_BAR, case_dirs, case_input, rel_error, weights_path

CASES = case_dirs()


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_every_layer_matches_darknet(case, tmp_path):
    net = Network(load_graph(case / "net.cfg"))
    report = net.load_weights(weights_path(case, tmp_path))
    assert report.complete
    c, h, w = net.input_shape
    out = net.forward(case_input(case).reshape(1, c, h, w))
    ref = np.load(case / "outputs.npz")
    worst = []
    for layer in net.layers:
        expected = ref[f"layer_{layer.index:03d}"]
        if layer.type == "cost":       # [cost] at inference leaves zeros: nothing to compare
            continue
        worst.append((rel_error(net.outputs[layer.index], expected), layer.index, layer.type))
    bad = [w for w in worst if not w[0] <= REL_BAR]
    assert not bad, "layers off Darknet (rel, index, type): " + repr(bad)
    # forward returns the output layer's values in an array of the caller's own
    np.testing.assert_array_equal(out, net.outputs[net.output_index])
    assert not np.shares_memory(out, net.outputs[net.output_index])
