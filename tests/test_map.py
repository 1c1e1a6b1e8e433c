"""mAP: hand cases with known answers, a by-the-definition reference on random cases, YOLO
label files, and `darkcfg map` end to end."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from darkcfg import DataError
from darkcfg.data.detection import label_candidates, read_label_file
from darkcfg.detection.evaluate import (
    IOU_THRESHOLDS,
    RECALL_POINTS,
    evaluate,
    evaluate_network,
    format_report,
    read_image_list,
)
from darkcfg.geometry import iou_matrix

POINTS = len(RECALL_POINTS)             # 101
ONE = pytest.approx(1.0, abs=1e-12)     # COCO's precision is tp / (tp + fp + 2.2e-16)


def dets(*rows):
    """rows of (class, score, x, y, w, h) -> one image's (boxes, scores, classes)."""
    a = np.array(rows, np.float64).reshape(-1, 6)
    return a[:, 2:], a[:, 1], a[:, 0].astype(int)


def truth(*rows):
    """rows of (class, x, y, w, h) -> one image's (boxes, classes)."""
    a = np.array(rows, np.float64).reshape(-1, 5)
    return a[:, 1:], a[:, 0].astype(int)


A = (0.2, 0.2, 0.2, 0.2)
B = (0.7, 0.7, 0.2, 0.3)
C = (0.5, 0.2, 0.1, 0.1)


# ---------------------------------------------------------------------------------------
# known answers (101-point interpolation: AP = mean of precision at recall 0, 0.01, .., 1)

def test_perfect_detections_score_one():
    r = evaluate([dets((0, 0.9, *A), (0, 0.8, *B)), dets((0, 0.7, *C))],
                 [truth((0, *A), (0, *B)), truth((0, *C))], 1)
    assert r.map50 == ONE and r.map50_95 == ONE
    assert (r.per_class[0].truths, r.per_class[0].detections) == (3, 3)


def test_a_false_positive_ranked_first_halves_precision():
    r = evaluate([dets((0, 0.9, *B), (0, 0.8, *A))], [truth((0, *A))], 1)
    assert r.map50 == pytest.approx(0.5, abs=1e-12)          # precision 1/2 at recall 1
    # ranked last instead, it costs nothing
    r = evaluate([dets((0, 0.9, *A), (0, 0.8, *B))], [truth((0, *A))], 1)
    assert r.map50 == ONE


def test_a_missed_object_caps_recall():
    r = evaluate([dets((0, 0.9, *A))], [truth((0, *A), (0, *B))], 1)
    assert r.map50 == pytest.approx(51 / POINTS)               # recall 0 .. 0.50 reached


def test_duplicates_are_false_positives():
    # one object, two detections on it: the second is a false positive after full recall
    r = evaluate([dets((0, 0.9, *A), (0, 0.8, *A))], [truth((0, *A))], 1)
    assert r.map50 == ONE
    # a duplicate ranked before the second object: precision 2/3 for recall above 0.5
    r = evaluate([dets((0, 0.9, *A), (0, 0.8, *A), (0, 0.7, *B))],
                 [truth((0, *A), (0, *B))], 1)
    assert r.map50 == pytest.approx((51 + 50 * 2 / 3) / POINTS)


def test_two_classes_average_and_wrong_classes_do_not_match():
    r = evaluate([dets((0, 0.9, *A), (1, 0.8, *A), (1, 0.7, *B)), dets((2, 0.9, *C))],
                 [truth((0, *A), (1, *B)), truth()], 3)
    by = {c.class_id: c for c in r.per_class}
    assert sorted(by) == [0, 1]               # class 2 has no truth: left out of the means
    assert by[0].ap50 == ONE
    assert by[1].ap50 == pytest.approx(0.5)   # its first detection sits on class 0's box
    assert r.map50 == pytest.approx(0.75)
    assert "mAP@0.5 = 75.00 %" in format_report(r, ["cat", "dog", "emu"])


