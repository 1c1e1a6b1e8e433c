"""[crop] (P, A): random crop in training, centre crop at inference, scaled to [-1, 1]."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from ._rng import layer_rng
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Crop(Layer):
    type = "crop"
    example = "[crop]\ncrop_height=4\ncrop_width=5\n"
    doc = "centre crop (random in training), then 2x-1 unless noadjust"
    options = {
        "crop_height": Opt("int", 1, "output height", min=1),
        "crop_width": Opt("int", 1, "output width", min=1),
        "flip": Opt("int", 0, "random horizontal flip in training", min=0),
        "angle": Opt("float", 0.0, "random rotation in training (degrees)"),
        "saturation": Opt("float", 1.0, "saturation jitter in training"),
        "exposure": Opt("float", 1.0, "exposure jitter in training"),
        "shift": Opt("float", 0.0, "random shift in training"),
        "noadjust": Opt("int", 0, "keep values (no 2x-1)", min=0),
    }

    def setup(self, layers):
        self.image_input()
        c, h, w = self.in_shape
        ch, cw = self.opts["crop_height"], self.opts["crop_width"]
        if ch > h or cw > w:
            raise self.error(f"crop {cw} x {ch} is larger than the input {w} x {h}",
                             "crop_height" if ch > h else "crop_width")
        self.out_shape = (c, ch, cw)

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> (N, C, crop_height, crop_width), then 2x - 1 unless noadjust.
        # Inference: the centre window, offsets (H - h)//2, (W - w)//2 (case
        # `batchnorm_crop`). Training: a random window and, with flip=1, a random mirror,
        # one draw for the whole batch as in Darknet (its CPU path applies no angle,
        # saturation, exposure or shift).
        from ..kernels.resample import crop
        _, h, w = self.in_shape
        _, oh, ow = self.out_shape
        top, left, flip = (h - oh) // 2, (w - ow) // 2, False
        if net.train:
            rng = layer_rng(self, net)
            flip = bool(self.opts["flip"]) and bool(rng.integers(2))
            top, left = int(rng.integers(h - oh + 1)), int(rng.integers(w - ow + 1))
        scale, shift = (1.0, 0.0) if self.opts["noadjust"] else (2.0, -1.0)
        self.window = (top, left, flip, scale)
        return crop(x, top, left, oh, ow, flip, scale, shift)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # scale * dy back into the forward's window, zero outside. P's CPU [crop] has an
        # empty backward (no gradient below a crop); darkcfg differentiates its forward.
        if dy is None:
            return None
        from ..kernels.resample import crop_backward
        top, left, flip, scale = self.window
        return crop_backward(dy, self.in_shape[1:], top, left, flip, scale)

    def row(self):
        c, h, w = self.in_shape
        o = self.opts
        return (f"Crop Layer: {h} x {w} -> {o['crop_height']} x {o['crop_width']} x {c} "
                "image")
