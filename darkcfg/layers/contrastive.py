"""[contrastive] (AH): supervised contrastive loss (Khosla et al. 2020), classifier mode.

AlexeyAB's src/softmax_layer.c: forward_contrastive_layer with the classifier-mode deltas
of src/blas.c (P_constrastive, grad_contrastive_loss_positive / _negative), transcribed:
every pixel of every image is a sample z_i (its C channels), labelled with its image's
class (the last class whose truth exceeds [net] label_smooth_eps; else the pair number
b/2 that [net] contrastive=1 gives the two views of one image). With cos the cosine
similarities (0 on the diagonal), E = exp(cos / temperature) and
P[i, l] = E[i, l] / sum_{k != i} E[k, l], each sample's delta is

    delta_i = -1 / ((N_i - 1) T |z_i|) * ( sum_{j ~ i} (cos_ij z_i - z_j) (1 - P_ij)
                + sum_{j ~ i} sum_{k != i, j} (z_k - cos_ik z_i) P_ik )

(j ~ i: another sample of i's class, N_i counting i itself), then times cls_normalizer
and clipped to +-max_delta; the cost is the sum of the squared deltas. These deltas are
AB's rule, not the derivative of that cost (tests/test_contrastive.py checks them against
a loop transcription of AB's C). The layer passes its input through (AB leaves its output
at zero; darkcfg keeps the embedding for `darkcfg embed`).

AB's parser dereferences the [yolo] layer even without `yolo_layer` (src/parser.c:
parse_contrastive), so its classifier mode crashes on load; here it runs. The detection
mode (`yolo_layer`: embeddings of [yolo] boxes, for tracking) is not computed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import DarkcfgError
from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


def contrastive_labels(truth: np.ndarray, n: int, thresh: float) -> np.ndarray:
    """AB's labels: b / 2, replaced by the last class n whose truth is > thresh."""
    labels = np.arange(n) // 2
    t = truth.reshape(n, -1)
    above = t > thresh
    last = t.shape[1] - 1 - np.argmax(above[:, ::-1], axis=1)
    return np.where(above.any(1), last, labels)


def contrastive_deltas(z: np.ndarray, labels: np.ndarray, temperature: float
                       ) -> tuple[np.ndarray, float]:
    """AB's classifier-mode deltas (before cls_normalizer and max_delta) of samples z
    (S, C), and the contrast accuracy (the fraction of samples with a positive and a
    negative whose most similar positive beats their most similar negative)."""
    s = len(z)
    lens = np.sqrt(np.einsum("ij,ij->i", z, z))
    u = z / np.where(lens > 0, lens, 1.0)[:, None]
    off = ~np.eye(s, dtype=bool)
    cos = np.where(off, u @ u.T, 0.0)
    e = np.where(off, np.exp(cos / temperature), 0.0)
    denom = e.sum(0)[None, :] - e                          # sum_{k != i} E[k, l]
    p = np.where(off, e / np.where(denom > 0, denom, 1.0), 0.0)
    same = (labels[:, None] == labels[None, :]) & off
    count = same.sum(1)                                    # N_i - 1
    mult = np.zeros(s)
    has = count > 0
    mult[has] = 1.0 / (count[has] * temperature * lens[has])
    a = same * (1.0 - p)
    pos = (a * cos).sum(1)[:, None] * z - a @ z
    full = p @ z - (p * cos).sum(1)[:, None] * z
    sp = same * p
    own = sp @ z - (sp * cos).sum(1)[:, None] * z
    neg = count[:, None] * full - own
    delta = -mult[:, None] * (pos + neg)
    diff = ~same & off
    both = same.any(1) & diff.any(1)
    best_same = np.where(same, cos, -np.inf).max(1, initial=-np.inf)
    best_diff = np.where(diff, cos, -np.inf).max(1, initial=-np.inf)
    accuracy = float((best_same > best_diff)[both].mean()) if both.any() else -1.0
    return delta, accuracy


@register
class Contrastive(Layer):
    type = "contrastive"
    doc = ("supervised contrastive loss (AH's classifier mode, with [net] contrastive=1 "
           "for two views per image); output: its input")
    options = {
        "classes": Opt("int", 1000, "classes", min=1),
        "yolo_layer": Opt("layers", None, "the [yolo] layer whose boxes are embedded "
                          "(detection mode: not computed)"),
        "temperature": Opt("float", 1.0, "similarities are divided by this", min=1e-30),
        "cls_normalizer": Opt("float", 1.0, "multiplier on the deltas"),
        "max_delta": Opt("float", float("inf"), "deltas are clipped to +-max_delta", min=0),
    }
    quiet = frozenset({"contrastive_neg_max"})   # read by AB's detection mode only

    @property
    def truths(self) -> int:
        # training reads `classes` truth values per image (the class rows of the .data
        # file), not the embedding's width
        return self.opts["classes"]

    def setup(self, layers):
        if self.opts["yolo_layer"] is not None:
            self.sources = [self.resolve("yolo_layer", self.opts["yolo_layer"][0], layers)]
        self._after_head = any(lay.is_head for lay in layers)

    def unsupported(self):
        if self.opts["yolo_layer"] is not None or self._after_head:
            return ("[contrastive] layers cannot run in darkcfg in detection mode (yolo_layer, "
                    "or after a detection head): only the classifier mode is computed")
        if self.net.opts.get("time_steps", 1) != 1:
            return "[contrastive] with [net] time_steps > 1 is not computed by darkcfg"
        return None

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> x. Training with a truth: AB's deltas (module docstring)
        self.cost = self._grad = self.stats = None
        if not (net.train and net.truth is not None):
            return x
        n, c, h, w = x.shape
        z = x.astype(np.float64).transpose(0, 2, 3, 1).reshape(n * h * w, c)
        lens = np.sqrt(np.einsum("ij,ij->i", z, z))
        if not lens.all():
            b = int(np.flatnonzero(lens == 0)[0]) // (h * w)
            raise DarkcfgError(f"{self.section.file}:{self.section.line}: [contrastive] "
                               f"(layer {self.index}): the embedding of image {b} is all "
                               "zeros, its cosine similarity undefined (AlexeyAB's Darknet "
                               "stops here too)")
        if net.truth.size != n * self.opts["classes"]:
            raise self.error(f"the truth has {net.truth.size // max(n, 1)} classes per image "
                             f"but classes={self.opts['classes']} (AlexeyAB reads the truth "
                             "with this count): set it to the .data file's classes",
                             "classes")
        labels = np.repeat(contrastive_labels(net.truth, n,
                                              self.net.opts.get("label_smooth_eps", 0.0)),
                           h * w)
        delta, accuracy = contrastive_deltas(z, labels, self.opts["temperature"])
        delta = np.clip(delta * self.opts["cls_normalizer"], -self.opts["max_delta"],
                        self.opts["max_delta"])
        self.cost = float(np.sum(delta * delta))
        # darkcfg's backward carries dLoss/dx: AB's delta with the sign turned
        self._grad = (-delta).reshape(n, h, w, c).transpose(0, 3, 1, 2).astype(np.float32)
        self.stats = {"accuracy": accuracy}
        return x

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # AB's backward_contrastive_layer adds its delta to the lower layer's; what reached
        # this layer passes through
        if self._grad is None:
            return dy
        return self._grad if dy is None else dy + self._grad

    def row(self):
        return f"contrastive                                    {self.inputs:4d}"
