"""[l2norm] (P): per-pixel L2 normalisation across channels."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Layer, register

if TYPE_CHECKING:
    from ..network import Network


@register
class L2norm(Layer):
    type = "l2norm"
    doc = "per-pixel L2 normalisation across channels"

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        # x (N, C, H, W) -> same shape, each pixel's channel vector of unit length
        from ..kernels.misc import l2norm
        return l2norm(x)

    def row(self):
        return f"l2norm                                         {self.inputs:4d}"
