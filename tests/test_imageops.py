"""Darknet's resize and letterbox against a direct transcription of the per-pixel rule."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from darkcfg import DataError
from darkcfg.data.images import letterbox, load_image, resize


def naive_resize(im, w, h):
    """Darknet's two-pass bilinear resize, one pixel at a time."""
    c, ih, iw = im.shape
    part = np.zeros((c, ih, w), np.float32)
    ws = np.float32((iw - 1) / (w - 1))
    hs = np.float32((ih - 1) / (h - 1))
    for k in range(c):
        for r in range(ih):
            for x in range(w):
                if x == w - 1 or iw == 1:
                    part[k, r, x] = im[k, r, iw - 1]
                else:
                    sx = np.float32(x) * ws
                    ix = int(sx)
                    dx = np.float32(sx - ix)
                    part[k, r, x] = (1 - dx) * im[k, r, ix] + dx * im[k, r, ix + 1]
    out = np.zeros((c, h, w), np.float32)
    for k in range(c):
        for r in range(h):
            sy = np.float32(r) * hs
            iy = int(sy)
            dy = np.float32(sy - iy)
            out[k, r] = (1 - dy) * part[k, iy]
            if r == h - 1 or ih == 1:
                continue
            out[k, r] += dy * part[k, iy + 1]
    return out


@pytest.mark.parametrize("shape,w,h", [((3, 7, 9), 4, 5), ((1, 10, 6), 13, 11),
                                       ((3, 32, 28), 28, 28), ((2, 5, 5), 5, 5)])
def test_resize_matches_darknets_rule(shape, w, h):
    im = np.random.default_rng(0).random(shape, dtype=np.float32)
    np.testing.assert_allclose(resize(im, w, h), naive_resize(im, w, h), atol=1e-6)


def test_letterbox_keeps_aspect_and_pads_grey():
    im = np.random.default_rng(1).random((3, 20, 40), dtype=np.float32)
    out = letterbox(im, 16, 16)
    assert out.shape == (3, 16, 16)
    assert np.all(out[:, :4] == 0.5) and np.all(out[:, 12:] == 0.5)
    np.testing.assert_allclose(out[:, 4:12], naive_resize(im, 16, 8), atol=1e-6)


def test_load_image_rgb_and_grey(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = (255, 0, 51)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png")
    assert im.shape == (3, 4, 5) and im.dtype == np.float32
    assert im[:, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert load_image(tmp_path / "a.png", channels=1).shape == (1, 4, 5)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.png: no such image"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: not an image"):
        load_image(tmp_path / "bad.png")
