"""Detection datasets: YOLO-format labels, box truths in Darknet's layout, and box-aware
augmentation.

A detection `.data` file (the syntax of data/classifier.py) names image lists:

    classes = 10
    train   = train.txt          # one image path per line
    valid   = valid.txt
    names   = fashion.names      # one class name per line
    backup  = backup/

Each image has a label file: one line `class cx cy w h` per object, the centre and size
normalised to the image (0..1), the class an integer from 0. It is found by Darknet's
rule (the first "images", "JPEGImages" and "raw" in the path become "labels", the
extension becomes .txt), else beside the image (same folder, .txt). An image without
objects has an empty label file; a missing one is an error naming both places looked at.

`DetectionDataset.batch` gives the network input (N, C, h, w) and the truth (N, max*5):
per image up to `max` boxes `x y w h class`, relative to the network input after the
resize (or letterbox) and augmentation, unused slots 0 (Darknet stops reading at the
first x == 0). Augmentation, all drawn from one numpy Generator:

* jitter (the [yolo]/[region] `jitter`): a random crop whose every side moves by up to
  jitter x the image side, inwards or outwards (outside the image is 0.5 grey), then
  stretched to the network size: translation, scale and aspect change in one (AlexeyAB's
  crop; pjreddie draws a scale of 0.25..2 instead, too wild for short CPU runs);
* horizontal flip with probability 1/2 (boxes mirrored), unless `flip=0` in [net];
* exposure, saturation, hue as Darknet's classifier draws them (data.distort);
* boxes are clipped to the crop, dropped when narrower or lower than one network pixel,
  and shuffled (Darknet's randomize_boxes) before the first `max` are kept.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from ..fileio import read_text
from .augment import bilinear, distort, gaussian_blur, rand_scale, resize_linear
from .classifier import DataConfig, first_readable
from .images import letterbox, load_image, resize

# ---------------------------------------------------------------------------------------
# label files


def label_candidates(image: str) -> list[str]:
    """Where the label file of `image` may be: Darknet's rule, then beside the image."""
    darknet = image
    for old in ("images", "JPEGImages", "raw"):
        darknet = darknet.replace(old, "labels", 1)
    darknet = os.path.splitext(darknet)[0] + ".txt"
    beside = os.path.splitext(image)[0] + ".txt"
    return [darknet] if darknet == beside else [darknet, beside]


def find_label_file(image: str) -> str | None:
    for path in label_candidates(image):
        if os.path.isfile(path):
            return path
    return None


