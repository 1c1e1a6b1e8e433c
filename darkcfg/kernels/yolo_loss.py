"""The training targets of the detection heads [yolo] and [region].

Both kernels walk Darknet's two passes over one image (src/yolo_layer.c:
forward_yolo_layer, src/region_layer.c: forward_region_layer):
first every cell and anchor (objectness against the best IoU with any truth), then every
truth in order (its best anchor gets box, objectness and class targets; a later truth
overwrites an earlier one). They do not write deltas directly: they fill, for every
output entry e, a `target[e]` and a `weight[e]`, so that Darknet's delta is

    delta[e] = weight[e] * (target[e] - out[e])

(weight 0: no loss). The caller turns that into a gradient; the same arrays define the
loss the delta is the gradient of (tests/test_yolo_loss.py checks that by finite
differences). `out` holds what the head's forward produced: logistic x, y, objectness
(and yolo classes), raw tw, th.

Shapes: out, target, weight (N, A, K, H, W) float32 with K = 5 + classes (yolo) or
coords + 1 + classes (region); truth (N, T) float32, Darknet's box list `x y w h class`
per box, read until the first x == 0. stats (8,) float64 accumulates: IoU sum, class
probability sum, objectness sum at truths, objectness sum everywhere, IoU > .5 count,
IoU > .75 count, truth count, class count.
"""
from __future__ import annotations

import math

import numpy as np

from .config import check_f32, jit


@jit
def _overlap(x1, w1, x2, w2):
    left = max(x1 - w1 / 2, x2 - w2 / 2)
    right = min(x1 + w1 / 2, x2 + w2 / 2)
    return right - left


@jit
def _iou(ax, ay, aw, ah, bx, by, bw, bh):
    # Darknet's box_iou on centre/size boxes (src/box.c: box_iou). The NumPy reference is
    # darkcfg/geometry.py: iou (NMS) / iou_matrix (mAP); this copy exists because a
    # nopython kernel cannot call them. Unlike geometry.iou it computes in float64 (Numba
    # promotes `w / 2`) and keeps Darknet's plain division (0/0 is NaN, which compares
    # False everywhere it is used), as the reference training cases pin it.
    w = _overlap(ax, aw, bx, bw)
    h = _overlap(ay, ah, by, bh)
    inter = 0.0 if (w < 0 or h < 0) else w * h
    union = aw * ah + bw * bh - inter
    return inter / union


@jit
def _count_boxes(truth, b, most):
    n = 0
    while n < most and 5 * n + 4 < truth.shape[1] and truth[b, 5 * n] != 0:
        n += 1
    return n


@jit
def _cell(v, size):
    # Darknet's int(x * w) on floats; clamped so that x = 1 stays on the grid
    k = int(np.float32(v) * np.float32(size))
    return min(max(k, 0), size - 1)


@jit
def _box_targets(target, weight, b, a, j, i, tx, ty, tw, th, aw, ah, w, h, net_w, net_h,
                 scale):
    # targets x*W - i, y*H - j (for the logistic outputs), log(w*net_w/anchor_w) (raw)
    target[b, a, 0, j, i] = np.float32(tx) * np.float32(w) - np.float32(i)
    target[b, a, 1, j, i] = np.float32(ty) * np.float32(h) - np.float32(j)
    target[b, a, 2, j, i] = math.log(tw * net_w / aw)
    target[b, a, 3, j, i] = math.log(th * net_h / ah)
    for e in range(4):
        weight[b, a, e, j, i] = scale


@jit
def _class_targets(out, target, weight, b, a, j, i, c0, classes, cls, scale, only_new):
    # Darknet's delta_*_class. only_new: its quirk when the class-0 delta of this cell is
    # already non-zero (an earlier truth here): only the new class entry is set, so the
    # cell keeps two positive classes. Returns the probability of `cls`.
    if only_new:
        d0 = np.float32(weight[b, a, c0, j, i] * (target[b, a, c0, j, i] - out[b, a, c0, j, i]))
        if d0 != 0:
            target[b, a, c0 + cls, j, i] = 1.0
            weight[b, a, c0 + cls, j, i] = scale
            return out[b, a, c0 + cls, j, i], False
    for c in range(classes):
        target[b, a, c0 + c, j, i] = 1.0 if c == cls else 0.0
        weight[b, a, c0 + c, j, i] = scale
    return out[b, a, c0 + cls, j, i], True


