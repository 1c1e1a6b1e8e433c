"""The ONNX graph under construction: nodes, constants and names, with the few operators
whose signature changed between opsets spelled out once.

Tensor and node names: every node of layer i is named `<i>_<section>/<Op>` (a counter
added where an operator repeats), and the node that makes the layer's output is renamed
`<i>_<section>` with its output tensor (`finish_layer`): Netron and onnxruntime's
profiler then show darkcfg's layer numbers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

# The oldest opset darkcfg writes: Softmax over one axis and ReduceSum/Split/Squeeze with
# their axes as inputs came in opset 13; older ones would need other spellings.
MIN_OPSET = 13
# Widely read (onnxruntime, OpenCV 4.8+, TensorRT 8.6+) and expresses every section.
DEFAULT_OPSET = 17
# ReduceMax, ReduceMean, ReduceSumSquare took their axes as an input from opset 18 on
REDUCE_AXES_INPUT = {"ReduceSum": 13}


class Builder:
    """Collects nodes and initializers; `op` adds one node and returns its output."""

    def __init__(self, opset: int):
        from onnx import helper
        self.helper = helper
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.prefix = "graph"
        self._used: set[str] = set()
        self._start = 0                     # the first node of the current layer

    # --- names ----------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        if name not in self._used:
            self._used.add(name)
            return name
        k = 1
        while f"{name}_{k}" in self._used:
            k += 1
        self._used.add(f"{name}_{k}")
        return f"{name}_{k}"

    def start_layer(self, prefix: str) -> None:
        self.prefix = prefix
        self._start = len(self.nodes)

    def finish_layer(self, out: str) -> str:
        """Name the layer's output `prefix` (its last node too); a layer that made no node
        for its output (an identity) gets an Identity node."""
        mine = self.nodes[self._start:]
        maker = next((n for n in reversed(mine) if out in n.output), None)
        if maker is None:
            return self.op("Identity", [out], out_name=self.prefix)
        self._used.add(self.prefix)
        maker.name = self.prefix
        maker.output[list(maker.output).index(out)] = self.prefix
        for node in mine:               # later nodes of this layer reading it
            for k, name in enumerate(node.input):
                if name == out and node is not maker:
                    node.input[k] = self.prefix
        return self.prefix

    # --- building ---------------------------------------------------------------------------
    def op(self, op_type: str, inputs: list[str], out_name: str | None = None,
           **attrs: Any) -> str:
        name = self._unique(out_name or f"{self.prefix}/{op_type}")
        self.nodes.append(self.helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def const(self, array: np.ndarray | float | int | list, name: str = "const",
              dtype: type | None = None) -> str:
        """An initializer holding `array` (float32 unless it is integer or `dtype` says)."""
        from onnx import numpy_helper
        a = np.asarray(array)
        if dtype is not None:
            a = a.astype(dtype)
        elif a.dtype.kind in "iu":
            a = a.astype(np.int64)
        elif a.dtype.kind == "b":
            pass
        else:
            a = a.astype(np.float32)
        full = self._unique(f"{self.prefix}/{name}")
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(a), full))
        return full

    def ints(self, values: list[int] | tuple[int, ...], name: str = "shape") -> str:
        return self.const(np.array(values, np.int64), name)

    # --- operators whose signature depends on the opset ---------------------------------------
    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: bool = True) -> str:
        if self.opset >= REDUCE_AXES_INPUT.get(op_type, 18):
            return self.op(op_type, [x, self.ints(axes, "axes")], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=list(axes), keepdims=int(keepdims))

    def slice(self, x: str, axis: int, start: int, end: int, step: int = 1) -> str:
        return self.op("Slice", [x, self.ints([start], "starts"), self.ints([end], "ends"),
                                 self.ints([axis], "axes"), self.ints([step], "steps")])

    def reshape(self, x: str, shape: list[int] | tuple[int, ...]) -> str:
        """Reshape to `shape`; a 0 keeps that dimension (the batch, which may be dynamic)."""
        return self.op("Reshape", [x, self.ints(list(shape))])

    def scale_shift(self, x: str, scale: float, shift: float = 0.0) -> str:
        """x * scale + shift in float32, leaving out a multiply by 1 or an add of 0."""
        if np.float32(scale) != 1:
            x = self.op("Mul", [x, self.const(np.float32(scale), "scale")])
        if np.float32(shift) != 0:
            x = self.op("Add", [x, self.const(np.float32(shift), "shift")])
        return x

    def batch_like(self, x: str, dims: list[int]) -> str:
        """The int64 shape [N, *dims], N the batch of x (static or dynamic)."""
        n = self.slice(self.op("Shape", [x]), 0, 0, 1)
        return self.op("Concat", [n, self.ints(dims, "dims")], axis=0)
