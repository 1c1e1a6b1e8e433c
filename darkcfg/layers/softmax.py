"""[softmax] / [soft]: softmax over contiguous groups, with temperature."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from ..network import Network


@register
class Softmax(Layer):
    type = "softmax"
    doc = "softmax over `groups` contiguous chunks of the flat input; cross-entropy loss"
    options = {
        "groups": Opt("int", 1, "independent softmaxes over inputs/groups values", min=1),
        "temperature": Opt("float", 1.0, "logits are divided by this", min=1e-30),
        "tree": Opt("str", None, "hierarchical softmax tree file (not computed)"),
        "spatial": Opt("float", 0.0, "per-pixel softmax (GPU only in Darknet; not computed)"),
        "noloss": Opt("int", 0, "no loss or delta from this layer", min=0),
    }

    def setup(self, layers):
        g = self.opts["groups"]
        if self.inputs % g:
            raise self.error(f"groups must divide the layer's {self.inputs} inputs; "
                             f"received groups={g}", "groups")
        self.groups, self.temperature = g, self.opts["temperature"]

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        # x (N, C, H, W) -> same shape: a softmax over each of `groups` contiguous chunks of
        # the flat per-sample buffer, logits divided by `temperature` (case `softmax`).
        from ..kernels.softmax import softmax_groups
        return softmax_groups(x, self.groups, self.temperature)

    def flops(self):
        return 3.0 * self.inputs

    def row(self):
        return f"softmax                                        {self.inputs:4d}"

    def unsupported(self):
        if self.opts["tree"] is not None:
            return "'tree' (hierarchical softmax) is not computed by darkcfg"
        if self.opts["spatial"]:
            return "'spatial' softmax is not computed by darkcfg"
        return None
