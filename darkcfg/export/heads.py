"""The detection heads: their raw outputs as darkcfg's forward gives them (the in-layer
logistic, softmax and scale_x_y applied), and `--decode`'s boxes and scores.

Decoding follows each head's `decode` (layers/yolo.py, layers/region.py: Darknet's
get_yolo_detections / get_region_detections) with every entry kept (no threshold) and in
the same order, so that row k of `boxes`/`scores` is entry k of darkcfg.detection's
`network_boxes` for an image of the network's size:
- [yolo]: cell-major (row*W + col), then anchor of `mask`; x = (col + tx) / W, y likewise,
  w = exp(tw) * anchor_w / net_w (new_coords: tw^2 * 4 * anchor_w / net_w);
- [region]: anchor-major, then cell; w = exp(tw) * anchor_w / W (anchors in grid cells).
Boxes are then x1 y1 x2 y2 in network-input pixels; scores are objectness x class
probability (for [region], the class probability after its softmax or logistic).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..geometry import anchor_pairs
from .builder import Builder
from .sections import Context, emits

if TYPE_CHECKING:
    from ..layers.base import Layer


def _channel_mask(a: int, k: int, entries: list[int] | range) -> np.ndarray:
    """(1, a*k, 1, 1) True at the given entries of every anchor's k channels."""
    m = np.zeros((a, k), bool)
    m[:, list(entries)] = True
    return m.reshape(1, a * k, 1, 1)


@emits("yolo")
def yolo(ctx: Context, layer: Layer, x: str) -> str:
    # logistic on x, y, objectness and classes (none with new_coords), then x, y mapped
    # to x * s - (s - 1) / 2 (scale_x_y); per-channel masks and factors, no reshapes
    b = ctx.b
    a = len(layer.mask)
    k = 5 + layer.classes
    y = x
    if not layer.opts["new_coords"]:
        entries = [0, 1, *range(4, k)]
        y = b.op("Where", [b.const(_channel_mask(a, k, entries), "logistic_channels"),
                           b.op("Sigmoid", [x]), x])
    return _scale_xy(b, y, a, k, [0, 1], layer.opts["scale_x_y"])


def _scale_xy(b, y: str, a: int, k: int, entries: list[int], s: float) -> str:
    """AlexeyAB's scale_x_y on the box-centre entries of each of a anchors' k channels:
    s * y - (s - 1) / 2 there, y elsewhere (nothing added when s is 1)."""
    if s == 1.0:
        return y
    xy = _channel_mask(a, k, entries)
    scale = np.where(xy, np.float32(s), np.float32(1))
    shift = np.where(xy, np.float32(-0.5 * (s - 1.0)), np.float32(0))
    return b.op("Add", [b.op("Mul", [y, b.const(scale, "scale_x_y")]),
                        b.const(shift, "shift_x_y")])


@emits("region")
def region(ctx: Context, layer: Layer, x: str) -> str:
    # logistic on x, y and objectness (entry `coords`); the classes get a softmax across
    # them at every cell (softmax=1) or a logistic
    b = ctx.b
    n, coords, classes = layer.num, layer.coords, layer.classes
    k = coords + 1 + classes
    c, h, w = layer.in_shape
    logistic = [0, 1, coords] + ([] if layer.opts["softmax"] else list(range(coords + 1, k)))
    y = b.op("Where", [b.const(_channel_mask(n, k, logistic), "logistic_channels"),
                       b.op("Sigmoid", [x]), x])
    if not (layer.opts["softmax"] and classes):
        return y
    t = b.reshape(y, [0, n, k, h * w])
    head = b.slice(t, 2, 0, coords + 1)
    probs = b.op("Softmax", [b.slice(t, 2, coords + 1, k)], axis=2)
    return b.reshape(b.op("Concat", [head, probs], axis=2), [0, c, h, w])


