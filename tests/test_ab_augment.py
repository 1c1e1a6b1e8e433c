"""AlexeyAB's detector-training augmentation (dialect=alexeyab): mosaic's box arithmetic
and pixels, the letterboxed crop, background blur, determinism per seed, and multi-scale
training ([yolo] random=1) on shared parameters. Expected numbers are worked out by hand
from src/data.c (blend_truth_mosaic, load_data_detection) and src/detector.c."""
from __future__ import annotations

import numpy as np

from darkcfg.data.augment import gaussian_blur, gaussian_kernel
from darkcfg.data.detection import (
    ABTile,
    DetAugment,
    ab_crop,
    ab_tile,
    blur_image,
    mosaic,
    mosaic_boxes,
    mosaic_shifts,
    read_detection_list,
)
from darkcfg.graph import load_graph
from darkcfg.network import Network
from darkcfg.train.detector import multiscale_size, train_detector
from darkcfg.train.loop import TrainOptions

from .toy_detector import make_data, write_cfg

W = H = 64
CUT_X, CUT_Y = 24, 40


def px(*v):
    """Pixels of a 64-wide image as fractions (exact in binary)."""
    return [x / 64 for x in v]


def box(x0, y0, x1, y1, cls=0):
    """A box given by its pixel corners -> (1, 5) `x y w h class`."""
    return np.array([[(x0 + x1) / 128, (y0 + y1) / 128, (x1 - x0) / 64, (y1 - y0) / 64,
                      cls]])


# --- mosaic: boxes ------------------------------------------------------------------------

def test_mosaic_tile0_boxes_move_with_the_tile():
    # tile 0 fills the top-left quadrant with its bottom-right 24 x 40 pixels:
    # source x 40..64 -> 0..24, y 24..64 -> 0..40
    out = mosaic_boxes(box(44, 28, 56, 36), 0, W, H, CUT_X, CUT_Y, (0, 0, 0, 0), False)
    np.testing.assert_allclose(out, [[*px(10, 8, 12, 8), 0]])
    # a box half left of the shown part is cut at the mosaic's edge (x -8..8 -> 0..8)
    out = mosaic_boxes(box(32, 28, 48, 36), 0, W, H, CUT_X, CUT_Y, (0, 0, 0, 0), False)
    np.testing.assert_allclose(out, [[*px(4, 8, 8, 8), 0]])
    # a box wholly outside the shown part is dropped
    assert len(mosaic_boxes(box(4, 4, 20, 20), 0, W, H, CUT_X, CUT_Y, (0, 0, 0, 0),
                            False)) == 0
    # cut to less than one pixel wide (x -2..0.5 -> 0..0.5): dropped
    assert len(mosaic_boxes(box(38, 28, 40.5, 36), 0, W, H, CUT_X, CUT_Y, (0, 0, 0, 0),
                            False)) == 0


def test_mosaic_box_reaching_the_next_quadrant_is_cut_only_with_mosaic_bound():
    # right_shift 8 (the tile's crop added 8 border pixels on the right): source x
    # 32..56 is shown, and a box at x 48..60 lands at 16..28, past cut_x=24
    b = box(48, 28, 60, 36, cls=1)
    ab = mosaic_boxes(b, 0, W, H, CUT_X, CUT_Y, (0, 8, 0, 0), False)
    np.testing.assert_allclose(ab, [[*px(22, 8, 12, 8), 1]])     # AB's default keeps it
    bound = mosaic_boxes(b, 0, W, H, CUT_X, CUT_Y, (0, 8, 0, 0), True)
    np.testing.assert_allclose(bound, [[*px(20, 8, 8, 8), 1]])   # cut at x = 24


