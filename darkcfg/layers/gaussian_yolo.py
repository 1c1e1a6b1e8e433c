"""[Gaussian_yolo] (AH): YOLO head with box uncertainties (summary only).

A [yolo] with 9 values per anchor: it subclasses Yolo, the one section file that
builds on a sibling.
"""
from __future__ import annotations

from .base import register
from .yolo import Yolo


@register
class GaussianYolo(Yolo):
    type = "Gaussian_yolo"
    runnable = False
    per_anchor = 9          # x, y, w, h, 4 uncertainties, objectness

    def row(self):
        return "Gaussian_yolo"
