"""[avgpool] / [avg]: global average pooling to 1 x 1 x c."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Layer, dims, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Avgpool(Layer):
    type = "avgpool"
    example = "[avgpool]\n"
    aliases = ("avg",)
    doc = "global average pooling"

    def setup(self, layers):
        self.image_input()
        self.out_shape = (self.in_shape[0], 1, 1)

    def flops(self):
        c, h, w = self.in_shape
        return float(c * h * w)

    def receptive(self, rf):
        return float("inf"), self._rf_in(rf)[1]

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> (N, C, 1, 1)
        from ..kernels.pool import global_avgpool
        return global_avgpool(x)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # (N, C, 1, 1) -> (N, C, H, W): dy / (H*W) at every cell, as Darknet
        if dy is None:
            return None
        from ..kernels.pool import global_avgpool_backward
        return global_avgpool_backward(dy, self.in_shape[1:])

    def row(self):
        return f"avg                     {dims(self.in_shape)}   ->  {self.in_shape[0]:4d}"
