"""[cost]: loss on the previous layer's output (sse, masked, smooth, L1)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from ._loss import layer_truth, loss_gradient
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Cost(Layer):
    type = "cost"
    example = "[cost]\ntype=sse\n"
    example_loss = 0.5
    doc = "loss layer: sse, masked, smooth (L1-smooth), L1"
    options = {
        "type": Opt("str", "sse", "loss kind",
                    choices=("sse", "masked", "smooth", "L1", "seg", "wgan")),
        "scale": Opt("float", 1.0, "multiplier on the delta passed backward"),
    }
    # GPU-only knobs of P (src/parser.c: parse_cost reads them, the CPU forward ignores them)
    quiet = frozenset({"ratio", "noobj", "thresh", "smooth"})

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # Inference: no output (case `dropout_cost`: zeros). Training with a truth: the loss
        # against it (src/cost_layer.c: forward_cost_layer); the output holds the
        # per-element errors and `cost` their sum, as in Darknet (train_resid:
        # train_out_008).
        self.cost = self._grad = None
        if not (net.train and net.truth is not None):
            return np.zeros_like(x)
        kind = self.opts["type"]
        # seg and wgan are sse on Darknet's CPU; masked is sse without the -1234 cells
        loss = kind if kind in ("smooth", "L1") else "sse"
        from ..kernels.loss import elementwise_loss
        self.cost, error, self._grad = elementwise_loss(x, layer_truth(self, net, x), loss,
                                                        masked=kind == "masked")
        return error

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # scale * (own gradient + whatever reached this layer): `scale` multiplies only
        # the gradient passed back, not the cost. dy is turned into Darknet's delta in place.
        g = loss_gradient(self, dy)
        scale = np.float32(self.opts["scale"])
        return g if g is None or scale == 1 else g * scale

    def row(self):
        return f"cost                                           {self.inputs:4d}"

