"""[triplet] (darkcfg's own; no Darknet lineage has it): the triplet loss
max(d(a, p) - d(a, n) + margin, 0) over triplets mined inside the mini-batch.

Each image's flattened input is its embedding (after an L2 normalisation with
normalize=1); the output is that embedding, so `darkcfg embed` reads it at inference.
Classes come from the classifier truth (one row per image, the class its largest entry):
the same one-hot rows a [softmax] trains on, so a classifier `.data` file trains it.

Miners (anchor a, positive p of a's class, negative n of another class):
  all       every valid triplet; the mean over the active ones (loss > 0), Hermans et
            al. 2017 "In Defense of the Triplet Loss for Person Re-Identification" (BA≠0)
  hard      per anchor its farthest positive and nearest negative; the mean over anchors
            (ibid., batch hard)
  semihard  per (a, p) pair the nearest negative farther than p, else the farthest
            negative; the mean over pairs (Schroff et al. 2015 "FaceNet", as TensorFlow
            Addons' triplet_semihard_loss chooses it)

`cost` is the mean loss times the mini-batch size, so that Darknet's "loss per image"
is the mean triplet loss and the gradient has the scale of a per-image summed loss
(sgd.py divides the update by the batch).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from ._metric import (
    DISTANCES,
    distance_backward,
    distance_matrix,
    l2_normalize,
    l2_normalize_backward,
)
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState

MINERS = ("all", "hard", "semihard")


def labels_of(truth: np.ndarray, n: int) -> np.ndarray:
    """The class of each of n images. Truth rows (N, classes), as the classifier loader
    gives them: the largest entry's index, -1 for a row with no positive entry (no class:
    never a positive or a negative of anything). A single column (N, 1), the layer's
    `truths`: the class index itself, negative for none (a one-class one-hot row could
    not train a triplet anyway: it has no negatives)."""
    t = truth.reshape(n, -1)
    if t.shape[1] == 1:
        labels = np.rint(t[:, 0]).astype(np.int64)
        labels[labels < 0] = -1
        return labels
    labels = t.argmax(1)
    labels[t.max(1) <= 0] = -1
    return labels


def pair_masks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positive pairs (B, B): same class, not the same image; negative pairs)."""
    known = labels >= 0
    same = (labels[:, None] == labels[None, :]) & known[:, None] & known[None, :]
    np.fill_diagonal(same, False)
    other = (labels[:, None] != labels[None, :]) & known[:, None] & known[None, :]
    return same, other


def mine(d: np.ndarray, labels: np.ndarray, margin: float, miner: str
         ) -> tuple[float, np.ndarray, float, np.ndarray]:
    """The triplet loss of distance matrix d (B, B): (mean loss, dLoss/dD (B, B), fraction
    of the mined triplets that are active, the selection: what the loss's derivative
    depends on besides d, for tests to see that a perturbation keeps it)."""
    pos, neg = pair_masks(labels)
    grad = np.zeros_like(d)
    if miner == "all":
        # rows: the positive pairs (a, p), grouped by anchor; columns: the candidate n
        a_idx, p = np.nonzero(pos)
        loss = d[a_idx, p][:, None] - d[a_idx] + margin
        valid = neg[a_idx]
        active = valid & (loss > 0)
        count, total = int(active.sum()), int(valid.sum())
        if not count:
            return 0.0, grad, 0.0, active
        w = active / count
        grad[a_idx, p] += w.sum(1)                              # each pair once
        anchors, first = np.unique(a_idx, return_index=True)
        grad[anchors] -= np.add.reduceat(w, first, axis=0)
        return float((loss * w).sum()), grad, count / total, active
    if miner == "hard":
        anchors = np.flatnonzero(pos.any(1) & neg.any(1))
        p = np.where(pos, d, -np.inf).argmax(1)[anchors]
        n = np.where(neg, d, np.inf).argmin(1)[anchors]
    else:
        # per positive pair (a, p): the nearest negative beyond d(a, p), else the farthest
        a_idx, p = np.nonzero(pos & neg.any(1)[:, None])
        da = d[a_idx]                                           # (pairs, B)
        beyond = neg[a_idx] & (da > d[a_idx, p][:, None])
        n = np.where(beyond.any(1), np.where(beyond, da, np.inf).argmin(1),
                     np.where(neg[a_idx], da, -np.inf).argmax(1))
        anchors = a_idx
    if not len(anchors):
        return 0.0, grad, 0.0, np.zeros(0, bool)
    loss = d[anchors, p] - d[anchors, n] + margin
    act = loss > 0
    w = act / len(anchors)
    np.add.at(grad, (anchors, p), w)
    np.add.at(grad, (anchors, n), -w)
    selection = np.concatenate([act, p, n])
    return float((loss * w).sum()), grad, float(act.mean()), selection


