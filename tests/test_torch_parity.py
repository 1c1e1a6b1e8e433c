"""tools/torch_from_cfg.py builds the same network as darkcfg: every layer's output agrees
(rel <= 1e-4) on Darknet's reference cases (their weights) and on the benchmark cfgs
(random weights, small inputs). Skipped without PyTorch; darkcfg itself never imports it."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from darkcfg.network import Network

from .conftest import DARKNET_CFG, ROOT, need
from .reference import REL_BAR, case_dirs, case_input, rel_error, weights_path

torch = pytest.importorskip("torch")
sys.path.insert(0, str(ROOT / "tools"))
from bench import random_network  # noqa: E402
from torch_from_cfg import from_network  # noqa: E402

CASES = [c for c in case_dirs() if c.name in (
    "real_tiny", "real_resnet18", "route", "shortcut", "pooling", "conv_groups",
    "connected")]
# darknet19's layer kinds are those of tiny (and it takes seconds to initialise)
NETS = [("yolov3-tiny", 96), ("resnet18", 64), ("tiny", 64)]


def compare(net: Network, x: np.ndarray) -> list[tuple[float, int, str]]:
    net.forward(x)
    with torch.no_grad():
        theirs = from_network(net)(torch.from_numpy(x), every=True)
    return [(rel_error(net.outputs[i], t.numpy()), i, net.layers[i].type)
            for i, t in enumerate(theirs)]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_reference_case_matches_torch(case, tmp_path):
    net = Network.load(case / "net.cfg", weights_path(case, tmp_path))
    c, h, w = net.input_shape
    worst = compare(net, case_input(case).reshape(1, c, h, w))
    bad = [r for r in worst if not r[0] <= REL_BAR]
    assert not bad, "layers off PyTorch (rel, index, type): " + repr(bad)


@pytest.mark.parametrize("name,size", NETS, ids=[n for n, _ in NETS])
def test_benchmark_net_matches_torch(name, size):
    cfg = need(DARKNET_CFG / "pjreddie" / f"{name}.cfg")
    net = random_network(cfg, size, 2)
    c, h, w = net.input_shape
    x = np.random.default_rng(3).random((2, c, h, w), dtype=np.float32)
    worst = compare(net, x)
    bad = [r for r in worst if not r[0] <= REL_BAR]
    assert not bad, "layers off PyTorch (rel, index, type): " + repr(bad)


def test_training_copy_takes_a_step():
    cfg = need(DARKNET_CFG / "tutorial" / "cifar_small.cfg")
    net = random_network(cfg, None, 4)
    model = from_network(net, train=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    c, h, w = net.input_shape
    x = torch.rand(4, c, h, w)
    p = model(x).reshape(4, -1)
    loss = torch.nn.functional.nll_loss(torch.log(p), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and p.shape == (4, 10)
