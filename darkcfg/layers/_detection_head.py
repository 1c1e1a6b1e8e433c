"""Helpers shared by the detection heads ([yolo], [region]): the box truth, checked, and
the statistics line Darknet prints."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .base import Layer, RunState


def detection_truth(layer: Layer, net: RunState, n: int, most: int) -> np.ndarray:
    """`net.truth` (n, T) checked as Darknet's box list: `layer.truth_size` floats per box
    (5, `x y w h class`; AB's [yolo] 6, `x y w h class track_id`). Every box read (up to
    `most`, until the first x == 0) needs 0 < x <= 1, 0 <= y <= 1, 0 < w, h and an integer
    class in 0..classes-1 (Darknet would index out of its buffers)."""
    from ..errors import DataError
    from ..kernels.yolo_loss import read_boxes
    size = getattr(layer, "truth_size", 5)
    t = np.ascontiguousarray(net.truth, np.float32)
    if t.ndim != 2 or t.shape[0] != n or t.shape[1] % size:
        fields = "x y w h class" + (" track_id" if size == 6 else "")
        raise DataError(f"layer {layer.index} [{layer.type}]: the truth must be {n} rows of "
                        f"{size} values per box ({fields}); got shape {t.shape}")
    for b, boxes in enumerate(read_boxes(t, most, size)):
        x, y, w, h, c = boxes[:, :5].T if len(boxes) else (np.zeros(0),) * 5
        bad = ~((x > 0) & (x <= 1) & (y >= 0) & (y <= 1) & (w > 0) & (h > 0) &
                (c >= 0) & (c < layer.classes) & (c == np.floor(c)))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(f"layer {layer.index} [{layer.type}]: image {b} of the batch, "
                            f"truth box {k}: x y w h class = "
                            f"{' '.join(f'{v:g}' for v in boxes[k, :5])}; need 0 < x <= 1, "
                            f"0 <= y <= 1, w, h > 0 and a class in 0..{layer.classes - 1}")
    return t


def widen_truth(truth: np.ndarray, size: int) -> np.ndarray:
    """(N, M*5) box rows `x y w h class` -> (N, M*size): AB's [yolo] reads 6 floats per
    box, the 6th a track id (0 here: no tracking)."""
    if size == 5:
        return truth
    n = truth.shape[0]
    wide = np.zeros((n, truth.shape[1] // 5, size), np.float32)
    wide[:, :, :5] = truth.reshape(n, -1, 5)
    return wide.reshape(n, -1)


def detection_stats(s: np.ndarray, shape: tuple[int, ...], anchors: int) -> dict[str, float]:
    """The statistics line Darknet prints for a detection head (means over the truths it
    trained on; NaN when there were none, where Darknet prints -nan)."""
    count, classes = s[6], s[7]
    cells = shape[0] * anchors * shape[-1] * shape[-2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"iou": s[0] / count, "class": s[1] / classes, "obj": s[2] / count,
                "no_obj": s[3] / cells, "recall50": s[4] / count, "recall75": s[5] / count,
                "count": int(count)}
