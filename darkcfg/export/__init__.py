"""ONNX export of a loaded network (`darkcfg export`): the graph that computes what
darkcfg's forward computes, section by section.

    to_onnx(net, opset=17, batch=1, decode=False, fuse=True) -> onnx.ModelProto
    save_onnx(model, path, force=False)

Modules: builder.py (the graph under construction, names, opset differences),
activations.py (every activation), sections.py (one emitter per section), heads.py
([yolo]/[region] raw outputs and `--decode`). `onnx` is imported only here, when a model
is built or saved (`pip install "darkcfg[onnx]"`); nothing else in darkcfg imports it.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import DarkcfgError, OutputError
from . import heads  # noqa: F401  (registers the head emitters beside sections.py's)
from .builder import DEFAULT_OPSET, MIN_OPSET, Builder

if TYPE_CHECKING:
    import onnx

    from ..network import Network

INSTALL = 'pip install "darkcfg[onnx]"'

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "check_opset", "require_onnx", "save_onnx",
           "to_onnx"]


def require_onnx():
    """The onnx module, or a DarkcfgError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise DarkcfgError(f"ONNX export needs the onnx package: {INSTALL}") from None
    return onnx


def check_opset(opset: int) -> int:
    """The opsets darkcfg writes: 13 (one-axis Softmax, axes as inputs) up to the newest
    the installed onnx knows."""
    onnx = require_onnx()
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or \
            not MIN_OPSET <= opset <= newest:
        raise DarkcfgError(f"opset {opset!r}: darkcfg writes opsets {MIN_OPSET}..{newest} "
                           f"(the installed onnx {onnx.__version__} knows up to {newest}; "
                           f"{DEFAULT_OPSET} is the default)")
    return opset


def _check_batch(batch: int | str) -> int | str:
    if batch == "dynamic" or (isinstance(batch, int) and not isinstance(batch, bool)
                              and batch >= 1):
        return batch
    raise DarkcfgError(f"batch {batch!r}: give a whole number >= 1 or 'dynamic'")