@jit
def _yolo(out, truth, most, anchors, mask, net_w, net_h, ignore_thresh, truth_thresh,
          box_norm, obj_norm, cls_norm, target, weight, stats):
    n_b, n_a, k, h, w = out.shape
    classes = k - 5
    total = anchors.shape[0]
    for b in range(n_b):
        nt = _count_boxes(truth, b, most)
        for j in range(h):
            for i in range(w):
                for a in range(n_a):
                    aw, ah = anchors[mask[a], 0], anchors[mask[a], 1]
                    px = (i + np.float64(out[b, a, 0, j, i])) / w
                    py = (j + np.float64(out[b, a, 1, j, i])) / h
                    pw = math.exp(out[b, a, 2, j, i]) * aw / net_w
                    ph = math.exp(out[b, a, 3, j, i]) * ah / net_h
                    best, best_t = 0.0, 0
                    for t in range(nt):
                        iou = _iou(px, py, pw, ph, truth[b, 5 * t], truth[b, 5 * t + 1],
                                   truth[b, 5 * t + 2], truth[b, 5 * t + 3])
                        if iou > best:
                            best, best_t = iou, t
                    stats[3] += out[b, a, 4, j, i]
                    target[b, a, 4, j, i] = 0.0
                    weight[b, a, 4, j, i] = 0.0 if best > ignore_thresh else obj_norm
                    if best > truth_thresh:
                        # a positive with this cell's own anchor (not counted in stats)
                        target[b, a, 4, j, i] = 1.0
                        weight[b, a, 4, j, i] = obj_norm
                        cls = int(truth[b, 5 * best_t + 4])
                        _class_targets(out, target, weight, b, a, j, i, 5, classes, cls,
                                       cls_norm, False)
                        tw, th = truth[b, 5 * best_t + 2], truth[b, 5 * best_t + 3]
                        _box_targets(target, weight, b, a, j, i, truth[b, 5 * best_t],
                                     truth[b, 5 * best_t + 1], tw, th, aw, ah, w, h, net_w,
                                     net_h, (2.0 - np.float32(tw * th)) * box_norm)
        for t in range(nt):
            tx, ty = truth[b, 5 * t], truth[b, 5 * t + 1]
            tw, th = truth[b, 5 * t + 2], truth[b, 5 * t + 3]
            i, j = _cell(tx, w), _cell(ty, h)
            # the best anchor over ALL anchors, by shape; the first maximum wins
            best, best_n = 0.0, 0
            for n in range(total):
                iou = _iou(0.0, 0.0, anchors[n, 0] / net_w, anchors[n, 1] / net_h,
                           0.0, 0.0, tw, th)
                if iou > best:
                    best, best_n = iou, n
            a = -1
            for m in range(n_a):
                if mask[m] == best_n:
                    a = m
                    break
            if a < 0:
                continue        # another head owns this truth
            aw, ah = anchors[best_n, 0], anchors[best_n, 1]
            px = (i + np.float64(out[b, a, 0, j, i])) / w
            py = (j + np.float64(out[b, a, 1, j, i])) / h
            pw = math.exp(out[b, a, 2, j, i]) * aw / net_w
            ph = math.exp(out[b, a, 3, j, i]) * ah / net_h
            iou = _iou(px, py, pw, ph, tx, ty, tw, th)
            _box_targets(target, weight, b, a, j, i, tx, ty, tw, th, aw, ah, w, h, net_w,
                         net_h, (2.0 - np.float32(tw * th)) * box_norm)
            stats[2] += out[b, a, 4, j, i]
            target[b, a, 4, j, i] = 1.0
            weight[b, a, 4, j, i] = obj_norm
            p, _ = _class_targets(out, target, weight, b, a, j, i, 5, classes,
                                  int(truth[b, 5 * t + 4]), cls_norm, True)
            stats[1] += p
            stats[0] += iou
            stats[4] += iou > 0.5
            stats[5] += iou > 0.75
            stats[6] += 1
            stats[7] += 1


