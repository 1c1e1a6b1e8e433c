"""Darknet .weights files: header, then every layer's arrays in cfg order (float32 LE).

As Darknet's src/parser.c: load_weights_upto, save_weights_upto. A file is meaningless
without its cfg, so every problem names the layer and the byte offset where the cfg and
the file part ways.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .errors import WeightsError
from .fileio import atomic_write

if TYPE_CHECKING:
    from .graph import Graph
    from .layers import Layer

BN_TRIPLET = ("scales", "rolling_mean", "rolling_variance")


class WeightsWarning(UserWarning):
    """A .weights file that loads, but not as expected: a prefix file, an odd header,
    values that cannot be right (NaN/inf, a negative variance)."""


class Weighted(Protocol):
    """What reading and writing a .weights file use of a network (darkcfg.network's
    Network is one; this module does not import it): its layers with their `params`, the
    images it has seen, and the header of the file it was loaded from (None: a new one)."""
    graph: Graph
    layers: list[Layer]
    seen: int
    header: Header | None


# layers named in the NaN/inf warning: enough to locate the damage, short enough to read
SHOWN_BAD_LAYERS = 3


@dataclass
class Header:
    major: int
    minor: int
    revision: int
    seen: int
    size: int            # header bytes: 16 or 20

    @property
    def transpose(self) -> bool:
        return self.major > 1000 or self.minor > 1000

    @property
    def dialect(self) -> str:
        # revision >= 5 (AlexeyAB's 0.2.5) means the alexeyab dialect (its BN denominator,
        # the [batchnorm] layout), unless a dialect was given
        return "alexeyab" if (self.major, self.minor) == (0, 2) and self.revision >= 5 \
            else "pjreddie"

    @property
    def seen_max(self) -> int:
        return 2**64 - 1 if self.size == 20 else 2**32 - 1

    def pack(self) -> bytes:
        head = np.array([self.major, self.minor, self.revision], "<i4").tobytes()
        seen = np.array([self.seen], "<u8" if self.size == 20 else "<u4").tobytes()
        return head + seen

    def problems(self) -> list[str]:
        """What looks wrong in the version fields (the file still loads as Darknet would)."""
        out = []
        fields = (("major", self.major), ("minor", self.minor), ("revision", self.revision))
        for field, value in fields:
            if value < 0:
                out.append(f"header field {field} = {value} is negative: no Darknet writes "
                           "that, the header (first 12 bytes) is probably damaged")
            elif value > 1000 and field != "revision":
                # Darknet's `transpose` rule (src/parser.c: load_weights_upto); no current
                # writer sets it
                out.append(f"header field {field} = {value} is > 1000, so [connected] "
                           "weights are read transposed ([input][output]) as Darknet does: "
                           "either this is an old transposed file or a damaged header (if "
                           "the network's outputs look wrong, the file is damaged)")
        return out


@dataclass
class LoadReport:
    layers_loaded: int        # layers with parameters that were read
    layers_with_params: int
    bytes_read: int
    header: Header
    mismatch: str | None = None   # load_matching: where the file stopped matching

    @property
    def complete(self) -> bool:
        return self.layers_loaded == self.layers_with_params


def read_header(path: str | os.PathLike) -> Header:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read: {e.strerror}") from None
    if len(head) < 16:
        raise WeightsError(f"{path}: {len(head)} bytes is too short for a .weights header "
                           "(16 or 20 bytes)")
    major, minor, revision = (int(v) for v in np.frombuffer(head[:12], "<i4"))
    # AH's rule (src/parser.c: load_weights_upto): 8-byte `seen` from version 0.2 on
    if major * 10 + minor >= 2:
        if len(head) < 20:
            raise WeightsError(f"{path}: {len(head)} bytes is too short for a version "
                               f"{major}.{minor}.{revision} header (20 bytes)")
        return Header(major, minor, revision, int(np.frombuffer(head[12:20], "<u8")[0]), 20)
    return Header(major, minor, revision, int(np.frombuffer(head[12:16], "<u4")[0]), 16)


def file_arrays(layer: Layer) -> list[str]:
    """Names of the arrays this layer reads from a file, in order (dontload/dontloadscales)."""
    if layer.opts.get("dontload"):
        return []
    names = [name for name, _ in layer.param_shapes()]
    if layer.opts.get("dontloadscales"):
        names = [n for n in names if n not in BN_TRIPLET]
    return names


def load_weights(net: Weighted, path: str | os.PathLike) -> LoadReport:
    """Fill the network's parameters from a .weights file.

    A file that stops exactly between two layers is a prefix file (`darknet partial`,
    e.g. darknet53.conv.74): those layers load and a WeightsWarning says how many. A file
    that stops inside a layer, or that has bytes left over, is a WeightsError. An odd
    header (negative or > 1000 version fields) and values that cannot be right (NaN/inf,
    a negative rolling_variance) load as Darknet would load them, with a WeightsWarning.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    header = read_header(path)
    for problem in header.problems():
        warnings.warn(f"{name}: {problem}", WeightsWarning, stacklevel=2)
    data = np.fromfile(path, dtype="<f4", offset=header.size) \
        if os.path.getsize(path) > header.size else np.empty(0, "<f4")
    extra_bytes = (os.path.getsize(path) - header.size) % 4
    with_params = [lay for lay in net.layers if file_arrays(lay)]
    expected = header.size + 4 * sum(lay.params[n].size for lay in with_params
                                     for n in file_arrays(lay))
    pos, loaded = 0, 0
    for layer in with_params:
        if pos == data.size:
            break
        for arr_name in file_arrays(layer):
            arr = layer.params[arr_name]
            if pos + arr.size > data.size:
                raise WeightsError(
                    f"{name}: the file ends inside layer {layer.index} [{layer.type}] "
                    f"('{arr_name}', {arr.size} values from byte "
                    f"{header.size + 4 * pos}): it has {header.size + 4 * data.size + extra_bytes}"
                    f" bytes, this cfg needs {expected}. These weights were probably made "
                    "for a different cfg (check filters, size, classes, batch_normalize).")
            arr[...] = layer.weights_from_file(arr_name, data[pos:pos + arr.size], header)
            pos += arr.size
        loaded += 1
    if pos < data.size or extra_bytes:
        last = with_params[-1] if with_params else None
        left = 4 * (data.size - pos) + extra_bytes
        where = f"after the last layer with parameters, {last.index} [{last.type}]" if last \
            else "and this cfg has no parameters at all"
        raise WeightsError(
            f"{name}: {left} bytes are left over at byte {header.size + 4 * pos} {where}: "
            f"the file has {os.path.getsize(path)} bytes, this cfg needs {expected}. These "
            "weights were probably made for a different (larger) cfg.")
    if loaded < len(with_params):
        nxt = with_params[loaded]
        warnings.warn(f"{name}: loaded {loaded} of {len(with_params)} layers with parameters "
                      f"(a prefix file ending before layer {nxt.index} [{nxt.type}]); the "
                      "rest keep their initial values", WeightsWarning, stacklevel=2)
    _warn_bad_values(name, with_params[:loaded])
    net.seen = header.seen
    net.header = header
    return LoadReport(loaded, len(with_params), header.size + 4 * pos, header)


