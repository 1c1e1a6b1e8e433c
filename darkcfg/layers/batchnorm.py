"""[batchnorm] (P, A): standalone per-channel batch normalisation."""
from __future__ import annotations

from .base import Layer, register


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
