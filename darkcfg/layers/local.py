"""[local]: locally connected layer, unshared weights per output cell (summary only)."""
from __future__ import annotations

from ..options import Opt
from ._shape_only import ACT
from .base import Layer, register


@register
class Local(Layer):
    type = "local"
    runnable = False
    options = {
        "filters": Opt("int", 1, "output channels", min=1),
        "size": Opt("int", 1, "kernel size", min=1),
        "stride": Opt("int", 1, "stride", min=1),
        "pad": Opt("int", 0, "pad", min=0),
        "activation": ACT,
    }

    def setup(self, layers):
        self.image_input()
        _, h, w = self.in_shape
        o = self.opts
        cut = 1 if o["pad"] else o["size"]      # Darknet's local_out_height
        self.out_shape = (o["filters"], (h - cut) // o["stride"] + 1,
                          (w - cut) // o["stride"] + 1)

    def param_shapes(self):
        c = self.in_shape[0]
        n, oh, ow = self.out_shape
        k = self.opts["size"]
        return [("biases", (self.outputs,)), ("weights", (oh * ow, n, c, k, k))]

    def flops(self):
        return 2.0 * self.outputs * self.in_shape[0] * self.opts["size"] ** 2

    def row(self):
        c, h, w = self.in_shape
        n, oh, ow = self.out_shape
        return (f"Local Layer: {h} x {w} x {c} image, {n} filters -> {oh} x {ow} x {n} "
                "image")
