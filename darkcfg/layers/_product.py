"""The product base shared by [scale_channels] and [sam] (AH's src/scale_channels_layer.c
and src/sam_layer.c): the previous layer times an earlier one, then an activation."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Layer, dims

if TYPE_CHECKING:
    from .base import RunState


def _f32c(a: np.ndarray) -> bool:
    return a.dtype == np.float32 and a.flags.c_contiguous


class Product(Layer):
    """The previous layer times an earlier (`from`) layer, broadcast, then an activation;
    shared by [scale_channels] and [sam]."""

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W), or broadcastable factors (N, C, 1, 1) / (N, 1, H, W), times the
        # `from` map (N, C, H, W), then the activation.
        from ..kernels.activations import activate, needs_input
        from ..kernels.shortcut import scale_planes
        src = net.outputs[self.sources[0]]
        out = getattr(self, "_out", None)
        if out is None or out.shape != src.shape:
            out = self._out = np.empty(src.shape, np.float32)
        per_channel = x.shape == (*src.shape[:2], 1, 1)
        if per_channel and _f32c(x) and _f32c(src):
            scale_planes(src, x, out)
        else:                               # into the layer's buffer: no new pages per call
            np.multiply(src, x, out=out)
        if net.train:
            self._pre = out.copy() if needs_input(self.activation) else None
            self._y, self._x, self._from = out, x, src
        return activate(out, self.activation)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
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
