"""[shortcut]: residual sum of the previous layer and one or more earlier layers."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..activations import ACTIVATIONS
from ..options import Opt
from .base import Layer, dims, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Shortcut(Layer):
    type = "shortcut"
    example = ("[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=logistic\n"
               "batch_normalize=1\n[convolutional]\nfilters=4\nsize=3\npad=1\n"
               "activation=logistic\nbatch_normalize=1\n[shortcut]\nfrom=-2\n"
               "activation=logistic\n")
    doc = "residual add: act(alpha*previous + beta*from), over the overlapping channels"
    options = {
        "from": Opt("layers", None, "layer(s) added to the previous layer", required=True),
        "activation": Opt("str", "linear", "activation after the sum", choices=ACTIVATIONS),
        "alpha": Opt("float", 1.0, "scale on the previous layer (P)"),
        "beta": Opt("float", 1.0, "scale on the from layer (P)"),
        "weights_type": Opt("str", "none", "learnable fusion weights (AH)",
                            choices=("none", "per_feature", "per_layer", "per_channel")),
        "weights_normalization": Opt("str", "none", "fusion weight normalisation (AH)",
                                     choices=("none", "relu", "avg_relu", "softmax")),
    }

    def setup(self, layers):
        self.image_input()
        self.sources = [self.resolve("from", k, layers) for k in self.opts["from"]]
        self.activation = self.opts["activation"]
        c, h, w = self.in_shape
        self.factors = []
        for i in self.sources:
            fc, fh, fw = layers[i].out_shape
            # P maps an integer factor: a larger `from` is sampled with stride fw/w, a
            # smaller one is added at every w/fw-th cell (reference case `shortcut`).
            if fw >= w:
                ok = fw % w == 0 and fh % h == 0 and fw // w == fh // h
            else:
                ok = w % fw == 0 and h % fh == 0 and w // fw == h // fh
            if not ok:
                raise self.error(
                    f"cannot add layer {i} ({fw} x {fh} x {fc}, w x h x c) to the previous "
                    f"layer ({w} x {h} x {c}): the spatial sizes must be equal or differ by "
                    "the same integer factor on both axes", "from")
            self.factors.append((fw, fh, fc))
        if len(self.sources) > 1 and (self.opts["alpha"], self.opts["beta"]) != (1.0, 1.0):
            raise self.error("'alpha'/'beta' (P) cannot be combined with several 'from' "
                             "layers (AH); no Darknet defines that", "alpha"
                             if "alpha" in self.section.entries else "beta")
        if len(self.sources) > 1 and any(f[:2] != (w, h) for f in self.factors):
            raise self.error("with several 'from' layers every one must have the previous "
                             f"layer's spatial size {w} x {h}", "from")
        self._setup_weights()

    def _setup_weights(self) -> None:
        """AH's learnable fusion weights (src/parser.c: parse_shortcut, make_shortcut_layer):
        one per input (per_feature; per_layer is the same) or one per input and channel
        (per_channel), in the file as (n+1) x k, input-major."""
        wt, norm = self.opts["weights_type"], self.opts["weights_normalization"]
        self.wshape: tuple[int, int] | None = None
        if wt == "none":
            return
        if norm == "none":
            key = "weights_normalization"
            raise self.error(f"'weights_type={wt}' needs 'weights_normalization=relu', "
                             "'avg_relu' or 'softmax' (AlexeyAB's Darknet stops with "
                             "\"Incorrect weights_normalization\" without one); add it",
                             key if key in self.section.entries else "weights_type")
        for key in ("alpha", "beta"):
            if key in self.section.entries:
                raise self.error(f"'{key}' (P) cannot be combined with 'weights_type' (AH); "
                                 "the fusion weights scale every input", key)
        c, h, w = self.in_shape
        if any(f[:2] != (w, h) for f in self.factors):
            raise self.error("with 'weights_type' every 'from' layer must have the previous "
                             f"layer's spatial size {w} x {h} (AlexeyAB asserts it)", "from")
        self.wshape = (len(self.sources) + 1, c if wt == "per_channel" else 1)
        # AH: avg_relu is read as relu (parse_shortcut)
        self.normalization = "softmax" if norm == "softmax" else "relu"

    @property
    def nweights(self) -> int:
        return self.wshape[0] * self.wshape[1] if self.wshape else 0

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> same shape, activation applied last.
        from ..kernels.activations import activate, needs_input
        from ..kernels.shortcut import shortcut_mix, shortcut_sum
        adds = [net.outputs[i] for i in self.sources]
        if self.wshape:
            return self._forward_weighted(x, adds, net)
        if len(adds) == 1:
            # P: alpha*x + beta*from over the overlapping channels, a larger `from` sampled,
            # a smaller one added sparsely; the rest of x passes unscaled (case `shortcut`).
            # The common activations are applied in the same pass.
            out, done = shortcut_mix(x, adds[0], self.opts["alpha"], self.opts["beta"],
                                     out=getattr(self, "_buf", None),
                                     activation=self.activation)
            self._buf = out
        else:
            # AH: flat per-sample sum, each `from` over its first min(outputs) values
            # (alpha/beta with several `from` is refused in setup).
            out, done = shortcut_sum(x, adds), False
        if net.train:
            self._y = out
            self._pre = out.copy() if needs_input(self.activation) and not done else None
        return out if done else activate(out, self.activation)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # Through the activation first, in place: dy becomes Darknet's delta of this layer
        # (the gradient at the sum; reference case train_resid, delta_003). Then the
        # transpose of the forward: alpha * it to the previous layer where mixed, beta * it
        # to the `from` cells read (P); or all of it to the previous layer and each `from`'s
        # first values (AH).
        if dy is None:
            return None
        from ..kernels.activations import gradient
        from ..kernels.shortcut import shortcut_mix_backward, shortcut_sum_backward
        g = gradient(dy, self._y, self._pre, self.activation)
        if self.wshape:
            return self._backward_weighted(g, net)
        shapes = [net.outputs[i].shape for i in self.sources]
        if len(self.sources) == 1:
            dx, dadd = shortcut_mix_backward(g, shapes[0], self.opts["alpha"],
                                             self.opts["beta"])
            net.add_grad(self.sources[0], dadd)
            return dx
        for i, da in zip(self.sources, shortcut_sum_backward(g, shapes)):
            net.add_grad(i, da)
        return g

    def _forward_weighted(self, x: np.ndarray, adds: list[np.ndarray],
                          net: RunState) -> np.ndarray:
        # AH: act(wn0*x + Σ wn_j*from_j) on the flat buffers, wn the normalised weights
        from ..kernels.activations import activate, needs_input
        from ..kernels.shortcut import normalize_fusion, shortcut_weighted
        wn = normalize_fusion(self.params["weights"].reshape(self.wshape), self.normalization)
        out = shortcut_weighted(x, adds, wn)
        if net.train:
            self._x, self._wn, self._y = x, wn, out
            self._pre = out.copy() if needs_input(self.activation) else None
        return activate(out, self.activation)

    def _backward_weighted(self, g: np.ndarray, net: RunState) -> np.ndarray:
        # the transpose of the weighted sum to every input, and the exact gradient at the
        # raw weights through the normalisation (kernels/shortcut.py)
        from ..kernels.shortcut import normalize_fusion_backward, shortcut_weighted_backward
        adds = [net.outputs[i] for i in self.sources]
        dx, dadds, dwn = shortcut_weighted_backward(g, self._x, adds, self._wn)
        w = self.params["weights"].reshape(self.wshape)
        dw = normalize_fusion_backward(w, self._wn, dwn, self.normalization)
        self.grads["weights"] += dw.reshape(self.grads["weights"].shape)
        for i, da in zip(self.sources, dadds):
            net.add_grad(i, da)
        return dx

    def param_shapes(self):
        return [("weights", (self.nweights,))] if self.nweights else []

    def allocate(self) -> None:
        # make_shortcut_layer starts every fusion weight at 1 (equal shares)
        super().allocate()
        if self.nweights:
            self.params["weights"][...] = 1

    def init_params(self, rng: np.random.Generator) -> None:
        if self.nweights:
            self.params["weights"][...] = 1

    def flops(self):
        return float(self.outputs * len(self.sources)) * (2 if self.nweights else 1)

    def receptive(self, rf):
        return max([self._rf_in(rf)] + [rf[i] for i in self.sources])

    def row(self):
        src = self.sources[0]
        fw, fh, fc = self.factors[0]
        return (f"res  {src:3d}                {dims((fc, fh, fw))}   ->  "
                f"{dims(self.out_shape)}")
