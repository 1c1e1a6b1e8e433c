"""Slow, obvious references for detection boxes: [yolo]/[region] decoding, IoU, DIoU and
NMS, one entry, one class, one pair at a time.

Written from Darknet's own code read as a description (src/yolo_layer.c:
get_yolo_box, src/region_layer.c: get_region_box, src/box.c: do_nms_sort, AlexeyAB's
src/box.c: diounms_sort), not from darkcfg/detection or darkcfg/geometry.py. Float32 where
Darknet computes in float, Python floats (double) where it computes in double.
"""
from __future__ import annotations

import math

import numpy as np

f32 = np.float32


def logistic(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def activate_yolo(raw: np.ndarray, anchors: int, classes: int, scale_x_y: float = 1.0,
                  new_coords: bool = False) -> np.ndarray:
    """A [yolo] forward on raw (anchors*(5+classes), H, W): logistic on x, y, objectness
    and classes (none with new_coords), then x, y -> x*s - (s-1)/2."""
    out = np.array(raw, dtype=np.float64).reshape(anchors, 5 + classes, -1)
    if not new_coords:
        for a in range(anchors):
            for k in [0, 1, *range(4, 5 + classes)]:
                out[a, k] = [logistic(v) for v in out[a, k]]
    out = out.astype(f32)
    if scale_x_y != 1.0:
        out[:, 0:2] = out[:, 0:2] * f32(scale_x_y) + f32(-0.5 * (scale_x_y - 1.0))
    return out.reshape(raw.shape)


def decode(heads: list[dict], outputs: list[np.ndarray], net_w: int, net_h: int,
           img_w: int, img_h: int, thresh: float) -> list[dict]:
    """get_network_boxes(relative=1): a list of {"bbox": [x, y, w, h] (float32),
    "objectness", "prob": [classes]}, layer by layer."""
    th = f32(thresh)
    dets = []
    for head, out in zip(heads, outputs, strict=True):
        h, w, classes = head["h"], head["w"], head["classes"]
        if head["kind"] == "yolo":
            k = 5 + classes
            flat = np.asarray(out, f32).ravel()
            for cell in range(h * w):
                row, col = cell // w, cell % w
                for n, anchor in enumerate(head["mask"]):
                    def at(entry, n=n, cell=cell, k=k, flat=flat, hw=h * w):
                        return flat[(n * k + entry) * hw + cell]
                    obj = at(4)
                    if not obj > th:
                        continue
                    aw = f32(head["anchors"][2 * anchor])
                    ah = f32(head["anchors"][2 * anchor + 1])
                    x = (f32(col) + at(0)) / f32(w)
                    y = (f32(row) + at(1)) / f32(h)
                    if head.get("new_coords"):
                        bw = at(2) * at(2) * f32(4) * aw / f32(net_w)
                        bh = at(3) * at(3) * f32(4) * ah / f32(net_h)
                    else:
                        bw = f32(math.exp(float(at(2))) * float(aw) / net_w)
                        bh = f32(math.exp(float(at(3))) * float(ah) / net_h)
                    prob = []
                    for c in range(classes):
                        p = f32(obj * at(5 + c))
                        prob.append(p if p > th else f32(0))
                    dets.append({"bbox": [x, y, bw, bh], "objectness": obj, "prob": prob})
        else:
            coords = head["coords"]
            k = coords + 1 + classes
            flat = np.asarray(out, f32).ravel()
            for n in range(head["num"]):
                for cell in range(h * w):
                    row, col = cell // w, cell % w

                    def at(entry, n=n, cell=cell, k=k, flat=flat, hw=h * w):
                        return flat[(n * k + entry) * hw + cell]
                    aw = f32(head["anchors"][2 * n])
                    ah = f32(head["anchors"][2 * n + 1])
                    x = (f32(col) + at(0)) / f32(w)
                    y = (f32(row) + at(1)) / f32(h)
                    bw = f32(math.exp(float(at(2))) * float(aw) / w)
                    bh = f32(math.exp(float(at(3))) * float(ah) / h)
                    scale = at(coords)
                    obj = scale if scale > th else f32(0)
                    prob = [f32(0)] * classes
                    if obj != 0:
                        for c in range(classes):
                            p = f32(scale * at(coords + 1 + c))
                            prob[c] = p if p > th else f32(0)
                    dets.append({"bbox": [x, y, bw, bh], "objectness": obj, "prob": prob})
    # the letterbox undo
    if f32(net_w) / f32(img_w) < f32(net_h) / f32(img_h):
        new_w, new_h = net_w, (img_h * net_w) // img_w
    else:
        new_w, new_h = (img_w * net_h) // img_h, net_h
    for d in dets:
        x, y, bw, bh = d["bbox"]
        x = f32((float(x) - (net_w - new_w) / 2.0 / net_w) / float(f32(new_w) / f32(net_w)))
        y = f32((float(y) - (net_h - new_h) / 2.0 / net_h) / float(f32(new_h) / f32(net_h)))
        d["bbox"] = [x, y, bw * (f32(net_w) / f32(new_w)), bh * (f32(net_h) / f32(new_h))]
    for i, d in enumerate(dets):
        d["orig"] = i
    return dets


def box_iou(a, b) -> float:
    def overlap(x1, w1, x2, w2):
        left = max(x1 - w1 / f32(2), x2 - w2 / f32(2))
        right = min(x1 + w1 / f32(2), x2 + w2 / f32(2))
        return right - left
    ow = overlap(a[0], a[2], b[0], b[2])
    oh = overlap(a[1], a[3], b[1], b[3])
    inter = f32(0) if (ow < 0 or oh < 0) else ow * oh
    union = a[2] * a[3] + b[2] * b[3] - inter
    if inter == 0 or union == 0:
        return f32(0)
    return inter / union


def box_diou(a, b, beta: float) -> float:
    top = min(a[1] - a[3] / f32(2), b[1] - b[3] / f32(2))
    bot = max(a[1] + a[3] / f32(2), b[1] + b[3] / f32(2))
    left = min(a[0] - a[2] / f32(2), b[0] - b[2] / f32(2))
    right = max(a[0] + a[2] / f32(2), b[0] + b[2] / f32(2))
    w, h = right - left, bot - top
    c = w * w + h * h
    iou = box_iou(a, b)
    if c == 0:
        return iou
    d = (a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1])
    return iou - f32(math.pow(float(d / c), beta))


def nms(dets: list[dict], classes: int, thresh: float, kind: str = "default",
        beta: float = 0.6) -> list[dict]:
    """do_nms_sort / diounms_sort on copies of dets; returns the final array."""
    dets = [{**d, "prob": list(d["prob"])} for d in dets]
    k = len(dets) - 1
    i = 0
    while i <= k:
        if dets[i]["objectness"] == 0:
            dets[i], dets[k] = dets[k], dets[i]
            k -= 1
        else:
            i += 1
    total = k + 1
    th = f32(thresh)
    for c in range(classes):
        dets[:total] = sorted(dets[:total], key=lambda d, c=c: -d["prob"][c])  # stable
        for i in range(total):
            if dets[i]["prob"][c] == 0:
                continue
            for j in range(i + 1, total):
                a, b = dets[i]["bbox"], dets[j]["bbox"]
                if kind == "diounms":
                    score = box_diou(a, b, float(f32(beta)))
                elif kind == "greedynms":
                    score = box_diou(a, b, 0.6)
                else:
                    score = box_iou(a, b)
                if score > th:
                    dets[j]["prob"][c] = f32(0)
    return dets
