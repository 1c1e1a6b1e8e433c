"""Detections from `[yolo]` and `[region]` heads: Darknet's box decoding, its letterbox
undo, thresholds and greedy NMS.

The numbers follow pjreddie/darknet f6afaab, as `darknet detect` computes them:

1. `network_boxes` is `get_network_boxes(net, img_w, img_h, thresh, hier, 0, relative=1)`:
   every head in network order decodes its (already activated) output into Darknet's
   `dets` array, then the boxes are mapped from the letterboxed network input back to the
   original image (`correct_yolo_boxes` / `correct_region_boxes`; relative coordinates,
   not clipped).
2. `nms_sort` is `do_nms_sort(dets, n, classes, nms)`; when the last `[yolo]` asks for
   `nms_kind=diounms` (or greedynms/cornersnms) it is AlexeyAB's `diounms_sort`.
3. `detections` lists every (entry, class) whose probability survived, as `darknet
   detect` prints them.

The float32/float64 mix of Darknet's C expressions is kept where it moves a value across a
threshold; `../shared/reference/detection` pins every box (tests/test_detect.py).
`[yolo]` scale_x_y and the activations are applied by the layers' forward passes (AH do
it in forward_yolo_layer too), so decoding reads x, y as they come.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DarkcfgError

if TYPE_CHECKING:
    from ..graph import Graph
    from ..layers.base import Layer
    from ..network import Network

F32, F64 = np.float32, np.float64
HEAD_TYPES = ("yolo", "region")
NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")


# ---------------------------------------------------------------------------------------
# what decoding needs from a head

@dataclass(frozen=True)
class Head:
    """A `[yolo]` or `[region]` layer as decoding sees it."""
    kind: str                   # "yolo" or "region"
    index: int                  # layer index in the network
    h: int                      # grid rows
    w: int                      # grid columns
    classes: int
    anchors: np.ndarray         # (n, 2) float32 anchor w, h of each output anchor:
                                # yolo: anchors[mask[k]] in input pixels; region: grid cells
    coords: int = 4             # region: objectness sits at entry `coords`
    new_coords: bool = False    # yolo (AH): w = (2 sigma)^2 anchor, no exp

    @property
    def entries(self) -> int:
        """Values per anchor and cell."""
        return (5 if self.kind == "yolo" else self.coords + 1) + self.classes


def _biases(layer: Layer, count: int) -> np.ndarray:
    """Darknet's `biases`: `count` (w, h) pairs, 0.5 where the cfg lists none."""
    listed = np.asarray(layer.opts.get("anchors") or [], dtype=F32)[:2 * count]
    out = np.full(2 * count, 0.5, dtype=F32)
    out[:len(listed)] = listed
    return out.reshape(count, 2)


def head_of(layer: Layer) -> Head:
    """The decoding description of a `[yolo]` or `[region]` layer."""
    _, h, w = layer.out_shape
    if layer.type == "yolo":
        mask = list(layer.mask)
        total = max(int(getattr(layer, "total", layer.opts["num"])), max(mask) + 1)
        return Head("yolo", layer.index, h, w, int(layer.opts["classes"]),
                    _biases(layer, total)[mask], new_coords=bool(layer.opts["new_coords"]))
    if layer.type == "region":
        num = int(layer.opts["num"])
        return Head("region", layer.index, h, w, int(layer.opts["classes"]),
                    _biases(layer, num), coords=int(layer.opts["coords"]))
    raise DarkcfgError(f"layer {layer.index} is a [{layer.type}], not a [yolo] or [region]")


def heads(graph: Graph) -> list[Head]:
    """Every detection head of a network, in network order; all must agree on classes."""
    found = [head_of(lay) for lay in graph.layers if lay.type in HEAD_TYPES]
    if not found:
        raise DarkcfgError(f"{graph.file}: no [yolo] or [region] layer: this network is not "
                           "a detector (for classifiers use `darkcfg run`)")
    classes = {h.classes for h in found}
    if len(classes) > 1:
        raise DarkcfgError(f"{graph.file}: the detection heads disagree on classes "
                           f"({', '.join(f'layer {h.index}: {h.classes}' for h in found)})")
    return found


def nms_kind(graph: Graph) -> tuple[str, float]:
    """(nms_kind, beta_nms) of the last head, as AH's test_detector reads them off the last
    layer; pjreddie and `[region]` heads use Darknet's plain greedy NMS ("default")."""
    last = [lay for lay in graph.layers if lay.type in HEAD_TYPES][-1]
    if last.type != "yolo":
        return "default", 0.6
    return str(last.opts.get("nms_kind", "default")), float(last.opts.get("beta_nms", 0.6))


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


def _gate(probs: np.ndarray, thresh: np.float32) -> np.ndarray:
    """prob > thresh ? prob : 0, in float32 (Darknet's class-probability gate)."""
    return np.where(probs > thresh, probs, F32(0)).astype(F32)


