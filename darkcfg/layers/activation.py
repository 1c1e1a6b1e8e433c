"""[activation] (P, A): an element-wise activation."""
from __future__ import annotations

from ..activations import ACTIVATIONS
from ..options import Opt
from .base import Layer, register


@register
class Activation(Layer):
    type = "activation"
    doc = "element-wise activation"
    options = {"activation": Opt("str", "linear", "activation", choices=ACTIVATIONS)}

    def setup(self, layers):
        self.activation = self.opts["activation"]

    def row(self):
        return f"Activation Layer: {self.inputs} inputs"
