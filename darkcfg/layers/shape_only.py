"""Sections darkcfg sizes and summarises but does not compute (DECISIONS §7).

Their shapes and parameter counts follow Darknet so that any cfg can be summarised and its
.weights size checked; building a network to run refuses them by name.
"""
from __future__ import annotations

from ..activations import ACTIVATIONS
from ..options import Opt
from .base import Layer, register
from .yolo import Yolo

ACT = Opt("str", "logistic", "activation", choices=ACTIVATIONS)


def connected_params(n_in: int, n_out: int, bn: bool) -> int:
    return n_out + n_in * n_out + (3 * n_out if bn else 0)


def connected_row(n_in: int, n_out: int) -> str:
    return f"\t\tconnected                            {n_in:4d}  ->  {n_out:4d}"


class Recurrent(Layer):
    """[rnn], [gru], [lstm]: stacks of connected sub-layers (weights-format.md §3.8)."""
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


@register
class Rnn(Recurrent):
    type = "rnn"
    label = "RNN"

    def subs(self):
        n, hid = self.opts["output"], self.opts["hidden"]
        if self.net.dialect == "alexeyab" and hid:
            return [(self.inputs, hid), (hid, hid), (hid, n)]
        return [(self.inputs, n), (n, n), (n, n)]


@register
class Gru(Recurrent):
    type = "gru"
    label = "GRU"

    def subs(self):
        n = self.opts["output"]
        return [(self.inputs, n), (n, n)] * 3


@register
class Lstm(Recurrent):
    type = "lstm"
    label = "LSTM"

    def subs(self):
        n = self.opts["output"]
        return [(self.inputs, n)] * 4 + [(n, n)] * 4


@register
class Crnn(Layer):
    type = "crnn"
    runnable = False
    options = {
        "output": Opt("int", 1, "output filters", min=1),
        "hidden": Opt("int", 1, "hidden filters", min=1),
        "size": Opt("int", 3, "kernel size", min=1),
        "stride": Opt("int", 1, "stride", min=1),
        "pad": Opt("int", 0, "1: padding = size/2", min=0),
        "activation": ACT,
        "batch_normalize": Opt("int", 0, "batch normalisation", min=0),
    }
    quiet = frozenset({"xnor", "groups", "dilation", "shortcut"})

    def setup(self, layers):
        self.image_input()
        c, h, w = self.in_shape
        o = self.opts
        p = o["size"] // 2 if o["pad"] else 0
        self.convs = [(c, o["hidden"]), (o["hidden"], o["hidden"]), (o["hidden"], o["output"])]
        self.out_shape = (o["output"], (h + 2 * p - o["size"]) // o["stride"] + 1,
                          (w + 2 * p - o["size"]) // o["stride"] + 1)

    def param_shapes(self):
        k, bn = self.opts["size"], bool(self.opts["batch_normalize"])
        return [(f"sub{i}", (n + a * n * k * k + (3 * n if bn else 0),))
                for i, (a, n) in enumerate(self.convs)]

    def row(self):
        return f"CRNN Layer: {self.in_shape[2]} x {self.in_shape[1]} x {self.in_shape[0]} image"


@register
class Local(Layer):
    type = "local"
    runnable = False
    options = {
        "filters": Opt("int", 1, "output channels", min=1),
        "size": Opt("int", 1, "kernel size", min=1),
        "stride": Opt("int", 1, "stride", min=1),
        "pad": Opt("int", 0, "pad", min=0),
        "activation": ACT,
    }

    def setup(self, layers):
        self.image_input()
        _, h, w = self.in_shape
        o = self.opts
        cut = 1 if o["pad"] else o["size"]      # Darknet's local_out_height
        self.out_shape = (o["filters"], (h - cut) // o["stride"] + 1,
                          (w - cut) // o["stride"] + 1)

    def param_shapes(self):
        c = self.in_shape[0]
        n, oh, ow = self.out_shape
        k = self.opts["size"]
        return [("biases", (self.outputs,)), ("weights", (oh * ow, n, c, k, k))]

    def flops(self):
        return 2.0 * self.outputs * self.in_shape[0] * self.opts["size"] ** 2

    def row(self):
        c, h, w = self.in_shape
        n, oh, ow = self.out_shape
        return (f"Local Layer: {h} x {w} x {c} image, {n} filters -> {oh} x {ow} x {n} "
                "image")


@register
class Detection(Layer):
    type = "detection"
    runnable = False
    options = {
        "classes": Opt("int", 1, "classes", min=1),
        "coords": Opt("int", 1, "coords", min=1),
        "num": Opt("int", 1, "boxes per cell", min=1),
        "side": Opt("int", 7, "grid side", min=1),
        "softmax": Opt("int", 0, "softmax", min=0),
        "sqrt": Opt("int", 0, "sqrt of w,h", min=0),
        "rescore": Opt("int", 0, "rescore", min=0),
        "forced": Opt("int", 0, "forced", min=0),
    }
    quiet = frozenset({"jitter", "random", "object_scale", "noobject_scale", "class_scale",
                       "coord_scale", "reorg", "max_boxes"})

    def setup(self, layers):
        o = self.opts
        want = o["side"] ** 2 * ((1 + o["coords"]) * o["num"] + o["classes"])
        if self.inputs != want:
            raise self.error(f"the previous layer gives {self.inputs} values but side={o['side']}"
                             f", num={o['num']}, coords={o['coords']}, classes={o['classes']}"
                             f" need {want}", "side")
        self.truths = o["side"] ** 2 * (1 + o["coords"] + o["classes"])

    def row(self):
        return "Detection Layer"


@register
class GaussianYolo(Yolo):
    type = "Gaussian_yolo"
    runnable = False
    per_anchor = 9          # x, y, w, h, 4 uncertainties, objectness

    def row(self):
        return "Gaussian_yolo"


@register
class Contrastive(Layer):
    type = "contrastive"
    runnable = False
    options = {
        "classes": Opt("int", 1000, "classes", min=1),
        "yolo_layer": Opt("layers", None, "the [yolo] layer whose boxes are embedded"),
        "temperature": Opt("float", 1.0, "temperature"),
    }
    quiet = frozenset({"cls_normalizer", "max_delta", "contrastive_neg_max"})

    def setup(self, layers):
        if self.opts["yolo_layer"] is not None:
            self.sources = [self.resolve("yolo_layer", self.opts["yolo_layer"][0], layers)]

    def row(self):
        return "contrastive"
