"""The pooling base shared by [maxpool] and [local_avgpool]: their keys and shape rule
(Darknet's src/maxpool_layer.c: make_maxpool_layer)."""
from __future__ import annotations

from ..options import Opt
from .base import Layer

POOL_OPTIONS = {
    "stride": Opt("int", 1, "stride on both axes", min=1),
    "stride_x": Opt("int", 0, "horizontal stride (AH; default: stride)", min=0),
    "stride_y": Opt("int", 0, "vertical stride (AH; default: stride)", min=0),
    "size": Opt("int", 0, "window size (default: stride)", min=0),
    "padding": Opt("int", -1, "TOTAL padding, both sides together (default: size-1)", min=0),
}


class Pool(Layer):
    """Shared shape rule of [maxpool] and [local_avgpool] (Darknet's src/maxpool_layer.c:
    make_maxpool_layer)."""

    def setup(self, layers):
        o = self.opts
        self.image_input()
        c, h, w = self.in_shape
        self.stride_x = o["stride_x"] or o["stride"]
        self.stride_y = o["stride_y"] or o["stride"]
        self.size = o["size"] or o["stride"]
        self.padding = self.size - 1 if o["padding"] == -1 else o["padding"]
        self.out_shape = (c, (h + self.padding - self.size) // self.stride_y + 1,
                          (w + self.padding - self.size) // self.stride_x + 1)

    def flops(self):
        c, oh, ow = self.out_shape
        return float(self.size * self.size * c * oh * ow)

    def receptive(self, rf):
        r, j = self._rf_in(rf)
        return r + (self.size - 1) * j, j * max(self.stride_x, self.stride_y)
