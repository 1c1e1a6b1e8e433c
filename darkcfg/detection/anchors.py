"""`darkcfg calc_anchors`: anchor boxes for a YOLO cfg by k-means over the training boxes.

Boxes are compared by shape only (centred on each other), with 1 - IoU as the distance, as
in the YOLOv2 paper (AlexeyAB's `src/detector.c: calc_anchors` uses OpenCV's Euclidean
k-means instead, unseeded). Starts are k-means++ draws; several restarts run and the one
with the best average IoU is kept; a seed fixes everything. Anchors come out rounded to
whole pixels (what a cfg holds) and sorted by area; the masks give the smallest anchors
to the head with the finest grid (smallest stride).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import DarkcfgError


@dataclass
class Anchors:
    anchors: np.ndarray          # (k, 2) whole pixels (w, h), sorted by area
    avg_iou: float               # mean over boxes of the best IoU with an anchor
    boxes: int                   # how many boxes were clustered

    def line(self) -> str:
        return ",  ".join(f"{w:d},{h:d}" for w, h in self.anchors)


def shape_iou(wh: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """IoU of boxes (n, 2) and centres (k, 2) placed on the same centre: (n, k)."""
    inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * \
        np.minimum(wh[:, None, 1], centres[None, :, 1])
    return inter / (wh[:, None].prod(2) + centres[None].prod(2) - inter)


def _plus_plus(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ starts under the 1 - IoU distance."""
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1.0 - shape_iou(wh, np.array(centres)).max(1)
        total = d.sum()
        pick = rng.integers(len(wh)) if total <= 0 else rng.choice(len(wh), p=d / total)
        centres.append(wh[pick])
    return np.array(centres, np.float64)


def _kmeans(wh: np.ndarray, centres: np.ndarray, rounds: int) -> np.ndarray:
    nearest = None
    for _ in range(rounds):
        iou = shape_iou(wh, centres)
        now = iou.argmax(1)
        if nearest is not None and np.array_equal(now, nearest):
            break
        nearest = now
        for j in range(len(centres)):
            members = wh[nearest == j]
            if len(members):
                centres[j] = members.mean(0)
            else:           # an empty cluster restarts on the worst-covered box
                centres[j] = wh[iou.max(1).argmin()]
    return centres


def kmeans_anchors(wh: np.ndarray, k: int, *, seed: int = 0, restarts: int = 10,
                   rounds: int = 300) -> Anchors:
    """k anchors for box sizes `wh` (n, 2) in pixels: the best of `restarts` k-means runs
    (average IoU of the rounded anchors), sorted by area."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if k < 1:
        raise DarkcfgError(f"the number of anchors must be at least 1; received {k}")
    if len(wh) < k:
        raise DarkcfgError(f"{len(wh)} boxes cannot make {k} anchors: k-means needs at least "
                           "as many boxes as anchors")
    best = None
    for r in range(restarts):
        rng = np.random.default_rng([seed, r])
        centres = np.maximum(np.rint(_kmeans(wh, _plus_plus(wh, k, rng), rounds)), 1)
        score = float(shape_iou(wh, centres).max(1).mean())
        if best is None or score > best[0] + 1e-12:
            best = (score, centres)
    score, centres = best
    order = np.lexsort((centres[:, 0], centres.prod(1)))
    return Anchors(centres[order].astype(np.int64), score, len(wh))


def training_boxes(data_file: str, width: int, height: int) -> np.ndarray:
    """Every box of the `.data` file's train list as (w, h) pixels at the network size."""
    from ..data.classifier import read_data_config
    from ..data.detection import open_detection_dataset
    data = read_data_config(data_file)
    dataset = open_detection_dataset(data, "train")
    if dataset is None:
        raise DarkcfgError(f"{data_file}: no 'train' key: no boxes to cluster")
    rows = [b[:, 2:4] for b in dataset.boxes if len(b)]
    if not rows:
        raise DarkcfgError(f"{data_file}: the training labels hold no boxes")
    return np.concatenate(rows) * np.array([width, height], np.float64)


