"""Box geometry shared by the detection heads' decoding, NMS and mAP: Darknet's `dets`
array (`Boxes`), IoU and DIoU, the letterbox size and the box correction that undoes it,
and greedy NMS.

Boxes are centre format (x, y, w, h) throughout. The float32/float64 mix of Darknet's C
expressions is kept where it moves a value across a threshold: `tests/test_detect.py`
pins every box against Darknet's own output, `tests/test_map.py` the mAP numbers.

The training targets compute the same IoU inside Numba kernels
(`darkcfg/kernels/yolo_loss.py: _iou`, which cannot call NumPy helpers in nopython mode):
it mirrors `iou` below, in float64 and without the zero-intersection rule.

Bottom floor: imports NumPy and darkcfg.errors only, so layers, detection and mAP can all
use it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

F32, F64 = np.float32, np.float64
NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")


# ---------------------------------------------------------------------------------------
# Darknet's dets array

@dataclass
class Boxes:
    """Darknet's `dets` array for one image, as parallel arrays (N entries, C classes)."""
    xywh: np.ndarray            # (N, 4) float32 box centre x, y and size w, h
    objectness: np.ndarray      # (N,) float32; [region]: 0 unless above thresh
    probs: np.ndarray           # (N, C) float32 objectness * class prob; 0 unless > thresh
    index: np.ndarray           # (N,) int64 position in get_network_boxes' order

    def __len__(self) -> int:
        return len(self.objectness)

    @property
    def classes(self) -> int:
        return self.probs.shape[1]

    def take(self, order: np.ndarray) -> Boxes:
        return Boxes(self.xywh[order], self.objectness[order], self.probs[order],
                     self.index[order])

    @classmethod
    def concat(cls, parts: Sequence[Boxes], classes: int) -> Boxes:
        if not parts:
            return cls(np.zeros((0, 4), F32), np.zeros(0, F32), np.zeros((0, classes), F32),
                       np.zeros(0, np.int64))
        xywh = np.concatenate([p.xywh for p in parts])
        return cls(xywh, np.concatenate([p.objectness for p in parts]),
                   np.concatenate([p.probs for p in parts]), np.arange(len(xywh)))


def anchor_pairs(listed: Sequence[float] | None, count: int) -> np.ndarray:
    """Darknet's `biases` of a head: `count` (w, h) float32 pairs from the cfg's `anchors`,
    0.5 where it lists none (make_yolo_layer / make_region_layer fill them so)."""
    have = np.asarray(listed or [], dtype=F32)[:2 * count]
    out = np.full(2 * count, 0.5, dtype=F32)
    out[:len(have)] = have
    return out.reshape(count, 2)


def gate(probs: np.ndarray, thresh: np.float32) -> np.ndarray:
    """prob > thresh ? prob : 0, in float32 (Darknet's class-probability gate)."""
    return np.where(probs > thresh, probs, F32(0)).astype(F32)


# ---------------------------------------------------------------------------------------
# letterbox

def letterbox_size(img_w: int, img_h: int, net_w: int, net_h: int) -> tuple[int, int]:
    """The size (new_w, new_h) the image takes inside Darknet's letterbox (float compare,
    C integer division), as correct_*_boxes and letterbox_image compute it."""
    if F32(net_w) / F32(img_w) < F32(net_h) / F32(img_h):
        new_w, new_h = net_w, (img_h * net_w) // img_w
    else:
        new_w, new_h = (img_w * net_h) // img_h, net_h
    return max(new_w, 1), max(new_h, 1)


def correct_boxes(xywh: np.ndarray, img_w: int, img_h: int, net_w: int,
                  net_h: int) -> np.ndarray:
    """correct_yolo_boxes / correct_region_boxes with relative = 1: (N, 4) boxes relative to
    the letterboxed network input -> relative to the original img_w x img_h image."""
    new_w, new_h = letterbox_size(img_w, img_h, net_w, net_h)
    out = np.empty_like(xywh, dtype=F32)
    # x = (x - (netw - new_w)/2./netw) / ((float)new_w/netw): double, one rounding to float
    out[:, 0] = ((xywh[:, 0].astype(F64) - (net_w - new_w) / 2.0 / net_w)
                 / F64(F32(new_w) / F32(net_w)))
    out[:, 1] = ((xywh[:, 1].astype(F64) - (net_h - new_h) / 2.0 / net_h)
                 / F64(F32(new_h) / F32(net_h)))
    out[:, 2] = xywh[:, 2] * (F32(net_w) / F32(new_w))      # float32
    out[:, 3] = xywh[:, 3] * (F32(net_h) / F32(new_h))
    return out


# ---------------------------------------------------------------------------------------
# IoU

