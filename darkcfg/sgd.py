"""Darknet's parameter update: SGD with momentum and weight decay (src/convolutional_layer.c:
update_convolutional_layer, src/connected_layer.c: update_connected_layer).

Darknet keeps, per array, an update buffer U holding minus the summed gradient plus the
momentum carry. With G the true gradient summed over the B images of one update:
    U <- U - G;  for weights also U <- U - decay*B*w
    p <- p + (lr/B) * U
    U <- momentum * U
Biases and BN scales get no weight decay. Pinned by reference cases train_small and
train_resid (weights after 1 and 2 steps).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .layers import Layer


def update_layer(layer: Layer, lr: float, momentum: float, decay: float, batch: int) -> None:
    """One update of one layer's trained arrays; its accumulated gradients are zeroed."""
    rate = lr * layer.opts["learning_rate"]
    for name, grad in layer.grads.items():
        u = layer.updates[name]
        p = layer.params[name]
        u -= grad
        if name == "weights":
            u -= (decay * batch) * p
        p += (rate / batch) * u
        u *= momentum
        grad[...] = 0
    layer.params_changed()
