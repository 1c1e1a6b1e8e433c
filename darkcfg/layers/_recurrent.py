"""What [rnn], [gru], [lstm] and [crnn] share: sub-layers, the loop over time steps, the
state carried between calls, and back-propagation through time.

Layout (Darknet's src/parser.c: parse_net_options and examples/rnn.c: get_rnn_data): a
network with `time_steps=T` runs N = T x S rows, step-major, row t*S + s being step t of
stream s. Every other layer treats the rows as independent images; a recurrent layer
walks the T steps, feeding the S rows of each step together with its state.

Each recurrent section is a stack of [connected] sub-layers ([crnn]: stride-1
[convolutional] ones), each with biases, weights and, with batch_normalize=1, the BN
triplet. Their arrays are the layer's `params`, named `<sub>.<array>` (`input.weights`,
`uz.biases`, ...), listed in the order Darknet's src/parser.c: save_weights_upto writes
them, so a .weights file round-trips byte for byte.

State (Darknet's inference behaviour, src/rnn_layer.c, gru_layer.c, lstm_layer.c,
crnn_layer.c: forward_*): an inference forward starts from the state the previous one
left (zeros at first, after `reset_state()`, or when the number of streams changes). A
training forward starts from zeros, every batch, and leaves zeros behind: Darknet does
this for [rnn]/[crnn]; its [gru] keeps the state between training batches and its
[lstm] cannot train on the CPU, and darkcfg resets them all alike so that a batch's
gradient is that of the batch alone (README, "Deliberate differences from Darknet").

Training BN in a sub-layer normalises over the S rows of one step (Darknet's forward;
the rolling statistics move once per step), so it needs S >= 2 (Darknet gives NaN).
The backward is the true gradient through time (Darknet's CPU backward is wrong for
[rnn]/[crnn], empty for [gru], missing for [lstm]; reference/recurrent_local_yolov1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DarkcfgError
from .base import Layer

if TYPE_CHECKING:
    from .base import RunState

State = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Sub:
    """One sub-layer: [connected] (size 0) from n_in values to n, or a stride-1
    [convolutional] (size k, padding pad keeping h x w) from n_in channels to n."""
    name: str
    n_in: int
    n: int
    activation: str
    bn: bool
    size: int = 0
    pad: int = 0

    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        p, n = self.name + ".", self.n
        bn = [(p + "scales", (n,)), (p + "rolling_mean", (n,)),
              (p + "rolling_variance", (n,))] if self.bn else []
        if self.size:   # src/parser.c: save_convolutional_weights (BN before weights)
            return [(p + "biases", (n,)), *bn,
                    (p + "weights", (n, self.n_in, self.size, self.size))]
        # save_connected_weights (BN after weights)
        return [(p + "biases", (n,)), (p + "weights", (n, self.n_in)), *bn]


@dataclass
class SubCache:
    """What a sub-layer's backward needs from one step's forward."""
    x: np.ndarray                   # the product's input: (S, n_in) or im2col columns
    y: np.ndarray                   # output (S, n, h, w)
    pre: np.ndarray | None          # pre-activation copy (activations that need it)
    xhat: np.ndarray | None         # training BN: normalised values and batch variance
    var: np.ndarray | None
    shape: tuple[int, ...]          # the input's shape


def _im2col(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    # x (S, c, h, w) -> (S*h*w, c*k*k), column (c*k + ky)*k + kx as Darknet's im2col_cpu;
    # stride 1 and 2*pad = k - 1 keep h x w
    s, _, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(s * h * w, -1)


def _col2im(cols: np.ndarray, shape: tuple[int, ...], k: int, pad: int) -> np.ndarray:
    s, c, h, w = shape
    win = cols.reshape(s, h, w, c, k, k)
    xp = np.zeros((s, c, h + 2 * pad, w + 2 * pad), np.float32)
    for ky in range(k):
        for kx in range(k):
            xp[:, :, ky:ky + h, kx:kx + w] += win[:, :, :, :, ky, kx].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(xp[:, :, pad:pad + h, pad:pad + w])


class Recurrent(Layer):
    """Base of the recurrent sections: subclasses give `subs()` (file order),
    `state_shapes(S)`, and one time step forward (`step`) and backward (`step_back`)."""
    exact_bn = False        # Darknet's BN backward rule; tests set True (finite differences)
    label: str              # Darknet's name in the summary row

    def subs(self) -> list[Sub]:
        raise NotImplementedError

    def state_shapes(self, streams: int) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def step(self, x: np.ndarray, state: State, bn_batch: bool
             ) -> tuple[np.ndarray, State, Any]:
        """x (S, *in_shape) -> (output (S, *out_shape), new state, cache)."""
        raise NotImplementedError

    def step_back(self, cache: Any, dy: np.ndarray, dstate: State
                  ) -> tuple[np.ndarray, State]:
        """dy = dLoss/d(this step's output), dstate = dLoss/d(its new state) ->
        (dLoss/dx of the step, dLoss/d(the state it started from))."""
        raise NotImplementedError

    # Keys read quietly (Darknet lineages parse them) whose math darkcfg does not compute,
    # with the value that changes nothing: anything else is refused when the net runs
    IGNORED: dict[str, str] = {"xnor": "0"}

    def unsupported(self):
        for key, neutral in self.IGNORED.items():
            entry = self.section.entries.get(key)
            if entry is not None and entry.value.strip() != neutral:
                return f"'{key}={entry.value}' in [{self.type}] is not computed by darkcfg"
        return None

    # --- parameters -------------------------------------------------------------------
    def setup_subs(self) -> None:
        self.sub = {s.name: s for s in self.subs()}
        # Instance override of Layer.TRAINED: the trained arrays are the sub-layers'
        self.TRAINED = tuple(name for name, _ in self.param_shapes()
                             if name.rsplit(".", 1)[1] in Layer.TRAINED)

    def param_shapes(self):
        return [ps for s in self.subs() for ps in s.param_shapes()]

    def allocate(self) -> None:
        self.params = {}
        for name, shape in self.param_shapes():
            last = name.rsplit(".", 1)[1]
            fill = 1.0 if last in ("scales", "rolling_variance") else 0.0
            self.params[name] = np.full(shape, fill, dtype=np.float32)
        self.reset_state()

    def weights_from_file(self, name, flat, header):
        # [connected] sub-layers follow the header's transpose rule as top-level ones do
        # (src/parser.c: load_weights_upto passes `transpose` to load_connected_weights)
        shape = self.params[name].shape
        if name.endswith(".weights") and len(shape) == 2 and header.transpose:
            return flat.reshape(shape[1], shape[0]).T.reshape(shape)
        return flat.reshape(shape)

    def weights_to_file(self, name, array, header):
        if name.endswith(".weights") and array.ndim == 2 and header.transpose:
            return array.T
        return array

    def init_params(self, rng: np.random.Generator) -> None:
        """Darknet's make_connected_layer / make_convolutional_layer for each sub-layer:
        connected weights sqrt(2/inputs) U(-1, 1), conv weights sqrt(2/fan_in) N(0, 1);
        biases 0, BN scales 1, rolling statistics 0."""
        for sub in self.subs():
            for name, arr in self.params.items():
                if not name.startswith(sub.name + "."):
                    continue
                last = name.rsplit(".", 1)[1]
                if last == "weights" and sub.size:
                    fan_in = sub.n_in * sub.size * sub.size
                    arr[...] = np.sqrt(2.0 / fan_in) * rng.standard_normal(arr.shape)
                elif last == "weights":
                    arr[...] = np.sqrt(2.0 / sub.n_in) * rng.uniform(-1.0, 1.0, arr.shape)
                else:
                    arr[...] = 1 if last == "scales" else 0

    def flops(self):
        return sum(2.0 * s.n_in * s.n * max(1, s.size) ** 2 for s in self.subs())

    def row(self):
        # Darknet's make_*_layer prints its own line, then each [connected] sub-layer's
        head = f"{self.label} Layer: {self.inputs} inputs, {self.outputs} outputs"
        return "\n".join([head, *(f"\t\tconnected                            {s.n_in:4d}  "
                                  f"->  {s.n:4d}" for s in self.subs())])

    # --- running ----------------------------------------------------------------------
    def reset_state(self) -> None:
        self._state: State | None = None

    @property
    def state(self) -> State | None:
        """The state carried into the next inference call (None: zeros)."""
        return self._state

    def forward(self, x: np.ndarray, net: RunState) -> np.ndarray:
        steps = self.net.opts["time_steps"]
        if len(x) % steps:
            raise DarkcfgError(
                f"layer {self.index} [{self.type}]: the input has {len(x)} rows, not a "
                f"multiple of time_steps={steps} (rows are time_steps x streams, step-major)")
        streams = len(x) // steps
        shapes = self.state_shapes(streams)
        state = self._state
        if net.train or state is None or [a.shape for a in state] != shapes:
            state = tuple(np.zeros(s, np.float32) for s in shapes)
        bn_batch = net.train and not self.frozen
        if bn_batch and any(s.bn for s in self.subs()):
            self._check_bn(streams)
        xs = x.reshape(steps, streams, *self.in_shape)
        out = np.empty((len(x), *self.out_shape), np.float32)
        self._caches = []
        for t in range(steps):
            y, state, cache = self.step(xs[t], state, bn_batch)
            out[t * streams:(t + 1) * streams] = y.reshape(streams, *self.out_shape)
            self._caches.append(cache)
        self._streams = streams
        self._state = None if net.train else state
        return out

    def _check_bn(self, streams: int) -> None:
        spatial = self.out_shape[1] * self.out_shape[2]
        if streams * spatial < 2:
            raise self.error(
                f"batch normalisation inside [{self.type}] in training normalises the "
                f"{streams} stream(s) of one time step (x {spatial} pixels): it needs at "
                "least 2 values per channel (Darknet gives NaN); train with batch >= 2 "
                "streams or set batch_normalize=0")

    def backward(self, dy: np.ndarray | None, net: RunState) -> np.ndarray | None:
        if dy is None:
            return None
        steps, streams = len(self._caches), self._streams
        dys = dy.reshape(steps, streams, *self.out_shape)
        dstate = tuple(np.zeros(s, np.float32) for s in self.state_shapes(streams))
        prev = self.prev
        want = prev is not None and not prev.stops_backward
        dx = np.empty((steps * streams, *self.in_shape), np.float32) if want else None
        for t in range(steps - 1, -1, -1):
            dxt, dstate = self.step_back(self._caches[t], np.ascontiguousarray(dys[t]),
                                         dstate)
            if dx is not None:
                dx[t * streams:(t + 1) * streams] = dxt.reshape(streams, *self.in_shape)
        return dx

    def sub_outputs(self) -> dict[str, np.ndarray]:
        """Each sub-layer's output over every row of the latest forward (step-major),
        flat per row: what reference/recurrent_local_yolov1's internals.npz holds."""
        return {name: np.concatenate([c[name].y.reshape(len(c[name].y), -1)
                                      for c in self._caches])
                for name in self.sub}

    # --- sub-layers -------------------------------------------------------------------
    def sub_forward(self, name: str, x: np.ndarray, bn_batch: bool
                    ) -> tuple[np.ndarray, SubCache]:
        """Sub-layer `name` on x (S, ...) -> (y (S, n, h, w), cache): the product, BN or
        the bias, the activation (Darknet's forward_connected_layer /
        forward_convolutional_layer)."""
        from ..kernels import activations, bn, bn_train
        sub, p = self.sub[name], self.params
        w = p[name + ".weights"]
        s = len(x)
        if sub.size:
            _, _, h, wd = x.shape
            cols = _im2col(x, sub.size, sub.pad)
            z = (cols @ w.reshape(sub.n, -1).T).reshape(s, h, wd, sub.n)
            z = np.ascontiguousarray(z.transpose(0, 3, 1, 2), np.float32)
        else:
            cols = np.ascontiguousarray(x.reshape(s, -1), np.float32)
            z = np.ascontiguousarray((cols @ w.T).reshape(s, sub.n, 1, 1), np.float32)
        xhat = var = None
        if not sub.bn:
            bn.add_bias(z, p[name + ".biases"])
        elif bn_batch:
            xhat = np.empty_like(z)
            _, var = bn_train.forward(z, p[name + ".scales"], p[name + ".biases"],
                                      p[name + ".rolling_mean"],
                                      p[name + ".rolling_variance"], self.net.dialect, xhat)
        else:
            bn.bn_inference(z, p[name + ".scales"], p[name + ".rolling_mean"],
                            p[name + ".rolling_variance"], p[name + ".biases"],
                            self.net.dialect)
        pre = z.copy() if activations.needs_input(sub.activation) else None
        y = activations.activate(z, sub.activation)
        return y, SubCache(cols, y, pre, xhat, var, x.shape)

    def sub_backward(self, name: str, dy: np.ndarray, c: SubCache) -> np.ndarray:
        """dy = dLoss/d(sub-layer output) -> dLoss/d(its input), shaped like the input;
        accumulates the sub-layer's gradients."""
        from ..kernels import activations, bn, bn_train
        sub, p, g = self.sub[name], self.params, self.grads
        dz = np.array(dy, np.float32, order="C").reshape(c.y.shape)
        activations.gradient(dz, c.y, c.pre, sub.activation)
        if sub.bn and c.xhat is not None:
            # a channel of zero batch variance (the self sub-layer reading the zero state
            # at step 0) has xhat = 0 and no variance term, which the exact rule would
            # compute as 0 * inf = NaN; only the zero state's own gradient sees the value
            var = np.where(c.var > 0, c.var, np.float32(1)) if self.exact_bn else c.var
            bn_train.backward(dz, c.xhat, p[name + ".scales"], var, self.net.dialect,
                              g.get(name + ".scales", np.zeros(sub.n, np.float32)),
                              g.get(name + ".biases"), exact=self.exact_bn)
        else:
            g[name + ".biases"] += dz.sum(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)
            if sub.bn:      # rolling statistics (frozen layer): a per-channel affine map
                factor = p[name + ".scales"] / bn.bn_denominator(
                    p[name + ".rolling_variance"], self.net.dialect)
                dz *= factor.astype(np.float32)[:, None, None]
        w = p[name + ".weights"]
        dzm = dz.transpose(0, 2, 3, 1).reshape(-1, sub.n) if sub.size else dz.reshape(-1, sub.n)
        g[name + ".weights"] += (dzm.T @ c.x).reshape(w.shape)
        dcols = dzm @ w.reshape(sub.n, -1)
        if sub.size:
            return _col2im(dcols, c.shape, sub.size, sub.pad)
        return dcols.reshape(c.shape)


class Summed(Recurrent):
    """[rnn] and [crnn] (src/rnn_layer.c, src/crnn_layer.c: forward_*): sub-layers
    input, self, output and
        h_t = (shortcut ? h_{t-1} : 0) + input(x_t) + self(h_{t-1}),  y_t = output(h_t)
    with the state h_t of `hidden` units (channels for [crnn]) at the input's h x w."""
    hidden: int

    def state_shapes(self, streams):
        spatial = self.in_shape[1:] if self.sub["input"].size else (1, 1)
        return [(streams, self.hidden, *spatial)]

    def step(self, x, state, bn_batch):
        (h,) = state
        i, ci = self.sub_forward("input", x, bn_batch)
        f, cf = self.sub_forward("self", h, bn_batch)
        # Darknet's order: the carried state (or 0), += input, += self
        hn = h + i if self.opts["shortcut"] else i.copy()
        hn += f
        y, co = self.sub_forward("output", hn, bn_batch)
        return y, (hn,), {"input": ci, "self": cf, "output": co}

    def step_back(self, cache, dy, dstate):
        dh = dstate[0] + self.sub_backward("output", dy, cache["output"])
        dx = self.sub_backward("input", dh, cache["input"])
        dprev = self.sub_backward("self", dh, cache["self"])
        if self.opts["shortcut"]:
            dprev += dh
        return dx, (np.ascontiguousarray(dprev, np.float32),)
