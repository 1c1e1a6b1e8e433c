"""[rnn]: Darknet's vanilla recurrent layer (src/rnn_layer.c: forward_rnn_layer).

Three [connected] sub-layers sharing the section's activation and batch_normalize:
    i_t = input(x_t),  f_t = self(h_{t-1}),  h_t = (shortcut ? h_{t-1} : 0) + i_t + f_t,
    y_t = output(h_t)
The state is the sum h_t itself (no activation after the sum); the output is y_t.
The recurrence (shared with [crnn]), time steps, state and training: _recurrent.py.
"""
from __future__ import annotations

from ..options import Opt
from ._bn_activation import ACT
from ._recurrent import Sub, Summed
from .base import register


@register
class Rnn(Summed):
    type = "rnn"
    label = "RNN"
    doc = "recurrent layer: h = [h +] input(x) + self(h), output(h); time_steps x streams rows"
    example = "[rnn]\noutput=3\nactivation=tanh\nshortcut=1\n"
    options = {
        "output": Opt("int", 1, "output units", min=1),
        "hidden": Opt("int", 0, "state units (alexeyab; pjreddie uses output)", min=0),
        "activation": ACT,
        "batch_normalize": Opt("int", 0, "batch normalisation in the sub-layers", min=0),
        "shortcut": Opt("int", 0, "1: the state accumulates (h += input + self)", min=0),
    }
    quiet = frozenset({"xnor", "logistic"})
    # alexeyab's logistic=1/2 makes the self sub-layer logistic/loggy
    IGNORED = {"xnor": "0", "logistic": "0"}

    def setup(self, layers):
        o = self.opts
        self.hidden = o["hidden"] if self.net.dialect == "alexeyab" and o["hidden"] \
            else o["output"]
        self.out_shape = (o["output"], 1, 1)
        self.setup_subs()

    def subs(self):
        o, h = self.opts, self.hidden
        act, bn = o["activation"], bool(o["batch_normalize"])
        return [Sub("input", self.inputs, h, act, bn), Sub("self", h, h, act, bn),
                Sub("output", h, o["output"], act, bn)]
