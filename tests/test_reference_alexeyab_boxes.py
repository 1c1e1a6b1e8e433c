"""AlexeyAB's boxes: `get_network_boxes(..., letter)` and its NMS kinds against the 24 box
files Darknet (AlexeyAB) wrote for yolov4-tiny (../shared/reference/alexeyab/detection);
the `letter` rule of `darkcfg detect`/`map` (src/detector.c: test_detector stretches the
image with resize_image unless letter_box=1)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from darkcfg.data.images import letterbox, resize
from darkcfg.detection.detect import detect_boxes, letterboxes, network_boxes, nms_kind
from darkcfg.geometry import nms_sort
from darkcfg.graph import load_graph

from .conftest import REFERENCE, need
from .reference import case_input, weights_path
from .test_detect import compare, read_box_file

AB = REFERENCE / "alexeyab"
CASE = AB / "cases" / "ab_yolov4_tiny"
DETECTION = AB / "detection" / "ab_yolov4_tiny"
FILE = re.compile(r"boxes_(\d+)x(\d+)_t([\d.]+)_nms([\d.]+)(?:_(\w+?))?_letter([01])\.txt")


def runs() -> list[tuple[Path, int, int, float, float, str, bool]]:
    if not DETECTION.exists():
        pytest.skip(f"{DETECTION} is absent: the Darknet reference material is in ../shared "
                    "in the darkcfg development checkout only")
    found = []
    for path in sorted(DETECTION.glob("boxes_*.txt")):
        w, h, t, nms, kind, letter = FILE.fullmatch(path.name).groups()
        found.append((path, int(w), int(h), float(t), float(nms), kind or "default",
                      letter == "1"))
    assert len(found) == 24, "reference box files missing"
    return found


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """ab_yolov4_tiny's weights, rebuilt once a session (they are not stored)."""
    need(CASE)
    return weights_path(CASE, tmp_path_factory.mktemp("ab_yolov4_tiny"))


def graph_with(tmp_path: Path, extra_net: str = ""):
    """The case's cfg, with extra [net] lines."""
    text = (CASE / "net.cfg").read_text()
    text = re.sub(r"^\[net\]\s*$", "[net]\n" + extra_net, text, count=1, flags=re.M)
    path = tmp_path / "net.cfg"
    path.write_text(text)
    return load_graph(path)


def test_decoding_reproduces_alexeyab_boxes_for_both_letter_values():
    """From Darknet's own head outputs: every file, letter 0 and 1, sort/greedynms NMS."""
    files = runs()
    graph = load_graph(CASE / "net.cfg", dialect="alexeyab")
    outputs = {int(k[len("layer_"):]): v
               for k, v in np.load(DETECTION / "det_outputs.npz").items()}
    assert nms_kind(graph) == ("greedynms", pytest.approx(0.6))
    for path, img_w, img_h, thresh, nms, kind, letter in files:
        boxes = network_boxes(graph, outputs, img_w, img_h, thresh, letter=letter)
        boxes = nms_sort(boxes, nms, kind, 0.6)
        compare(boxes, read_box_file(path), box_rel=3e-7, prob_rel=0, where=path.name)


def test_forward_then_decoding_reproduces_alexeyab_boxes(tiny_weights):
    """From the network input (our forward pass with the rebuilt weights): rel <= 1e-4."""
    from darkcfg.network import Network
    files = runs()
    net = Network.load(CASE / "net.cfg", tiny_weights, dialect="alexeyab")
    net.forward(case_input(CASE).reshape(1, *net.input_shape))
    outputs = [None if out is None else out[0] for out in net.outputs]
    for path, img_w, img_h, thresh, nms, kind, letter in files:
        boxes = nms_sort(network_boxes(net.graph, outputs, img_w, img_h, thresh,
                                       letter=letter), nms, kind, 0.6)
        compare(boxes, read_box_file(path), box_rel=1e-4, prob_rel=1e-4, where=path.name)


