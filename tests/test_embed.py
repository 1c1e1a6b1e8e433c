"""Embeddings: the retrieval measures of `darkcfg valid` (recall@1, recall@5, mAP@R, the
verification threshold) on a hand-made set with the answer worked out by hand and against
slow loops; the PCA projection; `embed`, `compare` and `valid` end to end on a tiny
[triplet] net."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from darkcfg.embed import distances_to, draw_scatter, pca_2d, retrieval

from .helpers import darkcfg
from .test_triplet import TRIPLET_CFG, slow_distance


def test_retrieval_on_a_hand_made_line():
    # five images on a line: A at 0, 1 and 10, B at 3 and 4.
    # queries 0 and 1: ranks A B B A (R = 2): hit, AP (1/1) / 2 = 0.5
    # queries 3 and 4 (B): the other B first (R = 1): hit, AP 1
    # query 10 (A): B B A A: miss at 1, hit within 5, AP 0
    # pairs: same 1, 10, 9 (A) and 1 (B); different 3, 4, 2, 3, 7, 6: "same iff d <= 1"
    # finds 2 of 4 same pairs and rejects all 6 different ones: (0.5 + 1) / 2 = 0.75
    emb = np.array([[0.0], [1.0], [3.0], [4.0], [10.0]])
    labels = np.array([0, 0, 1, 1, 0])
    for chunk in (512, 2):                        # one block, and blocks of two queries
        r = retrieval(emb, labels, "euclidean", chunk=chunk)
        assert r.images == 5
        assert r.recall_at_1 == pytest.approx(0.8)
        assert r.recall_at_5 == pytest.approx(1.0)
        assert r.map_at_r == pytest.approx(0.6)
        assert r.threshold == pytest.approx(1.0)
        assert r.accuracy == pytest.approx(0.75)


def slow_retrieval(emb, labels, kind):
    """(recall@1, recall@5, mAP@R, threshold, balanced accuracy) by loops."""
    n = len(emb)
    d = [[slow_distance(emb[i], emb[j], kind) for j in range(n)] for i in range(n)]
    r1 = r5 = 0
    aps = []
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: (d[i][j], j))
        rel = [labels[j] == labels[i] for j in others]
        r1 += rel[0]
        r5 += any(rel[:5])
        big_r = sum(rel)
        if big_r:
            aps.append(sum(sum(rel[:k + 1]) / (k + 1) for k in range(big_r) if rel[k])
                       / big_r)
    pairs = [(d[i][j], labels[i] == labels[j]) for i in range(n) for j in range(i + 1, n)]
    n_same = sum(s for _, s in pairs)
    n_diff = len(pairs) - n_same
    best = (-1.0, None)
    for t in sorted({p for p, _ in pairs}):
        tpr = sum(s and p <= t for p, s in pairs) / n_same
        tnr = sum((not s) and p > t for p, s in pairs) / n_diff
        if (tpr + tnr) / 2 > best[0]:
            best = ((tpr + tnr) / 2, t)
    return r1 / n, r5 / n, sum(aps) / len(aps), best[1], best[0]


@pytest.mark.parametrize("kind,ties", [("euclidean", True), ("squared", True),
                                       ("cosine", False), ("euclidean", False)])
def test_retrieval_equals_slow_loops(kind, ties):
    rng = np.random.default_rng(6)
    n = 40
    # small integer coordinates give many exactly equal distances (ties broken by index)
    emb = rng.integers(-2, 3, (n, 3)).astype(np.float64) if ties else \
        rng.standard_normal((n, 5))
    labels = rng.integers(0, 4, n)
    labels[7] = 9                                 # a class with one image: no AP for it
    r = retrieval(emb.astype(np.float32), labels, kind, chunk=16)
    want = slow_retrieval(emb, labels, kind)
    got = (r.recall_at_1, r.recall_at_5, r.map_at_r, r.threshold, r.accuracy)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_distances_to_match_the_definitions():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    for kind in ("euclidean", "squared", "cosine"):
        want = [[slow_distance(x, y, kind) for y in b] for x in a]
        assert np.allclose(distances_to(a, b, kind), want, atol=1e-9)


def test_pca_finds_the_long_axis():
    # points spread along (1, 1, 0) with a little spread along (0, 0, 1): the first
    # component is the position along (1, 1, 0) / sqrt 2, the second along z
    t = np.linspace(-3, 3, 7)
    z = np.array([0.1, -0.1, 0.0, 0.0, 0.0, -0.1, 0.1])        # mean 0, uncorrelated with t
    emb = np.stack([t, t, z], 1) + 5.0
    xy = pca_2d(emb)
    assert np.allclose(xy[:, 0], t * np.sqrt(2), atol=1e-9)
    assert np.allclose(np.abs(xy[:, 1]), np.abs(z - z.mean()), atol=1e-9)


def test_scatter_draws_every_class_in_its_colour(tmp_path):
    from darkcfg.detection.draw import class_colour
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(c * 4, 0.3, (20, 3)) for c in range(3)])
    labels = np.repeat([0, 2, 5], 20)
    path = tmp_path / "s.png"
    draw_scatter(str(path), emb, labels, [f"name{i}" for i in range(6)], size=(400, 300))
    im = np.asarray(Image.open(path).convert("RGB"))
    assert im.shape == (300, 400, 3)
    colours = {tuple(c) for c in im.reshape(-1, 3)}
    for c in (0, 2, 5):
        assert class_colour(c) in colours
    assert class_colour(1) not in colours


# --- end to end --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The toy triplet net trained 30 iterations on three classes of 8 x 8 images, and
    PNGs of six of its images."""
    from darkcfg.train.classifier import train
    from darkcfg.train.loop import TrainOptions

    from .toy_classifier import make_data
    folder = tmp_path_factory.mktemp("embed")
    data = make_data(folder, n=60)
    (folder / "names.txt").write_text("row\ncolumn\ndiagonal\n")
    data.write_text(data.read_text() + "names=names.txt\n")
    cfg = folder / "trip.cfg"
    cfg.write_text(TRIPLET_CFG.format(max_batches=30, pk="images_per_class=3"))
    weights = train(str(data), str(cfg), None, TrainOptions(quiet=True, chart_every=1000),
                    log=lambda *a: None)
    with np.load(folder / "toy.npz") as z:
        x, y = z["x"], z["y"]
    pngs = []
    for i in range(6):
        p = folder / f"img{i}_{y[i]}.png"
        Image.fromarray(x[i]).save(p)
        pngs.append(p)
    return folder, data, cfg, weights, pngs, y[:6]


