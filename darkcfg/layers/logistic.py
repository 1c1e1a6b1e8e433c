"""[logistic] (P): sigmoid with a logistic cross-entropy loss."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Layer, register

if TYPE_CHECKING:
    from ..network import Network


@register
class Logistic(Layer):
    type = "logistic"
    doc = "sigmoid, with logistic cross-entropy loss in training"

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        from ..kernels.activations import activate
        return activate(x.copy(), "logistic")

    def row(self):
        return f"logistic x entropy                             {self.inputs:4d}"
