"""Slow, obvious NumPy statements of the [yolo] and [region] training targets
(reference/README.md "Detection"), for checking darkcfg/kernels/yolo_loss.py on random
data, and the losses whose gradients Darknet's deltas are.

Every function takes the head's output as (N, A, K, H, W) float32 (logistic x, y,
objectness, raw tw, th) and returns float64 (target, weight) with Darknet's delta =
weight * (target - out).
"""
from __future__ import annotations

import numpy as np


def boxes_of(row: np.ndarray, most: int) -> np.ndarray:
    boxes = row[:5 * most].reshape(-1, 5).astype(np.float64)
    stop = np.flatnonzero(boxes[:, 0] == 0)
    return boxes[:stop[0]] if len(stop) else boxes


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of centre/size boxes (..., 4), broadcasting; 0 when they do not touch."""
    def side(c1, s1, c2, s2):
        return np.minimum(c1 + s1 / 2, c2 + s2 / 2) - np.maximum(c1 - s1 / 2, c2 - s2 / 2)
    w = side(a[..., 0], a[..., 2], b[..., 0], b[..., 2])
    h = side(a[..., 1], a[..., 3], b[..., 1], b[..., 3])
    inter = np.where((w < 0) | (h < 0), 0.0, w * h)
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def _cell(v: float, size: int) -> int:
    return min(int(np.float32(v) * np.float32(size)), size - 1)


def _set_box(target, weight, b, a, j, i, box, anchor, grid, net, scale):
    (x, y, w, h), (gw, gh), (nw, nh) = box[:4], grid, net
    target[b, a, :4, j, i] = [x * gw - i, y * gh - j, np.log(w * nw / anchor[0]),
                              np.log(h * nh / anchor[1])]
    weight[b, a, :4, j, i] = scale


def _set_classes(out, target, weight, b, a, j, i, first, cls, scale, quirk):
    """Returns the probability of cls, or None when the quirk branch ran."""
    d0 = weight[b, a, first, j, i] * (target[b, a, first, j, i] - out[b, a, first, j, i])
    if quirk and d0 != 0:
        target[b, a, first + cls, j, i] = 1
        weight[b, a, first + cls, j, i] = scale
        return None
    target[b, a, first:, j, i] = 0
    target[b, a, first + cls, j, i] = 1
    weight[b, a, first:, j, i] = scale
    return float(out[b, a, first + cls, j, i])


def _pred(out_ba, anchor, grid, scale):
    """Predicted boxes (H, W, 4) of one anchor; anchor / scale gives the size unit."""
    h, w = out_ba.shape[-2:]
    gy, gx = np.mgrid[0:h, 0:w]
    return np.stack([(gx + out_ba[0]) / w, (gy + out_ba[1]) / h,
                     np.exp(out_ba[2].astype(np.float64)) * anchor[0] / scale[0],
                     np.exp(out_ba[3].astype(np.float64)) * anchor[1] / scale[1]], -1)


def yolo(out, truth, anchors, mask, net_wh, ignore=0.5, truth_thresh=1.0, most=90,
         norms=(1.0, 1.0, 1.0)):
    n, na, _, h, w = out.shape
    out = out.astype(np.float64)
    target, weight = np.zeros_like(out), np.zeros_like(out)
    box_n, obj_n, cls_n = norms
    for b in range(n):
        boxes = boxes_of(truth[b], most)
        for a in range(na):
            anchor = anchors[mask[a]]
            pred = _pred(out[b, a], anchor, (w, h), net_wh)
            if len(boxes):
                ious = iou(pred[:, :, None], boxes[None, None, :, :4])
                best, best_t = ious.max(-1), ious.argmax(-1)
            else:
                best, best_t = np.zeros((h, w)), np.zeros((h, w), int)
            weight[b, a, 4] = np.where(best > ignore, 0.0, obj_n)
            for j, i in zip(*np.nonzero(best > truth_thresh)):
                box = boxes[best_t[j, i]]
                target[b, a, 4, j, i], weight[b, a, 4, j, i] = 1, obj_n
                _set_classes(out, target, weight, b, a, j, i, 5, int(box[4]), cls_n, False)
                _set_box(target, weight, b, a, j, i, box, anchor, (w, h), net_wh,
                         (2 - box[2] * box[3]) * box_n)
        for box in boxes:
            shapes = np.column_stack([np.zeros((len(anchors), 2)), anchors / net_wh])
            best_n = int(np.argmax(iou(shapes, np.array([0, 0, box[2], box[3]]))))
            if best_n not in mask:
                continue
            a = list(mask).index(best_n)
            i, j = _cell(box[0], w), _cell(box[1], h)
            _set_box(target, weight, b, a, j, i, box, anchors[best_n], (w, h), net_wh,
                     (2 - box[2] * box[3]) * box_n)
            target[b, a, 4, j, i], weight[b, a, 4, j, i] = 1, obj_n
            _set_classes(out, target, weight, b, a, j, i, 5, int(box[4]), cls_n, True)
    return target, weight


def region(out, truth, anchors, thresh=0.5, seen=0, bias_match=True, rescore=True,
           softmax=True, scales=(1.0, 1.0, 1.0, 1.0)):
    """scales: coord, object, noobject, class."""
    n, na, _, h, w = out.shape
    out = out.astype(np.float64)
    target, weight = np.zeros_like(out), np.zeros_like(out)
    coord_s, obj_s, noobj_s, cls_s = scales
    for b in range(n):
        boxes = boxes_of(truth[b], 30)
        for a in range(na):
            pred = _pred(out[b, a], anchors[a], (w, h), (w, h))
            best = (iou(pred[:, :, None], boxes[None, None, :, :4]).max(-1) if len(boxes)
                    else np.zeros((h, w)))
            weight[b, a, 4] = np.where(best > thresh, 0.0, noobj_s)
            if seen < 12800:
                target[b, a, :2] = 0.5
                weight[b, a, :4] = 0.01
        for box in boxes:
            i, j = _cell(box[0], w), _cell(box[1], h)
            if bias_match:
                sizes = anchors / (w, h)
            else:
                sizes = np.exp(out[b, :, 2:4, j, i]) * anchors / (w, h)
            shapes = np.column_stack([np.zeros((na, 2)), sizes])
            a = int(np.argmax(iou(shapes, np.array([0, 0, box[2], box[3]]))))
            pred = _pred(out[b, a], anchors[a], (w, h), (w, h))[j, i]
            _set_box(target, weight, b, a, j, i, box, anchors[a], (w, h), (w, h),
                     coord_s * (2 - box[2] * box[3]))
            target[b, a, 4, j, i] = iou(pred, box[:4]) if rescore else 1
            weight[b, a, 4, j, i] = obj_s
            _set_classes(out, target, weight, b, a, j, i, 5, int(box[4]), cls_s, not softmax)
    return target, weight


def softplus(z):
    return np.logaddexp(0, z)


def yolo_potential(z, target, weight):
    """The loss whose gradient w.r.t. the head's INPUT z (N, A, K, H, W) is minus
    Darknet's [yolo] delta: weighted logistic cross-entropy on x, y, objectness and the
    classes (soft targets for x, y), half squared error on the raw tw, th."""
    z = z.astype(np.float64)
    bce = softplus(z) - target * z
    sq = 0.5 * (target - z) ** 2
    per = np.where(np.isin(np.arange(z.shape[2]), (2, 3))[None, None, :, None, None], sq, bce)
    return float(np.sum(weight * per))


def region_potential(z, target, weight, softmax=True):
    """The loss whose gradient w.r.t. z is minus Darknet's [region] delta taken down the
    GPU path: half squared error on logistic x, y, objectness and on raw tw, th; the
    class cross-entropy (softmax over classes, or logistic per class)."""
    z = z.astype(np.float64)
    sig = 1 / (1 + np.exp(-z))
    loss = 0.5 * weight[:, :, :2] * (target[:, :, :2] - sig[:, :, :2]) ** 2
    loss = loss.sum() + np.sum(0.5 * weight[:, :, 2:4] * (target[:, :, 2:4] - z[:, :, 2:4]) ** 2)
    loss += np.sum(0.5 * weight[:, :, 4] * (target[:, :, 4] - sig[:, :, 4]) ** 2)
    zc, tc, wc = z[:, :, 5:], target[:, :, 5:], weight[:, :, 5:]
    if softmax:
        logp = zc - np.log(np.sum(np.exp(zc - zc.max(2, keepdims=True)), 2, keepdims=True)) \
            - zc.max(2, keepdims=True)
        loss += np.sum(-wc * tc * logp)
    else:
        loss += np.sum(wc * (softplus(zc) - tc * zc))
    return float(loss)
