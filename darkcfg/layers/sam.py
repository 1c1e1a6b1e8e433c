"""[sam] (AH): element-wise product of the previous layer and an earlier one."""
from __future__ import annotations

from ..activations import ACTIVATIONS
from ..options import Opt
from ._product import Product
from .base import register


@register
class Sam(Product):
    type = "sam"
    example = ("[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=logistic\n"
               "batch_normalize=1\n[convolutional]\nfilters=4\nsize=1\n"
               "activation=logistic\n[sam]\nfrom=-2\n")
    doc = "spatial attention: previous * from, element-wise"
    options = {
        "from": Opt("layers", None, "the layer to multiply with", required=True),
        "activation": Opt("str", "linear", "activation", choices=ACTIVATIONS),
    }

    def setup(self, layers):
        self.sources = [self.resolve("from", self.opts["from"][0], layers)]
        self.activation = self.opts["activation"]
        shape = layers[self.sources[0]].out_shape
        if shape != self.in_shape:
            fc, fh, fw = shape
            c, h, w = self.in_shape
            raise self.error(f"layer {self.sources[0]} is {fw} x {fh} x {fc} but the previous "
                             f"layer is {w} x {h} x {c} (w x h x c); [sam] needs equal shapes",
                             "from")
