"""[deconvolutional] / [deconv] (P): transposed convolution."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from ._bn_activation import ACT, BNActivation
from .base import Layer, dims, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Deconvolutional(BNActivation, Layer):
    type = "deconvolutional"
    example = ("[deconvolutional]\nfilters=2\nsize=3\nstride=2\npad=1\n"
               "batch_normalize=1\nactivation=logistic\n")
    aliases = ("deconv",)
    doc = "transposed convolution (P)"
    options = {
        "filters": Opt("int", 1, "output channels", min=1),
        "size": Opt("int", 1, "kernel size", min=1),
        "stride": Opt("int", 1, "stride", min=1),
        "pad": Opt("int", 0, "1: padding = size/2", min=0),
        "padding": Opt("int", 0, "explicit padding", min=0),
        "activation": ACT,
        "batch_normalize": Opt("int", 0, "batch normalisation", min=0),
    }

    def setup(self, layers):
        o = self.opts
        self.image_input()
        _, h, w = self.in_shape
        self.n, self.size, self.stride = o["filters"], o["size"], o["stride"]
        self.pad = self.size // 2 if o["pad"] else o["padding"]
        self.batch_normalize = bool(o["batch_normalize"])
        self.activation = o["activation"]
        self.out_shape = (self.n, (h - 1) * self.stride + self.size - 2 * self.pad,
                          (w - 1) * self.stride + self.size - 2 * self.pad)

    def param_shapes(self):
        n, c = self.n, self.in_shape[0]
        bn = [("scales", (n,)), ("rolling_mean", (n,)), ("rolling_variance", (n,))]
        return [("biases", (n,)), *(bn if self.batch_normalize else []),
                ("weights", (c, n, self.size, self.size))]

    def flops(self):
        c, h, w = self.in_shape
        return 2.0 * self.n * c * self.size * self.size * h * w

    def receptive(self, rf):
        r, j = self._rf_in(rf)
        j = j / self.stride
        return r + (self.size - 1) * j, j

    def row(self):
        return (f"deconv{self.n:5d} {self.size:2d} x{self.size:2d} /{self.stride:2d}  "
                f"{dims(self.in_shape)}   ->  {dims(self.out_shape)}")

    def init_params(self, rng: np.random.Generator) -> None:
        """P's src/deconvolutional_layer.c: make_deconvolutional_layer: weights 0.02 N(0,1)
        times out_w*out_h/(w*h); biases 0; BN scales 1, rolling statistics 0."""
        super().init_params(rng)
        _, h, w = self.in_shape
        _, oh, ow = self.out_shape
        wt = self.params["weights"]
        wt[...] = 0.02 * rng.standard_normal(wt.shape)
        wt *= np.float32(ow * oh / (w * h))

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, c, h, w) -> (N, n, OH, OW): Darknet P's W^T x + col2im (reference case
        # `deconv`), then BN or bias, then activation.
        from ..kernels import conv
        out, self._work = conv.deconv2d(x, self.params["weights"], s=self.stride,
                                        pad=self.pad, out=getattr(self, "_out", None),
                                        work=getattr(self, "_work", None))
        self._out = out
        self._x = x if net.train else None
        return self.finish_forward(out, net)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # dy (N, n, OH, OW) -> dx (N, c, h, w): dcols = im2col(dZ), dW += x dcols^T,
        # dx = W dcols (P backward_deconvolutional_layer)
        if dy is None:
            return None
        from ..kernels import conv
        dz = self.product_grad(dy)
        dx, self._work = conv.deconv2d_backward(
            self._x, self.params["weights"], dz, self.grads["weights"], s=self.stride,
            pad=self.pad, need_dx=self.wants_dx(), dx=getattr(self, "_dx", None),
            work=self._work)
        if dx is not None:
            self._dx = dx
        return dx