def test_embed_writes_rows_in_input_order_and_lists_failures(trained, tmp_path):
    _, _, cfg, weights, pngs, _ = trained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "emb.npy"
    res = darkcfg("embed", cfg, weights, pngs[0], bad, pngs[1], pngs[2], "--output", out)
    assert res.returncode == 1, res.stderr
    assert "broken.png" in res.stderr and "image 1, left out" in res.stderr
    emb = np.load(out)
    assert emb.shape == (3, 8)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)    # normalize=1
    failed = (tmp_path / "emb.failed.txt").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith(f"1\t{bad}\t")
    # the same rows as each image alone, printed
    alone = darkcfg("embed", cfg, weights, pngs[2])
    assert alone.returncode == 0, alone.stderr
    values = np.array(alone.stdout.split(":", 1)[1].split(), float)
    assert np.allclose(values, emb[2], atol=1e-5)
    # an inner layer by index: the [connected]'s 8 outputs before the normalisation
    inner = darkcfg("embed", cfg, weights, pngs[2], "--layer", "-2")
    raw = np.array(inner.stdout.split(":", 1)[1].split(), float)
    assert np.allclose(raw / np.linalg.norm(raw), emb[2], atol=1e-5)


def test_valid_then_compare(trained, tmp_path):
    _, data, cfg, weights, pngs, _ = trained
    scatter = tmp_path / "scatter.png"
    res = darkcfg("valid", data, cfg, weights, "--scatter", scatter)
    assert res.returncode == 0, res.stderr
    assert "60 images" in res.stdout and "recall@1" in res.stdout and "mAP@R" in res.stdout
    assert Image.open(scatter).size == (860, 640)
    stored = json.loads(weights.with_name(f"{weights.name}.threshold").read_text())
    assert stored["distance"] == "euclidean" and stored["layer"] == 3
    # the numbers printed are those of the embeddings `embed` gives (same net, same images)
    from darkcfg.data.classifier import open_dataset, read_data_config
    from darkcfg.embed import embed_dataset
    from darkcfg.network import Network
    net = Network.load(cfg, weights)
    split = open_dataset(read_data_config(data), "valid")
    want = slow_retrieval(embed_dataset(net, split, 3).astype(np.float64), split.labels,
                          "euclidean")
    assert f"recall@1 {100 * want[0]:.2f}%" in res.stdout
    assert f"mAP@R {100 * want[2]:.2f}%" in res.stdout
    assert stored["threshold"] == pytest.approx(want[3], rel=1e-5)
    assert stored["accuracy"] == pytest.approx(want[4])
    # compare: the distance, and same/different under the stored threshold
    a, b = pngs[0], pngs[1]
    res = darkcfg("compare", cfg, weights, a, b)
    assert res.returncode == 0, res.stderr
    d = float(res.stdout.split()[1])
    emb = np.load(_embed(cfg, weights, [a, b], tmp_path))
    assert d == pytest.approx(float(np.linalg.norm(emb[0] - emb[1])), rel=1e-4, abs=1e-6)
    verdict = "same" if d <= stored["threshold"] else "different"
    assert res.stdout.splitlines()[1].startswith(f"{verdict} (threshold ")
    forced = darkcfg("compare", cfg, weights, a, b, "--threshold", str(d + 1e-3))
    assert forced.stdout.splitlines()[1].startswith("same (threshold")
    forced = darkcfg("compare", cfg, weights, a, b, "--threshold", str(max(d - 1e-3, 0)))
    assert forced.stdout.splitlines()[1].startswith("different (threshold")
    # a threshold chosen for another layer is not applied to this one
    other = darkcfg("compare", cfg, weights, a, b, "--layer", "1")
    assert other.returncode == 2 and "pass --threshold" in other.stderr


