"""[connected] / [conn]: fully connected layer over the flattened C,H,W input."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from ._bn_activation import ACT, BNActivation
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Connected(BNActivation, Layer):
    type = "connected"
    example = "[connected]\noutput=5\nactivation=tanh\n"
    aliases = ("conn",)
    doc = "fully connected layer (input flattened in C,H,W order)"
    options = {
        "output": Opt("int", 1, "output units", min=1),
        "activation": ACT,
        "batch_normalize": Opt("int", 0, "batch normalisation over the outputs", min=0),
    }

    def setup(self, layers):
        self.n = self.opts["output"]
        self.activation = self.opts["activation"]
        self.batch_normalize = bool(self.opts["batch_normalize"])
        self.out_shape = (self.n, 1, 1)

    def param_shapes(self):
        n = self.n
        # BN triplet after the weights for connected (src/parser.c: load_connected_weights)
        bn = [("scales", (n,)), ("rolling_mean", (n,)), ("rolling_variance", (n,))]
        return [("biases", (n,)), ("weights", (n, self.inputs)),
                *(bn if self.batch_normalize else [])]

    def weights_from_file(self, name, flat, header):
        # a header with major or minor > 1000 holds the weights [input][output] (Darknet's
        # src/parser.c: load_connected_weights with transpose)
        shape = self.params[name].shape
        if name == "weights" and header.transpose:
            return flat.reshape(shape[1], shape[0]).T.reshape(shape)
        return flat.reshape(shape)

    def weights_to_file(self, name, array, header):
        if name == "weights" and header.transpose:
            return array.T
        return array

    def flops(self):
        return 2.0 * self.n * self.inputs

    def receptive(self, rf):
        return float("inf"), self._rf_in(rf)[1]

    def row(self):
        return f"connected                            {self.inputs:4d}  ->  {self.n:4d}"

    def init_params(self, rng: np.random.Generator) -> None:
        """Darknet (all lineages, src/connected_layer.c: make_connected_layer): weights
        sqrt(2/inputs) U(-1, 1); biases 0; BN scales 1, rolling statistics 0."""
        super().init_params(rng)
        wt = self.params["weights"]
        wt[...] = np.sqrt(2.0 / self.inputs) * rng.uniform(-1.0, 1.0, wt.shape)

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) flattened in C,H,W order -> (N, n, 1, 1) = x W^T, then BN over
        # the n outputs (reference case `connected`) or bias, then activation.
        from ..kernels import dense
        self._out = out = dense.dense(x, self.params["weights"],
                                     out=getattr(self, "_out", None))
        self._x = x if net.train else None
        return self.finish_forward(out, net)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # dy (N, n, 1, 1) -> dx (N, C, H, W): dW += dZ^T X, dx = dZ W
        if dy is None:
            return None
        from ..kernels import dense
        dz = self.product_grad(dy)
        dx = dense.dense_backward(self._x, self.params["weights"], dz, self.grads["weights"],
                                 need_dx=self.wants_dx(), dx=getattr(self, "_dx", None))
        if dx is not None:
            self._dx = dx
        return dx