@dataclass(frozen=True)
class FileLayer:
    """One layer with parameters as a .weights file holds it, known from elsewhere (a
    .weights file has no shapes): the cfg it was made for, or the momentum buffers darkcfg
    keeps beside a checkpoint. `shapes`: every array (full) or only the trained ones
    (weights, biases, scales); `size`: the floats the layer takes in the file."""
    index: int
    type: str | None
    shapes: dict[str, tuple[int, ...]]
    size: int
    full: bool
    source: str


def file_layers_of(graph: Graph) -> list[FileLayer]:
    """The layers a .weights file made for `graph`'s cfg holds, in file order."""
    out = []
    for layer in graph.layers:
        shapes = dict(layer.param_shapes())
        if shapes and not layer.opts.get("dontsave"):
            sec = layer.section
            out.append(FileLayer(layer.index, layer.type, shapes, layer.nparams, True,
                                 f"{sec.file}:{sec.line}"))
    return out


def _fits(layer: Layer, have: FileLayer) -> bool:
    mine = dict(layer.param_shapes())
    if not have.full:
        mine = {k: v for k, v in mine.items() if k in layer.TRAINED}
    return (have.type in (None, layer.type)) and mine == have.shapes


def _shapes_text(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())


def load_matching(net: Weighted, path: str | os.PathLike,
                  file_layers: list[FileLayer]) -> LoadReport:
    """Load the layers of a .weights file that match the cfg, for training a new head on
    a trained network: `file_layers` says what the file holds (its shapes); the cfg's
    layers with parameters are compared with them in order, and those before the first
    difference (another section, another shape, or the file's end) are read. The others
    keep their values; LoadReport.mismatch says exactly where and how the two part. The
    file must hold exactly what `file_layers` says (otherwise they describe another
    file: a WeightsError)."""
    path = os.fspath(path)
    name = os.path.basename(path)
    header = read_header(path)
    for problem in header.problems():
        warnings.warn(f"{name}: {problem}", WeightsWarning, stacklevel=2)
    floats = (os.path.getsize(path) - header.size) / 4
    described = sum(f.size for f in file_layers)
    if floats != described:
        where = file_layers[0].source.rsplit(":", 1)[0] if file_layers else "nothing"
        raise WeightsError(
            f"{name}: {os.path.getsize(path)} bytes, but {where} describes a file of "
            f"{header.size + 4 * described} bytes: those are not the shapes of this file")
    data = np.fromfile(path, dtype="<f4", offset=header.size)
    with_params = [lay for lay in net.layers if file_arrays(lay)]
    pos, loaded = 0, 0
    for layer, have in zip(with_params, file_layers):
        if not _fits(layer, have) or file_arrays(layer) != list(dict(
                layer.param_shapes())):     # dontloadscales: a layer read in part
            break
        for arr_name in file_arrays(layer):
            arr = layer.params[arr_name]
            arr[...] = layer.weights_from_file(arr_name, data[pos:pos + arr.size], header)
            pos += arr.size
        loaded += 1
    mismatch = None
    if loaded < len(with_params):
        layer = with_params[loaded]
        sec = layer.section
        mine = dict(layer.param_shapes())
        if loaded < len(file_layers):
            have = file_layers[loaded]
            if not have.full:
                mine = {k: v for k, v in mine.items() if k in layer.TRAINED}
            kind = f"[{have.type}] " if have.type else ""
            found = f"the file's layer {have.index} {kind}({have.source}) has " \
                f"{_shapes_text(have.shapes)}"
        else:
            found = f"the file ends after {loaded} layers with parameters"
        mismatch = (f"{name} stops matching at layer {layer.index} [{layer.type}] "
                    f"({sec.file}:{sec.line}): it needs {_shapes_text(mine)}; {found}")
    _warn_bad_values(name, with_params[:loaded])
    net.seen = header.seen
    net.header = header
    return LoadReport(loaded, len(with_params), header.size + 4 * pos, header, mismatch)