def test_mosaic_tile3_boxes():
    # tile 3 (bottom-right quadrant, from (24, 40)) shows its top-left part, shifted by
    # left_shift=4: source x 10..20, y 10..20 -> x 30..40, y 50..60
    out = mosaic_boxes(box(10, 10, 20, 20), 3, W, H, CUT_X, CUT_Y, (4, 0, 0, 0), False)
    np.testing.assert_allclose(out, [[*px(35, 55, 10, 10), 0]])


def test_mosaic_shifts_count_border_pixels_in_network_pixels():
    # a 100-wide image whose crop starts 10 pixels left of it (pleft=-10): 10 * 64 / 100
    # = 6.4 border pixels on the network input -> left_shift 6; flip swaps the sides
    t = ABTile(-10, 5, -20, -50, False, 100, 200)
    assert mosaic_shifts(t, W, H, CUT_X, CUT_Y) == (6, 0, 6, 16)
    t = ABTile(-10, 5, -20, -50, True, 100, 200)
    assert mosaic_shifts(t, W, H, CUT_X, CUT_Y) == (0, 6, 6, 16)
    # never more than the quadrant: bottom shift limited to 64 - 40 = 24
    assert mosaic_shifts(ABTile(0, 0, 0, -400, False, 100, 200), W, H, CUT_X, CUT_Y)[3] \
        == 24


def test_mosaic_pixels_come_from_each_tiles_expected_corner():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    tiles = []
    for q in range(4):
        img = (q * 10000 + yy * 100 + xx)[None]
        tiles.append((img, np.zeros((0, 5)), ABTile(0, 0, 0, 0, False, 64, 64)))
    x, boxes = mosaic(tiles, W, H, CUT_X, CUT_Y, False)
    assert len(boxes) == 0
    # (row, col) of the mosaic -> (tile, source row, source col)
    for (r, c), (q, sr, sc) in {(0, 0): (0, 24, 40), (39, 23): (0, 63, 63),
                                (0, 24): (1, 24, 0), (39, 63): (1, 63, 39),
                                (40, 0): (2, 0, 40), (63, 23): (2, 23, 63),
                                (40, 24): (3, 0, 0), (63, 63): (3, 23, 39)}.items():
        assert x[0, r, c] == q * 10000 + sr * 100 + sc, (r, c)


# --- one tile: letterbox, blur ------------------------------------------------------------

def test_letterboxed_crop_pads_with_the_mean_and_corrects_the_boxes():
    # a 20 x 10 image (left half 0, right half 1, mean 0.5) on a 16 x 16 network, no
    # jitter: letter_box widens the crop to 20 x 20 (5 rows above and below)
    im = np.zeros((1, 10, 20), np.float32)
    im[:, :, 10:] = 1
    boxes = np.array([[0.5, 0.5, 0.5, 0.5, 1.0]])     # pixels x 5..15, y 2.5..7.5
    aug = DetAugment(jitter=0, flip=False, dialect="alexeyab", letter_box=True)
    x, out, t = ab_tile(im, boxes, 16, 16, aug, np.random.default_rng(0))
    assert (t.ptop, t.pbot, t.pleft, t.pright) == (-5, -5, 0, 0)
    # y (2.5 + 5) / 20 .. (7.5 + 5) / 20 = 0.375 .. 0.625
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.5, 0.25, 1.0]])
    # output rows 0..3 sample source rows < 5, all border: the image's mean colour
    np.testing.assert_allclose(x[:, :4], 0.5)
    np.testing.assert_allclose(x[:, 12:], 0.5)
    # AB's default stretches: the box stays where it is relative to the image
    stretch = DetAugment(jitter=0, flip=False, dialect="alexeyab")
    x, out, t = ab_tile(im, boxes, 16, 16, stretch, np.random.default_rng(0))
    np.testing.assert_allclose(out, boxes)
    np.testing.assert_allclose(x[:, :, :7], 0)


