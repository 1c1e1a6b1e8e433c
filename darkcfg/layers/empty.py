"""[empty] / [silence] (AH): identity."""
from __future__ import annotations

from .base import Layer, register


@register
class Empty(Layer):
    type = "empty"
    doc = "identity"

    def row(self):
        return "empty"
