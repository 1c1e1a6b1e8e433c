"""[rnn]: Darknet's vanilla recurrent layer (summary only: shape and parameters)."""
from __future__ import annotations

from ._shape_only import Recurrent
from .base import register


@register
class Rnn(Recurrent):
    type = "rnn"
    label = "RNN"

    def subs(self):
        n, hid = self.opts["output"], self.opts["hidden"]
        if self.net.dialect == "alexeyab" and hid:
            return [(self.inputs, hid), (hid, hid), (hid, n)]
        return [(self.inputs, n), (n, n), (n, n)]
