"""One ONNX emitter per runnable section: `EMITTERS[type](ctx, layer, x) -> tensor`.

Each follows the section's inference forward in darkcfg/layers/<type>.py (which matches
Darknet layer by layer on the reference cases); the comments say which darkcfg rule the
operators reproduce. Every tensor is (N, C, H, W) float32 in Darknet's C,H,W order, N the
batch (fixed or dynamic: reshapes keep it with a 0). The detection heads' emitters are in
heads.py. A section with no emitter (or in REFUSED) is refused by `emitter_for`, naming
the layer and the reason.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .activations import activate
from .builder import Builder

if TYPE_CHECKING:
    from ..layers.base import Layer

# Darknet starts a max at -FLT_MAX (kernels/pool.py): a pool window lying wholly in the
# padding gives it, and explicit padding uses it too
FLT_MAX = float(np.finfo(np.float32).max)


@dataclass
class Context:
    """What an emitter needs besides its layer and input: the builder, every earlier
    layer's output tensor, the dialect and whether BN is folded."""
    b: Builder
    layers: list[Layer]
    dialect: str
    fuse: bool = True
    outputs: list[str] = field(default_factory=list)
    folded: int = 0                 # BN folded into a product (reported by the CLI)

    def read(self, index: int) -> str:
        return self.outputs[index]


Emitter = Callable[[Context, "Layer", str], str]
EMITTERS: dict[str, Emitter] = {}


def emits(*types: str) -> Callable[[Emitter], Emitter]:
    def register(fn: Emitter) -> Emitter:
        for t in types:
            EMITTERS[t] = fn
        return fn
    return register


# Runnable sections with no ONNX form, and why
REFUSED = {
    kind: "it carries a hidden state from one call to the next (Network.reset_state starts "
          "it again), which a stateless ONNX graph cannot hold"
    for kind in ("rnn", "gru", "lstm", "crnn")
}


def emitter_for(layer: Layer) -> Emitter:
    fn = EMITTERS.get(layer.type)
    if layer.type in REFUSED:
        raise layer.error(f"[{layer.section.written}] cannot be exported to ONNX: "
                          f"{REFUSED[layer.type]}")
    if fn is None:
        raise layer.error(f"[{layer.type}] cannot be exported to ONNX: darkcfg has no ONNX "
                          "form for this section yet (export the layers before it by "
                          "cutting the cfg there, or run it with `darkcfg run`)")
    return fn


# --- products with the BN/bias + activation tail (layers/_bn_activation.py) --------------

def _bn_factor(layer: Layer, dialect: str) -> np.ndarray:
    """scales / D per output channel, D Darknet's BN denominator (kernels/bn.py), float64."""
    from ..kernels.bn import bn_denominator
    p = layer.params
    return p["scales"].astype(np.float64) / bn_denominator(p["rolling_variance"], dialect)


def _product_params(ctx: Context, layer: Layer, axis: int) -> tuple[np.ndarray, np.ndarray,
                                                                     bool]:
    """(weights, biases, bn_left): with `fuse`, BN folded in as z * f + (biases - mean * f),
    f = scales / D, along the output-channel `axis` of the weights; otherwise the weights
    as they are, the conv biases zero when a BatchNormalization node follows."""
    p = layer.params
    w = p["weights"].astype(np.float64)
    if not layer.batch_normalize:
        return w, p["biases"].astype(np.float64), False
    if not ctx.fuse:
        return w, np.zeros(p["biases"].shape), True
    f = _bn_factor(layer, ctx.dialect)
    shape = [1] * w.ndim
    shape[axis] = -1
    ctx.folded += 1
    return w * f.reshape(shape), p["biases"] - p["rolling_mean"].astype(np.float64) * f, False


