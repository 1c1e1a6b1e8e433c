"""[logistic] (P): sigmoid with a logistic cross-entropy loss."""
from __future__ import annotations

from .base import Layer, register


@register
class Logistic(Layer):
    type = "logistic"
    doc = "sigmoid, with logistic cross-entropy loss in training"

    def row(self):
        return f"logistic x entropy                             {self.inputs:4d}"