def test_the_lineage_rule_picks_the_letter_files(tmp_path):
    """letter=None: an AlexeyAB cfg stretches (letter 0) unless [net] has letter_box=1;
    pjreddie always letterboxes. At 640x480 the two differ (y' = (y - 0.125)/0.75)."""
    runs()
    outputs = {int(k[len("layer_"):]): v
               for k, v in np.load(DETECTION / "det_outputs.npz").items()}
    ref0 = read_box_file(DETECTION / "boxes_640x480_t0.5_nms0_letter0.txt")
    ref1 = read_box_file(DETECTION / "boxes_640x480_t0.5_nms0_letter1.txt")
    assert not np.allclose(ref0["xywh"], ref1["xywh"])
    cases = [(load_graph(CASE / "net.cfg"), ref0),                  # alexeyab from the cfg
             (graph_with(tmp_path, "letter_box=1\n"), ref1),
             (load_graph(CASE / "net.cfg", dialect="pjreddie"), ref1)]
    for graph, ref in cases:
        boxes = network_boxes(graph, outputs, 640, 480, 0.5)
        compare(boxes, ref, box_rel=3e-7, prob_rel=0, where=f"{graph.net.dialect}")
    assert letterboxes(cases[0][0]) is False and letterboxes(cases[1][0]) is True
    assert letterboxes(cases[0][0], True) is True           # letter= overrides the rule


def test_detect_stretches_with_resize_image_under_the_alexeyab_rule(tiny_weights):
    """detect_boxes feeds Darknet's resize_image (no letterbox) when letter is False, the
    letterbox otherwise; the boxes then come back uncorrected / corrected."""
    from darkcfg.network import Network
    net = Network.load(CASE / "net.cfg", tiny_weights, dialect="alexeyab")
    rng = np.random.default_rng(3)
    image = rng.random((3, 48, 64)).astype(np.float32)
    for letter, fit in ((None, resize), (False, resize), (True, letterbox)):
        got = detect_boxes(net, image, 0.5, 0.45, letter=letter)
        net.forward(fit(image, 160, 160)[None])
        outputs = [None if out is None else out[0] for out in net.outputs]
        want = nms_sort(network_boxes(net.graph, outputs, 64, 48, 0.5,
                                      letter=fit is letterbox), 0.45, "greedynms", 0.6)
        assert len(got) == len(want) > 0, letter
        np.testing.assert_array_equal(got.xywh, want.xywh, err_msg=str(letter))
        np.testing.assert_array_equal(got.probs, want.probs, err_msg=str(letter))
    stretched = detect_boxes(net, image, 0.5, 0.45, letter=False)
    boxed = detect_boxes(net, image, 0.5, 0.45, letter=True)
    assert len(stretched.xywh) != len(boxed.xywh) or \
        not np.allclose(stretched.xywh, boxed.xywh)


def test_letter_box_is_a_net_option(tmp_path):
    from darkcfg import CfgError
    need(CASE)
    assert graph_with(tmp_path, "letter_box=1\n").net.opts["letter_box"] == 1
    assert load_graph(CASE / "net.cfg").net.opts["letter_box"] == 0
    with pytest.raises(CfgError, match="letter_box"):
        graph_with(tmp_path, "letter_box=yes\n")


def test_detect_command_letter_box_flags(tmp_path):
    """--no-letter-box stretches a pjreddie net's input (AlexeyAB's default), --letter-box
    letterboxes an AlexeyAB one; without either, the lineage's rule."""
    import json

    from PIL import Image

    from darkcfg.data.images import load_image
    from darkcfg.detection.detect import detect
    from darkcfg.network import Network

    from .helpers import darkcfg
    from .test_detect import write_tiny_detector
    cfg, weights = write_tiny_detector(tmp_path)
    rng = np.random.default_rng(8)
    Image.fromarray((rng.random((20, 44, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    net = Network.load(cfg, weights)
    image = load_image(tmp_path / "a.png")

    def boxes(*flags) -> list[list[float]]:
        proc = darkcfg("detect", cfg, weights, tmp_path / "a.png", "--out-dir", tmp_path,
                       "--json", *flags)
        assert proc.returncode == 0, proc.stderr
        return [[d["prob"], d["x"], d["y"], d["w"], d["h"]]
                for d in json.loads(proc.stdout)["images"][0]["detections"]]

    def ours(letter) -> list[list[float]]:
        return [[d.prob, d.x, d.y, d.w, d.h] for d in detect(net, image, 0.5, 0.45, letter)]

    assert boxes() == boxes("--letter-box") == ours(True)
    assert boxes("--no-letter-box") == ours(False) != ours(True)
    assert boxes("--dialect", "alexeyab") == ours(False)
    assert boxes("--dialect", "alexeyab", "--letter-box") == ours(True)
    proc = darkcfg("detect", cfg, weights, tmp_path / "a.png", "--letter-box",
                   "--no-letter-box")
    assert proc.returncode == 2 and "not allowed with" in proc.stderr
