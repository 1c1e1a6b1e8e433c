"""cfg sections -> a layer graph with every shape, parameter array and FLOP count known.

This is all `darkcfg summary` needs; nothing here imports Numba.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

from .cfg import NET_NAMES, Section, read_cfg
from .errors import CfgError
from .layers import REGISTRY, Layer
from .netcfg import (
    DIALECTS,
    NET_OPTIONS,
    NET_QUIET,
    DialectChoice,
    NetInfo,
    choose_dialect,
)
from .options import read_options


@dataclass
class Graph:
    file: str
    net: NetInfo
    layers: list[Layer] = field(default_factory=list)

    @property
    def output_layer(self) -> Layer:
        """The network's output: the last layer that is not a [cost]."""
        for layer in reversed(self.layers):
            if layer.type != "cost":
                return layer
        return self.layers[-1]

    @property
    def nparams(self) -> int:
        return sum(layer.nparams for layer in self.layers)

    @property
    def truths(self) -> int:
        last = self.layers[-1]
        return getattr(last, "truths", 0) or last.outputs

    def unsupported(self) -> list[tuple[Layer, str]]:
        return [(lay, why) for lay in self.layers if (why := lay.unsupported())]


def _net_info(sec: Section, *, width, height, channels, batch, dialect: DialectChoice,
              strict) -> NetInfo:
    opts = read_options(sec, NET_OPTIONS, NET_QUIET, strict=strict)
    for key, value in (("width", width), ("height", height), ("channels", channels),
                       ("batch", batch)):
        if value is not None:
            if value < 1:
                raise CfgError(f"the {key} override must be >= 1, got {value}", file=sec.file)
            opts[key] = value
    if batch is not None:
        opts["subdivisions"] = 1
    if opts["subdivisions"] > opts["batch"]:
        raise sec.error(f"subdivisions={opts['subdivisions']} is larger than batch="
                        f"{opts['batch']}: the mini-batch (batch/subdivisions) would be 0",
                        "subdivisions")
    w, h, c = opts["width"], opts["height"], opts["channels"]
    if w and h and c:
        shape = (c, h, w)
    elif opts["inputs"] and not (w or h or c):
        shape = (opts["inputs"], 1, 1)
    else:
        missing = [k for k in ("width", "height", "channels") if not opts[k]]
        raise sec.error("no input shape: give width, height and channels (or inputs= for a "
                        f"non-image net); missing {', '.join(missing)}",
                        missing[0] if missing[0] in sec.entries else None)
    if dialect.dialect not in DIALECTS:
        raise CfgError(f"unknown dialect '{dialect.dialect}'; use one of "
                       f"{', '.join(DIALECTS)}", file=sec.file)
    return NetInfo(opts, shape, dialect.dialect, sec, dialect)


def section_names() -> dict[str, type[Layer]]:
    """Every name a layer section can have, canonical or alias (each class's `aliases`)."""
    names = {alias: cls for cls in REGISTRY.values() for alias in cls.aliases}
    names.update(REGISTRY)
    return names


def resolve_names(sections: list[Section]) -> None:
    """Give each layer section its canonical name (`[conv]` -> "convolutional"); an
    unknown name is a CfgError at its line, with the closest known name."""
    names = section_names()
    for sec in sections:
        if sec.name == "net":
            continue
        cls = names.get(sec.name)
        if cls is None:
            hint = difflib.get_close_matches(sec.name, sorted({*names, *NET_NAMES}), n=1)
            msg = f"unknown section [{sec.written}]"
            msg += f" - did you mean [{hint[0]}]?" if hint else \
                f"; known sections: {', '.join(sorted(REGISTRY))}"
            raise CfgError(msg, file=sec.file, line=sec.line)
        sec.name = cls.type


def build_graph(sections: list[Section], *, width: int | None = None,
                height: int | None = None, channels: int | None = None,
                batch: int | None = None, dialect: str | DialectChoice | None = None,
                strict: bool = True) -> Graph:
    """The graph of a cfg's sections. `dialect`: a name, a `DialectChoice` a caller made
    (Network.load: from a weights header), or None to choose from the cfg itself
    (netcfg.choose_dialect); `graph.net.dialect_choice` says which rule applied."""
    resolve_names(sections)
    net_sec, *layer_secs = sections
    choice = choose_dialect(sections, dialect, net_sec.file)
    net = _net_info(net_sec, width=width, height=height, channels=channels, batch=batch,
                    dialect=choice, strict=strict)
    if not layer_secs:
        raise CfgError("the cfg has a [net] section but no layers", file=net_sec.file,
                       line=net_sec.line, section=net_sec.written)
    graph = Graph(net_sec.file, net)
    for sec in layer_secs:
        graph.layers.append(REGISTRY[sec.name](sec, net, graph.layers, strict=strict))
    return graph


def load_graph(path: str | os.PathLike, **kw) -> Graph:
    """Read and size a cfg file. Keyword arguments as for `build_graph`."""
    return build_graph(read_cfg(path, strict=kw.get("strict", True)), **kw)
