"""[gru]: gated recurrent unit (summary only: shape and parameters)."""
from __future__ import annotations

from ._shape_only import Recurrent
from .base import register


@register
class Gru(Recurrent):
    type = "gru"
    label = "GRU"

    def subs(self):
        n = self.opts["output"]
        return [(self.inputs, n), (n, n)] * 3
