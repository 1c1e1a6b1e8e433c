"""Detection heads own their decoding and options: a head is any section whose class says
`is_head` (not a list of type names), `jitter` is a real [yolo]/[region] option, and the box
geometry (darkcfg/geometry.py) agrees with hand-computed values and with the Numba IoU the
training targets use."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.errors import CfgError
from darkcfg.geometry import Boxes, iou, iou_matrix
from darkcfg.graph import load_graph
from darkcfg.layers import REGISTRY
from darkcfg.layers.base import Layer
from darkcfg.options import Opt

YOLO = """[net]
width=32
height=32
channels=3
[convolutional]
filters={filters}
size=1
stride=16
activation=linear
[{head}]
classes=1
num=1
mask=0
anchors=8,16
{extra}
"""

REGION = """[net]
width=32
height=32
channels=3
[convolutional]
filters=6
size=1
stride=16
activation=linear
[region]
classes=1
num=1
anchors=1,0.5
{extra}
"""


def graph_of(write_cfg, text):
    return load_graph(write_cfg(text))


# ---------------------------------------------------------------------------------------
# jitter: an option of the head, with Darknet's default

@pytest.mark.parametrize("head, filters", [("yolo", 6), ("Gaussian_yolo", 10)])
def test_yolo_heads_take_jitter_with_darknets_default(write_cfg, head, filters):
    # src/parser.c: parse_yolo_layer reads jitter with option_find_float(options,
    # "jitter", .2); Gaussian_yolo is a [yolo] with 9 values per anchor
    g = graph_of(write_cfg, YOLO.format(head=head, filters=filters, extra=""))
    assert g.layers[-1].opts["jitter"] == pytest.approx(0.2)
    g = graph_of(write_cfg, YOLO.format(head=head, filters=filters, extra="jitter=.3"))
    assert g.layers[-1].opts["jitter"] == pytest.approx(0.3)


def test_region_takes_jitter_with_darknets_default(write_cfg):
    # src/parser.c: parse_region_layer, option_find_float(options, "jitter", .2)
    assert graph_of(write_cfg, REGION.format(extra="")).layers[-1].opts["jitter"] == \
        pytest.approx(0.2)
    assert graph_of(write_cfg, REGION.format(extra="jitter=0")).layers[-1].opts["jitter"] == 0


@pytest.mark.parametrize("value", ["-0.1", "lots"])
def test_a_bad_jitter_is_refused_when_the_cfg_is_read(write_cfg, value):
    # before: accepted quietly by every command and refused only once training started
    with pytest.raises(CfgError, match="jitter") as e:
        graph_of(write_cfg, YOLO.format(head="yolo", filters=6, extra=f"jitter={value}"))
    assert ":15" in str(e.value)                    # the line of the key


# ---------------------------------------------------------------------------------------
# a head is what its class says, whatever its section is called

class ToyHead(Layer):
    """A detection head under a name no list knows: one box in the middle of the input,
    whose objectness is the largest value of its input."""
    type = "toy_head"
    options = {"classes": Opt("int", 1, "classes", min=1)}
    is_head = True

    def setup(self, layers):
        self.classes = self.opts["classes"]

    def forward(self, x, net):
        return x

    def decode(self, out, net_w, net_h, thresh):
        obj = np.float32(np.max(out))
        probs = np.full((1, self.classes), obj if obj > thresh else 0, np.float32)
        return Boxes(np.array([[0.5, 0.5, 0.5, 0.5]], np.float32), np.array([obj]), probs,
                     np.arange(1))


@pytest.fixture
def toy_head(monkeypatch):
    monkeypatch.setitem(REGISTRY, ToyHead.type, ToyHead)


def test_a_new_head_section_is_found_by_detect_train_and_run(write_cfg, toy_head):
    from darkcfg.detection.detect import detect, heads
    from darkcfg.network import Network
    from darkcfg.predict import detector_head
    from darkcfg.train.detector import is_detector
    cfg = write_cfg("[net]\nwidth=32\nheight=32\nchannels=3\n[toy_head]\nclasses=2\n")
    graph = load_graph(cfg)
    assert [lay.index for lay in heads(graph)] == [0]
    assert detector_head(graph) is graph.layers[0]
    assert is_detector(str(cfg))
    # a 64 x 32 image letterboxed into 32 x 32 takes 32 x 16 (grey 0.5 above and below):
    # the box (0.5, 0.5, 0.5, 0.5) of the network input is (0.5, 0.5, 0.5, 1.0) of the
    # image, pixels 16..48 across and (clipped) 0..31 down
    found = detect(Network(graph), np.full((3, 32, 64), 0.75, np.float32), thresh=0.5)
    assert [(d.class_id, d.prob, d.box) for d in found] == [
        (0, 0.75, (16, 0, 48, 31)), (1, 0.75, (16, 0, 48, 31))]
    assert (found[0].x, found[0].y, found[0].w, found[0].h) == (0.5, 0.5, 0.5, 1.0)


def test_a_classifier_is_not_a_detector(write_cfg):
    from darkcfg.predict import detector_head
    from darkcfg.train.detector import is_detector
    cfg = write_cfg("[net]\nwidth=4\nheight=4\nchannels=3\n[avgpool]\n[softmax]\n")
    assert detector_head(load_graph(cfg)) is None
    assert not is_detector(str(cfg))


# ---------------------------------------------------------------------------------------
# each head decodes its own output (hand-computed boxes)

def test_yolo_decodes_its_output(write_cfg):
    head = graph_of(write_cfg, YOLO.format(head="yolo", filters=6, extra="")).layers[-1]
    assert head.out_shape == (6, 2, 2)
    out = np.zeros((6, 2, 2), np.float32)
    out[4] = [[0.1, 0.2], [0.9, 0.3]]              # objectness: only cell (row 1, col 0)
    out[0, 1, 0], out[1, 1, 0] = 0.5, 0.25          # x, y inside the cell
    out[2, 1, 0], out[3, 1, 0] = 0.0, np.log(2.0)   # tw, th: exp -> 1 and 2
    out[5, 1, 0] = 0.75                              # class 0: 0.9 * 0.75 > 0.5
    boxes = head.decode(out, 32, 32, 0.5)
    # x = (0 + 0.5)/2, y = (1 + 0.25)/2, w = 1 * 8/32, h = 2 * 16/32
    np.testing.assert_allclose(boxes.xywh, [[0.25, 0.625, 0.25, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(boxes.objectness, [0.9])
    np.testing.assert_allclose(boxes.probs, [[0.675]], rtol=1e-6)


def test_region_decodes_its_output(write_cfg):
    head = graph_of(write_cfg, REGION.format(extra="")).layers[-1]
    out = np.zeros((6, 2, 2), np.float32)
    out[4] = [[0.1, 0.2], [0.3, 0.8]]              # objectness (entry coords=4)
    out[0, 1, 1], out[1, 1, 1] = 0.5, 0.5
    out[2, 1, 1], out[3, 1, 1] = np.log(2.0), 0.0
    out[5] = 0.75
    boxes = head.decode(out, 32, 32, 0.5)
    assert len(boxes) == 4                           # every cell is listed
    # anchors in grid cells: w = 2 * 1/2, h = 1 * 0.5/2
    np.testing.assert_allclose(boxes.xywh[3], [0.75, 0.75, 1.0, 0.25], rtol=1e-6)
    np.testing.assert_allclose(boxes.objectness, [0, 0, 0, 0.8], rtol=1e-6)
    np.testing.assert_allclose(boxes.probs[:, 0], [0, 0, 0, 0.6], rtol=1e-6)


# ---------------------------------------------------------------------------------------
# IoU, three ways, one definition

def test_iou_hand_values():
    a = np.array([0.0, 0.0, 2.0, 2.0], np.float32)
    b = np.array([[1.0, 1.0, 2.0, 2.0], [3.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]],
                 np.float32)
    # overlap 1 x 1 of union 4 + 4 - 1; touching edges (overlap 0); nested 1 / 4
    np.testing.assert_allclose(iou(a, b), [1 / 7, 0, 0.25], rtol=1e-6)
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 7, 0, 0.25]], rtol=1e-15)


def test_the_numba_iou_of_the_training_targets_mirrors_geometry(rng):
    from darkcfg.kernels.yolo_loss import _iou
    a = rng.uniform(0.1, 0.9, (200, 4)).astype(np.float32)
    b = a + rng.normal(0, 0.1, (200, 4)).astype(np.float32)
    b[:, 2:] = np.abs(b[:, 2:]) + np.float32(0.01)
    numba = np.array([_iou(*x, *y) for x, y in zip(a, b, strict=True)])
    exact = iou_matrix(a, b).diagonal()
    assert (exact > 0).sum() > 150                  # most pairs overlap
    np.testing.assert_allclose(numba, exact, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([iou(x, y[None])[0] for x, y in zip(a, b, strict=True)],
                               exact, rtol=2e-6, atol=1e-7)


def test_infinite_boxes_of_an_untrained_head_decode_quietly(write_cfg):
    """exp(tw) overflows for a head whose w/h outputs are huge: detect() returns Darknet's
    boxes (inf sizes clipped when drawn) without NumPy's overflow/invalid warnings, and
    mAP's IoU of such a box with a real one is no match."""
    import warnings

    from darkcfg.detection.detect import detect
    from darkcfg.network import Network
    net = Network(graph_of(write_cfg, YOLO.format(head="yolo", filters=6, extra="")))
    net.layers[0].params["biases"][:] = [0, 0, 200, 200, 5, 5]      # tw, th: exp(200)
    net.params_changed()
    image = np.full((3, 40, 24), 0.5, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = detect(net, image, thresh=0.5, nms=0.45)
        ious = iou_matrix(np.array([[0.5, 0.5, np.inf, np.inf]]),
                          np.array([[0.5, 0.5, 0.2, 0.2]]))
    assert found and all(np.isinf(d.w) and np.isinf(d.h) for d in found)
    assert all(d.box == (0, 0, 23, 39) for d in found)          # clipped into the image
    assert not ious[0, 0] > 0.5
