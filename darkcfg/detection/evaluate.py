"""Detection mAP: average precision per class at IoU 0.50 and averaged over 0.50:0.95.

The metric is COCO's (pycocotools COCOeval, bbox, area "all", maxDets 100), reproduced
step by step so numbers can be compared with it:

* per image and class, detections are sorted by score (stable) and only the best
  `max_dets` (100) are kept;
* each detection, best first, takes the unmatched ground truth of its class with the
  highest IoU, if that IoU is >= the threshold (ties: the later truth); otherwise it is a
  false positive. IoU thresholds 0.50, 0.55, ..., 0.95;
* over all images, detections are sorted by score (stable, images in the given order);
  precision = TP / (TP + FP + eps), made non-increasing from the right, is read at the 101
  recall points 0, 0.01, ..., 1 (the first detection reaching each recall; 0 past the
  last recall reached) and averaged: that mean is the AP;
* classes without ground truth are left out of the means (COCO's -1), so are the images'
  crowd/ignore flags and area ranges, which YOLO labels do not have.

AlexeyAB's `darknet detector map` differs on purpose in two places: it interpolates over
every recall step (VOC 2010+ "all points"), and it matches a detection to its best-IoU
truth even if already taken, counting IoU > 0.5 (strict). Expect its mAP@0.5 to differ
from ours by a little (usually < 1 point).

`evaluate` is the pure metric (arrays in, APs out). Below it: YOLO label files and the loop
that runs a network over the `valid` list of a `.data` file (`darkcfg map`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..geometry import iou_matrix

if TYPE_CHECKING:
    from ..network import Network

# pycocotools' own expressions, so the floating-point thresholds are the same numbers
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETS = 100


@dataclass
class ClassAP:
    class_id: int
    truths: int                 # ground-truth boxes of this class
    detections: int             # detections scored (after the per-image max_dets cut)
    ap: np.ndarray              # (T,) AP at each IoU threshold

    @property
    def ap50(self) -> float:
        return float(self.ap[0])

    @property
    def ap50_95(self) -> float:
        return float(self.ap.mean())


@dataclass
class MapResult:
    per_class: list[ClassAP]    # classes with at least one ground truth, ascending
    images: int
    iou_thresholds: np.ndarray

    @property
    def map50(self) -> float:
        return float(np.mean([c.ap[0] for c in self.per_class])) if self.per_class else 0.0

    @property
    def map50_95(self) -> float:
        return float(np.mean([c.ap for c in self.per_class])) if self.per_class else 0.0


def match(ious: np.ndarray, threshold: float) -> np.ndarray:
    """COCO's greedy matching for one image and class. ious (D, G), detections best first
    -> (D,) bool: True for a true positive."""
    d, g = ious.shape
    tp = np.zeros(d, bool)
    if g == 0:
        return tp
    taken = np.zeros(g, bool)
    floor = min(threshold, 1 - 1e-10)
    for i in range(d):
        ok = ~taken & (ious[i] >= floor)
        if ok.any():
            best = ious[i][ok].max()
            j = int(np.flatnonzero(ok & (ious[i] == best))[-1])     # the later truth wins
            taken[j] = tp[i] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, truths: int) -> float:
    """101-point interpolated AP of detections (scores (D,), tp (D,) bool, in image order)
    against `truths` ground truths."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    hits = np.asarray(tp, bool)[order]
    tps = np.cumsum(hits).astype(float)
    fps = np.cumsum(~hits).astype(float)
    if len(tps) == 0:
        return 0.0
    recall = tps / truths
    precision = tps / (tps + fps + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(q.mean())


def evaluate(detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
             truths: Sequence[tuple[np.ndarray, np.ndarray]], classes: int, *,
             iou_thresholds: np.ndarray = IOU_THRESHOLDS,
             max_dets: int | None = MAX_DETS) -> MapResult:
    """AP per class, COCO's way (see the module docstring).

    detections[i] = (boxes (N, 4), scores (N,), class ids (N,)) for image i;
    truths[i] = (boxes (M, 4), class ids (M,)). Boxes are centre x, y, w, h in any unit
    shared by both (relative coordinates for Darknet's boxes and YOLO labels).
    """
    if len(detections) != len(truths):
        raise ValueError(f"detections cover {len(detections)} images but truths cover "
                         f"{len(truths)}")
    thresholds = np.asarray(iou_thresholds, np.float64)
    scores: list[list[np.ndarray]] = [[] for _ in range(classes)]
    hits: list[list[np.ndarray]] = [[] for _ in range(classes)]
    ntruth = np.zeros(classes, np.int64)
    for i, ((dbox, dscore, dcls), (tbox, tcls)) in enumerate(zip(detections, truths,
                                                                 strict=True)):
        dbox, tbox = np.asarray(dbox, np.float64), np.asarray(tbox, np.float64)
        dscore = np.asarray(dscore, np.float64).ravel()
        dcls, tcls = np.asarray(dcls, np.int64).ravel(), np.asarray(tcls, np.int64).ravel()
        for what, ids in (("detection", dcls), ("truth", tcls)):
            if len(ids) and (ids.min() < 0 or ids.max() >= classes):
                raise ValueError(f"image {i}: {what} class {ids.max()} is outside "
                                 f"0..{classes - 1}")
        ntruth += np.bincount(tcls, minlength=classes)
        for c in np.unique(dcls):
            mine = np.flatnonzero(dcls == c)
            mine = mine[np.argsort(-dscore[mine], kind="mergesort")][:max_dets]
            ious = iou_matrix(dbox[mine], tbox[tcls == c])
            scores[c].append(dscore[mine])
            hits[c].append(np.stack([match(ious, t) for t in thresholds]))
    per_class = []
    for c in range(classes):
        if ntruth[c] == 0:
            continue
        s = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
        h = np.concatenate(hits[c], axis=1) if hits[c] else np.zeros((len(thresholds), 0),
                                                                     bool)
        ap = np.array([average_precision(s, h[t], int(ntruth[c]))
                       for t in range(len(thresholds))])
        per_class.append(ClassAP(c, int(ntruth[c]), len(s), ap))
    return MapResult(per_class, len(truths), thresholds)


def format_report(result: MapResult, names: Sequence[str] | None = None) -> str:
    """The per-class table and the two means, as `darkcfg map` prints them."""
    lines = [f"{'class':>5}  {'name':<20} {'truths':>7} {'dets':>7} {'AP50':>7} "
             f"{'AP50-95':>7}"]
    for c in result.per_class:
        name = names[c.class_id] if names else ""
        lines.append(f"{c.class_id:>5}  {name[:20]:<20} {c.truths:>7} {c.detections:>7} "
                     f"{100 * c.ap50:>7.2f} {100 * c.ap50_95:>7.2f}")
    lines.append(f"mAP@0.5 = {100 * result.map50:.2f} %   mAP@0.5:0.95 = "
                 f"{100 * result.map50_95:.2f} %   ({len(result.per_class)} classes with "
                 f"truths, {result.images} images; COCO 101-point interpolation)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# running a network over a labelled image list (label files: darkcfg.data.detection)

def read_image_list(path: str) -> list[str]:
    """The `valid` list of a .data file: resolved image paths."""
    from ..data.detection import read_image_list as read_list
    return read_list(path)[0]


def evaluate_network(net: Network, images: Sequence[str], classes: int, *,
                     thresh: float = 0.005, nms: float = 0.45, letter: bool | None = None,
                     progress: Callable[[int, int], None] | None = None) -> MapResult:
    """Run `net` on each image (letterboxed or stretched as `detect` does it: `letter`,
    None for the lineage's rule, as AH's validate_detector_map), keep every class with
    prob > thresh after NMS (Darknet's mAP defaults: 0.005 and 0.45) and score them
    against the YOLO label files. Images without a label file count as having no objects
    (one warning names how many)."""
    results = []
    for n, path in enumerate(images):
        results.append(evaluate_image(net, path, classes, thresh, nms, letter))
        if progress is not None:
            progress(n + 1, len(images))
    return evaluate_results(images, results, classes)


def evaluate_image(net: Network, path: str, classes: int, thresh: float, nms: float,
                   letter: bool | None) -> tuple[tuple, tuple, bool]:
    """One image of evaluate_network: (its detections (boxes, scores, classes), its truth
    (boxes, classes), whether it has no label file)."""
    from ..data.detection import find_label_file, read_label_file
    from ..data.images import load_image
    from .detect import detect
    image = load_image(path, channels=net.input_shape[0])
    found = detect(net, image, thresh, nms, letter)
    dets = (np.array([[d.x, d.y, d.w, d.h] for d in found]).reshape(-1, 4),
            np.array([d.prob for d in found]),
            np.array([d.class_id for d in found], np.int64))
    label = find_label_file(path)
    if label is None:
        return dets, (np.zeros((0, 4)), np.zeros(0, np.int64)), True
    return dets, read_label_file(label, classes), False


def evaluate_results(images: Sequence[str], results: Sequence[tuple[tuple, tuple, bool]],
                     classes: int) -> MapResult:
    """The mAP of evaluate_image's results for `images` (in that order)."""
    from ..data.detection import label_candidates
    dets = [r[0] for r in results]
    truths = [r[1] for r in results]
    unlabelled = [path for path, r in zip(images, results, strict=True) if r[2]]
    if unlabelled:
        warnings.warn(f"{len(unlabelled)} of {len(images)} images have no label file and "
                      f"count as having no objects (first: {unlabelled[0]}; looked for "
                      f"{' and '.join(label_candidates(unlabelled[0]))})", stacklevel=2)
    return evaluate(dets, truths, classes)
