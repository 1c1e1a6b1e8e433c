"""[empty] / [silence] (AH): identity."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Empty(Layer):
    type = "empty"
    example = "[empty]\n"
    aliases = ("silence",)
    doc = "identity"

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        return x

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        return dy

    def row(self):
        return "empty"
