"""[rnn], [gru], [lstm], [crnn]: Darknet's forward over time steps and carried state
(reference/recurrent_local_yolov1, pjreddie's C code), weights round trips, every Darknet
cfg using them, the true gradient through time by finite differences, and Darknet's
recorded training steps reproduced by replaying its CPU bugs in test code."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from darkcfg.cfg import parse_cfg
from darkcfg.graph import Graph, build_graph, load_graph
from darkcfg.network import Network

from .conftest import DARKNET_CFG, REFERENCE, listing, need
from .helpers import rel

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
