"""[scale_channels] (AH): scale a feature map by per-channel (or per-pixel) factors."""
from __future__ import annotations

from ..activations import ACTIVATIONS
from ..options import Opt
from ._product import Product
from .base import register


@register
class ScaleChannels(Product):
    type = "scale_channels"
    example = ("[convolutional]\nfilters=3\nsize=3\npad=1\nactivation=logistic\n"
               "batch_normalize=1\n[avgpool]\n[convolutional]\nfilters=3\nsize=1\n"
               "activation=logistic\n[scale_channels]\nfrom=-3\n")
    doc = "from-layer map x the previous layer's per-channel (scale_wh: per-pixel) factors"
    options = {
        "from": Opt("layers", None, "the feature map to scale", required=True),
        "scale_wh": Opt("int", 0, "previous layer is w x h x 1: scale per pixel", min=0),
        "activation": Opt("str", "linear", "activation", choices=ACTIVATIONS),
    }

    def setup(self, layers):
        self.sources = [self.resolve("from", self.opts["from"][0], layers)]
        self.activation = self.opts["activation"]
        self.scale_wh = bool(self.opts["scale_wh"])
        fc, fh, fw = layers[self.sources[0]].out_shape
        c, h, w = self.in_shape
        want = (1, fh, fw) if self.scale_wh else (fc, 1, 1)
        if (c, h, w) != want:
            raise self.error(f"the previous layer is {w} x {h} x {c} (w x h x c) but scaling "
                             f"layer {self.sources[0]} ({fw} x {fh} x {fc}) needs "
                             f"{want[2]} x {want[1]} x {want[0]}", "from")
        self.out_shape = (fc, fh, fw)
