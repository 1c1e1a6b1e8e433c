"""Images for training: channel conversion, Darknet's classifier sizing and augmentation
(random crop/scale, aspect, rotation, flip, exposure/saturation/hue; pjreddie's
src/data.c: load_image_augment_paths, src/image.c: random_augment_image and
random_distort_image), all driven by a numpy Generator so runs are reproducible."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from .images import resize

# ---------------------------------------------------------------------------------------
# images: channels, sizing, Darknet's training augmentation

def to_channels(x: np.ndarray, c: int, source: str) -> np.ndarray:
    """Grey -> RGB by copying, RGB -> grey with Pillow's 'L' weights, as for image files."""
    have = x.shape[1]
    if have == c:
        return x
    if have == 1 and c == 3:
        return np.repeat(x, 3, axis=1)
    if have == 3 and c == 1:
        w = np.array([0.299, 0.587, 0.114], np.float32)[None, :, None, None]
        return (x * w).sum(axis=1, keepdims=True, dtype=np.float32)
    raise DataError(f"{source}: images have {have} channels; the network takes {c}")


@dataclass(frozen=True)
class Augment:
    """Training augmentation of Darknet's classifier (see the module docstring); its [net]
    keys are read in src/parser.c: parse_net_options.

    low/high: the crop's shorter side in pixels before it is fitted to the network
    (P: min_crop..max_crop, default width..2*width, or min_ratio/max_ratio x width).
    """
    low: int
    high: int
    angle: float = 0.0
    aspect: float = 1.0
    exposure: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    flip: bool = True
    center: bool = False

    @classmethod
    def from_net(cls, opts: dict[str, Any], shape: tuple[int, int, int]) -> Augment:
        w = shape[2]
        min_crop, max_crop = opts["min_crop"] or w, opts["max_crop"] or 2 * w
        # Darknet keeps the crops as ratios of the width (min_ratio = min_crop / w); the
        # small epsilon keeps 1.1428...*28 from truncating to 31.
        low = int(opts["min_ratio"] * w + 1e-6) if opts["min_ratio"] else min_crop
        high = int(opts["max_ratio"] * w + 1e-6) if opts["max_ratio"] else max_crop
        return cls(max(1, min(low, high)), max(1, low, high), opts["angle"], opts["aspect"],
                   opts["exposure"], opts["saturation"], opts["hue"], bool(opts["flip"]),
                   bool(opts["center"]))


def rand_scale(rng: np.random.Generator, s: float, n: int) -> np.ndarray:
    """Darknet's rand_scale: u ~ U(1, s), then u or 1/u with equal chance."""
    u = rng.uniform(min(1.0, s), max(1.0, s), n)
    return np.where(rng.random(n) < 0.5, u, 1.0 / u)


def transform(x: np.ndarray, shape: tuple[int, int, int], augment: Augment | None,
              rng: np.random.Generator) -> np.ndarray:
    """(N, C, H, W) images of one size -> (N, C, h, w) network input."""
    _, oh, ow = shape
    if augment is None:
        if x.shape[2:] == (oh, ow):
            return np.ascontiguousarray(x, dtype=np.float32)
        return np.stack([center_resize(im, ow, oh) for im in x])
    n, _, h, w = x.shape
    if augment.center:
        m = min(h, w)
        y0, x0 = (h - m) // 2, (w - m) // 2
        out = np.stack([resize(im[:, y0:y0 + m, x0:x0 + m], ow, oh) for im in x])
    else:
        a = rand_scale(rng, augment.aspect, n)
        r = rng.integers(augment.low, augment.high + 1, n)
        # Darknet stores min(h, w*aspect) in an int before dividing
        scale = r / np.minimum(h, w * a).astype(np.int64)
        rad = rng.uniform(-augment.angle, augment.angle, n) * np.pi / 180
        dx = (w * scale / a - ow) / 2
        dy = (h * scale - oh) / 2    # P uses the width here; darkcfg the height
        dx = rng.uniform(-1.0, 1.0, n) * dx
        dy = rng.uniform(-1.0, 1.0, n) * dy
        out = rotate_crop(x, rad, scale, a, dx, dy, ow, oh)
    if augment.flip:
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, :, ::-1]
    return distort(out, rng.uniform(-augment.hue, augment.hue, n),
                   rand_scale(rng, augment.saturation, n),
                   rand_scale(rng, augment.exposure, n))


