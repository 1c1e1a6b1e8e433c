"""[rnn], [gru], [lstm], [crnn]: Darknet's forward over time steps and carried state
(reference/recurrent_local_yolov1, pjreddie's C code), weights round trips, every Darknet
cfg using them, the true gradient through time by finite differences, and Darknet's
recorded training steps reproduced by replaying its CPU bugs in test code."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from darkcfg.cfg import parse_cfg
from darkcfg.graph import Graph, build_graph, load_graph
from darkcfg.network import Network

from .conftest import DARKNET_CFG, REFERENCE, listing, need
from .helpers import check_gradient, rel

CASES = REFERENCE / "recurrent_local_yolov1" / "cases"
RECURRENT = ("rnn", "gru", "lstm", "crnn")
FORWARD = ["rnn_fwd", "gru_fwd", "lstm_fwd", "crnn_fwd", "train_rnn", "train_gru",
           "train_crnn"]
BAR = 1e-4


def darknet_crnn_shapes(graph: Graph) -> Graph:
    """Replay pjreddie's parse_crnn, which passes (w, h) to make_crnn_layer(h, w): each
    [crnn] reads its input buffer as C x W x H of the shape Darknet gave the layer before
    (so a second [crnn] swaps back). darkcfg computes the shape the cfg states."""
    prev = graph.net.input_shape
    for lay in graph.layers:
        if lay.type == "crnn":
            c, h, w = prev
            lay.in_shape, lay.out_shape = (c, w, h), (lay.out_shape[0], w, h)
        prev = lay.out_shape
    return graph


def case_net(case: Path, weights: str = "weights.weights") -> Network:
    graph = load_graph(need(case / "net.cfg"))
    net = Network(darknet_crnn_shapes(graph))
    net.load_weights(case / weights)
    return net


def case_rows(case: Path, net: Network) -> np.ndarray:
    x = np.fromfile(case / "input.bin", "<f4")
    return x.reshape(-1, *net.input_shape)


def compare_call(net: Network, ref, internals) -> dict[str, float]:
    """Every layer's output, every sub-layer's output over all steps and the states of
    the latest forward against Darknet's arrays; returns the worst rel per key."""
    errs = {}
    for i, lay in enumerate(net.layers):
        errs[f"layer_{i:03d}"] = rel(net.outputs[i].ravel(), ref[f"layer_{i:03d}"])
        if lay.type not in RECURRENT:
            continue
        for name, out in lay.sub_outputs().items():
            errs[f"layer_{i:03d}_{name}"] = rel(out.ravel(), internals[f"layer_{i:03d}_{name}"])
        errs[f"state_{i:03d}"] = rel(lay.state[0].ravel(), internals[f"state_{i:03d}"])
        if lay.type == "lstm":
            errs[f"cell_{i:03d}"] = rel(lay.state[1].ravel(), internals[f"cell_{i:03d}"])
            errs[f"cellsteps_{i:03d}"] = rel(lay.step_cells().ravel(),
                                             internals[f"cellsteps_{i:03d}"])
    return errs


@pytest.mark.parametrize("name", FORWARD)
def test_forward_matches_darknet_over_steps_and_second_call(name):
    case = CASES / name
    net = case_net(case)
    x = case_rows(case, net)
    first = np.load(case / "outputs.npz")
    internals = np.load(case / "internals.npz")
    net.forward(x)
    errs = compare_call(net, first, internals)
    second = np.load(case / "call2.npz")      # from the state call 1 left
    net.forward(x)
    errs.update({f"call2 {k}": v for k, v in compare_call(net, second, second).items()})
    expected = set(internals) | set(first) | {f"call2 {k}" for k in second}
    assert set(errs) == expected                # every stored array was compared
    worst = max(errs, key=errs.get)
    assert errs[worst] <= BAR, (worst, errs[worst])


