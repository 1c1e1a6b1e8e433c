"""[maxpool] / [max]: Darknet's max pooling (total padding, window origin -padding/2)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from ._pool import POOL_OPTIONS, Pool
from .base import dims, register

if TYPE_CHECKING:
    from .base import RunState

@register
class Maxpool(Pool):
    type = "maxpool"
    example = "[maxpool]\nsize=3\nstride=2\n"
    aliases = ("max",)
    doc = "max pooling; maxpool_depth pools across channels"
    options = {
        **POOL_OPTIONS,
        "maxpool_depth": Opt("int", 0, "pool across channels instead of space (AH)", min=0),
        "out_channels": Opt("int", 1, "output channels with maxpool_depth", min=1),
        "antialiasing": Opt("int", 0, "blur after pooling (AH; not computed)", min=0),
        "maxpool_zero_nonmax": Opt("int", 0, "(AH; not computed)", min=0),
    }

    def setup(self, layers):
        self.writes_out = not self.opts["maxpool_depth"]
        if self.opts["maxpool_depth"]:
            self.image_input()
            _, h, w = self.in_shape
            self.size = self.padding = 0
            self.stride_x = self.stride_y = 1
            self.out_shape = (self.opts["out_channels"], h, w)
            return
        super().setup(layers)

    def flops(self):
        if self.opts["maxpool_depth"]:
            return float(self.in_shape[0] * self.out_shape[1] * self.out_shape[2])
        return super().flops()

    def row(self):
        return (f"max          {self.size} x {self.size} / {self.stride_x}  "
                f"{dims(self.in_shape)}   ->  {dims(self.out_shape)}")

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> (N, *out_shape); `indexes` keeps each output's arg-max (flat
        # index within its sample) for the backward pass, as Darknet does.
        from ..kernels.pool import maxpool, maxpool_depth
        if self.opts["maxpool_depth"]:
            out, self.indexes = maxpool_depth(x, self.out_shape[0])
        else:
            # the arg-max only in training; buffers reused across calls
            out, idx = maxpool(x, self.size, self.stride_y, self.stride_x, self.padding,
                               out=getattr(self, "_out", None),
                               arg=getattr(self, "_arg", None), want_arg=net.train)
            self._out = out
            if idx is not None:
                self._arg = idx
            self.indexes = idx
        return out

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # each output's gradient to its arg-max input cell (both kinds)
        if dy is None:
            return None
        from ..kernels.pool import maxpool_backward, maxpool_backward_into
        if self.opts["maxpool_depth"]:
            return maxpool_backward(dy, self.indexes, self.in_shape)
        self._dx = maxpool_backward_into(dy, self.indexes, self.in_shape,
                                         getattr(self, "_dx", None))
        return self._dx

    def unsupported(self):
        for k in ("antialiasing", "maxpool_zero_nonmax"):
            if self.opts[k]:
                return f"'{k}={self.opts[k]}' is not computed by darkcfg"
        return None
