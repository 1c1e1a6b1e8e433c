"""Every Darknet cfg of both lineages parses, sizes and summarises."""
from __future__ import annotations

import json
import warnings

import pytest

from darkcfg import CfgError, load_graph
from darkcfg.errors import CfgWarning
from darkcfg.summary import format_table, to_dot, to_json

from .conftest import DARKNET_CFG, listing, need

# cfgs that only load leniently, and why (Darknet itself tolerates each of these).
LENIENT = {
    "alexeyab/cspx-p7-mish.cfg": "a [yolo] mask uses anchor 19 but num=16 (20 anchors listed)",
    "alexeyab/cspx-p7-mish_hp.cfg": "'anchors' has '61,45    61,45': a missing comma",
    "alexeyab/efficientnet-lite3.cfg": "[net] sets momentum and decay twice",
    "alexeyab/efficientnet_b0.cfg": "[net] sets momentum and decay twice",
    "alexeyab/yolo9000.cfg": "[net] sets batch and subdivisions twice",
    "pjreddie/yolo9000.cfg": "[net] sets batch and subdivisions twice",
    "alexeyab/yolov3-openimages.cfg": "[net] sets batch and subdivisions twice",
    "pjreddie/yolov3-openimages.cfg": "[net] sets batch and subdivisions twice",
    "alexeyab/yolov4-sam-mish-csp-reorg-bfm.cfg": "[yolo] has a key 'beta1' no Darknet reads",
}
CFGS = listing(DARKNET_CFG, "*/*.cfg")


def test_reference_cfgs_present():
    need(DARKNET_CFG)
    assert len(CFGS) >= 139


@pytest.mark.parametrize("path", CFGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_parses_and_summarises(path):
    key = f"{path.parent.name}/{path.name}"
    if key in LENIENT:
        with pytest.raises(CfgError):
            load_graph(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph = load_graph(path, strict=False)
        assert any(issubclass(w.category, CfgWarning) for w in caught)
    else:
        graph = load_graph(path)
    assert graph.layers
    table = format_table(graph)
    assert table.count("\n") >= len(graph.layers)
    doc = json.loads(to_json(graph))
    assert len(doc["layers"]) == len(graph.layers)
    for layer, row in zip(graph.layers, doc["layers"]):
        assert row["output"] == list(layer.out_shape)
        assert all(d > 0 for d in row["output"])
    dot = to_dot(graph)
    assert dot.startswith("digraph") and dot.count("->") >= len(graph.layers)
