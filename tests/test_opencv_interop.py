""".weights files written by darkcfg load in OpenCV's Darknet importer
(cv2.dnn.readNetFromDarknet, OpenCV 4.x) and give darkcfg's outputs: a classifier and
yolov3-tiny of pjreddie's lineage within 1e-4, AlexeyAB's yolov4-tiny within 1e-3 (OpenCV
normalises with sqrt(var + 1e-6), AlexeyAB's Darknet and darkcfg with sqrt(var + 1e-5):
4e-5 apart at the first layer already, the gap growing with depth). A file OpenCV
misread (a shifted array, a wrong header size) would be off by O(1). Skipped without
cv2 (`pip install "opencv-python-headless<5"`: 5.0 dropped the Darknet importer)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from .conftest import DARKNET_CFG, ROOT, need
from .reference import rel_error

cv2 = pytest.importorskip("cv2", reason="the OpenCV interop test needs opencv-python-headless "
                          "(4.x)")
sys.path.insert(0, str(ROOT / "tools"))
from bench import opencv_cfg, opencv_rows, random_network  # noqa: E402

NETS = [("pjreddie/tiny", 64, 1e-4), ("pjreddie/yolov3-tiny", 96, 1e-4),
        ("alexeyab/yolov4-tiny", 96, 1e-3)]


@pytest.mark.parametrize("name,size,bar", NETS, ids=[n for n, _, _ in NETS])
def test_opencv_reads_darkcfgs_weights(name, size, bar, tmp_path):
    cfg = need(DARKNET_CFG / f"{name}.cfg")
    net = random_network(cfg, size, 1)         # Darknet's init, BN statistics calibrated
    weights = tmp_path / "net.weights"
    net.save_weights(weights)
    reader = cv2.dnn.readNetFromDarknet(str(opencv_cfg(cfg, size, tmp_path / "net.cfg")),
                                        str(weights))
    reader.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    reader.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    c, h, w = net.input_shape
    x = np.random.default_rng(3).random((1, c, h, w), dtype=np.float32)
    net.forward(x)
    reader.setInput(x)
    theirs = reader.forward(reader.getUnconnectedOutLayersNames())
    ends = [lay.index for lay in net.layers if lay.is_head] or [net.output_index]
    assert len(theirs) == len(ends)
    for i, out in zip(ends, theirs):
        ours = net.outputs[i]
        if net.layers[i].type == "yolo":
            # OpenCV's rows: x, y, w, h decoded, objectness, then objectness x class where
            # above its 0.2 threshold (0 elsewhere)
            ours = opencv_rows(net.graph, i, ours[0], size)
            keep = np.ones(out.shape, bool)
            keep[:, 5:] = out[:, 5:] != 0
            assert keep[:, 5:].mean() > 0.2         # enough class scores compared
            ours, out = ours[keep], out[keep]
        assert rel_error(out, ours) <= bar, (name, i)
