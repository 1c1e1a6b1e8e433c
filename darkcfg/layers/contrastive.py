"""[contrastive] (AH): contrastive embedding loss (summary only)."""
from __future__ import annotations

from ..options import Opt
from .base import Layer, register


@register
class Contrastive(Layer):
    type = "contrastive"
    runnable = False
    options = {
        "classes": Opt("int", 1000, "classes", min=1),
        "yolo_layer": Opt("layers", None, "the [yolo] layer whose boxes are embedded"),
        "temperature": Opt("float", 1.0, "temperature"),
    }
    quiet = frozenset({"cls_normalizer", "max_delta", "contrastive_neg_max"})

    def setup(self, layers):
        if self.opts["yolo_layer"] is not None:
            self.sources = [self.resolve("yolo_layer", self.opts["yolo_layer"][0], layers)]

    def row(self):
        return "contrastive"
