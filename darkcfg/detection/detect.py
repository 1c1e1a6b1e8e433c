"""Detections from a network's detection heads: Darknet's box decoding over the heads,
its letterbox undo, thresholds and greedy NMS.

The numbers follow pjreddie/darknet f6afaab, as `darknet detect` computes them:

1. `network_boxes` is `get_network_boxes(net, img_w, img_h, thresh, hier, 0, relative=1)`:
   every head (a layer with `is_head`) in network order decodes its (already activated)
   output into Darknet's `dets` array with its own `decode` (layers/yolo.py,
   layers/region.py), then, when the image was letterboxed, the boxes are mapped from the
   network input back to the original image (`geometry.correct_boxes`; relative
   coordinates, not clipped). `letter` is AlexeyAB's last argument of get_network_boxes:
   pjreddie always letterboxes; AlexeyAB's `detector test`/`map` letterbox only with
   `letter_box=1` in [net] (or `-letter_box`) and otherwise stretch the image to the
   network size (resize_image), so its boxes need no correction
   (src/yolo_layer.c: correct_yolo_boxes; tests/test_reference_alexeyab_boxes.py).
2. `geometry.nms_sort` is `do_nms_sort(dets, n, classes, nms)`; when the last head asks
   for `nms_kind=diounms` (or greedynms/cornersnms) it is AlexeyAB's `diounms_sort`.
3. `detections` lists every (entry, class) whose probability survived, as `darknet
   detect` prints them.

Darknet's box files in tests/test_detect.py pin every box.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DarkcfgError
from ..geometry import F32, Boxes, correct_boxes, nms_sort

if TYPE_CHECKING:
    from ..graph import Graph
    from ..layers.base import Layer
    from ..network import Network


def heads(graph: Graph) -> list[Layer]:
    """Every detection head of a network, in network order; all must agree on classes."""
    found = [lay for lay in graph.layers if lay.is_head]
    if not found:
        raise DarkcfgError(f"{graph.file}: no [yolo], [region] or [detection] layer: this "
                           "network is not a detector (for classifiers use `darkcfg run`)")
    classes = {h.classes for h in found}
    if len(classes) > 1:
        raise DarkcfgError(f"{graph.file}: the detection heads disagree on classes "
                           f"({', '.join(f'layer {h.index}: {h.classes}' for h in found)})")
    return found


def nms_kind(graph: Graph) -> tuple[str, float]:
    """(nms_kind, beta_nms) of the last head, as AH's test_detector reads them off the last
    layer; pjreddie and `[region]` heads (no such options) use Darknet's plain greedy NMS
    ("default")."""
    last = heads(graph)[-1]
    return (str(last.opts.get("nms_kind", "default")),
            float(last.opts.get("beta_nms", 0.6)))


def letterboxes(graph: Graph, letter: bool | None = None) -> bool:
    """Whether an image is letterboxed for this network (else stretched to its size):
    `letter` when given; else the lineage's rule: pjreddie always letterboxes, AlexeyAB
    only with `letter_box=1` in [net] (src/detector.c: test_detector, validate_detector_map);
    a YOLOv1 [detection] head is stretched (examples/yolo.c: test_yolo)."""
    if letter is not None:
        return bool(letter)
    if any(getattr(h, "stretches", False) for h in heads(graph)):
        return False        # YOLOv1's [detection]: test_yolo stretches (layers/detection.py)
    if graph.net.dialect == "alexeyab":
        return bool(graph.net.opts["letter_box"])
    return True


def network_boxes(graph: Graph, outputs: Mapping[int, np.ndarray] | Sequence[Any],
                  img_w: int, img_h: int, thresh: float = 0.5,
                  letter: bool | None = None) -> Boxes:
    """Darknet's get_network_boxes (relative = 1) for one image.

    outputs[i]: layer i's output for this image, (C, H, W) or flat; a `Network.outputs`
    list (take one sample of each) or a {layer index: array} mapping both work.
    letter: whether the image was letterboxed (undo it on the boxes) or stretched (boxes
    stay as decoded); None: the lineage's rule (`letterboxes`).
    """
    _, net_h, net_w = graph.net.input_shape
    found = heads(graph)
    undo = letterboxes(graph, letter)
    parts = []
    for head in found:
        out = outputs[head.index]
        if out is None:
            raise DarkcfgError(f"layer {head.index} has no output yet: run the network first")
        part = head.decode(out, net_w, net_h, thresh)
        if undo:
            # stretched: AH's correction with new_w = net_w, new_h = net_h is x/1.0 and
            # w*1.0f, the identity, so there is nothing to do
            part.xywh = correct_boxes(part.xywh, img_w, img_h, net_w, net_h)
        parts.append(part)
    return Boxes.concat(parts, found[-1].classes)


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
                 nms: float = 0.45, letter: bool | None = None) -> Boxes:
    """Letterbox (or, with letter False, stretch: Darknet's resize_image) `image` (C, H, W)
    float32 in [0, 1] to the network size, run the network, decode and apply NMS:
    Darknet's dets array for this image. letter None: the lineage's rule (`letterboxes`)."""
    from ..data.images import letterbox, resize
    c, net_h, net_w = net.input_shape
    image = np.asarray(image, dtype=F32)
    if image.ndim != 3 or image.shape[0] != c:
        raise DarkcfgError(f"the network takes {c}-channel images (C, H, W); got an array "
                           f"of shape {image.shape}")
    _, img_h, img_w = image.shape
    boxed = letterboxes(net.graph, letter)
    fit = letterbox if boxed else resize
    net.forward(fit(image, net_w, net_h)[None])
    outputs = {i: out[0] for i, out in enumerate(net.outputs) if net.layers[i].is_head}
    # an untrained or diverged head gives exp(tw) = inf boxes: they decode, compare and
    # sort as Darknet's do (inf and NaN included), without NumPy's overflow chatter
    with np.errstate(over="ignore", invalid="ignore"):
        boxes = network_boxes(net.graph, outputs, img_w, img_h, thresh, boxed)
        kind, beta = nms_kind(net.graph)
        return nms_sort(boxes, nms, kind, beta)


def detect(net: Network, image: np.ndarray | str | os.PathLike, thresh: float = 0.5,
           nms: float = 0.45, letter: bool | None = None) -> list[Detection]:
    """Objects in one image (a file or a (C, H, W) float32 array in [0, 1]), as `darknet
    detect` (AH: `darknet detector test`) finds them: letterbox or stretch (`letter`; None:
    the lineage's rule), forward, decode, NMS, every class above thresh."""
    if not isinstance(image, np.ndarray):
        from ..data.images import load_image
        image = load_image(image, channels=net.input_shape[0])
    boxes = detect_boxes(net, image, thresh, nms, letter)
    return detections(boxes, image.shape[2], image.shape[1])
