"""`calc_anchors`: k-means anchors on hand-made box sets with known answers, masks by
stride, the cfg rewritten in place, and the command's refusals."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.cli import main
from darkcfg.detection.anchors import kmeans_anchors, masks, shape_iou
from darkcfg.errors import DarkcfgError
from darkcfg.graph import load_graph


def test_tight_clusters_are_found_exactly():
    wh = np.repeat([[40, 20], [10, 10], [100, 90]], 30, axis=0)
    found = kmeans_anchors(wh, 3, seed=1)
    assert found.anchors.tolist() == [[10, 10], [40, 20], [100, 90]]     # by area
    assert found.avg_iou == 1.0 and found.boxes == 90


def test_two_spread_clusters_known_means_and_iou():
    wh = np.array([[8, 8], [12, 12], [95, 95], [105, 105]] * 5, float)
    found = kmeans_anchors(wh, 2, seed=0)
    assert found.anchors.tolist() == [[10, 10], [100, 100]]
    # IoU of centred squares a, b: min(a, b)^2 / max(a, b)^2
    expect = np.mean([64 / 100, 100 / 144, 95**2 / 100**2, 100**2 / 105**2])
    assert found.avg_iou == pytest.approx(expect, rel=1e-12)


def test_shape_iou_by_hand():
    got = shape_iou(np.array([[4.0, 2.0]]), np.array([[2.0, 4.0], [4.0, 2.0]]))
    np.testing.assert_allclose(got, [[4 / 12, 1.0]])


def test_same_seed_same_anchors_and_restarts_never_worse():
    rng = np.random.default_rng(5)
    wh = np.exp(rng.normal(3, 0.8, (400, 2)))
    a, b = kmeans_anchors(wh, 6, seed=3), kmeans_anchors(wh, 6, seed=3)
    assert a.anchors.tolist() == b.anchors.tolist() and a.avg_iou == b.avg_iou
    assert kmeans_anchors(wh, 6, seed=3, restarts=10).avg_iou >= \
        kmeans_anchors(wh, 6, seed=3, restarts=1).avg_iou
    assert np.all(np.diff(a.anchors.prod(1)) >= 0)


def test_masks_follow_strides():
    assert masks([32, 16], 6) == [[3, 4, 5], [0, 1, 2]]             # yolov3-tiny order
    assert masks([8, 16, 32], 9) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]   # yolov4 order
    with pytest.raises(DarkcfgError, match="do not split evenly over 2"):
        masks([32, 16], 7)


def test_too_few_boxes():
    with pytest.raises(DarkcfgError, match="2 boxes cannot make 3 anchors"):
        kmeans_anchors(np.array([[1, 1], [2, 2]]), 3)


CFG = """# a two-head test detector
[net]
width=64
height=64
channels=1

[convolutional]
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=99
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=1,1, 2,2, 3,3, 4,4, 5,5, 6,6
classes=80
num=6

[route]
layers=-3

[maxpool]
size=2
stride=2

[convolutional]
size=1
# filters set by calc_anchors
activation=linear

[yolo]
mask=3,4,5
anchors=1,1, 2,2, 3,3, 4,4, 5,5, 6,6
classes=80
num=6
"""


def detection_data(tmp_path, sizes):
    (tmp_path / "imgs").mkdir()
    lines = []
    for i, (w, h) in enumerate(sizes):
        (tmp_path / "imgs" / f"{i}.txt").write_text(f"{i % 2} 0.5 0.5 {w} {h}\n")
        lines.append(f"imgs/{i}.png")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    data = tmp_path / "det.data"
    data.write_text("classes = 2\ntrain = train.txt\n")
    return data


def test_calc_anchors_writes_the_cfg(tmp_path, capsys):
    # at 64x64: six shapes, two boxes each: 4x4, 8x8, 16x8, 16x32, 32x32, 48x48 pixels
    sizes = [(0.0625, 0.0625), (0.125, 0.125), (0.25, 0.125), (0.25, 0.5), (0.5, 0.5),
             (0.75, 0.75)] * 2
    data = detection_data(tmp_path, sizes)
    cfg = tmp_path / "det.cfg"
    cfg.write_text(CFG)
    assert main(["calc_anchors", str(data), "--num", "6", "--write", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "anchors = 4,4,  8,8,  16,8,  16,32,  32,32,  48,48\n" in out
    assert "average IoU 100.00% over 12 boxes at 64x64" in out
    graph = load_graph(cfg)
    heads = [lay for lay in graph.layers if lay.type == "yolo"]
    anchors = [int(v) for v in heads[0].section.entries["anchors"].value.replace(",", " ")
               .split()]
    assert anchors == [4, 4, 8, 8, 16, 8, 16, 32, 32, 32, 48, 48]
    # head 0 (stride 2) gets the small anchors, head 1 (stride 4) the large ones
    assert heads[0].section.entries["mask"].value == "0,1,2"
    assert heads[1].section.entries["mask"].value == "3,4,5"
    assert [lay.section.entries["classes"].value for lay in heads] == ["2", "2"]
    assert graph.layers[1].section.entries["filters"].value == "21"
    assert graph.layers[5].section.entries["filters"].value == "21"   # key added
    text = cfg.read_text()
    assert "# a two-head test detector" in text and "# filters set by calc_anchors" in text


def test_calc_anchors_refusals(tmp_path, capsys):
    data = detection_data(tmp_path, [(0.1, 0.1)] * 3)
    assert main(["calc_anchors", str(data), "--num", "6", "--width", "64",
                 "--height", "64"]) == 2
    assert "3 boxes cannot make 6 anchors" in capsys.readouterr().err
    assert main(["calc_anchors", str(data), "--num", "2"]) == 2
    assert "give --width and --height" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calc_anchors", str(data), "--num", "0"])
