"""Box decoding and NMS against Darknet's own boxes, a slow reference, and hand cases; the
`darkcfg detect` command end to end."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from darkcfg.detection.detect import (
    Detection,
    detect,
    detections,
    network_boxes,
    nms_kind,
)
from darkcfg.geometry import correct_boxes, diou_nms_score, iou, letterbox_size, nms_sort
from darkcfg.graph import load_graph

from . import naive_boxes as naive
from .conftest import CASES, REFERENCE, need
from .helpers import darkcfg
from .reference import case_input, weights_path

DETECTION = REFERENCE / "detection"
FILE = re.compile(r"boxes_(\d+)x(\d+)_t([\d.]+)_nms([\d.]+)\.txt")
REFERENCE_FILES = {"real_yolov3_tiny": 12, "real_yolov2_tiny": 18}


# ---------------------------------------------------------------------------------------
# Darknet's boxes (../shared/reference/detection)

def read_box_file(path: Path) -> dict:
    """A boxes_*.txt file -> orig (N,), xywh (N, 4), objectness (N,), probs (N, C)."""
    rows, n = [], None
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("nboxes"):
            _, n, _, classes = line.split()
            n, classes = int(n), int(classes)
            continue
        rows.append(line.split())
    assert n == len(rows), path
    probs = np.zeros((n, classes), np.float32)
    for i, row in enumerate(rows):
        assert int(row[0]) == i
        for pair in row[7:]:
            c, p = pair.split(":")
            probs[i, int(c)] = np.float32(p)
    return {"orig": np.array([int(r[1]) for r in rows], np.int64).reshape(n),
            "xywh": np.array([r[2:6] for r in rows], np.float32).reshape(n, 4),
            "objectness": np.array([r[6] for r in rows], np.float32).reshape(n),
            "probs": probs}


def runs(case: str) -> list[tuple[Path, int, int, float, float]]:
    folder = need(DETECTION / case)
    found = []
    for path in sorted(folder.glob("boxes_*.txt")):
        w, h, t, nms = FILE.fullmatch(path.name).groups()
        found.append((path, int(w), int(h), float(t), float(nms)))
    assert len(found) == REFERENCE_FILES[case], "reference box files missing"
    return found


def compare(boxes, ref: dict, *, box_rel: float, prob_rel: float, where: str) -> None:
    assert len(boxes) == len(ref["orig"]), f"{where}: {len(boxes)} entries, Darknet " \
                                           f"{len(ref['orig'])}"
    np.testing.assert_array_equal(boxes.index, ref["orig"], err_msg=f"{where}: order")
    np.testing.assert_array_equal(boxes.probs != 0, ref["probs"] != 0,
                                  err_msg=f"{where}: which (entry, class) probs survive")
    # coordinates are fractions of the image: relative error, or absolute below 1 (a
    # centre near 0 is as precise as any other)
    scale = np.maximum(np.abs(ref["xywh"]), 1.0)
    worst = float((np.abs(boxes.xywh - ref["xywh"]) / scale).max(initial=0))
    assert worst <= box_rel, f"{where}: boxes off by {worst}"
    np.testing.assert_allclose(boxes.objectness, ref["objectness"], rtol=prob_rel, atol=0,
                               err_msg=f"{where}: objectness")
    np.testing.assert_allclose(boxes.probs, ref["probs"], rtol=prob_rel, atol=0,
                               err_msg=f"{where}: probs")


@pytest.mark.parametrize("case", sorted(REFERENCE_FILES))
def test_decoding_reproduces_darknet_boxes(case):
    """From Darknet's own head outputs: same entries in the same order, the same surviving
    probs (exactly: one float32 product each) and boxes to 1-2 ulp."""
    files = runs(case)
    graph = load_graph(CASES / case / "net.cfg")
    outputs = {int(k[len("layer_"):]): v for k, v in np.load(DETECTION / case /
                                                                "det_outputs.npz").items()}
    kind, beta = nms_kind(graph)
    assert kind == "default"
    for path, img_w, img_h, thresh, nms in files:
        boxes = nms_sort(network_boxes(graph, outputs, img_w, img_h, thresh), nms, kind, beta)
        compare(boxes, read_box_file(path), box_rel=3e-7, prob_rel=0, where=path.name)


@pytest.mark.parametrize("case", sorted(REFERENCE_FILES))
def test_forward_then_decoding_reproduces_darknet_boxes(case, tmp_path):
    """From the network input: our forward pass, then decoding (rel <= 1e-4)."""
    from darkcfg.network import Network
    files = runs(case)
    folder = CASES / case
    net = Network(load_graph(folder / "net.cfg"))
    net.load_weights(weights_path(folder, tmp_path))
    net.forward(case_input(folder).reshape(1, *net.input_shape))
    outputs = [None if out is None else out[0] for out in net.outputs]
    for path, img_w, img_h, thresh, nms in files:
        boxes = nms_sort(network_boxes(net.graph, outputs, img_w, img_h, thresh), nms)
        compare(boxes, read_box_file(path), box_rel=1e-4, prob_rel=1e-4, where=path.name)


# ---------------------------------------------------------------------------------------
# against the slow reference (tests/naive_boxes.py) on random head outputs

YOLO_CFG = """[net]
width={nw}
height={nh}
channels={c}
[yolo]
mask=0,1,2
anchors=3,4, 9,5, 6,12, 20,9, 14,30, 40,36
classes={classes}
num=6
new_coords={new_coords}
{extra}
[maxpool]
size=2
stride=2
[yolo]
mask=3,4,5
anchors=3,4, 9,5, 6,12, 20,9, 14,30, 40,36
classes={classes}
num=6
new_coords={new_coords}
{extra}
"""

REGION_CFG = """[net]
width={nw}
height={nh}
channels={c}
[region]
anchors=0.6,0.7, 1.9,2.1, 3.3,5.5
classes={classes}
coords=4
num=3
softmax=1
"""

IMAGE_SIZES = [(16, 12), (40, 12), (9, 31), (16, 16), (500, 667)]


def make_graph(tmp_path: Path, text: str):
    path = tmp_path / "net.cfg"
    path.write_text(text)
    # naive_boxes undoes pjreddie's letterbox; new_coords alone would choose alexeyab
    return load_graph(path, dialect="pjreddie")


def random_yolo_output(rng, anchors: int, classes: int, h: int, w: int,
                       new_coords: bool) -> np.ndarray:
    out = rng.uniform(0.02, 0.98, (anchors, 5 + classes, h, w)).astype(np.float32)
    if not new_coords:
        out[:, 2:4] = rng.normal(0, 0.8, (anchors, 2, h, w))
    return out.reshape(-1, h, w)


def naive_heads(graph) -> list[dict]:
    found = []
    for lay in graph.layers:
        if lay.type == "yolo":
            found.append({"kind": "yolo", "h": lay.out_shape[1], "w": lay.out_shape[2],
                          "classes": lay.opts["classes"], "mask": lay.opts["mask"],
                          "anchors": lay.opts["anchors"],
                          "new_coords": lay.opts["new_coords"]})
        elif lay.type == "region":
            found.append({"kind": "region", "h": lay.out_shape[1], "w": lay.out_shape[2],
                          "classes": lay.opts["classes"], "num": lay.opts["num"],
                          "coords": lay.opts["coords"], "anchors": lay.opts["anchors"]})
    return found


def assert_same(boxes, dets: list[dict], where: str) -> None:
    assert len(boxes) == len(dets), where
    np.testing.assert_array_equal(boxes.index, [d["orig"] for d in dets], err_msg=where)
    np.testing.assert_array_equal(boxes.xywh, np.array([d["bbox"] for d in dets],
                                                        np.float32).reshape(-1, 4),
                                  err_msg=where)
    np.testing.assert_array_equal(boxes.objectness, [d["objectness"] for d in dets],
                                  err_msg=where)
    np.testing.assert_array_equal(boxes.probs, np.array([d["prob"] for d in dets],
                                                        np.float32).reshape(len(dets), -1),
                                  err_msg=where)


@pytest.mark.parametrize("new_coords", [0, 1])
def test_yolo_decoding_and_nms_match_the_slow_reference(tmp_path, new_coords):
    rng = np.random.default_rng(10 + new_coords)
    classes, nw, nh = 3, 8, 6
    graph = make_graph(tmp_path, YOLO_CFG.format(nw=nw, nh=nh, c=3 * (5 + classes),
                                                 classes=classes, new_coords=new_coords,
                                                 extra=""))
    outs = {0: random_yolo_output(rng, 3, classes, 6, 8, new_coords),
            2: random_yolo_output(rng, 3, classes, 3, 4, new_coords)}
    heads = naive_heads(graph)
    checked = 0
    for img_w, img_h in IMAGE_SIZES:
        for thresh in (0.3, 0.6):
            boxes = network_boxes(graph, outs, img_w, img_h, thresh)
            ref = naive.decode(heads, [outs[0], outs[2]], nw, nh, img_w, img_h, thresh)
            assert_same(boxes, ref, f"{img_w}x{img_h} t{thresh}")
            for kind, nms in (("default", 0.45), ("default", 0.2), ("diounms", 0.3),
                              ("greedynms", 0.3), ("cornersnms", 0.45)):
                where = f"{img_w}x{img_h} t{thresh} {kind} {nms}"
                after = nms_sort(boxes, nms, kind, beta=0.8)
                assert_same(after, naive.nms(ref, classes, nms, kind, beta=0.8), where)
                checked += int(np.count_nonzero(boxes.probs) - np.count_nonzero(after.probs))
    assert checked > 100, "the random outputs should make NMS suppress many probs"


def test_region_decoding_and_nms_match_the_slow_reference(tmp_path):
    rng = np.random.default_rng(7)
    classes, nw, nh = 4, 7, 5
    graph = make_graph(tmp_path, REGION_CFG.format(nw=nw, nh=nh, c=3 * (5 + classes),
                                                   classes=classes))
    out = rng.uniform(0.0, 1.0, (3, 5 + classes, nh, nw)).astype(np.float32)
    out[:, 2:4] = rng.normal(0, 0.8, (3, 2, nh, nw))
    out[:, 5:] /= out[:, 5:].sum(axis=1, keepdims=True)     # a softmax over the classes
    out = out.reshape(-1, nh, nw)
    for img_w, img_h in IMAGE_SIZES:
        for thresh in (0.05, 0.2, 0.5):
            boxes = network_boxes(graph, {0: out}, img_w, img_h, thresh)
            ref = naive.decode(naive_heads(graph), [out], nw, nh, img_w, img_h, thresh)
            assert_same(boxes, ref, f"{img_w}x{img_h} t{thresh}")
            assert len(boxes) == 3 * nw * nh                  # every entry is listed
            after = nms_sort(boxes, 0.45)
            assert_same(after, naive.nms(ref, classes, 0.45), f"{img_w}x{img_h} t{thresh}")
            # entries with objectness 0 sit at the back, in the swap loop's order
            zero = after.objectness == 0
            assert not zero[:np.count_nonzero(~zero)].any()


@pytest.mark.parametrize("extra", ["scale_x_y=1.2", "scale_x_y=1.05\nnew_coords=1"])
def test_forward_then_decoding_match_the_slow_reference(tmp_path, extra):
    """From raw head inputs: the [yolo] forward (logistic, AH's scale_x_y, new_coords)
    and the decoding, against naive_boxes from the spec."""
    from darkcfg.network import Network
    new_coords = int("new_coords=1" in extra)
    classes, nw, nh = 2, 8, 6
    text = YOLO_CFG.format(nw=nw, nh=nh, c=3 * (5 + classes), classes=classes,
                           new_coords=0, extra=extra)
    text = text.replace("new_coords=0\n", "")
    net = Network(make_graph(tmp_path, text))
    rng = np.random.default_rng(5)
    raw = rng.normal(0, 1.5, (1, *net.input_shape)).astype(np.float32)
    if new_coords:
        raw = rng.uniform(0.05, 0.95, raw.shape).astype(np.float32)
    net.forward(raw)
    scale = float(extra.split("\n")[0].split("=")[1])
    act0 = naive.activate_yolo(raw[0], 3, classes, scale, bool(new_coords))
    np.testing.assert_allclose(net.outputs[0][0], act0, rtol=1e-6, atol=1e-7)
    heads = naive_heads(net.graph)
    outputs = [None if out is None else out[0] for out in net.outputs]
    for img_w, img_h in IMAGE_SIZES:
        boxes = nms_sort(network_boxes(net.graph, outputs, img_w, img_h, 0.4), 0.45)
        ref = naive.decode(heads, [outputs[0], outputs[2]], nw, nh, img_w, img_h, 0.4)
        assert_same(boxes, naive.nms(ref, classes, 0.45), f"{img_w}x{img_h}")


# ---------------------------------------------------------------------------------------
# hand cases

def test_letterbox_size_and_correction_examples():
    # README examples: net 160 -> 640x480 gives new_h 120; 500x667 gives new_w 119
    assert letterbox_size(640, 480, 160, 160) == (160, 120)
    assert letterbox_size(500, 667, 160, 160) == (119, 160)
    assert letterbox_size(640, 480, 416, 416) == (416, 312)
    assert letterbox_size(500, 667, 416, 416) == (311, 416)
    box = np.array([[0.5, 0.125, 0.2, 0.75]], np.float32)
    out = correct_boxes(box, 640, 480, 160, 160)
    np.testing.assert_allclose(out, [[0.5, 0.0, 0.2, 1.0]], rtol=1e-7)


def test_nms_is_stable_and_keeps_every_entry():
    # three equal boxes with equal probs: the first (in array order) survives
    xywh = np.array([[0.5, 0.5, 0.2, 0.2]] * 3 + [[0.1, 0.1, 0.1, 0.1]], np.float32)
    from darkcfg.geometry import Boxes
    probs = np.array([[0.6, 0], [0.6, 0.7], [0.6, 0.9], [0, 0.8]], np.float32)
    boxes = Boxes(xywh, np.array([0.9, 0.8, 0.95, 0.85], np.float32), probs, np.arange(4))
    after = nms_sort(boxes, 0.45)
    # class 1's stable sort leaves the order 2 (0.9), 3 (0.8), 1 (0.7), 0 (0)
    np.testing.assert_array_equal(after.index, [2, 3, 1, 0])
    np.testing.assert_array_equal(after.probs, np.array([[0, 0.9], [0, 0.8], [0, 0], [0.6, 0]],
                                                       np.float32))
    assert after.xywh.tolist() == boxes.xywh[[2, 3, 1, 0]].tolist()
    assert nms_sort(boxes, 0).probs.tolist() == boxes.probs.tolist()     # nms 0: none


def test_diou_nms_keeps_overlapping_boxes_with_distant_centres():
    a = np.array([0.5, 0.5, 0.4, 0.2], np.float32)
    b = np.array([[0.5, 0.55, 0.4, 0.2], [0.6, 0.5, 0.4, 0.2]], np.float32)
    plain = iou(a, b)
    np.testing.assert_allclose(plain, [0.6, 0.6], rtol=1e-6)
    # enclosing boxes: 0.4 x 0.25 and 0.5 x 0.2; squared centre distances 0.0025 and 0.01
    d = diou_nms_score(a, b, 0.6)
    np.testing.assert_allclose(d, [0.6 - (0.0025 / 0.2225) ** 0.6, 0.6 - (0.01 / 0.29) ** 0.6],
                               rtol=1e-5)
    from darkcfg.geometry import Boxes
    xywh = np.vstack([a, b[1]])
    boxes = Boxes(xywh, np.ones(2, np.float32), np.array([[0.9], [0.8]], np.float32),
                  np.arange(2))
    assert nms_sort(boxes, 0.5).probs[:, 0].tolist() == [np.float32(0.9), 0]
    assert nms_sort(boxes, 0.5, "diounms", 0.6).probs[:, 0].tolist() == [
        np.float32(0.9), np.float32(0.8)]


def test_pixel_box_truncates_and_clips_like_darknet():
    det = Detection(0, 0.9, 0.95, x=0.5, y=0.5, w=0.5, h=1.2, image_w=101, image_h=50,
                    entry=0)
    # left = (0.5 - 0.25)*101 = 25.25 -> 25; right 75.75 -> 75; top -5 -> 0; bottom 55 -> 49
    assert det.box == (25, 0, 75, 49)
    assert det.format(["cat"]) == "cat: 90%  left 25 top 0 right 75 bottom 49"
    assert det.to_dict()["name"] == "class 0"
    above = Detection(0, 0.9, 0.95, x=1.2, y=-0.2, w=0.1, h=0.2, image_w=10, image_h=10,
                      entry=0)
    assert above.box == (9, 0, 9, 0)            # wholly outside: clipped to the corner


def test_detections_list_every_surviving_class_in_darknet_order():
    from darkcfg.geometry import Boxes
    boxes = Boxes(np.array([[0.5, 0.5, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]], np.float32),
                  np.array([0.9, 0.8], np.float32),
                  np.array([[0, 0.7, 0.6], [0.75, 0, 0]], np.float32), np.array([1, 0]))
    found = detections(boxes, 10, 20)
    assert [(d.entry, d.class_id, round(d.prob, 6)) for d in found] == [
        (0, 1, 0.7), (0, 2, 0.6), (1, 0, 0.75)]


def test_a_network_without_heads_is_refused(tmp_path):
    from darkcfg import DarkcfgError
    graph = make_graph(tmp_path, "[net]\nwidth=4\nheight=4\nchannels=3\n[avgpool]\n")
    with pytest.raises(DarkcfgError, match=r"no \[yolo\], \[region\] or \[detection\] layer"):
        network_boxes(graph, {}, 4, 4)


# ---------------------------------------------------------------------------------------
# the detect command, end to end

TINY_DETECTOR = """[net]
width=32
height=32
channels=3
[convolutional]
filters=14
size=3
stride=4
pad=1
activation=linear
[yolo]
mask=0,1
anchors=6,8, 14,12
classes=2
num=2
"""


def write_tiny_detector(folder: Path) -> tuple[Path, Path]:
    cfg = folder / "tiny.cfg"
    cfg.write_text(TINY_DETECTOR)
    rng = np.random.default_rng(21)
    biases = np.zeros(14, np.float32)
    biases[[4, 11]] = 2.0                       # objectness mostly above 0.5
    biases[[5, 12]] = 1.0                       # class 0 likelier than class 1
    values = np.concatenate([biases, rng.normal(0, 0.3, 14 * 27)]).astype("<f4")
    weights = folder / "tiny.weights"
    weights.write_bytes(np.array([0, 2, 0], "<i4").tobytes() + np.zeros(1, "<u8").tobytes()
                        + values.tobytes())
    return cfg, weights


def test_detect_command_end_to_end(tmp_path):
    from darkcfg.data.images import load_image
    from darkcfg.network import Network
    cfg, weights = write_tiny_detector(tmp_path)
    (tmp_path / "names.txt").write_text("ant\nbee\n")
    rng = np.random.default_rng(4)
    Image.fromarray((rng.random((24, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray((rng.random((50, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    out = tmp_path / "out"
    images = [tmp_path / "a.png", tmp_path / "missing.png", tmp_path / "b.png"]

    proc = darkcfg("detect", cfg, weights, *images, "--names", tmp_path / "names.txt",
                   "--out-dir", out, "--json")
    assert proc.returncode == 1, proc.stderr                  # one image failed...
    assert "missing.png: no such image file" in proc.stderr   # ...and is named
    doc = json.loads(proc.stdout)
    assert [Path(r["image"]).name for r in doc["images"]] == ["a.png", "b.png"]

    net = Network.load(cfg, weights)
    for record, name, size in zip(doc["images"], ["a", "b"], [(40, 24), (30, 50)],
                                  strict=True):
        assert (record["width"], record["height"]) == size
        with Image.open(out / f"{name}_boxes.png") as drawn:
            assert drawn.size == size and drawn.mode == "RGB"
        expected = detect(net, load_image(tmp_path / f"{name}.png"), 0.5, 0.45)
        assert expected, "the test detector should find something"
        assert [d["class_id"] for d in record["detections"]] == [e.class_id for e in expected]
        assert [d["name"] for d in record["detections"]] == [
            ["ant", "bee"][e.class_id] for e in expected]
        got = np.array([[d["prob"], d["x"], d["y"], d["w"], d["h"]]
                        for d in record["detections"]])
        want = np.array([[e.prob, e.x, e.y, e.w, e.h] for e in expected])
        np.testing.assert_array_equal(got, want)
        assert [[d[k] for k in ("left", "top", "right", "bottom")]
                for d in record["detections"]] == [list(e.box) for e in expected]

    text = darkcfg("detect", cfg, weights, tmp_path / "a.png", "--thresh", "0.6",
                   "--nms", "0", "--out-dir", out)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    expected = detect(net, load_image(tmp_path / "a.png"), 0.6, 0)
    assert lines[0].startswith(f"{tmp_path / 'a.png'}: Predicted in ")
    assert f"{len(expected)} objects" in lines[0]
    assert lines[1:] == [e.format() for e in expected]
    assert all(re.fullmatch(r"class \d: \d+%  left \d+ top \d+ right \d+ bottom \d+", ln)
               for ln in lines[1:])


def test_detect_command_checks_names_and_nms(tmp_path):
    cfg, weights = write_tiny_detector(tmp_path)
    (tmp_path / "names.txt").write_text("ant\nbee\ncat\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    proc = darkcfg("detect", cfg, weights, tmp_path / "a.png", "--names",
                   tmp_path / "names.txt")
    assert proc.returncode == 2
    assert "3 names, but the network has 2 classes" in proc.stderr
    proc = darkcfg("detect", cfg, weights, tmp_path / "a.png", "--nms", "1.5")
    assert proc.returncode == 2 and "--nms must be in [0, 1]" in proc.stderr
