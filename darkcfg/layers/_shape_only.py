"""Helpers of the sections darkcfg sizes and summarises but does not compute (refused by
name when run; README, "Deliberate differences from Darknet"):
their activation key, the sizes of [connected] sub-layers, and the recurrent base of
[rnn], [gru] and [lstm] (Darknet's src/rnn_layer.c, gru_layer.c, lstm_layer.c: make_*).

Their shapes and parameter counts follow Darknet so that any cfg can be summarised and its
.weights size checked; building a network to run refuses them by name.
"""
from __future__ import annotations

from ..activations import ACTIVATIONS
from ..options import Opt
from .base import Layer

ACT = Opt("str", "logistic", "activation", choices=ACTIVATIONS)


def connected_params(n_in: int, n_out: int, bn: bool) -> int:
    return n_out + n_in * n_out + (3 * n_out if bn else 0)


def connected_row(n_in: int, n_out: int) -> str:
    return f"\t\tconnected                            {n_in:4d}  ->  {n_out:4d}"


class Recurrent(Layer):
    """[rnn], [gru], [lstm]: stacks of connected sub-layers (their weights in Darknet's
    src/parser.c: load_weights_upto, one connected block per sub-layer)."""
    runnable = False
    options = {
        "output": Opt("int", 1, "output units", min=1),
        "hidden": Opt("int", 0, "hidden units (A; P ignores it)", min=0),
        "activation": ACT,
        "batch_normalize": Opt("int", 0, "batch normalisation", min=0),
    }
    quiet = frozenset({"shortcut", "peephole", "lstm_activation", "xnor"})
    label = ""

    def subs(self) -> list[tuple[int, int]]:
        raise NotImplementedError

    def setup(self, layers):
        self.out_shape = (self.opts["output"], 1, 1)

    def param_shapes(self):
        bn = bool(self.opts["batch_normalize"])
        return [(f"sub{i}", (connected_params(a, b, bn),))
                for i, (a, b) in enumerate(self.subs())]

    def flops(self):
        return sum(2.0 * a * b for a, b in self.subs())

    def row(self):
        head = f"{self.label} Layer: {self.inputs} inputs, {self.outputs} outputs"
        return "\n".join([head, *(connected_row(a, b) for a, b in self.subs())])
