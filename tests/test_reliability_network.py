"""Network-level input rules: forward returns what the caller owns, refuses integer and
empty input, train_step refuses missing or non-finite truths, and a network or batch too
big for memory is refused up front, naming the largest layer."""
from __future__ import annotations

import numpy as np
import pytest

import darkcfg
from darkcfg import network as network_mod
from darkcfg.errors import DarkcfgError

HEAD = "[net]\nbatch={batch}\nsubdivisions=1\nwidth=6\nheight=6\nchannels=2\n" \
       "learning_rate=0.1\nmax_batches=10\n"
CONV = "[convolutional]\nfilters=3\nsize=3\npad=1\nactivation=leaky\n"
# nets ending in the sections whose forward returns a reused buffer
ENDINGS = {
    "convolutional": CONV,
    "connected": CONV + "[connected]\noutput=5\nactivation=linear\n",
    "maxpool": CONV + "[maxpool]\nsize=2\nstride=2\n",
    "activation": CONV + "[activation]\nactivation=logistic\n",
    "shortcut": CONV + CONV + "[shortcut]\nfrom=-2\nactivation=linear\n",
    "batchnorm": CONV + "[batchnorm]\n",
    "dropout": CONV + "[dropout]\nprobability=0.5\n",
}


def make(tmp_path, body: str, batch: int = 1, name: str = "n.cfg", **kw):
    path = tmp_path / name
    path.write_text(HEAD.format(batch=batch) + body)
    net = darkcfg.load(path, batch=None if batch != 1 else 1, **kw)
    net.init_weights(seed=3)
    return net


@pytest.mark.parametrize("last", sorted(ENDINGS))
def test_forward_results_belong_to_the_caller(tmp_path, last):
    net = make(tmp_path, ENDINGS[last])
    rng = np.random.default_rng(1)
    xs = [rng.random((1, 2, 6, 6), dtype=np.float32) for _ in range(3)]
    kept = [net.forward(x) for x in xs]
    for x, y in zip(xs, kept, strict=True):
        np.testing.assert_array_equal(y, net.forward(x))
    assert not np.array_equal(kept[0], kept[2])


def test_integer_and_empty_input_are_refused(tmp_path):
    net = make(tmp_path, CONV)
    x = np.random.default_rng(0).random((1, 2, 6, 6))
    with pytest.raises(DarkcfgError, match=r"float images scaled to \[0, 1\].*/ 255"):
        net.forward((x * 255).astype(np.uint8))
    with pytest.raises(DarkcfgError, match="float images"):
        net.forward(x > 0.5)
    with pytest.raises(DarkcfgError, match="0 images"):
        net.forward(np.zeros((0, 2, 6, 6), np.float32))
    # float64 is fine and gives the float32 result
    np.testing.assert_array_equal(net.forward(x), net.forward(x.astype(np.float32)))


def softmax_net(tmp_path):
    net = make(tmp_path, CONV + "[connected]\noutput=4\nactivation=linear\n[softmax]\n",
               batch=2)
    assert net.train_batch == 2
    x = np.random.default_rng(0).random((2, 2, 6, 6), dtype=np.float32)
    return net, x, np.eye(4, dtype=np.float32)[[0, 3]]


def test_train_step_refuses_a_missing_truth(tmp_path):
    net, x, _ = softmax_net(tmp_path)
    with pytest.raises(DarkcfgError, match="needs a truth"):
        net.train_step(x, None)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_train_step_refuses_non_finite_truth_and_keeps_the_weights(tmp_path, bad):
    net, x, truth = softmax_net(tmp_path)
    before = {k: v.copy() for k, v in net.layers[0].params.items()}
    truth[1, 2] = bad
    with pytest.raises(DarkcfgError, match=r"truth of image 1 .* is (nan|-?inf)"):
        net.train_step(x, truth)
    for k, v in before.items():
        np.testing.assert_array_equal(net.layers[0].params[k], v)
    assert net.seen == 0


def test_train_step_refuses_a_truth_of_the_wrong_size(tmp_path):
    net, x, truth = softmax_net(tmp_path)
    with pytest.raises(DarkcfgError, match="one row per image"):
        net.train_step(x, truth[:, :3].ravel()[:5])


def test_a_network_too_big_for_memory_names_the_layer(tmp_path):
    path = tmp_path / "big.cfg"
    path.write_text(HEAD.format(batch=1) + CONV + "[connected]\noutput=40000\n")
    with pytest.raises(DarkcfgError, match=r"needs about .* GiB for its parameters.*"
                       r"layer 1 \[connected\] \(cfg line 14 of .*big.cfg\)"):
        darkcfg.load(path, width=4000, height=4000)


def test_a_batch_too_big_for_memory_is_refused_before_running(tmp_path, monkeypatch):
    net = make(tmp_path, CONV)
    # pretend each image needs a GiB of outputs and 100 MiB are left
    monkeypatch.setattr(network_mod, "available_memory", lambda: 100 << 20)
    monkeypatch.setattr(net, "_output_values", 1 << 30)
    x = np.zeros((2, 2, 6, 6), np.float32)
    with pytest.raises(DarkcfgError, match=r"for 2 images of 2 x 6 x 6.*layer 0 "
                       r"\[convolutional\]"):
        net.forward(x)


def test_memory_error_inside_a_layer_becomes_a_darkcfg_error(tmp_path, monkeypatch):
    net = make(tmp_path, CONV + "[maxpool]\nsize=2\nstride=2\n")

    def fail(x, net):
        raise MemoryError
    monkeypatch.setattr(net.layers[1], "forward", fail)
    with pytest.raises(DarkcfgError, match=r"out of memory in layer 1 \[maxpool\]"):
        net.forward(np.zeros((1, 2, 6, 6), np.float32))
