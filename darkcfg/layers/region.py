"""[region]: YOLOv2 detection head (logistic x, y, objectness; softmax over classes)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from ..network import Network


@register
class Region(Layer):
    type = "region"
    doc = "YOLOv2 head: anchors in grid cells, softmax over classes"
    options = {
        "classes": Opt("int", 20, "number of classes", min=0),
        "coords": Opt("int", 4, "box coordinates", min=1),
        "num": Opt("int", 1, "anchors", min=1),
        "anchors": Opt("floats", None, "anchor w,h pairs in grid cells"),
        "softmax": Opt("int", 0, "softmax over the classes", min=0),
        "thresh": Opt("float", 0.5, "no objectness loss above this IoU"),
        "bias_match": Opt("int", 0, "pick the truth's anchor by shape", min=0),
        "rescore": Opt("int", 0, "objectness target is the IoU", min=0),
        "object_scale": Opt("float", 1.0, "objectness loss weight"),
        "noobject_scale": Opt("float", 1.0, "no-object loss weight"),
        "class_scale": Opt("float", 1.0, "class loss weight"),
        "coord_scale": Opt("float", 1.0, "box loss weight"),
        "tree": Opt("str", None, "softmax tree (YOLO9000; not computed)"),
        "map": Opt("str", None, "class map (YOLO9000; not computed)"),
    }
    quiet = frozenset({"jitter", "random", "absolute", "max", "log", "sqrt", "mask_scale",
                       "focal_loss"})

    def setup(self, layers):
        o = self.opts
        self.classes, self.coords, self.num = o["classes"], o["coords"], o["num"]
        anchors = o["anchors"] or []
        if o["anchors"] is not None and len(anchors) < 2 * self.num:
            raise self.error(f"num={self.num} anchors need {2 * self.num} numbers in "
                             f"'anchors'; got {len(anchors)}", "anchors")
        self.anchors = anchors
        c = self.in_shape[0]
        want = self.num * (self.coords + 1 + self.classes)
        if c != want:
            raise self.error(
                f"the previous layer has {c} channels but this head needs {self.num} anchors "
                f"x ({self.coords} coords + 1 + {self.classes} classes) = {want}: set "
                f"filters={want} in the [convolutional] before it", "classes")
        self.truths = 30 * 5

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        # x (N, num*(coords+1+classes), H, W) -> same shape; per anchor the entries are
        # x, y, the other coords, objectness (entry `coords`), then the classes. Logistic
        # on x, y and objectness; the classes get a softmax across them at every cell
        # (stride H*W) when softmax=1, else a logistic (case `real_yolov2_tiny`).
        from ..kernels.activations import activate
        from ..kernels.softmax import softmax_
        n, _, h, w = x.shape
        k = self.coords + 1 + self.classes
        out = x.reshape(n, self.num, k, h * w).copy()
        for b in range(n):
            for a in range(self.num):
                activate(out[b, a, 0:2], "logistic")
                activate(out[b, a, self.coords:self.coords + 1], "logistic")
                if not self.opts["softmax"] and self.classes:
                    activate(out[b, a, self.coords + 1:], "logistic")
        if self.opts["softmax"] and self.classes:
            softmax_(out.reshape(n * self.num, k, h * w), self.coords + 1, k)
        return out.reshape(x.shape)

    def row(self):
        return "detection"

    def unsupported(self):
        if self.opts["tree"] is not None or self.opts["map"] is not None:
            return "'tree'/'map' (YOLO9000 hierarchy) is not computed by darkcfg"
        return None
