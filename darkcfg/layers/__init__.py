"""One module per cfg section kind; importing this package registers them all."""
from __future__ import annotations

from . import (  # noqa: F401
    activation,
    avgpool,
    batchnorm,
    connected,
    convolutional,
    cost,
    crop,
    deconvolutional,
    dropout,
    empty,
    l2norm,
    local_avgpool,
    logistic,
    maxpool,
    normalization,
    region,
    reorg,
    route,
    sam,
    scale_channels,
    shape_only,
    shortcut,
    softmax,
    upsample,
    yolo,
)
from .base import REGISTRY, Layer

__all__ = ["REGISTRY", "Layer", "known_sections"]


def known_sections() -> set[str]:
    return set(REGISTRY) | {"net"}