def test_reset_state_starts_from_zeros_again():
    case = CASES / "gru_fwd"
    net = case_net(case)
    x = case_rows(case, net)
    first = net.forward(x)
    assert rel(net.forward(x), first) > 1e-2     # the carried state changes the output
    net.reset_state()
    assert np.array_equal(net.forward(x), first)


def test_rows_must_be_whole_time_steps():
    from darkcfg.errors import DarkcfgError
    net = case_net(CASES / "rnn_fwd")
    with pytest.raises(DarkcfgError, match="not a multiple of time_steps=4"):
        net.forward(np.zeros((3, 12), np.float32))


@pytest.mark.parametrize("name", ["rnn_fwd", "gru_fwd", "lstm_fwd", "crnn_fwd"])
def test_weights_round_trip_byte_identical(name, tmp_path):
    case = CASES / name
    net = case_net(case)
    out = tmp_path / "w.weights"
    net.save_weights(out)
    assert out.read_bytes() == (case / "weights.weights").read_bytes()


def test_file_order_names_the_sub_layers():
    net = case_net(CASES / "lstm_fwd")
    names = [k for k in net.layers[1].params]
    assert names[:5] == ["wi.biases", "wi.weights", "wi.scales", "wi.rolling_mean",
                         "wi.rolling_variance"]
    assert [k.split(".")[0] for k in names[::5]] == ["wi", "wf", "wo", "wg", "ui", "uf",
                                                    "uo", "ug"]
    crnn = case_net(CASES / "crnn_fwd").layers[0]
    assert [k for k in crnn.params][:5] == ["input.biases", "input.scales",
                                            "input.rolling_mean", "input.rolling_variance",
                                            "input.weights"]


# --- every Darknet cfg with a recurrent section, at reduced size ---------------------------

def _recurrent_cfgs() -> list[Path]:
    pat = re.compile(r"^\s*\[(rnn|gru|lstm|crnn)\]", re.M)
    return [p for p in listing(DARKNET_CFG, "*/*.cfg") if pat.search(p.read_text())]


def _reduced(text: str) -> str:
    # 1024-unit layers to 24, 576 time steps to 3: the same sections and keys, small
    text = re.sub(r"^(\s*(?:output|hidden)\s*=\s*)1024\s*$", r"\g<1>24", text, flags=re.M)
    return re.sub(r"^(\s*time_steps\s*=\s*)\d+", r"\g<1>3", text, flags=re.M)


def test_recurrent_cfgs_found():
    need(DARKNET_CFG)
    assert len(_recurrent_cfgs()) >= 9


