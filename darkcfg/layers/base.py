"""The layer base class and the registry of cfg sections.

A section kind is one module in this package holding one `Layer` subclass decorated with
`@register`. The class declares its options (typed, with Darknet's defaults), computes its
output shape in `setup`, lists its parameter arrays in weights-file order, and counts its
FLOPs. Kernels live in `darkcfg.kernels` and are imported only when a network runs, so
reading a cfg and printing its summary never touches Numba.

Layers see the running network only through `RunState` (below), never `darkcfg.network`:
the layer floor sits under the model floor (tests/test_architecture.py).
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from ..cfg import Section
from ..errors import CfgError, CfgWarning
from ..options import Opt, read_options

if TYPE_CHECKING:
    from ..netcfg import NetInfo

Shape = tuple[int, int, int]          # (c, h, w), Darknet's planar order

REGISTRY: dict[str, type[Layer]] = {}

# Keys every layer section accepts (read for any section by Darknet's src/parser.c:
# parse_network_cfg).
COMMON = {
    "learning_rate": Opt("float", 1.0, "multiplier on the [net] learning rate", min=0),
    "stopbackward": Opt("int", 0, "this layer and earlier ones are frozen (alexeyab: N > 1 "
                        "for the first N iterations)", min=0),
    "onlyforward": Opt("int", 0, "skip this layer's backward", min=0),
    "dontload": Opt("int", 0, "skip this layer when reading .weights", min=0),
    "dontloadscales": Opt("int", 0, "do not read the BN triplet from .weights", min=0),
    "dontsave": Opt("int", 0, "skip this layer when saving .weights", min=0),
    # AlexeyAB's freezing keys (its GPU code honours them); darkcfg/sgd.py: frozen_layers
    "dont_update": Opt("int", 0, "this layer is frozen for the first N iterations", min=0),
    "burnin_update": Opt("int", 0, "this layer is frozen for the first N x burn_in "
                         "iterations", min=0),
    "train_only_bn": Opt("int", 0, "this layer and earlier ones are frozen", min=0),
}
# Accepted everywhere and ignored: GPU-only or scheduling switches with no CPU effect.
COMMON_QUIET = frozenset({"clip", "stream", "wait_stream"})


class RunState(Protocol):
    """What a layer's forward and backward use of the running network (darkcfg.network's
    Network is one)."""
    train: bool                         # a training pass: batch statistics, losses, dropout
    truth: np.ndarray | None            # (N, truths) float32 during a training pass
    seen: int                           # images trained on so far
    rng: np.random.Generator            # dropout masks, random crops
    outputs: list[np.ndarray | None]    # every layer's latest output, (N, *out_shape)

    def add_grad(self, index: int, g: np.ndarray) -> None:
        """Accumulate dLoss/d(output of layer `index`) (a layer in `sources`)."""


class FileHeader(Protocol):
    """What a layer's .weights layout may depend on in the file's header (weights.Header)."""
    @property
    def transpose(self) -> bool:
        """Darknet's rule: major or minor > 1000 stores [connected] weights transposed."""
        ...


