"""YOLOv1's [detection]: Darknet's reference case yolov1_fwd (every layer, and its 12 box
files decoded as examples/yolo.c test_yolo does), the loss against a naive NumPy loop and
finite differences, the per-cell truth, `darkcfg detect` and training through
`darkcfg train`, and every Darknet cfg with [local] or [detection] at a reduced size."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from darkcfg.detection.detect import detect, network_boxes
from darkcfg.errors import CfgError
from darkcfg.geometry import nms_sort
from darkcfg.graph import load_graph
from darkcfg.network import Network

from . import naive_yolov1 as naive
from .conftest import DARKNET_CFG, REFERENCE, listing, need
from .helpers import check_gradient, tiny_net
from .reference import REL_BAR, rel_error
from .test_detect import compare, read_box_file

RLY = REFERENCE / "recurrent_local_yolov1"
FILE = re.compile(r"boxes_(\d+)x(\d+)_t([\d.]+)_nms([\d.]+)\.txt")


def yolov1_fwd() -> Network:
    case = need(RLY / "cases" / "yolov1_fwd")
    net = Network(load_graph(case / "net.cfg"))
    net.load_weights(case / "weights.weights")
    net.forward(np.fromfile(case / "input.bin", "<f4").reshape(1, *net.input_shape))
    return net


def test_yolov1_forward_matches_darknet_layer_by_layer():
    net = yolov1_fwd()
    ref = np.load(RLY / "cases" / "yolov1_fwd" / "outputs.npz")
    assert len(ref) == len(net.layers) == 7
    for i in range(7):
        assert rel_error(net.outputs[i], ref[f"layer_{i:03d}"]) <= REL_BAR, i


def box_runs() -> list[tuple[Path, int, int, float, float]]:
    folder = need(RLY / "detection" / "yolov1_fwd")
    found = [(p, *(int(v) for v in FILE.fullmatch(p.name).groups()[:2]),
              *(float(v) for v in FILE.fullmatch(p.name).groups()[2:]))
             for p in sorted(folder.glob("boxes_*.txt"))]
    assert len(found) == 12, "reference box files missing"
    return found


def check_boxes(graph, outputs, *, box_rel: float, prob_rel: float) -> None:
    """Darknet passes w x h to get_detection_detections and multiplies the boxes by them
    (relative for 1 x 1, pixels for 640 x 480); darkcfg's boxes are relative."""
    for path, w, h, thresh, nms in box_runs():
        boxes = nms_sort(network_boxes(graph, outputs, w, h, thresh), nms)
        boxes.xywh = boxes.xywh * np.array([w, h, w, h], np.float32)
        compare(boxes, read_box_file(path), box_rel=box_rel, prob_rel=prob_rel,
                where=path.name)


def test_decoding_reproduces_darknets_boxes():
    """From Darknet's own [detection] output: order, surviving (entry, class) pairs,
    objectness and probs exactly, boxes to an ulp."""
    case = need(RLY / "cases" / "yolov1_fwd")
    graph = load_graph(case / "net.cfg")
    out = np.load(RLY / "detection" / "yolov1_fwd" / "det_outputs.npz")["layer_006"]
    check_boxes(graph, {6: out}, box_rel=3e-7, prob_rel=0)


def test_forward_then_decoding_reproduces_darknets_boxes():
    net = yolov1_fwd()
    check_boxes(net.graph, [o[0] for o in net.outputs], box_rel=1e-4, prob_rel=1e-4)


# ---------------------------------------------------------------------------------------
# the loss

def head_net(side=3, num=2, classes=3, softmax=0, sqrt=1, rescore=1, scales=(1, .5, 1, 5),
             batch=2):
    obj, noobj, cls, coord = scales
    n = side * side * (classes + 5 * num)
    net = tiny_net(f"[empty]\n[detection]\nclasses={classes}\ncoords=4\nside={side}\n"
                   f"num={num}\nsoftmax={softmax}\nsqrt={sqrt}\nrescore={rescore}\n"
                   f"object_scale={obj}\nnoobject_scale={noobj}\nclass_scale={cls}\n"
                   f"coord_scale={coord}\n", c=n, h=1, w=1)
    return net


def random_truth(rng, batch, side, classes, objects, small: bool = False) -> np.ndarray:
    """`small`: boxes of at most 0.05 near the cell centre (apart from `far` outputs)."""
    cells = side * side
    t = np.zeros((batch, cells, 5 + classes), np.float32)
    for b in range(batch):
        for i in rng.choice(cells, objects, replace=False):
            t[b, i, 0] = 1
            t[b, i, 1 + rng.integers(classes)] = 1
            t[b, i, 1 + classes:] = rng.uniform(0.05, 0.95, 4)
            if small:
                t[b, i, 1 + classes:] = (*rng.uniform(0.4, 0.6, 2), *rng.uniform(.01, .05, 2))
    return t.reshape(batch, -1)


