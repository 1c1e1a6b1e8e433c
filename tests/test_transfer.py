"""Transfer learning: `partial` cuts a backbone out of a .weights file byte for byte,
frozen layers do not change at all while the rest trains, `summary` and `train` say
which layers are frozen, and a checkpoint whose head differs loads its backbone.

The byte offsets and parameter counts here are computed by hand from the cfg's shapes
(Darknet's order per layer: biases, BN scales/rolling_mean/rolling_variance, weights),
not by darkcfg."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.errors import WeightsError
from darkcfg.network import Network
from darkcfg.weights import partial

from .helpers import check_gradient, darkcfg

# 1 x 8 x 8 input; layer 0 conv BN 4 3x3, 1 maxpool, 2 conv 6 3x3 (no BN), 3 maxpool,
# 4 connected BN 5, 5 connected 3, 6 softmax
CFG = """[net]
batch=4
width=8
height=8
channels=1
learning_rate=0.1
momentum=0.9
decay=0.0005
max_batches=100

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=6
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[connected]
batch_normalize=1
output=5
activation=leaky

[connected]
output=3
activation=linear

[softmax]
"""
# floats per layer, by hand: conv0 4 biases + 3*4 BN + 4*1*3*3 weights; conv2 6 biases +
# 6*4*3*3 weights; connected4 5 biases + 5*(6*2*2) weights + 3*5 BN; connected5 3 + 3*5
FLOATS = {0: 4 + 12 + 36, 2: 6 + 216, 4: 5 + 120 + 15, 5: 3 + 15}


def random_weights(path, rng, header=(0, 2, 0), seen=12345) -> bytes:
    """A .weights file of CFG's length, random values (variances positive)."""
    total = sum(FLOATS.values())
    data = rng.uniform(0.5, 1.5, total).astype("<f4")
    head = np.array(header, "<i4").tobytes() + np.array([seen], "<u8").tobytes()
    path.write_bytes(head + data.tobytes())
    return path.read_bytes()


def expected_partial(whole: bytes, n: int) -> bytes:
    """Header 0.2.0 with seen 0, then the input's bytes of layers 0..n-1."""
    end = 20 + 4 * sum(f for i, f in FLOATS.items() if i < n)
    return np.array([0, 2, 0], "<i4").tobytes() + bytes(8) + whole[20:end]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7])
def test_partial_is_the_input_prefix(tmp_path, write_cfg, rng, n):
    cfg = write_cfg(CFG)
    whole = random_weights(tmp_path / "w.weights", rng)
    net = Network.load(cfg, tmp_path / "w.weights")
    out = tmp_path / "p.weights"
    report = partial(net, out, n, net.loaded)
    assert out.read_bytes() == expected_partial(whole, n)
    assert [i for i, *_ in report.layers] == [i for i in FLOATS if i < n]
    assert report.params == sum(f for i, f in FLOATS.items() if i < n)
    assert report.bytes_written == len(expected_partial(whole, n))


def test_partial_of_a_16_byte_header_writes_darknets_header(tmp_path, write_cfg, rng):
    cfg = write_cfg(CFG)
    total = sum(FLOATS.values())
    data = rng.uniform(0.5, 1.5, total).astype("<f4").tobytes()
    old = np.array([0, 1, 0], "<i4").tobytes() + np.array([77], "<u4").tobytes()
    (tmp_path / "w.weights").write_bytes(old + data)
    net = Network.load(cfg, tmp_path / "w.weights")
    partial(net, tmp_path / "p.weights", 3, net.loaded)
    end = 4 * (FLOATS[0] + FLOATS[2])
    assert (tmp_path / "p.weights").read_bytes() == \
        np.array([0, 2, 0], "<i4").tobytes() + bytes(8) + data[:end]


def test_partial_output_loads_as_a_prefix_file(tmp_path, write_cfg, rng):
    cfg = write_cfg(CFG)
    random_weights(tmp_path / "w.weights", rng)
    net = Network.load(cfg, tmp_path / "w.weights")
    partial(net, tmp_path / "p.weights", 4, net.loaded)
    other = Network.load(cfg)
    with pytest.warns(UserWarning, match="prefix file ending before layer 4"):
        report = other.load_weights(tmp_path / "p.weights")
    assert report.layers_loaded == 2 and other.seen == 0
    for i in (0, 2):
        for k, v in net.layers[i].params.items():
            np.testing.assert_array_equal(other.layers[i].params[k], v)


