"""[implicit] (A): a learned constant, filters x atoms x 1, the same for every image
(AlexeyAB's src/implicit_layer.c; YOLOR's implicit knowledge, used through [shortcut] or
[scale_channels] as an implicit add or multiply)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Implicit(Layer):
    type = "implicit"
    # the contract case: the constant alone (its input gets gradient 0)
    example = "[implicit]\nfilters=5\natoms=2\nmean=1\nstd=0.5\n"
    doc = "learned constant filters x atoms x 1 (ignores its input)"
    # src/parser.c: parse_implicit reads these four, with these defaults
    options = {
        "filters": Opt("int", 128, "channels of the constant", min=1),
        "atoms": Opt("int", 1, "its height", min=1),
        "mean": Opt("float", 0.0, "initial values: mean + U(-std, std)"),
        "std": Opt("float", 0.2, "initial values: mean + U(-std, std)", min=0),
    }

    def setup(self, layers):
        # make_implicit_layer: out_c = filters, out_h = atoms, out_w = 1; the previous
        # layer's output is never read
        self.out_shape = (self.opts["filters"], self.opts["atoms"], 1)

    def param_shapes(self):
        # nweights = filters*atoms, in the output's flat C,H,W order (save_implicit_weights)
        return [("weights", self.out_shape)]

    def init_params(self, rng: np.random.Generator) -> None:
        # make_implicit_layer: weights[i] = mean + rand_uniform(-std, std)
        o = self.opts
        w = self.params["weights"]
        w[...] = o["mean"] + rng.uniform(-o["std"], o["std"], w.shape)

    def row(self):
        o = self.opts
        return f"implicit Layer: {o['filters']} x {o['atoms']} \t mean={o['mean']:.2f}, " \
               f"std={o['std']:.2f}"

    def label_lines(self):
        return [self.type, f"{self.opts['filters']} x {self.opts['atoms']}"]

    def receptive(self, rf):
        return (1.0, 1.0)         # a constant depends on no pixel

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, ...) is ignored -> (N, filters, atoms, 1): the weights for every image
        # (forward_implicit_layer). Own buffer: later layers may write into their input.
        out = getattr(self, "_out", None)
        if out is None or out.shape[0] != len(x):
            out = self._out = np.empty((len(x), *self.out_shape), np.float32)
        out[...] = self.params["weights"]
        self._n_in = x.shape
        return out

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # backward_implicit_layer: the weights' gradient is dy summed over the batch. The
        # output does not depend on the input: its gradient is 0 (returned, not None, so
        # that earlier layers see an exact, if empty, derivative).
        if dy is None:
            return None
        self.grads["weights"] += dy.sum(axis=0, dtype=np.float32)
        return np.zeros(self._n_in, np.float32)
