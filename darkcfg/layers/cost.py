"""[cost]: loss on the previous layer's output (sse, masked, smooth, L1)."""
from __future__ import annotations

from ..options import Opt
from .base import Layer, register


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

    def row(self):
        return f"cost                                           {self.inputs:4d}"