@register
class Triplet(Layer):
    type = "triplet"
    example = "[triplet]\nmargin=0.5\nnormalize=1\n"
    example_loss = 1.0
    doc = ("darkcfg's own (not in Darknet): triplet loss on the flattened input as an "
           "embedding, triplets mined in the mini-batch; output: the embedding")
    options = {
        "margin": Opt("float", 0.2, "d(a, p) + margin <= d(a, n) is satisfied", min=0),
        "distance": Opt("str", "euclidean", "embedding distance", choices=DISTANCES),
        "mining": Opt("str", "all", "which triplets of the mini-batch", choices=MINERS),
        "normalize": Opt("int", 0, "L2-normalise each embedding first", min=0),
        "classes_per_batch": Opt("int", 0, "P: classes in each mini-batch of training "
                                 "(0: mini-batch / images_per_class)", min=0),
        "images_per_class": Opt("int", 0, "K: images of each class in a mini-batch of "
                                "training (0: 4, or mini-batch / classes_per_batch)", min=0),
    }

    # what training reads per image: one class label (Darknet's net.truths is the last
    # layer's truths, else its outputs, which here would be the embedding's width)
    truths = 1
    truth_kind = "a class label per image (its index, or a one-hot row of the .data classes)"

    def classes_and_images(self, mini_batch: int) -> tuple[int, int]:
        """(P, K): training builds each mini-batch from P classes x K images of each
        (data/classifier.py: pk_indices), so that every anchor has positives and
        negatives. A key left 0 follows from the other (K defaults to 4)."""
        p, k = self.opts["classes_per_batch"], self.opts["images_per_class"]
        if p and k and p * k != mini_batch:
            raise self.error(f"classes_per_batch={p} x images_per_class={k} = {p * k} "
                             f"images, but a mini-batch (batch/subdivisions) holds "
                             f"{mini_batch}: make the product equal it", "classes_per_batch")
        k = k or (mini_batch // p if p else 4)
        p = p or mini_batch // k
        if p * k != mini_batch or p < 2 or k < 2:
            raise self.error(f"a mini-batch (batch/subdivisions) of {mini_batch} cannot be "
                             f"classes_per_batch={p} x images_per_class={k} with both >= 2 "
                             "(a triplet needs two images of one class and one of another):"
                             " set classes_per_batch and images_per_class so that their "
                             "product is the mini-batch", "images_per_class")
        return p, k

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # x (N, C, H, W) -> the embeddings, same shape (unit rows with normalize=1).
        # Training with a truth: the loss of the mined triplets (see the module docstring)
        n = len(x)
        flat = x.reshape(n, -1).astype(np.float64)
        y, self._norms = l2_normalize(flat) if self.opts["normalize"] else (flat, None)
        self.cost = self._grad = self.stats = None
        self._y = y
        if net.train and net.truth is not None:
            kind = self.opts["distance"]
            d = distance_matrix(y, kind)
            labels = labels_of(net.truth, n)
            loss, grad_d, active, self.selection = mine(d, labels, self.opts["margin"],
                                                        self.opts["mining"])
            self.cost = n * loss
            self._grad = n * distance_backward(grad_d, y, d, kind)
            self.stats = {"active": active, "loss": loss}
        return y.astype(np.float32).reshape(x.shape)

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # the exact gradient of n * mean loss, plus whatever reached the embeddings from
        # later layers, through the normalisation
        if self._grad is None and dy is None:
            return None
        g = np.zeros(self._y.shape) if self._grad is None else self._grad.copy()
        if dy is not None:
            g += dy.reshape(len(g), -1)
        if self._norms is not None:
            g = l2_normalize_backward(g, self._y, self._norms)
        return g.astype(np.float32).reshape(len(g), *self.in_shape)

    def flops(self):
        return 2.0 * self.inputs

    def row(self):
        return f"triplet                                        {self.inputs:4d}"