def batch_norm(ctx: Context, x: str, params: dict[str, np.ndarray]) -> str:
    """A BatchNormalization node computing Darknet's inference BN (kernels/bn.py):
    alexeyab's (x - mean) / sqrt(var + 1e-5) is ONNX's with epsilon 1e-5; pjreddie's
    (x - mean) / (sqrt(var) + 1e-6) is ONNX's with variance (sqrt(var) + 1e-6)^2 and
    epsilon 0."""
    b = ctx.b
    var = params["rolling_variance"].astype(np.float64)
    eps = 1e-5
    if ctx.dialect == "pjreddie":
        from ..kernels.bn import bn_denominator
        var, eps = bn_denominator(params["rolling_variance"], "pjreddie") ** 2, 0.0
    n = params["scales"].size
    biases = params.get("biases", np.zeros(n, np.float32))
    return b.op("BatchNormalization", [x, b.const(params["scales"], "scales"),
                                       b.const(biases, "biases"),
                                       b.const(params["rolling_mean"], "rolling_mean"),
                                       b.const(var, "rolling_variance")], epsilon=eps)


def _tail(ctx: Context, layer: Layer, y: str, bn_left: bool) -> str:
    if bn_left:
        y = batch_norm(ctx, y, layer.params)
    return activate(ctx.b, y, layer.activation)


@emits("convolutional")
def convolutional(ctx: Context, layer: Layer, x: str) -> str:
    # layers/convolutional.py: padding pad*dilation on every side, per-axis strides,
    # groups; the output size is the ordinary floor rule, so Conv computes it (darkcfg
    # also computes a strided 1x1 conv with padding as a conv: README, "Deliberate
    # differences from Darknet")
    b = ctx.b
    w, bias, bn_left = _product_params(ctx, layer, 0)
    p = layer.pad * layer.dilation
    y = b.op("Conv", [x, b.const(w, "weights"), b.const(bias, "biases")],
             kernel_shape=[layer.size, layer.size], strides=[layer.stride_y, layer.stride_x],
             pads=[p, p, p, p], dilations=[layer.dilation, layer.dilation],
             group=layer.groups)
    return _tail(ctx, layer, y, bn_left)


@emits("deconvolutional")
def deconvolutional(ctx: Context, layer: Layer, x: str) -> str:
    # Darknet P's W^T x then col2im is ConvTranspose: weights (c, n, k, k), output
    # (h - 1) * stride + size - 2 * pad
    b = ctx.b
    w, bias, bn_left = _product_params(ctx, layer, 1)
    p = layer.pad
    y = b.op("ConvTranspose", [x, b.const(w, "weights"), b.const(bias, "biases")],
             kernel_shape=[layer.size, layer.size], strides=[layer.stride, layer.stride],
             pads=[p, p, p, p])
    return _tail(ctx, layer, y, bn_left)


@emits("connected")
def connected(ctx: Context, layer: Layer, x: str) -> str:
    # the input flattened in C,H,W order, times weights (n, inputs)^T; out (N, n, 1, 1)
    b = ctx.b
    w, bias, bn_left = _product_params(ctx, layer, 0)
    flat = b.op("Flatten", [x], axis=1)
    y = b.op("Gemm", [flat, b.const(w, "weights"), b.const(bias, "biases")], transB=1)
    y = b.reshape(y, [0, layer.n, 1, 1])
    return _tail(ctx, layer, y, bn_left)


@emits("local")
def local(ctx: Context, layer: Layer, x: str) -> str:
    # kernels/local.py: location j's patch (c, ky, kx) times its own filters. The patches
    # come from a Conv whose one-hot filters copy each patch element to a channel (exact:
    # products by 1 and sums of zeros), then one MatMul per location (batched over L).
    b = ctx.b
    c, k = layer.in_shape[0], layer.opts["size"]
    s, pad = layer.opts["stride"], layer.opts["pad"]
    n, oh, ow = layer.out_shape
    ckk, locs = c * k * k, oh * ow
    pick = np.zeros((ckk, c, k, k), np.float32)
    pick.reshape(ckk, ckk)[...] = np.eye(ckk)        # channel (ci, ky, kx) <- x[ci, ky, kx]
    patches = b.op("Conv", [x, b.const(pick, "patch_picker")], kernel_shape=[k, k],
                   strides=[s, s], pads=[pad] * 4)
    cols = b.op("Transpose", [b.reshape(patches, [0, ckk, locs])], perm=[2, 0, 1])
    w = layer.params["weights"].reshape(locs, n, ckk).transpose(0, 2, 1)   # (L, ckk, n)
    prod = b.op("MatMul", [cols, b.const(w, "weights")])                  # (L, N, n)
    y = b.reshape(b.op("Transpose", [prod], perm=[1, 2, 0]), [0, n, oh, ow])
    y = b.op("Add", [y, b.const(layer.params["biases"].reshape(1, n, oh, ow), "biases")])
    return activate(b, y, layer.activation)