def random_output(rng, batch, side, num, classes, far: bool = False) -> np.ndarray:
    """Class scores, scales and boxes in a plausible range; `far` puts every box in a
    corner of its cell with w, h 0.01 (0.1 squared), apart from `small` truths: every cell
    falls back to the RMSE choice."""
    cells = side * side
    cls = rng.uniform(0, 1, (batch, cells * classes))
    scale = rng.uniform(-0.3, 1, (batch, cells * num))
    box = rng.uniform(0.05, 0.95, (batch, cells, num, 4))
    if far:
        box[..., 2:] = 0.1
        box[..., :2] = rng.choice([0.02, 0.98], box[..., :2].shape)
    return np.concatenate([cls, scale, box.reshape(batch, -1)], 1).astype(np.float32)


CONFIGS = [dict(softmax=0, sqrt=1, rescore=1), dict(softmax=1, sqrt=1, rescore=1),
           dict(softmax=0, sqrt=0, rescore=0), dict(softmax=1, sqrt=0, rescore=1, num=3)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("far", [False, True], ids=["overlap", "rmse"])
def test_loss_matches_naive_loop(cfg, far, rng):
    side, classes, num = 3, 3, cfg.get("num", 2)
    net = head_net(side=side, classes=classes, **cfg)
    x = random_output(rng, 2, side, num, classes, far).reshape(2, -1, 1, 1)
    truth = random_truth(rng, 2, side, classes, 4, small=far)
    cost = net.forward_train(x, truth)
    lay = net.layers[1]
    out = net.outputs[1].reshape(2, -1)
    if cfg["softmax"]:           # the layer's own softmax over each cell's classes
        cls = x.reshape(2, -1)[:, :side * side * classes].reshape(2, -1, classes)
        p = np.exp(cls - cls.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        assert np.allclose(out[:, :side * side * classes], p.reshape(2, -1), atol=1e-6)
    total = 0.0
    for b in range(2):
        delta, c = naive.detection_delta(out[b], truth[b], side, num, classes,
                                         bool(cfg["sqrt"]), bool(cfg["rescore"]),
                                         1, .5, 1, 5)
        assert np.allclose(-lay._grad.reshape(2, -1)[b], delta, rtol=1e-5, atol=1e-6), b
        total += c
    assert cost == pytest.approx(total, rel=1e-5)
    assert lay.stats["count"] == 8


def test_gradient_is_half_the_derivative_of_the_cost(rng):
    """With unit scales and no rescore, Darknet's delta is minus half the derivative of its
    cost (the sum of the squared deltas): finite differences of the cost at the output,
    with every responsible box unchanged by the step."""
    side, classes, num = 3, 2, 2
    net = head_net(side=side, classes=classes, num=num, rescore=0, scales=(1, 1, 1, 1),
                   sqrt=1)
    x = random_output(rng, 1, side, num, classes).reshape(1, -1, 1, 1)
    truth = random_truth(rng, 1, side, classes, 5)
    lay = net.layers[1]
    cells = side * side
    scales = slice(cells * classes, cells * (classes + num))

    def chosen() -> np.ndarray:
        # the responsible boxes: their scale delta is 1 - s, the others' -s
        out = x.reshape(-1)
        delta, _ = naive.detection_delta(out, truth[0], side, num, classes, True, False,
                                         1, 1, 1, 1)
        return delta[scales] + out[scales] > 0.5

    before = chosen()
    assert before.sum() == 5
    net.forward_train(x, truth)
    grad = 2 * lay._grad.copy()
    check_gradient(lambda: net.forward_train(x, truth), x, grad, eps=1e-2, rtol=1e-4,
                   usable=lambda: np.array_equal(chosen(), before), least=x.size // 2)


def test_backward_passes_the_delta_down_unchanged(rng):
    net = head_net(softmax=1)
    x = random_output(rng, 2, 3, 2, 3).reshape(2, -1, 1, 1)
    truth = random_truth(rng, 2, 3, 3, 3)
    net.forward_train(x, truth)
    net.backward(keep=True)
    assert np.array_equal(net.grads[0], net.layers[1]._grad)


def test_cell_truth_follows_fill_truth_region(rng):
    net = head_net(side=4, classes=3)
    lay = net.layers[1]
    rows = np.zeros((2, 90 * 5), np.float32)
    rows[0, :15] = [0.30, 0.60, 0.2, 0.4, 2,      # cell row 2, col 1
                    0.99, 0.01, 0.5, 0.3, 0,      # cell row 0, col 3
                    0.70, 0.70, 0.004, 0.5, 1]    # too narrow: skipped
    rows[1, :10] = [0.10, 0.10, 0.3, 0.3, 1, 0.15, 0.20, 0.6, 0.6, 2]    # one cell, twice
    t = lay.cell_truth(rows, rng).reshape(2, 16, 8)
    assert np.flatnonzero(t[0, :, 0]).tolist() == [3, 9]
    np.testing.assert_allclose(t[0, 9], [1, 0, 0, 1, 0.2, 0.4, 0.2, 0.4], atol=1e-6)
    np.testing.assert_allclose(t[0, 3], [1, 1, 0, 0, 0.96, 0.04, 0.5, 0.3], atol=1e-6)
    assert np.flatnonzero(t[1, :, 0]).tolist() == [0]
    assert t[1, 0, 1:4].tolist() in ([0, 1, 0], [0, 0, 1])    # one of the two, at random


def test_wrong_truth_layout_is_refused(rng):
    from darkcfg.errors import DataError
    net = head_net()
    with pytest.raises(DataError, match="per-cell layout"):
        net.forward_train(random_output(rng, 2, 3, 2, 3).reshape(2, -1, 1, 1),
                          np.zeros((2, 450), np.float32))


# ---------------------------------------------------------------------------------------
# detect and train

CFG = """[net]
batch={batch}
subdivisions=1
width=32
height=32
channels=1
learning_rate=0.01
momentum=0.9
decay=0.0005
burn_in=5
policy=constant
max_batches={max_batches}

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[local]
size=3
stride=1
pad=1
filters=8
activation=leaky

[connected]
output={out}
activation=linear

[detection]
classes=2
coords=4
rescore=1
side=4
num=2
softmax=0
sqrt=1
jitter=.1
object_scale=1
noobject_scale=.5
class_scale=1
coord_scale=5
"""


def random_weights(net: Network) -> Network:
    """Darknet's initialisation, with BN rolling variances 1 instead of 0 (as after
    training): at 0 every BN layer multiplies by 316 and deep nets overflow."""
    net.init_weights(0)
    for lay in net.layers:
        if "rolling_variance" in lay.params:
            lay.params["rolling_variance"][...] = 1
    net.params_changed()
    return net


def yolov1_cfg(folder: Path, max_batches: int = 10, batch: int = 8) -> Path:
    path = folder / "yolov1_toy.cfg"
    path.write_text(CFG.format(batch=batch, max_batches=max_batches, out=16 * 12))
    return path


def test_detect_stretches_the_image_as_test_yolo(tmp_path):
    """`detect` on a 48 x 32 image: the network sees the image stretched to 32 x 32 and the
    boxes are not letterbox-corrected (examples/yolo.c: test_yolo)."""
    from darkcfg.data.images import resize
    net = random_weights(Network(load_graph(yolov1_cfg(tmp_path), batch=1)))
    image = np.random.default_rng(1).uniform(0, 1, (1, 32, 48)).astype(np.float32)
    found = detect(net, image, thresh=0.01, nms=0.45)
    net.forward(resize(image, 32, 32)[None])
    boxes = nms_sort(network_boxes(net.graph, [o[0] for o in net.outputs], 48, 32, 0.01),
                     0.45)
    assert found and len(found) == np.count_nonzero(boxes.probs)
    first = found[0]
    np.testing.assert_allclose([first.x, first.y, first.w, first.h],
                               boxes.xywh[first.entry], rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Darknet's own cfgs

SECTION = re.compile(r"^\s*\[(local|detection)\]", re.M | re.I)
CFGS = [p for p in listing(DARKNET_CFG, "*/*.cfg") if SECTION.search(p.read_text())]
# XNOR-net convolutions are outside these sections (README: options darkcfg does not compute)
REFUSED = {"xyolo.test.cfg": r"'xnor=1' is not computed by darkcfg"}


@pytest.mark.parametrize("path", CFGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_darknet_yolov1_cfgs_run_at_a_reduced_size(path, tmp_path):
    """Random weights at 64 x 64 (the [connected] before [detection] keeps its size; a
    [crop] crops 64 x 64 too): a finite output and boxes decoded from it."""
    assert len(CFGS) >= 12
    small = tmp_path / path.name
    small.write_text(re.sub(r"(?m)^(crop_height|crop_width)\s*=\s*\d+", r"\1=64",
                            path.read_text()))
    graph = load_graph(small, batch=1, width=64, height=64)
    if path.name in REFUSED:
        with pytest.raises(CfgError, match=REFUSED[path.name]):
            Network(graph)
        return
    net = random_weights(Network(graph))
    c = net.input_shape[0]
    x = np.random.default_rng(0).uniform(0, 1, (1, c, 64, 64)).astype(np.float32)
    out = net.forward(x)
    assert np.all(np.isfinite(out))
    boxes = network_boxes(net.graph, [o[0] for o in net.outputs], 1, 1, 0.2)
    head = net.layers[-1]
    assert len(boxes) == head.side ** 2 * head.num
