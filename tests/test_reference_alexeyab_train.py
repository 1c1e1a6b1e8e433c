"""Training steps against AlexeyAB's Darknet (reference cases ab_train_yolo_ciou,
ab_train_mish_classifier, ab_train_connected in ../shared/reference/alexeyab/cases).

ab_train_yolo_ciou: each [yolo] head's delta, cost and statistics (AB's CIoU loss with
iou_thresh, max_delta, scale_x_y), the network cost, every train-mode output and parameter
gradient, and the weights after 1 and 2 steps. The classifiers: the same for mish/swish
BN convs, [avgpool], [softmax] and [connected].

darkcfg computes the intended gradient (AB's GPU path). AB's CPU code, which made these
numbers, differs in five ways (alexeyab/README.md, "Training step" and "Batch norm");
`AbCpu` replays them here, in test code, so that every other number is pinned:
- conv backward overwrites the previous layer's delta (col2im_cpu_ext zeroes it first),
  losing what a later [route]/[shortcut] added there;
- the deltas of layers without l.train (route, upsample, avgpool, connected, ...) are not
  zeroed between steps: step 2 adds into step 1's;
- BN conv biases get no gradient (backward_batchnorm_layer has no backward_bias) and a
  [connected] is never updated (l.train = 0);
- the BN backward's direct term divides by sqrt(var) + 1e-5 (the forward by
  sqrt(var + 1e-5));
- the rolling BN statistics move by 0.1 (CPU) instead of 0.01.
The tests also assert that the true gradient differs from Darknet's where a replay
matters, so a replay that stopped mattering would show.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from darkcfg.graph import load_graph
from darkcfg.kernels import bn_train
from darkcfg.network import Network

from .conftest import REFERENCE, need
from .reference import REL_BAR, info, rel_error

AB = REFERENCE / "alexeyab" / "cases"
YOLO = AB / "ab_train_yolo_ciou"
MISH = AB / "ab_train_mish_classifier"
CONNECTED = AB / "ab_train_connected"
# layers whose delta AB's CPU forward_network does not zero (no l.train) and that no
# forward overwrites ([softmax] and [yolo] write theirs in the forward)
STALE = {"route", "upsample", "avgpool", "connected"}


def make(case: Path) -> Network:
    net = Network(load_graph(need(case / "net.cfg"), dialect="alexeyab"))
    net.load_weights(case / "weights.weights")
    return net


def inputs(case: Path, net: Network):
    c, h, w = net.input_shape
    x = np.fromfile(case / "input.bin", dtype="<f4").reshape(1, c, h, w)
    return x, np.fromfile(case / "truth.bin", dtype="<f4")[None]


def step_costs(case: Path) -> list[float]:
    return [float(re.search(r"cost ([\d.]+)", line)[1])
            for line in info(case)["train"]["steps_2"] if line.startswith("step")]


class AbCpu:
    """AB's CPU training replayed around a darkcfg Network (see the module doc)."""

    def __init__(self, net: Network, monkeypatch):
        self.net = net
        self.stale: dict[int, np.ndarray] = {}
        net.backward = self.backward
        original = bn_train.backward_coefficients

        def mixed_epsilon(scales, var, s1, s2, count, dialect, exact=False):
            a, k, m = original(scales, var, s1, s2, count, dialect, exact)
            # normalize_delta_cpu: delta / (sqrt(var) + 1e-5)
            a = scales.astype(np.float64) / (np.sqrt(var.astype(np.float64)) + 1e-5)
            return a, k, m

        monkeypatch.setattr(bn_train, "backward_coefficients", mixed_epsilon)
        monkeypatch.setattr(bn_train, "MOMENTUM", 0.9)
        import darkcfg.sgd as sgd
        update = sgd.update_layer

        def cpu_update(layer, *args):
            if layer.type == "connected":         # l.train = 0: never updated
                for g in layer.grads.values():
                    g[...] = 0
                return
            if getattr(layer, "batch_normalize", False):
                layer.grads["biases"][...] = 0    # no backward_bias in BN backward
            update(layer, *args)

        monkeypatch.setattr(sgd, "update_layer", cpu_update)

    def backward(self, keep: bool = False, dy=None) -> None:
        net = self.net
        n = len(net.layers)
        net.grads = [None] * n
        net._borrowed = set()
        net._keep = True
        for i, g in self.stale.items():
            net.grads[i] = g.copy()
        for i in range(n - 1, -1, -1):
            layer = net.layers[i]
            dx = layer.backward(net.grads[i], net)
            if dx is not None and i > 0:
                if layer.type == "convolutional":      # col2im_cpu_ext zeroes first
                    net.grads[i - 1] = None
                    net._borrowed.discard(i - 1)
                net.add_grad(i - 1, dx)
        for i, layer in enumerate(net.layers):
            if layer.type in STALE and net.grads[i] is not None:
                self.stale[i] = net.grads[i].copy()


