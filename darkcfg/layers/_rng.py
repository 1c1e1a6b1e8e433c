"""The random generator of the layers that draw numbers in training ([dropout], [crop])."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .base import Layer, RunState


def layer_rng(layer: Layer, net: RunState) -> np.random.Generator:
    """The network's generator (`net.rng`) when it has one, else a per-layer generator
    seeded with the layer index, so runs repeat."""
    rng = getattr(net, "rng", None)
    if rng is None:
        rng = getattr(layer, "layer_rng", None)
        if rng is None:
            rng = layer.layer_rng = np.random.default_rng(layer.index)
    return rng
