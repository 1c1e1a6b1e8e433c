"""[l2norm] (P): per-pixel L2 normalisation across channels."""
from __future__ import annotations

from .base import Layer, register


@register
class L2norm(Layer):
    type = "l2norm"
    doc = "per-pixel L2 normalisation across channels"

    def row(self):
        return f"l2norm                                         {self.inputs:4d}"
