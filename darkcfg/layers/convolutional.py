"""[convolutional] / [conv]: grouped, dilated, strided 2-D convolution (+ BN, activation)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from ._bn_activation import ACT, BNActivation
from .base import Layer, dims, register

if TYPE_CHECKING:
    from .base import RunState


# Keys that change the math in ways darkcfg does not compute: accepted so the cfg can be
# summarised, refused when the network is run.
NOT_COMPUTED = ("binary", "xnor", "bin_output", "antialiasing", "sway", "rotate", "stretch",
                "stretch_sway", "coordconv", "cbn")


@register
class Convolutional(BNActivation, Layer):
    type = "convolutional"
    writes_out = True
    example = ("[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\ngroups=2\n"
               "batch_normalize=1\nactivation=logistic\n")
    aliases = ("conv",)
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
        # AH apply the kernel with padding*dilation (src/im2col.c: im2col_cpu_ext) but print
        # a size that ignores dilation (src/convolutional_layer.c: convolutional_out_height);
        # darkcfg reports the shape that computation really has (README, "Deliberate
        # differences from Darknet").
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

    def weights_from_file(self, name, flat, header):
        # flipped=1: the file holds the kernels transposed, [c*k*k][n] (Darknet's
        # src/parser.c: load_convolutional_weights, transpose_matrix)
        shape = self.params[name].shape
        if name == "weights" and self.opts["flipped"]:
            return flat.reshape(-1, shape[0]).T.reshape(shape)
        return flat.reshape(shape)

    def weights_to_file(self, name, array, header):
        if name == "weights" and self.opts["flipped"]:
            return array.reshape(array.shape[0], -1).T
        return array

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

    def label_lines(self):
        what = f"{self.n} {self.size}x{self.size}/{self.stride_x}"
        if self.groups > 1:
            what += f" g{self.groups}"
        if self.dilation > 1:
            what += f" d{self.dilation}"
        return [self.type, f"{what} {self.activation}"]

    def unsupported(self):
        used = [k for k in NOT_COMPUTED if self.opts[k]]
        if used:
            return f"'{used[0]}={self.opts[used[0]]}' is not computed by darkcfg"
        if self.share is not None:
            return "'share_index' (weights shared with another layer) is not computed by darkcfg"
        return None

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> (N, n, oh, ow): conv, then BN (whose biases are the conv
        # biases) or bias, then activation. Buffers are reused across calls; training
        # keeps x for the weight gradient.
        from ..kernels import conv
        tail = None if net.train else self.inference_tail()
        # training BN: the channel sums come from the product kernel
        moments = np.empty((self.n, 2)) if net.train and self.batch_normalize \
            and not self.frozen else None
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

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
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
