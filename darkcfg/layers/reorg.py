"""[reorg] (Darknet P's YOLOv2 passthrough permutation) and [reorg3d] (space-to-depth)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from .base import Layer, dims, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Reorg(Layer):
    type = "reorg"
    example = "[reorg]\nstride=2\n"
    doc = "Darknet's reorg permutation (not the standard space-to-depth)"
    options = {
        "stride": Opt("int", 1, "block size", min=1),
        "reverse": Opt("int", 0, "inverse direction", min=0),
        "flatten": Opt("int", 0, "transpose C,H,W <-> H,W,C (P)", min=0),
        "extra": Opt("int", 0, "append this many zeros; flat output (P)", min=0),
    }

    def setup(self, layers):
        s = self.stride = self.opts["stride"]
        self.reverse = bool(self.opts["reverse"])
        self.flatten, self.extra = bool(self.opts["flatten"]), self.opts["extra"]
        c, h, w = self.in_shape
        if self.extra:
            self.out_shape = (self.inputs + self.extra, 1, 1)
            return
        self.image_input()
        if self.flatten:
            return
        if self.reverse:
            if c % (s * s):
                raise self.error(f"reverse reorg with stride {s} needs channels divisible by "
                                 f"{s * s}; the input has {c}", "stride")
            self.out_shape = (c // (s * s), h * s, w * s)
        else:
            if h % s or w % s:
                raise self.error(f"reorg with stride {s} needs width and height divisible by "
                                 f"{s}; the input is {w} x {h}", "stride")
            if self.type == "reorg" and c % (s * s):
                # P's permutation reads the input as (c/s^2, h*s, w*s)
                raise self.error(f"reorg with stride {s} needs channels divisible by {s * s};"
                                 f" the input has {c} (Darknet divides by zero or leaves "
                                 "values unset here)", "stride")
            self.out_shape = (c * s * s, h // s, w // s)

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> (N, *out_shape): Darknet P's permutation with the input dims,
        # reading the input as if it were (C/s^2, H*s, W*s) when not reversed (YOLOv2's
        # passthrough, case `upsample_reorg`); `reverse` is its inverse.
        from ..kernels.reorg import reorg_darknet
        return reorg_darknet(x, self.stride, self.reverse).reshape(-1, *self.out_shape)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # a permutation: its gradient is the inverse permutation
        if dy is None:
            return None
        from ..kernels.reorg import reorg_darknet_backward
        return reorg_darknet_backward(dy, self.in_shape, self.stride, self.reverse)

    def receptive(self, rf):
        r, j = self._rf_in(rf)
        return (r, j) if self.extra or self.flatten else \
            ((r, j / self.stride) if self.reverse else (r + (self.stride - 1) * j,
                                                         j * self.stride))

    def row(self):
        if self.extra:
            return f"reorg              {self.inputs:4d}   ->  {self.outputs:4d}"
        return (f"reorg              /{self.stride:2d}  {dims(self.in_shape)}   ->  "
                f"{dims(self.out_shape)}")

    def unsupported(self):
        if self.extra or self.flatten:
            return "reorg 'extra'/'flatten' is not computed by darkcfg"
        return None


@register
class Reorg3d(Reorg):
    type = "reorg3d"
    example = "[reorg3d]\nstride=2\n"
    doc = "space-to-depth (AH)"
    options = {"stride": Opt("int", 1, "block size", min=1),
               "reverse": Opt("int", 0, "inverse direction (depth-to-space)", min=0)}

    def setup(self, layers):
        self.opts.setdefault("flatten", 0)
        self.opts.setdefault("extra", 0)
        super().setup(layers)

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> (N, *out_shape): AH's genuine space-to-depth (output channel
        # off*C + k at (j, i) reads channel k at (j*s + off//s, i*s + off%s)). reverse=1 is
        # its exact inverse, depth-to-space; AH calls the permutation with the output dims
        # there too, which is not an inverse (darkcfg computes the intent: README,
        # "Deliberate differences from Darknet").
        from ..kernels.reorg import depth_to_space, space_to_depth
        if self.reverse:
            return depth_to_space(x, self.stride)
        return space_to_depth(x, self.stride)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        if dy is None:
            return None
        from ..kernels.reorg import depth_to_space_backward, space_to_depth_backward
        if self.reverse:
            return depth_to_space_backward(dy, self.stride)
        return space_to_depth_backward(dy, self.stride)

    def row(self):
        return (f"reorg3d            /{self.stride:2d}  {dims(self.in_shape)}   ->  "
                f"{dims(self.out_shape)}")
