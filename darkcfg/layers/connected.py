"""[connected] / [conn]: fully connected layer over the flattened C,H,W input."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from .base import Layer, register
from .convolutional import ACT

if TYPE_CHECKING:
    from ..network import Network


@register
class Connected(Layer):
    type = "connected"
    doc = "fully connected layer (input flattened in C,H,W order)"
    options = {
        "output": Opt("int", 1, "output units", min=1),
        "activation": ACT,
        "batch_normalize": Opt("int", 0, "batch normalisation over the outputs", min=0),
    }

    def setup(self, layers):
        self.n = self.opts["output"]
        self.activation = self.opts["activation"]
        self.batch_normalize = bool(self.opts["batch_normalize"])
        self.out_shape = (self.n, 1, 1)

    def param_shapes(self):
        n = self.n
        # BN triplet after the weights for connected (weights-format.md §3.3)
        bn = [("scales", (n,)), ("rolling_mean", (n,)), ("rolling_variance", (n,))]
        return [("biases", (n,)), ("weights", (n, self.inputs)),
                *(bn if self.batch_normalize else [])]

    def flops(self):
        return 2.0 * self.n * self.inputs

    def receptive(self, rf):
        return float("inf"), self._rf_in(rf)[1]

    def row(self):
        return f"connected                            {self.inputs:4d}  ->  {self.n:4d}"

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        # x (N, C, H, W) flattened in C,H,W order -> (N, n, 1, 1) = x W^T, then BN over
        # the n outputs (reference case `connected`) or bias, then activation.
        from ..kernels import activations, bn, conv
        p = self.params
        self._out = out = conv.dense(x, p["weights"], out=getattr(self, "_out", None))
        if self.batch_normalize:
            bn.bn_inference(out, p["scales"], p["rolling_mean"], p["rolling_variance"],
                            p["biases"], self.net.dialect)
        else:
            bn.add_bias(out, p["biases"])
        return activations.activate(out, self.activation)
