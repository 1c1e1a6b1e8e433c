"""[logistic] (P): sigmoid with a logistic cross-entropy loss."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._loss import layer_truth, loss_gradient
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Logistic(Layer):
    type = "logistic"
    example = "[logistic]\n"
    example_loss = 1.0
    doc = "sigmoid, with logistic cross-entropy loss in training"

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # sigmoid; training with a truth: the logistic cross-entropy, `cost` = sum of
        # -t ln(p) - (1-t) ln(1-p), gradient p - t w.r.t. the logits (Darknet's delta t - p)
        from ..kernels.activations import activate
        from ..kernels.loss import elementwise_loss
        out = activate(x.copy(), "logistic")
        self.cost = self._grad = None
        if net.train and net.truth is not None:
            self.cost, _, self._grad = elementwise_loss(out, layer_truth(self, net, out),
                                                        "logistic")
        return out

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # Darknet's: p - t plus the arriving gradient unchanged (no sigmoid derivative)
        return loss_gradient(self, dy)

    def row(self):
        return f"logistic x entropy                             {self.inputs:4d}"
