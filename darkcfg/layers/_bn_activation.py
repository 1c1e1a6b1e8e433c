"""The BN + activation tail shared by [convolutional], [deconvolutional] and [connected]
(and the batch check of [batchnorm]): Darknet's src/convolutional_layer.c:
forward_convolutional_layer after the product, and backward_convolutional_layer before it."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..activations import ACTIVATIONS
from ..options import Opt

if TYPE_CHECKING:
    from .base import Layer, RunState

ACT = Opt("str", "logistic", "activation after the layer", choices=ACTIVATIONS)


class BNActivation:
    """The tail shared by [convolutional], [deconvolutional] and [connected]: the linear
    product z, then BN (its biases are the layer's biases) or a bias, then the activation.

    Training forward: BN over the batch statistics (kernels.bn_train), keeping xhat and
    the batch variance; a copy of the pre-activation values when the activation's
    gradient needs them; the output y itself serves the classic activations. Backward
    (P backward_convolutional_layer's order): activation gradient, then BN backward or
    the bias gradient, giving dLoss/dz for the product's own backward.
    """
    # Darknet's BN backward rule (kernels/bn_train.py); tests set True on an instance to
    # compare with finite differences of the forward.
    exact_bn: ClassVar[bool] = False

    def finish_forward(self, z: np.ndarray, net: RunState,
                       moments: np.ndarray | None = None) -> np.ndarray:
        """`moments`: z's channel sums from the product kernel (kernels.bn_train)."""
        from ..kernels import activations, bn, bn_train, conv
        p = self.params
        if not self.batch_normalize:
            bn.add_bias(z, p["biases"])
        elif net.train and not self.frozen:   # frozen: the rolling statistics, as below
            check_bn_batch(self, z)
            self._xhat = conv.reuse(getattr(self, "_xhat", None), z.shape)
            # classic activations are applied in BN's normalising pass
            _, self._var = bn_train.forward(z, p["scales"], p["biases"], p["rolling_mean"],
                                            p["rolling_variance"], self.net.dialect,
                                            self._xhat, moments, self.activation)
            self._pre = None
            if self.activation in bn_train.FUSED:
                return z
        else:
            bn.bn_inference(z, p["scales"], p["rolling_mean"], p["rolling_variance"],
                            p["biases"], self.net.dialect)
        self._pre = None
        if net.train and activations.needs_input(self.activation):
            self._pre = conv.reuse(getattr(self, "_pre_buf", None), z.shape)
            self._pre_buf = self._pre
            np.copyto(self._pre, z)
        return activations.activate(z, self.activation)

    def inference_tail(self):
        """The BN (rolling statistics) or bias, and the activation, as a kernels.conv.Tail
        that the product kernel applies while each output tile is in cache. Kept between
        calls (in the layer's conv cache, which params_changed clears) while its vectors
        hold the same bytes (a hash of all of them: ~2 us; made anew the tail cost ~30 us
        a conv, 2 ms a forward of yolov7-tiny)."""
        from ..kernels import conv
        p = self.params
        names = ("biases", "scales", "rolling_mean", "rolling_variance") \
            if self.batch_normalize else ("biases",)
        key = hash(b"".join(p[k].tobytes() for k in names))
        cache = self.__dict__.setdefault("_conv_cache", {})
        if cache.get("tail_key") == key:
            return cache["tail"]
        if self.batch_normalize:
            tail = conv.make_tail(self.n, p["biases"], p["scales"], p["rolling_mean"],
                                  p["rolling_variance"], self.net.dialect, self.activation)
        else:
            tail = conv.make_tail(self.n, p["biases"], activation=self.activation)
        cache["tail"], cache["tail_key"] = tail, key
        return tail

    def finish_tail(self, out: np.ndarray) -> np.ndarray:
        """After a product with the inference tail: only per-pixel activations remain."""
        from ..kernels import activations
        self._pre = None
        if self.activation in activations.PER_PIXEL:
            activations.activate(out, self.activation)
        return out

    def product_grad(self, dy: np.ndarray) -> np.ndarray:
        """dLoss/dz from dy = dLoss/d(output), in a buffer of the layer's (dy is left
        intact); accumulates the bias (and BN scale) gradients."""
        from ..kernels import activations, bn_train, conv
        self._dz = dz = conv.reuse(getattr(self, "_dz", None), dy.shape)
        p, g = self.params, self.grads
        if self.batch_normalize and self.frozen:
            return frozen_bn_grad(self, dy, dz)
        if self.activation in bn_train.FUSED:   # activation gradient and sums in one pass
            if self.batch_normalize:
                return bn_train.backward(dy, self._xhat, p["scales"], self._var,
                                         self.net.dialect, g["scales"], g["biases"],
                                         exact=self.exact_bn, y=self._out,
                                         activation=self.activation, out=dz)
            return bn_train.bias_grad(dy, g["biases"], y=self._out,
                                      activation=self.activation, out=dz)
        np.copyto(dz, dy)
        activations.gradient(dz, self._out, self._pre, self.activation)
        if self.batch_normalize:
            bn_train.backward(dz, self._xhat, self.params["scales"], self._var,
                              self.net.dialect, self.grads["scales"], self.grads["biases"],
                              exact=self.exact_bn)
        else:
            bn_train.bias_grad(dz, self.grads["biases"])
        return dz

    def wants_dx(self) -> bool:
        """Whether the gradient for the input is used: not for the network input, nor
        when the previous layer stops the backward pass."""
        prev = self.prev
        return prev is not None and not prev.stops_backward


def frozen_bn_grad(layer: Layer, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """dLoss/dz into dz for a frozen layer (sgd.frozen_layers), whose forward normalised
    with the rolling statistics: constants, so BN is the per-channel affine map
    z -> (z - rolling_mean) / D * scales + biases and dz = act'(y) dy * scales / D."""
    from ..kernels import activations, bn
    p = layer.params
    np.copyto(dz, dy)
    activations.gradient(dz, layer._out, layer._pre, layer.activation)
    factor = p["scales"] / bn.bn_denominator(p["rolling_variance"], layer.net.dialect)
    dz.reshape(len(dz), factor.size, -1)[...] *= factor.astype(np.float32)[:, None]
    return dz


def check_bn_batch(layer: Layer, z: np.ndarray) -> None:
    """The unbiased batch variance needs 2 values per channel (Darknet's src/blas.c:
    variance_cpu divides by batch*spatial - 1 = 0 and gives NaN; README, "Deliberate
    differences from Darknet")."""
    from ..kernels import bn_train
    if bn_train.values_per_channel(z) < 2:
        n, _, h, w = z.shape
        raise layer.error(f"batch normalisation in training needs at least 2 values per "
                          f"channel (mini-batch x height x width); this layer has {n} x {h} "
                          f"x {w}: train with batch/subdivisions >= 2")
