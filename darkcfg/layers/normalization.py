"""[normalization] / [lrn] (P, A): local response normalisation across channels."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Normalization(Layer):
    type = "normalization"
    example = "[normalization]\nsize=3\nalpha=0.01\n"
    aliases = ("lrn",)
    doc = "local response normalisation across channels"
    options = {
        "size": Opt("int", 5, "channels in the window", min=1),
        "alpha": Opt("float", 0.0001, "scale"),
        "beta": Opt("float", 0.75, "exponent"),
        "kappa": Opt("float", 1.0, "offset"),
    }

    def setup(self, layers):
        self.image_input()

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> same shape; Darknet's off-by-one window (case `misc_layers`)
        from ..kernels.normalize import lrn, lrn_train
        o = self.opts
        if not net.train:
            return lrn(x, o["size"], o["alpha"], o["beta"], o["kappa"])
        out, self._factor = lrn_train(x, o["size"], o["alpha"], o["beta"], o["kappa"])
        return out

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # Darknet's backward: dy * norm^-beta, treating the norms as constants. That is an
        # approximation (P's comment says so; the exact derivative adds a term of order
        # alpha*beta*x^2/norm), followed here because it is what Darknet trains with. P
        # also overwrites the previous layer's delta instead of adding; darkcfg adds.
        if dy is None:
            return None
        from ..kernels.normalize import lrn_backward
        return lrn_backward(dy, self._factor)

    def row(self):
        c, h, w = self.in_shape
        return (f"Local Response Normalization Layer: {w} x {h} x {c} image, "
                f"{self.opts['size']} size")
