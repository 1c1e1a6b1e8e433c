"""Compose a small object-detection dataset from Fashion-MNIST items.

    python tools/make_detection_dataset.py OUT [--seed 0] [--count 4000] [--valid 500]
        [--size 96] [--classes 0,1,...] [--rgb] [--anchors 6]

Each image is a SIZE x SIZE canvas (grey, or RGB with --rgb) with a noisy background and
unlabelled clutter (low-contrast fragments of other items), and 1 to 4 Fashion-MNIST
items, each scaled to 18..52 pixels (at SIZE 96; proportionally otherwise) and placed at
random. Items may overlap a little, never mostly: a placement is redrawn when its box
overlaps another with IoU > 0.3 or covers more than half of either. Training images use
items of Fashion-MNIST's train split, validation images items of its test split, so the
held-out objects are new ones. The box of an item is the tight box of its ink.

Written into OUT (Darknet's layout, so `darknet detector train` reads it too):

    images/train/000000.png ...   labels/train/000000.txt ...   (YOLO: class cx cy w h)
    images/valid/...              labels/valid/...
    train.txt  valid.txt          image lists, paths relative to OUT
    fashion.names                 class names, one per line
    fashion_det.data              classes, train, valid, names, backup (= OUT/backup/)
    anchors.txt                   k-means anchors of the training boxes, in pixels

The same --seed gives the same files, byte for byte.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from darkcfg.data.arrays import FASHION_MNIST_NAMES, fashion_mnist
from darkcfg.errors import DarkcfgError

TINTS = np.array([[1.0, 0.35, 0.3], [0.3, 0.85, 0.35], [0.35, 0.5, 1.0], [1.0, 0.85, 0.3],
                  [0.9, 0.4, 0.95], [0.3, 0.9, 0.95], [1.0, 1.0, 1.0]], np.float32)


def scaled_item(item: np.ndarray, size: int) -> np.ndarray:
    """A 28 x 28 uint8 item resized to size x size, float32 in [0, 1]."""
    im = Image.fromarray(item).resize((size, size), Image.BILINEAR)
    return np.asarray(im, np.float32) / 255


def ink_box(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of the pixels above 15% of the brightest."""
    mask = a > 0.15 * a.max() if a.max() > 0 else a > 1
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_iou(a, b) -> tuple[float, float, float]:
    """(IoU, intersection / area a, intersection / area b) of corner boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0, 0.0, 0.0
    inter = w * h
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter), inter / area_a, inter / area_b


def compose(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray,
            pool: np.ndarray, size: int, rgb: bool):
    """One canvas (C, size, size) float32 and its boxes [(class, x0, y0, x1, y1)]."""
    c = 3 if rgb else 1
    level = rng.uniform(0.0, 0.25)
    ramp = np.linspace(-1, 1, size)[None, :] * rng.uniform(-0.08, 0.08) + \
        np.linspace(-1, 1, size)[:, None] * rng.uniform(-0.08, 0.08)
    canvas = np.empty((c, size, size), np.float32)
    tint_bg = TINTS[rng.integers(len(TINTS))] if rgb else np.ones(1, np.float32)
    for k in range(c):
        canvas[k] = level * tint_bg[k] + ramp
    # clutter: faint fragments of other items, not labelled
    for _ in range(rng.integers(0, 4)):
        frag = scaled_item(images[rng.choice(pool)], int(rng.integers(20, 40)))
        fs = int(rng.integers(8, 15))
        fy, fx = rng.integers(0, frag.shape[0] - fs, 2)
        piece = frag[fy:fy + fs, fx:fx + fs] * rng.uniform(0.25, 0.5)
        y, x = rng.integers(0, size - fs, 2)
        for k in range(c):
            region = canvas[k, y:y + fs, x:x + fs]
            np.maximum(region, piece, out=region)
    scale = size / 96
    boxes: list[tuple[int, int, int, int, int]] = []
    for _ in range(rng.integers(1, 5)):
        for _attempt in range(30):
            i = int(rng.choice(pool))
            s = round(float(rng.uniform(18, 52)) * scale)
            item = scaled_item(images[i], s)
            ink = ink_box(item)
            if ink is None:
                continue
            y, x = (int(v) for v in rng.integers(0, size - s + 1, 2))
            box = (x + ink[0], y + ink[1], x + ink[2], y + ink[3])
            if all(max(box_iou(box, other[1:])) <= 0.5 and box_iou(box, other[1:])[0] <= 0.3
                   for other in boxes):
                break
        else:
            continue
        alpha = np.clip(item / 0.3, 0, 1)
        tint = TINTS[rng.integers(len(TINTS))] if rgb else np.ones(1, np.float32)
        contrast = rng.uniform(0.6, 1.0)
        for k in range(c):
            region = canvas[k, y:y + s, x:x + s]
            region[...] = region * (1 - alpha) + item * contrast * tint[k] * alpha
        boxes.append((int(labels[i]), *box))
    canvas += rng.normal(0, 0.03, canvas.shape).astype(np.float32)
    return np.clip(canvas, 0, 1), boxes


def kmeans_anchors(wh: np.ndarray, k: int, rng: np.random.Generator,
                   rounds: int = 100) -> np.ndarray:
    """k anchors (w, h) by k-means with 1 - IoU (boxes centred together) as distance,
    sorted by area."""
    centres = wh[rng.choice(len(wh), k, replace=False)].astype(np.float64)
    for _ in range(rounds):
        inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * \
            np.minimum(wh[:, None, 1], centres[None, :, 1])
        iou = inter / (wh[:, None].prod(2) + centres[None].prod(2) - inter)
        nearest = iou.argmax(1)
        new = np.array([np.median(wh[nearest == j], 0) if np.any(nearest == j)
                        else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres.prod(1))]


def write_split(out: Path, split: str, count: int, rng, images, labels, pool, classes,
                size: int, rgb: bool, started: float) -> list[np.ndarray]:
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    entries, sizes = [], []
    remap = {c: k for k, c in enumerate(classes)}
    for n in range(count):
        canvas, boxes = compose(rng, images, labels, pool, size, rgb)
        name = f"{n:06d}"
        pixels = np.round(canvas * 255).astype(np.uint8)
        im = Image.fromarray(pixels[0]) if not rgb else Image.fromarray(pixels.transpose(1, 2, 0))
        im.save(out / "images" / split / f"{name}.png", optimize=False)
        lines = []
        for cls, x0, y0, x1, y1 in boxes:
            lines.append(f"{remap[cls]} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                         f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}")
            sizes.append(np.array([x1 - x0, y1 - y0], np.float64))
        (out / "labels" / split / f"{name}.txt").write_text("".join(s + "\n" for s in lines))
        entries.append(f"images/{split}/{name}.png")
        if (n + 1) % 250 == 0 or n + 1 == count:
            print(f"  {split}: {n + 1}/{count} images ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    (out / f"{split}.txt").write_text("".join(e + "\n" for e in entries))
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=4000, help="training images (4000)")
    p.add_argument("--valid", type=int, default=500, help="validation images (500)")
    p.add_argument("--size", type=int, default=96, help="canvas side in pixels (96)")
    p.add_argument("--classes", default="all",
                   help="Fashion-MNIST class ids to use, e.g. 0,1,5 (default: all 10)")
    p.add_argument("--rgb", action="store_true", help="tinted RGB images instead of grey")
    p.add_argument("--anchors", type=int, default=6, help="k-means anchors to fit (6)")
    args = p.parse_args(argv)
    if args.size < 48:
        p.error("--size must be at least 48")
    classes = list(range(10)) if args.classes == "all" else \
        sorted({int(c) for c in args.classes.split(",")})
    if not classes or min(classes) < 0 or max(classes) > 9:
        p.error("--classes takes Fashion-MNIST class ids 0..9")
    try:
        train, test = fashion_mnist("train"), fashion_mnist("test")
    except DarkcfgError as e:
        print(f"make_detection_dataset: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    print(f"composing {args.count} + {args.valid} images of {args.size}x{args.size} into "
          f"{out}/", file=sys.stderr)
    sizes = None
    for k, (split, source, count) in enumerate((("train", train, args.count),
                                                 ("valid", test, args.valid))):
        images, labels = source.images[:, 0], source.labels
        pool = np.flatnonzero(np.isin(labels, classes))
        got = write_split(out, split, count, np.random.default_rng([args.seed, k]),
                          images, labels, pool, classes, args.size, args.rgb, started)
        sizes = got if sizes is None else sizes
    names = [FASHION_MNIST_NAMES[c] for c in classes]
    (out / "fashion.names").write_text("".join(n + "\n" for n in names))
    (out / "fashion_det.data").write_text(
        f"# Fashion-MNIST items composed onto {args.size}x{args.size} canvases by "
        f"tools/make_detection_dataset.py --seed {args.seed}\n"
        f"classes = {len(classes)}\ntrain = train.txt\nvalid = valid.txt\n"
        "names = fashion.names\nbackup = backup/\n")
    (out / "backup").mkdir(exist_ok=True)
    anchors = kmeans_anchors(np.array(sizes), args.anchors, rng)
    text = ",  ".join(f"{w:.0f},{h:.0f}" for w, h in anchors)
    (out / "anchors.txt").write_text(text + "\n")
    print(f"done in {time.monotonic() - started:.0f} s: {out / 'fashion_det.data'}; anchors "
          f"for a {args.size}x{args.size} net: {text}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