@pytest.mark.parametrize("n", [0, -1, 8, 75])
def test_partial_refuses_n_outside_the_layers(tmp_path, write_cfg, rng, n):
    cfg = write_cfg(CFG)
    random_weights(tmp_path / "w.weights", rng)
    net = Network.load(cfg, tmp_path / "w.weights")
    with pytest.raises(WeightsError, match=r"this cfg has 7 layers \(0\.\.6\).*must be 1\.\.7"):
        partial(net, tmp_path / "p.weights", n, net.loaded)
    assert not (tmp_path / "p.weights").exists()


def test_partial_refuses_layers_a_prefix_file_lacks(tmp_path, write_cfg, rng):
    cfg = write_cfg(CFG)
    whole = random_weights(tmp_path / "w.weights", rng)
    (tmp_path / "short.weights").write_bytes(expected_partial(whole, 3))
    net = Network.load(cfg)
    with pytest.warns(UserWarning, match="prefix"):
        loaded = net.load_weights(tmp_path / "short.weights")
    with pytest.raises(WeightsError, match=r"up to layer 2 only .*needs layer 4 "
                       r"\[connected\].*N <= 4"):
        partial(net, tmp_path / "p.weights", 5, loaded)
    assert not (tmp_path / "p.weights").exists()


def test_partial_command(tmp_path, write_cfg, rng):
    cfg = write_cfg(CFG)
    whole = random_weights(tmp_path / "w.weights", rng)
    r = darkcfg("partial", cfg, tmp_path / "w.weights", tmp_path / "p.weights", 3)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.weights").read_bytes() == expected_partial(whole, 3)
    params = FLOATS[0] + FLOATS[2]
    assert f"saved layers 0-2 of {cfg}" in r.stdout
    assert f"2 with parameters, {params:,} parameters" in r.stdout
    assert "layer   2 [convolutional] 222 parameters" in r.stdout
    r = darkcfg("partial", cfg, tmp_path / "w.weights", tmp_path / "q.weights", 0)
    assert r.returncode == 2 and "must be 1..7" in r.stderr and "Traceback" not in r.stderr
    r = darkcfg("partial", cfg, tmp_path / "w.weights", tmp_path / "w.weights", 3)
    assert r.returncode == 2 and "is the input weights file" in r.stderr
    assert (tmp_path / "w.weights").read_bytes() == whole
    # an existing OUT is kept unless --force says otherwise
    (tmp_path / "p.weights").write_bytes(b"mine")
    r = darkcfg("partial", cfg, tmp_path / "w.weights", tmp_path / "p.weights", 2)
    assert r.returncode == 2 and "exists" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "p.weights").read_bytes() == b"mine"
    r = darkcfg("partial", cfg, tmp_path / "w.weights", tmp_path / "p.weights", 2, "--force")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.weights").read_bytes() == expected_partial(whole, 2)


# --- freezing ------------------------------------------------------------------------------

def trained(cfg_text: str, tmp_path, iterations: int, seed: int = 0):
    """A network of cfg_text initialised with random BN statistics, its arrays before
    training (params and momentum buffers) and the network after `iterations` steps."""
    from darkcfg.graph import load_graph
    path = tmp_path / "f.cfg"
    path.write_text(cfg_text)
    net = Network(load_graph(path, batch=None))
    net.init_weights(seed)
    rng = np.random.default_rng(seed)
    for layer in net.layers:        # rolling statistics away from their initial 0/1
        for name in ("rolling_mean", "rolling_variance"):
            if name in layer.params:
                layer.params[name][...] = rng.uniform(0.5, 1.5, layer.params[name].shape)
    net.params_changed()
    before = snapshot(net)
    n, (c, h, w) = net.train_batch, net.input_shape
    for _ in range(iterations):
        x = rng.random((n, c, h, w), dtype=np.float32)
        truth = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
        net.train_step(x, truth)
    return net, before


