"""[detection]: YOLOv1's detection head (Darknet's src/detection_layer.c).

The input (a linear [connected], side^2 * ((1 + coords) * num + classes) values) holds
three blocks, each cell-major (cell i = row * side + col):
  classes  side^2 * classes      at i*classes + c
  scales   side^2 * num          at i*num + n          (objectness, raw)
  boxes    side^2 * num * 4      at (i*num + n)*4 + {x, y, w, h}
The output is the input, with a softmax over each cell's classes when softmax=1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..geometry import F32, F64, Boxes, gate
from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Detection(Layer):
    type = "detection"
    doc = "YOLOv1 head: per-cell classes, num boxes with raw objectness; its loss trains them"
    options = {
        "classes": Opt("int", 1, "classes", min=1),
        "coords": Opt("int", 1, "box coordinates (only 4 runs)", min=1),
        "num": Opt("int", 1, "boxes per cell", min=1),
        "side": Opt("int", 7, "grid side", min=1),
        "softmax": Opt("int", 0, "softmax over each cell's classes", min=0),
        "sqrt": Opt("int", 0, "w, h are predicted as their square roots", min=0),
        "rescore": Opt("int", 0, "objectness target is the IoU", min=0),
        "forced": Opt("int", 0, "the responsible box by truth area (box 1 below 0.1)",
                      min=0),
        "random": Opt("int", 0, "a random responsible box for the first 64,000 images",
                      min=0),
        "object_scale": Opt("float", 1.0, "objectness loss weight"),
        "noobject_scale": Opt("float", 1.0, "no-object loss weight"),
        "class_scale": Opt("float", 1.0, "class loss weight"),
        "coord_scale": Opt("float", 1.0, "box loss weight"),
        "jitter": Opt("float", 0.2, "training crop: each side moves by up to this fraction",
                      min=0),
        "max": Opt("int", 90, "boxes read per training image", min=1),
    }
    quiet = frozenset({"reorg", "max_boxes"})
    is_head = True
    # Darknet's `yolo test` stretches the image to the network size (examples/yolo.c:
    # test_yolo, resize_image) and get_detection_detections applies no letterbox
    # correction: detection stretches unless asked to letterbox (detection/detect.py)
    stretches: ClassVar[bool] = True

    def setup(self, layers):
        o = self.opts
        self.classes, self.coords, self.num, self.side = (o["classes"], o["coords"], o["num"],
                                                          o["side"])
        want = o["side"] ** 2 * ((1 + o["coords"]) * o["num"] + o["classes"])
        if self.inputs != want:
            raise self.error(f"the previous layer gives {self.inputs} values but side={o['side']}"
                             f", num={o['num']}, coords={o['coords']}, classes={o['classes']}"
                             f" need {want}", "side")
        # Darknet's per-cell truth (src/data.c: fill_truth_region): is_obj, a one-hot of
        # the classes, x y within the cell, w h
        self.truths = o["side"] ** 2 * (1 + o["coords"] + o["classes"])
        self.max_boxes = o["max"]

    def row(self):
        return "Detection Layer"

    def unsupported(self):
        if self.coords != 4:
            return (f"[detection] with coords={self.coords}: Darknet's decoding reads 4 "
                    "values per box whatever coords says; only coords=4 runs")
        if self.opts["forced"] and self.num < 2:
            return ("[detection] forced=1 with num=1: Darknet then trains box 1 of a cell "
                    "that has only box 0 (outside the layer); set num >= 2 or forced=0")
        return None

    # --- forward ------------------------------------------------------------------------
    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, *in_shape) -> a copy, each cell's classes softmaxed when softmax=1
        # (src/detection_layer.c: forward_detection_layer)
        from ..kernels.softmax import softmax_
        n = len(x)
        out = np.array(x, dtype=np.float32, order="C")
        if self.opts["softmax"]:
            cells = self.side * self.side
            for b in range(n):
                block = out.reshape(n, -1)[b, :cells * self.classes]
                softmax_(block.reshape(cells, self.classes, 1))
        self._out = out
        self.cost = self._grad = self.stats = None
        if net.train and net.truth is not None:
            self._loss(out.reshape(n, -1), net)
        return out

    # --- detection ----------------------------------------------------------------------
    def split(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image's output -> classes (cells, classes), scales (cells, num), boxes
        (cells, num, 4), views of it."""
        cells, c, k = self.side * self.side, self.classes, self.num
        return (flat[:cells * c].reshape(cells, c),
                flat[cells * c:cells * (c + k)].reshape(cells, k),
                flat[cells * (c + k):].reshape(cells, k, 4))

    def decode(self, out: np.ndarray, net_w: int, net_h: int, thresh: float) -> Boxes:
        """Darknet's get_detection_detections (w = h = 1: boxes relative to the image):
        every side^2 * num entry, at i*num + n; x = (px + col)/side, w = pw^2 with sqrt=1
        (pow in double); objectness the raw scale, prob = scale * class, kept if > thresh.

        out: this head's output for one image, any shape holding its values."""
        cls, scale, box = self.split(np.asarray(out, dtype=F32).reshape(-1))
        side, k = self.side, self.num
        entries = len(scale) * k
        cell = np.arange(entries) // k
        col, row = (cell % side).astype(F32), (cell // side).astype(F32)
        b = box.reshape(entries, 4)
        xywh = np.empty((entries, 4), F32)
        xywh[:, 0] = (b[:, 0] + col) / F32(side)
        xywh[:, 1] = (b[:, 1] + row) / F32(side)
        power = 2 if self.opts["sqrt"] else 1
        xywh[:, 2:] = b[:, 2:].astype(F64) ** power
        s = scale.reshape(entries)
        probs = gate(s[:, None] * cls[cell], F32(thresh))
        return Boxes(xywh, s.copy(), probs, np.arange(entries))

    # --- training -----------------------------------------------------------------------
    def cell_truth(self, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Darknet's per-cell truth from box rows (N, M*5) `x y w h class` (zeros after the
        last box): fill_truth_region (src/data.c) after randomize_boxes, so a cell keeps
        a random one of its boxes; boxes with w or h < .005 are skipped."""
        n = boxes.shape[0]
        side, c = self.side, self.classes
        truth = np.zeros((n, side * side, 5 + c), np.float32)
        rows = boxes.reshape(n, -1, 5)
        for b in range(n):
            live = rows[b][rows[b, :, 0] != 0]
            for x, y, w, h, cls in live[rng.permutation(len(live))]:
                if w < .005 or h < .005:
                    continue
                # x = 1 would fall past the last column (Darknet writes into the next row)
                col, row = min(int(x * side), side - 1), min(int(y * side), side - 1)
                cell = truth[b, row * side + col]
                if cell[0]:
                    continue
                cell[0] = 1
                cell[1 + int(cls)] = 1
                cell[1 + c:] = (x * side - col, y * side - row, w, h)
        return truth.reshape(n, -1)

    def _loss(self, out: np.ndarray, net: RunState) -> None:
        # Darknet's delta (forward_detection_layer with net.train; reference case
        # train_yolov1 and tests/naive_yolov1.py): noobject_scale * (0 - s) on every
        # scale; in a cell with an object, class_scale * (t - p) on its classes, and for
        # its responsible box object_scale * ((rescore ? IoU : 1) - s) and coord_scale *
        # (t - p) on x, y and on w, h (against sqrt(t) when sqrt=1). The cost is the sum
        # of the squared deltas; the gradient w.r.t. the output is minus the delta.
        from ..errors import DataError
        o = self.opts
        t = np.asarray(net.truth, np.float32)
        n = len(out)
        per = 5 + self.classes
        if t.shape != (n, self.truths):
            raise DataError(f"layer {self.index} [detection]: the truth must be {n} rows of "
                            f"side^2 * (5 + classes) = {self.truths} values (Darknet's "
                            f"per-cell layout); got shape {t.shape}")
        delta = np.zeros_like(out)
        stats = np.zeros(5)             # iou sum, class sum, obj sum, any-obj sum, recall
        count = 0
        for b in range(n):
            cls, scale, box = self.split(out[b])
            d_cls, d_scale, d_box = self.split(delta[b])
            d_scale[...] = F32(o["noobject_scale"]) * (F32(0) - scale)
            stats[3] += float(scale.sum(dtype=F64))
            for i, cell in enumerate(t[b].reshape(-1, per)):
                if not cell[0]:
                    continue
                d_cls[i] = F32(o["class_scale"]) * (cell[1:1 + self.classes] - cls[i])
                stats[1] += float(cls[i][cell[1:1 + self.classes] != 0].sum())
                j, iou = self._responsible(box[i], cell[1 + self.classes:], net)
                target = iou if o["rescore"] else 1.0
                d_scale[i, j] = F32(o["object_scale"]) * (F32(target) - scale[i, j])
                want = cell[1 + self.classes:].copy()
                if o["sqrt"]:
                    want[2:] = np.sqrt(want[2:])
                d_box[i, j] = F32(o["coord_scale"]) * (want - box[i, j])
                stats += (iou, 0, float(scale[i, j]), 0, iou > .5)
                count += 1
        self.cost = float(np.sum(np.square(delta, dtype=F64)))
        self._grad = np.negative(delta).reshape(n, *self.out_shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.stats = {"iou": stats[0] / count, "class": stats[1] / count,
                          "obj": stats[2] / count,
                          "no_obj": stats[3] / (n * self.side ** 2 * self.num),
                          "recall50": stats[4] / count, "count": count}

    def _responsible(self, boxes: np.ndarray, tbox: np.ndarray, net: RunState
                     ) -> tuple[int, float]:
        """(the box that answers for a truth, its IoU with it): the largest IoU, or with
        every IoU 0 the smallest RMSE of (x, y, w, h) below 20; `forced` and `random` as
        Darknet's override. Centres are compared cell-relative / side, w, h squared with
        sqrt=1."""
        from ..geometry import iou as box_iou
        side = F32(self.side)
        p = boxes.astype(F32).copy()
        p[:, :2] /= side
        if self.opts["sqrt"]:
            p[:, 2:] = p[:, 2:] * p[:, 2:]
        truth = np.array([tbox[0] / side, tbox[1] / side, tbox[2], tbox[3]], F32)
        ious = box_iou(truth, p).astype(F64)
        if ious.max() > 0:
            best = int(np.argmax(ious))       # the first of equal IoUs, as Darknet's `>`
        else:
            rmse = np.sqrt(np.sum(np.square(p.astype(F64) - truth), axis=1))
            best = int(np.argmin(rmse)) if rmse.min() < 20 else -1
        if self.opts["forced"]:
            best = 1 if truth[2] * truth[3] < .1 else 0
        if self.opts["random"] and net.seen < 64000:
            best = int(net.rng.integers(self.num))
        if best < 0:
            raise self.error("a truth box lies farther than RMSE 20 from every predicted box "
                             "of its cell: Darknet would train box -1 (outside the layer); "
                             "the network's outputs have diverged")
        return best, float(ious[best])

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # Darknet's backward_detection_layer adds the delta to the layer below unchanged:
        # with softmax=1 no softmax Jacobian (the class delta t - p is the cross-entropy's
        # logit gradient)
        from ._loss import loss_gradient
        return loss_gradient(self, dy)
