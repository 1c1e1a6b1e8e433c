"""Datasets: .data files, label matching, IDX/npz, images, augmentation, batches, export.

Every expected value is written out here (IDX bytes packed by hand, pixel values chosen
in the test, sampling formulas evaluated by hand), never read back from darkcfg's output.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from darkcfg.data import arrays as A
from darkcfg.data import augment as G
from darkcfg.data import classifier as D
from darkcfg.errors import DataError

ROOT = Path(__file__).resolve().parent.parent


# --- helpers ---------------------------------------------------------------------------

def idx_bytes(a: np.ndarray, code: int = 0x08, be: str = ">u1") -> bytes:
    head = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(be).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def tiny_images(n: int = 6, h: int = 4, w: int = 5) -> np.ndarray:
    return (np.arange(n * h * w) * 7 % 256).astype(np.uint8).reshape(n, h, w)


def png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


# --- IDX -------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_and_labels(tmp_path, gz):
    x = tiny_images()
    y = np.array([3, 0, 1, 2, 1, 0], np.uint8)
    fi = write(tmp_path / "a-images-idx3-ubyte", idx_bytes(x), gz)
    fl = write(tmp_path / "a-labels-idx1-ubyte", idx_bytes(y), gz)
    got = A.read_idx(fi)
    assert got.shape == (6, 4, 5) and got.dtype == np.uint8
    assert (got == x).all()
    ds = A.load_idx(fi, fl)
    assert ds.images.shape == (6, 1, 4, 5)
    assert ds.labels.tolist() == [3, 0, 1, 2, 1, 0]
    f = A.load_idx_images(fi)
    assert f.dtype == np.float32 and f.shape == (6, 1, 4, 5)
    assert f[1, 0, 2, 3] == pytest.approx(x[1, 2, 3] / 255)


def test_idx_big_endian_types(tmp_path):
    a = np.array([[1, -2], [300, -40000 // 2]], np.int64)
    got = A.read_idx(write(tmp_path / "s.idx", idx_bytes(a, 0x0B, ">i2")))
    assert got.tolist() == [[1, -2], [300, -20000]]
    f = np.array([0.5, 0.25, 1.0])
    got = A.read_idx(write(tmp_path / "f.idx", idx_bytes(f, 0x0D, ">f4")))
    assert got.tolist() == [0.5, 0.25, 1.0]


def test_idx_errors_name_the_file(tmp_path):
    bad = write(tmp_path / "bad.idx", b"\x01\x02\x08\x01\0\0\0\x01x")
    with pytest.raises(DataError, match=r"bad.idx: not an IDX file \(first bytes 01 02 08 01"):
        A.read_idx(bad)
    short = write(tmp_path / "short.idx", idx_bytes(tiny_images())[:-3])
    with pytest.raises(DataError, match=r"short.idx: IDX header says 6 x 4 x 5 uint8 values "
                                        r"\(120 bytes\) but the file holds 117 bytes"):
        A.read_idx(short)
    trailing = write(tmp_path / "long.idx", idx_bytes(tiny_images()) + b"\0")
    with pytest.raises(DataError, match="long.idx.*holds 121 bytes"):
        A.read_idx(trailing)
    broken = write(tmp_path / "cut.gz", gzip.compress(idx_bytes(tiny_images()))[:30])
    with pytest.raises(DataError, match="cut.gz: cannot read"):
        A.read_idx(broken)
    with pytest.raises(DataError, match="nope.idx: no such IDX file"):
        A.read_idx(tmp_path / "nope.idx")


def test_idx_label_count_must_match(tmp_path):
    fi = write(tmp_path / "i.idx", idx_bytes(tiny_images()))
    fl = write(tmp_path / "l.idx", idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match="6 images but 5 labels"):
        A.load_idx(fi, fl)


# --- npz -------------------------------------------------------------------------------

def test_npz_keys_and_layouts(tmp_path):
    x = tiny_images(3)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([1, 2, 0]))
    ds = A.load_npz(tmp_path / "a.npz")
    assert ds.images.shape == (3, 1, 4, 5) and ds.labels.tolist() == [1, 2, 0]
    rgb = np.random.default_rng(0).random((2, 6, 7, 3)).astype(np.float32)
    np.savez(tmp_path / "b.npz", images=rgb, labels=np.array([0, 1]))
    ds = A.load_npz(tmp_path / "b.npz")
    assert ds.images.shape == (2, 3, 6, 7)
    assert ds.images[1, 2, 4, 5] == rgb[1, 4, 5, 2]


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "a.npz", data=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match="a.npz: expected arrays 'x' and 'y'.*found data"):
        A.load_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.full((2, 3, 3), 2.0), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"b.npz: float images must lie in \[0, 1\]"):
        A.load_npz(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"PK not really")
    with pytest.raises(DataError, match="c.npz: not a readable .npz"):
        A.load_npz(tmp_path / "c.npz")


# --- label matching (src/data.c: fill_truth, whole path components) ---------------------

def test_label_trap_cases():
    m = D.LabelMatcher(["rain", "cat", "dog"])
    # Darknet: 'rain' is a substring of '/train/'; darkcfg: a whole folder or word only
    assert m.candidates("/data/train/123_cat.png") == [1]
    assert m.candidates("/data/category/123_dog.png") == [2]     # 'cat' vs 'category'
    assert m.candidates("data/cat/0001.jpg") == [1]              # folder named cat
    assert m.candidates("imgs/7-rain.png") == [0]
    assert m.candidates("imgs/raining_9.png") == []
    assert m.candidates("imgs/cat.dog.png") == [1, 2]
    assert m.candidates("imgs/bobcat_1.png") == []


def test_label_multiword_and_list_folder():
    m = D.LabelMatcher(["ankle_boot", "boot"])
    assert m.candidates("x/00_ankle_boot.png") == [0, 1]
    assert m.candidates("x/00_boot.png") == [1]
    m = D.LabelMatcher(["cat", "dog"])
    # folders that hold the list file do not name the class
    assert m.candidates("/home/cat/set/train/5_dog.png", root="/home/cat/set") == [1]
    assert m.candidates("/home/cat/set/train/5_dog.png") == [0, 1]


def test_label_errors_name_image_and_candidates():
    m = D.LabelMatcher(["cat", "dog"])
    with pytest.raises(DataError, match=r"^t.list:4: image a/cat/1_dog.png matches 2 labels "
                                        r"\(cat, dog\)"):
        m.label("a/cat/1_dog.png", "t.list:4")
    with pytest.raises(DataError, match=r"^t.list:2: image a/category/1.png matches none "
                                        r"of the 2 labels \(cat, dog\); name it like "
                                        r"123_cat.png"):
        m.label("a/category/1.png", "t.list:2")


# --- .data files -----------------------------------------------------------------------

def make_image_set(tmp_path: Path) -> Path:
    """Three 4x4 grey PNGs in tmp/set, a list, labels and a .data file."""
    root = tmp_path / "set"
    for i, lab in enumerate(["cat", "dog", "cat"]):
        png(root / "train" / f"{i}_{lab}.png", np.full((4, 4), 10 * i + 5))
    (root / "train.list").write_text("train/0_cat.png\n\ntrain/1_dog.png\n"
                                     f"{root / 'train' / '2_cat.png'}\n")
    (root / "labels.txt").write_text("cat\ndog\n\n")
    (root / "my.data").write_text("# test\nclasses= 2\ntrain = train.list ; inline\n"
                                  "labels=labels.txt\nbackup=backup/\n")
    return root / "my.data"


def test_data_file_and_image_list(tmp_path):
    cfg = D.read_data_config(make_image_set(tmp_path))
    root = tmp_path / "set"
    assert cfg.classes == 2 and cfg.labels == ["cat", "dog"] and cfg.top == 1
    assert cfg.path("train") == str(root / "train.list")
    assert cfg.backup == str(root / "backup")
    assert D.open_dataset(cfg, "valid") is None
    ds = D.open_dataset(cfg, "train")
    assert ds.labels.tolist() == [0, 1, 0]
    assert ds.lines == [1, 3, 4]
    x, truth = next(D.batches(ds, 3, classes=2, shape=(1, 4, 4), shuffle=False))
    assert x.shape == (3, 1, 4, 4) and x.dtype == np.float32
    assert x[:, 0, 2, 1] == pytest.approx([5 / 255, 15 / 255, 25 / 255])
    assert truth.tolist() == [[1, 0], [0, 1], [1, 0]]
    x3, _ = next(D.batches(ds, 3, classes=2, shape=(3, 4, 4), shuffle=False))
    assert x3.shape == (3, 3, 4, 4) and (x3[:, 1] == x3[:, 0]).all()


def test_relative_paths_fall_back_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "a.list").write_text("x/1_cat.png\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "k.data").write_text("classes=1\ntrain=lists/a.list\nlabels=lab\n")
    (tmp_path / "d" / "lab").write_text("cat\n")
    cfg = D.read_data_config(tmp_path / "d" / "k.data")
    assert cfg.path("train") == "lists/a.list"      # only the current folder has it


@pytest.mark.parametrize("text, message", [
    ("classes=2\nvaild=v.list\n", r"k.data:2: unknown key 'vaild' - did you mean 'valid'\?"),
    ("classes=2\nclasses=3\n", r"k.data:2: duplicate key 'classes' \(first on line 1\)"),
    ("classes=two\n", r"k.data:1: 'classes' must be a positive integer, got 'two'"),
    ("[net]\nclasses=2\n", r"k.data:1: a .data file has no \[sections\]"),
    ("classes 2\n", r"k.data:1: expected 'key=value'"),
    ("train=t.list\n", r"k.data: no 'classes' key"),
    ("classes=3\nlabels=lab\n", r"k.data:2: .*lab has 2 labels but classes=3 \(line 1\)"),
    ("classes=2\ntree=t.tree\n", r"k.data:2: 'tree' .* not supported"),
    ("classes=2\ntag=0\ntag=1\n", r"k.data:3: 'tag' .* not supported"),
    ("classes=2\nlabels=missing.txt\n", r"k.data:2: .*missing.txt: no such labels file"),
])
def test_data_file_errors(tmp_path, text, message):
    (tmp_path / "lab").write_text("cat\ndog\n")
    (tmp_path / "k.data").write_text(text)
    with pytest.raises(DataError, match=message):
        D.read_data_config(tmp_path / "k.data")


def test_labels_file_problems(tmp_path):
    (tmp_path / "lab").write_text("cat\n\ndog\n")
    with pytest.raises(DataError, match=r"lab:2: blank line in the labels file"):
        D.read_lines(str(tmp_path / "lab"), "labels")
    (tmp_path / "lab").write_text("cat\ndog\ncat\n")
    with pytest.raises(DataError, match=r"lab:3: label 'cat' repeats line 1"):
        D.read_lines(str(tmp_path / "lab"), "labels")


def test_missing_and_unreadable_images_name_list_line_and_image(tmp_path):
    data = make_image_set(tmp_path)
    root = tmp_path / "set"
    (root / "train" / "1_dog.png").unlink()
    ds = D.open_dataset(D.read_data_config(data), "train")
    with pytest.raises(DataError, match=r"train.list:3: .*1_dog.png: no such image file"):
        list(D.batches(ds, 3, classes=2, shape=(1, 4, 4), shuffle=False, epochs=1))
    (root / "train" / "1_dog.png").write_text("not a png")
    with pytest.raises(DataError, match=r"train.list:3: .*1_dog.png: not an image"):
        list(D.batches(ds, 3, classes=2, shape=(1, 4, 4), shuffle=False, epochs=1))


def test_list_label_problem_is_found_when_opening(tmp_path):
    data = make_image_set(tmp_path)
    (tmp_path / "set" / "train.list").write_text("train/0_cat.png\ntrain/9_cow.png\n")
    with pytest.raises(DataError, match=r"train.list:2: image train/9_cow.png matches none"):
        D.open_dataset(D.read_data_config(data), "train")


def test_data_file_with_idx_and_npz(tmp_path):
    x = tiny_images()
    write(tmp_path / "tr-images-idx3-ubyte.gz", idx_bytes(x), gz=True)
    write(tmp_path / "tr-labels-idx1-ubyte.gz", idx_bytes(np.array([0, 1, 2, 0, 1, 2],
                                                                   np.uint8)), gz=True)
    write(tmp_path / "other.idx", idx_bytes(np.array([2, 2, 2, 2, 2, 2], np.uint8)))
    np.savez(tmp_path / "v.npz", x=x[:2], y=np.array([1, 1]))
    (tmp_path / "a.data").write_text("classes=3\ntrain=tr-images-idx3-ubyte.gz\n"
                                     "valid=v.npz\ntest=tr-images-idx3-ubyte.gz\n"
                                     "test_labels=other.idx\n")
    cfg = D.read_data_config(tmp_path / "a.data")
    assert D.open_dataset(cfg, "train").labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert D.open_dataset(cfg, "valid").labels.tolist() == [1, 1]
    assert D.open_dataset(cfg, "test").labels.tolist() == [2] * 6
    (tmp_path / "b.data").write_text("classes=2\ntrain=tr-images-idx3-ubyte.gz\n")
    with pytest.raises(DataError, match=r"b.data:2: .*has label 2, outside 0..1"):
        D.open_dataset(D.read_data_config(tmp_path / "b.data"), "train")
    (tmp_path / "c.data").write_text("classes=3\ntrain=other.idx\n")
    with pytest.raises(DataError, match=r"c.data:2: no labels for the IDX images .*add "
                                        r"'train_labels='"):
        D.open_dataset(D.read_data_config(tmp_path / "c.data"), "train")


# --- Fashion-MNIST discovery -----------------------------------------------------------

def test_fashion_mnist_from_env_folder(tmp_path, monkeypatch):
    for prefix, n in (("train", 4), ("t10k", 2)):
        write(tmp_path / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(tiny_images(n, 28, 28)),
              gz=True)
        write(tmp_path / f"{prefix}-labels-idx1-ubyte", idx_bytes(np.arange(n, dtype=np.uint8)))
    monkeypatch.setenv("DARKCFG_FASHION_MNIST", str(tmp_path))
    assert A.fashion_mnist_dir() == tmp_path
    ds = A.fashion_mnist("test")
    assert ds.images.shape == (2, 1, 28, 28) and ds.names[0] == "T-shirt/top"
    (tmp_path / "a.data").write_text("train=fashion-mnist:train\nvalid=fashion-mnist:test\n")
    cfg = D.read_data_config(tmp_path / "a.data")
    assert cfg.classes == 10 and len(D.open_dataset(cfg, "train")) == 4
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="DARKCFG_FASHION_MNIST=.*lacks "
                                        r"t10k-labels-idx1-ubyte\[.gz\]"):
        A.fashion_mnist_dir()


def test_fashion_mnist_absent_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("DARKCFG_FASHION_MNIST", raising=False)
    monkeypatch.setattr(A, "FASHION_MNIST_DIR", str(tmp_path / "none"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*or set "
                                        "DARKCFG_FASHION_MNIST"):
        A.fashion_mnist_dir()


def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("DARKCFG_FASHION_MNIST", raising=False)
    try:
        A.fashion_mnist_dir()
    except DataError:
        pytest.skip("Fashion-MNIST is absent: apt-get install dataset-fashion-mnist")
    train, test = A.fashion_mnist("train"), A.fashion_mnist("test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    # the published set is balanced: 6,000 and 1,000 images per class
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10


# --- sizing and augmentation -----------------------------------------------------------

def test_center_resize_crops_the_middle_and_pads_with_zero():
    im = np.arange(32, dtype=np.float32).reshape(1, 4, 8)
    assert (G.center_resize(im, 4, 4) == im[:, :, 2:6]).all()
    tall = np.arange(32, dtype=np.float32).reshape(1, 8, 4)
    assert (G.center_resize(tall, 4, 4) == tall[:, 2:6, :]).all()
    small = np.ones((1, 4, 4), np.float32)
    out = G.center_resize(small, 4, 6)     # 4 wide, 6 high: rows 0 and 5 fall outside
    assert out.shape == (1, 6, 4) and out[0, 0].sum() == 0 and out[0, 1:5].min() == 1


def by_hand(im, rad, s, a, dx, dy, w, h):
    """Darknet's rotate_crop_image loop, one pixel at a time."""
    c, ih, iw = im.shape
    out = np.zeros((c, h, w))
    for y in range(h):
        for x in range(w):
            u = (x - w / 2) / s * a + dx / s * a
            v = (y - h / 2) / s + dy / s
            rx = np.cos(rad) * u - np.sin(rad) * v + iw / 2
            ry = np.sin(rad) * u + np.cos(rad) * v + ih / 2
            ix, iy = int(np.floor(rx)), int(np.floor(ry))
            fx, fy = rx - ix, ry - iy

            def px(xx, yy):
                return im[:, yy, xx] if 0 <= xx < iw and 0 <= yy < ih else 0

            out[:, y, x] = ((1 - fy) * (1 - fx) * px(ix, iy) + fy * (1 - fx) * px(ix, iy + 1)
                            + (1 - fy) * fx * px(ix + 1, iy) + fy * fx * px(ix + 1, iy + 1))
    return out


