#!/usr/bin/env python3
"""The same network in PyTorch, built from a darkcfg `Network` (cfg + loaded weights).

For benchmarks and parity tests only: darkcfg itself never imports torch. Supported:
[convolutional] (groups, dilation, per-axis stride, BN), [connected] (BN), every activation
of darkcfg/activations.py (the normalize_channels* ones across the channels of a pixel),
[maxpool] with Darknet's padding (window start i*stride - padding//2, so AH's stride-1 SPP
pools too), [avgpool], [route] (AH groups/group_id), [shortcut] (P's alpha/beta mix of
one `from`, AH's flat sum of several, AH's fusion weights_type/weights_normalization),
[scale_channels] (SE; scale_wh), [sam], [implicit], [activation], [upsample], [dropout],
[softmax] (groups, temperature), [yolo] (the layer's output as darkcfg's forward returns
it: logistic on x, y, objectness and classes unless new_coords, then scale_x_y).
Anything else raises NotImplementedError naming the layer.

`TorchNet(net, heads=[indices])` returns those layers' outputs as a tuple: tools/bench.py
passes every detection head (`bench.head_indices`), which is what it times and exports to
ONNX (a single output would let an exporter drop the other heads' branches).

BN at inference divides by Darknet's denominator: pjreddie `sqrt(var) + 1e-6` becomes a
BatchNorm with eps=0 and running_var = (sqrt(var) + 1e-6)^2; alexeyab's `sqrt(var +
1e-5)` is BatchNorm's own. With train=True the BatchNorms use PyTorch's eps 1e-5.

usage: python tools/torch_from_cfg.py CFG [WEIGHTS] [--size N]  (prints max rel error)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _leaky(x):
    return F.leaky_relu(x, 0.1)


def _stair(x):
    # src/activations.h: stair_activate; an odd floor is any non-zero remainder
    n = torch.floor(x)
    half = torch.floor(x / 2)
    return torch.where(torch.remainder(n, 2) == 0, half, (x - n) + half)


def _plse(x):
    return torch.where(x < -4, 0.01 * (x + 4), torch.where(x > 4, 0.01 * (x - 4) + 1,
                                                           0.125 * x + 0.5))


def _lhtan(x):
    return torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x))


def _hard_mish(x):
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


def _norm_channels(x):
    # AH activate_array_normalize_channels: per pixel, the positive values over their sum
    r = F.relu(x)
    return r / (1e-4 + r.sum(1, keepdim=True))


def _norm_channels_softmax(x, maxval: bool = False):
    if maxval:
        x = x - x.amax(1, keepdim=True)
    e = torch.exp(x)
    return e / (1e-4 + e.sum(1, keepdim=True))


ACTIVATIONS = {
    "linear": None,
    "leaky": _leaky,
    "revleaky": _leaky,         # darkcfg (and Darknet's CPU code) treat it as leaky
    "relu": F.relu,
    "relie": lambda x: F.leaky_relu(x, 0.01),
    "ramp": lambda x: F.relu(x) + 0.1 * x,
    "logistic": torch.sigmoid,
    "loggy": lambda x: torch.tanh(x / 2),
    "tanh": torch.tanh,
    "plse": _plse,
    "stair": _stair,
    "hardtan": lambda x: torch.clamp(x, -1, 1),
    "lhtan": _lhtan,
    "relu6": F.relu6,
    "elu": F.elu,
    "selu": lambda x: torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * torch.expm1(x)),
    "mish": F.mish,
    "hard_mish": _hard_mish,
    "swish": F.silu,
    "gelu": lambda x: F.gelu(x, approximate="tanh"),
    "normalize_channels": _norm_channels,
    "normalize_channels_softmax": _norm_channels_softmax,
    "normalize_channels_softmax_maxval": lambda x: _norm_channels_softmax(x, True),
}


def _act(name: str, layer) -> object:
    if name not in ACTIVATIONS:
        raise NotImplementedError(f"layer {layer.index}: activation '{name}' has no PyTorch "
                                  "counterpart in torch_from_cfg")
    return ACTIVATIONS[name]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


class _Node(nn.Module):
    """One darkcfg layer: reads the previous output and (for route/shortcut) `sources`."""

    def __init__(self, layer, net, train: bool):
        super().__init__()
        self.index = layer.index
        self.kind = layer.type
        self.sources = list(getattr(layer, "sources", []))
        self.act = None
        self.body: nn.Module | None = None
        build = getattr(self, "_build_" + layer.type, None)
        if build is None:
            raise NotImplementedError(f"layer {layer.index} [{layer.type}] is not supported "
                                      "by torch_from_cfg")
        build(layer, net, train)

    # --- builders -------------------------------------------------------------------------
    def _bn(self, layer, net, train: bool, dims: int) -> nn.Module:
        p = layer.params
        n = p["scales"].size
        var = p["rolling_variance"].astype(np.float64)
        if train or net.graph.net.dialect == "alexeyab":
            eps = 1e-5
        else:       # pjreddie: x / (sqrt(var) + 1e-6) == x / sqrt(var' + 0)
            var, eps = (np.sqrt(var) + np.float32(1e-6)) ** 2, 0.0
        bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(n, eps=eps, momentum=0.01)
        with torch.no_grad():
            bn.weight.copy_(_t(p["scales"]))
            bn.bias.copy_(_t(p["biases"]))
            bn.running_mean.copy_(_t(p["rolling_mean"]))
            bn.running_var.copy_(_t(var))
        return bn

    def _build_convolutional(self, layer, net, train):
        c = layer.in_shape[0]
        bn = layer.batch_normalize
        conv = nn.Conv2d(c, layer.n, layer.size, stride=(layer.stride_y, layer.stride_x),
                         padding=layer.pad * layer.dilation, dilation=layer.dilation,
                         groups=layer.groups, bias=not bn)
        with torch.no_grad():
            conv.weight.copy_(_t(layer.params["weights"]))
            if not bn:
                conv.bias.copy_(_t(layer.params["biases"]))
        self.body = nn.Sequential(conv, self._bn(layer, net, train, 2)) if bn else conv
        self.act = _act(layer.activation, layer)

    def _build_connected(self, layer, net, train):
        bn = layer.batch_normalize
        fc = nn.Linear(int(np.prod(layer.in_shape)), layer.n, bias=not bn)
        with torch.no_grad():
            fc.weight.copy_(_t(layer.params["weights"]))
            if not bn:
                fc.bias.copy_(_t(layer.params["biases"]))
        self.body = nn.Sequential(nn.Flatten(), fc, *([self._bn(layer, net, train, 1)]
                                                       if bn else []))
        self.act = _act(layer.activation, layer)

    def _build_maxpool(self, layer, net, train):
        if layer.opts["maxpool_depth"]:
            raise NotImplementedError(f"layer {layer.index}: maxpool_depth")
        _, h, w = layer.in_shape
        _, oh, ow = layer.out_shape
        off = layer.padding // 2
        bottom = (oh - 1) * layer.stride_y + layer.size - h - off
        right = (ow - 1) * layer.stride_x + layer.size - w - off
        self.pad = (off, right, off, bottom)
        self.pool = (layer.size, (layer.stride_y, layer.stride_x))

    def _build_avgpool(self, layer, net, train):
        pass

    def _build_route(self, layer, net, train):
        self.groups, self.group_id = layer.groups, layer.group_id

    def _build_shortcut(self, layer, net, train):
        self.act = _act(layer.activation, layer)
        self.alpha, self.beta = layer.opts["alpha"], layer.opts["beta"]
        c, h, w = layer.in_shape
        if len(self.sources) == 1 and not layer.nweights:
            # P's mix: over the overlapping channels, a larger `from` read every stride-th
            # cell, a smaller one added on every sample-th cell of x (kernels/shortcut.py)
            ca, _, wa = net.layers[self.sources[0]].out_shape
            self.mix = (min(c, ca), max(1, wa // w), max(1, w // wa), c == ca and wa == w)
            self.all_channels = ca >= c
            grid = np.zeros((1, 1, h, w), np.float32)
            grid[..., ::self.mix[2], ::self.mix[2]] = 1
            self.register_buffer("grid", _t(grid))
            return
        # AH (shortcut_multilayer_cpu): per sample, on the flat C*H*W buffers, input j
        # adds to the first min(sizes) values; with fusion weights each input is scaled
        # per output channel by its normalised weight (kernels/shortcut.py)
        self.mix = None
        size = c * h * w
        self.spans = [min(size, int(np.prod(net.layers[i].out_shape))) for i in self.sources]
        self.fused = bool(layer.nweights)
        if self.fused:
            from darkcfg.kernels.shortcut import normalize_fusion
            wn = normalize_fusion(layer.params["weights"].reshape(layer.wshape),
                                  layer.normalization)
            per_flat = np.repeat(np.broadcast_to(wn, (len(wn), c)), h * w, axis=1)
            for j in range(len(wn)):
                m = size if j == 0 else self.spans[j - 1]
                self.register_buffer(f"fusion{j}", _t(per_flat[j, :m]))

    def _build_scale_channels(self, layer, net, train):
        self.act = _act(layer.activation, layer)    # from-map x broadcast factors

    def _build_sam(self, layer, net, train):
        self.act = _act(layer.activation, layer)    # from-map x previous, element-wise

    def _build_activation(self, layer, net, train):
        self.act = _act(layer.activation, layer)

    def _build_implicit(self, layer, net, train):
        w = _t(layer.params["weights"])[None]
        if train:
            self.constant = nn.Parameter(w)
        else:
            self.register_buffer("constant", w)

    def _build_upsample(self, layer, net, train):
        if layer.stride <= 0:
            raise NotImplementedError(f"layer {layer.index}: upsample with negative stride")
        self.stride, self.scale = layer.stride, layer.scale

    def _build_dropout(self, layer, net, train):
        self.body = nn.Dropout(layer.probability)

    def _build_softmax(self, layer, net, train):
        self.groups, self.temperature = layer.groups, layer.temperature

    def _build_yolo(self, layer, net, train):
        self.anchors = len(layer.mask)
        self.new_coords = layer.opts["new_coords"]
        self.scale_x_y = layer.opts["scale_x_y"]

    # --- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
        k = self.kind
        if k in ("convolutional", "connected", "dropout"):
            y = self.body(x)
            if k == "connected":
                y = y.reshape(y.shape[0], -1, 1, 1)
        elif k == "maxpool":
            if any(self.pad):
                x = F.pad(x, self.pad, value=float("-inf"))
            y = F.max_pool2d(x, self.pool[0], self.pool[1])
        elif k == "avgpool":
            y = x.mean(dim=(2, 3), keepdim=True)
        elif k == "route":
            parts = []
            for i in self.sources:
                s = outs[i]
                step = s.shape[1] // self.groups
                parts.append(s[:, self.group_id * step:(self.group_id + 1) * step])
            y = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        elif k == "shortcut" and self.mix is None:
            y = self._flat_sum(x, outs)
        elif k == "shortcut":
            a, b, add = self.alpha, self.beta, outs[self.sources[0]]
            minc, stride, sample, same = self.mix
            if same:
                y = (x if a == 1 else a * x) + (add if b == 1 else b * add)
            else:
                # out of place (an in-place write into a view is lost in an ONNX export)
                xa, add = x[:, :minc], add[:, :minc, ::stride, ::stride]
                if sample > 1:      # x's every sample-th cell gets the smaller map
                    add = F.interpolate(add, scale_factor=sample, mode="nearest")
                    mixed = xa + self.grid * ((a - 1) * xa + b * add)
                else:
                    mixed = a * xa + b * add
                y = mixed if self.all_channels else torch.cat([mixed, x[:, minc:]], 1)
        elif k == "activation":
            y = x
        elif k in ("scale_channels", "sam"):
            y = outs[self.sources[0]] * x
        elif k == "implicit":
            y = self.constant.expand(x.shape[0], -1, -1, -1)
        elif k == "upsample":
            y = F.interpolate(x, scale_factor=self.stride, mode="nearest")
            if self.scale != 1:
                y = y * self.scale
        elif k == "softmax":
            n = x.shape[0]
            z = x.reshape(n, self.groups, -1)
            if self.temperature != 1:
                z = z / self.temperature
            y = torch.softmax(z, -1).reshape(x.shape)
        else:                                     # yolo
            n, c, h, w = x.shape
            z = x.reshape(n, self.anchors, c // self.anchors, h, w)
            if not self.new_coords:
                z = torch.cat([torch.sigmoid(z[:, :, :2]), z[:, :, 2:4],
                               torch.sigmoid(z[:, :, 4:])], 2)
            if self.scale_x_y != 1:
                s = self.scale_x_y
                z = torch.cat([z[:, :, :2] * s - 0.5 * (s - 1), z[:, :, 2:]], 2)
            y = z.reshape(x.shape)
        if self.act is not None:
            y = self.act(y)
        return y


    def _flat_sum(self, x: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        flat = x.reshape(n, -1)
        if self.fused:
            flat = flat * self.fusion0
        for j, (i, m) in enumerate(zip(self.sources, self.spans)):
            add = outs[i].reshape(n, -1)[:, :m]
            if self.fused:
                add = add * getattr(self, f"fusion{j + 1}")
            if m == flat.shape[1]:
                flat = flat + add
            else:           # out of place, so that the ONNX export sees plain ops
                flat = torch.cat([flat[:, :m] + add, flat[:, m:]], 1)
        return flat.reshape(x.shape)


class TorchNet(nn.Module):
    """forward(x) -> the network output (the last layer's, as darkcfg's `forward`), or the
    outputs of the layers `heads` as a tuple; forward(x, every=True) -> every layer's
    output."""

    def __init__(self, net, train: bool = False, heads: list[int] | None = None):
        super().__init__()
        self.nodes = nn.ModuleList(_Node(layer, net, train) for layer in net.layers)
        self.output_index = net.output_index
        self.heads = list(heads) if heads else None
        # outputs that a later route/shortcut reads, so the rest can be freed
        self.keep = {i for node in self.nodes for i in node.sources} | \
            {self.output_index, *(self.heads or [])}

    def forward(self, x: torch.Tensor, every: bool = False):
        outs: list[torch.Tensor | None] = []
        for node in self.nodes:
            x = node(x, outs)
            outs.append(x if (every or node.index in self.keep) else None)
        if every:
            return outs
        if self.heads:
            return tuple(outs[i] for i in self.heads)
        return outs[self.output_index]


def from_network(net, train: bool = False, heads: list[int] | None = None) -> TorchNet:
    """A TorchNet holding copies of `net`'s parameters (eval mode unless train)."""
    model = TorchNet(net, train, heads)
    return model.train() if train else model.eval()


def main() -> None:
    import argparse

    from darkcfg.network import Network
    ap = argparse.ArgumentParser(description="compare darkcfg and PyTorch on one input")
    ap.add_argument("cfg")
    ap.add_argument("weights", nargs="?")
    ap.add_argument("--size", type=int, default=0)
    args = ap.parse_args()
    sizes = {"width": args.size, "height": args.size} if args.size else {}
    net = Network.load(args.cfg, args.weights, strict=False, **sizes)
    if args.weights is None:
        net.init_weights(0)
    c, h, w = net.input_shape
    x = np.random.default_rng(0).random((1, c, h, w), dtype=np.float32)
    ours = net.forward(x)
    with torch.no_grad():
        theirs = from_network(net)(torch.from_numpy(x)).numpy()
    scale = max(float(np.abs(theirs).max()), 1e-6)
    print(f"max |darkcfg - torch| / max |torch| = {np.abs(ours - theirs).max() / scale:.3g}")


if __name__ == "__main__":
    main()
