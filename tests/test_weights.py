"""The .weights reader and writer against Darknet's files and hand-made ones."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg import WeightsError
from darkcfg.cfg import parse_cfg
from darkcfg.graph import build_graph
from darkcfg.network import Network
from darkcfg.weights import WeightsWarning, read_header

from .reference import case_dirs, weights_path

SMALL = """[net]
width=6
height=5
channels=2
[convolutional]
batch_normalize=1
filters=3
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[connected]
output=4
activation=linear
[convolutional]
filters=2
size=1
activation=linear
"""
# floats: layer 0 3 biases + 9 BN + 3*2*9 weights = 66; layer 2 (input 3x3x3 after the
# 2x2/2 maxpool with Darknet's default padding 1) 4 + 4*27 = 112; layer 3 2 + 2*4 = 10


def small_net(text: str = SMALL, dialect: str | None = None) -> Network:
    return Network(build_graph(parse_cfg(text, "small.cfg"), dialect=dialect))


def write(path, header: list[int], seen_bytes: int, values: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(np.array(header, "<i4").tobytes())
        f.write(np.zeros(1, "<u8" if seen_bytes == 8 else "<u4").tobytes())
        f.write(values.astype("<f4").tobytes())


def sizes(net: Network) -> list[int]:
    return [sum(a.size for a in lay.params.values()) for lay in net.layers]


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_darknet_files_round_trip_byte_identical(case, tmp_path):
    src = weights_path(case, tmp_path)
    net = Network(build_graph(parse_cfg((case / "net.cfg").read_bytes(), "net.cfg")))
    report = net.load_weights(src)
    assert report.complete and report.bytes_read == src.stat().st_size
    out = tmp_path / "out.weights"
    net.save_weights(out)
    assert out.read_bytes() == src.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp left


def test_values_land_in_the_right_arrays(tmp_path):
    net = small_net()
    total = sum(sizes(net))
    assert sizes(net) == [3 + 9 + 54, 0, 4 + 4 * 27, 2 + 2 * 4]
    path = tmp_path / "w.weights"
    write(path, [0, 2, 0], 8, np.arange(total))
    net.load_weights(path)
    conv = net.layers[0].params
    assert conv["biases"].tolist() == [0, 1, 2]
    assert conv["scales"].tolist() == [3, 4, 5]            # BN triplet before weights
    assert conv["rolling_variance"].tolist() == [9, 10, 11]
    assert conv["weights"][0, 0, 0].tolist() == [12, 13, 14]
    fc = net.layers[2].params
    assert fc["biases"].tolist() == [66, 67, 68, 69]
    assert fc["weights"][1, 0] == 70 + 27                    # [output][input]


def test_truncated_file_names_the_layer(tmp_path):
    net = small_net()
    path = tmp_path / "short.weights"
    write(path, [0, 2, 0], 8, np.zeros(66 + 10))
    with pytest.raises(WeightsError) as info:
        net.load_weights(path)
    msg = str(info.value)
    assert "layer 2 [connected]" in msg and "ends inside" in msg
    assert f"this cfg needs {20 + 4 * 188}" in msg and f"has {20 + 4 * 76} bytes" in msg
    assert "different cfg" in msg


def test_extra_bytes_are_an_error(tmp_path):
    net = small_net()
    path = tmp_path / "long.weights"
    write(path, [0, 2, 0], 8, np.zeros(188 + 3))
    with pytest.raises(WeightsError, match=r"12 bytes are left over at byte 772 after the "
                       r"last layer with parameters, 3 \[convolutional\]"):
        net.load_weights(path)
    write(path, [0, 2, 0], 8, np.zeros(188))
    with open(path, "ab") as f:
        f.write(b"\x01\x02")
    with pytest.raises(WeightsError, match="2 bytes are left over"):
        net.load_weights(path)


def test_prefix_file_loads_the_layers_present(tmp_path):
    net = small_net()
    path = tmp_path / "small.conv.1"
    write(path, [0, 2, 0], 8, np.ones(66))
    with pytest.warns(WeightsWarning, match=r"loaded 1 of 3 layers .* before layer 2"):
        report = net.load_weights(path)
    assert report.layers_loaded == 1 and not report.complete
    assert np.all(net.layers[0].params["weights"] == 1)
    assert np.all(net.layers[2].params["weights"] == 0)


def test_old_16_byte_header_and_transposed_connected(tmp_path):
    text = "[net]\ninputs=3\n[connected]\noutput=2\nactivation=linear\n"
    net = small_net(text)
    path = tmp_path / "old.weights"
    w_file = np.array([[1, 2], [3, 4], [5, 6]])
    write(path, [0, 1, 0], 4, np.concatenate([[7, 8], w_file.ravel()]))
    assert read_header(path).size == 16 and not read_header(path).transpose
    net.load_weights(path)
    assert net.layers[0].params["weights"].tolist() == [[1, 2, 3], [4, 5, 6]]
    out = tmp_path / "old-again.weights"
    net.save_weights(out)
    assert out.read_bytes() == path.read_bytes()
    # minor > 1000: the file stores connected weights [input][output]
    write(path, [0, 1001, 0], 8, np.concatenate([[7, 8], w_file.ravel()]))
    assert read_header(path).transpose and read_header(path).size == 20
    with pytest.warns(WeightsWarning, match="minor = 1001 is > 1000"):
        net.load_weights(path)
    assert net.layers[0].params["weights"].tolist() == [[1, 3, 5], [2, 4, 6]]
    out = tmp_path / "again.weights"
    net.save_weights(out)
    assert out.read_bytes() == path.read_bytes()


def test_flipped_conv_weights(tmp_path):
    text = "[net]\nwidth=3\nheight=3\nchannels=2\n[convolutional]\nfilters=3\nsize=1\n" \
           "flipped=1\nactivation=linear\n"
    net = small_net(text)
    path = tmp_path / "f.weights"
    write(path, [0, 2, 0], 8, np.concatenate([[0, 0, 0], np.arange(6)]))   # [c][n]
    net.load_weights(path)
    assert net.layers[0].params["weights"][:, :, 0, 0].tolist() == [[0, 3], [1, 4], [2, 5]]


def test_dontload_and_dontloadscales_do_not_advance(tmp_path):
    text = SMALL.replace("batch_normalize=1\n", "batch_normalize=1\ndontloadscales=1\n") \
        .replace("output=4\n", "output=4\ndontload=1\n")
    net = small_net(text)
    path = tmp_path / "d.weights"
    write(path, [0, 2, 0], 8, np.arange(3 + 54 + 10))
    net.load_weights(path)
    assert net.layers[0].params["weights"][0, 0, 0].tolist() == [3, 4, 5]
    assert net.layers[0].params["scales"].tolist() == [1, 1, 1]       # left at defaults
    assert net.layers[3].params["biases"].tolist() == [57, 58]


def test_dialect_from_header_and_header_on_save(tmp_path, write_cfg):
    text = "[net]\nwidth=2\nheight=2\nchannels=2\n[batchnorm]\n"
    assert sizes(small_net(text)) == [6]                       # P: no biases
    assert sizes(small_net(text, dialect="alexeyab")) == [8]   # A: biases first
    path = tmp_path / "a.weights"
    write(path, [0, 2, 5], 8, np.arange(8))
    assert read_header(path).dialect == "alexeyab"
    net = Network.load(write_cfg(text, "n.cfg"), path)
    assert net.graph.net.dialect == "alexeyab"
    fresh = small_net(text, dialect="alexeyab")
    fresh.save_weights(tmp_path / "new.weights")
    assert read_header(tmp_path / "new.weights").revision == 5


def test_header_too_short(tmp_path):
    path = tmp_path / "tiny.weights"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(WeightsError, match="too short for a .weights header"):
        small_net().load_weights(path)
