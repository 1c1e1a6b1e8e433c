"""[region]: YOLOv2 detection head (logistic x, y, objectness; softmax over classes)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..geometry import F32, F64, Boxes, anchor_pairs, gate
from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


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
        "jitter": Opt("float", 0.2, "training crop: each side moves by up to this fraction",
                      min=0),
        "tree": Opt("str", None, "softmax tree (YOLO9000; not computed)"),
        "map": Opt("str", None, "class map (YOLO9000; not computed)"),
    }
    quiet = frozenset({"random", "absolute", "max", "log", "sqrt", "mask_scale",
                       "focal_loss"})
    is_head = True

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

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
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
        self.cost = self._grad = self.stats = None
        self._out = out
        if net.train and net.truth is not None:
            self._loss(out.reshape(n, self.num, k, h, w), net)
        return out.reshape(x.shape)

    # --- detection ----------------------------------------------------------------------
    def decode(self, out: np.ndarray, net_w: int, net_h: int, thresh: float) -> Boxes:
        """Darknet's get_region_detections before correct_region_boxes
        (src/region_layer.c): all W*H*num entries, anchor-major (n*W*H + cell), boxes
        relative to the network input (anchors are in grid cells, so net_w and net_h are
        not needed). Objectness (and so every prob) is 0 unless objectness > thresh.

        out: this head's activated output for one image, (num*(coords+1+classes), H, W)
        or flat.
        """
        _, lh, lw = self.out_shape
        anchors = anchor_pairs(self.anchors, self.num)
        n, k, hw = self.num, self.coords + 1 + self.classes, lh * lw
        e = np.asarray(out, dtype=F32).reshape(n, k, hw).transpose(0, 2, 1).reshape(n * hw, k)
        cell = np.tile(np.arange(hw), n)
        anc = np.repeat(np.arange(n), hw)
        col = (cell % lw).astype(F32)
        row = (cell // lw).astype(F32)
        xywh = np.empty((len(e), 4), F32)
        xywh[:, 0] = (col + e[:, 0]) / F32(lw)
        xywh[:, 1] = (row + e[:, 1]) / F32(lh)
        xywh[:, 2] = np.exp(e[:, 2].astype(F64)) * anchors[anc, 0].astype(F64) / lw
        xywh[:, 3] = np.exp(e[:, 3].astype(F64)) * anchors[anc, 1].astype(F64) / lh
        th = F32(thresh)
        scale = e[:, self.coords]
        obj = np.where(scale > th, scale, F32(0)).astype(F32)
        probs = gate(scale[:, None] * e[:, self.coords + 1:], th)
        probs[obj == 0] = 0
        return Boxes(xywh, obj, probs, np.arange(len(e)))

    # --- training -----------------------------------------------------------------------
    def _loss(self, out: np.ndarray, net: RunState) -> None:
        # out (N, num, coords+1+classes, H, W). Darknet's delta from the box truth
        # (src/region_layer.c: forward_region_layer, pinned by the reference case
        # train_region, tests/test_reference_detection_train.py), as a gradient
        # w.r.t. this layer's OUTPUT: x, y, objectness are squared errors on the logistic
        # values, w, h on the raw tw, th; the classes' delta class_scale*(onehot - p) is
        # (minus) the logit gradient of the softmax cross-entropy (of the logistic
        # cross-entropy with softmax=0). See kernels/yolo_loss.py.
        from ..kernels.yolo_loss import region_targets
        from ._detection_head import detection_stats, detection_truth
        o = self.opts
        if self.coords != 4:
            raise self.error(f"training with coords={self.coords} (mask coefficients) is "
                             "not implemented by darkcfg; only coords=4 is", "coords")
        truth = detection_truth(self, net, out.shape[0], 30)
        anchors = (np.array(self.anchors[:2 * self.num], np.float64).reshape(-1, 2)
                   if self.anchors else np.full((self.num, 2), 0.5))
        target, weight, stats = region_targets(
            out, truth, 30, anchors, self.coords, o["thresh"], net.seen < 12800,
            o["bias_match"], o["rescore"], not o["softmax"], o["coord_scale"],
            o["object_scale"], o["noobject_scale"], o["class_scale"])
        delta = weight * (target - out)
        self.cost = float(np.sum(np.square(delta, dtype=np.float64)))
        n, a, k, h, w = out.shape
        self._grad = np.negative(delta).reshape(n, a * k, h, w)
        self.stats = detection_stats(stats, out.shape, self.num)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # Darknet's GPU path (src/region_layer.c: backward_region_layer_gpu; the CPU
        # backward_region_layer is empty; README, "Deliberate differences from Darknet"): the
        # delta times y(1 - y) for x, y and objectness, where the forward applied a
        # logistic; w, h and the classes pass unchanged.
        from ._loss import loss_gradient
        g = loss_gradient(self, dy)
        if g is None:
            return None
        if g is self._grad:
            g = g.copy()
        n, _, h, w = g.shape
        k = self.coords + 1 + self.classes
        g5 = g.reshape(n, self.num, k, h * w)
        y = self._out.reshape(n, self.num, k, h * w)
        for e in (0, 1, self.coords):
            g5[:, :, e] *= y[:, :, e] * (np.float32(1) - y[:, :, e])
        return g

    def row(self):
        return "detection"

    def unsupported(self):
        if self.opts["tree"] is not None or self.opts["map"] is not None:
            return "'tree'/'map' (YOLO9000 hierarchy) is not computed by darkcfg"
        return None