def test_valid_on_an_inner_layer_and_compare_uses_it(trained, tmp_path):
    # `valid --layer 1` measures the [maxpool]'s 4 x 4 x 4 map; the threshold remembers
    # the layer and `compare` (no --layer) measures that layer's distance under it
    _, data, cfg, weights, pngs, _ = trained
    copy = tmp_path / "w.weights"
    copy.write_bytes(weights.read_bytes())
    res = darkcfg("valid", data, cfg, copy, "--layer", "1", "--scatter", tmp_path / "s.png")
    assert res.returncode == 0, res.stderr
    stored = json.loads((tmp_path / "w.weights.threshold").read_text())
    assert stored["layer"] == 1
    # a second `valid` at another layer keeps that file unless asked to replace it
    kept = (tmp_path / "w.weights.threshold").read_bytes()
    res = darkcfg("valid", data, cfg, copy, "--scatter", tmp_path / "s.png")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "w.weights.threshold").read_bytes() == kept
    assert "w.weights.threshold kept (threshold " in res.stdout
    assert "at layer 1," in res.stdout and "--save-threshold" in res.stdout
    res = darkcfg("valid", data, cfg, copy, "--scatter", tmp_path / "s.png",
                  "--save-threshold")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "w.weights.threshold").read_text())["layer"] == 3
    res = darkcfg("valid", data, cfg, copy, "--layer", "1", "--scatter", tmp_path / "s.png",
                  "--save-threshold")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "w.weights.threshold").read_bytes() == kept    # same run, same bytes
    from darkcfg.data.classifier import open_dataset, read_data_config
    from darkcfg.embed import embed_dataset
    from darkcfg.network import Network
    net = Network.load(cfg, copy)
    split = open_dataset(read_data_config(data), "valid")
    emb = embed_dataset(net, split, 1).astype(np.float64)
    assert emb.shape[1] == 4 * 4 * 4
    want = slow_retrieval(emb, split.labels, "euclidean")
    assert f"recall@1 {100 * want[0]:.2f}%" in res.stdout
    assert stored["threshold"] == pytest.approx(want[3], rel=1e-5)
    res = darkcfg("compare", cfg, copy, pngs[0], pngs[1])
    assert res.returncode == 0, res.stderr
    out = tmp_path / "inner.npy"
    assert darkcfg("embed", cfg, copy, pngs[0], pngs[1], "--layer", "1",
                   "--output", out).returncode == 0
    inner = np.load(out)
    d = float(np.linalg.norm(inner[0] - inner[1]))
    assert res.stdout.startswith("distance ") and "layer 1)" in res.stdout
    assert float(res.stdout.split()[1]) == pytest.approx(d, rel=1e-4, abs=1e-6)


def test_valid_layer_is_refused_for_a_classifier(tmp_path):
    from .toy_classifier import make_data
    data = make_data(tmp_path, n=12)
    cfg = tmp_path / "c.cfg"
    cfg.write_text("[net]\nbatch=4\nwidth=8\nheight=8\nchannels=1\n[connected]\n"
                   "output=3\n[softmax]\n")
    from darkcfg.network import Network
    net = Network.load(cfg)
    net.init_weights(0)
    net.save_weights(tmp_path / "c.weights")
    res = darkcfg("valid", data, cfg, tmp_path / "c.weights", "--layer", "0")
    assert res.returncode == 2 and "--layer chooses the embedding" in res.stderr
    res = darkcfg("valid", data, cfg, tmp_path / "c.weights", "--save-threshold")
    assert res.returncode == 2 and "--save-threshold replaces the verification" in res.stderr


