"""Detections drawn on the image with Pillow: one rectangle per box, labelled with every
class found on it, one colour per class."""
from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..fileio import atomic_write

if TYPE_CHECKING:
    from PIL import Image

    from .detect import Detection


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A bright colour per class; golden-ratio hue steps keep neighbours apart."""
    hue = (class_id * 0.6180339887498949) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def to_pil(image: np.ndarray) -> Image.Image:
    """(C, H, W) float in [0, 1] (C = 1 or 3) -> an RGB Pillow image."""
    from PIL import Image
    a = np.clip(np.rint(np.asarray(image, np.float64) * 255), 0, 255).astype(np.uint8)
    a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a[:3]
    return Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)), "RGB")


def draw_detections(image: np.ndarray, found: Sequence[Detection],
                    names: Sequence[str] | None = None) -> Image.Image:
    """The image (C, H, W) in [0, 1] with a rectangle per box (Darknet's pixel box) and a
    label "name 87%, other 61%" on it, coloured by the most probable class."""
    from PIL import ImageDraw, ImageFont
    im = to_pil(image)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    width = max(1, round(im.height * 0.006))            # Darknet's line width
    boxes: dict[int, list[Detection]] = {}
    for det in found:
        boxes.setdefault(det.entry, []).append(det)
    for dets in boxes.values():
        dets = sorted(dets, key=lambda d: -d.prob)
        colour = class_colour(dets[0].class_id)
        left, top, right, bottom = dets[0].box
        draw.rectangle((left, top, max(left, right), max(top, bottom)), outline=colour,
                       width=width)
        text = ", ".join(f"{d.label(names)} {100 * d.prob:.0f}%" for d in dets)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        tw, th = x1 - x0 + 4, y1 - y0 + 4
        ty = top - th if top - th >= 0 else top           # above the box when it fits
        draw.rectangle((left, ty, left + tw, ty + th), fill=colour)
        ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        draw.text((left + 2 - x0, ty + 2 - y0), text, fill=ink, font=font)
    return im


def save_detections(path: str | os.PathLike, image: np.ndarray, found: Sequence[Detection],
                    names: Sequence[str] | None = None) -> None:
    with atomic_write(path, "drawing") as f:
        draw_detections(image, found, names).save(f, format="PNG")
