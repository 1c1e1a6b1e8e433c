"""[batchnorm] (P, A): standalone per-channel batch normalisation."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Layer, register

if TYPE_CHECKING:
    from ..network import Network


@register
class Batchnorm(Layer):
    type = "batchnorm"
    doc = "standalone batch normalisation (weights layout depends on the dialect)"

    def setup(self, layers):
        self.image_input()

    def param_shapes(self):
        c = self.in_shape[0]
        triplet = [("scales", (c,)), ("rolling_mean", (c,)), ("rolling_variance", (c,))]
        # P stores 3 arrays, A stores biases first (weights-format.md §3.4, DECISIONS §2)
        return triplet if self.net.dialect == "pjreddie" else [("biases", (c,)), *triplet]

    def flops(self):
        return 2.0 * self.outputs

    def row(self):
        c, h, w = self.in_shape
        return f"Batch Normalization Layer: {w} x {h} x {c} image"

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        # x (N, C, H, W) -> same shape (own buffer, as [activation]). P has no biases in
        # the file and adds zeros (reference case `batchnorm_crop`); A reads biases first.
        from ..kernels import bn, conv
        p = self.params
        self._out = out = conv.reuse(getattr(self, "_out", None), x.shape)
        np.copyto(out, x)
        return bn.bn_inference(out, p["scales"], p["rolling_mean"], p["rolling_variance"],
                               p.get("biases"), self.net.dialect)
