"""[dropout]: inverted dropout in training, identity at inference."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from ._rng import layer_rng
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Dropout(Layer):
    type = "dropout"
    example = "[dropout]\nprobability=0.3\n"
    doc = "inverted dropout (identity at inference)"
    options = {"probability": Opt("float", 0.5, "drop probability p (P default 0.5)", min=0)}
    quiet = frozenset({"dropblock", "dropblock_size_rel", "dropblock_size_abs"})

    def setup(self, layers):
        self.probability = self.opts["probability"]
        if self.probability >= 1:
            raise self.error(f"'probability' must be below 1, got {self.probability}",
                             "probability")

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> same shape. Training: inverted dropout, each value dropped when
        # its uniform draw r < probability, survivors times 1/(1-p) (Darknet's rule); `mask`
        # (0 or 1/(1-p) per value) is kept for the backward pass. Inference: identity.
        if not net.train:
            return x
        r = layer_rng(self, net).random(x.shape, dtype=np.float32)
        self.mask = np.where(r < self.probability, np.float32(0.0),
                             np.float32(1.0 / (1.0 - self.probability)))
        return x * self.mask

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # the forward's mask and 1/(1-p) scale (src/dropout_layer.c: backward_dropout_layer)
        return None if dy is None else dy * self.mask

    def row(self):
        return (f"dropout       p = {self.probability:.2f}               {self.inputs:4d}"
                f"  ->  {self.inputs:4d}")
