"""Helpers of the loss layers ([softmax], [logistic], [cost], the detection heads): the
truth a loss compares with, and Darknet's backward of a loss layer."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .base import Layer, RunState


def layer_truth(layer: Layer, net: RunState, x: np.ndarray) -> np.ndarray:
    """The truth a loss layer compares its (N, ...) values with: `net.truth` (N, truths),
    which must hold one value per value of the layer."""
    t = net.truth
    n = max(x.shape[0], 1)
    if t.size != x.size:
        raise layer.error(f"the truth has {t.size / n:g} values per image but this loss "
                          f"layer compares {x.size // n} (batch of {x.shape[0]})")
    return t.reshape(x.shape)


def loss_gradient(layer: Layer, dy: np.ndarray | None) -> np.ndarray | None:
    """Darknet's backward of its loss layers ([softmax], [logistic], [cost]): the layer's
    own loss gradient (`layer._grad`, from the forward; None without a loss) plus the
    gradient that reached it from later layers, passed down unchanged: no Jacobian of the
    layer's function is applied (the own gradient is already w.r.t. its input). dy is
    updated in place so that it holds Darknet's delta of the layer: a [cost] after a
    [softmax] doubles the softmax's t - p (reference case train_resid, delta_007)."""
    own = layer._grad
    if own is None:
        return dy
    if dy is None:
        return own
    dy += own
    return dy