@pytest.mark.parametrize("path", _recurrent_cfgs(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_darknet_cfg_runs_forward(path):
    text = _reduced(path.read_text())
    size = {"width": 64, "height": 64} if "width" in text else {}
    graph = build_graph(parse_cfg(text, path.name), batch=2, **size)
    net = Network(graph)
    net.init_weights(seed=1)
    for lay in net.layers:      # Darknet's training init has rolling variances 0
        for name, arr in lay.params.items():
            if name.endswith("rolling_variance"):
                arr[...] = 1
    steps = graph.net.opts["time_steps"]
    x = np.random.default_rng(2).random((2 * steps, *net.input_shape), dtype=np.float32)
    y = net.forward(x)
    assert len(y) == 2 * steps and np.isfinite(y).all()
    rec = [lay for lay in net.layers if lay.type in RECURRENT]
    assert rec and all(lay.state is not None for lay in rec)
    assert np.abs(net.outputs[rec[0].index]).max() > 0


# --- training: Darknet's recorded steps, its bugs replayed here ------------------------------

def train_case(name: str) -> tuple[Network, np.ndarray, np.ndarray, Path]:
    case = CASES / name
    net = case_net(case)
    x = case_rows(case, net)
    truth = np.fromfile(case / "truth.bin", "<f4").reshape(len(x), -1)
    return net, x, truth, case


def darknet_costs(case: Path) -> list[float]:
    steps = json.loads((case / "case.json").read_text())["train"]["steps_2"]
    return [float(line.split()[3]) for line in steps]


def darknet_rnn_step_back(layer, cache, dy, dstate):
    """src/rnn_layer.c: backward_rnn_layer (no shortcut): the input sub-layer's delta is
    copied from the self sub-layer's after that one multiplied it by its own activation
    derivative, so the input path gets act'(self) act'(input) (reference README, bug 2)."""
    from darkcfg.kernels.activations import gradient
    dh = dstate[0] + layer.sub_backward("output", dy, cache["output"])
    self_ = cache["self"]
    factor = gradient(np.ones_like(self_.y), self_.y, self_.pre, layer.opts["activation"])
    dx = layer.sub_backward("input", dh * factor, cache["input"])
    return dx, (layer.sub_backward("self", dh, self_),)


def darknet_gru(layer) -> None:
    """src/gru_layer.c: backward_gru_layer is empty (no gradient, nothing passed down), and
    the state is never reset, training included (reference README, bug 5)."""
    forward = layer.forward

    class Carry:                # the network seen as an inference run: the state carries
        train = False
    layer.forward = lambda x, net: forward(x, Carry())
    layer.backward = lambda dy, net: None


def check_darknet_gradients(net: Network, ref) -> None:
    """Our accumulated gradients against Darknet's *_updates (= -dLoss/dparam)."""
    names = {"biases": "gbias", "weights": "gweight", "scales": "gscale"}
    for lay in net.layers:
        for key, grad in lay.grads.items():
            sub, _, arr = key.rpartition(".")
            ref_key = f"{names[arr]}_{lay.index:03d}" + (f"_{sub}" if sub else "")
            assert rel(-grad.ravel(), ref[ref_key]) <= BAR, ref_key


def test_train_rnn_reproduces_darknet_with_its_backward_replayed():
    import types
    net, x, truth, case = train_case("train_rnn")
    for lay in net.layers[:2]:
        lay.step_back = types.MethodType(darknet_rnn_step_back, lay)
    ref = np.load(case / "grads.npz")
    costs = darknet_costs(case)
    assert net.forward_train(x, truth) == pytest.approx(costs[0], rel=1e-5)
    for i in range(4):
        assert rel(net.outputs[i].ravel(), ref[f"train_out_{i:03d}"]) <= BAR
    net.backward()
    check_darknet_gradients(net, ref)
    for lay in net.layers:
        for g in lay.grads.values():
            g[...] = 0
    # both steps start from a zero state (forward_rnn_layer in training)
    check_sgd_steps(case_net(case), x, truth, case, net_patch=lambda n: [
        setattr(lay, "step_back", types.MethodType(darknet_rnn_step_back, lay))
        for lay in n.layers[:2]], costs=[c / len(x) for c in costs])


def test_train_rnn_true_gradient_differs_from_darknets_in_the_first_layer():
    # the bug is real: darkcfg's gradient (checked by finite differences below) is not
    # Darknet's in [rnn] 0's sub-layers and in [rnn] 1's input sub-layer
    net, x, truth, case = train_case("train_rnn")
    ref = np.load(case / "grads.npz")
    net.forward_train(x, truth)
    net.backward()
    assert rel(-net.layers[0].grads["input.weights"].ravel(), ref["gweight_000_input"]) > 0.5
    assert rel(-net.layers[1].grads["input.weights"].ravel(), ref["gweight_001_input"]) > 0.5
    assert rel(-net.layers[1].grads["output.weights"].ravel(),
               ref["gweight_001_output"]) <= BAR


def test_train_gru_reproduces_darknet_with_its_empty_backward_and_kept_state():
    net, x, truth, case = train_case("train_gru")
    ref = np.load(case / "grads.npz")
    costs = darknet_costs(case)
    check_sgd_steps(net, x, truth, case, net_patch=lambda n: darknet_gru(n.layers[0]),
                    costs=[c / len(x) for c in costs], first=ref)


def test_train_crnn_reproduces_darknet_which_never_updates_its_sub_layers():
    # make_convolutional_layer leaves learning_rate_scale 0 for the sub-layers (bug 8):
    # replayed with the section's own learning_rate, which darkcfg applies
    net, x, truth, case = train_case("train_crnn")
    ref = np.load(case / "grads.npz")
    costs = darknet_costs(case)
    check_sgd_steps(net, x, truth, case,
                    net_patch=lambda n: n.layers[0].opts.__setitem__("learning_rate", 0.0),
                    costs=[c / len(x) for c in costs], first=ref)


def check_sgd_steps(net: Network, x, truth, case: Path, net_patch, costs, first=None):
    """Two train_steps of `net` with `net_patch` applied: the train outputs of step 1
    (with `first`, Darknet's grads.npz), each step's cost per row, and every parameter
    after steps 1 and 2 against trained.weights / trained2.weights within BAR of the
    largest change Darknet's step made to that array (at least 1e-6)."""
    net_patch(net)
    before = {(lay.index, k): v.copy() for lay in net.layers for k, v in lay.params.items()}
    for step, name in ((1, "trained.weights"), (2, "trained2.weights")):
        cost = net.train_step(x, truth)
        assert cost == pytest.approx(costs[step - 1], rel=1e-5), step
        if first is not None and step == 1:
            for i in range(len(net.layers)):
                assert rel(net.outputs[i].ravel(), first[f"train_out_{i:03d}"]) <= BAR, i
        ref = case_net(case, name)
        for lay, rlay in zip(net.layers, ref.layers):
            for k, v in lay.params.items():
                change = rlay.params[k] - before[(lay.index, k)]
                scale = max(np.abs(change).max(initial=0), 1e-6)
                err = np.abs(v - rlay.params[k]).max(initial=0) / scale
                assert err <= BAR, (step, lay.index, k, err)


# --- the true gradient through time, by finite differences --------------------------------

FD_NETS = {
    "rnn": "[rnn]\noutput=4\nactivation=tanh\nbatch_normalize=1\n\n"
           "[rnn]\noutput=3\nactivation=logistic\nshortcut=1\n",
    "gru": "[gru]\noutput=4\nbatch_normalize=1\n\n[gru]\noutput=3\ntanh=1\n",
    "lstm": "[lstm]\noutput=4\nbatch_normalize=1\n\n[lstm]\noutput=3\n",
    # [empty] makes these cfgs alexeyab's, whose [crnn] reads pad
    "crnn": "[crnn]\nhidden=2\noutput=3\npad=1\nactivation=tanh\nbatch_normalize=1\n\n"
            "[crnn]\nhidden=2\noutput=2\npad=1\nactivation=logistic\nshortcut=1\n",
}


def fd_net(kind: str) -> Network:
    shape = "width=4\nheight=3\nchannels=2\n" if kind == "crnn" else "inputs=5\n"
    text = f"[net]\n{shape}batch=3\ntime_steps=4\n\n[empty]\n\n{FD_NETS[kind]}"
    net = Network(build_graph(parse_cfg(text, f"{kind}.cfg")))
    net.init_weights(seed=3)
    rng = np.random.default_rng(4)
    for lay in net.layers:
        lay.exact_bn = True     # the exact BN derivative (Darknet's rule is checked above)
        for name, arr in lay.params.items():
            if name.endswith(("biases", "scales")):
                arr[...] = rng.uniform(-0.5, 0.5, arr.shape) + name.endswith("scales")
    return net


def kinks(net: Network) -> list[np.ndarray]:
    """Which side of 0 every leaky sub-layer value of the latest forward is on."""
    return [c.y > 0 for lay in net.layers if lay.type in RECURRENT
            and lay.opts.get("activation") == "leaky"
            for step in lay._caches for c in step.values() if hasattr(c, "y")]


def fd_check(net: Network, objective, arrays, count: int = 3) -> None:
    """Central differences (eps 1e-3) at `count` random entries of each array and at its
    largest gradient, within 2e-2 of that gradient (+ 1e-4); entries whose step moves a
    leaky value across its kink are skipped."""
    rng = np.random.default_rng(5)
    objective()
    base = kinks(net)

    def usable() -> bool:
        objective()
        return all(np.array_equal(a, b) for a, b in zip(kinks(net), base))

    for what, arr, grad in arrays:
        picks = [*rng.choice(arr.size, min(count, arr.size), replace=False),
                 int(np.abs(grad).argmax())]
        check_gradient(objective, arr, grad, picks, eps=1e-3, rtol=2e-2, atol=1e-4,
                       scale=max(np.abs(grad).max(), 1e-3), usable=usable if base else None,
                       least=2, what=what)


def recurrent_arrays(net: Network):
    for lay in net.layers:
        if lay.type in RECURRENT:
            yield from ((f"{lay.index} {k}", lay.params[k], lay.grads[k].copy())
                        for k in lay.grads)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=[pytest.mark.slow] if k in (
    "gru", "lstm") else []) for k in sorted(FD_NETS)])     # gru, lstm: 20-30 s of CPU
