"""AlexeyAB's Darknet's own numbers (../shared/reference/alexeyab/cases, README there):
every layer of every case matches under dialect=alexeyab (rel <= 1e-4), except the layers
where AlexeyAB's CPU code outputs zeros; there darkcfg computes the intended math (checked
against NumPy here) and this file replays the bug to show Darknet's zeros are explained.
Weights round-trip byte for byte. Weighted [shortcut] and [implicit] get their own checks
(error for a missing normalisation, finite-difference gradients)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from darkcfg.errors import CfgError, CfgWarning
from darkcfg.graph import load_graph
from darkcfg.network import Network

from .conftest import REFERENCE
from .helpers import check_gradient, tiny_net
from .reference import REL_BAR, rel_error, weights_path

AB = REFERENCE / "alexeyab" / "cases"
AB_CASES = sorted(p for p in AB.iterdir() if (p / "net.cfg").exists()) if AB.exists() else []
# cfgs that set a [net] key twice: AlexeyAB keeps the first silently (option_find scans
# from the front); darkcfg refuses that unless lenient, and then keeps the first too
DUPLICATE_NET_KEYS = {"ab_efficientnet_b0": {"momentum": 0.9, "decay": 0.0005}}


def info(case: Path) -> dict:
    return json.loads((case / "case.json").read_text())


@pytest.fixture(scope="module")
def ab_weights(tmp_path_factory):
    """case -> its weights file: stored, or rebuilt once per run by regen_weights.py."""
    folder = tmp_path_factory.mktemp("ab_weights")
    cache: dict[Path, Path] = {}

    def get(case: Path) -> Path:
        if case not in cache:
            cache[case] = weights_path(case, folder)
        return cache[case]
    return get


def ab_network(case: Path) -> Network:
    strict = case.name not in DUPLICATE_NET_KEYS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        net = Network(load_graph(case / "net.cfg", dialect="alexeyab", strict=strict))
    for key, value in DUPLICATE_NET_KEYS.get(case.name, {}).items():
        assert net.graph.net.opts[key] == pytest.approx(value), key
    return net


# --- the intended math of the layers AlexeyAB's CPU code zeroes, in NumPy ----------------

def _softplus(x):
    # src/activations.h: softplus_activate with threshold 20
    return np.where(x > 20, x, np.where(x < -20, np.exp(x), np.log1p(np.exp(x))))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


NUMPY_ACTIVATIONS = {
    "relu6": lambda x: np.clip(x, 0, 6),
    "swish": lambda x: x * _sigmoid(x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "hard_mish": lambda x: np.where(x > 0, x, np.where(x > -2, x * x / 2 + x, 0)),
    "normalize_channels": lambda x: np.where(
        x > 0, x / (1e-4 + np.where(x > 0, x, 0).sum(axis=0, keepdims=True)), 0),
    "normalize_channels_softmax": lambda x: np.exp(x) / (
        1e-4 + np.exp(x).sum(axis=0, keepdims=True)),
    "normalize_channels_softmax_maxval": lambda x: np.exp(x - x.max(axis=0)) / (
        1e-4 + np.exp(x - x.max(axis=0)).sum(axis=0, keepdims=True)),
}
# src/activations.c: activate() has a case for these only; any other kind returns 0
AB_ACTIVATE_CASES = {"logistic", "relu", "relie", "linear", "ramp", "tanh", "plse", "revleaky",
                     "leaky", "elu", "loggy", "stair", "hardtan", "lhtan", "selu", "gelu"}


def ab_cpu_activate(x: np.ndarray, name: str) -> np.ndarray:
    """The bug, replayed: what AlexeyAB's activate_array (activate()) gives for the kinds
    it has no case for (the test only replays those)."""
    assert name not in AB_ACTIVATE_CASES, name
    return np.zeros_like(x)


def pre_activation(net: Network, layer) -> np.ndarray:
    """The values a layer's activation is applied to, computed in float64 NumPy from its
    input and parameters: an [activation]'s input, or a 1x1 conv (+ AlexeyAB's BN)."""
    x = np.asarray(net.outputs[layer.index - 1][0], np.float64)
    if layer.type == "activation":
        return x
    assert layer.type == "convolutional" and layer.size == 1 and layer.groups == 1
    p = {k: np.asarray(v, np.float64) for k, v in layer.params.items()}
    y = np.einsum("oc,chw->ohw", p["weights"][:, :, 0, 0], x)
    if "scales" in p:
        y = (y - p["rolling_mean"][:, None, None]) / np.sqrt(
            p["rolling_variance"][:, None, None] + 1e-5) * p["scales"][:, None, None]
    return y + p["biases"][:, None, None]


# --- every case, every layer -----------------------------------------------------------

@pytest.mark.parametrize("case", AB_CASES, ids=lambda p: p.name)
def test_every_layer_matches_alexeyab(case, ab_weights):
    net = ab_network(case)
    assert net.load_weights(ab_weights(case)).complete
    c, h, w = net.input_shape
    net.forward(np.fromfile(case / "input.bin", "<f4").reshape(1, c, h, w))
    ref = np.load(case / "outputs.npz")
    suspicious = {s["index"]: s for s in info(case)["suspicious_layers"]}
    bad = []
    for layer in net.layers:
        ours, theirs = net.outputs[layer.index], ref[f"layer_{layer.index:03d}"]
        err = rel_error(ours, theirs)
        if layer.index not in suspicious:
            if not err <= REL_BAR:
                bad.append((err, layer.index, layer.type))
            continue
        # AlexeyAB's zeros: darkcfg has the intended value (NumPy) and differs from
        # Darknet; replaying Darknet's missing activate() case gives Darknet's number
        name = suspicious[layer.index]["activation"]
        assert layer.activation == name
        pre = pre_activation(net, layer)
        assert rel_error(ours[0], NUMPY_ACTIVATIONS[name](pre)) <= 1e-5, layer.index
        assert err > REL_BAR, layer.index
        np.testing.assert_array_equal(ab_cpu_activate(pre, name).ravel(), theirs)
    assert not bad, "layers off AlexeyAB's Darknet (rel, index, type): " + repr(bad)


def test_the_zeroed_layers_are_the_documented_ones():
    # the cases list exactly the [activation] / conv layers of the missing activate() kinds
    case = AB / "ab_activations"
    if not case.exists():
        pytest.skip(f"{case} is absent")
    net = ab_network(case)
    expected = {lay.index for lay in net.layers
                if (lay.type == "activation" and lay.activation in NUMPY_ACTIVATIONS)
                or (lay.type == "convolutional" and lay.activation == "relu6")}
    assert {s["index"] for s in info(case)["suspicious_layers"]} == expected


def _ab_fused_normalization(w, kind):
    # fuse_conv_batchnorm (src/network.c) pre-normalises a weighted [shortcut]'s weights
    # once, relu with lrelu = max(w, 0.001) instead of max(w, 0); softmax as the forward
    w = np.asarray(w, np.float32)
    r = np.maximum(w, np.float32(0.001)) if kind == "relu" else np.exp(w - w.max(axis=0))
    return (r / (np.float32(1e-4) + r.sum(axis=0, dtype=np.float32))).astype(np.float32)


@pytest.mark.parametrize("name", ["ab_bn_eps", "ab_shortcut_weighted"])
def test_fused_outputs_are_explained(name, ab_weights, monkeypatch):
    # darkcfg has no BN-fusing path. Folding BN into a conv is exact math (AlexeyAB's fused
    # run is within 5e-7 of its unfused one), so darkcfg's forward matches it as it is;
    # the weighted [shortcut]s differ by up to 3e-2 because of lrelu, replayed here
    from darkcfg.kernels import shortcut
    case = AB / name
    if not (case / "outputs_fused.npz").exists():
        pytest.skip(f"{case} is absent")
    net = ab_network(case)
    net.load_weights(ab_weights(case))
    monkeypatch.setattr(shortcut, "normalize_fusion", _ab_fused_normalization)
    c, h, w = net.input_shape
    net.forward(np.fromfile(case / "input.bin", "<f4").reshape(1, c, h, w))
    ref = np.load(case / "outputs_fused.npz")
    errs = [(rel_error(net.outputs[i], ref[f"layer_{i:03d}"]), i)
            for i in range(len(net.layers))]
    assert max(errs)[0] <= REL_BAR, errs


def _round_trip_files() -> list[tuple[Path, str]]:
    files = []
    for case in AB_CASES:
        files.append((case, "weights.weights"))
        files += [(case, n) for n in ("trained.weights", "trained2.weights")
                  if (case / n).exists()]
    return files


@pytest.mark.parametrize("case,name", _round_trip_files(),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_weights_round_trip_byte_for_byte(case, name, ab_weights, tmp_path):
    # every array AlexeyAB saves ([shortcut] and [implicit] weights, the standalone
    # [batchnorm]'s 4 arrays) is read and written back in its place
    net = ab_network(case)
    path = ab_weights(case) if name == "weights.weights" else case / name
    assert net.load_weights(path).complete
    net.save_weights(tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == path.read_bytes()


# --- weighted [shortcut] ---------------------------------------------------------------

# [empty] first: its gradient is the one at the network input (net.grads[0])
CONVS = ("[empty]\n[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=logistic\n"
         "[convolutional]\nfilters=2\nsize=1\nactivation=logistic\n"
         "[convolutional]\nfilters=6\nsize=1\nactivation=logistic\n"
         "[convolutional]\nfilters=4\nsize=1\nactivation=logistic\n")


@pytest.mark.parametrize("norm", [None, "none"])
def test_weighted_shortcut_needs_a_normalization(norm):
    extra = "" if norm is None else f"weights_normalization={norm}\n"
    with pytest.raises(CfgError) as e:
        tiny_net(CONVS + "[shortcut]\nfrom=-2\nweights_type=per_feature\n" + extra)
    assert "weights_normalization" in str(e.value)
    assert "relu" in str(e.value) and "softmax" in str(e.value)
    assert e.value.line is not None


def test_weighted_shortcut_file_layout():
    # (n+1) per_feature (per_layer is the same), (n+1)*C per_channel, all ones at start
    for wt, size in (("per_feature", 3), ("per_layer", 3), ("per_channel", 12)):
        net = tiny_net(CONVS + f"[shortcut]\nfrom=-3,-2\nweights_type={wt}\n"
                       "weights_normalization=relu\n")
        sc = net.layers[-1]
        assert sc.param_shapes() == [("weights", (size,))]
        assert np.all(sc.params["weights"] == 1)


def _numpy_weighted(prev, adds, w, norm):
    # shortcut_multilayer_cpu in float64: w (n+1, k), every input over its first values
    r = np.maximum(w, 0) if norm == "relu" else np.exp(w - w.max(axis=0))
    wn = r / (1e-4 + r.sum(axis=0))
    c = prev.shape[1]
    wn = np.broadcast_to(wn, (len(wn), c))
    out = prev * wn[0][None, :, None, None]
    flat = out.reshape(len(prev), -1)
    hw = prev.shape[2] * prev.shape[3]
    for j, a in enumerate(adds):
        af = a.reshape(len(a), -1)
        m = min(flat.shape[1], af.shape[1])
        flat[:, :m] += af[:, :m] * np.repeat(wn[j + 1], hw)[:m]
    return out


@pytest.mark.parametrize("wt,norm,act", [("per_feature", "softmax", "linear"),
                                         ("per_channel", "relu", "leaky"),
                                         ("per_channel", "softmax", "mish"),
                                         ("per_layer", "avg_relu", "logistic")])
def test_weighted_shortcut_forward_and_gradients(wt, norm, act):
    # from 2 channels (fewer) and 6 (more) onto 4: forward as NumPy, gradients to the
    # network input (through every `from`) and to the raw weights by finite differences
    net = tiny_net(CONVS + f"[shortcut]\nfrom=-3,-2\nweights_type={wt}\n"
                   f"weights_normalization={norm}\nactivation={act}\n")
    net.init_weights(1)
    sc = net.layers[-1]
    rng = np.random.default_rng(7)
    w = sc.params["weights"]
    # U(-0.5, 1.5) as the reference case, kept 0.1 away from relu's kink at 0
    w[...] = rng.uniform(-0.5, 1.5, w.shape)
    w[np.abs(w) < 0.1] = 0.4
    x = rng.uniform(-1, 1, (2, 4, 6, 6)).astype(np.float32)
    R = rng.standard_normal((2, *sc.out_shape)).astype(np.float32)

    out = net.forward(x)
    prev, add1, add2 = (np.asarray(net.outputs[i], np.float64) for i in (4, 2, 3))
    lin = _numpy_weighted(prev, [add1, add2], np.asarray(w, np.float64).reshape(3, -1),
                          "softmax" if norm == "softmax" else "relu")
    want = {"linear": lin, "leaky": np.where(lin > 0, lin, 0.1 * lin),
            "mish": NUMPY_ACTIVATIONS["mish"](lin), "logistic": _sigmoid(lin)}[act]
    assert rel_error(out, want) <= 1e-5

    def objective() -> float:
        net.forward_train(x, None)
        return float(np.sum(net.outputs[sc.index].astype(np.float64) * R))

    for lay in net.layers:
        for g in lay.grads.values():
            g[...] = 0
    objective()
    net.backward(keep=True, dy=R)
    dx, dw = net.grads[0].copy(), sc.grads["weights"].copy()
    assert np.abs(dw).max() > 0
    check_gradient(objective, w, dw, eps=1e-2, rtol=2e-2, atol=1e-4, what="weights")
    check_gradient(objective, x, dx, range(0, x.size, 7), eps=1e-2, rtol=2e-2, atol=1e-4,
                   what="input")


# --- [implicit] ------------------------------------------------------------------------

def test_implicit_defaults_shape_and_init():
    # parse_implicit: filters 128, atoms 1, mean 0, std 0.2; output filters x atoms x 1,
    # whatever the input; weights mean + U(-std, std)
    net = tiny_net("[implicit]\n")
    imp = net.layers[0]
    assert imp.out_shape == (128, 1, 1) and imp.param_shapes() == [("weights", (128, 1, 1))]
    net = tiny_net("[implicit]\nfilters=3\natoms=2\nmean=5\nstd=0.5\n")
    net.init_weights(3)
    w = net.layers[0].params["weights"]
    assert w.shape == (3, 2, 1) and np.all(np.abs(w - 5) <= 0.5) and w.std() > 0
    out = net.forward(np.zeros((2, 4, 6, 6), np.float32))
    np.testing.assert_array_equal(out, np.broadcast_to(w, (2, 3, 2, 1)))


def test_implicit_gradient_is_dy_summed_over_the_batch():
    # backward_implicit_layer: weight_updates += delta of every image; nothing flows down
    net = tiny_net("[implicit]\nfilters=3\n")
    net.init_weights(1)
    x = np.ones((3, 4, 6, 6), np.float32)
    dy = np.random.default_rng(1).standard_normal((3, 3, 1, 1)).astype(np.float32)
    net.forward_train(x, None)
    net.backward(keep=True, dy=dy)
    np.testing.assert_allclose(net.layers[0].grads["weights"], dy.sum(axis=0), rtol=1e-6)