def center_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet classifier validation: resize the shorter side to w, centre-crop w x h
    (zero outside the image). im: (C, H, W)."""
    c, ih, iw = im.shape
    nw, nh = (w, ih * w // iw) if iw < ih else (iw * w // ih, w)
    if (nw, nh) != (iw, ih):
        im = resize(im, nw, nh)
    out = np.zeros((c, h, w), np.float32)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    sx, sy = max(x0, 0), max(y0, 0)
    ex, ey = min(x0 + w, nw), min(y0 + h, nh)
    out[:, sy - y0:ey - y0, sx - x0:ex - x0] = im[:, sy:ey, sx:ex]
    return out


def rotate_crop(x: np.ndarray, rad, scale, aspect, dx, dy, w: int, h: int) -> np.ndarray:
    """Darknet's rotate_crop_image for a batch: output pixel (i, j) samples the source at

        u = ((i - w/2) + dx) * aspect / scale,   v = ((j - h/2) + dy) / scale
        (sx, sy) = (cos r * u - sin r * v + W/2,  sin r * u + cos r * v + H/2)

    bilinearly, reading 0 outside the image. Per-image parameters are arrays of length N.
    """
    n, _, ih, iw = x.shape
    p = [np.asarray(v, np.float64).reshape(n, 1, 1) for v in (rad, scale, aspect, dx, dy)]
    rad, scale, aspect, dx, dy = p
    i = np.arange(w, dtype=np.float64)[None, None, :]
    j = np.arange(h, dtype=np.float64)[None, :, None]
    u = (i - w / 2 + dx) * aspect / scale
    v = (j - h / 2 + dy) / scale
    cos, sin = np.cos(rad), np.sin(rad)
    return bilinear(x, cos * u - sin * v + iw / 2, sin * u + cos * v + ih / 2)


def bilinear(x: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Sample (N, C, H, W) at float coordinates sx, sy (N, h, w); 0 outside the image."""
    n, c, ih, iw = x.shape
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    hwc = x.transpose(0, 2, 3, 1)
    batch = np.arange(n)[:, None, None]
    out = np.zeros((*sx.shape, c), np.float32)
    for oy, ox, wgt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                        (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + ox, y0 + oy
        inside = (xi >= 0) & (xi < iw) & (yi >= 0) & (yi < ih)
        vals = hwc[batch, np.clip(yi, 0, ih - 1), np.clip(xi, 0, iw - 1)]
        out += vals * (wgt * inside).astype(np.float32)[..., None]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def distort(x: np.ndarray, dhue, dsat, dexp) -> np.ndarray:
    """Darknet's distort_image + constrain_image: RGB goes through HSV (hue shifted and
    wrapped, saturation and value scaled); other channel counts only scale by exposure."""
    n = len(x)
    dhue, dsat, dexp = (np.asarray(v, np.float32).reshape(n, 1, 1) for v in
                        (dhue, dsat, dexp))
    if np.all(dhue == 0) and np.all(dsat == 1) and np.all(dexp == 1):
        return x
    if x.shape[1] != 3:
        return np.clip(x * dexp[:, None], 0, 1)
    hue, sat, val = rgb_to_hsv(x)
    hue = hue + dhue
    hue = np.where(hue > 1, hue - 1, np.where(hue < 0, hue + 1, hue))
    return np.clip(hsv_to_rgb(hue, sat * dsat, val * dexp), 0, 1)


def rgb_to_hsv(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3, H, W) RGB -> hue in [0, 1), saturation, value; each (N, H, W)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    mx, mn = x.max(axis=1), x.min(axis=1)
    delta = mx - mn
    safe = np.where(delta > 0, delta, 1)
    h = np.where(r == mx, (g - b) / safe, np.where(g == mx, 2 + (b - r) / safe,
                                                     4 + (r - g) / safe))
    h = np.where(delta > 0, h, 0)     # Darknet divides 0 by 0 here for grey pixels
    h = np.where(h < 0, h + 6, h) / 6
    s = np.where(mx > 0, delta / np.where(mx > 0, mx, 1), 0)
    return h.astype(np.float32), s.astype(np.float32), mx.astype(np.float32)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    h6 = h * 6
    k = np.floor(h6)
    f = h6 - k
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    k = k.astype(np.int64) % 6
    sel = [k == i for i in range(5)]
    r = np.select(sel, [v, q, p, p, t], v)
    g = np.select(sel, [t, v, v, q, p], p)
    b = np.select(sel, [p, p, t, v, v], q)
    grey = s == 0
    rgb = np.stack([np.where(grey, v, r), np.where(grey, v, g), np.where(grey, v, b)], 1)
    return rgb.astype(np.float32)



# ---------------------------------------------------------------------------------------
# AlexeyAB's detector augmentation works on OpenCV images (src/image_opencv.cpp:
# image_data_augmentation); these are the two OpenCV operations it uses, in float.

def resize_linear(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """cv::resize(INTER_LINEAR) of im (C, H, W) to (C, h, w): pixel centres aligned
    (source x = (j + 0.5) * W / w - 0.5), the edge pixels repeated beyond the border."""
    _, ih, iw = im.shape
    if (ih, iw) == (h, w):
        return np.ascontiguousarray(im, dtype=np.float32)

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(s).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (s - i0).astype(np.float32)

    x0, x1, fx = taps(iw, w)
    y0, y1, fy = taps(ih, h)
    rows = im[:, y0] * (1 - fy)[:, None] + im[:, y1] * fy[:, None]
    return np.ascontiguousarray(rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx,
                                dtype=np.float32)


def gaussian_kernel(ksize: int) -> np.ndarray:
    """cv::getGaussianKernel(ksize, sigma=0): sigma = 0.3 ((ksize - 1) / 2 - 1) + 0.8."""
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    t = np.arange(ksize) - (ksize - 1) / 2
    k = np.exp(-t * t / (2 * sigma * sigma))
    return k / k.sum()


def gaussian_blur(im: np.ndarray, ksize: int) -> np.ndarray:
    """cv::GaussianBlur(ksize x ksize, sigma 0) of im (C, H, W): separable, with OpenCV's
    default border BORDER_REFLECT_101 (numpy's 'reflect')."""
    k = gaussian_kernel(ksize).astype(np.float32)
    r = ksize // 2
    out = im.astype(np.float32)
    for axis in (1, 2):
        if out.shape[axis] == 1:        # nothing to reflect: a constant along this axis
            continue
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for t in range(ksize):
            acc += k[t] * np.take(p, np.arange(t, t + n), axis=axis)
        out = acc
    return out