def test_crop_offsets_are_whole_pixels_within_jitter():
    aug = DetAugment(jitter=0.3, flip=True, dialect="alexeyab")
    im = np.random.default_rng(1).random((3, 30, 50), dtype=np.float32)
    rng = np.random.default_rng(5)
    for _ in range(20):
        _, out, t = ab_tile(im, np.array([[0.5, 0.5, 0.2, 0.2, 0]]), 32, 32, aug, rng)
        assert all(isinstance(v, int) for v in (t.pleft, t.pright, t.ptop, t.pbot))
        assert abs(t.pleft) <= 15 and abs(t.pright) <= 15     # int(50 * 0.3)
        assert abs(t.ptop) <= 9 and abs(t.pbot) <= 9          # int(30 * 0.3)
        # the box follows the crop: centre x 25 -> (25 - pleft) / (50 - pleft - pright)
        cx = (25 - t.pleft) / (50 - t.pleft - t.pright)
        np.testing.assert_allclose(out[0, 0], 1 - cx if t.flip else cx)


def test_gaussian_blur_is_opencvs_17_tap_kernel_with_reflect101_border():
    k = gaussian_kernel(17)
    sigma = 0.3 * (8 - 1) + 0.8                 # OpenCV's sigma for ksize 17
    t = np.arange(-8, 9)
    np.testing.assert_allclose(k, np.exp(-t**2 / (2 * sigma**2)) /
                               np.exp(-t**2 / (2 * sigma**2)).sum(), rtol=1e-12)
    im = np.random.default_rng(2).random((2, 20, 24)).astype(np.float32)
    want = mirror_convolve(mirror_convolve(im.astype(np.float64), k, 1), k, 2)
    np.testing.assert_allclose(gaussian_blur(im, 17), want, atol=1e-6)


def test_background_blur_keeps_the_boxes_sharp_and_the_boxes_unchanged():
    im = np.random.default_rng(3).random((3, 32, 32)).astype(np.float32)
    boxes = np.array([[0.25, 0.5, 0.25, 0.5, 0.0]])       # x 4..12, y 8..24
    keep = boxes.copy()
    out = blur_image(im, 1, boxes)
    np.testing.assert_array_equal(boxes, keep)
    np.testing.assert_array_equal(out[:, 8:24, 4:12], im[:, 8:24, 4:12])
    blurred = gaussian_blur(im, 17)
    mask = np.ones((32, 32), bool)
    mask[8:24, 4:12] = False
    np.testing.assert_allclose(out[:, mask], blurred[:, mask])
    assert not np.allclose(out[:, mask], im[:, mask])
    # blur=k > 1: the whole image with a k // 2 * 2 + 1 kernel
    np.testing.assert_allclose(blur_image(im, 4, boxes), gaussian_blur(im, 5))


# --- the dataset: determinism, dialects ---------------------------------------------------

def _ab_aug(**kw):
    return DetAugment(jitter=0.2, flip=True, exposure=1.5, saturation=1.5, hue=0.1,
                      dialect="alexeyab", mosaic=True, blur=1, **kw)


def test_ab_batches_are_a_function_of_the_seed(tmp_path):
    data = make_data(tmp_path, n=8)
    ds = read_detection_list(str(tmp_path / "train.txt"), 2)
    idx = np.arange(8)
    a = ds.batch(idx, (1, 32, 32), _ab_aug(), np.random.default_rng([4, 7]), 30)
    b = ds.batch(idx, (1, 32, 32), _ab_aug(), np.random.default_rng([4, 7]), 30)
    c = ds.batch(idx, (1, 32, 32), _ab_aug(), np.random.default_rng([4, 8]), 30)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    truth = a[1].reshape(8, 30, 5)
    live = truth[truth[:, :, 0] > 0]
    assert len(live) and np.all((live[:, :4] > 0) & (live[:, :4] <= 1))
    assert data.exists()


