"""[convolutional] / [conv]: grouped, dilated, strided 2-D convolution (+ BN, activation)."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..activations import ACTIVATIONS
from ..options import Opt
from .base import Layer, dims, register

if TYPE_CHECKING:
    from ..network import Network

ACT = Opt("str", "logistic", "activation after the layer", choices=ACTIVATIONS)

# Keys that change the math in ways darkcfg does not compute: accepted so the cfg can be
# summarised, refused when the network is run.
NOT_COMPUTED = ("binary", "xnor", "bin_output", "antialiasing", "sway", "rotate", "stretch",
                "stretch_sway", "coordconv", "cbn")


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

    def finish_forward(self, z: np.ndarray, net: Network,
                       moments: np.ndarray | None = None) -> np.ndarray:
        """`moments`: z's channel sums from the product kernel (kernels.bn_train)."""
        from ..kernels import activations, bn, bn_train, conv
        p = self.params
        if not self.batch_normalize:
            bn.add_bias(z, p["biases"])
        elif net.train:
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
        that the product kernel applies while each output tile is in cache."""
        from ..kernels import conv
        p = self.params
        if self.batch_normalize:
            return conv.make_tail(self.n, p["biases"], p["scales"], p["rolling_mean"],
                                  p["rolling_variance"], self.net.dialect, self.activation)
        return conv.make_tail(self.n, p["biases"], activation=self.activation)

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
        return prev is not None and not prev.opts["stopbackward"]


def check_bn_batch(layer: Layer, z: np.ndarray) -> None:
    """The unbiased batch variance needs 2 values per channel (Darknet divides 0 by 0:
    DECISIONS §3)."""
    from ..kernels import bn_train
    if bn_train.values_per_channel(z) < 2:
        n, _, h, w = z.shape
        raise layer.error(f"batch normalisation in training needs at least 2 values per "
                          f"channel (mini-batch x height x width); this layer has {n} x {h} "
                          f"x {w}: train with batch/subdivisions >= 2")


@register
class Convolutional(BNActivation, Layer):
    type = "convolutional"
    doc = "2-D convolution; groups, dilation, per-axis stride; optional batch norm"
    options = {
        "filters": Opt("int", 1, "output channels", min=1),
        "size": Opt("int", 1, "kernel size", min=1),
        "stride": Opt("int", 1, "stride on both axes", min=1),
        "stride_x": Opt("int", 0, "horizontal stride (AH; default: stride)", min=0),
        "stride_y": Opt("int", 0, "vertical stride (AH; default: stride)", min=0),
        "pad": Opt("int", 0, "1: padding = size/2 (overrides padding)", min=0),
        "padding": Opt("int", 0, "explicit padding per side", min=0),
        "groups": Opt("int", 1, "grouped convolution (groups = channels: depthwise)", min=1),
        "dilation": Opt("int", 1, "kernel dilation (AH)", min=1),
        "activation": ACT,
        "batch_normalize": Opt("int", 0, "batch normalisation after the convolution", min=0),
        "flipped": Opt("int", 0, "weights stored transposed in the .weights file", min=0),
        "share_index": Opt("layers", None, "reuse another conv layer's weights (AH)"),
        **{k: Opt("int", 0, "not computed by darkcfg", min=0) for k in NOT_COMPUTED},
    }
    quiet = frozenset({"dot", "angle", "assisted_excitation", "grad_centr", "reverse"})

    def setup(self, layers):
        o = self.opts
        self.image_input()
        c, h, w = self.in_shape
        self.n, self.size = o["filters"], o["size"]
        self.stride_x = o["stride_x"] or o["stride"]
        self.stride_y = o["stride_y"] or o["stride"]
        self.pad = self.size // 2 if o["pad"] else o["padding"]
        self.dilation = 1 if self.size == 1 else o["dilation"]
        self.groups = g = o["groups"]
        self.batch_normalize = bool(o["batch_normalize"])
        self.activation = o["activation"]
        if c % g:
            raise self.error(f"groups must divide the input channels; received groups={g} "
                             f"with {c} input channels", "groups")
        if self.n % g:
            raise self.error(f"groups must divide filters; received groups={g}, "
                             f"filters={self.n}", "groups")
        self.share = None
        if o["share_index"] is not None:
            self.share = self.resolve("share_index", o["share_index"][0], layers)
        # AH apply the kernel with padding*dilation (cfg-format.md §5.1, §7); darkcfg
        # reports the shape that computation really has (DECISIONS §4).
        extent = self.dilation * (self.size - 1) + 1
        pad = self.pad * self.dilation
        out_h = (h + 2 * pad - extent) // self.stride_y + 1
        out_w = (w + 2 * pad - extent) // self.stride_x + 1
        self.out_shape = (self.n, out_h, out_w)

    def param_shapes(self):
        if self.share is not None:
            return []
        c = self.in_shape[0]
        n = self.n
        bn = [("scales", (n,)), ("rolling_mean", (n,)), ("rolling_variance", (n,))]
        return [("biases", (n,)), *(bn if self.batch_normalize else []),
                ("weights", (n, c // self.groups, self.size, self.size))]

    def flops(self):
        c = self.in_shape[0]
        _, oh, ow = self.out_shape
        return 2.0 * self.n * self.size * self.size * (c // self.groups) * oh * ow

    conv_flops = flops

    def receptive(self, rf):
        r, j = self._rf_in(rf)
        extent = self.dilation * (self.size - 1) + 1
        return r + (extent - 1) * j, j * max(self.stride_x, self.stride_y)

    def row(self):
        return (f"conv  {self.n:5d} {self.size:2d} x{self.size:2d} /{self.stride_x:2d}  "
                f"{dims(self.in_shape)}   ->  {dims(self.out_shape)}  "
                f"{self.flops() / 1e9:5.3f} BFLOPs")

    def unsupported(self):
        used = [k for k in NOT_COMPUTED if self.opts[k]]
        if used:
            return f"'{used[0]}={self.opts[used[0]]}' is not computed by darkcfg"
        if self.share is not None:
            return "'share_index' (weights shared with another layer) is not computed by darkcfg"
        return None

    def forward(self, x: np.ndarray, net: Network) -> np.ndarray:
        # x (N, C, H, W) -> (N, n, oh, ow): conv, then BN (whose biases are the conv
        # biases) or bias, then activation. Buffers are reused across calls; training
        # keeps x for the weight gradient.
        from ..kernels import conv
        tail = None if net.train else self.inference_tail()
        # training BN: the channel sums come from the product kernel
        moments = np.empty((self.n, 2)) if net.train and self.batch_normalize else None
        out, self._work = conv.conv2d(
            x, self.params["weights"], sy=self.stride_y, sx=self.stride_x,
            pad=self.pad * self.dilation, d=self.dilation, groups=self.groups,
            out=getattr(self, "_out", None), work=getattr(self, "_work", None), tail=tail,
            cache=None if net.train else self.__dict__.setdefault("_conv_cache", {}),
            moments=moments)
        self._out = out
        self._x = x if net.train else None
        if tail is not None:        # BN/bias and activation applied tile by tile
            return self.finish_tail(out)
        return self.finish_forward(out, net, moments)

    def backward(self, dy: np.ndarray | None, net: Network) -> np.ndarray | None:
        # dy (N, n, oh, ow) -> dx (N, C, H, W): activation and BN/bias backward, then
        # dW += dZ cols^T and dx = col2im(W^T dZ) (kernels.conv.conv2d_backward)
        if dy is None:
            return None
        from ..kernels import conv
        dz = self.product_grad(dy)
        dx, self._work = conv.conv2d_backward(
            self._x, self.params["weights"], dz, self.grads["weights"], sy=self.stride_y,
            sx=self.stride_x, pad=self.pad * self.dilation, d=self.dilation,
            groups=self.groups, need_dx=self.wants_dx(), dx=getattr(self, "_dx", None),
            work=self._work)
        if dx is not None:
            self._dx = dx
        return dx
