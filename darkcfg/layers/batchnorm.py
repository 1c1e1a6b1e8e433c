"""[batchnorm] (P, A): standalone per-channel batch normalisation."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ._bn_activation import check_bn_batch
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Batchnorm(Layer):
    type = "batchnorm"
    example = "[batchnorm]\n"
    doc = "standalone batch normalisation (weights layout depends on the dialect)"
    # as BNActivation.exact_bn: tests set True to compare with finite differences
    exact_bn: ClassVar[bool] = False

    def setup(self, layers):
        self.image_input()

    def param_shapes(self):
        c = self.in_shape[0]
        triplet = [("scales", (c,)), ("rolling_mean", (c,)), ("rolling_variance", (c,))]
        # P stores 3 arrays, A stores biases first (src/parser.c: load_batchnorm_weights)
        return triplet if self.net.dialect == "pjreddie" else [("biases", (c,)), *triplet]

    def flops(self):
        return 2.0 * self.outputs

    def row(self):
        c, h, w = self.in_shape
        return f"Batch Normalization Layer: {w} x {h} x {c} image"

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> same shape (own buffer, as [activation]). P has no biases in
        # the file and adds zeros (reference case `batchnorm_crop`); A reads biases first.
        # Training: batch statistics like a conv's BN (Darknet P cannot run this layer on
        # the CPU and never updates it; darkcfg trains scales, and biases when the layout
        # has them: README, "Deliberate differences from Darknet").
        from ..kernels import bn, bn_train, conv
        p = self.params
        self._out = out = conv.reuse(getattr(self, "_out", None), x.shape)
        np.copyto(out, x)
        if not net.train or self.frozen:    # frozen (sgd.frozen_layers): rolling statistics
            return bn.bn_inference(out, p["scales"], p["rolling_mean"],
                                   p["rolling_variance"], p.get("biases"), self.net.dialect)
        check_bn_batch(self, out)
        self._xhat = conv.reuse(getattr(self, "_xhat", None), x.shape)
        _, self._var = bn_train.forward(out, p["scales"], p.get("biases"), p["rolling_mean"],
                                        p["rolling_variance"], self.net.dialect, self._xhat)
        return out

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # dy -> dx (same shape), Darknet's BN backward rule (kernels/bn_train.py)
        if dy is None:
            return None
        from ..kernels import bn, bn_train, conv
        self._dx = dx = conv.reuse(getattr(self, "_dx", None), dy.shape)
        np.copyto(dx, dy)
        if self.frozen:     # the rolling statistics are constants: dx = dy * scales / D
            p = self.params
            factor = p["scales"] / bn.bn_denominator(p["rolling_variance"], self.net.dialect)
            dx.reshape(len(dx), factor.size, -1)[...] *= factor.astype(np.float32)[:, None]
            return dx
        return bn_train.backward(dx, self._xhat, self.params["scales"], self._var,
                                 self.net.dialect, self.grads["scales"],
                                 self.grads.get("biases"), exact=self.exact_bn)