@jit
def _region(out, truth, most, anchors, coords, thresh, seen_early, bias_match, rescore,
            logistic_classes, coord_scale, object_scale, noobject_scale, class_scale,
            target, weight, stats):
    n_b, n_a, k, h, w = out.shape
    classes = k - coords - 1
    for b in range(n_b):
        nt = _count_boxes(truth, b, most)
        for j in range(h):
            for i in range(w):
                for a in range(n_a):
                    aw, ah = anchors[a, 0], anchors[a, 1]   # in grid cells
                    px = (i + np.float64(out[b, a, 0, j, i])) / w
                    py = (j + np.float64(out[b, a, 1, j, i])) / h
                    pw = math.exp(out[b, a, 2, j, i]) * aw / w
                    ph = math.exp(out[b, a, 3, j, i]) * ah / h
                    best = 0.0
                    for t in range(nt):
                        best = max(best, _iou(px, py, pw, ph, truth[b, 5 * t],
                                              truth[b, 5 * t + 1], truth[b, 5 * t + 2],
                                              truth[b, 5 * t + 3]))
                    stats[3] += out[b, a, coords, j, i]
                    target[b, a, coords, j, i] = 0.0
                    weight[b, a, coords, j, i] = 0.0 if best > thresh else noobject_scale
                    if seen_early:
                        # early training pulls every box towards its anchor at the cell
                        # centre: targets 0.5, 0.5 and raw 0, 0
                        for e in range(4):
                            target[b, a, e, j, i] = 0.5 if e < 2 else 0.0
                            weight[b, a, e, j, i] = 0.01
        for t in range(nt):
            tx, ty = truth[b, 5 * t], truth[b, 5 * t + 1]
            tw, th = truth[b, 5 * t + 2], truth[b, 5 * t + 3]
            i, j = _cell(tx, w), _cell(ty, h)
            best, best_n = 0.0, 0
            for n in range(n_a):
                if bias_match:
                    pw, ph = anchors[n, 0] / w, anchors[n, 1] / h
                else:
                    pw = math.exp(out[b, n, 2, j, i]) * anchors[n, 0] / w
                    ph = math.exp(out[b, n, 3, j, i]) * anchors[n, 1] / h
                iou = _iou(0.0, 0.0, pw, ph, 0.0, 0.0, tw, th)
                if iou > best:
                    best, best_n = iou, n
            a = best_n
            aw, ah = anchors[a, 0], anchors[a, 1]
            px = (i + np.float64(out[b, a, 0, j, i])) / w
            py = (j + np.float64(out[b, a, 1, j, i])) / h
            pw = math.exp(out[b, a, 2, j, i]) * aw / w
            ph = math.exp(out[b, a, 3, j, i]) * ah / h
            iou = _iou(px, py, pw, ph, tx, ty, tw, th)
            _box_targets(target, weight, b, a, j, i, tx, ty, tw, th, aw, ah, w, h, w, h,
                         coord_scale * (2.0 - np.float32(tw * th)))
            stats[2] += out[b, a, coords, j, i]
            target[b, a, coords, j, i] = iou if rescore else 1.0
            weight[b, a, coords, j, i] = object_scale
            p, full = _class_targets(out, target, weight, b, a, j, i, coords + 1, classes,
                                     int(truth[b, 5 * t + 4]), class_scale,
                                     logistic_classes)
            if full:            # Darknet's region quirk branch does not count the class
                stats[1] += p
            stats[0] += iou
            stats[4] += iou > 0.5
            stats[5] += iou > 0.75
            stats[6] += 1
            stats[7] += 1


def _check(out, truth):
    check_f32("out", out, 5)
    check_f32("truth", truth, 2)
    if truth.shape[0] != out.shape[0]:
        raise ValueError(f"truth has {truth.shape[0]} rows for a batch of {out.shape[0]}")


def yolo_targets(out: np.ndarray, truth: np.ndarray, most: int, anchors: np.ndarray,
                 mask: np.ndarray, net_w: int, net_h: int, ignore_thresh: float,
                 truth_thresh: float, box_norm: float = 1.0, obj_norm: float = 1.0,
                 cls_norm: float = 1.0):
    """[yolo] (pjreddie, plus AH's normalizers as plain factors): returns (target, weight,
    stats). anchors (total, 2) in network-input pixels; mask (A,) the anchors of this
    head; `most` the `max` boxes read per image. Every read box must be valid (the layer
    checks: 0 < x, w, h; integer class in range)."""
    _check(out, truth)
    target = np.zeros_like(out)
    weight = np.zeros_like(out)
    stats = np.zeros(8)
    _yolo(out, truth, int(most), np.ascontiguousarray(anchors, np.float64),
          np.ascontiguousarray(mask, np.int64), float(net_w), float(net_h),
          float(ignore_thresh), float(truth_thresh), float(box_norm), float(obj_norm),
          float(cls_norm), target, weight, stats)
    return target, weight, stats


def region_targets(out: np.ndarray, truth: np.ndarray, most: int, anchors: np.ndarray,
                   coords: int, thresh: float, seen_early: bool, bias_match: bool,
                   rescore: bool, logistic_classes: bool, coord_scale: float,
                   object_scale: float, noobject_scale: float, class_scale: float):
    """[region] (pjreddie): returns (target, weight, stats). anchors (num, 2) in grid
    cells; seen_early: Darknet's `seen < 12800` prior targets."""
    _check(out, truth)
    target = np.zeros_like(out)
    weight = np.zeros_like(out)
    stats = np.zeros(8)
    _region(out, truth, int(most), np.ascontiguousarray(anchors, np.float64), int(coords),
            float(thresh), bool(seen_early), bool(bias_match), bool(rescore),
            bool(logistic_classes), float(coord_scale), float(object_scale),
            float(noobject_scale), float(class_scale), target, weight, stats)
    return target, weight, stats


def read_boxes(truth: np.ndarray, most: int) -> list[np.ndarray]:
    """Per image, the (n, 5) boxes Darknet reads: up to `most`, stopping at x == 0."""
    out = []
    for row in truth:
        boxes = row[:5 * min(most, len(row) // 5)].reshape(-1, 5)
        zero = np.flatnonzero(boxes[:, 0] == 0)
        out.append(boxes[:zero[0]] if len(zero) else boxes)
    return out