def masks(strides: list[int], k: int) -> list[list[int]]:
    """Anchor indices per head (in cfg order): consecutive groups, the smallest anchors to
    the smallest stride."""
    heads = len(strides)
    if k % heads:
        raise DarkcfgError(f"{k} anchors do not split evenly over {heads} [yolo] heads; use a "
                           f"multiple of {heads} (e.g. --num {heads * max(1, round(k / heads))})")
    per = k // heads
    order = sorted(range(heads), key=lambda h: strides[h])
    out: list[list[int]] = [[] for _ in range(heads)]
    for rank, h in enumerate(order):
        out[h] = list(range(rank * per, (rank + 1) * per))
    return out


def write_cfg(cfg_file: str, found: Anchors, classes: int) -> list[str]:
    """Set every [yolo] head's anchors, num, mask and classes, and the filters of the
    [convolutional] feeding it, in the cfg file itself (written atomically, comments and
    everything else kept). Returns a line per change."""
    from ..cfg import parse_cfg, read_cfg
    from ..fileio import atomic_write
    from ..graph import build_graph
    sections = read_cfg(cfg_file, strict=False)
    heads = [s for s in sections if s.name == "yolo"]
    if not heads:
        raise DarkcfgError(f"{cfg_file}: no [yolo] layer to write anchors into")
    k = len(found.anchors)
    with open(cfg_file, encoding="utf-8") as f:
        lines = f.read().split("\n")
    # the heads' strides need the graph, and the graph needs filters that fit classes and
    # masks: size it once with masks in cfg order, then write the masks by stride
    trial = _edited(lines, sections, heads, masks(list(range(len(heads))), k), found,
                    classes, cfg_file)[0]
    graph = build_graph(parse_cfg("\n".join(trial), cfg_file, strict=False), strict=False)
    net_w = graph.net.input_shape[2]
    groups = masks([net_w // graph.layers[h.index].out_shape[2] for h in heads], k)
    text, changes = _edited(lines, sections, heads, groups, found, classes, cfg_file)
    with atomic_write(cfg_file, "cfg") as f:
        f.write("\n".join(text).encode())
    return changes


def _edited(lines: list[str], sections, heads, groups, found: Anchors, classes: int,
            cfg_file: str) -> tuple[list[str], list[str]]:
    """The cfg's lines with the heads' keys set (existing lines replaced, missing keys
    added under the section header)."""
    by_index = {s.index: s for s in sections if s.index is not None}
    edits: dict[int, dict[str, str]] = {}            # layer index -> keys
    for head, mask in zip(heads, groups, strict=True):
        edits[head.index] = {"mask": ",".join(map(str, mask)), "anchors": found.line(),
                             "num": str(len(found.anchors)), "classes": str(classes)}
        before = by_index.get(head.index - 1)
        if before is None or before.name != "convolutional":
            raise DarkcfgError(f"{cfg_file}:{head.line}: the layer before this [yolo] is not "
                               "a [convolutional]; its filters cannot be set")
        edits[before.index] = {"filters": str((classes + 5) * len(mask))}
    lines = list(lines)
    for index in sorted(edits, reverse=True):        # bottom-up: line numbers stay valid
        section, keys = by_index[index], edits[index]
        for key, value in keys.items():              # existing keys first: no line moves
            if key in section.entries:
                lines[section.entries[key].line - 1] = f"{key}={value}"
        for key, value in reversed(keys.items()):
            if key not in section.entries:
                lines.insert(section.line, f"{key}={value}")
    changes = [f"layer {i} [{by_index[i].written}]: {key}={value}"
               for i in sorted(edits) for key, value in edits[i].items()]
    return lines, changes


def cfg_size(cfg_file: str) -> tuple[int, int]:
    """[net] width and height as the cfg writes them (its heads may not fit yet)."""
    from ..cfg import read_cfg
    from ..netcfg import NET_OPTIONS
    from ..options import read_options
    net = read_cfg(cfg_file, strict=False)[0]
    opts = read_options(net, {k: NET_OPTIONS[k] for k in ("width", "height")},
                        frozenset(net.entries) - {"width", "height"}, strict=False)
    return opts["width"], opts["height"]


def check_sizes(width: int, height: int, num: int) -> None:
    for name, v in (("--width", width), ("--height", height), ("--num", num)):
        if v < 1:
            raise DarkcfgError(f"{name} must be at least 1; received {v}")


def anchors_for(data_file: str | os.PathLike, num: int, width: int, height: int, *,
                seed: int = 0, restarts: int = 10) -> Anchors:
    check_sizes(width, height, num)
    return kmeans_anchors(training_boxes(os.fspath(data_file), width, height), num,
                          seed=seed, restarts=restarts)
