"""YOLOv1 through `darkcfg train`: YOLO-format labels become Darknet's per-cell truth and a
small [local] + [detection] net learns; `darkcfg map` runs on it."""
from __future__ import annotations

import re

import numpy as np

from darkcfg.graph import load_graph
from darkcfg.network import Network

from .test_yolov1 import yolov1_cfg


def test_darkcfg_trains_a_yolov1_detector(tmp_path):
    """`darkcfg train` on YOLO-format labels: the loss of a fixed batch falls to a fifth in
    60 iterations, and `darkcfg map` runs on the result."""
    from darkcfg.cli import main
    from darkcfg.data.classifier import read_data_config
    from darkcfg.data.detection import open_detection_dataset

    from .toy_detector import make_data
    data, cfg = make_data(tmp_path, n=32), yolov1_cfg(tmp_path, max_batches=60)
    assert main(["train", str(data), str(cfg), "--quiet"]) == 0
    final = tmp_path / "backup" / "yolov1_toy_final.weights"
    net = Network(load_graph(cfg))
    net.load_weights(final)
    ds = open_detection_dataset(read_data_config(data), "train")
    lay = net.layers[-1]
    x, rows = ds.batch(np.arange(8), net.input_shape, None, None, 90)
    truth = lay.cell_truth(rows, np.random.default_rng(0))
    start = Network(load_graph(cfg))
    start.init_weights(0)
    first = start.forward_train(x, truth)
    last = net.forward_train(x, truth)
    assert last < 0.2 * first, (first, last)
    assert lay.stats["count"] > 8 and lay.stats["iou"] > 0.2
    valid = tmp_path / "valid.data"
    valid.write_text(data.read_text() + "valid=train.txt\n")
    assert main(["map", str(valid), str(cfg), str(final)]) == 0


def test_shipped_yolov1_fashion_cfg_fits_its_data():
    """cfg/yolov1_fashion.cfg (the README's measured run): 96 x 96 grey in, [local] on the
    6 x 6 grid, [detection] side 6 over yolo_fashion.data's 10 classes."""
    from .conftest import ROOT
    graph = load_graph(ROOT / "cfg" / "yolov1_fashion.cfg")
    head = graph.layers[-1]
    assert graph.net.input_shape == (1, 96, 96)
    assert [lay.type for lay in graph.layers[-4:]] == ["local", "dropout", "connected",
                                                      "detection"]
    assert graph.layers[-4].out_shape == (64, 6, 6)
    assert (head.side, head.num, head.classes) == (6, 2, 10)
    # The .data file's names= points into data/fashion_det, which exists only once the
    # dataset is built (not on CI), so its classes= line is read directly.
    data = (ROOT / "cfg" / "yolo_fashion.data").read_text()
    assert head.classes == int(re.search(r"^classes\s*=\s*(\d+)", data, re.M).group(1))
