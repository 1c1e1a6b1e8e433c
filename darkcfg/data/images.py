"""Images as Darknet sees them: RGB (or grey) float32 C,H,W in [0, 1], Darknet's bilinear
resize and letterbox. Pillow decodes; the arithmetic is Darknet's, in NumPy."""
from __future__ import annotations

import os
import re
import warnings

import numpy as np

from ..errors import DataError
from ..memory import available_memory

# Modes Pillow decodes more than 8 bits per sample into (always one grey channel):
# "I;16*" unsigned 16-bit, "I" 32-bit signed integers, "F" 32-bit floats.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# Only images whose float32 copy is at least this big are checked against free memory:
# reading /proc/meminfo for every small training image would cost for nothing.
_CHECK_MEMORY_FROM = 64 << 20


def load_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Decode an image file to float32 (channels, h, w) in [0, 1].

    8-bit images (and everything Pillow decodes to 8 bits) are value / 255, as Darknet.
    Wider samples are scaled by the range of their type, never clipped:

    * 16-bit grey (PNG, TIFF, PGM): value / 65535. Darknet's loaders drop the low byte
      ((value >> 8) / 255, at most 1/255 away); Pillow itself keeps only the high byte of
      16-bit RGB PNG/TIFF (and rounds 16-bit PPM colour), so those read as 8-bit images.
    * integer TIFF samples of b bits: value / (2^b - 1) when unsigned, value / (2^(b-1)
      - 1) when signed, where negative values are refused; a 32-bit unsigned TIFF is read
      as unsigned (Pillow hands it over as signed). Other 32-bit integer images: by the
      signed int32 range, negatives refused.
    * 32-bit float images (TIFF "F"): used as they are when every value is in [0, 1];
      anything else (NaN, infinities, values outside [0, 1]) is refused, since there is
      no range to scale by that would not be a guess.

    A grey image feeding a 3-channel net is repeated into R, G and B; an RGB image feeding
    a 1-channel net is Pillow's "L" (ITU-R 601-2 luma). Images over Pillow's pixel limit
    (`PIL.Image.MAX_IMAGE_PIXELS`, its decompression-bomb guard) and images whose float
    copy would not fit in the available memory are refused before decoding.
    """
    from PIL import Image, UnidentifiedImageError
    path = os.fspath(path)
    if channels not in (1, 3):
        raise DataError(f"{path}: images can feed a net with 1 or 3 channels, not {channels}")
    try:
        with warnings.catch_warnings():
            # between 1x and 2x the limit Pillow only warns; darkcfg refuses both alike
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_memory(path, im, channels)
                a = _decode(path, im, channels)
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read (PNG, JPEG, BMP, ...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(_too_many_pixels(path, str(e))) from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode this image") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the image: {e}") from None
    return a


def _too_many_pixels(path: str, pillow_says: str) -> str:
    """The message for an image over Pillow's limit (Pillow's own message carries the
    pixel count it read from the header)."""
    from PIL import Image
    found = re.search(r"\((\d+) pixels\)", pillow_says)
    size = f"{found.group(1)} pixels" if found else "more pixels than that"
    return (f"{path}: the image has {size}, over Pillow's limit of "
            f"{Image.MAX_IMAGE_PIXELS} pixels (PIL.Image.MAX_IMAGE_PIXELS, its guard "
            "against decompression bombs); shrink the image first")


def image_bytes(width: int, height: int, mode_bytes: int, channels: int) -> int:
    """Memory `load_image` needs at its peak: Pillow's decoded pixels plus two float32
    (channels, h, w) arrays (the conversion and the scaled result)."""
    return width * height * (mode_bytes + 2 * 4 * channels)


def _check_memory(path: str, im, channels: int) -> None:
    w, h = im.size
    bands = len(im.getbands())
    mode_bytes = bands * (4 if im.mode in ("I", "F") else 2 if im.mode.startswith("I;16")
                          else 1)
    need = image_bytes(w, h, mode_bytes, channels)
    if need < _CHECK_MEMORY_FROM:
        return
    free = available_memory()
    if free is not None and need > free:
        raise DataError(f"{path}: a {w} x {h} image needs about {_mb(need)} of memory to "
                        f"load as float32, but only {_mb(free)} is available; shrink the "
                        "image first")


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n} bytes"


def _decode(path: str, im, channels: int) -> np.ndarray:
    """The decoded pixels as float32 (channels, h, w) in [0, 1]."""
    if im.mode not in _WIDE_MODES:
        im = im.convert("L" if channels == 1 else "RGB")
        a = np.asarray(im, dtype=np.float32)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return np.ascontiguousarray(a) / np.float32(255.0)
    grey = _wide_to_unit(path, im)[None]
    return np.ascontiguousarray(np.repeat(grey, channels, axis=0) if channels > 1 else grey)


def _wide_to_unit(path: str, im) -> np.ndarray:
    """A 16/32-bit grey image -> float32 (h, w) in [0, 1] (rules: load_image)."""
    a = np.asarray(im)
    if im.mode == "F":
        bad = ~((a >= 0) & (a <= 1))            # NaN compares False both ways
        if bad.any():
            finite = a[np.isfinite(a)]
            span = (f"from {finite.min():g} to {finite.max():g}" if finite.size else
                    "with no finite value")
            raise DataError(f"{path}: a floating-point image must have values in [0, 1]; "
                            f"this one has {int(bad.sum())} pixels outside (values {span}"
                            f"{', NaN or infinite ones' if finite.size < a.size else ''}); "
                            "darkcfg does not guess a scale: save it rescaled to [0, 1] "
                            "or as 8/16-bit")
        return a.astype(np.float32)
    if im.mode.startswith("I;16"):
        top, signed = 65535, False
    else:
        top, signed = _int_range(im)
        if not signed:
            a = a.view(np.uint32) if top == 2**32 - 1 else a
    if signed and a.min() < 0:
        raise DataError(f"{path}: a signed integer image with negative values (down to "
                        f"{a.min()}); darkcfg reads integer images as 0..{top} and does not "
                        "guess where black is: save it as unsigned 8/16-bit")
    return (a.astype(np.float64) / top).astype(np.float32)


def _int_range(im) -> tuple[int, bool]:
    """(largest value, signed) of a Pillow "I" image's samples, from the file's own type:
    TIFF BitsPerSample/SampleFormat; PNG and PPM/PGM are 16-bit samples Pillow widened
    (it rescales PGM's maxval to 65535); anything else is signed int32."""
    if im.format == "TIFF":
        tags = im.tag_v2
        bits = _first(tags.get(258, 32))
        signed = _first(tags.get(339, 1)) == 2
        return (2 ** (bits - 1) - 1 if signed else 2 ** bits - 1), signed
    if im.format in ("PNG", "PPM"):
        return 65535, False
    return 2**31 - 1, True


def _first(value) -> int:
    return int(value[0] if isinstance(value, tuple) else value)


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
