"""[detection]: YOLOv1's detection head (summary only: shape and truths)."""
from __future__ import annotations

from ..options import Opt
from .base import Layer, register


@register
class Detection(Layer):
    type = "detection"
    runnable = False
    options = {
        "classes": Opt("int", 1, "classes", min=1),
        "coords": Opt("int", 1, "coords", min=1),
        "num": Opt("int", 1, "boxes per cell", min=1),
        "side": Opt("int", 7, "grid side", min=1),
        "softmax": Opt("int", 0, "softmax", min=0),
        "sqrt": Opt("int", 0, "sqrt of w,h", min=0),
        "rescore": Opt("int", 0, "rescore", min=0),
        "forced": Opt("int", 0, "forced", min=0),
    }
    quiet = frozenset({"jitter", "random", "object_scale", "noobject_scale", "class_scale",
                       "coord_scale", "reorg", "max_boxes"})

    def setup(self, layers):
        o = self.opts
        want = o["side"] ** 2 * ((1 + o["coords"]) * o["num"] + o["classes"])
        if self.inputs != want:
            raise self.error(f"the previous layer gives {self.inputs} values but side={o['side']}"
                             f", num={o['num']}, coords={o['coords']}, classes={o['classes']}"
                             f" need {want}", "side")
        self.truths = o["side"] ** 2 * (1 + o["coords"] + o["classes"])

    def row(self):
        return "Detection Layer"