def test_gradient_through_time_matches_finite_differences(kind):
    net = fd_net(kind)
    rng = np.random.default_rng(6)
    rows = 3 * 4
    x = rng.uniform(-1, 1, (rows, *net.input_shape)).astype(np.float32)
    r = rng.standard_normal((rows, *net.layers[-1].out_shape)).astype(np.float32)

    def objective() -> float:
        net.forward_train(x, None)
        return float(np.sum(net.outputs[-1].astype(np.float64) * r))

    objective()
    net.backward(keep=True, dy=r)
    dx = net.grads[0].copy()        # [empty] first: the network input's gradient
    fd_check(net, objective, [("input", x, dx), *recurrent_arrays(net)])


@pytest.mark.parametrize("name", ["train_rnn", "train_gru", "train_crnn"])
def test_gradient_of_darknet_train_case_matches_finite_differences(name):
    net, x, truth, _ = train_case(name)
    for lay in net.layers:
        lay.exact_bn = True

    def objective() -> float:
        return net.forward_train(x, truth)

    objective()
    net.backward()
    fd_check(net, objective, list(recurrent_arrays(net)))


def test_training_starts_every_batch_from_zeros_and_leaves_zeros():
    net, x, truth, _ = train_case("train_gru")
    net.forward(x)                          # an inference call leaves a state
    assert np.abs(net.layers[0].state[0]).max() > 0
    first = net.forward_train(x, truth)
    assert net.layers[0].state is None
    assert net.forward_train(x, truth) == first