@emits("Gaussian_yolo")
def gaussian_yolo(ctx: Context, layer: Layer, x: str) -> str:
    # logistic on x, sigma x, y, sigma y, sigma w, sigma h, objectness and the classes;
    # scale_x_y on the x and y means only (layers/gaussian_yolo.py)
    b = ctx.b
    a, k = len(layer.mask), 9 + layer.classes
    entries = [0, 1, 2, 3, 5, 7, *range(8, k)]
    y = b.op("Where", [b.const(_channel_mask(a, k, entries), "logistic_channels"),
                       b.op("Sigmoid", [x]), x])
    return _scale_xy(b, y, a, k, [0, 2], layer.opts["scale_x_y"])


@emits("detection")
def detection(ctx: Context, layer: Layer, x: str) -> str:
    # YOLOv1: the input, with a softmax over each cell's classes (the first side^2 *
    # classes values, cell-major) when softmax=1 (layers/detection.py)
    if not layer.opts["softmax"]:
        return x
    b = ctx.b
    cells = layer.side * layer.side
    split = cells * layer.classes
    flat = b.op("Flatten", [x], axis=1)
    probs = b.op("Softmax", [b.reshape(b.slice(flat, 1, 0, split), [0, cells,
                                                                     layer.classes])], axis=2)
    rest = b.slice(flat, 1, split, layer.inputs)
    joined = b.op("Concat", [b.reshape(probs, [0, split]), rest], axis=1)
    return b.reshape(joined, [0, *layer.out_shape])


# --- --decode --------------------------------------------------------------------------------

DECODES = ("yolo", "Gaussian_yolo", "region", "detection")


