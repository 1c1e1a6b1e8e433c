"""A runnable network: the layer graph plus parameter arrays and per-layer outputs."""
from __future__ import annotations

import os

import numpy as np

from .errors import CfgError, DarkcfgError
from .graph import Graph, load_graph


class Network:
    """Forward (and, in training, backward) over a `Graph` whose layers hold parameters.

    `outputs[i]` is layer i's latest output, shape (N, *layer.out_shape), float32; flattened
    per sample it is Darknet's C,H,W order.
    """

    def __init__(self, graph: Graph):
        problems = graph.unsupported()
        if problems:
            layer, why = problems[0]
            sec = layer.section
            raise CfgError(f"cannot run this network: {why}" +
                           (f" (and {len(problems) - 1} more layers)" if len(problems) > 1
                            else ""), file=sec.file, line=sec.line, section=sec.written,
                           index=layer.index)
        self.graph = graph
        self.layers = graph.layers
        self.train = False
        self.seen = 0
        for layer in self.layers:
            layer.allocate()
        self.outputs: list[np.ndarray | None] = [None] * len(self.layers)
        self.output_index = graph.output_layer.index

    @classmethod
    def load(cls, cfg: str | os.PathLike, weights: str | os.PathLike | None = None, *,
             batch: int = 1, dialect: str | None = None, strict: bool = True,
             **sizes) -> Network:
        if weights is not None and dialect is None:
            from .weights import read_header
            dialect = read_header(weights).dialect
        graph = load_graph(cfg, batch=batch, dialect=dialect, strict=strict, **sizes)
        net = cls(graph)
        if weights is not None:
            net.load_weights(weights)
        return net

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.graph.net.input_shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run every layer on x (N, C, H, W) and return the network output."""
        x = np.asarray(x)
        c, h, w = self.input_shape
        if x.ndim == 3:
            x = x[None]
        if x.ndim == 2 and x.shape[1] == c * h * w:
            x = x.reshape(-1, c, h, w)
        if x.ndim != 4 or x.shape[1:] != (c, h, w):
            raise DarkcfgError(f"the network takes input of shape (N, {c}, {h}, {w}); got "
                               f"{tuple(x.shape)}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, self)
            self.outputs[i] = x
        return self.outputs[self.output_index]

    def load_weights(self, path: str | os.PathLike):
        """Read a .weights file; returns a `weights.LoadReport`."""
        from .weights import load_weights
        return load_weights(self, path)

    def save_weights(self, path: str | os.PathLike) -> None:
        from .weights import save_weights
        save_weights(self, path)
