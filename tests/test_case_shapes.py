"""Shapes and parameter counts equal Darknet's for every reference case."""
from __future__ import annotations

import json

import pytest

from darkcfg import load_graph

from .conftest import CASES, listing

CASE_DIRS = [p for p in listing(CASES, "*") if (p / "meta.txt").exists()]


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda p: p.name)
def test_shapes_and_params(case):
    graph = load_graph(case / "net.cfg")
    meta = [line.split() for line in (case / "meta.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert len(meta) == len(graph.layers)
    for layer, row in zip(graph.layers, meta):
        idx, kind = int(row[0]), row[1]
        out_c, out_h, out_w, outputs, in_c, in_h, in_w, inputs = map(int, row[2:10])
        assert idx == layer.index and kind == layer.type
        assert layer.outputs == outputs, (idx, kind)
        if out_c:       # softmax/cost report no c,h,w
            assert layer.out_shape == (out_c, out_h, out_w), (idx, kind)
        # Darknet's own fields: a route's and a shortcut's `inputs` is its output size, a
        # shortcut's input c,h,w is its `from` layer's, a connected layer's is 1x1xinputs.
        if kind in ("route", "shortcut"):
            assert inputs == outputs
        else:
            assert layer.inputs == inputs, (idx, kind)
        if kind == "shortcut":
            assert graph.layers[layer.sources[0]].out_shape == (in_c, in_h, in_w)
        elif kind == "connected":
            assert (in_c, in_h, in_w) == (inputs, 1, 1)
        elif in_c:      # route reports no input c,h,w
            assert layer.in_shape == (in_c, in_h, in_w), (idx, kind)
    info = json.loads((case / "case.json").read_text())
    assert graph.nparams == info["params"]
    assert sum(lay.conv_flops() for lay in graph.layers) / 1e9 == \
        pytest.approx(info["conv_BFLOPs"], abs=6e-5)
    assert 20 + 4 * graph.nparams == info["weights_bytes"]