def bn_gradient(layer, ref, i: int):
    """Darknet's gbias of a BN conv is 0 (no backward_bias on the CPU)."""
    assert not np.any(ref[f"gbias_{i:03d}"]), i
    return layer.grads["scales"], ref[f"gscale_{i:03d}"]


def check_gradients(net: Network, case: Path, x, truth) -> dict[str, float]:
    """Step 1's train-mode outputs, deltas and parameter gradients against grads.npz;
    returns each parameter gradient's error."""
    ref = np.load(case / "grads.npz")
    cost = net.forward_train(x, truth)
    assert cost == pytest.approx(step_costs(case)[0], rel=1e-5)
    for layer in net.layers:
        key = f"train_out_{layer.index:03d}"
        assert rel_error(net.outputs[layer.index], ref[key]) <= REL_BAR, key
    net.backward(keep=True)
    errors = {}
    for layer in net.layers:
        i = layer.index
        if layer.type not in ("convolutional", "connected") and net.grads[i] is not None:
            errors[f"delta_{i:03d}"] = rel_error(-net.grads[i], ref[f"delta_{i:03d}"])
        for ours, theirs in (("biases", "gbias"), ("weights", "gweight"),
                             ("scales", "gscale")):
            key = f"{theirs}_{i:03d}"
            if key not in ref:
                continue
            if ours == "biases" and getattr(layer, "batch_normalize", False):
                assert not np.any(ref[key]), key   # AB's CPU: no BN bias gradient
                continue
            errors[key] = rel_error(-layer.grads[ours], ref[key])
    return errors


def check_weights(net: Network, case: Path, x, truth) -> None:
    """Two train_steps; every array within REL_BAR of Darknet's change (as
    reference.check_sgd_steps, loading the trained files under dialect=alexeyab) or
    within one float32 step of the stored value: step 1 runs at lr/16 (burn_in), where a
    weight of ~1 moves by ~4e-5, so a 1-ulp rounding difference of the update is ~7e-4
    of the change."""
    before = {(lay.index, k): v.copy() for lay in net.layers for k, v in lay.params.items()}
    for step, name in ((1, "trained.weights"), (2, "trained2.weights")):
        cost = net.train_step(x, truth)
        assert net.seen == step
        assert cost == pytest.approx(step_costs(case)[step - 1], rel=1e-5), step
        ref = make(case)
        ref.load_weights(case / name)
        for lay, rlay in zip(net.layers, ref.layers):
            for k, v in lay.params.items():
                change = rlay.params[k] - before[(lay.index, k)]
                scale = max(np.abs(change).max(initial=0), 1e-6)
                diff = np.abs(v - rlay.params[k])
                ulp = np.spacing(np.abs(rlay.params[k]))
                err = np.where(diff <= ulp, 0, diff).max(initial=0) / scale
                assert err <= REL_BAR, (step, lay.index, k, err)


# --- the [yolo] heads ------------------------------------------------------------------

def yolo_meta(case: Path, step: int = 1) -> dict:
    """{layer: (l.cost, IOU, count, class_loss, iou_loss)} and total_bbox of a step."""
    lines = info(case)["train"]["steps_2"]
    at = [k for k, line in enumerate(lines) if line.startswith("step")]
    text = "\n".join(lines[at[step - 1]:(at[step] if step < len(at) else None)])
    out = {int(i): [float(c)] for i, c in re.findall(r"layer_cost (\d+) yolo ([\d.]+)", text)}
    for i, iou, count, cls, box in re.findall(
            r"Region (\d+) Avg \(IOU: ([\d.]+)\), count: (\d+), class_loss = ([\d.]+), "
            r"iou_loss = (-?[\d.]+)", text):
        out[int(i)] += [float(iou), int(count), float(cls), float(box)]
    out["total_bbox"] = int(re.search(r"total_bbox = (\d+)", text)[1])
    return out