def test_pjreddie_dialect_ignores_ab_keys():
    opts = {"flip": 1, "exposure": 1.5, "saturation": 1.5, "hue": 0.1, "letter_box": 1,
            "mosaic": 1, "mosaic_bound": 0, "blur": 1}
    assert DetAugment.from_net(opts, 0.2) == DetAugment(0.2, True, 1.5, 1.5, 0.1)
    ab = DetAugment.from_net(opts, 0.2, "alexeyab")
    assert (ab.dialect, ab.mosaic, ab.letter_box, ab.blur) == ("alexeyab", True, True, 1)


def test_mosaic_with_letter_box_trains_with_letterboxed_tiles(tmp_path):
    """The scaled-YOLOv4 cfgs set both (AlexeyAB's Darknet trained them from 2020 to 2023;
    the pinned commit refuses the pair: README, "Deliberate differences"): each mosaic
    tile's crop is widened to the network's aspect ratio like a single image's."""
    aug = DetAugment(0.0, False, 1.0, 1.0, 0.0, "alexeyab", True, True)
    rng = np.random.default_rng(0)
    # a 40 x 20 image for a square net: 10 rows added above and below, whichever corner
    for corner in range(4):
        t = ab_crop(40, 20, 32, 32, aug, rng, corner)
        assert (t.ptop + t.pbot, t.pleft + t.pright) == (-20, 0)
    data = make_data(tmp_path, n=2)
    cfg = (tmp_path / "x.cfg")
    cfg.write_text(write_cfg(tmp_path).read_text().replace(
        "flip=1", "flip=1\nmosaic=1\nletter_box=1"))
    final = train_detector(str(data), str(cfg), None, TrainOptions(quiet=True))
    assert final.exists()


