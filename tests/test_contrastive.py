"""[contrastive] in AlexeyAB's classifier mode: its deltas and cost against a loop-by-loop
transcription of AB's C (src/softmax_layer.c: forward_contrastive_layer, src/blas.c:
P_constrastive, grad_contrastive_loss_positive/negative), the cfg that crashes AB's parser
loads, and a cfg with [net] contrastive=1 trains on pairs of views."""
from __future__ import annotations

import math

import numpy as np
import pytest

from darkcfg.errors import CfgError

from .helpers import tiny_net


def ab_contrastive(x: np.ndarray, truth: np.ndarray, classes: int, temperature: float,
                   thresh: float, cls_normalizer: float, max_delta: float):
    """(delta (N, C, H, W), cost, contrast accuracy) by AB's loops, in float64."""
    n, c, h, w = x.shape
    labels_b = [b // 2 for b in range(n)]
    for b in range(n):
        for k in range(classes):
            if truth[b * classes + k] > thresh:
                labels_b[b] = k                  # the last class above the threshold
    wh = h * w
    s = n * wh
    labels = [labels_b[i // wh] for i in range(s)]
    flat = x.reshape(-1).astype(np.float64)
    z = [[flat[(i // wh) * c * wh + m * wh + i % wh] for m in range(c)] for i in range(s)]

    def length(a):
        return math.sqrt(sum(v * v for v in a))

    cos = [[0.0] * s for _ in range(s)]
    ex = [[0.0] * s for _ in range(s)]
    for i in range(s):
        for j in range(s):
            if i != j:
                cos[i][j] = sum(a * b for a, b in zip(z[i], z[j])) / (length(z[i]) *
                                                                     length(z[j]))
                ex[i][j] = math.exp(cos[i][j] / temperature)
    p = [[0.0] * s for _ in range(s)]
    for i in range(s):
        for j in range(s):
            if i != j:
                p[i][j] = ex[i][j] / sum(ex[k][j] for k in range(s) if k != i)
    delta = np.zeros(n * c * wh)
    for i in range(s):
        base = (i // wh) * c * wh + i % wh
        big_n = sum(labels[i] == labels[j] for j in range(s))
        mult = 1 / ((big_n - 1) * temperature * length(z[i])) if big_n > 1 else 0.0
        for j in range(s):                                       # positive
            if i != j and labels[i] == labels[j]:
                for m in range(c):
                    delta[base + m * wh] -= mult * (cos[i][j] * z[i][m] - z[j][m]) * \
                        (1 - p[i][j])
        for j in range(s):                                       # negative
            if i != j and labels[i] == labels[j]:
                for k in range(s):
                    if k != i and k != j and labels[k] >= 0:
                        for m in range(c):
                            delta[base + m * wh] -= mult * (z[k][m] - cos[i][k] * z[i][m]) \
                                * p[i][k]
    delta = np.clip(delta * cls_normalizer, -max_delta, max_delta)
    good = counted = 0
    for i in range(s):
        same = [cos[i][j] for j in range(s) if j != i and labels[j] == labels[i]]
        diff = [cos[i][j] for j in range(s) if labels[j] != labels[i]]
        if same and diff:
            counted += 1
            good += max(same) > max(diff)
    return delta.reshape(x.shape), float(np.sum(delta ** 2)), good / counted


@pytest.mark.parametrize("shape,temperature,thresh,normalizer,max_delta", [
    ((6, 5, 1, 1), 1.0, 0.0, 1.0, math.inf),
    ((6, 4, 1, 1), 0.1, 0.0, 2.0, 0.5),          # a small temperature, clipped deltas
    ((4, 3, 2, 2), 0.5, 0.0, 1.0, math.inf),     # every pixel a sample
    ((6, 5, 1, 1), 0.5, 0.3, 1.0, math.inf),     # label_smooth_eps: weak truths lose
])
def test_deltas_and_cost_equal_abs_loops(shape, temperature, thresh, normalizer, max_delta):
    rng = np.random.default_rng(3)
    n, c, h, w = shape
    x = rng.standard_normal(shape).astype(np.float32)
    classes = 3
    truth = np.eye(classes, dtype=np.float32)[[0, 0, 1, 1, 2, 0][:n]]
    if thresh:
        truth[4] = [0.2, 0.25, 0.0]               # nothing above 0.3: keeps its pair id 2
    clip = "" if math.isinf(max_delta) else f"max_delta={max_delta}\n"
    net = tiny_net(f"[contrastive]\nclasses={classes}\ntemperature={temperature}\n"
                   f"cls_normalizer={normalizer}\n{clip}", c=c, h=h, w=w)
    net.graph.net.opts["label_smooth_eps"] = thresh      # [net] label_smooth_eps
    net.init_weights(0)
    cost = net.forward_train(x, truth)
    net.backward(keep=True)
    layer = net.layers[-1]
    delta, want_cost, accuracy = ab_contrastive(x, truth.reshape(-1), classes, temperature,
                                                thresh, normalizer, max_delta)
    assert cost == pytest.approx(want_cost, rel=1e-5)
    # darkcfg carries dLoss/dx: AB's delta with the sign turned
    assert np.allclose(-layer._grad, delta, rtol=1e-5, atol=1e-6)
    assert layer.stats["accuracy"] == pytest.approx(accuracy)
    if not math.isinf(max_delta):
        assert np.abs(delta).max() == pytest.approx(max_delta)     # the clip is exercised
    assert np.array_equal(net.forward(x), x)                       # passes its input


def test_the_cfg_abs_parser_crashes_on_loads_and_detection_mode_is_refused(tmp_path):
    from darkcfg.graph import load_graph
    from darkcfg.network import Network
    cfg = tmp_path / "c.cfg"
    cfg.write_text("[net]\nwidth=4\nheight=4\nchannels=1\nbatch=4\n[connected]\noutput=3\n"
                   "activation=linear\n[contrastive]\nclasses=2\n")
    Network(load_graph(cfg))                          # AB: NULL yolo_layer dereferenced
    cfg.write_text("[net]\nwidth=4\nheight=4\nchannels=1\n[connected]\noutput=3\n"
                   "activation=linear\n[contrastive]\nclasses=2\nyolo_layer=-1\n")
    with pytest.raises(CfgError, match=r"\[contrastive\] layers cannot run in darkcfg in "
                       r"detection mode"):
        Network(load_graph(cfg))


def test_classes_must_be_the_truths_width():
    net = tiny_net("[contrastive]\nclasses=5\n", c=3, h=1, w=1)
    net.init_weights(0)
    x = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)
    with pytest.raises(CfgError, match=r"'classes=5'.*the truth has 3 classes per image"):
        net.forward_train(x, np.eye(3, dtype=np.float32)[[0, 0, 1, 2]])
    # what it reads per image is what the summary reports as its truths (not its 3 outputs)
    assert net.graph.truths == 5
    net.forward_train(x, np.eye(net.graph.truths, dtype=np.float32)[[0, 0, 1, 2]])


CFG = """[net]
batch=8
subdivisions={subdivisions}
width=8
height=8
channels=1
learning_rate=0.01
momentum=0.9
max_batches=3
contrastive=1
contrastive_jit_flip=1
flip=1
min_crop=8
max_crop=10
[convolutional]
filters=4
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[connected]
output=6
activation=linear
[contrastive]
classes=3
temperature=0.5
"""


def test_contrastive_training_sees_two_views_of_each_image(tmp_path, monkeypatch):
    from darkcfg.network import Network
    from darkcfg.train.classifier import train
    from darkcfg.train.loop import Step, TrainOptions

    from .toy_classifier import make_data
    data = make_data(tmp_path)
    cfg = tmp_path / "con.cfg"
    cfg.write_text(CFG.format(subdivisions=2))
    seen, events, said = [], [], []
    real = Network.train_step

    def recording(self, x, truth):
        seen.append((x.copy(), truth.copy()))
        return real(self, x, truth)

    monkeypatch.setattr(Network, "train_step", recording)
    train(str(data), str(cfg), None, TrainOptions(chart_every=1000), log=said.append,
          progress=events.append)
    assert len(seen) == 3
    for x, truth in seen:
        assert x.shape == (8, 1, 8, 8)
        assert np.array_equal(truth[0::2], truth[1::2])        # pairs: one image, one label
        assert any(not np.array_equal(a, b) for a, b in zip(x[0::2], x[1::2]))  # two views
    steps = [e for e in events if isinstance(e, Step)]
    assert all(s.status.startswith("  contrast acc ") and np.isfinite(s.loss) for s in steps)
    assert not any("contrastive=1 is not computed" in m for m in said)


def test_contrastive_pairs_need_an_even_mini_batch(tmp_path):
    from darkcfg.train.classifier import train
    from darkcfg.train.loop import TrainOptions

    from .toy_classifier import make_data
    data = make_data(tmp_path)
    cfg = tmp_path / "con.cfg"
    cfg.write_text(CFG.format(subdivisions=8).replace("batch=8", "batch=24"))
    with pytest.raises(CfgError, match=r"con.cfg:10: .*'contrastive=1'.*batch/subdivisions "
                       r"is 3 \(odd\)"):
        train(str(data), str(cfg), None, TrainOptions(quiet=True))
