"""[activation] (P, A): an element-wise activation."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..activations import ACTIVATIONS
from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Activation(Layer):
    type = "activation"
    example = "[activation]\nactivation=elu\n"
    doc = "element-wise activation"
    options = {"activation": Opt("str", "linear", "activation", choices=ACTIVATIONS)}

    def setup(self, layers):
        self.activation = self.opts["activation"]

    def row(self):
        return f"Activation Layer: {self.inputs} inputs"

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> same shape, into this layer's own buffer: x is the previous
        # layer's output, which later layers (route, shortcut) may still read.
        from ..kernels import activations, conv
        self._out = out = conv.reuse(getattr(self, "_out", None), x.shape)
        np.copyto(out, x)
        # training keeps x (not a copy: nothing writes into a layer's output) for the
        # activations whose gradient is taken at the input
        self._x = x if net.train and activations.needs_input(self.activation) else None
        return activations.activate(out, self.activation)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # dx = dy * f' (Darknet's form: at the output y, or at x for mish & co.), into a
        # buffer of the layer's: dy is left intact
        if dy is None:
            return None
        from ..kernels import activations, conv
        self._dx = dx = conv.reuse(getattr(self, "_dx", None), dy.shape)
        np.copyto(dx, dy)
        return activations.gradient(dx, self._out, self._x, self.activation)
