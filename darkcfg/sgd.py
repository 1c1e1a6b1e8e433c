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

from dataclasses import dataclass
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
        if name.rsplit(".", 1)[-1] == "weights":    # recurrent sub-layers: "input.weights"
            u -= (decay * batch) * p
        p += (rate / batch) * u
        u *= momentum
        grad[...] = 0
    layer.params_changed()


# --- freezing ------------------------------------------------------------------------------
#
# A frozen layer is not updated at all in an iteration: no gradient reaches its arrays, no
# momentum step, no weight decay, and in training it normalises with its rolling BN
# statistics (as at inference), which therefore stay as they are. Its parameters after
# training are bit-identical to before. Darknet's CPU code freezes less: pjreddie's
# update_network still applies momentum and decay to the layers below a stopbackward,
# and both lineages keep batch statistics there, so the rolling ones drift (README,
# "Deliberate differences from Darknet"). The keys, as AlexeyAB's GPU code reads them
# (src/parser.c: parse_network_cfg_custom, set_train_only_bn; src/network_kernels.cu:
# backward_network_gpu, update_network_gpu), iteration t counting from 1 (the update
# that ends it):
#   stopbackward=1     on layer k: layers 0..k frozen (the backward pass stops at k);
#                      pjreddie reads any value as 1; alexeyab reads N > 1 as "until
#                      iteration N": frozen while t <= N
#   train_only_bn=1    on layer k: layers 0..k frozen (AB skips their update entirely;
#                      only its BN statistics still move, and darkcfg keeps them too)
#   dont_update=N      this layer alone, frozen while t <= N (AB: dont_update < t updates)
#   burnin_update=N    this layer alone, frozen while t < N * burn_in


@dataclass(frozen=True)
class Frozen:
    """The layers frozen in one iteration, each with the reason, and the layer where the
    backward pass stops (it and every layer below are frozen; -1: none)."""
    why: dict[int, str]
    stop: int

    @property
    def layers(self) -> set[int]:
        return set(self.why)


def frozen_layers(layers: list[Layer], iteration: int, dialect: str,
                  burn_in: int) -> Frozen:
    """Which layers iteration `iteration` (1-based) leaves unchanged, and why."""
    why: dict[int, str] = {}
    stop = -1
    for layer in layers:
        o = layer.opts
        sb = o.get("stopbackward", 0)
        if sb and (dialect == "pjreddie" or sb == 1 or iteration <= sb):
            stop = layer.index
            until = f" until iteration {sb}" if dialect == "alexeyab" and sb > 1 else ""
            reason = f"stopbackward={sb} at layer {layer.index}{until}"
        elif o.get("train_only_bn"):
            stop = layer.index
            reason = f"train_only_bn=1 at layer {layer.index}"
        else:
            continue
        for below in layers[:layer.index + 1]:
            why[below.index] = reason
    for layer in layers[stop + 1:]:
        du, bu = layer.opts.get("dont_update", 0), layer.opts.get("burnin_update", 0)
        if iteration <= du:
            why[layer.index] = f"dont_update={du} (iterations 1-{du})"
        elif iteration < bu * burn_in:
            why[layer.index] = (f"burnin_update={bu} (iterations below {bu} x burn_in "
                                f"{burn_in})")
    return Frozen(why, stop)
