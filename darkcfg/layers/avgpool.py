"""[avgpool] / [avg]: global average pooling to 1 x 1 x c."""
from __future__ import annotations

from .base import Layer, dims, register


@register
class Avgpool(Layer):
    type = "avgpool"
    doc = "global average pooling"

    def setup(self, layers):
        self.image_input()
        self.out_shape = (self.in_shape[0], 1, 1)

    def flops(self):
        c, h, w = self.in_shape
        return float(c * h * w)

    def receptive(self, rf):
        return float("inf"), self._rf_in(rf)[1]

    def row(self):
        return f"avg                     {dims(self.in_shape)}   ->  {self.in_shape[0]:4d}"
