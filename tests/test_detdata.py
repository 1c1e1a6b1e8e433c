"""Detection data: YOLO label files, Darknet's label path rule, the truth layout, and
box-aware augmentation (the boxes follow the pixels); tools/make_detection_dataset.py.

Expected values are written out by hand or read off the pixels of the augmented image,
never taken from the box code itself.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from darkcfg.data import detection as D
from darkcfg.data.classifier import read_data_config
from darkcfg.errors import DataError

from .conftest import ROOT


def png(path, pixels: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def label(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- label files ---------------------------------------------------------------------------

def test_label_path_rule_darknet_then_beside():
    assert D.label_candidates("/d/images/train/a.png") == ["/d/labels/train/a.txt",
                                                           "/d/images/train/a.txt"]
    assert D.label_candidates("/d/VOC/JPEGImages/x.jpg") == ["/d/VOC/labels/x.txt",
                                                             "/d/VOC/JPEGImages/x.txt"]
    assert D.label_candidates("/d/pics/x.jpeg") == ["/d/pics/x.txt"]


def test_find_label_file_prefers_darknets_place(tmp_path):
    img = png(tmp_path / "images" / "a.png", np.zeros((4, 4)))
    assert D.find_label_file(str(img)) is None
    beside = label(tmp_path / "images" / "a.txt", "")
    assert D.find_label_file(str(img)) == str(beside)
    darknet = label(tmp_path / "labels" / "a.txt", "")
    assert D.find_label_file(str(img)) == str(darknet)


def test_read_label_file(tmp_path):
    path = label(tmp_path / "a.txt", "1 0.5 0.25 0.2 0.1\n\n  0 0.1 0.9 1 0.05  \n")
    boxes, ids = D.read_label_file(str(path), 2)
    np.testing.assert_allclose(boxes, [[0.5, 0.25, 0.2, 0.1], [0.1, 0.9, 1, 0.05]])
    assert ids.tolist() == [1, 0] and ids.dtype == np.int64
    empty, none = D.read_label_file(str(label(tmp_path / "e.txt", "")), 2)
    assert empty.shape == (0, 4) and none.shape == (0,)


@pytest.mark.parametrize("line, message", [
    ("1 0.5 0.5 0.2", "expected 'class x y w h'"),
    ("1 0.5 0.5 0.2 0.2 7", "expected 'class x y w h'"),
    ("cat 0.5 0.5 0.2 0.2", "expected 'class x y w h'"),
    ("3 0.5 0.5 0.2 0.2", "class 3 is not an integer in 0..2"),
    ("1.5 0.5 0.5 0.2 0.2", "class 1.5 is not an integer"),
    ("-1 0.5 0.5 0.2 0.2", "class -1"),
    ("1 48 30 20 20", "outside 0..1"),
    ("1 0.5 0.5 0 0.2", "must be in \\(0, 1\\]"),
    ("1 0.5 0.5 0.2 1.5", "must be in \\(0, 1\\]"),
    ("1 0.5 nan 0.2 0.2", "y is not a finite number"),
])
def test_bad_label_lines_name_file_and_line(tmp_path, line, message):
    path = label(tmp_path / "a.txt", "0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(DataError, match=f"a.txt:2: .*{message}"):
        D.read_label_file(str(path), 3)


def test_missing_label_file_names_the_image_and_where_it_looked(tmp_path):
    png(tmp_path / "images" / "a.png", np.zeros((4, 4)))
    (tmp_path / "list.txt").write_text("images/a.png\n")
    with pytest.raises(DataError, match=r"list.txt:1: no label file for .*a.png \(looked "
                                        r"for .*labels/a.txt and .*images/a.txt\)"):
        D.read_detection_list(str(tmp_path / "list.txt"), 2)


def make_dataset(tmp_path, images: dict[str, tuple[np.ndarray, str]]):
    """images: name -> (pixels, label text). Writes images/, labels/, list.txt, .data."""
    for name, (pixels, text) in images.items():
        png(tmp_path / "images" / f"{name}.png", pixels)
        label(tmp_path / "labels" / f"{name}.txt", text)
    (tmp_path / "list.txt").write_text("".join(f"images/{n}.png\n" for n in images))
    (tmp_path / "names.txt").write_text("a\nb\n")
    (tmp_path / "d.data").write_text("classes=2\ntrain=list.txt\nnames=names.txt\n")
    return D.open_detection_dataset(read_data_config(tmp_path / "d.data"), "train")


def test_dataset_from_a_data_file_and_its_truth_layout(tmp_path):
    ds = make_dataset(tmp_path, {
        "p": (np.zeros((32, 32)), "1 0.5 0.25 0.5 0.25\n0 0.25 0.75 0.25 0.25\n"),
        "q": (np.full((32, 32), 255), ""),
    })
    assert len(ds) == 2 and ds.names == ["a", "b"]
    x, truth = ds.batch(np.array([0, 1]), (1, 32, 32), None, None, most=3)
    assert x.shape == (2, 1, 32, 32) and x.dtype == np.float32
    assert x[1].min() == 1.0
    assert truth.shape == (2, 15)
    np.testing.assert_allclose(truth[0], [0.5, 0.25, 0.5, 0.25, 1, 0.25, 0.75, 0.25, 0.25, 0,
                                          0, 0, 0, 0, 0])
    assert not truth[1].any()
    _, cut = ds.batch(np.array([0]), (1, 32, 32), None, None, most=1)
    np.testing.assert_allclose(cut[0], [0.5, 0.25, 0.5, 0.25, 1])


def test_resize_keeps_relative_boxes_and_letterbox_moves_them(tmp_path):
    ds = make_dataset(tmp_path, {"w": (np.zeros((20, 40)), "1 0.25 0.5 0.5 0.5\n")})
    _, truth = ds.batch(np.array([0]), (1, 32, 32), None, None, most=1)
    np.testing.assert_allclose(truth[0], [0.25, 0.5, 0.5, 0.5, 1], atol=1e-6)
    x, truth = ds.batch(np.array([0]), (1, 32, 32), None, None, most=1, letterboxed=True)
    # 40x20 fits as 32x16 at rows 8..23: y' = (0.5*16 + 8)/32, h' = 0.5*16/32
    np.testing.assert_allclose(truth[0], [0.25, 0.5, 0.5, 0.25, 1], atol=1e-6)
    assert x[0, 0, 0, 0] == pytest.approx(0.5) and x[0, 0, 16, 16] == 0


def test_transform_boxes_by_hand():
    boxes = np.array([[0.5, 0.5, 0.2, 0.4, 3], [0.05, 0.5, 0.1, 0.1, 1]])
    # window = the right half of a 100 x 50 image, stretched
    out = D.transform_boxes(boxes, (50, 0, 100, 50), 100, 50, False, 0.01, 0.01)
    # box 0 spans x 40..60 px -> 0..10 of the window (clipped), y 15..35 of 50
    np.testing.assert_allclose(out, [[0.1, 0.5, 0.2, 0.4, 3]])     # box 1 is outside
    flipped = D.transform_boxes(boxes, (50, 0, 100, 50), 100, 50, True, 0.01, 0.01)
    np.testing.assert_allclose(flipped, [[0.9, 0.5, 0.2, 0.4, 3]])
    # a window twice the image: boxes shrink towards the window's centre
    out = D.transform_boxes(boxes[:1], (-50, -25, 150, 75), 100, 50, False, 0.01, 0.01)
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.1, 0.2, 3]])
    # narrower than min_w after clipping: dropped
    assert len(D.transform_boxes(boxes, (59, 0, 100, 50), 100, 50, False, 0.05, 0.01)) == 0


def test_crop_resize_identity_and_grey_outside():
    im = np.random.default_rng(0).random((1, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(D.crop_resize(im, (0, 0, 8, 6), 8, 6), im, atol=1e-6)
    out = D.crop_resize(im, (-8, 0, 8, 6), 8, 6)             # left half is outside
    # output column i samples x = -8 + (i + .5) * 2 - .5: columns 0..3 see only grey
    np.testing.assert_allclose(out[:, :, :4], 0.5, atol=1e-6)
    np.testing.assert_allclose(out[:, :, 5], (im[:, :, 2] + im[:, :, 3]) / 2, atol=1e-6)


def squares_dataset(tmp_path, n=6):
    """Grey images with white rectangles at known places; labels from the rectangles."""
    rng = np.random.default_rng(1)
    images = {}
    for k in range(n):
        h, w = rng.integers(40, 70, 2)
        pix = np.zeros((h, w))
        lines = []
        for _ in range(2):
            bw, bh = rng.integers(8, 20, 2)
            x0, y0 = rng.integers(0, w - bw), rng.integers(0, h - bh)
            pix[y0:y0 + bh, x0:x0 + bw] = 255
            lines.append(f"{k % 2} {(x0 + bw / 2) / w} {(y0 + bh / 2) / h} {bw / w} {bh / h}")
        images[f"s{k}"] = (pix, "\n".join(lines) + "\n")
    return make_dataset(tmp_path, images)


def test_augmented_boxes_follow_the_pixels(tmp_path):
    ds = squares_dataset(tmp_path)
    aug = D.DetAugment(jitter=0.3, flip=True, exposure=1.0)
    rng = np.random.default_rng(7)
    for _ in range(4):
        x, truth = ds.batch(np.arange(len(ds)), (1, 48, 48), aug, rng, most=5)
        for b in range(len(ds)):
            bright = x[b, 0] > 0.75
            for cx, cy, w, h, _ in truth[b].reshape(-1, 5):
                if cx == 0:
                    break
                x0, x1 = (cx - w / 2) * 48, (cx + w / 2) * 48
                y0, y1 = (cy - h / 2) * 48, (cy + h / 2) * 48
                inner = bright[int(np.ceil(y0 + 1)):int(y1 - 1), int(np.ceil(x0 + 1)):int(x1 - 1)]
                assert inner.size == 0 or inner.mean() > 0.95    # the box is on white
    # every white pixel lies in some box (up to the bilinear edge): no box got lost
    x, truth = ds.batch(np.arange(len(ds)), (1, 48, 48), aug, np.random.default_rng(3), 5)
    for b in range(len(ds)):
        covered = np.zeros((48, 48), bool)
        for cx, cy, w, h, _ in truth[b].reshape(-1, 5):
            if cx:
                covered[max(0, int((cy - h / 2) * 48) - 1):int((cy + h / 2) * 48) + 2,
                        max(0, int((cx - w / 2) * 48) - 1):int((cx + w / 2) * 48) + 2] = True
        assert not np.any((x[b, 0] > 0.9) & ~covered)


def test_flip_mirrors_image_and_boxes(tmp_path):
    pix = np.zeros((32, 32))
    pix[4:12, 2:10] = 255
    ds = make_dataset(tmp_path, {"f": (pix, "0 0.1875 0.25 0.25 0.25\n")})
    aug = D.DetAugment(jitter=0.0, flip=True)
    seen = set()
    for seed in range(8):
        x, truth = ds.batch(np.array([0]), (1, 32, 32), aug, np.random.default_rng(seed), 1)
        flipped = x[0, 0, 6, 28] > 0.9
        assert x[0, 0, 6, 3 if not flipped else 28] > 0.9
        np.testing.assert_allclose(truth[0, :2], [0.8125 if flipped else 0.1875, 0.25],
                                   atol=1e-6)
        seen.add(bool(flipped))
    assert seen == {True, False}


def test_augmentation_is_deterministic_and_exposure_scales(tmp_path):
    ds = squares_dataset(tmp_path)
    aug = D.DetAugment(jitter=0.2, flip=True, exposure=1.5)
    a = ds.batch(np.arange(4), (1, 40, 40), aug, np.random.default_rng(5), 90)
    b = ds.batch(np.arange(4), (1, 40, 40), aug, np.random.default_rng(5), 90)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = ds.batch(np.arange(4), (1, 40, 40), aug, np.random.default_rng(6), 90)
    assert not np.array_equal(a[0], c[0])


def test_rgb_network_reads_grey_images_and_hue_runs(tmp_path):
    ds = squares_dataset(tmp_path, n=2)
    aug = D.DetAugment(jitter=0.1, flip=False, exposure=1.2, saturation=1.5, hue=0.1)
    x, _ = ds.batch(np.arange(2), (3, 24, 24), aug, np.random.default_rng(0), 90)
    assert x.shape == (2, 3, 24, 24) and x.min() >= 0 and x.max() <= 1


# --- tools/make_detection_dataset.py ---------------------------------------------------------

def tool():
    spec = importlib.util.spec_from_file_location(
        "make_detection_dataset", ROOT / "tools" / "make_detection_dataset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def digest(folder) -> str:
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            h.update(f.encode())
            with open(os.path.join(root, f), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_make_detection_dataset_is_deterministic_and_readable(tmp_path, capsys):
    from darkcfg.data.arrays import fashion_mnist_dir
    try:
        fashion_mnist_dir()
    except DataError as e:
        pytest.skip(str(e))
    make = tool()
    args = ["--count", "12", "--valid", "4", "--seed", "3", "--classes", "1,5,8",
            "--anchors", "3"]
    assert make.main([str(tmp_path / "a"), *args]) == 0
    assert make.main([str(tmp_path / "b"), *args]) == 0
    assert "train: 12/12 images" in capsys.readouterr().err
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    cfg = read_data_config(tmp_path / "a" / "fashion_det.data")
    assert cfg.classes == 3 and cfg.names == ["Trouser", "Sandal", "Bag"]
    train = D.open_detection_dataset(cfg, "train")
    valid = D.open_detection_dataset(cfg, "valid")
    assert len(train) == 12 and len(valid) == 4
    counts = [len(b) for b in train.boxes]
    assert min(counts) >= 1 and max(counts) <= 4
    allb = np.concatenate(train.boxes)
    assert set(allb[:, 4].astype(int)) <= {0, 1, 2}
    side = allb[:, 2:4] * 96
    assert side.min() >= 3 and side.max() <= 53
    x, _ = train.batch(np.arange(3), (1, 96, 96), None, None, 90)
    assert x.shape == (3, 1, 96, 96)
    anchors = (tmp_path / "a" / "anchors.txt").read_text().split(",")
    assert len(anchors) == 6