def test_rotate_crop_identity_shift_and_quarter_turn():
    im = np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4) / 32
    same = G.rotate_crop(im, [0], [1], [1], [0], [0], 4, 4)
    assert (same == im).all()
    shifted = G.rotate_crop(im, [0], [1], [1], [1], [0], 4, 4)
    assert (shifted[0, :, :, :3] == im[0, :, :, 1:]).all() and (shifted[..., 3] == 0).all()
    turned = G.rotate_crop(im, [np.pi / 2], [1], [1], [0], [0], 4, 4)
    # u = x - 2, v = y - 2: source column 4 - y, row x (column 4 falls outside: 0)
    for y in range(4):
        for x in range(4):
            want = im[0, :, x, 4 - y] if 4 - y < 4 else 0
            assert turned[0, :, y, x] == pytest.approx(want, abs=1e-6)


def test_rotate_crop_matches_darknet_formula_pixel_by_pixel():
    rng = np.random.default_rng(5)
    im = rng.random((3, 7, 9)).astype(np.float32)
    for rad, s, a, dx, dy in [(0.3, 1.4, 1.2, 0.7, -1.1), (-0.5, 0.8, 0.9, -2.0, 0.4)]:
        got = G.rotate_crop(im[None], [rad], [s], [a], [dx], [dy], 6, 5)[0]
        assert got == pytest.approx(by_hand(im, rad, s, a, dx, dy, 6, 5), abs=1e-5)