def test_iou_just_below_and_above_one_half():
    gt = truth((0, 1.0, 0.5, 2.0, 1.0))                        # corners 0..2 x 0..1
    exact = dets((0, 0.9, 0.5, 0.5, 1.0, 1.0))                 # corners 0..1 x 0..1
    assert iou_matrix(exact[0], gt[0])[0, 0] == 0.5
    assert evaluate([exact], [gt], 1).map50 == ONE             # COCO: IoU >= threshold
    below = dets((0, 0.9, 0.5 - 5e-7, 0.5, 1.0 - 1e-6, 1.0))
    above = dets((0, 0.9, 0.5 + 5e-7, 0.5, 1.0 + 1e-6, 1.0))
    assert iou_matrix(below[0], gt[0])[0, 0] < 0.5 < iou_matrix(above[0], gt[0])[0, 0]
    assert evaluate([below], [gt], 1).map50 == 0.0
    r = evaluate([above], [gt], 1)
    assert r.map50 == ONE
    assert r.map50_95 == pytest.approx(0.1)     # a hit at 0.50 only, of ten thresholds


def test_a_class_without_detections_scores_zero():
    r = evaluate([dets((0, 0.9, *A))], [truth((0, *A), (1, *B))], 2)
    assert [c.ap50 for c in r.per_class] == [ONE, 0.0]
    assert r.map50 == pytest.approx(0.5)


def test_best_unmatched_truth_is_taken():
    # both detections overlap both truths (IoU > 0.5) and fit the second best. The first
    # takes it; the second takes the first truth, still free: two hits. (VOC's rule, and
    # AlexeyAB's `detector map`, would count the second as a false positive.)
    t = truth((0, 0.30, 0.5, 0.4, 0.4), (0, 0.42, 0.5, 0.4, 0.4))
    d = dets((0, 0.9, 0.40, 0.5, 0.4, 0.4), (0, 0.8, 0.37, 0.5, 0.4, 0.4))
    ious = iou_matrix(d[0], t[0])
    assert ious[0, 1] > ious[0, 0] > 0.5 and ious[1, 1] > ious[1, 0] > 0.5
    assert evaluate([d], [t], 1).map50 == ONE


def test_max_dets_keeps_the_best_per_image_and_class():
    many = dets(*[(0, 0.5 - i / 1000, 0.9, 0.9, 0.01, 0.01) for i in range(100)],
                (0, 0.1, *A))
    assert evaluate([many], [truth((0, *A))], 1).map50 == 0.0          # cut at 100
    assert evaluate([many], [truth((0, *A))], 1, max_dets=None).map50 == pytest.approx(
        1 / 101)


# ---------------------------------------------------------------------------------------
# against AP by its definition on random cases

def naive_ap(images_d, images_t, cls: int, thr: float) -> float | None:
    """COCO AP by definition: greedy matching per image (best still-unmatched truth with
    IoU >= thr), then the mean over r in 0, 0.01, .., 1 of max precision at recall >= r."""
    scored = []                          # (score, image, rank, hit)
    ntruth = 0
    for i, ((db, ds, dc), (tb, tc)) in enumerate(zip(images_d, images_t, strict=True)):
        gts = [tb[j] for j in range(len(tc)) if tc[j] == cls]
        ntruth += len(gts)
        mine = sorted((k for k in range(len(dc)) if dc[k] == cls), key=lambda k: -ds[k])
        taken = [False] * len(gts)
        for rank, k in enumerate(mine[:100]):
            best, which = thr, -1
            for j, g in enumerate(gts):
                v = iou_matrix(db[k], g)[0, 0]
                if not taken[j] and v >= best:
                    best, which = v, j
            if which >= 0:
                taken[which] = True
            scored.append((ds[k], i, rank, which >= 0))
    if ntruth == 0:
        return None
    scored.sort(key=lambda s: (-s[0], s[1], s[2]))
    tp = np.cumsum([s[3] for s in scored])
    n = np.arange(1, len(scored) + 1)
    recall, precision = tp / ntruth, tp / n
    total = 0.0
    for r in RECALL_POINTS:
        reach = precision[recall >= r]
        total += reach.max() if len(reach) else 0.0
    return total / len(RECALL_POINTS)


