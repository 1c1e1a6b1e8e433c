"""[crop] (P, A): random crop in training, centre crop at inference, scaled to [-1, 1]."""
from __future__ import annotations

from ..options import Opt
from .base import Layer, register


@register
class Crop(Layer):
    type = "crop"
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

    def row(self):
        c, h, w = self.in_shape
        o = self.opts
        return (f"Crop Layer: {h} x {w} -> {o['crop_height']} x {o['crop_width']} x {c} "
                "image")
