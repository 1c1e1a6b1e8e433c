"""[upsample]: nearest-neighbour upsampling (negative stride: sum-pool downsampling)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from .base import Layer, dims, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Upsample(Layer):
    type = "upsample"
    example = "[upsample]\nstride=2\nscale=0.5\n"
    doc = "nearest-neighbour x stride, times scale; negative stride sums s x s blocks"
    options = {
        "stride": Opt("int", 2, "factor; negative downsamples"),
        "scale": Opt("float", 1.0, "multiplier on the values"),
    }

    def setup(self, layers):
        self.image_input()
        s = self.opts["stride"]
        if s == 0:
            raise self.error("'stride' must not be 0", "stride")
        self.stride, self.scale = s, self.opts["scale"]
        self.writes_out = s > 0
        c, h, w = self.in_shape
        if s > 0:
            self.out_shape = (c, h * s, w * s)
        else:
            if h % -s or w % -s:
                raise self.error(f"downsampling by {-s} needs width and height divisible by "
                                 f"{-s}; the input is {w} x {h}", "stride")
            self.out_shape = (c, h // -s, w // -s)

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> (N, *out_shape): nearest neighbour times scale; a negative
        # stride sums each block times scale (case `upsample_reorg`).
        from ..kernels.resample import downsample_sum, upsample
        if self.stride > 0:
            self._out = upsample(x, self.stride, self.scale, out=getattr(self, "_out", None))
            return self._out
        return downsample_sum(x, -self.stride, self.scale)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # upsample: scale * the sum over each s x s block of dy; downsample: scale * dy
        # copied to every cell of its block
        if dy is None:
            return None
        from ..kernels.resample import downsample_sum_backward, upsample_backward
        if self.stride > 0:
            return upsample_backward(dy, self.stride, self.scale)
        return downsample_sum_backward(dy, -self.stride, self.scale)

    def receptive(self, rf):
        r, j = self._rf_in(rf)
        return (r, j / self.stride) if self.stride > 0 else (r + (-self.stride - 1) * j,
                                                             j * -self.stride)

    def row(self):
        name = "upsample  " if self.stride > 0 else "downsample"
        return (f"{name}         {abs(self.stride):2d}x  {dims(self.in_shape)}   ->  "
                f"{dims(self.out_shape)}")