def test_hsv_round_trip_and_hue_shift(rng):
    red = np.zeros((1, 3, 1, 1), np.float32)
    red[0, 0] = 1
    h, s, v = G.rgb_to_hsv(red)
    assert (h.item(), s.item(), v.item()) == (0, 1, 1)
    green = G.distort(red, [1 / 3], [1], [1])
    assert green[0, :, 0, 0] == pytest.approx([0, 1, 0], abs=1e-6)
    wrapped = G.distort(red, [-1 / 3], [1], [1])            # 0 - 1/3 wraps to 2/3: blue
    assert wrapped[0, :, 0, 0] == pytest.approx([0, 0, 1], abs=1e-6)
    x = rng.random((2, 3, 5, 5)).astype(np.float32)
    assert G.hsv_to_rgb(*G.rgb_to_hsv(x)) == pytest.approx(x, abs=1e-6)
    # saturation 0 gives grey at the value (the max channel); exposure scales and clamps
    grey = G.distort(x, [0, 0], [0, 0], [1, 1])
    assert grey[:, 0] == pytest.approx(x.max(axis=1), abs=1e-6)
    bright = G.distort(x[:, :1], [0, 0], [1, 1], [2, 0.5])
    assert bright[0] == pytest.approx(np.minimum(2 * x[0, :1], 1))
    assert bright[1] == pytest.approx(0.5 * x[1, :1])