def decode(b: Builder, layer: Layer, raw: str, net_w: int, net_h: int) -> tuple[str, str]:
    """One head's (boxes (N, K, 4), scores (N, K, classes)) from its raw output."""
    b.start_layer(f"{layer.index}_{layer.type}_decode")
    if layer.type == "detection":
        return _decode_detection(b, layer, raw, net_w, net_h)
    _, lh, lw = layer.out_shape
    hw = lh * lw
    cells = np.arange(hw)
    gaussian = layer.type == "Gaussian_yolo"
    if layer.type in ("yolo", "Gaussian_yolo"):
        anchors = anchor_pairs(layer.anchors, layer.total)[layer.mask]
        a, k = len(anchors), layer.per_anchor + layer.classes
        # (N, A, K, HW) -> (N, HW, A, K): cell-major, then anchor
        t = b.op("Transpose", [b.reshape(raw, [0, a, k, hw])], perm=[0, 3, 1, 2])
        cell, anc = np.repeat(cells, a), np.tile(np.arange(a), hw)
        # in pixels: exp(tw) * anchor_w (or tw^2 * 4 * anchor_w)
        scale_w, scale_h = anchors[anc, 0], anchors[anc, 1]
    else:
        anchors = anchor_pairs(layer.anchors, layer.num)
        a, k = layer.num, layer.coords + 1 + layer.classes
        # (N, A, K, HW) -> (N, A, HW, K): anchor-major, then cell
        t = b.op("Transpose", [b.reshape(raw, [0, a, k, hw])], perm=[0, 1, 3, 2])
        cell, anc = np.tile(cells, a), np.repeat(np.arange(a), hw)
        # anchors in grid cells: exp(tw) * anchor_w / W in units of the input width
        scale_w = anchors[anc, 0].astype(np.float64) / lw * net_w
        scale_h = anchors[anc, 1].astype(np.float64) / lh * net_h
    t = b.reshape(t, [0, a * hw, k])
    # entries: x, y, w, h, objectness, first class
    tx, ty, tw, th, obj, cls = (0, 2, 4, 6, 8, 9) if gaussian else \
        (0, 1, 2, 3, 4, 5) if layer.type == "yolo" else \
        (0, 1, 2, 3, layer.coords, layer.coords + 1)

    def entry(i: int) -> str:
        return b.slice(t, 2, i, i + 1)

    def size(i: int, anchor: np.ndarray) -> str:
        v = entry(i)
        if layer.type == "yolo" and layer.opts["new_coords"]:
            grown = b.scale_shift(b.op("Mul", [v, v]), 4.0)
        else:
            grown = b.op("Exp", [v])
        return b.op("Mul", [grown, b.const(anchor.reshape(1, -1, 1), "anchors")])

    cx = _centre(b, cell % lw, entry(tx), lw, net_w)
    cy = _centre(b, cell // lw, entry(ty), lh, net_h)
    w, h = size(tw, scale_w), size(th, scale_h)
    point = layer.opts.get("yolo_point", "center")
    if gaussian and point != "center":      # x, y locate a corner: the centre is half a
        sign = 0.5 if point == "left_top" else -0.5     # box away
        cx = b.op("Add", [cx, b.scale_shift(w, sign)])
        cy = b.op("Add", [cy, b.scale_shift(h, sign)])
    scores = b.op("Mul", [entry(obj), b.slice(t, 2, cls, k)])
    if gaussian:    # times 1 - the mean of the four uncertainties (AH's prob)
        sigmas = b.op("Add", [b.op("Add", [b.op("Add", [entry(1), entry(3)]), entry(5)]),
                              entry(7)])
        scores = b.op("Mul", [scores, b.scale_shift(sigmas, -0.25, 1.0)])
    return _corners(b, cx, cy, w, h), scores


def _centre(b: Builder, index: np.ndarray, offset: str, cells: int, pixels: int) -> str:
    """(index + offset) / cells as darkcfg computes it, then in input pixels."""
    where = b.const(index.astype(np.float32).reshape(1, -1, 1), "grid")
    return b.scale_shift(b.scale_shift(b.op("Add", [where, offset]), 1.0 / cells), pixels)


def _corners(b: Builder, cx: str, cy: str, w: str, h: str) -> str:
    half_w, half_h = b.scale_shift(w, 0.5), b.scale_shift(h, 0.5)
    return b.op("Concat", [b.op("Sub", [cx, half_w]), b.op("Sub", [cy, half_h]),
                           b.op("Add", [cx, half_w]), b.op("Add", [cy, half_h])], axis=2)


def _decode_detection(b: Builder, layer: Layer, raw: str, net_w: int,
                      net_h: int) -> tuple[str, str]:
    # YOLOv1 (layers/detection.py: decode): entry i*num + n of cell i; its box block
    # (x, y within the cell, w, h of the image; sqrt=1 squares w, h), its raw scale, the
    # cell's classes
    side, num, classes = layer.side, layer.num, layer.classes
    cells = side * side
    entries = cells * num
    flat = b.op("Flatten", [raw], axis=1)
    split = [0, cells * classes, cells * (classes + num), cells * (classes + num + 4 * num)]
    cls = b.reshape(b.slice(flat, 1, split[0], split[1]), [0, cells, classes])
    scale = b.reshape(b.slice(flat, 1, split[1], split[2]), [0, entries, 1])
    box = b.reshape(b.slice(flat, 1, split[2], split[3]), [0, entries, 4])
    cell = np.arange(entries) // num
    per_entry = b.op("Gather", [cls, b.const(cell.astype(np.int64), "cell")], axis=1)

    def entry(i: int) -> str:
        return b.slice(box, 2, i, i + 1)

    def size(i: int, pixels: int) -> str:
        v = entry(i)
        if layer.opts["sqrt"]:
            v = b.op("Mul", [v, v])
        return b.scale_shift(v, pixels)

    cx = _centre(b, cell % side, entry(0), side, net_w)
    cy = _centre(b, cell // side, entry(1), side, net_h)
    boxes = _corners(b, cx, cy, size(2, net_w), size(3, net_h))
    return boxes, b.op("Mul", [scale, per_entry])