@emits("batchnorm")
def batchnorm(ctx: Context, layer: Layer, x: str) -> str:
    # P's file has no biases (zeros are added); A's has them (layers/batchnorm.py)
    return batch_norm(ctx, x, layer.params)


# --- pooling (kernels/pool.py) -------------------------------------------------------------

def _pool_pads(layer: Layer) -> list[int]:
    """ONNX pads (top, left, bottom, right) for Darknet's window rule: output (i, j) starts
    at (i*stride_y - padding//2, j*stride_x - padding//2); the end pads are what the last
    window needs (0 where it stops inside the image)."""
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    off = layer.padding // 2
    bottom = max(0, (oh - 1) * layer.stride_y + layer.size - h - off)
    right = max(0, (ow - 1) * layer.stride_x + layer.size - w - off)
    return [off, off, bottom, right]


def _padded(b: Builder, x: str, pads: list[int], value: float) -> str:
    top, left, bottom, right = pads
    onnx_pads = [0, 0, top, left, 0, 0, bottom, right]
    return b.op("Pad", [x, b.ints(onnx_pads, "pads"), b.const(np.float32(value), "value")],
                mode="constant")


@emits("maxpool")
def maxpool(ctx: Context, layer: Layer, x: str) -> str:
    b = ctx.b
    if layer.opts["maxpool_depth"]:
        return _maxpool_depth(b, layer, x)
    pads = _pool_pads(layer)
    kw = {"kernel_shape": [layer.size] * 2, "strides": [layer.stride_y, layer.stride_x]}
    if max(pads) < layer.size:
        # MaxPool's padding never wins, and a window always holds an image cell
        return b.op("MaxPool", [x], pads=pads, **kw)
    # padding as large as the window (onnxruntime refuses such pads): -FLT_MAX cells, as
    # Darknet's start value for a window wholly outside the image
    return b.op("MaxPool", [_padded(b, x, pads, -FLT_MAX)], **kw)


