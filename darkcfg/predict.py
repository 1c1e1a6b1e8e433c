"""Classifier prediction on image files: Darknet's letterbox input, top-k output."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .data.images import letterbox, load_image
from .errors import DataError
from .fileio import read_text

if TYPE_CHECKING:
    from .graph import Graph
    from .layers.base import Layer


@dataclass
class Prediction:
    image: str
    output: np.ndarray                  # the network output for this image, flat
    top: list[tuple[int, float]]        # (class index, probability), best first


def read_labels(path: str | os.PathLike, what: str = "labels") -> list[str]:
    """Class names, one per non-blank line (a `--labels`/`--names` file)."""
    path = os.fspath(path)
    names = [line.strip() for line in read_text(path, what).splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: the {what} file is empty (one name per line)")
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


def detector_head(graph: Graph) -> Layer | None:
    """The first detection head of the network (a layer with `is_head`: its output is a
    box grid, not class scores; `darkcfg detect` reads it), if it has one."""
    return next((lay for lay in graph.layers if lay.is_head), None)


def raw_output_reason(graph: Graph) -> str | None:
    """None when the network output is one probability per class ([softmax], or logistic
    activations); otherwise why its values are not probabilities (the CLI says so)."""
    out = graph.output_layer
    activation = out.opts.get("activation")
    if out.type in ("softmax", "logistic") or activation == "logistic":
        return None
    how = f", activation={activation}" if activation else ""
    return (f"the output layer {out.index} is a [{out.type}]{how}, not a [softmax]: the "
            "values are raw outputs, not probabilities")