def snapshot(net) -> dict[tuple[int, str], np.ndarray]:
    out = {}
    for layer in net.layers:
        for k, v in layer.params.items():
            out[layer.index, k] = v.copy()
        for k, v in layer.updates.items():
            out[layer.index, f"momentum of {k}"] = v.copy()
    return out


def unchanged(net, before, index: int) -> bool:
    """Every array of layer `index` (params and momentum buffers) bit-identical."""
    now = snapshot(net)
    keys = [k for k in before if k[0] == index]
    assert keys, index
    return all(np.array_equal(now[k], before[k]) for k in keys)


def all_changed(net, before, index: int) -> bool:
    """Every trained array and rolling statistic of layer `index` moved."""
    now = snapshot(net)
    keys = [k for k in before if k[0] == index and not k[1].startswith("momentum")]
    assert keys, index
    return all(not np.array_equal(now[k], before[k]) for k in keys)


def with_key(cfg_text: str, layer: int, key: str) -> str:
    """CFG with `key` added to the section of layer `layer` (after [net])."""
    parts = cfg_text.split("\n[")
    parts[layer + 1] = parts[layer + 1].rstrip("\n") + f"\n{key}\n\n"
    return "\n[".join(parts)


LAYERS_WITH_PARAMS = (0, 2, 4, 5)


@pytest.mark.parametrize("key", ["stopbackward=1", "train_only_bn=1"])
def test_layers_up_to_a_stop_stay_bit_identical(tmp_path, key):
    # stop at layer 2: layers 0..2 frozen (BN conv 0, conv 2), 4 and 5 train
    net, before = trained(with_key(CFG, 2, key), tmp_path, 3)
    for i in (0, 2):
        assert unchanged(net, before, i), i
    for i in (4, 5):
        assert all_changed(net, before, i), i


def test_without_a_stop_every_layer_changes(tmp_path):
    net, before = trained(CFG, tmp_path, 3)
    for i in LAYERS_WITH_PARAMS:
        assert all_changed(net, before, i), i


def test_dont_update_freezes_one_layer_for_n_iterations(tmp_path):
    # AB: layer updated when dont_update < iteration (1-based): frozen in iterations 1..2
    cfg = with_key(CFG, 2, "dont_update=2")
    net, before = trained(cfg, tmp_path, 2)
    assert unchanged(net, before, 2)
    for i in (0, 4, 5):     # the gradient still reaches layer 0 through layer 2
        assert all_changed(net, before, i), i
    net, before = trained(cfg, tmp_path, 3)
    assert all_changed(net, before, 2)


def test_burnin_update_freezes_one_layer_below_n_times_burn_in(tmp_path):
    # AB: skipped while burnin_update * burn_in > iteration: 2 * 2 > t for t = 1..3
    cfg = with_key(CFG.replace("max_batches=100", "max_batches=100\nburn_in=2"), 4,
                   "burnin_update=2")
    net, before = trained(cfg, tmp_path, 3)
    assert unchanged(net, before, 4)
    for i in (0, 2, 5):
        assert all_changed(net, before, i), i
    net, before = trained(cfg, tmp_path, 4)
    assert all_changed(net, before, 4)


def test_frozen_layers_normalise_with_their_rolling_statistics(tmp_path):
    """In a training pass a frozen BN layer computes what inference computes."""
    net, _ = trained(with_key(CFG, 2, "stopbackward=1"), tmp_path, 0)
    x = np.random.default_rng(1).random((net.train_batch, 1, 8, 8), dtype=np.float32)
    net.forward(x)
    inference = net.outputs[0].copy()
    net.forward_train(x, np.eye(3, dtype=np.float32)[np.zeros(len(x), int)])
    np.testing.assert_allclose(net.outputs[0], inference, rtol=1e-6, atol=1e-6)
    trainable, _ = trained(CFG, tmp_path, 0)        # batch statistics: different
    trainable.forward_train(x, np.eye(3, dtype=np.float32)[np.zeros(len(x), int)])
    assert np.abs(trainable.outputs[0] - inference).max() > 1e-2


