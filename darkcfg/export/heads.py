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
    s = layer.opts["scale_x_y"]
    if s != 1.0:
        xy = _channel_mask(a, k, [0, 1])
        scale = np.where(xy, np.float32(s), np.float32(1))
        shift = np.where(xy, np.float32(-0.5 * (s - 1.0)), np.float32(0))
        y = b.op("Add", [b.op("Mul", [y, b.const(scale, "scale_x_y")]),
                         b.const(shift, "shift_x_y")])
    return y


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


# --- --decode --------------------------------------------------------------------------------

def decode(b: Builder, layer: Layer, raw: str, net_w: int, net_h: int) -> tuple[str, str]:
    """One head's (boxes (N, K, 4), scores (N, K, classes)) from its raw output."""
    b.start_layer(f"{layer.index}_{layer.type}_decode")
    _, lh, lw = layer.out_shape
    hw = lh * lw
    cells = np.arange(hw)
    if layer.type == "yolo":
        anchors = anchor_pairs(layer.anchors, layer.total)[layer.mask]
        a, k, obj, cls = len(anchors), 5 + layer.classes, 4, 5
        # (N, A, K, HW) -> (N, HW, A, K): cell-major, then anchor
        t = b.op("Transpose", [b.reshape(raw, [0, a, k, hw])], perm=[0, 3, 1, 2])
        cell, anc = np.repeat(cells, a), np.tile(np.arange(a), hw)
        # in pixels: exp(tw) * anchor_w (or tw^2 * 4 * anchor_w)
        scale_w, scale_h = anchors[anc, 0], anchors[anc, 1]
    else:
        anchors = anchor_pairs(layer.anchors, layer.num)
        a, k, obj, cls = layer.num, layer.coords + 1 + layer.classes, layer.coords, \
            layer.coords + 1
        # (N, A, K, HW) -> (N, A, HW, K): anchor-major, then cell
        t = b.op("Transpose", [b.reshape(raw, [0, a, k, hw])], perm=[0, 1, 3, 2])
        cell, anc = np.tile(cells, a), np.repeat(np.arange(a), hw)
        # anchors in grid cells: exp(tw) * anchor_w / W in units of the input width
        scale_w = anchors[anc, 0].astype(np.float64) / lw * net_w
        scale_h = anchors[anc, 1].astype(np.float64) / lh * net_h
    t = b.reshape(t, [0, a * hw, k])
    col = (cell % lw).astype(np.float32).reshape(1, -1, 1)
    row = (cell // lw).astype(np.float32).reshape(1, -1, 1)

    def entry(i: int) -> str:
        return b.slice(t, 2, i, i + 1)

    def size(i: int, anchor: np.ndarray) -> str:
        v = entry(i)
        if layer.type == "yolo" and layer.opts["new_coords"]:
            grown = b.scale_shift(b.op("Mul", [v, v]), 4.0)
        else:
            grown = b.op("Exp", [v])
        return b.op("Mul", [grown, b.const(anchor.reshape(1, -1, 1), "anchors")])

    # centres as darkcfg computes them, (col + x) / W, then in pixels
    cx = b.scale_shift(b.scale_shift(b.op("Add", [b.const(col, "col"), entry(0)]),
                                     1.0 / lw), net_w)
    cy = b.scale_shift(b.scale_shift(b.op("Add", [b.const(row, "row"), entry(1)]),
                                     1.0 / lh), net_h)
    half_w = b.scale_shift(size(2, scale_w), 0.5)
    half_h = b.scale_shift(size(3, scale_h), 0.5)
    boxes = b.op("Concat", [b.op("Sub", [cx, half_w]), b.op("Sub", [cy, half_h]),
                            b.op("Add", [cx, half_w]), b.op("Add", [cy, half_h])], axis=2)
    scores = b.op("Mul", [entry(obj), b.slice(t, 2, cls, k)])
    return boxes, scores