def test_yolo_heads_delta_cost_and_statistics():
    net = make(YOLO)
    x, truth = inputs(YOLO, net)
    assert truth.shape == (1, 1200)                  # 6 floats per box, max=200
    ref = np.load(YOLO / "grads.npz")
    want = yolo_meta(YOLO)
    assert net.forward_train(x, truth) == pytest.approx(step_costs(YOLO)[0], rel=1e-5)
    bbox = 0
    for i in (8, 15):
        head = net.layers[i]
        cost, iou, count, cls_loss, _ = want[i]
        assert head.truth_size == 6 and head.max_boxes == 200
        assert head.cost == pytest.approx(cost, rel=1e-5), i
        assert rel_error(-head._grad, ref[f"delta_{i:03d}"]) <= 1e-5, i
        assert head.stats["iou"] == pytest.approx(iou, abs=2e-6), i
        assert head.stats["count"] == count
        # the printed class_loss: obj_normalizer * the squares of the non-box entries
        d = -head._grad.reshape(1, 3, 8, *head.out_shape[1:])
        assert float(np.sum(np.square(d[:, :, 4:], dtype=np.float64))) == \
            pytest.approx(cls_loss, rel=1e-5)
        bbox += head.stats["total_bbox"]
    assert bbox == want["total_bbox"]


def test_yolo_truth_with_five_floats_per_box_is_refused_under_alexeyab():
    from darkcfg.errors import DataError
    net = make(YOLO)
    x, _ = inputs(YOLO, net)
    with pytest.raises(DataError, match="6 values per box .x y w h class track_id"):
        net.forward_train(x, np.zeros((1, 1001), np.float32))


def test_yolo_gradients_match_darknet(monkeypatch):
    # the true gradient first: head 2's share of layer 6's gradient, which AB's conv 7
    # overwrites, reaches layers 0-6
    net = make(YOLO)
    x, truth = inputs(YOLO, net)
    errors = check_gradients(net, YOLO, x, truth)
    lost = [k for k, e in errors.items() if e > 0.01]
    assert {"gweight_000", "gweight_006", "gscale_006"} <= set(lost)
    assert all(int(k[-3:]) <= 6 for k in lost), lost
    net = make(YOLO)
    AbCpu(net, monkeypatch)
    errors = check_gradients(net, YOLO, x, truth)
    assert max(errors.values()) <= REL_BAR, errors


def test_yolo_weights_after_one_and_two_steps(monkeypatch):
    net = make(YOLO)
    AbCpu(net, monkeypatch)
    check_weights(net, YOLO, *inputs(YOLO, net))


# --- the classifiers ---------------------------------------------------------------------

@pytest.mark.parametrize("case", [MISH, CONNECTED], ids=lambda p: p.name)
def test_classifier_gradients_match_darknet(case, monkeypatch):
    net = make(case)
    x, truth = inputs(case, net)
    AbCpu(net, monkeypatch)
    errors = check_gradients(net, case, x, truth)
    assert max(errors.values()) <= REL_BAR, errors


@pytest.mark.parametrize("case", [MISH, CONNECTED], ids=lambda p: p.name)
def test_classifier_weights_after_one_and_two_steps(case, monkeypatch):
    net = make(case)
    AbCpu(net, monkeypatch)
    check_weights(net, case, *inputs(case, net))


def test_connected_is_trained_by_darkcfg():
    """AB's CPU never updates a [connected] (l.train = 0); darkcfg does: its step
    changes the layer by the SGD rule on Darknet's own gradient (gweight_002)."""
    net = make(CONNECTED)
    x, truth = inputs(CONNECTED, net)
    ref = np.load(CONNECTED / "grads.npz")
    w0 = net.layers[2].params["weights"].copy()
    net.train_step(x, truth)
    o = net.graph.net.opts
    expect = w0 + o["learning_rate"] * (ref["gweight_002"].reshape(w0.shape)
                                        - o["decay"] * w0)
    assert rel_error(net.layers[2].params["weights"] - w0, expect - w0) <= 1e-4
