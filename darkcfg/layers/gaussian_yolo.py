"""[Gaussian_yolo] (AH, src/gaussian_yolo_layer.c): a YOLO head whose boxes carry an
uncertainty per coordinate (Gaussian YOLOv3, Choi et al. 2019).

A [yolo] with 9 + classes values per anchor: it subclasses Yolo, the one section file that
builds on a sibling. Per anchor a, channel a*(9+classes) + {0: x, 1: sigma x, 2: y,
3: sigma y, 4: w, 5: sigma w, 6: h, 7: sigma h, 8: objectness, 9..: classes}.
It runs and decodes; its Gaussian training loss is not computed (refused by name).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..geometry import F32, F64, Boxes, anchor_pairs
from ..options import Opt
from .base import register
from .yolo import YOLO_QUIET, Yolo

if TYPE_CHECKING:
    from .base import RunState

# logistic entries of each anchor before the classes: x, sigma x, y, sigma y, sigma w,
# sigma h, objectness (AH's forward_gaussian_yolo_layer); w, h stay raw
LOGISTIC = (0, 1, 2, 3, 5, 7, 8)


@register
class GaussianYolo(Yolo):
    type = "Gaussian_yolo"
    doc = ("YOLO head with a Gaussian uncertainty per box coordinate (AH); decodes boxes, "
           "its loss is not computed")
    per_anchor = 9          # x, y, w, h, 4 uncertainties, objectness
    options = {
        **Yolo.options,
        "yolo_point": Opt("str", "center", "what x, y locate (AH)",
                          choices=("center", "left_top", "right_bottom")),
        "uc_normalizer": Opt("float", 1.0, "uncertainty loss weight (AH; training only)"),
    }
    quiet = YOLO_QUIET - {"yolo_point", "uc_normalizer"}

    def row(self):
        return "Gaussian_yolo"

    def unsupported(self):
        if self.opts["new_coords"]:
            return ("[Gaussian_yolo] has no new_coords (AH's parse_gaussian_yolo does not "
                    "read it); remove it")
        return None

    def check_trainable(self) -> None:
        raise self.error("training a [Gaussian_yolo] head (its Gaussian box loss) is not "
                         "implemented by darkcfg; it runs and detects (AH's "
                         "src/gaussian_yolo_layer.c)")

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, A*(9+classes), H, W) -> same shape: logistic on LOGISTIC and the classes,
        # then scale_x_y on the x and y means only (AH: scal_add over one plane each)
        from ..kernels.activations import activate
        if net.train and net.truth is not None:
            self.check_trainable()
        n, c, h, w = x.shape
        a = len(self.mask)
        out = x.reshape(n, a, c // a, h * w).copy()
        for b in range(n):
            for k in range(a):
                for e in LOGISTIC:
                    activate(out[b, k, e], "logistic")
                activate(out[b, k, 9:], "logistic")
        s = self.opts["scale_x_y"]
        if s != 1.0:
            for e in (0, 2):
                out[:, :, e] = out[:, :, e] * np.float32(s) + np.float32(-0.5 * (s - 1.0))
        self.cost = self._grad = self.stats = None
        return out.reshape(x.shape)

    def decode(self, out: np.ndarray, net_w: int, net_h: int, thresh: float) -> Boxes:
        """AH's get_gaussian_yolo_detections before correct_gaussian_yolo_boxes: entries
        with objectness > thresh, cell-major then by anchor; w = exp(tw) * anchor / net_w
        in double; yolo_point left_top / right_bottom shift the centre by half the box;
        prob = objectness * class * (1 - the mean of the four uncertainties), kept if
        > thresh."""
        _, lh, lw = self.out_shape
        anchors = anchor_pairs(self.anchors, self.total)[self.mask]
        a, k, hw = len(anchors), 9 + self.classes, lh * lw
        t = np.asarray(out, dtype=F32).reshape(a, k, hw).transpose(2, 0, 1)   # (HW, A, K)
        th = F32(thresh)
        cell, anc = np.nonzero(t[:, :, 8] > th)
        e = t[cell, anc]
        col = (cell % lw).astype(F32)
        row = (cell // lw).astype(F32)
        xywh = np.empty((len(e), 4), F32)
        xywh[:, 2] = np.exp(e[:, 4].astype(F64)) * anchors[anc, 0].astype(F64) / net_w
        xywh[:, 3] = np.exp(e[:, 6].astype(F64)) * anchors[anc, 1].astype(F64) / net_h
        xywh[:, 0] = (col + e[:, 0]) / F32(lw)
        xywh[:, 1] = (row + e[:, 2]) / F32(lh)
        point = self.opts["yolo_point"]
        if point != "center":
            sign = F32(1) if point == "left_top" else F32(-1)
            xywh[:, 0] += sign * (xywh[:, 2] / F32(2))
            xywh[:, 1] += sign * (xywh[:, 3] / F32(2))
        obj = e[:, 8].copy()
        uc = (((e[:, 1] + e[:, 3]) + e[:, 5]) + e[:, 7]).astype(F64) / 4.0
        uc_aver = uc.astype(F32).astype(F64)
        probs = ((obj[:, None] * e[:, 9:]).astype(F64) * (1.0 - uc_aver[:, None])).astype(F32)
        probs = np.where(probs > th, probs, F32(0)).astype(F32)
        return Boxes(xywh, obj, probs, np.arange(len(e)))
