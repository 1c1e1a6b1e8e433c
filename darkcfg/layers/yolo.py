"""[yolo]: YOLOv3/v4 detection head (logistic on x, y, objectness and classes)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..geometry import F32, F64, Boxes, anchor_pairs, gate
from ..options import Opt
from ._detection_head import detection_stats, detection_truth
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState

# Detector-training and tracking knobs darkcfg accepts without modelling (they change
# nothing darkcfg computes; a key that would change the math and is not implemented is an
# error instead: `map` is refused when training starts, see check_trainable).
YOLO_QUIET = frozenset({
    "random", "resize", "track_history_size", "track_ciou_norm", "sim_thresh",
    "dets_for_track", "dets_for_show", "embedding_layer", "map", "uc_normalizer",
    "yolo_point", "stretch_sway", "rotate",
})
# AB's loss options (src/parser.c: parse_yolo); under dialect=pjreddie training with any
# of them written is refused (pjreddie Darknet has none of them)
AB_LOSS_KEYS = ("iou_loss", "iou_thresh", "iou_thresh_kind", "max_delta", "new_coords",
                "focal_loss", "label_smooth_eps", "objectness_smooth", "counters_per_class",
                "show_details")


@register
class Yolo(Layer):
    type = "yolo"
    doc = "YOLO head: decodes boxes for `mask` anchors; its loss trains them"
    options = {
        "classes": Opt("int", 20, "number of classes", min=1),
        "num": Opt("int", 1, "total number of anchors", min=1),
        "mask": Opt("ints", None, "anchors used by this head (default: all)"),
        "anchors": Opt("floats", None, "anchor w,h pairs in network-input pixels"),
        "ignore_thresh": Opt("float", 0.5, "no objectness loss above this IoU"),
        "truth_thresh": Opt("float", 1.0, "IoU making a prediction a positive"),
        "max": Opt("int", 90, "max truth boxes per image (AB: 200)", min=1),
        "jitter": Opt("float", 0.2, "training crop: each side moves by up to this fraction",
                      min=0),
        "scale_x_y": Opt("float", 1.0, "x,y scaling (AH)"),
        "new_coords": Opt("int", 0, "scaled-YOLOv4 box coding (AH)", min=0),
        "iou_loss": Opt("str", "mse", "box loss (AH)",
                        choices=("mse", "iou", "giou", "diou", "ciou")),
        "iou_normalizer": Opt("float", 0.75, "box loss weight (AH)"),
        "obj_normalizer": Opt("float", 1.0, "objectness loss weight (AH)"),
        "cls_normalizer": Opt("float", 1.0, "class loss weight (AH)"),
        "delta_normalizer": Opt("float", 1.0, "delta weight (AH)"),
        "iou_thresh": Opt("float", 1.0, "extra anchors above this IoU (AH)"),
        "iou_thresh_kind": Opt("str", "iou", "shape IoU kind for iou_thresh (AH)",
                               choices=("iou", "giou", "diou", "ciou")),
        "max_delta": Opt("float", float("inf"), "clip of each IoU-loss box delta (AH; "
                         "default none, AH's FLT_MAX)", min=0),
        "focal_loss": Opt("int", 0, "focal loss on the classes (AH)", min=0),
        "label_smooth_eps": Opt("float", 0.0, "class label smoothing (AH)", min=0),
        "objectness_smooth": Opt("int", 0, "objectness targets from the IoU (AH)", min=0),
        "counters_per_class": Opt("ints", None, "per-class counts: class weights (AH)"),
        "show_details": Opt("int", 1, "AH's cost: 1 IoU-loss mean + the rest, 0 sum of "
                            "squares", min=0),
        "nms_kind": Opt("str", "default", "NMS kind (AH)",
                        choices=("default", "greedynms", "diounms", "cornersnms")),
        "beta_nms": Opt("float", 0.6, "DIoU-NMS beta (AH)"),
    }
    quiet = YOLO_QUIET
    is_head = True
    per_anchor = 5          # x, y, w, h, objectness

    def setup(self, layers):
        o = self.opts
        self.classes, self.total = o["classes"], o["num"]
        self.mask = o["mask"] if o["mask"] is not None else list(range(self.total))
        anchors = o["anchors"] or []
        if o["anchors"] is not None and len(anchors) % 2:
            raise self.error(f"'anchors' needs w,h pairs; got {len(anchors)} numbers",
                             "anchors")
        for m in self.mask:
            if m < 0:
                raise self.error(f"mask index {m} is negative", "mask")
        if max(self.mask) >= self.total:
            have = len(anchors) // 2
            self.lenient(f"mask index {max(self.mask)} is outside the {self.total} anchors "
                         f"(num={self.total})", "mask",
                         f"using num={have}, the number of anchors listed")
            self.total = have
            if max(self.mask) >= self.total:
                raise self.error(f"mask index {max(self.mask)} is outside the {have} "
                                 "anchors listed", "mask")
        if o["anchors"] is not None and len(anchors) < 2 * self.total:
            raise self.error(f"num={self.total} anchors need {2 * self.total} numbers in "
                             f"'anchors'; got {len(anchors)}", "anchors")
        self.anchors = anchors
        c = self.in_shape[0]
        want = len(self.mask) * (self.classes + self.per_anchor)
        if c != want:
            raise self.error(
                f"the previous layer has {c} channels but this head needs "
                f"{len(self.mask)} anchors x ({self.classes} classes + {self.per_anchor}) = "
                f"{want}: set filters={want} in the [convolutional] before it", "classes")
        # AB reads 6 floats per truth box (x y w h class track_id; make_yolo_layer's
        # truth_size) and `max` defaults to 200 there (parse_yolo)
        ah = self.net.dialect == "alexeyab"
        self.truth_size = 6 if ah else 5
        self.max_boxes = o["max"] if ("max" in self.section.entries or not ah) else 200
        self.truths = self.max_boxes * self.truth_size

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, A*(5+classes), H, W) -> same shape; per anchor a, channel
        # a*(5+classes) + {0: x, 1: y, 2: w, 3: h, 4: objectness, 5..: classes}. Logistic
        # on x, y, objectness and classes; w, h stay raw (case `real_yolov3_tiny`). AH:
        # new_coords=1 applies none (the conv before is already logistic); scale_x_y
        # maps x, y to x*s - (s-1)/2.
        from ..kernels.activations import activate
        n, c, h, w = x.shape
        a = len(self.mask)
        out = x.reshape(n, a, c // a, h * w).copy()
        if not self.opts["new_coords"]:
            for b in range(n):
                for k in range(a):
                    activate(out[b, k, 0:2], "logistic")
                    activate(out[b, k, 4:], "logistic")
        s = self.opts["scale_x_y"]
        if s != 1.0:
            out[:, :, 0:2] = out[:, :, 0:2] * np.float32(s) + np.float32(-0.5 * (s - 1.0))
        self.cost = self._grad = self.stats = None
        if net.train and net.truth is not None:
            self._loss(out.reshape(n, a, c // a, h, w), net)
        return out.reshape(x.shape)

    # --- detection ----------------------------------------------------------------------
    def decode(self, out: np.ndarray, net_w: int, net_h: int, thresh: float) -> Boxes:
        """Darknet's get_yolo_detections before correct_yolo_boxes (src/yolo_layer.c):
        boxes relative to the network input.

        out: this head's activated output for one image, (A*(5+classes), H, W) or flat
        (scale_x_y and the logistic are already applied by `forward`, as AH does in
        forward_yolo_layer). Only entries with objectness > thresh are listed, cell-major
        (cell = row*W + col), then by anchor. The float32/float64 mix is Darknet's.
        """
        _, lh, lw = self.out_shape
        anchors = anchor_pairs(self.anchors, self.total)[self.mask]
        a, k, hw = len(anchors), 5 + self.classes, lh * lw
        t = np.asarray(out, dtype=F32).reshape(a, k, hw).transpose(2, 0, 1)   # (HW, A, K)
        th = F32(thresh)
        cell, anc = np.nonzero(t[:, :, 4] > th)          # row-major: Darknet's listing order
        e = t[cell, anc]                                  # (N, K)
        col = (cell % lw).astype(F32)
        row = (cell // lw).astype(F32)
        xywh = np.empty((len(e), 4), F32)
        xywh[:, 0] = (col + e[:, 0]) / F32(lw)            # float32: (i + x) / lw
        xywh[:, 1] = (row + e[:, 1]) / F32(lh)
        aw, ah = anchors[anc, 0], anchors[anc, 1]
        if self.opts["new_coords"]:                       # AH: x*x*4*bias/w, all float32
            xywh[:, 2] = e[:, 2] * e[:, 2] * F32(4) * aw / F32(net_w)
            xywh[:, 3] = e[:, 3] * e[:, 3] * F32(4) * ah / F32(net_h)
        else:                                             # exp() and the division in double
            xywh[:, 2] = np.exp(e[:, 2].astype(F64)) * aw.astype(F64) / net_w
            xywh[:, 3] = np.exp(e[:, 3].astype(F64)) * ah.astype(F64) / net_h
        obj = e[:, 4].copy()
        probs = gate(obj[:, None] * e[:, 5:], th)
        return Boxes(xywh, obj, probs, np.arange(len(e)))

    # --- training -----------------------------------------------------------------------
    def _loss(self, out: np.ndarray, net: RunState) -> None:
        # out (N, A, 5 + classes, H, W): this head's output, per anchor of `mask`.
        # Darknet's delta from the box truth (src/yolo_layer.c: forward_yolo_layer, pinned
        # by the reference case train_yolo, tests/test_reference_detection_train.py): see
        # kernels/yolo_loss.py. Our gradient is minus the delta, and
        # it is w.r.t. the layer's INPUT as it stands: for x, y, objectness and classes
        # the logit gradient of a cross-entropy, for w, h an L2 loss on the raw tw, th.
        # With scale_x_y the targets are compared with the scaled x, y (AH).
        from ..kernels.yolo_loss import yolo_targets
        self.check_trainable()
        o = self.opts
        _, net_h, net_w = self.net.input_shape
        truth = detection_truth(self, net, out.shape[0], self.max_boxes)
        if self.net.dialect == "alexeyab":
            self._loss_ab(out, truth, net_w, net_h)
            return
        target, weight, stats = yolo_targets(
            out, truth, o["max"], self.anchor_array(), np.array(self.mask), net_w, net_h,
            o["ignore_thresh"], o["truth_thresh"], *self.normalizers())
        delta = weight * (target - out)
        self.cost = float(np.sum(np.square(delta, dtype=np.float64)))
        n, a, k, h, w = out.shape
        self._grad = np.negative(delta).reshape(n, a * k, h, w)
        self.stats = detection_stats(stats, out.shape, len(self.mask))

    def _loss_ab(self, out: np.ndarray, truth: np.ndarray, net_w: int, net_h: int) -> None:
        # AlexeyAB's loss (src/yolo_layer.c: process_batch; kernels/yolo_loss.py:
        # yolo_delta_ab), pinned by the reference case ab_train_yolo_ciou. Its box deltas
        # for iou/giou/diou/ciou are AB's dx_box_iou, not the gradient of a loss darkcfg
        # could write down (README, "AlexeyAB's [yolo] deltas"); the gradient passed
        # down is minus Darknet's delta, as for pjreddie.
        from ..kernels import yolo_loss as yl
        o = self.opts
        norm_iou, norm_obj, norm_cls = self.normalizers()
        delta, s = yl.yolo_delta_ab(
            out, truth, self.truth_size, self.max_boxes, self.anchor_array(),
            np.array(self.mask), net_w, net_h, ignore_thresh=o["ignore_thresh"],
            truth_thresh=o["truth_thresh"], iou_normalizer=norm_iou,
            obj_normalizer=norm_obj, cls_normalizer=norm_cls, iou_loss=o["iou_loss"],
            max_delta=o["max_delta"], iou_thresh=o["iou_thresh"],
            iou_thresh_kind=o["iou_thresh_kind"], new_coords=bool(o["new_coords"]),
            focal_loss=bool(o["focal_loss"]), label_smooth_eps=o["label_smooth_eps"],
            objectness_smooth=bool(o["objectness_smooth"]),
            classes_multipliers=self.classes_multipliers())
        n, a, k, h, w = out.shape
        squares = np.square(delta, dtype=np.float64)
        count = max(s[yl.S_COUNT], 1)
        if o["iou_loss"] == "mse" or not o["show_details"]:
            self.cost = float(squares.sum())
        else:
            # forward_yolo_layer with show_details: the IoU-loss mean (1 - GIoU for giou)
            # plus obj_normalizer * the squares of the non-box entries
            box_loss = s[yl.S_GIOU_LOSS if o["iou_loss"] == "giou" else yl.S_IOU_LOSS]
            rest = float(squares[:, :, 4:].sum())
            self.cost = norm_iou * box_loss / count * (s[yl.S_COUNT] > 0) + norm_obj * rest
        self._grad = np.negative(delta).reshape(n, a * k, h, w)
        self.stats = detection_stats(
            np.array([s[yl.S_IOU], s[yl.S_CLASS], s[yl.S_OBJ], s[yl.S_ANYOBJ], s[yl.S_R50],
                      s[yl.S_R75], s[yl.S_COUNT], s[yl.S_COUNT]]), out.shape, a)
        self.stats["total_bbox"] = int(s[yl.S_BBOX])
        self.stats["rewritten_bbox"] = int(s[yl.S_REWRITTEN])

    def classes_multipliers(self) -> np.ndarray | None:
        """AB's counters_per_class as class weights (src/parser.c: get_classes_multipliers):
        the largest count over each class's count (counts below 1 count as 1), at most
        max_delta; None when the key is absent."""
        counts = self.opts["counters_per_class"]
        if counts is None:
            return None
        if len(counts) != self.classes:
            raise self.error(f"counters_per_class has {len(counts)} values for classes="
                             f"{self.classes}: give one count per class",
                             "counters_per_class")
        c = np.maximum(np.array(counts, np.float64), 1.0)
        return np.minimum(c.max() / c, self.opts["max_delta"])

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # Darknet passes the delta down unchanged: no logistic derivative (it is already
        # the gradient w.r.t. the logits), plus anything that reached this layer.
        from ._loss import loss_gradient
        return loss_gradient(self, dy)

    def anchor_array(self) -> np.ndarray:
        """(num, 2) anchor w, h in network-input pixels; Darknet's 0.5 when none given."""
        if not self.anchors:
            return np.full((self.total, 2), 0.5)
        return np.array(self.anchors[:2 * self.total], np.float64).reshape(-1, 2)

    def normalizers(self) -> tuple[float, float, float]:
        """(box, objectness, class) factors on the deltas. pjreddie has none (1, 1, 1);
        AH's iou_/obj_/cls_normalizer apply when written in the cfg, and their defaults
        (0.75, 1, 1) under dialect=alexeyab."""
        o, written = self.opts, self.section.entries
        ah = self.net.dialect == "alexeyab"
        return tuple(o[k] if (k in written or ah) else 1.0
                     for k in ("iou_normalizer", "obj_normalizer", "cls_normalizer"))

    def check_trainable(self) -> None:
        """Options whose training math darkcfg does not implement: refused when training
        starts (inference with them is fine). Under dialect=alexeyab every AB loss option
        trains; under pjreddie they are refused (they are AB's)."""
        o, written = self.opts, self.section.entries
        if "map" in written:
            raise self.error("training with map= (AB's class-id remapping file) is not "
                             "implemented by darkcfg; remove it", "map")
        if o["delta_normalizer"] != 1:
            raise self.error("training with delta_normalizer != 1 (AB's GPU-only delta "
                             "factor) is not implemented by darkcfg; only 1 is",
                             "delta_normalizer")
        if self.net.dialect == "alexeyab":
            return
        why = None
        if o["iou_loss"] != "mse":
            why = f"iou_loss={o['iou_loss']} (AH's IoU-family box loss); only mse is"
        elif o["new_coords"]:
            why = "new_coords=1 (scaled-YOLOv4 box coding); only new_coords=0 is"
        elif o["iou_thresh"] < 1:
            why = "iou_thresh < 1 (AH's extra anchors per truth); only 1 is"
        else:
            for key in AB_LOSS_KEYS:
                entry = written.get(key)
                if entry is not None and key not in ("iou_loss", "new_coords", "iou_thresh"):
                    why = f"{key}={entry.value} (AH); leave it out:"
                    break
        if why:
            key = why.split("=")[0].split(" ")[0]
            raise self.error(f"training with {why} implemented by darkcfg for dialect="
                             "pjreddie (these are AlexeyAB's loss options: load the network "
                             "with dialect=alexeyab, --dialect alexeyab)", key)

    def row(self):
        return "yolo"