def test_evaluate_matches_the_definition_on_random_cases():
    rng = np.random.default_rng(3)
    for _ in range(20):
        images_d, images_t = [], []
        for _ in range(rng.integers(1, 5)):
            nt = rng.integers(0, 5)
            tb = np.column_stack([rng.uniform(0.2, 0.8, (nt, 2)), rng.uniform(0.1, 0.4,
                                                                               (nt, 2))])
            tc = rng.integers(0, 3, nt)
            # detections: jittered truths (some duplicated) and random boxes
            pick = rng.integers(0, max(nt, 1), rng.integers(0, 8)) if nt else []
            jit = [tb[p] + rng.normal(0, 0.04, 4) for p in pick]
            rand = [np.r_[rng.uniform(0.2, 0.8, 2), rng.uniform(0.1, 0.4, 2)]
                    for _ in range(rng.integers(0, 4))]
            db = np.array(jit + rand).reshape(-1, 4)
            dc = np.r_[tc[list(pick)] if nt else [], rng.integers(0, 3, len(rand))]
            ds = rng.choice([0.3, 0.5, 0.7, 0.9], len(db))              # ties happen
            images_d.append((db, ds, dc.astype(int)))
            images_t.append((tb, tc))
        r = evaluate(images_d, images_t, 3)
        got = {c.class_id: c.ap for c in r.per_class}
        for cls in range(3):
            want = [naive_ap(images_d, images_t, cls, t) for t in IOU_THRESHOLDS]
            if want[0] is None:
                assert cls not in got
            else:
                np.testing.assert_allclose(got[cls], want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# label files

def test_label_paths_follow_darknet_then_beside():
    assert label_candidates("/d/coco/images/val2014/x.jpg") == [
        "/d/coco/labels/val2014/x.txt", "/d/coco/images/val2014/x.txt"]
    assert label_candidates("/d/VOC/JPEGImages/x.JPEG") == [
        "/d/VOC/labels/x.txt", "/d/VOC/JPEGImages/x.txt"]
    assert label_candidates("/d/set/x.png") == ["/d/set/x.txt"]


def test_read_label_file(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("0 0.5 0.5 0.2 0.3\n\n1 0.1 0.2 0.05 0.05 \n")
    boxes, ids = read_label_file(str(path), 2)
    np.testing.assert_array_equal(ids, [0, 1])
    np.testing.assert_array_equal(boxes, [[0.5, 0.5, 0.2, 0.3], [0.1, 0.2, 0.05, 0.05]])
    path.write_text("0 0.5 0.5 0.2 0.3\n1 0.5 0.5 0.2\n")
    with pytest.raises(DataError, match=r"x.txt:2: expected 'class x y w h'"):
        read_label_file(str(path), 2)
    path.write_text("2 0.5 0.5 0.2 0.3\n")
    with pytest.raises(DataError, match=r"x.txt:1: class 2 is not an integer in 0..1"):
        read_label_file(str(path), 2)


# ---------------------------------------------------------------------------------------
# darkcfg map, end to end

def test_map_command_end_to_end(tmp_path):
    from darkcfg.network import Network

    from .test_detect import darkcfg, write_tiny_detector
    cfg, weights = write_tiny_detector(tmp_path)
    rng = np.random.default_rng(8)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "other").mkdir()
    images = ["images/a.png", "other/b.png", "other/c.png"]
    for name in images:
        Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / name)
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.4 0.6\n1 0.2 0.2 0.2 0.2\n")
    (tmp_path / "other" / "b.txt").write_text("1 0.6 0.4 0.3 0.3\n")     # c: no label file
    (tmp_path / "valid.txt").write_text("\n".join(images) + "\n")
    (tmp_path / "names.txt").write_text("ant\nbee\n")
    data = tmp_path / "det.data"
    data.write_text("classes=2\nvalid=valid.txt\nnames=names.txt\nbackup=backup/\n")

    proc = darkcfg("map", data, cfg, weights, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "1 of 3 images have no label file" in proc.stderr
    paths = read_image_list(str(tmp_path / "valid.txt"))
    with pytest.warns(UserWarning, match="no label file"):
        expected = evaluate_network(Network.load(cfg, weights), paths, 2)
    assert [c.truths for c in expected.per_class] == [1, 2]
    assert proc.stdout.strip() == format_report(expected, ["ant", "bee"])
    assert "ant" in proc.stdout and "mAP@0.5:0.95 = " in proc.stdout

    data.write_text("classes=3\nvalid=valid.txt\n")
    proc = darkcfg("map", data, cfg, weights)
    assert proc.returncode == 2 and "classes=3, but the network detects 2" in proc.stderr
