"""AlexeyAB's [Gaussian_yolo]: forward and box decoding against a naive loop written from
src/gaussian_yolo_layer.c, AlexeyAB's Gaussian_yolov3_BDD.cfg running and detecting at a
reduced size, and training refused by name."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.cfg import parse_cfg
from darkcfg.detection.detect import detect, network_boxes, nms_kind
from darkcfg.errors import CfgError
from darkcfg.geometry import nms_sort
from darkcfg.graph import build_graph, load_graph
from darkcfg.network import Network

from . import naive_gaussian_yolo as naive
from .conftest import DARKNET_CFG, need

ANCHORS = [(10, 14), (23, 27), (37, 58), (81, 82)]
HEAD = """[net]
width=64
height=48
channels={c}
[empty]
[Gaussian_yolo]
mask=1,3
anchors=10,14, 23,27, 37,58, 81,82
classes=3
num=4
scale_x_y={s}
yolo_point={point}
"""


def head_net(point="center", s=1.0):
    return build_graph(parse_cfg(HEAD.format(c=2 * 12, s=s, point=point), "g.cfg"))


@pytest.mark.parametrize("point", ["center", "left_top", "right_bottom"])
@pytest.mark.parametrize("s", [1.0, 1.05])
def test_forward_and_decoding_match_the_naive_loop(point, s):
    # the head reads a 24 x 48 x 64 "image" directly: any shape works for a yolo head
    net = Network(head_net(point, s))
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1.5, (1, 24, 48, 64)).astype(np.float32)
    out = net.forward(x)[0]
    ref = naive.forward(x[0], 2, 3, s)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    head = net.layers[1]
    boxes = head.decode(out, 64, 48, 0.3)
    want = naive.detections(out.astype(np.float64), [ANCHORS[1], ANCHORS[3]], 3, 64, 48,
                            0.3, point)
    assert len(boxes) == len(want) > 50
    np.testing.assert_allclose(boxes.xywh, [d["xywh"] for d in want], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(boxes.objectness, [d["objectness"] for d in want], rtol=1e-7)
    np.testing.assert_allclose(boxes.probs, [d["probs"] for d in want], rtol=1e-6,
                               atol=1e-7)
    assert np.count_nonzero(boxes.probs) > 10


def test_bdd_cfg_runs_and_detects_at_a_reduced_size():
    path = need(DARKNET_CFG / "alexeyab" / "Gaussian_yolov3_BDD.cfg")
    graph = load_graph(path, batch=1, width=64, height=64)
    assert graph.net.dialect == "alexeyab"
    assert nms_kind(graph) == ("default", 0.6)
    net = Network(graph)
    net.init_weights(0)
    for lay in net.layers:
        if "rolling_variance" in lay.params:
            lay.params["rolling_variance"][...] = 1     # as trained statistics would be
    net.params_changed()
    image = np.random.default_rng(0).uniform(0, 1, (3, 80, 120)).astype(np.float32)
    found = detect(net, image, thresh=0.2, nms=0.45)
    heads = [lay for lay in net.layers if lay.type == "Gaussian_yolo"]
    assert len(heads) == 3
    for h in heads:
        assert np.all(np.isfinite(net.outputs[h.index]))
    # stretched (AB without letter_box): the same boxes from the outputs of that forward
    with np.errstate(over="ignore", invalid="ignore"):     # random weights: exp(tw) = inf
        boxes = nms_sort(network_boxes(net.graph, [o[0] for o in net.outputs], 120, 80, 0.2,
                                       False), 0.45)
    assert len(found) == np.count_nonzero(boxes.probs) > 0


def test_training_is_refused_by_name():
    net = Network(head_net())
    net.train = True
    with pytest.raises(CfgError, match=r"training a \[Gaussian_yolo\] head"):
        net.forward_train(np.zeros((1, 24, 48, 64), np.float32),
                          np.zeros((1, 6 * 200), np.float32))