def _maxpool_depth(b: Builder, layer: Layer, x: str) -> str:
    # output channel g is the max over input channels g, g + out_c, g + 2 out_c, ...
    # (kernels/pool.py: _maxpool_depth): channels padded with -FLT_MAX to a multiple of
    # out_c, viewed (N, groups, out_c, H, W), the max over the groups
    c, h, w = layer.in_shape
    out_c = layer.out_shape[0]
    groups = -(-c // out_c)
    if groups * out_c != c:
        pads = [0, 0, 0, 0, 0, groups * out_c - c, 0, 0]
        x = b.op("Pad", [x, b.ints(pads, "pads"), b.const(np.float32(-FLT_MAX), "value")])
    return b.reduce("ReduceMax", b.reshape(x, [0, groups, out_c, h, w]), [1],
                    keepdims=False)


@emits("local_avgpool")
def local_avgpool(ctx: Context, layer: Layer, x: str) -> str:
    # the mean over the window's in-image cells: AveragePool without counting the pads
    b = ctx.b
    pads = _pool_pads(layer)
    kw = {"kernel_shape": [layer.size] * 2, "strides": [layer.stride_y, layer.stride_x]}
    if max(pads) < layer.size:
        return b.op("AveragePool", [x], pads=pads, count_include_pad=0, **kw)
    # padding as large as the window: the window sums (zero padding) over the counts of
    # in-image cells, computed here (0 for a window outside the image: 0/0, as darkcfg)
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    inside = np.pad(np.ones((h, w)), ((pads[0], pads[2]), (pads[1], pads[3])))
    k, sy, sx = layer.size, layer.stride_y, layer.stride_x
    count = np.array([[inside[i * sy:i * sy + k, j * sx:j * sx + k].sum()
                       for j in range(ow)] for i in range(oh)])
    with np.errstate(divide="ignore"):
        ratio = (k * k) / count
    mean = b.op("AveragePool", [_padded(b, x, pads, 0.0)], count_include_pad=1, **kw)
    return b.op("Mul", [mean, b.const(ratio.reshape(1, 1, oh, ow), "window_ratio")])


@emits("avgpool")
def avgpool(ctx: Context, layer: Layer, x: str) -> str:
    return ctx.b.op("GlobalAveragePool", [x])


# --- element-wise and shape sections ---------------------------------------------------------

@emits("activation")
def activation(ctx: Context, layer: Layer, x: str) -> str:
    return activate(ctx.b, x, layer.activation)


@emits("logistic")
def logistic(ctx: Context, layer: Layer, x: str) -> str:
    return ctx.b.op("Sigmoid", [x])


@emits("dropout", "empty", "contrastive")
def identity(ctx: Context, layer: Layer, x: str) -> str:
    # identity at inference (dropout's training mask, contrastive's loss are training only)
    return x


@emits("cost")
def cost(ctx: Context, layer: Layer, x: str) -> str:
    # at inference a [cost] outputs zeros (reference case `dropout_cost`)
    from onnx import TensorProto, helper
    value = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0])
    return ctx.b.op("ConstantOfShape", [ctx.b.op("Shape", [x])], value=value)


@emits("softmax")
def softmax(ctx: Context, layer: Layer, x: str) -> str:
    # a softmax over each of `groups` contiguous chunks of the flat C,H,W values, logits
    # divided by the temperature (kernels/softmax.py: softmax_groups)
    b = ctx.b
    z = b.reshape(x, [0, layer.groups, -1])
    if layer.temperature != 1:
        z = b.op("Div", [z, b.const(np.float32(layer.temperature), "temperature")])
    return b.reshape(b.op("Softmax", [z], axis=2), [0, *layer.out_shape])


@emits("l2norm")
def l2norm(ctx: Context, layer: Layer, x: str) -> str:
    # each pixel's channel vector over its L2 norm (no epsilon, as Darknet)
    b = ctx.b
    norm = b.op("Sqrt", [b.reduce("ReduceSum", b.op("Mul", [x, x]), [1])])
    return b.op("Div", [x, norm])


@emits("normalization")
def normalization(ctx: Context, layer: Layer, x: str) -> str:
    # x / (kappa + alpha * S)^beta per channel k (kernels/normalize.py: _lrn). Darknet's
    # running window never adds channel size//2 but does subtract it when it slides past,
    # so S is the sum of x^2 over channels k - (size-1)//2 .. k + size//2 minus x^2 of
    # channel size//2 (while it exists). That band is a 1x1 Conv of x^2.
    b = ctx.b
    o = layer.opts
    c = layer.in_shape[0]
    lo, hi = (o["size"] - 1) // 2, o["size"] // 2
    band = np.zeros((c, c))
    for k in range(c):
        band[k, max(0, k - lo):min(c, k + hi + 1)] = o["alpha"]
    if hi < c:
        band[:, hi] -= o["alpha"]
    sums = b.op("Conv", [b.op("Mul", [x, x]), b.const(band.reshape(c, c, 1, 1), "window")],
                kernel_shape=[1, 1])
    norm = b.scale_shift(sums, 1.0, o["kappa"])
    return b.op("Mul", [x, b.op("Pow", [norm, b.const(np.float32(-o["beta"]), "beta")])])


@emits("route")
def route(ctx: Context, layer: Layer, x: str) -> str:
    # channel slice `group_id` of every source, concatenated in the listed order
    b = ctx.b
    parts = []
    for i in layer.sources:
        src = ctx.read(i)
        if layer.groups > 1:
            step = ctx.layers[i].out_shape[0] // layer.groups
            src = b.slice(src, 1, layer.group_id * step, (layer.group_id + 1) * step)
        parts.append(src)
    return parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=1)


