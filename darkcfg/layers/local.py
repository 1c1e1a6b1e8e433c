"""[local]: locally connected layer, a separate filter bank per output location
(Darknet's src/local_layer.c)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..activations import ACTIVATIONS
from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Local(Layer):
    type = "local"
    doc = "locally connected: an unshared filter bank and bias per output location"
    example = "[local]\nfilters=3\nsize=3\nstride=2\npad=1\nactivation=tanh\n"
    options = {
        "filters": Opt("int", 1, "output channels", min=1),
        "size": Opt("int", 1, "kernel size", min=1),
        "stride": Opt("int", 1, "stride", min=1),
        "pad": Opt("int", 0, "flag for the output size, amount for the patches (as "
                   "Darknet)", min=0),
        "activation": Opt("str", "logistic", "activation", choices=ACTIVATIONS),
    }

    def setup(self, layers):
        self.image_input()
        _, h, w = self.in_shape
        o = self.opts
        self.activation = o["activation"]
        # Darknet's local_out_height / local_out_width read `pad` as a flag
        cut = 1 if o["pad"] else o["size"]
        self.out_shape = (o["filters"], (h - cut) // o["stride"] + 1,
                          (w - cut) // o["stride"] + 1)

    def param_shapes(self):
        # file order (src/parser.c: load_weights_upto, the LOCAL branch): one bias per
        # output value (C,H,W order), then weights[location][filter][c][ky][kx]
        c = self.in_shape[0]
        n, oh, ow = self.out_shape
        k = self.opts["size"]
        return [("biases", (self.outputs,)), ("weights", (oh * ow, n, c, k, k))]

    def unsupported(self):
        # forward_local_layer's im2col_cpu takes `pad` as the padding amount: its patch
        # grid has (h + 2*pad - size)/stride + 1 rows, and only where that equals the
        # output's rows (size 3 with pad=1, or pad 0) does each location read its own
        # patch; otherwise Darknet reads columns at the wrong stride (past its buffer)
        _, h, w = self.in_shape
        _, oh, ow = self.out_shape
        k, s, p = self.opts["size"], self.opts["stride"], self.opts["pad"]
        grid = ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        if grid != (oh, ow):
            return (f"[local] with size={k} and pad={p}: Darknet sizes the output as "
                    f"{oh} x {ow} but pads its patches by {p} pixels, giving {grid[0]} x "
                    f"{grid[1]} patches, and computes no meaningful result; use "
                    f"pad={(k - 1) // 2} (or pad=0)")
        return None

    def flops(self):
        return 2.0 * self.outputs * self.in_shape[0] * self.opts["size"] ** 2

    def receptive(self, rf):
        r, s = self._rf_in(rf)
        return r + (self.opts["size"] - 1) * s, s * self.opts["stride"]

    def row(self):
        c, h, w = self.in_shape
        n, oh, ow = self.out_shape
        return (f"Local Layer: {h} x {w} x {c} image, {n} filters -> {oh} x {ow} x {n} "
                "image")

    def init_params(self, rng: np.random.Generator) -> None:
        """sqrt(2/(size*size*c)) U(-1, 1) for every weight, biases 0. Darknet's
        make_local_layer draws only the first location's filters and leaves the others
        0 (README, "Deliberate differences from Darknet")."""
        c, k = self.in_shape[0], self.opts["size"]
        self.params["biases"][...] = 0
        wt = self.params["weights"]
        wt[...] = np.sqrt(2.0 / (k * k * c)) * rng.uniform(-1.0, 1.0, wt.shape)

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> (N, n, oh, ow): bias per output value + per-location product
        # (src/local_layer.c: forward_local_layer), then the activation
        from ..kernels import activations, conv
        from ..kernels.local import local_forward
        self._out = out = conv.reuse(getattr(self, "_out", None), (len(x), *self.out_shape))
        cols = local_forward(x, self.params["weights"], self.params["biases"],
                             self.opts["stride"], self.opts["pad"], out)
        self._cols, self._x_shape = (cols, x.shape) if net.train else (None, None)
        self._pre = None
        if net.train and activations.needs_input(self.activation):
            self._pre = out.copy()
        return activations.activate(out, self.activation)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # Darknet's backward_local_layer (correct: the reference case train_local's
        # gradients match finite differences): activation gradient, bias and weight
        # gradients per location, then the input gradient
        if dy is None:
            return None
        from ..kernels import activations
        from ..kernels.local import local_backward
        dz = dy.copy()
        activations.gradient(dz, self._out, self._pre, self.activation)
        prev = self.prev
        need_dx = prev is not None and not prev.stops_backward
        return local_backward(self._cols, self._x_shape, self.params["weights"], dz,
                              self.grads["weights"], self.grads["biases"],
                              self.opts["stride"], self.opts["pad"], need_dx)