def _embed(cfg, weights, images, folder):
    out = folder / "pair.npy"
    res = darkcfg("embed", cfg, weights, *images, "--output", out)
    assert res.returncode == 0, res.stderr
    return out


def test_compare_without_a_threshold_says_how_to_get_one(trained, tmp_path):
    _, _, cfg, weights, pngs, _ = trained
    copy = tmp_path / "w.weights"
    copy.write_bytes(weights.read_bytes())
    res = darkcfg("compare", cfg, copy, pngs[0], pngs[3])
    assert res.returncode == 0 and res.stdout.startswith("distance ")
    assert "no threshold" in res.stderr and "darkcfg valid" in res.stderr


def test_training_validates_by_recall_at_1(trained):
    # validation during training: recall@1 of the valid split
    from darkcfg.train.classifier import train
    from darkcfg.train.loop import TrainOptions, Validated
    folder, data, *_ = trained
    events = []
    cfg2 = folder / "trip2.cfg"
    cfg2.write_text(TRIPLET_CFG.format(max_batches=2, pk="images_per_class=3"))
    train(str(data), str(cfg2), None, TrainOptions(valid_every=2, chart_every=1000),
          log=lambda *a: None, progress=events.append)
    done = [e for e in events if isinstance(e, Validated)]
    assert len(done) == 1 and done[0].metric == "recall@1" and 0 < done[0].value <= 1


def test_bad_layer_and_damaged_threshold_are_named(trained, tmp_path):
    _, _, cfg, weights, pngs, _ = trained
    res = darkcfg("embed", cfg, weights, pngs[0], "--layer", "9")
    assert res.returncode == 2 and "--layer 9: the network has layers 0..3" in res.stderr
    copy = tmp_path / "w.weights"
    copy.write_bytes(weights.read_bytes())
    (tmp_path / "w.weights.threshold").write_text("{not json")
    res = darkcfg("compare", cfg, copy, pngs[0], pngs[1])
    assert res.returncode == 2 and "w.weights.threshold: not a threshold file" in res.stderr
    assert "Traceback" not in res.stderr
    res = darkcfg("compare", cfg, copy, pngs[0], pngs[1], "--threshold", "0.5")
    assert res.returncode == 0                    # a threshold given: the file is not read


def test_the_siamese_cfg_and_data_file():
    from darkcfg.data.classifier import read_data_config
    from darkcfg.graph import load_graph

    from .conftest import ROOT
    g = load_graph(ROOT / "cfg" / "fashion_siamese.cfg")
    last = g.layers[-1]
    assert last.type == "triplet" and last.opts["normalize"] == 1
    assert last.classes_and_images(g.net.batch) == (4, 32)
    data = read_data_config(ROOT / "cfg" / "fashion_siamese.data")
    assert data.values["train_classes"] == "1,3,5,7,8,9"
    assert data.values["valid_classes"] == "0,2,4,6"         # never trained on
    assert data.names[0] == "T-shirt/top" and data.backup == str(ROOT / "backup")


def test_shipped_siamese_weights_give_the_readme_numbers():
    """weights/fashion_siamese.weights on the unseen classes' test images: the recall@1
    of README "Embeddings" at the layer `valid --layer 3` read (the 7 x 7 x 32 map), and
    the threshold file it wrote beside them."""
    from darkcfg import DarkcfgError
    from darkcfg.data.classifier import open_dataset, read_data_config
    from darkcfg.embed import load_threshold, validate_embeddings
    from darkcfg.network import Network

    from .conftest import ROOT
    weights = ROOT / "weights" / "fashion_siamese.weights"
    try:
        split = open_dataset(read_data_config(ROOT / "cfg" / "fashion_siamese.data"), "valid")
    except DarkcfgError as e:
        pytest.skip(str(e))
    net = Network.load(ROOT / "cfg" / "fashion_siamese.cfg", weights)
    stored = load_threshold(weights)
    assert stored.layer == 3 and stored.distance == "euclidean"
    _, r = validate_embeddings(net, split, 3)
    assert r.images == 4000 and r.recall_at_1 == pytest.approx(0.7205, abs=1e-3)
    assert stored.threshold == pytest.approx(r.threshold, rel=1e-5)
    assert stored.accuracy == pytest.approx(r.accuracy, rel=1e-6)
