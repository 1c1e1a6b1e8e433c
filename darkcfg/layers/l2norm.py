"""[l2norm] (P): per-pixel L2 normalisation across channels."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class L2norm(Layer):
    type = "l2norm"
    example = "[l2norm]\n"
    doc = "per-pixel L2 normalisation across channels"

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> same shape, each pixel's channel vector of unit length
        from ..kernels.normalize import l2norm, l2norm_train
        if not net.train:
            return l2norm(x)
        self._y, self._norms = l2norm_train(x)
        return self._y

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # the exact gradient (dy - y * <y, dy>) / |x| per pixel. P's CPU backward
        # (src/l2norm_layer.c: backward_l2norm_layer) passes dy through unchanged (its
        # normalisation gradient is commented out); darkcfg differentiates the forward
        # (README, "Deliberate differences from Darknet").
        if dy is None:
            return None
        from ..kernels.normalize import l2norm_backward
        return l2norm_backward(dy, self._y, self._norms)

    def row(self):
        return f"l2norm                                         {self.inputs:4d}"
