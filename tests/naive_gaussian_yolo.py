"""A slow, obvious reference for AlexeyAB's [Gaussian_yolo] forward and box decoding
(darkcfg/layers/gaussian_yolo.py), written from src/gaussian_yolo_layer.c's rules
(forward_gaussian_yolo_layer, get_gaussian_yolo_box, get_gaussian_yolo_detections) as
per-value Python loops in float64."""
from __future__ import annotations

import math

import numpy as np


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def forward(x: np.ndarray, anchors_used: int, classes: int, scale_x_y: float) -> np.ndarray:
    """x (A*(9+classes), H, W) -> the activated output (one image)."""
    k = 9 + classes
    out = x.astype(np.float64).copy()
    for a in range(anchors_used):
        for e in range(k):
            if e in (4, 6):                     # the w, h means stay raw
                continue
            ch = a * k + e
            out[ch] = np.vectorize(sigmoid)(out[ch])
            if e in (0, 2):                     # the x, y means only
                out[ch] = out[ch] * scale_x_y - 0.5 * (scale_x_y - 1)
    return out


def detections(out: np.ndarray, anchors: list[tuple[float, float]], classes: int,
               net_w: int, net_h: int, thresh: float, point: str = "center") -> list[dict]:
    """The entries with objectness > thresh, cells in row-major order, anchors inside; each
    box relative to the network input, probs objectness * class * (1 - mean sigma)."""
    k = 9 + classes
    _, h, w = out.shape
    found = []
    for row in range(h):
        for col in range(w):
            for a, (aw, ah) in enumerate(anchors):
                v = out[a * k:(a + 1) * k, row, col]
                if not v[8] > thresh:
                    continue
                bw, bh = math.exp(v[4]) * aw / net_w, math.exp(v[6]) * ah / net_h
                bx, by = (col + v[0]) / w, (row + v[2]) / h
                if point == "left_top":
                    bx, by = bx + bw / 2, by + bh / 2
                elif point == "right_bottom":
                    bx, by = bx - bw / 2, by - bh / 2
                mean_sigma = (v[1] + v[3] + v[5] + v[7]) / 4
                probs = [v[8] * v[9 + c] * (1 - mean_sigma) for c in range(classes)]
                found.append({"xywh": (bx, by, bw, bh), "objectness": v[8],
                              "probs": [p if p > thresh else 0.0 for p in probs]})
    return found