def test_augment_from_net_keys():
    base = {"min_crop": 0, "max_crop": 0, "min_ratio": 0.0, "max_ratio": 0.0, "angle": 7.0,
            "aspect": 1.0, "exposure": 1.5, "saturation": 1.0, "hue": 0.0, "flip": 1,
            "center": 0}
    a = G.Augment.from_net(base, (1, 28, 28))
    assert (a.low, a.high, a.angle, a.exposure, a.flip) == (28, 56, 7.0, 1.5, True)
    a = G.Augment.from_net({**base, "min_crop": 28, "max_crop": 32}, (1, 28, 28))
    assert (a.low, a.high) == (28, 32)
    a = G.Augment.from_net({**base, "min_ratio": 1.0, "max_ratio": 32 / 28}, (1, 28, 28))
    assert (a.low, a.high) == (28, 32)


def test_flip_only_augmentation_gives_the_image_or_its_mirror():
    x = np.arange(8 * 16, dtype=np.float32).reshape(8, 1, 4, 4) / 128
    out = G.transform(x, (1, 4, 4), G.Augment(4, 4, flip=True), np.random.default_rng(1))
    flipped = [bool((o == i[:, :, ::-1]).all()) for o, i in zip(out, x)]
    same = [bool((o == i).all()) for o, i in zip(out, x)]
    assert all(f != s for f, s in zip(flipped, same))
    assert 0 < sum(flipped) < 8
    plain = G.transform(x, (1, 4, 4), G.Augment(4, 4, flip=False), np.random.default_rng(1))
    assert (plain == x).all()


