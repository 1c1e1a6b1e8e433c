"""A runnable network: the layer graph plus parameter arrays and per-layer outputs."""
from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING

import numpy as np

from .errors import CfgError, DarkcfgError
from .graph import Graph, load_graph
from .layers.route import place_sources
from .memory import available_memory

if TYPE_CHECKING:
    from .sgd import Frozen
    from .weights import Header, LoadReport


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
        # a graph of our own: the parameters, gradients and buffers live on the layer
        # objects, and two networks built from one Graph must not share them
        self.graph = own_graph(graph)
        self.layers = self.graph.layers
        self.train = False                      # RunState: a training pass is running
        self.seen = 0                           # images trained on (the .weights header's)
        self.truth: np.ndarray | None = None    # forward_train's truth, (N, truths)
        self.rng = np.random.default_rng(0)     # dropout masks and augmentation
        # set by the training loop: each pass of an iteration seeds its own generator
        # (train_pass), so that the passes can run in separate processes
        self.pass_seed: tuple[int, ...] | None = None
        self.outputs: list[np.ndarray | None] = [None] * len(self.layers)
        self.output_index = self.graph.output_layer.index
        # backward: dLoss/d(output) per layer; the slots holding an array a caller (a
        # layer's add_grad) handed over; whether backward(keep=True) keeps them all
        self.grads: list[np.ndarray | None] = [None] * len(self.layers)
        self._borrowed: set[int] = set()
        self._keep = False
        self.last_rate: float | None = None     # train_step's latest learning rate
        self.header: Header | None = None       # the header of the .weights file loaded
        self.loaded: LoadReport | None = None   # what the latest load_weights read
        self._output_values = sum(lay.outputs for lay in self.layers)   # per image
        self._param_values = sum(lay.nparams for lay in self.layers)
        check_memory(self, 0)
        for layer in self.layers:
            try:
                layer.allocate()
                layer.allocate_grads()
            except MemoryError:
                raise out_of_memory(self, layer, 0) from None
        self.freeze(1)

    @classmethod
    def load(cls, cfg: str | os.PathLike, weights: str | os.PathLike | None = None, *,
             batch: int | None = 1, dialect: str | None = None, strict: bool = True,
             **sizes) -> Network:
        # precedence: `dialect` > a weights header of revision >= 5 > the cfg's content
        # (graph.build_graph) > pjreddie
        choice = dialect
        if weights is not None and dialect is None:
            from .netcfg import DialectChoice
            from .weights import read_header
            header = read_header(weights)
            if header.dialect == "alexeyab":
                choice = DialectChoice(
                    "alexeyab", "weights", f"{os.fspath(weights)}: header version "
                    f"{header.major}.{header.minor}.{header.revision} (revision >= 5 is "
                    "AlexeyAB's format)")
        graph = load_graph(cfg, batch=batch, dialect=choice, strict=strict, **sizes)
        net = cls(graph)
        if weights is not None:
            net.load_weights(weights)
        return net

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.graph.net.input_shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run every layer on x and return the network output as a new array the caller
        owns (a later call does not change it).

        x: float32 (or float64) images scaled to [0, 1], shape (N, C, H, W), (C, H, W) for
        one image, or (N, C*H*W). Integer images (uint8 0..255) are refused: divide by 255
        first (`darkcfg.data.images.load_image` gives Darknet's scaling). A net with
        recurrent layers takes N = time_steps x streams rows, step-major (row t*S + s is
        step t of stream s), and carries their state into the next call (`reset_state`
        clears it; layers/_recurrent.py). `outputs[i]`, every
        layer's latest output, may be a buffer that the next call overwrites: copy what
        you keep from it.
        """
        return self._run(self._check_input(x)).copy()

    def _check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        c, h, w = self.input_shape
        if x.dtype.kind not in "f":
            hint = " (uint8 images: x.astype(np.float32) / 255)" if x.dtype.kind in "ui" \
                else ""
            raise DarkcfgError(f"the network takes float images scaled to [0, 1]; got "
                               f"dtype {x.dtype}{hint}")
        if x.ndim == 3:
            x = x[None]
        if x.ndim == 2 and x.shape[1] == c * h * w:
            x = x.reshape(-1, c, h, w)
        if x.ndim != 4 or x.shape[1:] != (c, h, w):
            raise DarkcfgError(f"the network takes input of shape (N, {c}, {h}, {w}); got "
                               f"{tuple(x.shape)}")
        if len(x) == 0:
            raise DarkcfgError("the input holds 0 images; give at least one "
                               f"(shape (N, {c}, {h}, {w}) with N >= 1)")
        check_memory(self, len(x))
        return np.ascontiguousarray(x, dtype=np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        """The forward pass proper; returns layer output_index's own buffer."""
        if len(x) == 1 and not self.train:
            place_sources(self.layers)      # concatenations written in place
        for i, layer in enumerate(self.layers):
            try:
                x = layer.forward(x, self)
            except MemoryError:
                raise out_of_memory(self, layer, len(x)) from None
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
        borrowed = self._borrowed
        if have is None:
            # layers take C-contiguous gradients: a view (a [route]'s channel slice of its
            # own gradient) is copied like an overlapping one
            if (self._keep or not g.flags.c_contiguous or any(
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
            self._run(self._check_input(x))
        finally:
            self.train = False
        costs = [lay.cost for lay in self.layers if getattr(lay, "cost", None) is not None]
        return float(np.mean(costs)) if costs else 0.0

    def freeze(self, iteration: int) -> Frozen:
        """Mark the layers that iteration `iteration` (1-based) leaves unchanged
        (stopbackward, train_only_bn, dont_update, burnin_update: sgd.frozen_layers);
        train_step does it before each iteration. Returns the sgd.Frozen."""
        from .sgd import frozen_layers
        n = self.graph.net
        self.frozen = frozen_layers(self.layers, iteration, n.dialect, n.opts["burn_in"])
        for layer in self.layers:
            layer.frozen = layer.index in self.frozen.why
            layer.stops_backward = layer.index == self.frozen.stop
        return self.frozen

    def backward(self, keep: bool = False, dy: np.ndarray | None = None) -> None:
        """Gradients of the last `forward_train`, last layer first; accumulates into every
        layer's `grads`. Stops at the top of the frozen layers (a stopbackward or
        train_only_bn layer: it and earlier layers get none; see `freeze`). keep=True
        leaves each layer's gradient in `self.grads`: dLoss/d(output), except that loss
        layers ([softmax], [logistic], [cost]) have added their own term and
        [shortcut]/[scale_channels]/[sam] have applied their activation's derivative in
        place, so there it is Darknet's delta (negated), as the reference cases record."""
        self.grads = [None] * len(self.layers)
        self._borrowed = set()
        self._keep = keep
        if dy is not None:          # a gradient from outside for the last layer's output
            self.grads[-1] = np.ascontiguousarray(dy, np.float32).copy()
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if layer.stops_backward:
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
    def train_batch(self) -> int:
        """Images per `train_step`: the cfg's batch (mini-batch x subdivisions). A network
        loaded for inference (`darkcfg.load`'s default batch=1) has 1; load with
        batch=None to keep the cfg's."""
        return self.rows_per_pass * self.graph.net.opts["subdivisions"]

    @property
    def rows_per_pass(self) -> int:
        """Rows of one forward/backward pass: batch/subdivisions x time_steps, as Darknet's
        src/parser.c: parse_net_options sets net->batch (a recurrent net's rows are
        time_steps x streams, step-major: layers/_recurrent.py)."""
        return self.graph.net.batch * self.graph.net.opts["time_steps"]

    @property
    def iteration(self) -> int:
        """Darknet's get_current_batch: images seen / images per update."""
        return self.seen // self.train_batch

    def reset_state(self) -> None:
        """Zero the state recurrent layers carry from one forward call to the next."""
        for layer in self.layers:
            layer.reset_state()

    def train_step(self, x: np.ndarray, truth: np.ndarray) -> float:
        """One iteration under the cfg's rules: `subdivisions` forward/backward passes over
        mini-batches of x (N = batch images, truth (N, truths)), then one SGD update with
        the scheduled learning rate. Returns the loss per image, as Darknet prints it."""
        o = self.graph.net.opts
        mini, subs = self.rows_per_pass, o["subdivisions"]
        x = self._check_input(x)
        truth = check_truth(truth, len(x))
        if len(x) != mini * subs:
            raise DarkcfgError(f"train_step takes batch={mini * subs} images (batch/"
                               f"subdivisions={mini} per pass, {subs} passes); got {len(x)}")
        frozen = self.begin_iteration()
        total = 0.0
        for k in range(subs):
            part = slice(k * mini, (k + 1) * mini)
            total += self.train_pass(x[part], truth[part], k)
        self.update(frozen)
        return total / (subs * mini)

    # train_step in three parts, for data-parallel training (darkcfg/train/mpi.py): each
    # process runs some of an iteration's passes, the gradients are summed, then every
    # process makes the same update.
    def begin_iteration(self) -> set[int]:
        """Freeze what the coming iteration leaves unchanged; returns those layers."""
        from .schedule import check_schedule
        check_schedule(self.graph.net.opts, self.graph.net.section)
        return self.freeze(self.iteration + 1).layers

    def train_pass(self, x: np.ndarray, truth: np.ndarray, k: int = 0) -> float:
        """Pass k of an iteration: forward and backward over one mini-batch, gradients
        added to every layer's `grads`; `seen` grows by the mini-batch. With `pass_seed`
        set, the pass draws (dropout, [crop]) from default_rng([*pass_seed, k]), so pass
        k draws the same numbers whichever passes ran before it. Returns the summed cost."""
        if self.pass_seed is not None:
            self.rng = np.random.default_rng([*self.pass_seed, k])
        self.seen += len(x)
        cost = self.forward_train(x, truth)
        self.backward()
        return cost

    def update(self, frozen: set[int]) -> None:
        """The SGD update that ends an iteration, at the scheduled learning rate (the
        `random` policy draws from default_rng([*pass_seed, subdivisions]) when
        `pass_seed` is set); the gradients are zeroed."""
        from .schedule import learning_rate
        from .sgd import update_layer
        o = self.graph.net.opts
        if self.pass_seed is not None:
            self.rng = np.random.default_rng([*self.pass_seed, o["subdivisions"]])
        rate = learning_rate(o, self.iteration, self.rng)
        self.last_rate = rate
        for layer in self.layers:
            if layer.index in frozen:       # not updated at all (sgd.frozen_layers)
                for g in layer.grads.values():
                    g[...] = 0
            elif layer.grads:
                update_layer(layer, rate, o["momentum"], o["decay"], self.train_batch)

    def resize(self, width: int, height: int) -> None:
        """Darknet's resize_network, for multi-scale training: from now on the network
        takes width x height input, with the very same parameter arrays (and their
        gradients and momentum buffers), so an update at one size is the update at every
        size. The layers of each size are kept for the next switch back."""
        _, h, w = self.input_shape
        if (width, height) == (w, h):
            return
        sizes = self.__dict__.setdefault("_sizes", {})
        sizes[(w, h)] = self.graph
        graph = sizes.get((width, height)) or _resized_graph(self.graph, width, height)
        self.graph = graph
        self.layers = graph.layers
        self.outputs = [None] * len(self.layers)
        self.grads = [None] * len(self.layers)
        self._output_values = sum(lay.outputs for lay in self.layers)
        self.freeze(self.iteration + 1)
        self.params_changed()       # caches derived from params may predate an update

    def load_weights(self, path: str | os.PathLike):
        """Read a .weights file; returns a `weights.LoadReport`."""
        from .weights import load_weights
        try:
            self.loaded = load_weights(self, path)
            return self.loaded
        finally:
            self.freeze(self.iteration + 1)     # `seen` came with the file
            self.params_changed()

    def save_weights(self, path: str | os.PathLike) -> None:
        from .weights import save_weights
        save_weights(self, path)


def own_graph(graph: Graph) -> Graph:
    """A copy of `graph` whose layer objects are new (what a network allocates and
    trains lives on them); the parsed sections and the [net] info, which nothing changes,
    are shared."""
    memo: dict[int, object] = {id(graph.net): graph.net}
    for layer in graph.layers:
        memo[id(layer.section)] = layer.section
    return Graph(graph.file, graph.net, copy.deepcopy(graph.layers, memo))


def _resized_graph(graph: Graph, width: int, height: int) -> Graph:
    """`graph`'s layers rebuilt for a width x height input, holding the parameter,
    gradient and momentum arrays of `graph`'s layers (not copies)."""
    import dataclasses
    import warnings

    from .layers import REGISTRY
    c = graph.net.input_shape[0]
    net = dataclasses.replace(graph.net, opts={**graph.net.opts, "width": width,
                                                "height": height},
                              input_shape=(c, height, width))
    new = Graph(graph.file, net)
    with warnings.catch_warnings():     # a lenient cfg's warnings were shown at load
        warnings.simplefilter("ignore")
        for old in graph.layers:
            new.layers.append(REGISTRY[old.section.name](old.section, net, new.layers,
                                                         strict=old.strict))
    for old, lay in zip(graph.layers, new.layers):
        if dict(lay.param_shapes()) != {k: v.shape for k, v in old.params.items()}:
            sec = old.section
            raise CfgError(f"layer {old.index} [{old.type}] has parameters whose shape "
                           f"depends on the input size: it cannot run at {width} x "
                           f"{height} (multi-scale training, [yolo] random=1, needs a "
                           "fully convolutional network; set random=0)", file=sec.file,
                           line=sec.line, section=sec.written, index=old.index)
        lay.params, lay.grads, lay.updates = old.params, old.grads, old.updates
    return new


def check_truth(truth, n: int) -> np.ndarray:
    """`train_step`'s truth as (n, T) float32, refused when it cannot be a target."""
    if truth is None:
        raise DarkcfgError("train_step needs a truth for every image (for a classifier a "
                           "one-hot row per image, for a detector its boxes); got None")
    t = np.asarray(truth, np.float32)
    if t.size % max(n, 1) or t.size == 0:
        raise DarkcfgError(f"train_step: a truth of shape {tuple(np.shape(truth))} does not "
                           f"split into one row per image ({n} images)")
    t = t.reshape(n, -1)
    bad = ~np.isfinite(t)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise DarkcfgError(f"train_step: the truth of image {row} (batch row {row}, value "
                           f"{col}) is {t[row, col]}; every target must be a finite number")
    return t


def _layer_bytes(net: Network, images: int) -> list[int]:
    """What each layer needs: with images=0 its parameters three times (values, gradients,
    momentum), otherwise its float32 output for that many images."""
    if images:
        return [4 * images * lay.outputs for lay in net.layers]
    return [4 * 3 * lay.nparams for lay in net.layers]


def _describe(net: Network, images: int, need: int, have: int | None) -> str:
    sizes = _layer_bytes(net, images)
    big = max(range(len(sizes)), key=sizes.__getitem__)
    lay = net.layers[big]
    what = f"{images} image{'s' if images != 1 else ''} of " \
        f"{' x '.join(map(str, net.input_shape))}" if images else "its parameters"
    left = "an unknown amount" if have is None else _gib(have)
    return (f"this network needs about {_gib(need)} for {what}, and {left} is "
            f"available; the largest is layer {lay.index} [{lay.type}] (cfg line "
            f"{lay.section.line} of {lay.section.file}) with {_gib(sizes[big])}. Use a "
            "smaller width/height/batch or fewer filters")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_memory(net: Network, images: int) -> None:
    """Refuse, before allocating, a network (images=0: its parameters) or a batch whose
    arrays cannot fit in the memory left: numpy would fail deep inside, or the kernel
    would kill the process."""
    need = 4 * images * net._output_values if images else 12 * net._param_values
    if need < 1 << 30:          # below 1 GiB: nothing to ask the system
        return
    have = available_memory()
    if have is not None and need > have:
        raise DarkcfgError(_describe(net, images, need, have))


def out_of_memory(net: Network, layer, images: int) -> DarkcfgError:
    need = sum(_layer_bytes(net, images))
    return DarkcfgError(f"out of memory in layer {layer.index} [{layer.type}] (cfg line "
                        f"{layer.section.line}): " + _describe(net, images, need,
                                                                  available_memory()))
