"""The training loop: resume equals an uninterrupted run, NaN stops with the layer named,
Ctrl-C saves, checkpoints have Darknet's names, and a small net learns Fashion-MNIST."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from darkcfg import DarkcfgError
from darkcfg.data.arrays import fashion_mnist_dir
from darkcfg.graph import load_graph
from darkcfg.network import Network
from darkcfg.train.classifier import accuracy, train
from darkcfg.train.loop import TrainOptions, batch_indices

from .conftest import ROOT
from .toy_classifier import CFG, make_data, write_cfg


def weights_of(path):
    net = Network(load_graph(path.parent.parent / "toy.cfg"))
    net.load_weights(path)
    return [v.copy() for lay in net.layers for v in lay.params.values()]


def test_batches_cover_every_image_each_epoch():
    seen = np.concatenate([batch_indices(10, i, 4, seed=3) for i in range(5)])
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert np.array_equal(batch_indices(10, 2, 4, seed=3), batch_indices(10, 2, 4, seed=3))


def test_resume_gives_the_same_weights(tmp_path):
    data = make_data(tmp_path)
    cfg = write_cfg(tmp_path, 10)
    quiet = dict(quiet=True, backup_every=1000, save_every=4, chart_every=1000)
    final = train(str(data), str(cfg), None, TrainOptions(**quiet), log=lambda *a: None)
    straight = weights_of(final)
    assert (tmp_path / "backup" / "toy_4.weights").exists()
    assert (tmp_path / "backup" / "toy_8.weights").exists()
    assert (tmp_path / "backup" / "toy_chart.png").exists()
    # "killed" after iteration 4: start again from that checkpoint
    os.rename(final, tmp_path / "straight.weights")
    resumed = train(str(data), str(cfg), str(tmp_path / "backup" / "toy_4.weights"),
                    TrainOptions(**quiet), log=lambda *a: None)
    for a, b in zip(straight, weights_of(resumed)):
        assert np.array_equal(a, b)
    # without the momentum file the run differs (as Darknet's resume would)
    os.remove(tmp_path / "backup" / "toy_4.weights.state")
    again = train(str(data), str(cfg), str(tmp_path / "backup" / "toy_4.weights"),
                  TrainOptions(**quiet), log=lambda *a: None)
    assert any(not np.array_equal(a, b) for a, b in zip(straight, weights_of(again)))


def test_nan_stops_naming_the_layer(tmp_path):
    data = make_data(tmp_path)
    cfg = tmp_path / "toy.cfg"
    cfg.write_text(CFG.format(max_batches=50).replace("learning_rate=0.05",
                                                      "learning_rate=1e30"))
    with pytest.raises(DarkcfgError, match=r"the loss became nan at iteration \d+: layer \d+ "
                       r"\[\w+\] \(cfg line \d+\) \w+ went non-finite first"):
        train(str(data), str(cfg), None, TrainOptions(quiet=True), log=lambda *a: None)


def test_ctrl_c_saves_a_checkpoint(tmp_path):
    data = make_data(tmp_path)
    cfg = write_cfg(tmp_path, 100000)
    proc = subprocess.Popen([sys.executable, "-m", "darkcfg", "train", str(data), str(cfg)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stderr.readline()
        if line.startswith("1/100000"):       # the first iteration has finished
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at iteration" in out and "toy.backup" in out
    assert (tmp_path / "backup" / "toy.backup").stat().st_size > 20


def test_learns_a_toy_problem(tmp_path):
    data = make_data(tmp_path, n=120)
    cfg = write_cfg(tmp_path, 150)
    final = train(str(data), str(cfg), None, TrainOptions(quiet=True), log=lambda *a: None)
    net = Network(load_graph(cfg))
    net.load_weights(final)
    from darkcfg.data.classifier import open_dataset, read_data_config
    top1, _ = accuracy(net, open_dataset(read_data_config(data), "valid"), 3, 1)
    assert top1 >= 0.9


def fashion_available() -> bool:
    try:
        fashion_mnist_dir()
        return True
    except DarkcfgError:
        return False


@pytest.mark.skipif(not fashion_available(), reason="Fashion-MNIST is not installed "
                    "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_subset_reaches_80_percent(tmp_path):
    """A small cfg on 6,000 training images reaches 80% on 1,000 test images."""
    from darkcfg.data.arrays import fashion_mnist
    train_set, test_set = fashion_mnist("train"), fashion_mnist("test")
    np.savez(tmp_path / "train.npz", x=train_set.images[:6000], y=train_set.labels[:6000])
    np.savez(tmp_path / "test.npz", x=test_set.images[:1000], y=test_set.labels[:1000])
    (tmp_path / "f.data").write_text("classes=10\ntrain=train.npz\nvalid=test.npz\n"
                                     "backup=backup/\n")
    cfg = tmp_path / "f.cfg"
    cfg.write_text("""[net]
batch=64
width=28
height=28
channels=1
learning_rate=0.05
momentum=0.9
decay=0.0005
burn_in=20
policy=poly
power=2
max_batches=280
min_crop=28
max_crop=32
[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=16
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[connected]
output=10
activation=linear
[softmax]
""")
    final = train(str(tmp_path / "f.data"), str(cfg), None, TrainOptions(quiet=True),
                  log=lambda *a: None)
    net = Network(load_graph(cfg))
    net.load_weights(final)
    from darkcfg.data.arrays import ArrayDataset
    top1, _ = accuracy(net, ArrayDataset(test_set.images[:1000], test_set.labels[:1000],
                                         "test"), 10, 1)
    assert top1 >= 0.80, top1