def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Darknet's box_iou in float32 between one box a (4,) and boxes b (M, 4), centre
    format: intersection = product of the overlaps (0 if either is negative); union =
    a.w*a.h + b.w*b.h - intersection. 0 where the intersection is 0 (AH's src/box.c:
    box_iou; P's 0/0 never suppresses either). NMS uses it."""
    half = F32(2)
    ow = (np.minimum(a[0] + a[2] / half, b[:, 0] + b[:, 2] / half)
          - np.maximum(a[0] - a[2] / half, b[:, 0] - b[:, 2] / half))
    oh = (np.minimum(a[1] + a[3] / half, b[:, 1] + b[:, 3] / half)
          - np.maximum(a[1] - a[3] / half, b[:, 1] - b[:, 3] / half))
    inter = np.where((ow < 0) | (oh < 0), F32(0), ow * oh).astype(F32)
    union = (a[2] * a[3] + b[:, 2] * b[:, 3]) - inter
    ok = inter > 0
    return np.where(ok, inter / np.where(ok, union, F32(1)), F32(0)).astype(F32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, 4) with boxes b (M, 4), centre format x, y, w, h -> (N, M),
    float64; 0 where the boxes do not overlap. mAP uses it (COCO computes in double)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    # an untrained head's boxes can be infinite: their IoU comes out 0 or NaN (never a
    # match), quietly
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        a0, a1 = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
        b0, b1 = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
        side = np.minimum(a1, b1) - np.maximum(a0, b0)                  # (N, M, 2)
        inter = np.where((side > 0).all(axis=2), side[..., 0] * side[..., 1], 0.0)
        union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
        return np.where(inter > 0, inter / union, 0.0)


def diou_nms_score(a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
    """AH's box_diounms: IoU - (d/c)^beta, d the squared centre distance and c the squared
    diagonal of the smallest box enclosing both (IoU alone where c = 0). a (4,), b (M, 4).
    pow() runs in double: beta is the float `beta_nms` (diounms) or the literal 0.6 of AH's
    box_diou (greedynms)."""
    half = F32(2)
    left = np.minimum(a[0] - a[2] / half, b[:, 0] - b[:, 2] / half)
    right = np.maximum(a[0] + a[2] / half, b[:, 0] + b[:, 2] / half)
    top = np.minimum(a[1] - a[3] / half, b[:, 1] - b[:, 3] / half)
    bot = np.maximum(a[1] + a[3] / half, b[:, 1] + b[:, 3] / half)
    cw, ch = right - left, bot - top
    c = (cw * cw + ch * ch).astype(F32)
    d = ((a[0] - b[:, 0]) * (a[0] - b[:, 0]) + (a[1] - b[:, 1]) * (a[1] - b[:, 1])).astype(F32)
    base = iou(a, b)
    nz = c != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.power((d / np.where(nz, c, F32(1))).astype(F64), F64(beta)).astype(F32)
    return np.where(nz, base - u, base).astype(F32)


# ---------------------------------------------------------------------------------------
# NMS

def _objectness_first(objectness: np.ndarray) -> tuple[np.ndarray, int]:
    """Darknet's swap loop: each entry with objectness 0 is swapped with the current last
    one (order is not kept). Returns the permutation and the count with objectness != 0."""
    order = np.arange(len(objectness))
    k = len(order) - 1
    i = 0
    while i <= k:
        if objectness[order[i]] == 0:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    return order, k + 1


def nms_sort(boxes: Boxes, nms: float, kind: str = "default", beta: float = 0.6) -> Boxes:
    """Darknet's do_nms_sort (kind "default") or AH's diounms_sort (greedynms, diounms,
    cornersnms), returning the reordered entries with suppressed probs set to 0.

    Entries with objectness 0 go to the back (Darknet's swap loop); the rest are sorted,
    stably (glibc's qsort is a merge sort), by each class's prob in turn, and every later
    entry whose score with a kept one is > nms loses that class. Boxes never change; no
    entry is removed. nms = 0 means no NMS at all (Darknet's `if (nms)`).
    """
    if kind not in NMS_KINDS:
        raise ValueError(f"nms kind must be one of {', '.join(NMS_KINDS)}; received {kind!r}")
    if nms < 0:
        raise ValueError(f"nms must be >= 0; received {nms}")
    if nms == 0:
        return boxes.take(np.arange(len(boxes)))
    probs = boxes.probs.copy()
    xywh = boxes.xywh
    order, total = _objectness_first(boxes.objectness)
    live = order[:total]
    th = F32(nms)
    for k in range(boxes.classes):
        live = live[np.argsort(-probs[live, k], kind="stable")]
        m = int(np.count_nonzero(probs[live, k]))    # non-zero probs come first
        for i in range(m - 1):
            a = live[i]
            if probs[a, k] == 0:
                continue
            rest = live[i + 1:m]
            if kind == "diounms":
                score = diou_nms_score(xywh[a], xywh[rest], float(F32(beta)))
            elif kind == "greedynms":
                score = diou_nms_score(xywh[a], xywh[rest], 0.6)    # AH's box_diou
            else:
                score = iou(xywh[a], xywh[rest])
            probs[rest[score > th], k] = 0
    order[:total] = live
    out = boxes.take(order)
    out.probs = probs[order]
    return out
