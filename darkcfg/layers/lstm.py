"""[lstm]: long short-term memory (src/lstm_layer.c: forward_lstm_layer).

Eight linear [connected] sub-layers (file order wi, wf, wo, wg, ui, uf, uo, ug; w* read
the previous output h, u* the input):
    f = logistic(wf(h) + uf(x)),  i = logistic(wi(h) + ui(x)),
    g = tanh(wg(h) + ug(x)),      o = logistic(wo(h) + uo(x))
    c' = f * c + i * g,           h' = o * tanh(c')
No peephole, no cell bias, no projection. The output is h'; the state is (h', c').
Time steps, state and training: _recurrent.py.
"""
from __future__ import annotations

import numpy as np

from ..options import Opt
from ._recurrent import Recurrent, Sub
from .base import register

GATES = {"i": "logistic", "f": "logistic", "o": "logistic", "g": "tanh"}


def _act(x: np.ndarray, name: str) -> np.ndarray:
    from ..kernels.activations import activate
    return activate(np.ascontiguousarray(x, np.float32), name)


@register
class Lstm(Recurrent):
    type = "lstm"
    label = "LSTM"
    doc = "long short-term memory: c' = f*c + i*g, h' = o*tanh(c'); time_steps x streams " \
          "rows"
    example = "[lstm]\noutput=3\n"
    options = {
        "output": Opt("int", 1, "output (and cell) units", min=1),
        "batch_normalize": Opt("int", 0, "batch normalisation in the sub-layers", min=0),
    }
    quiet = frozenset({"hidden", "activation", "peephole", "lstm_activation", "xnor"})

    def setup(self, layers):
        self.out_shape = (self.opts["output"], 1, 1)
        self.setup_subs()

    def subs(self):
        n, bn = self.opts["output"], bool(self.opts["batch_normalize"])
        return [Sub(name, n if name[0] == "w" else self.inputs, n, "linear", bn)
                for name in ("wi", "wf", "wo", "wg", "ui", "uf", "uo", "ug")]

    def state_shapes(self, streams):
        n = self.opts["output"]
        return [(streams, n, 1, 1), (streams, n, 1, 1)]

    def step(self, x, state, bn_batch):
        h, c = state
        cache, gate = {}, {}
        for k, act in GATES.items():
            wy, cache["w" + k] = self.sub_forward("w" + k, h, bn_batch)
            uy, cache["u" + k] = self.sub_forward("u" + k, x, bn_batch)
            gate[k] = _act(wy + uy, act)
        cn = np.ascontiguousarray(c * gate["f"] + gate["i"] * gate["g"], np.float32)
        tc = _act(cn.copy(), "tanh")
        hn = np.ascontiguousarray(gate["o"] * tc, np.float32)
        cache["gates"] = (c, gate, tc, cn)
        return hn, (hn, cn), cache

    def step_back(self, cache, dy, dstate):
        c, gate, tc, _ = cache["gates"]
        dh = dstate[0] + dy
        dc = dstate[1] + dh * gate["o"] * (1 - tc * tc)
        dpre = {"o": dh * tc * gate["o"] * (1 - gate["o"]),
                "f": dc * c * gate["f"] * (1 - gate["f"]),
                "i": dc * gate["g"] * gate["i"] * (1 - gate["i"]),
                "g": dc * gate["i"] * (1 - gate["g"] * gate["g"])}
        dx = dprev = None
        for k in GATES:
            gx = self.sub_backward("u" + k, dpre[k], cache["u" + k])
            gh = self.sub_backward("w" + k, dpre[k], cache["w" + k])
            dx = gx if dx is None else dx + gx
            dprev = gh if dprev is None else dprev + gh
        return dx, (np.ascontiguousarray(dprev, np.float32),
                    np.ascontiguousarray(dc * gate["f"], np.float32))

    def step_cells(self) -> np.ndarray:
        """The cell after each step of the latest forward, (rows, output)."""
        return np.concatenate([c["gates"][3].reshape(len(c["gates"][3]), -1)
                               for c in self._caches])