def test_section_learning_rate_applies(tmp_path):
    net, x, truth, _ = train_case("train_rnn")
    net.layers[0].opts["learning_rate"] = 0.0
    before = {k: v.copy() for k, v in net.layers[0].params.items()}
    other = net.layers[1].params["input.weights"].copy()
    net.train_step(x, truth)
    assert all(np.array_equal(v, net.layers[0].params[k]) for k, v in before.items())
    assert not np.array_equal(other, net.layers[1].params["input.weights"])


@pytest.mark.parametrize("body, why", [
    ("[rnn]\noutput=3\nlogistic=1\n", "'logistic=1' in \\[rnn\\] is not computed"),
    ("[gru]\noutput=3\nxnor=1\n", "'xnor=1' in \\[gru\\] is not computed"),
    ("[crnn]\nhidden=2\noutput=2\npad=1\ngroups=2\n", "'groups=2' in \\[crnn\\]"),
    ("[crnn]\nhidden=2\noutput=2\nstride=2\npad=1\n", "changes h x w"),
])
def test_keys_darkcfg_does_not_compute_are_refused_by_name(body, why):
    from darkcfg.errors import CfgError

    from .helpers import tiny_net
    with pytest.raises(CfgError, match=why):
        tiny_net("[empty]\n\n" + body)
