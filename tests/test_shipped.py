"""The network we ship (cfg/fashion_plain.cfg + weights/fashion_plain.weights) does what
the README says: the sample images are classified as their file names say, and the whole
Fashion-MNIST test set scores >= 91% top-1."""
from __future__ import annotations

import pytest

from darkcfg import DarkcfgError
from darkcfg.network import Network
from darkcfg.predict import prepare, read_labels

from .conftest import ROOT

CFG = ROOT / "cfg" / "fashion_plain.cfg"
WEIGHTS = ROOT / "weights" / "fashion_plain.weights"
SAMPLES = sorted((ROOT / "weights" / "samples").glob("*.png"))


def slug(name: str) -> str:
    return name.lower().replace("/", "-").replace(" ", "-")


def test_samples_are_classified_as_named():
    net = Network.load(CFG, WEIGHTS)
    names = read_labels(ROOT / "weights" / "fashion.names")
    assert len(SAMPLES) == 10
    for path in SAMPLES:
        y = net.forward(prepare(path, net.input_shape)[None]).ravel()
        assert path.stem.split("_", 1)[1] == slug(names[int(y.argmax())]), path.name


def test_test_set_accuracy():
    from darkcfg.data.arrays import fashion_mnist
    from darkcfg.train.classifier import accuracy
    try:
        test = fashion_mnist("test")
    except DarkcfgError as e:
        pytest.skip(str(e))
    net = Network.load(CFG, WEIGHTS)
    top1, _ = accuracy(net, test, 10, 1)
    assert top1 >= 0.91
