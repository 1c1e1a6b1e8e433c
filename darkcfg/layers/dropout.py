"""[dropout]: inverted dropout in training, identity at inference."""
from __future__ import annotations

from ..options import Opt
from .base import Layer, register


@register
class Dropout(Layer):
    type = "dropout"
    doc = "inverted dropout (identity at inference)"
    options = {"probability": Opt("float", 0.5, "drop probability p (P default 0.5)", min=0)}
    quiet = frozenset({"dropblock", "dropblock_size_rel", "dropblock_size_abs"})

    def setup(self, layers):
        self.probability = self.opts["probability"]
        if self.probability >= 1:
            raise self.error(f"'probability' must be below 1, got {self.probability}",
                             "probability")

    def row(self):
        return (f"dropout       p = {self.probability:.2f}               {self.inputs:4d}"
                f"  ->  {self.inputs:4d}")