def decode_yolo(head: Head, out: np.ndarray, net_w: int, net_h: int,
                thresh: float) -> Boxes:
    """get_yolo_detections before correct_yolo_boxes: boxes relative to the network input.

    out: the head's activated output, (A*(5+classes), H, W) or flat. Only entries with
    objectness > thresh are listed, cell-major (cell = row*W + col), then by anchor.
    """
    a, k, hw = len(head.anchors), head.entries, head.h * head.w
    t = np.asarray(out, dtype=F32).reshape(a, k, hw).transpose(2, 0, 1)   # (HW, A, K)
    th = F32(thresh)
    cell, anc = np.nonzero(t[:, :, 4] > th)          # row-major: Darknet's listing order
    e = t[cell, anc]                                  # (N, K)
    col = (cell % head.w).astype(F32)
    row = (cell // head.w).astype(F32)
    xywh = np.empty((len(e), 4), F32)
    xywh[:, 0] = (col + e[:, 0]) / F32(head.w)        # float32: (i + x) / lw
    xywh[:, 1] = (row + e[:, 1]) / F32(head.h)
    aw, ah = head.anchors[anc, 0], head.anchors[anc, 1]
    if head.new_coords:                               # AH: x*x*4*bias/w, all float32
        xywh[:, 2] = e[:, 2] * e[:, 2] * F32(4) * aw / F32(net_w)
        xywh[:, 3] = e[:, 3] * e[:, 3] * F32(4) * ah / F32(net_h)
    else:                                             # exp() and the division in double
        xywh[:, 2] = np.exp(e[:, 2].astype(F64)) * aw.astype(F64) / net_w
        xywh[:, 3] = np.exp(e[:, 3].astype(F64)) * ah.astype(F64) / net_h
    obj = e[:, 4].copy()
    probs = _gate(obj[:, None] * e[:, 5:], th)
    return Boxes(xywh, obj, probs, np.arange(len(e)))


def decode_region(head: Head, out: np.ndarray, thresh: float) -> Boxes:
    """get_region_detections before correct_region_boxes: all W*H*num entries, anchor-major
    (n*W*H + cell); objectness (and so every prob) is 0 unless objectness > thresh."""
    n, k, hw = len(head.anchors), head.entries, head.h * head.w
    e = np.asarray(out, dtype=F32).reshape(n, k, hw).transpose(0, 2, 1).reshape(n * hw, k)
    cell = np.tile(np.arange(hw), n)
    anc = np.repeat(np.arange(n), hw)
    col = (cell % head.w).astype(F32)
    row = (cell // head.w).astype(F32)
    xywh = np.empty((len(e), 4), F32)
    xywh[:, 0] = (col + e[:, 0]) / F32(head.w)
    xywh[:, 1] = (row + e[:, 1]) / F32(head.h)
    xywh[:, 2] = np.exp(e[:, 2].astype(F64)) * head.anchors[anc, 0].astype(F64) / head.w
    xywh[:, 3] = np.exp(e[:, 3].astype(F64)) * head.anchors[anc, 1].astype(F64) / head.h
    th = F32(thresh)
    scale = e[:, head.coords]
    obj = np.where(scale > th, scale, F32(0)).astype(F32)
    probs = _gate(scale[:, None] * e[:, head.coords + 1:], th)
    probs[obj == 0] = 0
    return Boxes(xywh, obj, probs, np.arange(len(e)))


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


def network_boxes(graph: Graph, outputs: Mapping[int, np.ndarray] | Sequence[Any],
                  img_w: int, img_h: int, thresh: float = 0.5) -> Boxes:
    """Darknet's get_network_boxes (relative = 1) for one image.

    outputs[i]: layer i's output for this image, (C, H, W) or flat; a `Network.outputs`
    list (take one sample of each) or a {layer index: array} mapping both work.
    """
    _, net_h, net_w = graph.net.input_shape
    found = heads(graph)
    parts = []
    for head in found:
        out = outputs[head.index]
        if out is None:
            raise DarkcfgError(f"layer {head.index} has no output yet: run the network first")
        if head.kind == "yolo":
            part = decode_yolo(head, out, net_w, net_h, thresh)
        else:
            part = decode_region(head, out, thresh)
        part.xywh = correct_boxes(part.xywh, img_w, img_h, net_w, net_h)
        parts.append(part)
    return Boxes.concat(parts, found[-1].classes)


# ---------------------------------------------------------------------------------------
# NMS

def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Darknet's box_iou in float32 between one box a (4,) and boxes b (M, 4), centre
    format: intersection = product of the overlaps (0 if either is negative); union =
    a.w*a.h + b.w*b.h - intersection. 0 where the intersection is 0 (AH's rule; P's 0/0
    never suppresses either)."""
    half = F32(2)
    ow = (np.minimum(a[0] + a[2] / half, b[:, 0] + b[:, 2] / half)
          - np.maximum(a[0] - a[2] / half, b[:, 0] - b[:, 2] / half))
    oh = (np.minimum(a[1] + a[3] / half, b[:, 1] + b[:, 3] / half)
          - np.maximum(a[1] - a[3] / half, b[:, 1] - b[:, 3] / half))
    inter = np.where((ow < 0) | (oh < 0), F32(0), ow * oh).astype(F32)
    union = (a[2] * a[3] + b[:, 2] * b[:, 3]) - inter
    ok = inter > 0
    return np.where(ok, inter / np.where(ok, union, F32(1)), F32(0)).astype(F32)


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


# ---------------------------------------------------------------------------------------
# the user-facing list

@dataclass(frozen=True)
class Detection:
    """One object: a class whose probability survived thresholds and NMS, on one box."""
    class_id: int
    prob: float                 # objectness * class probability
    objectness: float
    x: float                    # box centre and size, relative to the original image
    y: float                    # (not clipped: a box may extend past [0, 1])
    w: float
    h: float
    image_w: int
    image_h: int
    entry: int                  # position in Darknet's dets array (one box, many classes)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in pixels as darknet's draw_detections computes them
        (truncated toward zero), each clipped into the image as its draw_box does."""
        def clip(v: float, size: int) -> int:
            # clipped before the int(): an untrained head's exp(tw) can be inf (NaN -> 0)
            p = v * size
            return int(min(max(p, 0.0), size - 1.0)) if p == p else 0
        left = clip(self.x - self.w / 2.0, self.image_w)
        right = clip(self.x + self.w / 2.0, self.image_w)
        top = clip(self.y - self.h / 2.0, self.image_h)
        bottom = clip(self.y + self.h / 2.0, self.image_h)
        return left, top, right, bottom

    def label(self, names: Sequence[str] | None = None) -> str:
        return names[self.class_id] if names else f"class {self.class_id}"

    def to_dict(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        left, top, right, bottom = self.box
        return {"class_id": self.class_id, "name": self.label(names), "prob": self.prob,
                "objectness": self.objectness, "x": self.x, "y": self.y, "w": self.w,
                "h": self.h, "left": left, "top": top, "right": right, "bottom": bottom}

    def format(self, names: Sequence[str] | None = None) -> str:
        """darknet detect's line (`dog: 87%`) plus the pixel box."""
        left, top, right, bottom = self.box
        return (f"{self.label(names)}: {100 * self.prob:.0f}%  left {left} top {top} "
                f"right {right} bottom {bottom}")


def detections(boxes: Boxes, img_w: int, img_h: int) -> list[Detection]:
    """Every (entry, class) with a non-zero prob, in Darknet's printing order: entries in
    array order, classes ascending."""
    ent, cls = np.nonzero(boxes.probs)
    return [Detection(int(c), float(boxes.probs[e, c]), float(boxes.objectness[e]),
                      *(float(v) for v in boxes.xywh[e]), img_w, img_h, int(e))
            for e, c in zip(ent, cls, strict=True)]


def detect_boxes(net: Network, image: np.ndarray, thresh: float = 0.5,
                 nms: float = 0.45) -> Boxes:
    """Letterbox `image` (C, H, W) float32 in [0, 1] to the network size, run the network,
    decode and apply NMS: Darknet's dets array for this image."""
    from ..data.images import letterbox
    c, net_h, net_w = net.input_shape
    image = np.asarray(image, dtype=F32)
    if image.ndim != 3 or image.shape[0] != c:
        raise DarkcfgError(f"the network takes {c}-channel images (C, H, W); got an array "
                           f"of shape {image.shape}")
    _, img_h, img_w = image.shape
    net.forward(letterbox(image, net_w, net_h)[None])
    outputs = {i: out[0] for i, out in enumerate(net.outputs)
               if net.layers[i].type in HEAD_TYPES}
    boxes = network_boxes(net.graph, outputs, img_w, img_h, thresh)
    kind, beta = nms_kind(net.graph)
    return nms_sort(boxes, nms, kind, beta)


def detect(net: Network, image: np.ndarray | str | os.PathLike, thresh: float = 0.5,
           nms: float = 0.45) -> list[Detection]:
    """Objects in one image (a file or a (C, H, W) float32 array in [0, 1]), as `darknet
    detect` finds them: letterbox, forward, decode, NMS, every class above thresh."""
    if not isinstance(image, np.ndarray):
        from ..data.images import load_image
        image = load_image(image, channels=net.input_shape[0])
    boxes = detect_boxes(net, image, thresh, nms)
    return detections(boxes, image.shape[2], image.shape[1])
