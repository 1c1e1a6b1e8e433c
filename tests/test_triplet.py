"""[triplet]: the loss and the fraction of active triplets against a slow loop over every
triplet, and the gradient against finite differences for each distance and miner, on
random embeddings, embeddings with ties (duplicates), all-easy and all-hard batches."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from darkcfg.errors import CfgError

from .helpers import check_gradient, tiny_net

DISTANCES = ("euclidean", "squared", "cosine")
MINERS = ("all", "hard", "semihard")
CLASSES = np.repeat(np.arange(3), 4)                 # 12 images: 3 classes x 4
D = 6
ROOT = Path(__file__).resolve().parent.parent


# --- a slow reference: plain loops over images, distances one pair at a time -------------

def slow_distance(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if kind == "cosine":
        return 1.0 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    sq = float(np.sum((a - b) ** 2))
    return sq if kind == "squared" else float(np.sqrt(sq))


def slow_triplet(x: np.ndarray, labels: np.ndarray, margin: float, kind: str, miner: str,
                 normalize: bool) -> tuple[float, float]:
    """(mean loss, fraction of active triplets) as the module docstring of
    darkcfg/layers/triplet.py defines them, by loops."""
    e = [v / np.linalg.norm(v) if normalize else v for v in x.astype(np.float64)]
    n = len(e)

    def dist(i, j):
        return slow_distance(e[i], e[j], kind)

    pos = [(a, p) for a, p in itertools.product(range(n), repeat=2)
           if a != p and labels[a] == labels[p]]
    negs = {a: [k for k in range(n) if labels[k] != labels[a]] for a in range(n)}
    losses = []
    if miner == "all":
        losses = [dist(a, p) - dist(a, k) + margin for a, p in pos for k in negs[a]]
        active = [v for v in losses if v > 0]
        return (sum(active) / len(active) if active else 0.0), len(active) / len(losses)
    if miner == "hard":
        for a in range(n):
            ps = [p for q, p in pos if q == a]
            if ps and negs[a]:
                far = max(dist(a, p) for p in ps)
                near = min(dist(a, k) for k in negs[a])
                losses.append(far - near + margin)
    else:
        for a, p in pos:
            dap = dist(a, p)
            beyond = [dist(a, k) for k in negs[a] if dist(a, k) > dap]
            dan = min(beyond) if beyond else max(dist(a, k) for k in negs[a])
            losses.append(dap - dan + margin)
    hinge = [max(v, 0.0) for v in losses]
    return sum(hinge) / len(hinge), sum(v > 0 for v in losses) / len(losses)


# --- batches ---------------------------------------------------------------------------

def random_batch(rng):
    return rng.standard_normal((len(CLASSES), D))


def tied_batch(rng):
    """Duplicates: two images of one class (distance 0 between them), one embedding
    shared by images of two classes (a negative at distance 0), and so equal distances
    from everything else to each duplicate."""
    x = rng.standard_normal((len(CLASSES), D))
    x[1] = x[0]
    x[6] = x[2]
    x[11] = x[10]
    return x


def easy_batch(rng):
    """Tight, far-apart clusters, one per class: no triplet is active."""
    return 5.0 * np.eye(D)[CLASSES] + 0.02 * rng.standard_normal((len(CLASSES), D))


def hard_batch(rng):
    """Four clusters on orthogonal axes, each holding one image of every class: every
    negative of a cluster is nearer than every positive, so every triplet is active."""
    where = np.tile(np.arange(4), 3)              # image i sits in cluster i % 4
    return 3.0 * np.eye(D)[where] + 0.05 * rng.standard_normal((len(CLASSES), D))


BATCHES = {"random": random_batch, "ties": tied_batch, "easy": easy_batch,
           "hard": hard_batch}


def net_for(kind: str, miner: str, margin: float, normalize: int = 0):
    net = tiny_net(f"[empty]\n[triplet]\nmargin={margin}\ndistance={kind}\nmining={miner}\n"
                   f"normalize={normalize}\n", c=D, h=1, w=1)
    net.init_weights(0)
    return net


def margin_for(kind: str, batch: str) -> float:
    # the all-hard batch needs a margin above its noise; squared distances are larger
    return {"squared": 2.0, "euclidean": 0.5, "cosine": 0.2}[kind] if batch == "hard" \
        else {"squared": 1.0, "euclidean": 0.3, "cosine": 0.1}[kind]


def truth_of(labels: np.ndarray) -> np.ndarray:
    return np.eye(5, dtype=np.float32)[labels]     # one-hot rows, more classes than used


@pytest.mark.parametrize("normalize", [0, 1])
@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("miner", MINERS)
@pytest.mark.parametrize("kind", DISTANCES)
def test_loss_equals_slow_loop(kind, miner, batch, normalize):
    rng = np.random.default_rng(1)
    x = BATCHES[batch](rng).astype(np.float32)
    margin = margin_for(kind, batch)
    net = net_for(kind, miner, margin, normalize)
    cost = net.forward_train(x.reshape(-1, D, 1, 1), truth_of(CLASSES))
    layer = net.layers[-1]
    loss, active = slow_triplet(x, CLASSES, margin, kind, miner, bool(normalize))
    # the cost is the mean loss times the mini-batch (Darknet's loss per image: the mean)
    # (1e-6: the euclidean distance of coinciding embeddings is 1e-6, sqrt(0 + 1e-12))
    assert cost == pytest.approx(len(x) * loss, rel=1e-6, abs=1e-9)
    assert layer.stats["loss"] == pytest.approx(loss, rel=1e-6, abs=1e-12)
    assert layer.stats["active"] == pytest.approx(active)
    if batch == "easy":
        assert loss == 0 and active == 0
    if batch == "hard":
        assert active == 1 and loss > margin / 2
    # the output is the embedding the loss saw
    out = net.outputs[layer.index].reshape(len(x), D)
    want = x / np.linalg.norm(x, axis=1, keepdims=True) if normalize else x
    assert np.allclose(out, want, atol=1e-6)


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("miner", MINERS)
@pytest.mark.parametrize("kind", DISTANCES)
def test_gradient_by_finite_differences(kind, miner, batch):
    rng = np.random.default_rng(2)
    x = np.ascontiguousarray(BATCHES[batch](rng).astype(np.float32).reshape(-1, D, 1, 1))
    truth = truth_of(CLASSES)
    normalize = int(batch == "random" and kind != "cosine")   # through the L2 norm too
    net = net_for(kind, miner, margin_for(kind, batch), normalize)
    layer = net.layers[-1]
    net.forward_train(x, truth)
    net.backward(keep=True)
    grad = net.grads[0].copy()                   # [empty]: d cost / d input
    chosen = layer.selection.copy()

    def cost() -> float:
        return net.forward_train(x, truth)

    def same_selection() -> bool:
        # the mined triplets (and which are active) stay those of the unperturbed batch:
        # the loss is smooth only between changes of the choice
        cost()
        return np.array_equal(layer.selection, chosen)

    picked = check_gradient(cost, x, grad, eps=1e-3, rtol=2e-3, atol=1e-6,
                            scale=max(np.abs(grad).max(), 1e-3), usable=same_selection,
                            least=x.size // 2, what=(kind, miner, batch))
    if batch == "easy":
        assert not grad.any()
    else:
        assert np.abs(grad.reshape(-1)[picked]).max() > 1e-2   # a real gradient checked


def test_rows_without_a_class_take_no_part():
    # an all-zero truth row (no class): never an anchor, positive or negative
    x = random_batch(np.random.default_rng(3)).astype(np.float32)
    labels = CLASSES.copy()
    truth = truth_of(labels)
    truth[5] = 0
    net = net_for("euclidean", "all", 0.3)
    cost = net.forward_train(x.reshape(-1, D, 1, 1), truth)
    keep = np.arange(len(x)) != 5
    loss, _ = slow_triplet(x[keep], labels[keep], 0.3, "euclidean", "all", False)
    assert cost == pytest.approx(len(x) * loss, rel=1e-9)


def test_what_training_consumes_is_a_class_label_per_image():
    # the summary's truths is what the net reads per image: one class label, not the
    # embedding's width (Darknet's rule, the last layer's outputs, would say 6 here)
    x = random_batch(np.random.default_rng(5)).astype(np.float32).reshape(-1, D, 1, 1)
    net = net_for("euclidean", "all", 0.3)
    assert net.graph.truths == 1 and net.graph.layers[-1].outputs == D
    index = CLASSES.astype(np.float32).reshape(-1, net.graph.truths)
    index[5] = -1                                  # negative: no class
    one_hot = truth_of(CLASSES)
    one_hot[5] = 0
    keep = np.arange(len(x)) != 5
    loss, _ = slow_triplet(x[keep].reshape(-1, D), CLASSES[keep], 0.3, "euclidean", "all",
                           False)
    assert net.forward_train(x, index) == pytest.approx(len(x) * loss, rel=1e-9)
    assert net.forward_train(x, one_hot) == pytest.approx(len(x) * loss, rel=1e-9)


def test_summary_reports_one_truth_a_class_label():
    from darkcfg.graph import load_graph
    from darkcfg.summary import format_table
    text = format_table(load_graph(ROOT / "cfg" / "fashion_siamese.cfg"))
    assert "outputs 64 truths 1 params" in text
    assert "truth: a class label per image" in text


def test_inference_has_no_loss_and_passes_the_embedding():
    x = random_batch(np.random.default_rng(4)).astype(np.float32).reshape(-1, D, 1, 1)
    net = net_for("cosine", "hard", 0.2, normalize=1)
    y = net.forward(x)
    assert net.layers[-1].cost is None
    assert np.allclose(np.linalg.norm(y.reshape(len(x), -1), axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("key,value", [("mining", "hardest"), ("distance", "manhattan"),
                                       ("margin", "-1")])
def test_bad_keys_are_refused_by_name(key, value):
    with pytest.raises(CfgError, match=key):
        tiny_net(f"[triplet]\n{key}={value}\n", c=D, h=1, w=1)


# --- P x K batches ---------------------------------------------------------------------

TRIPLET_CFG = """[net]
batch=12
subdivisions=2
width=8
height=8
channels=1
learning_rate=0.02
momentum=0.9
decay=0.0005
max_batches={max_batches}
flip=1
[convolutional]
filters=4
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[connected]
output=8
activation=linear
[triplet]
margin=0.2
mining=hard
normalize=1
{pk}
"""


def test_pk_indices_hold_p_classes_of_k_images_each():
    from darkcfg.data.classifier import pk_indices
    labels = np.array([0] * 10 + [1] * 3 + [2] * 8 + [4] * 6)       # no class 3
    idx = pk_indices(labels, 3, 4, 5, np.random.default_rng(7))
    assert idx.shape == (5 * 3 * 4,)
    for block in idx.reshape(5, 3, 4):                # mini-batch, class, image
        classes = labels[block]
        assert (classes == classes[:, :1]).all()                  # K images of one class
        assert len(set(classes[:, 0])) == 3                       # P different classes
        for own in block:
            if labels[own[0]] != 1:                   # class 1 has 3 < K images
                assert len(set(own)) == 4             # otherwise without replacement
    again = pk_indices(labels, 3, 4, 5, np.random.default_rng(7))
    other = pk_indices(labels, 3, 4, 5, np.random.default_rng(8))
    assert np.array_equal(idx, again) and not np.array_equal(idx, other)


def test_pk_indices_refuse_more_classes_than_the_data_has():
    from darkcfg.data.classifier import pk_indices
    from darkcfg.errors import DataError
    with pytest.raises(DataError, match=r"train.npz: classes_per_batch=4, but the training "
                       r"images hold only 3 classes \(0, 1, 2\)"):
        pk_indices(np.arange(9) % 3, 4, 2, 1, np.random.default_rng(0), "train.npz")


def record_training(tmp_path, monkeypatch, seed: int, pk: str = "images_per_class=3"):
    """Train the triplet toy 3 iterations; returns the (x, truth) of every train_step."""
    from darkcfg.network import Network
    from darkcfg.train.classifier import train
    from darkcfg.train.loop import TrainOptions

    from .toy_classifier import make_data
    tmp_path.mkdir(exist_ok=True)
    data = make_data(tmp_path)
    cfg = tmp_path / "trip.cfg"
    cfg.write_text(TRIPLET_CFG.format(max_batches=3, pk=pk))
    seen, steps = [], []
    real = Network.train_step

    def recording(self, x, truth):
        seen.append((x.copy(), truth.copy()))
        return real(self, x, truth)

    monkeypatch.setattr(Network, "train_step", recording)
    try:
        train(str(data), str(cfg), None, TrainOptions(seed=seed, chart_every=1000),
              log=lambda *a: None, progress=steps.append)
    finally:
        monkeypatch.undo()
    return seen, steps


def test_training_batches_are_p_classes_of_k_images_seeded(tmp_path, monkeypatch):
    first, steps = record_training(tmp_path / "a", monkeypatch, seed=4)
    assert len(first) == 3
    for x, truth in first:
        assert x.shape == (12, 1, 8, 8)
        labels = truth.argmax(1).reshape(2, 2, 3)     # subdivision, class, image (K = 3)
        assert (labels == labels[..., :1]).all()
        assert all(len(set(mini[:, 0])) == 2 for mini in labels)          # P = 6 / 3
    # the progress line carries the fraction of active triplets
    from darkcfg.train.loop import History, Step
    steps = [s for s in steps if isinstance(s, Step)]
    assert all(s.status.startswith("  active ") for s in steps)
    # ... and the chart's history (kept in the checkpoint's .state for a resume)
    with np.load(tmp_path / "a" / "backup" / "trip_final.weights.state") as z:
        history = History.from_arrays({k: z[k] for k in z.files})
    assert history.stat == pytest.approx([float(s.status.split()[1]) for s in steps],
                                         abs=5e-4)
    again, _ = record_training(tmp_path / "b", monkeypatch, seed=4)
    other, _ = record_training(tmp_path / "c", monkeypatch, seed=5)
    assert len(again) == len(other) == 3
    for (xa, ta), (xb, tb) in zip(first, again):
        assert np.array_equal(xa, xb) and np.array_equal(ta, tb)
    assert any(not np.array_equal(ta, tc) for (_, ta), (_, tc) in zip(first, other))


@pytest.mark.parametrize("pk,message", [
    ("classes_per_batch=4\nimages_per_class=2",
     r"trip.cfg:\d+: .*'classes_per_batch=4'.*classes_per_batch=4 x images_per_class=2 = 8 "
     r"images, but a mini-batch \(batch/subdivisions\) holds 6"),
    ("images_per_class=4", r"trip.cfg:\d+: .*'images_per_class=4'.*mini-batch .* of 6 cannot "
     r"be classes_per_batch=1 x images_per_class=4")])
def test_p_times_k_must_be_the_mini_batch(tmp_path, monkeypatch, pk, message):
    with pytest.raises(CfgError, match=message):
        record_training(tmp_path, monkeypatch, seed=0, pk=pk)


def test_history_of_a_state_file_without_the_statistic():
    from darkcfg.train.loop import History
    kept = History([1, 2], [0.5, 0.4], [0.5, 0.49], [(2, 0.7)], [0.25, 0.5])
    arrays = kept.arrays()
    assert History.from_arrays(arrays) == kept
    del arrays["history.stat"]                    # written before the statistic was kept
    old = History.from_arrays(arrays)
    assert old.iterations == [1, 2] and np.isnan(old.stat).all() and len(old.stat) == 2
