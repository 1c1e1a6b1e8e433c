"""[local_avgpool] / [local_avg] (AH): windowed average over the in-image cells."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._pool import POOL_OPTIONS, Pool
from .base import dims, register

if TYPE_CHECKING:
    from .base import RunState


@register
class LocalAvgpool(Pool):
    type = "local_avgpool"
    example = "[local_avgpool]\nsize=2\nstride=2\n"
    aliases = ("local_avg",)
    doc = "windowed average pooling (mean over in-image cells)"
    options = dict(POOL_OPTIONS)

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> (N, *out_shape); the divisor counts the in-image cells only.
        from ..kernels.pool import local_avgpool
        return local_avgpool(x, self.size, self.stride_y, self.stride_x, self.padding)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # dy / (valid cells of the window) to each of them: the derivative of this forward.
        # AH's CPU backward (src/maxpool_layer.c: backward_local_avgpool_layer) divides by
        # size*size instead, which disagrees with AH's own forward at the border; darkcfg
        # is consistent with its forward (README, "Deliberate differences from Darknet").
        if dy is None:
            return None
        from ..kernels.pool import local_avgpool_backward
        return local_avgpool_backward(dy, self.size, self.stride_y, self.stride_x,
                                      self.padding, self.in_shape[1:])

    def row(self):
        return (f"avg          {self.size} x {self.size} / {self.stride_x}  "
                f"{dims(self.in_shape)}   ->  {dims(self.out_shape)}")