FROZEN_BN_BODIES = {
    "conv-mish": "[convolutional]\nbatch_normalize=1\nfilters=3\nsize=3\npad=1\n"
                 "activation=mish\n",
    "conv-logistic": "[convolutional]\nbatch_normalize=1\nfilters=3\nsize=3\npad=1\n"
                     "activation=logistic\n",
    "connected": "[connected]\nbatch_normalize=1\noutput=5\nactivation=logistic\n",
    "batchnorm": "[batchnorm]\n",
}


@pytest.mark.parametrize("dialect", ["pjreddie", "alexeyab"])
@pytest.mark.parametrize("body", FROZEN_BN_BODIES)
def test_gradient_through_a_frozen_bn_layer(tmp_path, body, dialect):
    """What a frozen layer passes down (dont_update, burnin_update) is the derivative of
    the function it computes with its rolling statistics: finite differences."""
    from .test_backward_conv import EPS, analytic, build, loss_of
    net = build(tmp_path, (2, 4, 5), FROZEN_BN_BODIES[body], batch=3, dialect=dialect)
    layer = net.layers[1]
    layer.frozen = True
    x = np.random.default_rng(2).standard_normal((3, 2, 4, 5)).astype(np.float32)
    R = np.random.default_rng(3).standard_normal((3, *layer.out_shape))
    stats = {k: layer.params[k].copy() for k in ("rolling_mean", "rolling_variance")}
    dx, _ = analytic(net, x, R)
    check_gradient(loss_of(net, x, R), x, dx, eps=EPS, rtol=1e-3, floor=1e-3)
    for k, v in stats.items():
        np.testing.assert_array_equal(layer.params[k], v)


@pytest.mark.parametrize("dialect, frozen_at", [("pjreddie", (1, 5, 6, 100)),
                                                ("alexeyab", (1, 5))])
def test_stopbackward_n_is_permanent_in_pjreddie_and_n_iterations_in_alexeyab(
        tmp_path, dialect, frozen_at):
    from darkcfg.graph import load_graph
    from darkcfg.sgd import frozen_layers
    path = tmp_path / "s.cfg"
    path.write_text(with_key(CFG, 2, "stopbackward=5"))
    layers = load_graph(path, dialect=dialect).layers
    for t in (1, 5, 6, 100):
        frozen = frozen_layers(layers, t, dialect, burn_in=0)
        assert (frozen.layers == {0, 1, 2} and frozen.stop == 2) == (t in frozen_at), t
        assert frozen.layers <= {0, 1, 2}


# --- summary and train say what is frozen ---------------------------------------------------

def test_summary_marks_frozen_layers_and_counts_them(tmp_path):
    import json

    from darkcfg.graph import load_graph
    from darkcfg.summary import format_table, to_json
    path = tmp_path / "s.cfg"
    path.write_text(with_key(with_key(CFG, 2, "stopbackward=1"), 5, "dont_update=50"))
    graph = load_graph(path)
    lines = format_table(graph).splitlines()
    rows = lines[1:8]
    assert [r.rstrip().endswith("frozen") for r in rows] == [True] * 3 + [False, False,
                                                                        True, False]
    frozen = FLOATS[0] + FLOATS[2] + FLOATS[5]
    assert lines[-2] == (f"trainable: {FLOATS[4]:,} parameters; frozen: {frozen:,} "
                         "parameters in layers 0-2 (stopbackward=1 at layer 2); layer 5 "
                         "(dont_update=50 (iterations 1-50))")
    doc = json.loads(to_json(graph))
    assert [row["frozen"] is not None for row in doc["layers"]] == \
        [True] * 3 + [False, False, True, False]
    assert doc["totals"]["frozen_params"] == frozen
    assert doc["totals"]["trainable_params"] == FLOATS[4]


def test_summary_of_a_cfg_without_freezing(tmp_path):
    path = tmp_path / "s.cfg"
    path.write_text(CFG)
    r = darkcfg("summary", path)
    assert r.returncode == 0, r.stderr
    assert "frozen\n" not in r.stdout
    total = sum(FLOATS.values())
    assert r.stdout.splitlines()[-2] == f"trainable: all {total:,} parameters (no layer frozen)"


