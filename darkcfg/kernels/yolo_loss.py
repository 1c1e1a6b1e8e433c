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
    inter, union = _inter_union(ax, ay, aw, ah, bx, by, bw, bh)
    return inter / union


@jit
def _inter_union(ax, ay, aw, ah, bx, by, bw, bh):
    w = _overlap(ax, aw, bx, bw)
    h = _overlap(ay, ah, by, bh)
    inter = 0.0 if (w < 0 or h < 0) else w * h
    return inter, aw * ah + bw * bh - inter


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
            best_n = _best_anchor(anchors, total, net_w, net_h, tw, th, False)
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


def read_boxes(truth: np.ndarray, most: int, size: int = 5) -> list[np.ndarray]:
    """Per image, the (n, size) boxes Darknet reads (`size` floats per box: 5, or AB's
    [yolo] 6): up to `most`, stopping at x == 0."""
    out = []
    for row in truth:
        boxes = row[:size * min(most, len(row) // size)].reshape(-1, size)
        zero = np.flatnonzero(boxes[:, 0] == 0)
        out.append(boxes[:zero[0]] if len(zero) else boxes)
    return out


# ---------------------------------------------------------------------------------------
# AlexeyAB's [yolo] loss (src/yolo_layer.c: process_batch, delta_yolo_box,
# delta_yolo_class, averages_yolo_deltas; src/box.c: dx_box_iou). It writes Darknet's
# delta directly: its IoU-family box deltas are not of the weight * (target - out) form.

# AB's IOU_LOSS kinds as darkcfg numbers them (iou_loss= and iou_thresh_kind=)
IOU_KINDS = {"mse": 0, "iou": 1, "giou": 2, "diou": 3, "ciou": 4}
MSE, IOU, GIOU, DIOU, CIOU = 0, 1, 2, 3, 4
# AB's sums, in `sums`: IoU, 1 - IoU, 1 - GIoU, truths trained (count), class sum, obj
# sum at truths, obj sum everywhere, IoU > .5, IoU > .75, boxes trained (total_bbox),
# boxes written twice (rewritten_bbox)
S_IOU, S_IOU_LOSS, S_GIOU_LOSS, S_COUNT, S_CLASS, S_OBJ, S_ANYOBJ, S_R50, S_R75, \
    S_BBOX, S_REWRITTEN = range(11)
_PI = 3.141592653589793


@jit
def _box_c(ax, ay, aw, ah, bx, by, bw, bh):
    # the enclosing box (src/box.c: box_c): width, height
    top = min(ay - ah / 2, by - bh / 2)
    bot = max(ay + ah / 2, by + bh / 2)
    left = min(ax - aw / 2, bx - bw / 2)
    right = max(ax + aw / 2, bx + bw / 2)
    return right - left, bot - top


@jit
def _iou_ab(ax, ay, aw, ah, bx, by, bw, bh):
    # AB's box_iou: 0 when the intersection or the union is 0
    inter, union = _inter_union(ax, ay, aw, ah, bx, by, bw, bh)
    if inter == 0 or union == 0:
        return 0.0
    return inter / union

@jit
def _best_anchor(anchors, total, net_w, net_h, tw, th, ab):
    """The anchor (of all `total`) whose shape best fits a truth of size tw x th, by IoU
    of centred boxes; the first maximum wins. ab: AlexeyAB's box_iou (0 for an empty
    union) instead of Darknet's."""
    best, best_n = 0.0, 0
    for n in range(total):
        pw, ph = anchors[n, 0] / net_w, anchors[n, 1] / net_h
        iou = _iou_ab(0.0, 0.0, pw, ph, 0.0, 0.0, tw, th) if ab else \
            _iou(0.0, 0.0, pw, ph, 0.0, 0.0, tw, th)
        if iou > best:
            best, best_n = iou, n
    return best_n


@jit
def iou_kind(ax, ay, aw, ah, bx, by, bw, bh, kind):
    """AB's box_iou / box_giou / box_diou / box_ciou (src/box.c: box_iou_kind)."""
    iou = _iou_ab(ax, ay, aw, ah, bx, by, bw, bh)
    if kind == GIOU:
        cw, ch = _box_c(ax, ay, aw, ah, bx, by, bw, bh)
        c = cw * ch
        if c == 0:
            return iou
        w = _overlap(ax, aw, bx, bw)
        h = _overlap(ay, ah, by, bh)
        inter = 0.0 if (w < 0 or h < 0) else w * h
        u = aw * ah + bw * bh - inter
        return iou - (c - u) / c
    if kind >= DIOU:                     # DIOU, CIOU
        cw, ch = _box_c(ax, ay, aw, ah, bx, by, bw, bh)
        c = cw * cw + ch * ch
        if c == 0:
            return iou
        d = (ax - bx) * (ax - bx) + (ay - by) * (ay - by)
        if kind == DIOU:
            return iou - (d / c) ** 0.6       # AB's box_diou: exponent 0.6
        dv = math.atan(bw / bh) - math.atan(aw / ah)
        ar = 4 / (_PI * _PI) * dv * dv
        alpha = ar / (1 - iou + ar + 0.000001)
        return iou - (d / c + alpha * ar)
    return iou


@jit
def dx_box_iou(px, py, pw, ph, tx, ty, tw, th, kind):
    """AB's dx_box_iou (src/box.c): the box delta (dx, dy, dw, dh) of the IoU-family
    losses w.r.t. the decoded box, as AB defines it: x, y as d/d(centre); w, h as
    d/d(right) - d/d(left) of the IoU (or GIoU) part, i.e. twice d/d(size); the DIoU
    centre term is d(d^2/c^2) (exponent 1, the enclosing box's derivative with AB's
    sign); the CIoU aspect term without the 1/(w^2+h^2) factor."""
    pt, pb = min(py - ph / 2, py + ph / 2), max(py - ph / 2, py + ph / 2)
    pl, pr = min(px - pw / 2, px + pw / 2), max(px - pw / 2, px + pw / 2)
    tt, tb, tl, tr = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    X = (pb - pt) * (pr - pl)
    Xhat = (tb - tt) * (tr - tl)
    Ih = min(pb, tb) - max(pt, tt)
    Iw = min(pr, tr) - max(pl, tl)
    inter = Iw * Ih
    U = X + Xhat - inter
    S = (px - tx) * (px - tx) + (py - ty) * (py - ty)
    gcw = max(pr, tr) - min(pl, tl)
    gch = max(pb, tb) - min(pt, tt)
    gc = gcw * gch
    dX_t, dX_b, dX_l, dX_r = -(pr - pl), pr - pl, -(pb - pt), pb - pt
    dI_t = -Iw if pt > tt else 0.0
    dI_b = Iw if pb < tb else 0.0
    dI_l = -Ih if pl > tl else 0.0
    dI_r = Ih if pr < tr else 0.0
    dU_t, dU_b, dU_l, dU_r = dX_t - dI_t, dX_b - dI_b, dX_l - dI_l, dX_r - dI_r
    dC_t = -gcw if pt < tt else 0.0
    dC_b = gcw if pb > tb else 0.0
    dC_l = -gch if pl < tl else 0.0
    dC_r = gch if pr > tr else 0.0
    p_t = p_b = p_l = p_r = 0.0
    if U > 0:
        p_t = (U * dI_t - inter * dU_t) / (U * U)
        p_b = (U * dI_b - inter * dU_b) / (U * U)
        p_l = (U * dI_l - inter * dU_l) / (U * U)
        p_r = (U * dI_r - inter * dU_r) / (U * U)
    if kind == GIOU:
        g_t = (gc * dU_t - U * dC_t) / (gc * gc)
        g_b = (gc * dU_b - U * dC_b) / (gc * gc)
        g_l = (gc * dU_l - U * dC_l) / (gc * gc)
        g_r = (gc * dU_r - U * dC_r) / (gc * gc)
        if Iw <= 0 or Ih <= 0:
            p_t, p_b, p_l, p_r = g_t, g_b, g_l, g_r
        elif gc > 0:
            p_t, p_b, p_l, p_r = p_t + g_t, p_b + g_b, p_l + g_l, p_r + g_r
    cw, ch = gcw, gch                   # AB recomputes the same enclosing box
    C = cw * cw + ch * ch
    dCw_dx = (1.0 if pr > tr else 0.0) - (1.0 if pl < tl else 0.0)
    dCw_dw = (0.5 if pr > tr else 0.0) - (-0.5 if pl < tl else 0.0)
    dCh_dy = (1.0 if pb > tb else 0.0) - (1.0 if pt < tt else 0.0)
    dCh_dh = (0.5 if pb > tb else 0.0) - (-0.5 if pt < tt else 0.0)
    dx, dy = p_l + p_r, p_t + p_b
    dw, dh = p_r - p_l, p_b - p_t
    if kind >= DIOU:                     # DIOU, CIOU
        ex = ey = ew = eh = 0.0
        if C > 0:
            ex = (2 * (tx - px) * C - 2 * cw * dCw_dx * S) / (C * C)
            ey = (2 * (ty - py) * C - 2 * ch * dCh_dy * S) / (C * C)
            ew = 2 * cw * dCw_dw * S / (C * C)
            eh = 2 * ch * dCh_dh * S / (C * C)
        if kind == CIOU:
            dv = math.atan(tw / th) - math.atan(pw / ph)
            ar = 4 / (_PI * _PI) * dv * dv
            alpha = ar / (1 - inter / U + ar + 0.000001)
            ew += alpha * 8 / (_PI * _PI) * dv * ph
            eh += alpha * -8 / (_PI * _PI) * dv * pw
        if Iw <= 0 or Ih <= 0:
            dx, dy, dw, dh = ex, ey, ew, eh
        elif C > 0:
            dx, dy, dw, dh = dx + ex, dy + ey, dw + ew, dh + eh
    return dx, dy, dw, dh


@jit
def _pred_box(out, b, a, j, i, aw, ah, w, h, net_w, net_h, new_coords):
    # AB's get_yolo_box on this head's output
    px = (i + np.float64(out[b, a, 0, j, i])) / w
    py = (j + np.float64(out[b, a, 1, j, i])) / h
    if new_coords:
        tw, th = np.float64(out[b, a, 2, j, i]), np.float64(out[b, a, 3, j, i])
        return px, py, tw * tw * 4 * aw / net_w, th * th * 4 * ah / net_h
    return (px, py, math.exp(out[b, a, 2, j, i]) * aw / net_w,
            math.exp(out[b, a, 3, j, i]) * ah / net_h)


@jit
def _finite_or_zero(v):
    return 0.0 if (math.isnan(v) or math.isinf(v)) else v


@jit
def _delta_box_ab(out, delta, b, a, j, i, tx, ty, tw, th, aw, ah, w, h, net_w, net_h,
                  scale, iou_norm, kind, max_delta, new_coords, sums):
    # AB's delta_yolo_box with accumulate=1: the box delta is ADDED. Returns the IoU
    # sums' inputs (iou, giou).
    if (delta[b, a, 0, j, i] != 0 or delta[b, a, 1, j, i] != 0 or
            delta[b, a, 2, j, i] != 0 or delta[b, a, 3, j, i] != 0):
        sums[S_REWRITTEN] += 1
    px, py, pw, ph = _pred_box(out, b, a, j, i, aw, ah, w, h, net_w, net_h, new_coords)
    iou = iou_kind(px, py, pw, ph, tx, ty, tw, th, IOU)
    giou = iou_kind(px, py, pw, ph, tx, ty, tw, th, GIOU)
    if pw == 0:
        pw = 1.0
    if ph == 0:
        ph = 1.0
    if kind == MSE:
        gx = np.float32(tx) * np.float32(w) - np.float32(i)
        gy = np.float32(ty) * np.float32(h) - np.float32(j)
        if new_coords:
            gw = math.sqrt(tw * net_w / (4 * aw))
            gh = math.sqrt(th * net_h / (4 * ah))
        else:
            gw = math.log(tw * net_w / aw)
            gh = math.log(th * net_h / ah)
        g = (np.float64(gx), np.float64(gy), gw, gh)
        for e in range(4):
            delta[b, a, e, j, i] += scale * (g[e] - out[b, a, e, j, i]) * iou_norm
        return iou, giou
    dx, dy, dw, dh = dx_box_iou(px, py, pw, ph, tx, ty, tw, th, kind)
    if not new_coords:
        dw *= math.exp(out[b, a, 2, j, i])
        dh *= math.exp(out[b, a, 3, j, i])
    d = (dx, dy, dw, dh)
    for e in range(4):
        v = _finite_or_zero(d[e] * iou_norm)
        delta[b, a, e, j, i] += min(max(v, -max_delta), max_delta)
    return iou, giou


@jit
def _delta_class_ab(out, delta, b, a, j, i, classes, cls, focal, eps, mult, cls_norm,
                    has_mult):
    # AB's delta_yolo_class; returns the probability of `cls` (AB's avg_cat term)
    c0 = 5
    if delta[b, a, c0 + cls, j, i] != 0:
        # an earlier truth already set this cell's class entries: only `cls` is reset
        y = 1.0
        if eps:
            y = y * (1 - eps) + 0.5 * eps
        r = y - out[b, a, c0 + cls, j, i]
        if not (math.isnan(r) or math.isinf(r)):
            delta[b, a, c0 + cls, j, i] = r
        if has_mult:
            delta[b, a, c0 + cls, j, i] *= mult[cls]
        return out[b, a, c0 + cls, j, i]
    if focal:
        alpha = 0.5
        pt = np.float64(out[b, a, c0 + cls, j, i]) + 1e-15
        grad = -(1 - pt) * (2 * pt * math.log(pt) + pt - 1)
        for n in range(classes):
            one = 1.0 if n == cls else 0.0
            delta[b, a, c0 + n, j, i] = (one - out[b, a, c0 + n, j, i]) * alpha * grad
        return out[b, a, c0 + cls, j, i]
    for n in range(classes):
        y = 1.0 if n == cls else 0.0
        if eps:
            y = y * (1 - eps) + 0.5 * eps
        r = y - out[b, a, c0 + n, j, i]
        if not (math.isnan(r) or math.isinf(r)):
            delta[b, a, c0 + n, j, i] = r
        if has_mult and n == cls:
            delta[b, a, c0 + n, j, i] *= mult[cls] * cls_norm
    return out[b, a, c0 + cls, j, i]


@jit
def _yolo_ab(out, truth, tsize, most, anchors, mask, net_w, net_h, ignore_thresh,
             truth_thresh, iou_norm, obj_norm, cls_norm, kind, max_delta, iou_thresh,
             thresh_kind, new_coords, focal, eps, obj_smooth, mult, has_mult, delta, sums):
    n_b, n_a, k, h, w = out.shape
    classes = k - 5
    total = anchors.shape[0]
    for b in range(n_b):
        nt = 0
        while nt < most and tsize * nt + 4 < truth.shape[1] and truth[b, tsize * nt] != 0:
            nt += 1
        # pass 1: every cell and anchor, objectness against the truths
        for j in range(h):
            for i in range(w):
                for a in range(n_a):
                    aw, ah = anchors[mask[a], 0], anchors[mask[a], 1]
                    px, py, pw, ph = _pred_box(out, b, a, j, i, aw, ah, w, h, net_w,
                                               net_h, new_coords)
                    # compare_yolo_class: the cell has some class prob > 0.25
                    class_match = False
                    for c in range(classes):
                        if out[b, a, 5 + c, j, i] > 0.25:
                            class_match = True
                    best_match, best, best_t = 0.0, 0.0, 0
                    for t in range(nt):
                        o = tsize * t
                        iou = _iou_ab(px, py, pw, ph, truth[b, o], truth[b, o + 1],
                                      truth[b, o + 2], truth[b, o + 3])
                        if iou > best_match and class_match:
                            best_match = iou
                        if iou > best:
                            best, best_t = iou, t
                    obj = out[b, a, 4, j, i]
                    sums[S_ANYOBJ] += obj
                    delta[b, a, 4, j, i] = obj_norm * (0 - obj)
                    if best_match > ignore_thresh:
                        if obj_smooth:
                            d = obj_norm * (best_match - obj)
                            if d > delta[b, a, 4, j, i]:
                                delta[b, a, 4, j, i] = d
                        else:
                            delta[b, a, 4, j, i] = 0
                    if best > truth_thresh:
                        o = tsize * best_t
                        cls = int(truth[b, o + 4])
                        m = mult[cls] if has_mult else 1.0
                        if obj_smooth:
                            delta[b, a, 4, j, i] = obj_norm * (best * best - obj)
                        else:
                            delta[b, a, 4, j, i] = obj_norm * (1 - obj)
                        _delta_class_ab(out, delta, b, a, j, i, classes, cls, focal, eps,
                                        mult, cls_norm, has_mult)
                        if obj_smooth:
                            delta[b, a, 5 + cls, j, i] = m * (best * best -
                                                              out[b, a, 5 + cls, j, i])
                        tw, th = truth[b, o + 2], truth[b, o + 3]
                        _delta_box_ab(out, delta, b, a, j, i, truth[b, o], truth[b, o + 1],
                                      tw, th, aw, ah, w, h, net_w, net_h,
                                      2.0 - np.float32(tw * th), iou_norm * m, kind,
                                      max_delta, new_coords, sums)
                        sums[S_BBOX] += 1
        # pass 2: every truth, its best anchor (and with iou_thresh < 1 the others)
        for t in range(nt):
            o = tsize * t
            tx, ty, tw, th = truth[b, o], truth[b, o + 1], truth[b, o + 2], truth[b, o + 3]
            cls = int(truth[b, o + 4])
            m = mult[cls] if has_mult else 1.0
            i, j = _cell(tx, w), _cell(ty, h)
            best_n = _best_anchor(anchors, total, net_w, net_h, tw, th, True)
            # the best anchor first, then (iou_thresh < 1) the others in order
            for step in range(total + 1):
                n = best_n if step == 0 else step - 1
                if step > 0 and n == best_n:
                    continue
                a = -1
                for q in range(n_a):
                    if mask[q] == n:
                        a = q
                        break
                if a < 0:
                    continue
                if step > 0:
                    if iou_thresh >= 1.0:
                        continue
                    shape_iou = iou_kind(0.0, 0.0, anchors[n, 0] / net_w,
                                         anchors[n, 1] / net_h, 0.0, 0.0, tw, th,
                                         thresh_kind)
                    if not shape_iou > iou_thresh:
                        continue
                iou, giou = _delta_box_ab(out, delta, b, a, j, i, tx, ty, tw, th,
                                          anchors[n, 0], anchors[n, 1], w, h, net_w, net_h,
                                          2.0 - np.float32(tw * th), iou_norm * m, kind,
                                          max_delta, new_coords, sums)
                sums[S_BBOX] += 1
                sums[S_IOU] += iou
                sums[S_IOU_LOSS] += 1 - iou
                sums[S_GIOU_LOSS] += 1 - giou
                obj = out[b, a, 4, j, i]
                sums[S_OBJ] += obj
                d = m * obj_norm * (1 - obj)
                if not obj_smooth or delta[b, a, 4, j, i] == 0:
                    delta[b, a, 4, j, i] = d
                sums[S_CLASS] += _delta_class_ab(out, delta, b, a, j, i, classes, cls,
                                                 focal, eps, mult, cls_norm, has_mult)
                sums[S_COUNT] += 1
                sums[S_R50] += iou > 0.5
                sums[S_R75] += iou > 0.75
        if iou_thresh < 1.0:
            # averages_yolo_deltas: a box trained by several truths is their mean,
            # counting the positive class deltas
            for j in range(h):
                for i in range(w):
                    for a in range(n_a):
                        if delta[b, a, 4, j, i] == 0:
                            continue
                        pos = 0
                        for c in range(classes):
                            if delta[b, a, 5 + c, j, i] > 0:
                                pos += 1
                        if pos > 0:
                            for e in range(4):
                                delta[b, a, e, j, i] /= pos


def yolo_delta_ab(out: np.ndarray, truth: np.ndarray, truth_size: int, most: int,
                  anchors: np.ndarray, mask: np.ndarray, net_w: int, net_h: int, *,
                  ignore_thresh: float, truth_thresh: float, iou_normalizer: float,
                  obj_normalizer: float, cls_normalizer: float, iou_loss: str,
                  max_delta: float, iou_thresh: float, iou_thresh_kind: str,
                  new_coords: bool, focal_loss: bool, label_smooth_eps: float,
                  objectness_smooth: bool, classes_multipliers: np.ndarray | None):
    """AlexeyAB's [yolo] delta (Darknet's sign: minus the gradient) and its sums (see
    S_*), from `out` (N, A, K, H, W) and the truth (N, T) with `truth_size` floats per
    box (6 in AB: x y w h class track_id). The order of the passes and every quirk is
    AB's process_batch (README, "AlexeyAB's [yolo] deltas")."""
    _check(out, truth)
    delta = np.zeros_like(out)
    sums = np.zeros(11)
    has_mult = classes_multipliers is not None
    mult = np.ones(1) if not has_mult else np.ascontiguousarray(classes_multipliers,
                                                                  np.float64)
    _yolo_ab(out, truth, int(truth_size), int(most), np.ascontiguousarray(anchors, np.float64),
             np.ascontiguousarray(mask, np.int64), float(net_w), float(net_h),
             float(ignore_thresh), float(truth_thresh), float(iou_normalizer),
             float(obj_normalizer), float(cls_normalizer), IOU_KINDS[iou_loss],
             float(max_delta), float(iou_thresh), IOU_KINDS[iou_thresh_kind],
             bool(new_coords), bool(focal_loss), float(label_smooth_eps),
             bool(objectness_smooth), mult, has_mult, delta, sums)
    return delta, sums
