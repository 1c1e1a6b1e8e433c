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
from .augment import bilinear, distort, rand_scale
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

    @classmethod
    def from_net(cls, opts: dict[str, Any], jitter: float) -> DetAugment:
        return cls(jitter, bool(opts["flip"]), opts["exposure"], opts["saturation"],
                   opts["hue"])


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
        if self.skip_unreadable:
            i, im = first_readable(lambda k: self.image(k, c), i, len(self), self._bad,
                                   self.source)
        else:
            im = self.image(i, c)
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

    def batch(self, idx: np.ndarray, shape: tuple[int, int, int],
              augment: DetAugment | None, rng: np.random.Generator | None, most: int,
              letterboxed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(x (N, C, h, w) float32, truth (N, most*5) float32) for images idx."""
        xs, bs = zip(*(self.sample(int(i), shape, augment, rng, letterboxed) for i in idx))
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
