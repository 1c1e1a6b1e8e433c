"""[route]: channel concatenation of earlier layers (optionally one channel group)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..options import Opt
from .base import Layer, register

if TYPE_CHECKING:
    from .base import RunState


@register
class Route(Layer):
    type = "route"
    example = ("[convolutional]\nfilters=2\nsize=3\npad=1\nactivation=logistic\n"
               "batch_normalize=1\n[convolutional]\nfilters=3\nsize=3\npad=1\n"
               "activation=logistic\nbatch_normalize=1\n[route]\nlayers=-1,-2\n")
    doc = "concatenate earlier layers' channels; groups/group_id take a slice of each"
    options = {
        "layers": Opt("layers", None, "source layers, relative or absolute", required=True),
        "groups": Opt("int", 1, "split each source into this many channel groups (AH)",
                      min=1),
        "group_id": Opt("int", 0, "which group to take (AH)", min=0),
    }

    def setup(self, layers):
        self.sources = [self.resolve("layers", k, layers) for k in self.opts["layers"]]
        g, gid = self.opts["groups"], self.opts["group_id"]
        if gid >= g:
            raise self.error(f"'group_id' must be below groups={g}, got {gid}", "group_id")
        self.groups, self.group_id = g, gid
        c0, h0, w0 = layers[self.sources[0]].out_shape
        total = 0
        for i in self.sources:
            c, h, w = layers[i].out_shape
            if (h, w) != (h0, w0):
                raise self.error(
                    f"cannot concatenate layer {i} ({w} x {h} x {c}, w x h x c) with layer "
                    f"{self.sources[0]} ({w0} x {h0} x {c0}): routed layers need the same "
                    "width and height", "layers")
            if c % g:
                raise self.error(f"groups={g} must divide the {c} channels of layer {i}",
                                 "groups")
            total += c // g
        self.out_shape = (total, h0, w0)

    @property
    def writes_out(self) -> bool:
        return self.groups == 1 and len(self.sources) > 1

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        # sources (N, c_i, H, W) -> (N, sum c_i / groups, H, W): channel slice `group_id`
        # of each source (AH groups; a contiguous piece of the flat buffer), concatenated
        # in the listed order, into a buffer kept between calls (a new array each call
        # costs its page faults: 1.5x the copy). Parts a source already wrote in place
        # (place_sources) are not copied; in inference, one part that is contiguous (one
        # image's channel group, or a whole single source) is returned as it is.
        parts = []
        for i in self.sources:
            y = net.outputs[i]
            step = y.shape[1] // self.groups
            parts.append(y[:, self.group_id * step:(self.group_id + 1) * step])
        if len(parts) == 1 and not net.train and parts[0].flags.c_contiguous:
            return parts[0]
        from ..kernels.conv import reuse
        shape = (len(parts[0]), sum(p.shape[1] for p in parts), *parts[0].shape[2:])
        out = self._out = reuse(getattr(self, "_out", None), shape)
        c0 = 0
        for part in parts:
            dst = out[:, c0:c0 + part.shape[1]]
            c0 += part.shape[1]
            if not _same_memory(part, dst):
                np.copyto(dst, part)
        return out

    def place_sources(self, layers: list[Layer], placed: set[int]) -> None:
        """For a forward pass of one image: give each source that writes its output in
        place (Layer.writes_out) a view of this route's buffer to write into, so that
        the concatenation costs no copy. `placed`: the layers already given a view (by a
        later route: the routes are placed last to first, so that a route that is itself
        a source writes into the later one's buffer and its sources follow). A source
        whose output does not end up there (a batch of another size) is copied as
        before."""
        if not self.writes_out:
            return
        from ..kernels.conv import reuse
        out = self._out = reuse(getattr(self, "_out", None), (1, *self.out_shape))
        c0 = 0
        for i in self.sources:
            c = layers[i].out_shape[0]
            if layers[i].writes_out and i not in placed:
                layers[i]._out = out[:, c0:c0 + c]
                placed.add(i)
            c0 += c

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        # each source gets its slice of dy back in its group's channels (zeros in the
        # others). Route reads only its sources, so nothing flows to the previous layer
        # unless it is one of them (then it gets its share through add_grad like the rest).
        if dy is None:
            return None
        off = 0
        for i in self.sources:
            c = net.outputs[i].shape[1]
            step = c // self.groups
            part = dy[:, off:off + step]
            off += step
            if self.groups > 1:
                g = np.zeros(net.outputs[i].shape, np.float32)
                g[:, self.group_id * step:(self.group_id + 1) * step] = part
                part = g
            net.add_grad(i, part)
        return None

    def receptive(self, rf):
        return max(rf[i] for i in self.sources)

    def row(self):
        return "route " + "".join(f" {i}" for i in self.sources)


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a and b are the same values in memory (same start, shape and strides)."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides)


def place_sources(layers: list[Layer]) -> None:
    """Before a forward pass of one image: every [route] hands its sources views of its
    buffer (Route.place_sources), the last route first."""
    placed: set[int] = set()
    for layer in reversed(layers):
        if isinstance(layer, Route):
            layer.place_sources(layers, placed)
