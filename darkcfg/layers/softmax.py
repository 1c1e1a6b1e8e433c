"""[softmax] / [soft]: softmax over contiguous groups, with temperature."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from ._loss import layer_truth, loss_gradient
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Softmax(Layer):
    type = "softmax"
    example = "[softmax]\ngroups=2\n"
    example_loss = 1.0
    aliases = ("soft",)
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

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> same shape: a softmax over each of `groups` contiguous chunks of
        # the flat per-sample buffer, logits divided by `temperature` (case `softmax`).
        # Training with a truth (unless noloss): the cross-entropy, `cost` = sum of -ln(p)
        # where the truth is non-zero, gradient p - t w.r.t. the logits (src/blas.c:
        # softmax_x_ent_cpu).
        from ..kernels.softmax import softmax_cross_entropy, softmax_groups
        out = softmax_groups(x, self.groups, self.temperature)
        self.cost = self._grad = None
        if net.train and net.truth is not None and not self.opts["noloss"]:
            self.cost, self._grad = softmax_cross_entropy(out, layer_truth(self, net, out))
        return out

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # Darknet's: p - t plus the arriving gradient unchanged, no softmax Jacobian (also
        # with a temperature, and with noloss the layer is a pass-through)
        return loss_gradient(self, dy)

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