def test_random_crop_stays_within_darknet_ranges():
    x = np.random.default_rng(0).random((64, 1, 28, 28)).astype(np.float32)
    aug = G.Augment(28, 40, angle=10, aspect=1.2, exposure=1.5, flip=True)
    out = G.transform(x, (1, 24, 24), aug, np.random.default_rng(2))
    assert out.shape == (64, 1, 24, 24) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


# --- batches ---------------------------------------------------------------------------

def array_set(n=10):
    x = (np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 2, 2), np.uint8))
    return A.ArrayDataset(x, np.arange(n) % 3, "mem")


def test_batches_cover_each_epoch_once_and_truth_is_one_hot():
    ds = array_set(10)
    it = D.batches(ds, 5, classes=3, shape=(1, 2, 2), seed=4)
    seen = []
    for _ in range(4):
        x, truth = next(it)
        ids = np.rint(x[:, 0, 0, 0] * 255).astype(int)
        assert truth.tolist() == np.eye(3)[ids % 3].tolist()
        seen.append(sorted(ids.tolist()))
    assert sorted(seen[0] + seen[1]) == list(range(10))
    assert sorted(seen[2] + seen[3]) == list(range(10))
    assert seen[:2] != seen[2:]                     # a new permutation each epoch


def test_batches_endless_mode_keeps_batches_full():
    it = D.batches(array_set(7), 3, classes=3, shape=(1, 2, 2), seed=0)
    assert [len(next(it)[0]) for _ in range(10)] == [3] * 10


