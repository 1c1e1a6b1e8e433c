"""[sam] (AH): element-wise product of the previous layer and an earlier one."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..activations import ACTIVATIONS
from ..options import Opt
from .base import Layer, dims, register

if TYPE_CHECKING:
    from ..network import Network


@register
class Sam(Layer):
    type = "sam"
    doc = "spatial attention: previous * from, element-wise"
    options = {
        "from": Opt("layers", None, "the layer to multiply with", required=True),
        "activation": Opt("str", "linear", "activation", choices=ACTIVATIONS),
    }

    def setup(self, layers):
        self.sources = [self.resolve("from", self.opts["from"][0], layers)]
        self.activation = self.opts["activation"]
        shape = layers[self.sources[0]].out_shape
        if shape != self.in_shape:
            fc, fh, fw = shape
            c, h, w = self.in_shape
            raise self.error(f"layer {self.sources[0]} is {fw} x {fh} x {fc} but the previous "
                             f"layer is {w} x {h} x {c} (w x h x c); [sam] needs equal shapes",
                             "from")

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        # x, from (N, C, H, W) -> their element-wise product, then the activation
        from ..kernels.activations import activate, needs_input
        src = net.outputs[self.sources[0]]
        out = np.ascontiguousarray(src * x, dtype=np.float32)
        if net.train:
            self._pre = out.copy() if needs_input(self.activation) else None
            self._y, self._x, self._from = out, x, src
        return activate(out, self.activation)

    def backward(self, dy: np.ndarray | None, net: Network) -> np.ndarray | None:
        # through the activation (in place: dy becomes Darknet's delta), then the product
        # rule: previous gets g * from, `from` gets g * previous
        if dy is None:
            return None
        from ..kernels.activations import gradient
        g = gradient(dy, self._y, self._pre, self.activation)
        net.add_grad(self.sources[0], g * self._x)
        return g * self._from

    def flops(self):
        return float(self.outputs)

    def receptive(self, rf):
        return max(self._rf_in(rf), rf[self.sources[0]])

    def row(self):
        return f"scale Layer: {self.sources[0]}  {dims(self.out_shape)}"
