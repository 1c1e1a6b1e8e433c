"""[gru]: gated recurrent unit (src/gru_layer.c: forward_gru_layer).

Six linear [connected] sub-layers (file order wz, wr, wh, uz, ur, uh; w* read the state,
u* the input):
    z = logistic(uz(x) + wz(h)),  r = logistic(ur(x) + wr(h))
    h~ = act(uh(x) + wh(r * h)),  act logistic unless tanh=1
    h' = z * h + (1 - z) * h~     (z weights the old state: src/blas.c weighted_sum_cpu)
The output and the new state are h'. Time steps, state and training: _recurrent.py.
"""
from __future__ import annotations

import numpy as np

from ..options import Opt
from ._recurrent import Recurrent, Sub
from .base import register


def _act(x: np.ndarray, name: str) -> np.ndarray:
    from ..kernels.activations import activate
    return activate(np.ascontiguousarray(x, np.float32), name)


@register
class Gru(Recurrent):
    type = "gru"
    label = "GRU"
    doc = "gated recurrent unit: h' = z*h + (1-z)*act(uh(x) + wh(r*h)); time_steps x " \
          "streams rows"
    example = "[gru]\noutput=3\ntanh=1\n"
    options = {
        "output": Opt("int", 1, "output (and state) units", min=1),
        "batch_normalize": Opt("int", 0, "batch normalisation in the sub-layers", min=0),
        "tanh": Opt("int", 0, "1: tanh for the candidate state (default logistic)", min=0),
    }
    quiet = frozenset({"hidden", "activation", "xnor"})

    def setup(self, layers):
        self.out_shape = (self.opts["output"], 1, 1)
        self.setup_subs()

    def subs(self):
        n, bn = self.opts["output"], bool(self.opts["batch_normalize"])
        return [Sub(name, n if name[0] == "w" else self.inputs, n, "linear", bn)
                for name in ("wz", "wr", "wh", "uz", "ur", "uh")]

    def state_shapes(self, streams):
        return [(streams, self.opts["output"], 1, 1)]

    @property
    def candidate(self) -> str:
        return "tanh" if self.opts["tanh"] else "logistic"

    def step(self, x, state, bn_batch):
        (h,) = state
        c = {}
        out = {}
        for name in ("uz", "ur", "uh"):
            out[name], c[name] = self.sub_forward(name, x, bn_batch)
        for name in ("wz", "wr"):
            out[name], c[name] = self.sub_forward(name, h, bn_batch)
        z = _act(out["uz"] + out["wz"], "logistic")
        r = _act(out["ur"] + out["wr"], "logistic")
        out["wh"], c["wh"] = self.sub_forward("wh", r * h, bn_batch)
        hh = _act(out["uh"] + out["wh"], self.candidate)
        hn = np.ascontiguousarray(z * h + (1 - z) * hh, np.float32)
        c["gates"] = (h, z, r, hh)
        return hn, (hn,), c

    def step_back(self, cache, dy, dstate):
        h, z, r, hh = cache["gates"]
        d = dstate[0] + dy
        dhh = d * (1 - z)
        dprev = d * z
        dpre = dhh * (1 - hh * hh) if self.opts["tanh"] else dhh * hh * (1 - hh)
        dx = self.sub_backward("uh", dpre, cache["uh"])
        drh = self.sub_backward("wh", dpre, cache["wh"])
        dprev += drh * r
        dzpre = d * (h - hh) * z * (1 - z)
        drpre = drh * h * r * (1 - r)
        dx += self.sub_backward("uz", dzpre, cache["uz"])
        dx += self.sub_backward("ur", drpre, cache["ur"])
        dprev += self.sub_backward("wz", dzpre, cache["wz"])
        dprev += self.sub_backward("wr", drpre, cache["wr"])
        return dx, (np.ascontiguousarray(dprev, np.float32),)
