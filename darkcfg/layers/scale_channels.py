"""[scale_channels] (AH): scale a feature map by per-channel (or per-pixel) factors."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..activations import ACTIVATIONS
from ..options import Opt
from .base import Layer, dims, register

if TYPE_CHECKING:
    from ..network import Network


class Product(Layer):
    """The previous layer times an earlier (`from`) layer, broadcast, then an activation;
    shared by [scale_channels] and [sam]."""

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        # x (N, C, H, W), or broadcastable factors (N, C, 1, 1) / (N, 1, H, W), times the
        # `from` map (N, C, H, W), then the activation.
        from ..kernels.activations import activate, needs_input
        src = net.outputs[self.sources[0]]
        out = np.ascontiguousarray(src * x, dtype=np.float32)
        if net.train:
            self._pre = out.copy() if needs_input(self.activation) else None
            self._y, self._x, self._from = out, x, src
        return activate(out, self.activation)

    def backward(self, dy: np.ndarray | None, net: Network) -> np.ndarray | None:
        # Through the activation (in place: dy becomes Darknet's delta), then the product
        # rule: the `from` map gets g * previous; the previous layer gets g * from, summed
        # over the cells a broadcast factor scaled (AH's backward, exact).
        if dy is None:
            return None
        from ..kernels.activations import gradient
        g = gradient(dy, self._y, self._pre, self.activation)
        net.add_grad(self.sources[0], np.ascontiguousarray(g * self._x, dtype=np.float32))
        prod = g * self._from
        axes = tuple(i for i in (1, 2, 3) if self._x.shape[i] == 1 < prod.shape[i])
        if not axes:
            return prod
        return prod.astype(np.float64).sum(axis=axes, keepdims=True).astype(np.float32)

    def flops(self):
        return float(self.outputs)

    def receptive(self, rf):
        return max(self._rf_in(rf), rf[self.sources[0]])

    def row(self):
        return f"scale Layer: {self.sources[0]}  {dims(self.out_shape)}"


@register
class ScaleChannels(Product):
    type = "scale_channels"
    doc = "from-layer map x the previous layer's per-channel (scale_wh: per-pixel) factors"
    options = {
        "from": Opt("layers", None, "the feature map to scale", required=True),
        "scale_wh": Opt("int", 0, "previous layer is w x h x 1: scale per pixel", min=0),
        "activation": Opt("str", "linear", "activation", choices=ACTIVATIONS),
    }

    def setup(self, layers):
        self.sources = [self.resolve("from", self.opts["from"][0], layers)]
        self.activation = self.opts["activation"]
        self.scale_wh = bool(self.opts["scale_wh"])
        fc, fh, fw = layers[self.sources[0]].out_shape
        c, h, w = self.in_shape
        want = (1, fh, fw) if self.scale_wh else (fc, 1, 1)
        if (c, h, w) != want:
            raise self.error(f"the previous layer is {w} x {h} x {c} (w x h x c) but scaling "
                             f"layer {self.sources[0]} ({fw} x {fh} x {fc}) needs "
                             f"{want[2]} x {want[1]} x {want[0]}", "from")
        self.out_shape = (fc, fh, fw)
