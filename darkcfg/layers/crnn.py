"""[crnn]: convolutional recurrent layer (src/crnn_layer.c: forward_crnn_layer).

[rnn]'s recurrence with three stride-1 [convolutional] sub-layers keeping h x w: input
(c -> hidden filters), self (hidden -> hidden), output (hidden -> output filters), all
with the section's activation and batch_normalize. The state is hidden x h x w.

Keys: pjreddie reads `hidden_filters`/`output_filters` and always uses 3x3 kernels with
padding 1; alexeyab reads `hidden`/`output`, `size` and `pad`. darkcfg takes either
spelling in both dialects.

Shape: pjreddie's src/parser.c: parse_crnn passes (w, h) where make_crnn_layer takes
(h, w), so for a non-square input its convolutions wrap the rows of each C,H,W buffer at
the wrong width (a second [crnn] swaps back). darkcfg computes the shape the cfg states
(h x w as the previous layer gives it); tests/test_recurrent.py replays Darknet's swap to
match reference/recurrent_local_yolov1/cases/crnn_fwd (README, "Deliberate differences
from Darknet").
"""
from __future__ import annotations

from ..options import Opt
from ._bn_activation import ACT
from ._recurrent import Sub, Summed
from .base import register


@register
class Crnn(Summed):
    type = "crnn"
    label = "CRNN"
    doc = "convolutional recurrent layer: [rnn] with stride-1 convolutions; time_steps x " \
          "streams rows"
    example = "[crnn]\nhidden_filters=2\noutput_filters=3\npad=1\nactivation=tanh\n"
    options = {
        "output_filters": Opt("int", 0, "output filters (pjreddie's key)", min=0),
        "hidden_filters": Opt("int", 0, "hidden (state) filters (pjreddie's key)", min=0),
        "output": Opt("int", 1, "output filters (alexeyab's key)", min=1),
        "hidden": Opt("int", 1, "hidden filters (alexeyab's key)", min=1),
        "size": Opt("int", 3, "kernel size (alexeyab; pjreddie: 3)", min=1),
        "stride": Opt("int", 1, "stride (alexeyab; pjreddie: 1)", min=1),
        "pad": Opt("int", 0, "1: padding = size/2 (alexeyab; pjreddie: padding 1)", min=0),
        "activation": ACT,
        "batch_normalize": Opt("int", 0, "batch normalisation in the sub-layers", min=0),
        "shortcut": Opt("int", 0, "1: the state accumulates (h += input + self)", min=0),
    }
    quiet = frozenset({"xnor", "groups", "dilation"})

    def setup(self, layers):
        self.image_input()
        _, h, w = self.in_shape
        o = self.opts
        self.filters = o["output_filters"] or o["output"]
        self.hidden = o["hidden_filters"] or o["hidden"]
        if self.net.dialect == "pjreddie":
            self.size, self.stride, self.padding = 3, 1, 1
        else:
            self.size, self.stride = o["size"], o["stride"]
            self.padding = o["size"] // 2 if o["pad"] else 0
        k, s, p = self.size, self.stride, self.padding
        self.out_shape = (self.filters, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        self.setup_subs()

    IGNORED = {"xnor": "0", "groups": "1", "dilation": "1"}

    def unsupported(self):
        if super().unsupported():
            return super().unsupported()
        if self.stride != 1 or 2 * self.padding != self.size - 1:
            return (f"[crnn] with size={self.size}, stride={self.stride}, padding="
                    f"{self.padding} changes h x w, so its state cannot feed back (Darknet "
                    "needs stride 1 and padding size/2 too)")
        return None

    def subs(self):
        o, c, hid = self.opts, self.in_shape[0], self.hidden
        act, bn, k, p = o["activation"], bool(o["batch_normalize"]), self.size, self.padding
        return [Sub("input", c, hid, act, bn, k, p), Sub("self", hid, hid, act, bn, k, p),
                Sub("output", hid, self.filters, act, bn, k, p)]

    def row(self):
        return f"CRNN Layer: {self.in_shape[2]} x {self.in_shape[1]} x {self.in_shape[0]} image"
