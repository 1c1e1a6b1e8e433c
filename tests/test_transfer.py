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

from .helpers import darkcfg

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
