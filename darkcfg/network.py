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
            layer.allocate_grads()
        self.truth: np.ndarray | None = None
        self.rng = np.random.default_rng(0)     # dropout masks and augmentation
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

    # --- training -----------------------------------------------------------------------
    def init_weights(self, seed: int = 0) -> None:
        """Random initial parameters as Darknet draws them for training from scratch."""
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.init_params(rng)
        self.params_changed()

    def params_changed(self) -> None:
        """Tell every layer that its `params` were edited in place (see
        Layer.params_changed); loading, drawing and training weights do it themselves."""
        for layer in self.layers:
            layer.params_changed()

    def add_grad(self, index: int, g: np.ndarray) -> None:
        """Accumulate dLoss/d(output of layer `index`). The first gradient is kept as it
        is, without a copy (layers modify the gradient they receive in place, so it is
        copied when it overlaps another pending gradient, or when backward(keep=True)
        records them all); a second one is added into a new array."""
        have = self.grads[index]
        borrowed = self.__dict__.setdefault("_borrowed", set())
        if have is None:
            # layers take C-contiguous gradients: a view (a [route]'s channel slice of its
            # own gradient) is copied like an overlapping one
            if (getattr(self, "_keep", False) or not g.flags.c_contiguous or any(
                    o is not None and np.may_share_memory(o, g) for o in self.grads)):
                g = g.copy()
            self.grads[index] = g
            borrowed.add(index)
        elif index in borrowed:
            self.grads[index] = have + g
            borrowed.discard(index)
        else:
            have += g

    def forward_train(self, x: np.ndarray, truth: np.ndarray | None) -> float:
        """A training-mode forward pass (batch statistics, dropout, losses against
        `truth`, shape (N, truths)); returns the network cost as Darknet reports it: the
        mean over the layers that have a cost of each one's summed cost."""
        self.train = True
        self.truth = None if truth is None else np.ascontiguousarray(truth, np.float32)
        try:
            self.forward(x)
        finally:
            self.train = False
        costs = [lay.cost for lay in self.layers if getattr(lay, "cost", None) is not None]
        return float(np.mean(costs)) if costs else 0.0

    def backward(self, keep: bool = False, dy: np.ndarray | None = None) -> None:
        """Gradients of the last `forward_train`, last layer first; accumulates into every
        layer's `grads`. Stops at a layer with stopbackward (it and earlier layers get
        none). keep=True leaves each layer's gradient in `self.grads`: dLoss/d(output),
        except that loss layers ([softmax], [logistic], [cost]) have added their own term
        and [shortcut]/[scale_channels]/[sam] have applied their activation's derivative in
        place, so there it is Darknet's delta (negated), as the reference cases record."""
        self.grads: list[np.ndarray | None] = [None] * len(self.layers)
        self._borrowed: set[int] = set()      # add_grad: slots holding a caller's array
        self._keep = keep
        if dy is not None:          # a gradient from outside for the last layer's output
            self.grads[-1] = np.ascontiguousarray(dy, np.float32).copy()
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if layer.opts["stopbackward"]:
                break
            dy = self.grads[i]
            if not keep:
                self.grads[i] = None            # free as we go
            if layer.opts["onlyforward"]:
                continue
            dx = layer.backward(dy, self)
            if dx is not None and i > 0:
                self.add_grad(i - 1, dx)

    @property
    def iteration(self) -> int:
        """Darknet's get_current_batch: images seen / images per update."""
        o = self.graph.net.opts
        return self.seen // (self.graph.net.batch * o["subdivisions"])

    def train_step(self, x: np.ndarray, truth: np.ndarray) -> float:
        """One iteration under the cfg's rules: `subdivisions` forward/backward passes over
        mini-batches of x (N = batch images, truth (N, truths)), then one SGD update with
        the scheduled learning rate. Returns the loss per image, as Darknet prints it."""
        from .schedule import check_schedule, learning_rate
        from .sgd import update_layer
        o = self.graph.net.opts
        mini, subs = self.graph.net.batch, o["subdivisions"]
        x = np.asarray(x, np.float32)
        truth = np.asarray(truth, np.float32).reshape(len(x), -1)
        if len(x) != mini * subs:
            raise DarkcfgError(f"train_step takes batch={mini * subs} images (batch/"
                               f"subdivisions={mini} per pass, {subs} passes); got {len(x)}")
        check_schedule(o, self.graph.net.section)
        total = 0.0
        for k in range(subs):
            self.seen += mini
            part = slice(k * mini, (k + 1) * mini)
            total += self.forward_train(x[part], truth[part])
            self.backward()
        rate = learning_rate(o, self.iteration, self.rng)
        self.last_rate = rate
        for layer in self.layers:
            if layer.grads:
                update_layer(layer, rate, o["momentum"], o["decay"], mini * subs)
        return total / (subs * mini)

    def load_weights(self, path: str | os.PathLike):
        """Read a .weights file; returns a `weights.LoadReport`."""
        from .weights import load_weights
        try:
            return load_weights(self, path)
        finally:
            self.params_changed()

    def save_weights(self, path: str | os.PathLike) -> None:
        from .weights import save_weights
        save_weights(self, path)
