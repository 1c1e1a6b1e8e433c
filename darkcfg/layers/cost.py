"""[cost]: loss on the previous layer's output (sse, masked, smooth, L1)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from ..network import Network


@register
class Cost(Layer):
    type = "cost"
    doc = "loss layer: sse, masked, smooth (L1-smooth), L1"
    options = {
        "type": Opt("str", "sse", "loss kind",
                    choices=("sse", "masked", "smooth", "L1", "seg", "wgan")),
        "scale": Opt("float", 1.0, "multiplier on the delta passed backward"),
    }
    # GPU-only knobs of P (training.md §6.2)
    quiet = frozenset({"ratio", "noobj", "thresh", "smooth"})

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        # Darknet's [cost] writes no output (case `dropout_cost`: zeros); the loss itself is
        # computed in training from the truth.
        return np.zeros_like(x)

    def row(self):
        return f"cost                                           {self.inputs:4d}"