def _bad_values(layer: Layer) -> list[str]:
    """What in this layer's loaded arrays cannot be right: NaN/inf anywhere (they spread
    to every output), a negative rolling_variance (its square root is NaN at inference)."""
    out = []
    for name in file_arrays(layer):
        arr = layer.params[name]
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            out.append(f"'{name}' has {bad} NaN/inf value{'s' * (bad != 1)}")
        if name == "rolling_variance":
            neg = int(np.count_nonzero(arr < 0))
            if neg:
                out.append(f"'{name}' has {neg} negative value{'s' * (neg != 1)}")
    return out


def _where(layer: Layer) -> str:
    section = getattr(layer, "section", None)
    line = f" ({section.file}:{section.line})" if section is not None else ""
    return f"layer {layer.index} [{layer.type}]{line}"


def _warn_bad_values(name: str, layers: list[Layer]) -> None:
    """One warning per file naming the first few layers whose values cannot be right."""
    found = [(layer, bad) for layer in layers if (bad := _bad_values(layer))]
    if not found:
        return
    shown = "; ".join(f"{_where(layer)}: {', '.join(bad)}"
                      for layer, bad in found[:SHOWN_BAD_LAYERS])
    more = len(found) - SHOWN_BAD_LAYERS
    if more > 0:
        shown += f"; and {more} more layer{'s' * (more != 1)}"
    warnings.warn(f"{name}: {shown}. The network will output NaN or garbage: the file is "
                  "damaged or was saved from a diverged training run (use an earlier "
                  "checkpoint, or a lower learning rate when training)", WeightsWarning,
                  stacklevel=3)


def default_header(net: Weighted) -> Header:
    revision = 5 if net.graph.net.dialect == "alexeyab" else 0
    return Header(0, 2, revision, 0, 20)