def test_batches_finite_and_ordered():
    got = list(D.batches(array_set(7), 3, classes=3, shape=(1, 2, 2), shuffle=False,
                         epochs=1))
    assert [len(x) for x, _ in got] == [3, 3, 1]
    ids = np.concatenate([np.rint(x[:, 0, 0, 0] * 255) for x, _ in got]).astype(int)
    assert ids.tolist() == list(range(7))


def test_batches_reproducible_with_a_seed():
    x = np.random.default_rng(0).integers(0, 256, (20, 3, 8, 8)).astype(np.uint8)
    ds = A.ArrayDataset(x, np.arange(20) % 4, "mem")
    aug = G.Augment(8, 12, angle=20, hue=0.1, saturation=1.5, exposure=1.5)

    def run(seed):
        it = D.batches(ds, 6, classes=4, shape=(3, 8, 8), seed=seed, augment=aug)
        return [next(it) for _ in range(3)]

    a, b, c = run(11), run(11), run(12)
    assert all((p[0] == q[0]).all() and (p[1] == q[1]).all() for p, q in zip(a, b))
    assert not all((p[0] == q[0]).all() for p, q in zip(a, c))


def test_batches_refuse_labels_beyond_the_outputs():
    with pytest.raises(DataError, match="mem: labels run 0..2 but the network has 2 outputs"):
        next(D.batches(array_set(), 2, classes=2, shape=(1, 2, 2)))