def register(cls: type[Layer]) -> type[Layer]:
    """Class decorator: `cls` handles sections named `cls.type` (or one of `cls.aliases`).
    A name another class already has is a programming error (one would hide the other)."""
    for name in (cls.type, *cls.aliases):
        other = next((c for c in REGISTRY.values() if name in (c.type, *c.aliases)), None)
        if other is not None and _qualname(other) != _qualname(cls):
            raise ValueError(f"section name [{name}] of {_qualname(cls)} is already taken by "
                             f"{_qualname(other)}")
    REGISTRY[cls.type] = cls
    return cls


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Layer:
    type: ClassVar[str]
    # Other names Darknet's parser accepts for the section (src/parser.c: string_to_layer_type)
    aliases: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[dict[str, Opt]] = {}
    quiet: ClassVar[frozenset[str]] = frozenset()
    doc: ClassVar[str] = ""
    # False for sections darkcfg can size and summarise but not compute (refused by name
    # when the network is run; README, "Deliberate differences from Darknet").
    runnable: ClassVar[bool] = True
    # True for detection heads: the output is a grid of boxes, `decode(out, net_w, net_h,
    # thresh) -> geometry.Boxes` reads them (layers/yolo.py, layers/region.py).
    is_head: ClassVar[bool] = False
    # A small cfg using the section (after a [net] of 4 x 6 x 6 input and an [empty]; the
    # last section is this one), with smooth activations: tests/test_contract.py builds it
    # and checks shape, finiteness, gradients by finite differences and the weights round
    # trip. A loss layer also gives `example_loss`, the factor on its cost that makes the
    # gradient it passes down that of the objective (Darknet's [cost] sse passes (p - t),
    # half the derivative of the cost it reports).
    example: ClassVar[str | None] = None
    example_loss: ClassVar[float | None] = None
    # True when forward writes its output into `self._out` whenever that is a float32
    # array of the output's shape (C-contiguous), and returns it: a [route] of one image
    # hands such a source a view of its own buffer (layers/route.py, place_sources).
    # Set per layer where options decide it ([maxpool] maxpool_depth, [upsample] stride).
    writes_out: bool = False

    def __init__(self, section: Section, net: NetInfo, layers: list[Layer], *,
                 strict: bool = True):
        self.section = section
        self.strict = strict
        self.index: int = section.index  # type: ignore[assignment]
        self.net = net
        schema = {**COMMON, **self.options}
        self.opts: dict[str, Any] = read_options(section, schema, COMMON_QUIET | self.quiet,
                                                 strict=strict)
        self.prev: Layer | None = layers[-1] if layers else None
        self.in_shape: Shape = self.prev.out_shape if self.prev else net.input_shape
        self.inputs = self.prev.outputs if self.prev else net.inputs
        self.sources: list[int] = []      # layers read besides the previous one
        self.out_shape: Shape = self.in_shape
        self.setup(layers)
        c, h, w = self.out_shape
        if min(self.out_shape) <= 0:
            raise self.error(f"output shape {c} x {h} x {w} (c x h x w) is empty: the input "
                             f"{self.describe_in()} is too small for this layer")

    # --- to override --------------------------------------------------------------------
    def setup(self, layers: list[Layer]) -> None:
        """Validate options and set `out_shape` (default: same as input)."""

    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """Parameter arrays in .weights file order: (Darknet name, shape)."""
        return []

    def weights_from_file(self, name: str, flat: np.ndarray, header: FileHeader) -> np.ndarray:
        """Array `name` as darkcfg holds it, from its values as a .weights file stores them
        (`header`: the file's weights.Header). Default: the same order, reshaped."""
        return flat.reshape(self.params[name].shape)

    def weights_to_file(self, name: str, array: np.ndarray, header: FileHeader) -> np.ndarray:
        """The inverse of `weights_from_file`: the array in the file's order (any shape;
        it is written flat, C order)."""
        return array

    def flops(self) -> float:
        """Floating-point operations of one forward pass at batch 1 (multiply-add = 2)."""
        return 0.0

    def conv_flops(self) -> float:
        """The FLOPs Darknet (P) counts in its conv BFLOPs total."""
        return 0.0

    def receptive(self, rf: list[tuple[float, float]]) -> tuple[float, float]:
        """(receptive field, effective stride) in input pixels, given every earlier layer's."""
        return self._rf_in(rf)

    def row(self) -> str:
        """Darknet P's summary text for this layer (after the index column)."""
        return self.type

    def label_lines(self) -> list[str]:
        """The layer's label in `darkcfg summary --dot` (before its output shape)."""
        return [self.type]

    def unsupported(self) -> str | None:
        """Why darkcfg cannot run this layer (None when it can)."""
        return None if self.runnable else f"[{self.section.written}] layers cannot run in " \
            "darkcfg yet (shape and parameters only)"

    # --- running (network.py calls these; kernels come from darkcfg.kernels) -------------
    def allocate(self) -> None:
        """Create `self.params` (Darknet names, weights-file order) with Darknet's inference
        defaults: zeros, BN scales and rolling variances 1."""
        self.params: dict[str, np.ndarray] = {}
        for name, shape in self.param_shapes():
            fill = 1.0 if name in ("scales", "rolling_variance") else 0.0
            self.params[name] = np.full(shape, fill, dtype=np.float32)

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        """x: the previous layer's output (N, C, H, W) float32 C-contiguous (the network
        input for layer 0). Returns (N, *out_shape) float32; other layers' outputs are in
        `net.outputs`, `net.train` says whether this is a training pass. The array may be
        a buffer reused by the next call."""
        raise NotImplementedError(f"[{self.type}] has no forward pass yet")

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        """Training only, after `forward(x, net)` with net.train True.

        dy: dLoss/d(this layer's output), (N, *out_shape) float32, or None when no gradient
        reached this layer (a loss layer then still has its own). Accumulates (+=) the
        parameter gradients into `self.grads`, adds gradients for the layers in
        `self.sources` with `net.add_grad(j, g)`, and returns dLoss/d(input) (N, *in_shape)
        or None (no gradient flows down)."""
        raise NotImplementedError(f"[{self.type}] has no backward pass yet")

    def reset_state(self) -> None:
        """Forget the state carried from one forward call to the next (recurrent layers,
        layers/_recurrent.py); nothing for the others."""

    def params_changed(self) -> None:
        """Forget what was derived from `params` and kept between inference calls (a
        conv's packed or Winograd-transformed weights). darkcfg calls it after loading,
        drawing or updating parameters; code that edits `params` in place calls it too
        (or Network.params_changed)."""
        self.__dict__.pop("_conv_cache", None)

    # Parameters that SGD trains (the rolling BN statistics are not among them).
    TRAINED = ("weights", "biases", "scales")
    # Set by the network for each training iteration (darkcfg/sgd.py: frozen_layers):
    # frozen layers keep every array, normalising with their rolling BN statistics;
    # `stops_backward` is the frozen layer where the backward pass ends
    frozen: bool = False
    stops_backward: bool = False

    def allocate_grads(self) -> None:
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items() if k in self.TRAINED}
        self.updates = {k: np.zeros_like(v) for k, v in self.grads.items()}

    def init_params(self, rng: np.random.Generator) -> None:
        """Darknet's initialisation for training from scratch (e.g. src/convolutional_layer.c:
        make_convolutional_layer): weights scaled by sqrt(2/fan_in); biases 0; BN scales 1,
        rolling mean 0, variance 0."""
        for name, arr in self.params.items():
            if name == "weights":
                fan_in = max(1, int(np.prod(arr.shape[1:])))
                arr[...] = np.sqrt(2.0 / fan_in) * rng.standard_normal(arr.shape)
            elif name == "scales":
                arr[...] = 1
            else:
                arr[...] = 0

    # --- helpers ------------------------------------------------------------------------
    @property
    def outputs(self) -> int:
        c, h, w = self.out_shape
        return c * h * w

    @property
    def nparams(self) -> int:
        n = 0
        for _, shape in self.param_shapes():
            size = 1
            for d in shape:
                size *= d
            n += size
        return n

    def error(self, message: str, key: str | None = None) -> CfgError:
        return self.section.error(message, key)

    def lenient(self, message: str, key: str | None = None, fallback: str = "") -> None:
        """A problem that is an error when strict and a warning (with `fallback`) otherwise."""
        if self.strict:
            raise self.error(message, key)
        warnings.warn(f"{self.error(message, key)}; {fallback} (lenient mode)", CfgWarning,
                      stacklevel=3)

    def describe_in(self) -> str:
        c, h, w = self.in_shape
        return f"{c} x {h} x {w}"

    def _rf_in(self, rf: list[tuple[float, float]]) -> tuple[float, float]:
        return rf[self.index - 1] if self.index > 0 else (1.0, 1.0)

    def resolve(self, key: str, k: int, layers: list[Layer]) -> int:
        """A layer reference: negative is relative to this layer, non-negative absolute."""
        i = self.index + k if k < 0 else k
        if i < 0:
            raise self.error(f"'{key}' refers to layer {k} ({i} counting from layer "
                             f"{self.index}), before the first layer", key)
        if i >= self.index:
            what = "itself" if i == self.index else f"layer {i}, which comes later"
            raise self.error(f"'{key}={self.section.entries[key].value}' refers to {what}; "
                             f"only earlier layers (0..{self.index - 1}) can be used", key)
        if i >= len(layers):  # pragma: no cover - guarded above
            raise self.error(f"'{key}' refers to layer {i}, which does not exist", key)
        return i

    def image_input(self) -> None:
        """Darknet's 'Layer before ... must output image' check."""
        c, h, w = self.in_shape
        if min(c, h, w) <= 0:
            raise self.error(f"needs an image input (c x h x w), but the layer before gives "
                             f"{self.describe_in()}")


def dims(shape: Shape) -> str:
    """`w x h x c` as Darknet prints it."""
    c, h, w = shape
    return f"{w:4d} x{h:4d} x{c:4d}"
