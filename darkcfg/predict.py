"""Classifier prediction on image files: Darknet's letterbox input, top-k output."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .imageops import letterbox, load_image


@dataclass
class Prediction:
    image: str
    output: np.ndarray                  # the network output for this image, flat
    top: list[tuple[int, float]]        # (class index, probability), best first


def read_labels(path: str | os.PathLike) -> list[str]:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise DataError(f"{path}: cannot read the labels file: {e.strerror}") from None
    if not names:
        raise DataError(f"{path}: the labels file is empty (one name per line)")
    return names


def prepare(path: str | os.PathLike, shape: tuple[int, int, int]) -> np.ndarray:
    """An image file as the network's input: (c, h, w), letterboxed as Darknet's
    `classifier predict` does."""
    c, h, w = shape
    return letterbox(load_image(path, channels=c), w, h)


def top_k(output: np.ndarray, k: int) -> list[tuple[int, float]]:
    flat = output.ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    return [(int(i), float(flat[i])) for i in order]