def save_weights(net: Weighted, path: str | os.PathLike) -> None:
    """Write the network's parameters atomically (see fileio: a crash or a full disk never
    leaves a broken file, symlinks are written through, devices and the like refused).

    A network loaded from a file is written with that file's header layout, so load-then-
    save is byte-identical; otherwise 0.2.0 (pjreddie) or 0.2.5 (alexeyab)."""
    header = net.header or default_header(net)
    header = Header(header.major, header.minor, header.revision, int(net.seen), header.size)
    save_weights_upto(net, path, len(net.layers), header)


def save_weights_upto(net: Weighted, path: str | os.PathLike, cutoff: int,
                      header: Header) -> int:
    """Darknet's src/parser.c: save_weights_upto: `header`, then the arrays of layers
    0..cutoff-1 (dontsave layers skipped), written atomically. Returns the bytes written."""
    path = os.fspath(path)
    _check_seen(header, path)
    size = header.size
    with atomic_write(path, "weights") as f:
        f.write(header.pack())
        for layer in net.layers[:cutoff]:
            if layer.opts.get("dontsave"):
                continue
            for name, _ in layer.param_shapes():
                arr = layer.weights_to_file(name, layer.params[name], header)
                data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
                f.write(data)
                size += len(data)
    return size


@dataclass
class PartialReport:
    """What `partial` wrote: layers 0..cutoff-1; of those, `layers` (index, type,
    parameter count) hold parameters."""
    cutoff: int
    layers: list[tuple[int, str, int]]
    params: int
    bytes_written: int
    header: Header


def partial(net: Weighted, path: str | os.PathLike, cutoff: int,
            loaded: LoadReport) -> PartialReport:
    """Darknet's `partial CFG WEIGHTS OUT N` (src/darknet.c: partial): the parameters of
    layers 0..N-1 of a network loaded from a .weights file (`loaded`, its LoadReport),
    with `seen` 0, in the header Darknet writes (0.2.0; AlexeyAB's 0.2.5 in that
    dialect). N counts every section after [net], as Darknet's layer index does:
    `partial yolov3.cfg yolov3.weights darknet53.conv.74 74` keeps layers 0..73."""
    n = len(net.layers)
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)) \
            or not 1 <= cutoff <= n:
        raise WeightsError(
            f"partial: N = {cutoff!r}, but this cfg has {n} layers (0..{n - 1}): N counts "
            f"every section after [net] (Darknet's layer index) and keeps layers 0..N-1, "
            f"so it must be 1..{n}")
    kept = [lay for lay in net.layers[:cutoff] if file_arrays(lay)]
    with_params = [lay for lay in net.layers if file_arrays(lay)]
    if len(kept) > loaded.layers_loaded:
        first = with_params[loaded.layers_loaded]
        held = f"parameters up to layer {with_params[loaded.layers_loaded - 1].index} " \
            "only (a prefix file)" if loaded.layers_loaded else "no parameters"
        raise WeightsError(
            f"partial: the weights file holds {held}, but N = {cutoff} needs layer "
            f"{first.index} [{first.type}] too: use N <= {first.index}, or the full file")
    header = default_header(net)
    size = save_weights_upto(net, path, cutoff, header)
    layers = [(lay.index, lay.type, lay.nparams) for lay in net.layers[:cutoff]
              if lay.params and not lay.opts.get("dontsave")]
    return PartialReport(cutoff, layers, sum(p for *_, p in layers), size, header)


def _check_seen(header: Header, path: str) -> None:
    """`seen` must fit the header it is written into (checked before any byte is written)."""
    if 0 <= header.seen <= header.seen_max:
        return
    version = f"{header.major}.{header.minor}.{header.revision}"
    if header.seen < 0:
        raise WeightsError(f"{path}: cannot save seen = {header.seen} (images trained on): "
                           "it is negative; set net.seen to the number of images seen")
    if header.size == 20:
        raise WeightsError(f"{path}: seen = {header.seen} (images trained on) does not fit "
                           f"the 8 bytes of the header (at most {header.seen_max}); reset "
                           "net.seen")
    raise WeightsError(
        f"{path}: seen = {header.seen} (images trained on) does not fit the 16-byte header "
        f"of version {version} this network was loaded with: that header (Darknet "
        f"major*10+minor < 2) stores `seen` in 4 bytes, at most {header.seen_max}. Save "
        "with the 20-byte 0.2 header instead (set net.header = None before saving), or "
        "reset net.seen")