def read_label_file(path: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A YOLO label file -> (boxes (M, 4) float64 cx cy w h, class ids (M,) int64).
    Every malformed line is a DataError naming file:line."""
    text = read_text(path, "label")
    boxes, ids = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        try:
            if len(parts) != 5:
                raise ValueError
            c, box = float(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            raise DataError(f"{where}: expected 'class x y w h' (an integer and four "
                            f"numbers), found {line.strip()!r}") from None
        # 'nan' and 'inf' parse as floats: refused here, before any comparison with them
        bad = next((p for p, v in zip(("class", "x", "y", "w", "h"), [c, *box])
                    if not math.isfinite(v)), None)
        if bad is not None:
            raise DataError(f"{where}: {bad} is not a finite number in {line.strip()!r}; "
                            "expected 'class x y w h' (an integer and four numbers)")
        if c != int(c) or not 0 <= c < classes:
            raise DataError(f"{where}: class {parts[0]} is not an integer in 0..{classes - 1}"
                            f" (classes={classes})")
        x, y, w, h = box
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise DataError(f"{where}: the centre ({parts[1]}, {parts[2]}) is outside 0..1: "
                            "YOLO labels are normalised to the image size (pixels?)")
        if not (0 < w <= 1 and 0 < h <= 1):
            raise DataError(f"{where}: the size {parts[3]} x {parts[4]} must be in (0, 1]: "
                            "YOLO labels are normalised to the image size")
        boxes.append(box)
        ids.append(int(c))
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(ids, np.int64)


def read_image_list(path: str, where: str = "") -> tuple[list[str], list[int]]:
    """(resolved image paths, list-file line of each): relative paths from the list's
    folder, else from the current folder (data/classifier.py's rule)."""
    lines = read_text(path, "list", where).splitlines()
    folder = os.path.dirname(os.path.abspath(path))
    images, numbers = [], []
    for lineno, raw in enumerate(lines, start=1):
        p = raw.strip()
        if not p:
            continue
        mine = os.path.normpath(os.path.join(folder, p))
        images.append(p if not os.path.isabs(p) and not os.path.exists(mine)
                      and os.path.exists(p) else mine)
        numbers.append(lineno)
    if not images:
        raise DataError(f"{path}: the list file has no image paths")
    return images, numbers


# ---------------------------------------------------------------------------------------
# augmentation

@dataclass(frozen=True)
class DetAugment:
    jitter: float = 0.2
    flip: bool = True
    exposure: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    # dialect=alexeyab: AB's load_data_detection (see "AlexeyAB's augmentation" below);
    # the keys after it are read only under that dialect
    dialect: str = "pjreddie"
    letter_box: bool = False
    mosaic: bool = False
    mosaic_bound: bool = False
    blur: int = 0

    @classmethod
    def from_net(cls, opts: dict[str, Any], jitter: float,
                 dialect: str = "pjreddie") -> DetAugment:
        if dialect != "alexeyab":
            return cls(jitter, bool(opts["flip"]), opts["exposure"], opts["saturation"],
                       opts["hue"])
        return cls(jitter, bool(opts["flip"]), opts["exposure"], opts["saturation"],
                   opts["hue"], dialect, bool(opts["letter_box"]), bool(opts["mosaic"]),
                   bool(opts["mosaic_bound"]), opts["blur"])


def crop_resize(im: np.ndarray, window: tuple[float, float, float, float], w: int,
                h: int) -> np.ndarray:
    """The window (left, top, right, bottom) of im (C, H, W), in pixels, possibly beyond
    the image (0.5 grey there), stretched bilinearly to (C, h, w)."""
    left, top, right, bottom = window
    sx = left + (np.arange(w) + 0.5) * ((right - left) / w) - 0.5
    sy = top + (np.arange(h) + 0.5) * ((bottom - top) / h) - 0.5
    gx, gy = np.meshgrid(sx, sy)
    return bilinear(im[None] - np.float32(0.5), gx[None], gy[None])[0] + np.float32(0.5)


def transform_boxes(boxes: np.ndarray, window, img_w: int, img_h: int, flip: bool,
                    min_w: float, min_h: float) -> np.ndarray:
    """boxes (M, 5) `cx cy w h class` normalised to the image -> the same normalised to
    the window (clipped to it, mirrored if flip), without the ones now too small."""
    left, top, right, bottom = window
    x0 = ((boxes[:, 0] - boxes[:, 2] / 2) * img_w - left) / (right - left)
    x1 = ((boxes[:, 0] + boxes[:, 2] / 2) * img_w - left) / (right - left)
    y0 = ((boxes[:, 1] - boxes[:, 3] / 2) * img_h - top) / (bottom - top)
    y1 = ((boxes[:, 1] + boxes[:, 3] / 2) * img_h - top) / (bottom - top)
    if flip:
        x0, x1 = 1 - x1, 1 - x0
    x0, x1, y0, y1 = (np.clip(v, 0, 1) for v in (x0, x1, y0, y1))
    out = np.column_stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, boxes[:, 4]])
    return out[(out[:, 2] >= min_w) & (out[:, 3] >= min_h)]


def truth_rows(boxes_list: list[np.ndarray], most: int) -> np.ndarray:
    """Per image (M, 5) `x y w h class` -> Darknet's (N, most*5) truth, zero padded."""
    t = np.zeros((len(boxes_list), most * 5), np.float32)
    for b, boxes in enumerate(boxes_list):
        k = min(len(boxes), most)
        t[b, :5 * k] = boxes[:k].ravel()
    return t


# ---------------------------------------------------------------------------------------
# datasets

