"""YOLOv1 through `darkcfg train`: YOLO-format labels become Darknet's per-cell truth and a
small [local] + [detection] net learns; `darkcfg map` runs on it."""
from __future__ import annotations

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