def test_train_says_what_is_frozen_at_the_start(tmp_path, rng):
    from .toy_classifier import make_data
    data = make_data(tmp_path)
    cfg = tmp_path / "f.cfg"
    cfg.write_text(with_key(CFG, 2, "stopbackward=1"))
    random_weights(tmp_path / "w.weights", rng)
    r = darkcfg("train", data, cfg, tmp_path / "w.weights", "--clear", "--max-batches", "1",
                "--quiet")
    assert r.returncode == 0, r.stderr
    frozen = FLOATS[0] + FLOATS[2]
    assert (f"trainable: {FLOATS[4] + FLOATS[5]:,} parameters; frozen: {frozen:,} "
            "parameters in layers 0-2 (stopbackward=1 at layer 2)") in r.stdout


def test_a_frozen_layer_needs_trained_statistics(tmp_path):
    """Frozen, a layer normalises with its rolling statistics: Darknet's initial variance
    0 would send the loss to inf in the first iteration."""
    from .toy_classifier import make_data
    data = make_data(tmp_path)
    cfg = tmp_path / "f.cfg"
    cfg.write_text(with_key(CFG, 2, "stopbackward=1"))
    r = darkcfg("train", data, cfg, "--max-batches", "1", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("layer 0 [convolutional] (f.cfg:11) is frozen (stopbackward=1 at layer 2) but "
            "its rolling_variance is all 0") in r.stderr
    assert not (tmp_path / "backup" / "f_final.weights").exists()


# --- a new head on a trained network ------------------------------------------------------

HEAD_CFG = CFG.replace("output=3", "output={classes}")
HEAD_FLOATS = {0: FLOATS[0], 2: FLOATS[2], 4: FLOATS[4]}     # + connected 5: c + 5c


def checkpoint(tmp_path, classes: int, state: bool = True):
    """A trained-looking `classes`-class network saved as darkcfg saves checkpoints (the
    .weights and, with state, its .state beside it)."""
    from darkcfg.train.loop import save_checkpoint
    cfg = tmp_path / f"c{classes}.cfg"
    cfg.write_text(HEAD_CFG.format(classes=classes))
    net = Network.load(cfg, batch=None)
    net.init_weights(seed=7)
    rng = np.random.default_rng(5)
    for layer in net.layers:
        for arr in layer.params.values():
            arr[...] = rng.uniform(0.5, 1.5, arr.shape)
    net.seen = 4 * 30
    path = tmp_path / f"c{classes}.weights"
    if state:
        save_checkpoint(net, path)
    else:
        net.save_weights(path)
    return net, path


def start(tmp_path, weights, classes: int = 4, weights_cfg=None):
    """A `classes`-class network started from `weights` as `darkcfg train` starts it;
    returns it, what it said and a twin initialised with the same seed."""
    from darkcfg.train.loop import TrainOptions, load_start
    cfg = tmp_path / f"new{classes}.cfg"
    cfg.write_text(HEAD_CFG.format(classes=classes))
    net, fresh = Network.load(cfg, batch=None), Network.load(cfg, batch=None)
    net.init_weights(0)
    fresh.init_weights(0)
    said: list[str] = []
    load_start(net, str(weights), TrainOptions(weights_cfg=weights_cfg and str(weights_cfg)),
               100, said.append)
    return net, said, fresh


def assert_same_layer(a, b, index):
    assert a.layers[index].params.keys() == b.layers[index].params.keys()
    for k, v in a.layers[index].params.items():
        np.testing.assert_array_equal(v, b.layers[index].params[k], err_msg=f"{index} {k}")


def test_a_ten_class_checkpoint_starts_a_four_class_cfg(tmp_path):
    old, weights = checkpoint(tmp_path, 10)
    net, said, fresh = start(tmp_path, weights)
    for i in HEAD_FLOATS:           # the backbone: the checkpoint's arrays
        assert_same_layer(net, old, i)
    assert_same_layer(net, fresh, 5)        # the new head: Darknet's initialisation
    message = next(m for m in said if "stops matching" in m)
    # [connected] output=4 is on line 37 of HEAD_CFG
    assert message.startswith("c10.weights stops matching at layer 5 [connected] "
                              "(new4.cfg:37): it needs biases (4,), weights (4, 5); the "
                              "file's layer 5 (c10.weights.state) has ")
    assert "biases (10,)" in message and "weights (10, 5)" in message
    assert message.endswith(f". layers 0-4 from {weights} (3 of 4 layers with parameters); "
                            "layer 5 initialised randomly (seed 0)")


def test_the_cfg_the_weights_were_made_for_names_the_shapes(tmp_path):
    old, weights = checkpoint(tmp_path, 10, state=False)    # a Darknet file: no .state
    with pytest.raises(WeightsError, match="--weights-cfg"):
        start(tmp_path, weights)
    net, said, fresh = start(tmp_path, weights, weights_cfg=tmp_path / "c10.cfg")
    for i in HEAD_FLOATS:
        assert_same_layer(net, old, i)
    assert_same_layer(net, fresh, 5)
    message = next(m for m in said if "stops matching" in m)
    assert ("it needs biases (4,), weights (4, 5); the file's layer 5 [connected] "
            "(c10.cfg:37) has biases (10,), weights (10, 5). layers 0-4") in message


def test_a_wrong_weights_cfg_is_refused(tmp_path):
    _, weights = checkpoint(tmp_path, 10, state=False)
    (tmp_path / "c6.cfg").write_text(HEAD_CFG.format(classes=6))
    with pytest.raises(WeightsError, match=r"c6.cfg describes a file of \d+ bytes: those "
                       "are not the shapes of this file"):
        start(tmp_path, weights, weights_cfg=tmp_path / "c6.cfg")


def test_the_same_cfg_resumes_as_before(tmp_path):
    old, weights = checkpoint(tmp_path, 10)
    net, said, _ = start(tmp_path, weights, classes=10)
    for i in LAYERS_WITH_PARAMS:
        assert_same_layer(net, old, i)
    assert not any("stops matching" in m for m in said)
    assert any(m.startswith(f"resuming from {weights}") for m in said)


def test_train_and_run_with_a_ten_class_checkpoint(tmp_path):
    _, weights = checkpoint(tmp_path, 10)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "four.npz", x=rng.integers(0, 255, (16, 8, 8), dtype=np.uint8),
             y=np.arange(16) % 4)
    (tmp_path / "four.data").write_text("classes=4\ntrain=four.npz\nbackup=backup/\n")
    cfg = tmp_path / "new4.cfg"
    cfg.write_text(HEAD_CFG.format(classes=4))
    r = darkcfg("train", tmp_path / "four.data", cfg, weights, "--max-batches", "1",
                "--clear", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "c10.weights stops matching at layer 5 [connected]" in r.stdout
    # outside training a file that does not fit its cfg stays an error
    from PIL import Image
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    r = darkcfg("run", cfg, weights, tmp_path / "x.png")
    assert r.returncode == 2 and "c10.weights" in r.stderr and "Traceback" not in r.stderr


# --- tools/make_transfer_subsets.py ---------------------------------------------------------

def idx(array: np.ndarray) -> bytes:
    """An IDX file of uint8 values (the MNIST format: magic, sizes, data)."""
    head = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return head + array.astype(np.uint8).tobytes()


def subsets_tool(tmp_path, monkeypatch):
    """tools/make_transfer_subsets.py as a module, reading a small Fashion-MNIST: 12
    train images per class, 3 test ones, pixel 0 = the image's index (class = index % 10)."""
    import importlib.util

    from .conftest import ROOT
    src = tmp_path / "fm"
    src.mkdir()
    for prefix, per in (("train", 12), ("t10k", 3)):
        labels = np.tile(np.arange(10), per)
        images = np.zeros((len(labels), 28, 28), np.uint8)
        images[:, 0, 0] = np.arange(len(labels))
        (src / f"{prefix}-images-idx3-ubyte").write_bytes(idx(images))
        (src / f"{prefix}-labels-idx1-ubyte").write_bytes(idx(labels))
    monkeypatch.setenv("DARKCFG_FASHION_MNIST", str(src))
    spec = importlib.util.spec_from_file_location(
        "make_transfer_subsets", ROOT / "tools" / "make_transfer_subsets.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_make_transfer_subsets(tmp_path, monkeypatch, capsys):
    from darkcfg.data.classifier import open_dataset, read_data_config

    tool = subsets_tool(tmp_path, monkeypatch)
    out = tmp_path / "out"
    assert tool.main([str(out), "--per-class", "5", "--seed", "3"]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    cases = {("pretrain", "train"): ((1, 3, 5, 7, 8, 9), 12), ("pretrain", "valid"):
             ((1, 3, 5, 7, 8, 9), 3), ("finetune", "train"): ((0, 2, 4, 6), 5),
             ("finetune", "valid"): ((0, 2, 4, 6), 3)}
    for (name, split), (classes, per) in cases.items():
        ds = open_dataset(read_data_config(out / f"{name}.data"), split)
        original = ds.images[:, 0, 0, 0].astype(int) % 10      # the class, from the index
        assert len(ds) == per * len(classes)
        assert [classes[k] for k in ds.labels] == original.tolist()
        assert np.bincount(ds.labels).tolist() == [per] * len(classes)
        assert ds.names == [tool.FASHION_MNIST_NAMES[c] for c in classes]
    assert tool.main([str(out), "--per-class", "5", "--seed", "3"]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first      # deterministic
    assert tool.main([str(out), "--per-class", "13"]) == 2
    assert "class 0 has 12 images; --per-class 13 asks for more" in capsys.readouterr().err


def test_make_transfer_subsets_class_options(tmp_path, monkeypatch, capsys):
    from darkcfg.data.classifier import open_dataset, read_data_config

    tool = subsets_tool(tmp_path, monkeypatch)

    def made(out, *options):
        assert tool.main([str(tmp_path / out), "--per-class", "5", *options]) == 0
        return {p.name: p.read_bytes() for p in (tmp_path / out).iterdir()}

    def train_set(out, name):
        ds = open_dataset(read_data_config(tmp_path / out / f"{name}.data"), "train")
        return ds.images[:, 0, 0, 0].astype(int), ds.labels

    # the defaults spelled out make the same files as no options
    assert made("explicit", "--pretrain-classes", "1,3,5,7,8,9",
                "--finetune-classes", "0,2,4,6") == made("default")
    # the upper bound: pre-training on the fine-tuning classes (and two others) leaves out
    # exactly the 5 images of each class drawn for fine-tuning, which are the default's
    made("upper", "--pretrain-classes", "0,2,4,6,1,7")
    small, small_labels = train_set("upper", "finetune")
    assert small.tolist() == train_set("default", "finetune")[0].tolist()
    assert small_labels.tolist() == [[0, 2, 4, 6].index(i % 10) for i in small]
    index, labels = train_set("upper", "pretrain")
    assert not set(index) & set(small)
    assert sorted(set(index) | set(small)) == [i for i in range(120) if i % 10 in
                                               (0, 1, 2, 4, 6, 7)]
    assert labels.tolist() == [[0, 2, 4, 6, 1, 7].index(i % 10) for i in index]
    # the reversed split: disjoint lists, so pre-training keeps every image of its classes
    made("reversed", "--pretrain-classes", "0,2,3,4,6,7", "--finetune-classes", "1,5,8,9")
    index, labels = train_set("reversed", "pretrain")
    assert index.tolist() == [i for i in range(120) if i % 10 in (0, 2, 3, 4, 6, 7)]
    small, labels = train_set("reversed", "finetune")
    assert np.bincount(labels).tolist() == [5] * 4
    assert sorted({i % 10 for i in small}) == [1, 5, 8, 9]
    assert "Pullover" in (tmp_path / "reversed" / "pretrain.names").read_text()
    for bad, said in (("0,0", "at most once"), ("3,10", "at most once"),
                      ("1;2", "not a comma-separated list")):
        with pytest.raises(SystemExit) as e:
            tool.main([str(tmp_path / "bad"), "--finetune-classes", bad])
        assert e.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
