"""[crnn]: convolutional recurrent layer (summary only: shape and parameters)."""
from __future__ import annotations

from ..options import Opt
from ._shape_only import ACT
from .base import Layer, register


@register
class Crnn(Layer):
    type = "crnn"
    runnable = False
    options = {
        "output": Opt("int", 1, "output filters", min=1),
        "hidden": Opt("int", 1, "hidden filters", min=1),
        "size": Opt("int", 3, "kernel size", min=1),
        "stride": Opt("int", 1, "stride", min=1),
        "pad": Opt("int", 0, "1: padding = size/2", min=0),
        "activation": ACT,
        "batch_normalize": Opt("int", 0, "batch normalisation", min=0),
    }
    quiet = frozenset({"xnor", "groups", "dilation", "shortcut"})

    def setup(self, layers):
        self.image_input()
        c, h, w = self.in_shape
        o = self.opts
        p = o["size"] // 2 if o["pad"] else 0
        self.convs = [(c, o["hidden"]), (o["hidden"], o["hidden"]), (o["hidden"], o["output"])]
        self.out_shape = (o["output"], (h + 2 * p - o["size"]) // o["stride"] + 1,
                          (w + 2 * p - o["size"]) // o["stride"] + 1)

    def param_shapes(self):
        k, bn = self.opts["size"], bool(self.opts["batch_normalize"])
        return [(f"sub{i}", (n + a * n * k * k + (3 * n if bn else 0),))
                for i, (a, n) in enumerate(self.convs)]

    def row(self):
        return f"CRNN Layer: {self.in_shape[2]} x {self.in_shape[1]} x {self.in_shape[0]} image"