@emits("upsample")
def upsample(ctx: Context, layer: Layer, x: str) -> str:
    b = ctx.b
    s = layer.stride
    c, h, w = layer.in_shape
    if s > 0:       # nearest neighbour: output (j, i) reads (j // s, i // s), times scale
        scales = b.const(np.array([1, 1, s, s], np.float32), "scales")
        y = b.op("Resize", [x, "", scales], mode="nearest",
                 coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:           # the sum of each -s x -s block, times scale
        s = -s
        y = b.reduce("ReduceSum", b.reshape(x, [0, c, h // s, s, w // s, s]), [3, 5],
                     keepdims=False)
    return b.scale_shift(y, layer.scale)


def reorg_permutation(b: Builder, x: str, dims: tuple[int, int, int], s: int,
                      forward: bool, out_shape: tuple[int, ...]) -> str:
    """Darknet's reorg_cpu permutation (kernels/reorg.py) over dims (w, h, c) of the flat
    per-sample buffer, as a reshape, a transpose and a reshape. With C' = c / s^2 the
    backward direction reads the input as (C', h, s, w, s) and writes it as
    (s, s, C', h, w); forward is the inverse."""
    w, h, c = dims
    cq = c // (s * s)
    if forward:
        y = b.op("Transpose", [b.reshape(x, [0, s, s, cq, h, w])], perm=[0, 3, 4, 1, 5, 2])
    else:
        y = b.op("Transpose", [b.reshape(x, [0, cq, h, s, w, s])], perm=[0, 3, 5, 1, 2, 4])
    return b.reshape(y, [0, *out_shape])


@emits("reorg", "reorg3d")
def reorg(ctx: Context, layer: Layer, x: str) -> str:
    c, h, w = layer.in_shape
    s = layer.stride
    if layer.type == "reorg":
        # P's permutation called with the input dims, backward unless reversed
        return reorg_permutation(ctx.b, x, (w, h, c), s, layer.reverse, layer.out_shape)
    if layer.reverse:           # AH depth-to-space: the permutation forward, input dims
        return reorg_permutation(ctx.b, x, (w, h, c), s, True, layer.out_shape)
    # AH space-to-depth: backward with the output dims
    return reorg_permutation(ctx.b, x, (w // s, h // s, c * s * s), s, False,
                             layer.out_shape)


@emits("crop")
def crop(ctx: Context, layer: Layer, x: str) -> str:
    # inference: the centre window, then 2x - 1 unless noadjust
    b = ctx.b
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    top, left = (h - oh) // 2, (w - ow) // 2
    y = b.slice(b.slice(x, 2, top, top + oh), 3, left, left + ow)
    return y if layer.opts["noadjust"] else b.scale_shift(y, 2.0, -1.0)


@emits("scale_channels", "sam")
def product(ctx: Context, layer: Layer, x: str) -> str:
    # the `from` map times the previous layer (broadcast), then the activation
    y = ctx.b.op("Mul", [ctx.read(layer.sources[0]), x])
    return activate(ctx.b, y, layer.activation)


@emits("implicit")
def implicit(ctx: Context, layer: Layer, x: str) -> str:
    # the weights (filters, atoms, 1) for every image; x only gives the batch
    b = ctx.b
    w = b.const(layer.params["weights"][None], "weights")
    return b.op("Expand", [w, b.batch_like(x, list(layer.out_shape))])


@emits("triplet")
def triplet(ctx: Context, layer: Layer, x: str) -> str:
    # the flat embedding, over its L2 norm (at least NORM_EPS) with normalize=1
    if not layer.opts["normalize"]:
        return x
    from ..layers._metric import NORM_EPS
    b = ctx.b
    flat = b.op("Flatten", [x], axis=1)
    norm = b.op("Sqrt", [b.reduce("ReduceSum", b.op("Mul", [flat, flat]), [1])])
    norm = b.op("Max", [norm, b.const(np.float32(NORM_EPS), "eps")])
    return b.reshape(b.op("Div", [flat, norm]), [0, *layer.out_shape])


# --- [shortcut] (layers/shortcut.py, kernels/shortcut.py) -------------------------------------

@emits("shortcut")
def shortcut(ctx: Context, layer: Layer, x: str) -> str:
    if layer.wshape:
        y = _shortcut_flat(ctx, layer, x, weighted=True)
    elif len(layer.sources) > 1:
        y = _shortcut_flat(ctx, layer, x, weighted=False)
    else:
        y = _shortcut_mix(ctx, layer, x)
    return activate(ctx.b, y, layer.activation)


def _shortcut_mix(ctx: Context, layer: Layer, x: str) -> str:
    # P: alpha*x + beta*from over the overlapping channels; a larger `from` read every
    # stride-th cell, a smaller one added at every sample-th cell of x (the other cells
    # keep x, unscaled); channels of x beyond the overlap pass unscaled
    b = ctx.b
    alpha, beta = layer.opts["alpha"], layer.opts["beta"]
    src = layer.sources[0]
    add = ctx.read(src)
    c, h, w = layer.in_shape
    ca, ha, wa = ctx.layers[src].out_shape
    minc = min(c, ca)
    stride, sample = max(1, wa // w), max(1, w // wa)
    xa = x if minc == c else b.slice(x, 1, 0, minc)
    if minc != ca:
        add = b.slice(add, 1, 0, minc)
    if stride > 1:
        add = b.slice(b.slice(add, 2, 0, ha, stride), 3, 0, wa, stride)
    if sample > 1:
        # onto every sample-th cell: x + grid * ((alpha - 1) x + beta * nearest(add))
        scales = b.const(np.array([1, 1, sample, sample], np.float32), "scales")
        up = b.op("Resize", [add, "", scales], mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        grid = np.zeros((1, 1, h, w), np.float32)
        grid[..., ::sample, ::sample] = 1
        change = b.op("Add", [b.scale_shift(xa, alpha - 1.0), b.scale_shift(up, beta)])
        mixed = b.op("Add", [xa, b.op("Mul", [change, b.const(grid, "grid")])])
    else:
        mixed = b.op("Add", [b.scale_shift(xa, alpha), b.scale_shift(add, beta)])
    if minc == c:
        return mixed
    return b.op("Concat", [mixed, b.slice(x, 1, minc, c)], axis=1)


def _shortcut_flat(ctx: Context, layer: Layer, x: str, weighted: bool) -> str:
    # AH: on the flat per-sample buffers, input j adds to the first min(sizes) values;
    # with fusion weights each input is first scaled per output channel by its normalised
    # weight (kernels/shortcut.py: shortcut_weighted, normalize_fusion)
    b = ctx.b
    c, h, w = layer.in_shape
    size = c * h * w
    flat = b.op("Flatten", [x], axis=1)
    per_flat = None
    if weighted:
        from ..kernels.shortcut import normalize_fusion
        wn = normalize_fusion(layer.params["weights"].reshape(layer.wshape),
                              layer.normalization)
        per_flat = np.repeat(np.broadcast_to(wn, (len(wn), c)), h * w, axis=1)
        flat = b.op("Mul", [flat, b.const(per_flat[0], "fusion")])
    for j, i in enumerate(layer.sources, start=1):
        m = min(size, int(np.prod(ctx.layers[i].out_shape)))
        add = b.op("Flatten", [ctx.read(i)], axis=1)
        if m < int(np.prod(ctx.layers[i].out_shape)):
            add = b.slice(add, 1, 0, m)
        if per_flat is not None:
            add = b.op("Mul", [add, b.const(per_flat[j, :m], "fusion")])
        if m == size:
            flat = b.op("Add", [flat, add])
        else:
            head = b.op("Add", [b.slice(flat, 1, 0, m), add])
            flat = b.op("Concat", [head, b.slice(flat, 1, m, size)], axis=1)
    return b.reshape(flat, [0, c, h, w])
