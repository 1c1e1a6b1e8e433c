"""Images as Darknet sees them: RGB (or grey) float32 C,H,W in [0, 1], Darknet's bilinear
resize and letterbox. Pillow decodes; the arithmetic is Darknet's, in NumPy."""
from __future__ import annotations

import os

import numpy as np

from .errors import DataError


def load_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Decode an image file to float32 (channels, h, w) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError
    path = os.fspath(path)
    if channels not in (1, 3):
        raise DataError(f"{path}: images can feed a net with 1 or 3 channels, not {channels}")
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            a = np.asarray(im, dtype=np.float32)
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read (PNG, JPEG, BMP, ...)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the image: {e}") from None
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return np.ascontiguousarray(a) / np.float32(255.0)


def resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's resize_image: bilinear, first along x then along y, with the scale
    (in - 1)/(out - 1) so the corner pixels map onto each other. im: (c, H, W)."""
    _, ih, iw = im.shape
    im = im.astype(np.float32, copy=False)
    # horizontal pass -> (c, ih, w)
    if iw == 1 or w == 1:
        part = np.repeat(im[:, :, -1:], w, axis=2) if iw == 1 else im[:, :, :1].copy()
    else:
        sx = np.arange(w, dtype=np.float32) * np.float32((iw - 1) / (w - 1))
        ix = np.minimum(sx.astype(np.int64), iw - 2)
        dx = (sx - ix).astype(np.float32)
        part = (np.float32(1) - dx) * im[:, :, ix] + dx * im[:, :, ix + 1]
        part[:, :, -1] = im[:, :, -1]            # Darknet copies the last column
    # vertical pass -> (c, h, w)
    if ih == 1 or h == 1:
        return np.ascontiguousarray(np.repeat(part[:, :1], h, axis=1))
    sy = np.arange(h, dtype=np.float32) * np.float32((ih - 1) / (h - 1))
    iy = np.minimum(sy.astype(np.int64), ih - 1)
    dy = (sy - iy).astype(np.float32)[None, :, None]
    out = (np.float32(1) - dy) * part[:, iy]
    nxt = np.minimum(iy + 1, ih - 1)
    add = dy * part[:, nxt]
    add[:, -1] = 0                               # the last row takes no second term
    return np.ascontiguousarray(out + add, dtype=np.float32)


def letterbox(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's letterbox_image: fit inside w x h keeping the aspect ratio, centred on a
    0.5 grey canvas."""
    c, ih, iw = im.shape
    if w / iw < h / ih:
        nw, nh = w, (ih * w) // iw
    else:
        nw, nh = (iw * h) // ih, h
    nw, nh = max(nw, 1), max(nh, 1)
    boxed = np.full((c, h, w), 0.5, dtype=np.float32)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    boxed[:, y0:y0 + nh, x0:x0 + nw] = resize(im, nw, nh)
    return boxed
