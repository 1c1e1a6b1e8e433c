"""[reorg] (Darknet P's YOLOv2 passthrough permutation) and [reorg3d] (space-to-depth)."""
from __future__ import annotations

from ..options import Opt
from .base import Layer, dims, register


@register
class Reorg(Layer):
    type = "reorg"
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
            self.out_shape = (c * s * s, h // s, w // s)

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
    doc = "space-to-depth (AH)"
    options = {"stride": Opt("int", 1, "block size", min=1),
               "reverse": Opt("int", 0, "inverse direction (depth-to-space)", min=0)}

    def setup(self, layers):
        self.opts.setdefault("flatten", 0)
        self.opts.setdefault("extra", 0)
        super().setup(layers)

    def row(self):
        return (f"reorg3d            /{self.stride:2d}  {dims(self.in_shape)}   ->  "
                f"{dims(self.out_shape)}")