def mirror_convolve(x: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """A symmetric kernel along one axis, borders reflected without repeating the edge
    (OpenCV's BORDER_REFLECT_101: d c b | a b c d | c b a), one output at a time."""
    x = np.moveaxis(x, axis, -1)
    n, r = x.shape[-1], len(k) // 2
    out = np.zeros_like(x)
    for i in range(n):
        for j, w in enumerate(k):
            p = i + j - r
            p = -p if p < 0 else (2 * (n - 1) - p if p >= n else p)
            out[..., i] += w * x[..., p]
    return np.moveaxis(out, -1, axis)


# --- multi-scale -----------------------------------------------------------------------

def test_multiscale_sizes_follow_abs_rule():
    # first block and the last 100 iterations: the largest, round(1.4*416/32 + 1)*32
    for i in (0, 9, 1901, 1999):
        assert multiscale_size(i, 416, 416, 1, 32, 2000, seed=0) == (608, 608)
    seen = set()
    for i in range(10, 1900, 10):
        size = multiscale_size(i, 416, 416, 1, 32, 2000, seed=0)
        assert size == multiscale_size(i + 9, 416, 416, 1, 32, 2000, seed=0)
        seen.add(size[0])
        # 1/1.4 * 416 / 32 + 1 = 10.3 -> 320 at least; 1.4 * 416 / 32 + 1 = 19.2 -> 608
        assert size[0] == size[1] and size[0] % 32 == 0 and 320 <= size[0] <= 608
    assert len(seen) >= 5
    assert multiscale_size(50, 416, 416, 1, 32, 2000, 1) != \
        multiscale_size(50, 416, 416, 1, 32, 2000, 2) or \
        multiscale_size(60, 416, 416, 1, 32, 2000, 1) != \
        multiscale_size(60, 416, 416, 1, 32, 2000, 2)
    # random=2: a factor of 2 -> at most round(2 * 416 / 32 + 1) * 32 = 864
    assert multiscale_size(0, 416, 416, 2, 32, 2000, 0) == (864, 864)


def test_resized_network_shares_parameters_gradients_and_momentum(tmp_path):
    net = Network(load_graph(write_cfg(tmp_path)))
    net.init_weights(0)
    small = [dict(lay.params) for lay in net.layers]
    layers32 = net.layers
    x32 = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    before = net.forward(x32)
    net.resize(48, 40)
    assert net.input_shape == (1, 40, 48) and net.layers is not layers32
    for lay, old in zip(net.layers, small):
        for k, v in old.items():
            assert lay.params[k] is v
    x = np.random.default_rng(1).random((8, 1, 40, 48), dtype=np.float32)
    truth = np.zeros((8, net.graph.truths), np.float32)
    truth[:, :5] = [0.5, 0.5, 0.3, 0.3, 1]
    net.train_step(x, truth)
    assert net.outputs[-1].shape[-2:] == (5, 6)
    layers48 = net.layers
    net.resize(32, 32)
    assert net.layers is layers32
    after = net.forward(x32)
    assert not np.allclose(before, after)      # the update at 48 x 40 shows at 32 x 32
    for lay, lay32 in zip(layers48, layers32):
        assert lay.grads is lay32.grads and lay.updates is lay32.updates
    assert any(np.any(u) for lay in layers32 for u in lay.updates.values())


def _ms_cfg(tmp_path, name, max_batches, batch=8):
    text = write_cfg(tmp_path, max_batches, extra="random=1").read_text().replace(
        "flip=1", "flip=1\nmosaic=1\nblur=1\nresize_step=8").replace(
        "batch=8", f"batch={batch}").replace("learning_rate=0.01", "learning_rate=0.001")
    cfg = tmp_path / name
    cfg.write_text(text)
    return cfg


def test_multiscale_training_changes_the_size_every_10_iterations(tmp_path, monkeypatch):
    data = make_data(tmp_path)
    # 130 iterations: the first 10 and the last 90 (from block 40 > 130 - 100) run at
    # the largest size
    cfg = _ms_cfg(tmp_path, "ms.cfg", 130, batch=2)
    shapes = []
    step = Network.train_step

    def record(self, x, truth):
        shapes.append(x.shape[2:])
        return step(self, x, truth)

    monkeypatch.setattr(Network, "train_step", record)
    train_detector(str(data), str(cfg), None, TrainOptions(seed=0, quiet=True))
    want = [multiscale_size(i, 32, 32, 1, 8, 130, 0)[::-1] for i in range(130)]
    assert shapes == want
    # round(1.4 * 32 / 8 + 1) * 8 = 56 first and last; between, round(r * 4 + 1) * 8 for
    # r in 1/1.4..1.4: 40..56, or 32 (the cfg's size) when r < 1
    assert set(want[:10]) == set(want[40:]) == {(56, 56)}    # 40 > 130 - 100
    assert all(len(set(want[k:k + 10])) == 1 for k in (10, 20, 30))
    assert len(set(want[10:40])) >= 2
    assert set(want[10:40]) <= {(32, 32), (40, 40), (48, 48), (56, 56)}


def test_multiscale_resume_equals_an_uninterrupted_run(tmp_path):
    data = make_data(tmp_path)
    opts = TrainOptions(seed=3, quiet=True, backup_every=100, save_every=100)
    whole = train_detector(str(data), str(_ms_cfg(tmp_path, "a.cfg", 24)), None, opts)
    cfg = _ms_cfg(tmp_path, "b.cfg", 24)
    train_detector(str(data), str(cfg), None, TrainOptions(
        seed=3, quiet=True, backup_every=100, save_every=100, max_batches=13))
    (tmp_path / "backup" / "b_final.weights").rename(tmp_path / "b13.weights")
    (tmp_path / "backup" / "b_final.weights.state").rename(tmp_path / "b13.weights.state")
    resumed = train_detector(str(data), str(cfg), str(tmp_path / "b13.weights"), opts)
    a, b = Network(load_graph(cfg)), Network(load_graph(cfg))
    a.load_weights(whole)
    b.load_weights(resumed)
    for la, lb in zip(a.layers, b.layers):
        for k in la.params:
            np.testing.assert_array_equal(la.params[k], lb.params[k])
