"""`darkcfg train` on a detector: dispatch on the last layer, Darknet's checkpoint names,
resume equals an uninterrupted run, refusals before training starts, and a tiny YOLO
learns to find squares."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.cli import main
from darkcfg.errors import CfgError, DarkcfgError
from darkcfg.graph import load_graph
from darkcfg.network import Network
from darkcfg.train.loop import TrainOptions

from .toy_detector import make_data, write_cfg


def test_train_dispatches_to_the_detector_loop_with_darknets_names(tmp_path, capsys):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, max_batches=6)
    assert main(["train", str(data), str(cfg), "--backup-every", "3", "--save-every", "4",
                 "--quiet"]) == 0
    backup = tmp_path / "backup"
    names = sorted(p.name for p in backup.iterdir())
    assert names == ["tiny_yolo.backup", "tiny_yolo.backup.state", "tiny_yolo_4.weights",
                     "tiny_yolo_4.weights.state", "tiny_yolo_chart.png",
                     "tiny_yolo_final.weights", "tiny_yolo_final.weights.state"]
    out = capsys.readouterr().out
    assert "24 images with" in out and "done: 6 iterations, 48 images" in out


def test_resume_equals_an_uninterrupted_run(tmp_path):
    from darkcfg.train.detector import train_detector
    data = make_data(tmp_path)
    opts = TrainOptions(seed=3, quiet=True, backup_every=100, save_every=4)
    whole = train_detector(str(data), str(write_cfg(tmp_path, 8, name="a.cfg")), None, opts,
                           log=lambda *a: None)
    cfg = write_cfg(tmp_path, 8, name="b.cfg")
    part = train_detector(str(data), str(cfg), None, TrainOptions(
        seed=3, quiet=True, backup_every=100, save_every=4, max_batches=4),
        log=lambda *a: None)
    assert part.name == "b_final.weights"
    (tmp_path / "backup" / "b_final.weights").rename(tmp_path / "b4.weights")
    (tmp_path / "backup" / "b_final.weights.state").rename(tmp_path / "b4.weights.state")
    resumed = train_detector(str(data), str(cfg), str(tmp_path / "b4.weights"), opts,
                             log=lambda *a: None)
    a, b = Network(load_graph(cfg)), Network(load_graph(cfg))
    a.load_weights(whole)
    b.load_weights(resumed)
    for la, lb in zip(a.layers, b.layers):
        for k in la.params:
            np.testing.assert_array_equal(la.params[k], lb.params[k])


def test_refusals_before_training(tmp_path):
    from darkcfg.train.detector import train_detector
    data = make_data(tmp_path, n=2, classes=3)
    with pytest.raises(DarkcfgError, match="classes=3 but layer 7 \\[yolo\\].*classes=2"):
        train_detector(str(data), str(write_cfg(tmp_path)), None, TrainOptions(quiet=True))
    data = make_data(tmp_path, n=2)
    with pytest.raises(CfgError, match="delta_normalizer"):
        train_detector(str(data), str(write_cfg(tmp_path, extra="delta_normalizer=2")), None,
                       TrainOptions(quiet=True))


def test_a_tiny_yolo_learns_to_find_squares(tmp_path):
    from darkcfg.train.detector import train_detector
    data, cfg = make_data(tmp_path, n=48), write_cfg(tmp_path, max_batches=80)
    losses = []
    train_detector(str(data), str(cfg), None, TrainOptions(quiet=True, chart_every=1000),
                   log=lambda *a: losses.append(a))
    net = Network(load_graph(cfg))
    net.load_weights(tmp_path / "backup" / "tiny_yolo_final.weights")
    from darkcfg.data.classifier import read_data_config
    from darkcfg.data.detection import open_detection_dataset
    ds = open_detection_dataset(read_data_config(data), "train")
    x, truth = ds.batch(np.arange(16), net.input_shape, None, None, 90)
    start = Network(load_graph(cfg))
    start.init_weights(0)
    first = start.forward_train(x, truth)
    last = net.forward_train(x, truth)
    assert last < 0.1 * first
    head = net.layers[-1]
    assert head.stats["iou"] > 0.35 and head.stats["obj"] > 0.2 and head.stats["no_obj"] < 0.1


def test_yolo_fashion_cfg_and_data_file():
    from darkcfg.data.detection import DetAugment
    from darkcfg.schedule import check_schedule

    from .conftest import ROOT
    path = ROOT / "cfg" / "yolo_fashion.cfg"
    assert path.read_text().startswith("# yolo_fashion.cfg - ")
    g = load_graph(path)
    heads = [lay for lay in g.layers if lay.type == "yolo"]
    assert [h.mask for h in heads] == [[3, 4, 5], [0, 1, 2]]
    assert all(h.classes == 10 and h.total == 6 for h in heads)
    assert heads[0].anchors == heads[1].anchors
    assert [h.in_shape[1:] for h in heads] == [(6, 6), (12, 12)]
    assert 0.5e6 <= g.nparams <= 1.5e6
    opts = g.net.opts
    check_schedule(opts, g.net.section)
    assert 12 <= opts["max_batches"] * opts["batch"] / 4000 <= 20      # epochs
    aug = DetAugment.from_net(opts, heads[-1].opts["jitter"])
    assert (aug.jitter, aug.flip, aug.hue, aug.saturation) == (0.2, True, 0.0, 1.0)
    text = (ROOT / "cfg" / "yolo_fashion.data").read_text()
    # (the data it names exists only after tools/make_detection_dataset.py)
    assert "classes = 10" in text and "train = ../data/fashion_det/train.txt" in text
