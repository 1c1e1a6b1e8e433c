"""[lstm]: long short-term memory (summary only: shape and parameters)."""
from __future__ import annotations

from ._shape_only import Recurrent
from .base import register


@register
class Lstm(Recurrent):
    type = "lstm"
    label = "LSTM"

    def subs(self):
        n = self.opts["output"]
        return [(self.inputs, n)] * 4 + [(n, n)] * 4
