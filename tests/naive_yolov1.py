"""Slow, obvious NumPy references for [local] and YOLOv1's [detection]
(darkcfg/kernels/local.py, darkcfg/layers/detection.py).

Written from Darknet's rules as the reference folder's README states them
(../shared/reference/recurrent_local_yolov1/README.md), by another route than the code:
an explicitly padded image and slices instead of bounds tests; the detection delta from
Python loops over cells and boxes; float64 throughout.
"""
from __future__ import annotations

import numpy as np


def local(x: np.ndarray, weights: np.ndarray, biases: np.ndarray, stride: int,
          pad: int) -> np.ndarray:
    """x (N, C, H, W), weights (L, n, C, k, k), biases (n*oh*ow,) -> (N, n, oh, ow) before
    the activation; `pad` the padding amount, output size from `pad` as a flag."""
    n_img, _, h, w = x.shape
    L, n, _, k, _ = weights.shape
    cut = 1 if pad else k
    oh, ow = (h - cut) // stride + 1, (w - cut) // stride + 1
    assert oh * ow == L
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad + k), (pad, pad + k)))
    out = np.empty((n_img, n, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            patch = xp[:, :, oy * stride:oy * stride + k, ox * stride:ox * stride + k]
            wj = weights[oy * ow + ox].astype(np.float64)            # (n, C, k, k)
            out[:, :, oy, ox] = np.einsum("bckl,fckl->bf", patch, wj)
    return out + biases.astype(np.float64).reshape(n, oh, ow)


def iou(a, b) -> float:
    """IoU of two (x, y, w, h) centre boxes."""
    def overlap(c1, s1, c2, s2):
        return min(c1 + s1 / 2, c2 + s2 / 2) - max(c1 - s1 / 2, c2 - s2 / 2)
    iw, ih = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if inter > 0 else 0.0


def detection_delta(out: np.ndarray, truth: np.ndarray, side: int, num: int, classes: int,
                    sqrt: bool, rescore: bool, object_scale: float, noobject_scale: float,
                    class_scale: float, coord_scale: float) -> tuple[np.ndarray, float]:
    """Darknet's delta (minus the gradient) of [detection] for one image: out (side^2 *
    (classes + 5 num),) the layer's output, truth (side^2 * (1 + classes + 4),) per cell
    is_obj, one-hot classes, x y in the cell, w h. Returns (delta, sum of delta^2)."""
    out = out.astype(np.float64)
    cells = side * side
    cls = out[:cells * classes].reshape(cells, classes)
    scale = out[cells * classes:cells * (classes + num)].reshape(cells, num)
    box = out[cells * (classes + num):].reshape(cells, num, 4)
    d_cls, d_scale, d_box = np.zeros_like(cls), -noobject_scale * scale, np.zeros_like(box)
    t = truth.astype(np.float64).reshape(cells, 1 + classes + 4)
    for i in range(cells):
        if not t[i, 0]:
            continue
        d_cls[i] = class_scale * (t[i, 1:1 + classes] - cls[i])
        tb = t[i, 1 + classes:].copy()
        tcell = np.array([tb[0] / side, tb[1] / side, tb[2], tb[3]])
        ious, rmses = [], []
        for j in range(num):
            p = box[i, j].copy()
            p[0] /= side
            p[1] /= side
            if sqrt:
                p[2:] = p[2:] ** 2
            ious.append(iou(p, tcell))
            rmses.append(np.sqrt(np.sum((p - tcell) ** 2)))   # src/box.c: box_rmse
        if max(ious) > 0:
            best = int(np.argmax(ious))
        else:
            under = [j for j in range(num) if rmses[j] < 20]
            best = min(under, key=lambda j: rmses[j]) if under else -1
        assert best >= 0, "no box within rmse 20 (Darknet would index box -1)"
        target_obj = ious[best] if rescore else 1.0
        d_scale[i, best] = object_scale * (target_obj - scale[i, best])
        want = tb.copy()
        if sqrt:
            want[2:] = np.sqrt(want[2:])
        d_box[i, best] = coord_scale * (want - box[i, best])
    delta = np.concatenate([d_cls.ravel(), d_scale.ravel(), d_box.ravel()])
    return delta, float(np.sum(delta ** 2))