def to_onnx(net: Network, *, opset: int = DEFAULT_OPSET, batch: int | str = 1,
            decode: bool = False, fuse: bool = True,
            extra_outputs: Sequence[int] = (), stepwise: bool = False) -> onnx.ModelProto:
    """The network as an ONNX model: input `input` (N, C, H, W) float32 in [0, 1] as
    `net.forward` takes it; outputs every detection head's raw output (`<i>_yolo`, ...),
    or with `decode` `boxes` (N, K, 4: x1 y1 x2 y2 in network-input pixels) and `scores`
    (N, K, classes: objectness x class probability), or else the network output
    (`<i>_<section>` of its output layer). batch: N, or "dynamic" (dimension `N`).
    fuse: fold batch normalisation into the convolutions (False: BatchNormalization
    nodes). extra_outputs: more layers whose outputs the model also returns (by index).
    stepwise (for checking one layer at a time): every layer reads layer j's output from
    a graph input `in_<j>` that the caller feeds (e.g. darkcfg's own), not from layer j,
    so float32 rounding does not accumulate over a deep network."""
    require_onnx()
    from onnx import TensorProto, helper

    from .heads import DECODES
    from .heads import decode as decode_head
    from .sections import Context, emitter_for
    opset = check_opset(opset)
    batch = _check_batch(batch)
    # the package's own version: darkcfg/__init__.py is always loaded before this module
    # (importing it here would climb to the cli floor, tests/test_architecture.py)
    version = sys.modules["darkcfg"].__version__
    layers = net.layers
    found = [lay for lay in layers if lay.is_head]
    if decode and not found:
        raise DarkcfgError(f"{net.graph.file}: --decode needs a detection head ([yolo] or "
                           "[region]); this network has none")
    if decode and len({head.classes for head in found}) > 1:
        raise DarkcfgError(f"{net.graph.file}: --decode concatenates the heads' scores, but "
                           "they disagree on classes (" + ", ".join(
                               f"layer {head.index}: {head.classes}" for head in found) + ")")
    for lay in layers:              # every section before any work
        emitter_for(lay)
        if decode and lay.is_head and lay.type not in DECODES:
            raise lay.error(f"--decode: darkcfg has no ONNX decoding of [{lay.type}] heads "
                            "yet; export without --decode for its raw output")
    b = Builder(opset)
    ctx = Context(b, layers, net.graph.net.dialect, fuse)
    x, made = "input", []
    ctx.outputs = made              # what later layers read (stepwise: graph inputs)
    for lay in layers:
        b.start_layer(f"{lay.index}_{lay.type}")
        if stepwise:
            ctx.outputs = [f"in_{j}" for j in range(lay.index)]
            x = f"in_{lay.index - 1}" if lay.index else "input"
        out = emitter_for(lay)(ctx, lay, x)
        x = b.finish_layer(out)
        made.append(x)
    ctx.outputs = made
    c, h, w = net.input_shape
    n = batch if isinstance(batch, int) else "N"

    def info(name: str, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

    outputs = []
    if decode:
        parts = [decode_head(b, head, ctx.outputs[head.index], w, h) for head in found]
        b.start_layer("decode")
        for name, k in (("boxes", 0), ("scores", 1)):
            tensors = [p[k] for p in parts]
            b.op("Concat", tensors, out_name=name, axis=1) if len(tensors) > 1 else \
                b.op("Identity", tensors, out_name=name)
        entries = sum(_entries(head) for head in found)
        outputs += [info("boxes", [n, entries, 4]),
                    info("scores", [n, entries, found[-1].classes])]
    else:
        shown = found or [net.graph.output_layer]
        outputs += [info(ctx.outputs[lay.index], [n, *lay.out_shape]) for lay in shown]
    named = {o.name for o in outputs}
    outputs += [info(ctx.outputs[i], [n, *layers[i].out_shape]) for i in extra_outputs
                if ctx.outputs[i] not in named]
    inputs = [info("input", [n, c, h, w])]
    if stepwise:
        read = {name for node in b.nodes for name in node.input}
        inputs += [info(f"in_{j}", [n, *layers[j].out_shape]) for j in range(len(layers))
                   if f"in_{j}" in read]
    graph = helper.make_graph(b.nodes, os.path.basename(str(net.graph.file)), inputs,
                              outputs, initializer=b.initializers)
    model = helper.make_model(graph, producer_name="darkcfg", producer_version=version,
                              opset_imports=[helper.make_opsetid("", opset)])
    model.doc_string = (f"{net.graph.file} exported by darkcfg {version}: input float32 "
                        "NCHW in [0, 1]")
    helper.set_model_props(model, {
        "darkcfg_version": version, "cfg": str(net.graph.file),
        "dialect": net.graph.net.dialect, "bn_folded": str(ctx.folded),
        "decode": str(bool(decode)),
    })
    return model


def _entries(head) -> int:
    if head.type == "detection":
        return head.side * head.side * head.num
    _, lh, lw = head.out_shape
    return lh * lw * (head.num if head.type == "region" else len(head.mask))


# protobuf's limit on one serialised message
PROTOBUF_LIMIT = 2 ** 31 - 1


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike, *, force: bool = False) -> int:
    """Write `model` to path atomically (fileio.atomic_write); an existing file is
    replaced only with force. Returns the bytes written."""
    from ..fileio import atomic_write, check_target
    shown = os.fspath(path)
    check_target(shown, "ONNX model")
    if os.path.exists(shown) and not force:
        raise OutputError(f"{shown}: exists; darkcfg does not replace it unasked (use "
                          "--force, or choose another name)")
    size = model.ByteSize()
    if size > PROTOBUF_LIMIT:
        raise OutputError(f"{shown}: the model is {size / 2**30:.1f} GiB, over the 2 GiB an "
                          "ONNX file can hold in one piece; export at a smaller size or "
                          "with fewer filters")
    data = model.SerializeToString()
    with atomic_write(shown, "ONNX model") as f:
        f.write(data)
    return len(data)