# --- tools/export_idx.py ---------------------------------------------------------------

def test_export_idx_writes_darknet_layout(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    imgs = {"train": tiny_images(5, 28, 28), "t10k": tiny_images(3, 28, 28)[::-1].copy()}
    labs = {"train": np.array([0, 1, 2, 1, 0], np.uint8), "t10k": np.array([2, 2, 0], np.uint8)}
    for prefix, images in imgs.items():
        write(src / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(images), gz=True)
        write(src / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(labs[prefix]), gz=True)
    spec = importlib.util.spec_from_file_location("export_idx", ROOT / "tools" /
                                                  "export_idx.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "out"
    assert tool.main([str(out), "--source", str(src), "--labels", "ant,bee,cow",
                      "--limit", "4", "--name", "bugs"]) == 0
    assert "train: 4/4 images" in capsys.readouterr().out
    assert (out / "labels.txt").read_text() == "ant\nbee\ncow\n"
    train = (out / "train.list").read_text().split()
    assert [os.path.basename(p) for p in train] == ["0_ant.png", "1_bee.png", "2_cow.png",
                                                    "3_bee.png"]
    assert all(os.path.isabs(p) for p in train)
    test = (out / "test.list").read_text().split()
    assert [os.path.basename(p) for p in test] == ["0_cow.png", "1_cow.png", "2_ant.png"]
    assert (np.asarray(Image.open(train[3])) == imgs["train"][3]).all()
    assert (np.asarray(Image.open(test[0])) == imgs["t10k"][0]).all()
    # darkcfg reads the result back to the same pixels and labels
    cfg = D.read_data_config(out / "bugs.data")
    assert cfg.classes == 3 and cfg.backup == str(out / "backup")
    valid = D.open_dataset(cfg, "valid")
    assert valid.labels.tolist() == [2, 2, 0]
    x, _ = next(D.batches(valid, 3, classes=3, shape=(1, 28, 28), shuffle=False))
    assert (np.rint(x[:, 0] * 255) == imgs["t10k"]).all()
    # Darknet's substring rule finds exactly one label in each exported path
    assert all(sum(lab in p for lab in ("ant", "bee", "cow")) == 1 for p in train + test)


# --- cfg/fashion_*.cfg and cfg/fashion.data --------------------------------------------

# fashion_backbone.cfg pre-trains on 6 of the classes (README, "Transfer learning");
# fashion_siamese.cfg is an embedding net (tests/test_embed.py)
FASHION_CFGS = sorted(p for p in (ROOT / "cfg").glob("fashion_*.cfg")
                      if p.stem not in ("fashion_backbone", "fashion_siamese"))


def test_the_five_fashion_cfgs_are_there():
    assert {p.stem for p in FASHION_CFGS} >= {"fashion_plain", "fashion_resnet",
                                              "fashion_separable", "fashion_dilated",
                                              "fashion_gap"}


@pytest.mark.parametrize("path", FASHION_CFGS, ids=lambda p: p.stem)
def test_fashion_cfg_is_small_and_ends_in_softmax(path):
    from darkcfg.graph import load_graph
    from darkcfg.schedule import check_schedule
    text = path.read_text()
    assert text.startswith("# " + path.name + " - ")           # header says what it shows
    g = load_graph(path)
    assert g.net.input_shape == (1, 28, 28)
    assert g.layers[-1].type == "softmax" and g.layers[-1].outputs == 10
    assert 10_000 <= g.nparams <= 500_000
    macs = sum(layer.flops() for layer in g.layers) / 2
    assert 0.3e6 <= macs <= 3.5e6
    opts = g.net.opts
    check_schedule(opts, g.net.section)
    assert 10 <= opts["max_batches"] * opts["batch"] / 60000 <= 15      # epochs
    assert opts["hue"] == 0 and opts["saturation"] == 1                # grey images
    aug = G.Augment.from_net(opts, g.net.input_shape)
    assert (aug.low, aug.high) == (28, 32)


def test_fashion_data_file():
    cfg = D.read_data_config(ROOT / "cfg" / "fashion.data")
    assert cfg.classes == 10
    assert (cfg.path("train"), cfg.path("valid")) == ("fashion-mnist:train",
                                                      "fashion-mnist:test")
    assert cfg.backup == str(ROOT / "backup")


def test_split_classes_keep_only_those_images(tmp_path):
    x = tiny_images(8)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1, 2, 3, 0, 1, 2, 3]))
    (tmp_path / "a.data").write_text("classes=4\ntrain=a.npz\nvalid=a.npz\n"
                                     "train_classes=3, 1\nvalid_classes=2\n")
    cfg = D.read_data_config(tmp_path / "a.data")
    train = D.open_dataset(cfg, "train")
    assert train.labels.tolist() == [1, 3, 1, 3]                   # labels keep their index
    assert (train.images == x[[1, 3, 5, 7]][:, None]).all()
    assert train.source.endswith("a.npz, classes 1,3")
    assert D.open_dataset(cfg, "valid").labels.tolist() == [2, 2]
    # an image list: paths and list lines follow the images kept
    ds = D.open_dataset(D.read_data_config(make_image_set(tmp_path)), "train")
    data = tmp_path / "set" / "my.data"
    data.write_text(data.read_text() + "train_classes=1\n")
    dogs = D.open_dataset(D.read_data_config(data), "train")
    assert dogs.labels.tolist() == [1] and dogs.lines == [3] and dogs.paths == ds.paths[1:2]
    np.savez(tmp_path / "b.npz", x=x[:2], y=np.array([1, 1]))
    for train, line, message in (
            ("a.npz", "train_classes=1 3", r"a.data:4: 'train_classes' must list class "
             r"indices separated by commas \(e.g. 1,3,5\), got '1 3'"),
            ("a.npz", "train_classes=4", r"a.data:4: class 4 is outside 0..3"),
            ("b.npz", "train_classes=0", r"a.data:4: .*b.npz has no image of classes 0")):
        (tmp_path / "a.data").write_text(f"classes=4\ntrain={train}\nvalid=a.npz\n{line}\n")
        with pytest.raises(DataError, match=message):
            D.open_dataset(D.read_data_config(tmp_path / "a.data"), "train")