@dataclass
class DetectionDataset:
    """Image files with their YOLO labels; `boxes[i]` (M, 5) is `cx cy w h class`."""
    paths: list[str]
    boxes: list[np.ndarray]
    source: str
    lines: list[int]
    names: list[str] | None = None
    cache: bool = True
    skip_unreadable: bool = False   # training: an unreadable image gives way to the next

    def __post_init__(self):
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int, channels: int) -> np.ndarray:
        """Image i as float32 (channels, H, W) in [0, 1]; decoded once, kept as uint8."""
        key = (i, channels)
        if key in self._cache:
            return self._cache[key].astype(np.float32) / np.float32(255)
        try:
            im = load_image(self.paths[i], channels)
        except DataError as e:
            raise DataError(f"{self.source}:{self.lines[i]}: {e}") from None
        if self.cache:
            self._cache[key] = np.round(im * 255).astype(np.uint8)
        return im

    def sample(self, i: int, shape: tuple[int, int, int], augment: DetAugment | None,
               rng: np.random.Generator | None, letterboxed: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """Image i as network input (C, h, w) and its boxes (M, 5) `x y w h class`
        relative to that input."""
        c, h, w = shape
        i, im = self._load(i, c)
        _, ih, iw = im.shape
        boxes = self.boxes[i]
        min_w, min_h = 1.0 / w, 1.0 / h
        if augment is None:
            if letterboxed:
                window = _letterbox_window(iw, ih, w, h)
                x = letterbox(im, w, h)
            else:
                window = (0.0, 0.0, float(iw), float(ih))
                x = im if (ih, iw) == (h, w) else resize(im, w, h)
            return x, transform_boxes(boxes, window, iw, ih, False, min_w, min_h)
        j = augment.jitter
        dl, dr = rng.uniform(-j, j, 2) * iw
        dt, db = rng.uniform(-j, j, 2) * ih
        window = (dl, dt, iw - dr, ih - db)
        flip = augment.flip and rng.random() < 0.5
        x = crop_resize(im, window, w, h)
        if flip:
            x = np.ascontiguousarray(x[:, :, ::-1])
        x = distort(x[None], rng.uniform(-augment.hue, augment.hue, 1),
                    rand_scale(rng, augment.saturation, 1),
                    rand_scale(rng, augment.exposure, 1))[0]
        out = transform_boxes(boxes, window, iw, ih, flip, min_w, min_h)
        return x, out[rng.permutation(len(out))]

    def _load(self, i: int, c: int) -> tuple[int, np.ndarray]:
        """(the index actually used, its image): in training an unreadable image gives
        way to the next readable one."""
        if self.skip_unreadable:
            return first_readable(lambda k: self.image(k, c), i, len(self), self._bad,
                                  self.source)
        return i, self.image(i, c)

    def sample_ab(self, i: int, shape: tuple[int, int, int], augment: DetAugment,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """AlexeyAB's training sample of image i (see ab_tile): with mosaic=1, half of
        the time a mosaic of image i and three images drawn at random."""
        c, h, w = shape
        if augment.mosaic and rng.random() < 0.5:
            cut_x = int(rng.integers(int(w * 0.2), int(w * 0.8) + 1))
            cut_y = int(rng.integers(int(h * 0.2), int(h * 0.8) + 1))
            pick = [i, *(int(k) for k in rng.integers(0, len(self), 3))]
            tiles = []
            for q, k in enumerate(pick):
                k, im = self._load(k, c)
                tiles.append(ab_tile(im, self.boxes[k], w, h, augment, rng, corner=q))
            return mosaic(tiles, w, h, cut_x, cut_y, augment.mosaic_bound)
        i, im = self._load(i, c)
        x, boxes, _ = ab_tile(im, self.boxes[i], w, h, augment, rng)
        return x, boxes

    def batch(self, idx: np.ndarray, shape: tuple[int, int, int],
              augment: DetAugment | None, rng: np.random.Generator | None, most: int,
              letterboxed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(x (N, C, h, w) float32, truth (N, most*5) float32) for images idx."""
        if augment is not None and augment.dialect == "alexeyab":
            xs, bs = zip(*(self.sample_ab(int(i), shape, augment, rng) for i in idx))
        else:
            xs, bs = zip(*(self.sample(int(i), shape, augment, rng, letterboxed)
                           for i in idx))
        return np.stack(xs).astype(np.float32, copy=False), truth_rows(list(bs), most)


def _letterbox_window(iw: int, ih: int, w: int, h: int) -> tuple[float, float, float, float]:
    """The image-pixel window that images.letterbox maps onto the w x h canvas."""
    if w / iw < h / ih:
        nw, nh = w, (ih * w) // iw
    else:
        nw, nh = (iw * h) // ih, h
    nw, nh = max(nw, 1), max(nh, 1)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    sx, sy = iw / nw, ih / nh
    return (-x0 * sx, -y0 * sy, (w - x0) * sx, (h - y0) * sy)


# ---------------------------------------------------------------------------------------
# AlexeyAB's augmentation (src/data.c: load_data_detection, the OpenCV build, with
# src/image_opencv.cpp: image_data_augmentation and src/data.c: blend_truth_mosaic).
# Per image ("tile"): a crop whose sides move by whole pixels, up to jitter x the image
# side (outside the image: the image's mean colour), stretched to the network size (with
# letter_box=1 the crop is first widened to the network's aspect ratio); flip; hue,
# saturation, exposure (darkcfg.data.augment.distort, in float: AB's 8-bit OpenCV HSV
# rounds, and saturates the hue instead of wrapping it); blur. Boxes follow the crop and
# flip, are clipped to it and dropped when narrower or lower than one network pixel, the
# rules of pjreddie's path above (correct_boxes, fill_truth_detection).

@dataclass(frozen=True)
class ABTile:
    """One image's draw: crop offsets in whole source pixels (positive: inwards), flip,
    colour, and blur (0 none, 1 the background only, k > 1 the whole image, k x k)."""
    pleft: int
    pright: int
    ptop: int
    pbot: int
    flip: bool
    ow: int
    oh: int

    @property
    def window(self) -> tuple[float, float, float, float]:
        """The source-pixel window stretched onto the network input."""
        return (float(self.pleft), float(self.ptop), float(self.ow - self.pright),
                float(self.oh - self.pbot))


def ab_crop(ow: int, oh: int, w: int, h: int, augment: DetAugment,
            rng: np.random.Generator, corner: int | None = None) -> ABTile:
    """AB's crop offsets of an ow x oh image for a w x h network (and the flip, drawn
    between them as AB does). corner: the mosaic tile (0..3), whose image is moved to the
    mosaic's centre half of the time ("so that most of it was visible")."""
    dw, dh = int(ow * augment.jitter), int(oh * augment.jitter)
    r = rng.random(4)
    flip = bool(augment.flip and rng.random() < 0.5)
    # rand_precalc_random's float is stored in an int: truncated toward zero
    pleft, pright = (int(v * 2 * dw - dw) for v in r[:2])
    ptop, pbot = (int(v * 2 * dh - dh) for v in r[2:])
    if augment.letter_box:
        net_ar = w / h
        if (ow / oh) / net_ar > 1:          # the image is wider: add rows above and below
            delta = (ow / net_ar - oh) / 2
            ptop, pbot = int(ptop - delta), int(pbot - delta)
        else:
            delta = (oh * net_ar - ow) / 2
            pleft, pright = int(pleft - delta), int(pright - delta)
    if corner is not None and rng.random() < 0.5:
        # the side towards the mosaic centre gets both offsets (flip mirrors which)
        move_x = "left" if (corner in (0, 2)) == flip else "right"
        if move_x == "left":
            pleft, pright = pleft + pright, 0
        else:
            pright, pleft = pleft + pright, 0
        if corner in (0, 1):
            pbot, ptop = pbot + ptop, 0
        else:
            ptop, pbot = ptop + pbot, 0
    if ow - pleft - pright <= 0 or oh - ptop - pbot <= 0 or ow - pleft <= 0 \
            or oh - ptop <= 0:
        pleft = pright = ptop = pbot = 0    # AB: "invalid resize", the whole image
    return ABTile(pleft, pright, ptop, pbot, flip, ow, oh)


def ab_tile(im: np.ndarray, boxes: np.ndarray, w: int, h: int, augment: DetAugment,
            rng: np.random.Generator, corner: int | None = None
            ) -> tuple[np.ndarray, np.ndarray, ABTile]:
    """Image im (C, oh, ow) with its boxes (M, 5) -> (network input (C, h, w), boxes
    (M', 5) relative to it, the crop drawn)."""
    _, oh, ow = im.shape
    t = ab_crop(ow, oh, w, h, augment, rng, corner)
    dhue = rng.uniform(-augment.hue, augment.hue, 1)
    dsat = rand_scale(rng, augment.saturation, 1)
    dexp = rand_scale(rng, augment.exposure, 1)
    blur = 0
    if augment.blur:
        kind = int(rng.integers(0, 3))      # 0 none, 1 background, 2 the cfg's blur
        blur = (0, 1, augment.blur)[kind]
    out = transform_boxes(boxes, t.window, ow, oh, t.flip, 1.0 / w, 1.0 / h)
    out = out[rng.permutation(len(out))]
    x = ab_crop_image(im, t, w, h)
    if t.flip:
        x = np.ascontiguousarray(x[:, :, ::-1])
    x = distort(x[None], dhue, dsat, dexp)[0]
    if blur > 1 and len(out):
        # AB: no blur wider than an eighth of the smallest object (1 means background)
        smallest = int(min((out[:, 2] * w).min(), (out[:, 3] * h).min()))
        blur = min(blur, smallest // 8)
    return blur_image(x, blur, out), out, t


def ab_crop_image(im: np.ndarray, t: ABTile, w: int, h: int) -> np.ndarray:
    """The crop window of im (mean colour outside the image) stretched to (C, h, w)."""
    c, oh, ow = im.shape
    sw, sh = ow - t.pleft - t.pright, oh - t.ptop - t.pbot
    if (t.pleft, t.ptop, sw, sh) == (0, 0, ow, oh):
        return resize_linear(im, w, h)
    canvas = np.empty((c, sh, sw), np.float32)
    canvas[...] = im.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)[:, None, None]
    x0, y0 = max(t.pleft, 0), max(t.ptop, 0)
    x1, y1 = min(t.pleft + sw, ow), min(t.ptop + sh, oh)
    if x1 > x0 and y1 > y0:
        canvas[:, y0 - t.ptop:y1 - t.ptop, x0 - t.pleft:x1 - t.pleft] = im[:, y0:y1, x0:x1]
    return resize_linear(canvas, w, h)


def blur_image(x: np.ndarray, blur: int, boxes: np.ndarray) -> np.ndarray:
    """AB's blur of a network input (C, h, w): 1 blurs the background only (a 17 x 17
    Gaussian, then every box's pixels copied back sharp), k > 1 the whole image with a
    (k // 2 * 2 + 1)-wide Gaussian. Boxes are not changed."""
    if blur <= 0:
        return x
    _, h, w = x.shape
    if blur > 1:
        return gaussian_blur(x, blur // 2 * 2 + 1)
    out = gaussian_blur(x, 17)
    for bx, by, bw, bh in boxes[:, :4]:
        left, top = int((bx - bw / 2) * w), int((by - bh / 2) * h)
        right, bottom = left + int(bw * w), top + int(bh * h)
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, w), min(bottom, h)
        if right > left and bottom > top:
            out[:, top:bottom, left:right] = x[:, top:bottom, left:right]
    return out


def mosaic_shifts(t: ABTile, w: int, h: int, cut_x: int, cut_y: int
                  ) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) shift of a tile in network pixels: how much of the grey
    border its crop added on each side, so that the mosaic shows image, not border."""
    pleft, pright = (t.pright, t.pleft) if t.flip else (t.pleft, t.pright)

    def shift(p: int, size: int, o: int, room: int) -> int:
        return min(room, max(0, int(-p * size / o)))    # C: int division toward zero

    return (shift(pleft, w, t.ow, cut_x), shift(pright, w, t.ow, w - cut_x),
            shift(t.ptop, h, t.oh, cut_y), shift(t.pbot, h, t.oh, h - cut_y))


def mosaic_sources(q: int, w: int, h: int, cut_x: int, cut_y: int,
                   shifts: tuple[int, int, int, int]) -> tuple[int, int]:
    """The (x, y) of tile q's pixels that land on the mosaic's quadrant q corner: tile 0
    fills the top-left quadrant with its bottom-right part, and so on."""
    left, right, top, bot = shifts
    sx = w - cut_x - right if q in (0, 2) else left
    sy = h - cut_y - bot if q in (0, 1) else top
    return sx, sy


def mosaic_boxes(boxes: np.ndarray, q: int, w: int, h: int, cut_x: int, cut_y: int,
                 shifts: tuple[int, int, int, int], bound: bool) -> np.ndarray:
    """blend_truth_mosaic for one tile: its boxes (M, 5) relative to the tile -> relative
    to the mosaic. The box moves with the tile; its corners are truncated to whole pixels;
    it is then clipped to the quadrant (mosaic_bound=1) or, AB's default, only to the
    mosaic (a box may then reach into a neighbouring quadrant), and kept only if it is
    inside, its centre strictly inside and its size above one pixel and below the image."""
    sx, sy = mosaic_sources(q, w, h, cut_x, cut_y, shifts)
    ox, oy = (0 if q in (0, 2) else cut_x), (0 if q in (0, 1) else cut_y)
    kept = []
    for xb, yb, wb, hb, cls in boxes:
        xb += (ox - sx) / w
        yb += (oy - sy) / h
        left, right = int((xb - wb / 2) * w), int((xb + wb / 2) * w)
        top, bot = int((yb - hb / 2) * h), int((yb + hb / 2) * h)
        if bound:
            left, right = max(left, ox), min(right, cut_x if q in (0, 2) else w)
            top, bot = max(top, oy), min(bot, cut_y if q in (0, 1) else h)
            xb, wb = (right + left) / 2 / w, (right - left) / w
            yb, hb = (bot + top) / 2 / h, (bot - top) / h
        else:
            if left < 0:
                xb, wb = xb - left / w / 2, wb + left / w
            if right > w:
                d = (right - w) / w
                xb, wb = xb - d / 2, wb - d
            if top < 0:
                yb, hb = yb - top / h / 2, hb + top / h
            if bot > h:
                d = (bot - h) / h
                yb, hb = yb - d / 2, hb - d
            left, right = int((xb - wb / 2) * w), int((xb + wb / 2) * w)
            top, bot = int((yb - hb / 2) * h), int((yb + hb / 2) * h)
        if (left >= 0 and right <= w and top >= 0 and bot <= h and 0 < wb < 1
                and 0 < hb < 1 and 0 < xb < 1 and 0 < yb < 1 and wb > 1 / w
                and hb > 1 / h):
            kept.append((xb, yb, wb, hb, cls))
    return np.array(kept, np.float64).reshape(-1, 5)


def mosaic(tiles: list[tuple[np.ndarray, np.ndarray, ABTile]], w: int, h: int,
           cut_x: int, cut_y: int, bound: bool) -> tuple[np.ndarray, np.ndarray]:
    """Four (network input, boxes, crop) tiles -> the mosaic around (cut_x, cut_y) and
    its boxes (tile 0's first)."""
    c = tiles[0][0].shape[0]
    out = np.empty((c, h, w), np.float32)
    boxes = []
    for q, (x, b, t) in enumerate(tiles):
        shifts = mosaic_shifts(t, w, h, cut_x, cut_y)
        sx, sy = mosaic_sources(q, w, h, cut_x, cut_y, shifts)
        ox, oy = (0 if q in (0, 2) else cut_x), (0 if q in (0, 1) else cut_y)
        qw = cut_x if q in (0, 2) else w - cut_x
        qh = cut_y if q in (0, 1) else h - cut_y
        out[:, oy:oy + qh, ox:ox + qw] = x[:, sy:sy + qh, sx:sx + qw]
        boxes.append(mosaic_boxes(b, q, w, h, cut_x, cut_y, shifts, bound))
    return out, np.concatenate(boxes)


def read_detection_list(list_file: str, classes: int, where: str = "",
                        names: list[str] | None = None) -> DetectionDataset:
    """Every image of a list file with its labels (all label files read now, so that a
    bad line fails before training starts)."""
    paths, lines = read_image_list(list_file, where)
    boxes = []
    for path, lineno in zip(paths, lines):
        label = find_label_file(path)
        if label is None:
            raise DataError(f"{list_file}:{lineno}: no label file for {path} (looked for "
                            f"{' and '.join(label_candidates(path))}); an image without "
                            "objects needs an empty one")
        xywh, ids = read_label_file(label, classes)
        boxes.append(np.column_stack([xywh, ids.astype(np.float64)]))
    return DetectionDataset(paths, boxes, list_file, lines, names)


def open_detection_dataset(cfg: DataConfig, split: str = "train") -> DetectionDataset | None:
    """The detection dataset a `.data` file names for `split`; None if absent."""
    value = cfg.path(split)
    if value is None:
        return None
    return read_detection_list(value, cfg.classes, cfg.where(split), cfg.names)
