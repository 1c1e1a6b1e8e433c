"""The library is quiet: training hands its messages to `log` and its progress to a
`progress` callback (Step / Validated events), and only the CLI prints them (a status line
redrawn on a terminal, a line every 10 s otherwise)."""
from __future__ import annotations

import ast
import io
import sys

import numpy as np
import pytest

from darkcfg.cli import main
from darkcfg.graph import load_graph
from darkcfg.network import Network
from darkcfg.train.classifier import train
from darkcfg.train.loop import Step, TrainOptions, Validated

from .conftest import ROOT
from .toy_classifier import make_data, write_cfg

COMPILING = "darkcfg: compiling the Numba kernels"


def few(**kw) -> TrainOptions:
    return TrainOptions(**{"backup_every": 1000, "save_every": 1000, "chart_every": 1000,
                           **kw})


def test_no_library_module_prints():
    """print() and writes to sys.stdout/sys.stderr belong to darkcfg/cli.py only."""
    found = []
    for path in sorted((ROOT / "darkcfg").rglob("*.py")):
        if path.name == "cli.py" and path.parent.name == "darkcfg":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id == "print":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} print()")
            if isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr") and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} sys.{node.attr}")
    assert found == []


def test_training_says_nothing_by_default(tmp_path, capfd):
    data = make_data(tmp_path)
    train(str(data), str(write_cfg(tmp_path, 2)), None, few())
    out, err = capfd.readouterr()
    assert out == ""
    # the compile notice belongs to an earlier CLI test of this process, if any
    assert [line for line in err.splitlines() if not line.startswith(COMPILING)] == []


def test_progress_events_carry_the_run(tmp_path):
    """40 images, 8 per iteration: epoch = 0.2 * iteration; avg is Darknet's running
    average of the losses; validation (every 2 iterations and at the end) is the top-1 of
    the saved weights on toy.npz, counted here with a plain forward."""
    data = make_data(tmp_path)
    cfg = write_cfg(tmp_path, 3)
    events: list = []
    train(str(data), str(cfg), None, few(save_every=1, valid_every=2),
          progress=events.append)
    steps = [e for e in events if isinstance(e, Step)]
    checks = [e for e in events if isinstance(e, Validated)]
    assert [type(e).__name__[0] for e in events] == list("SSVSV")
    assert [s.iteration for s in steps] == [1, 2, 3]
    assert all(s.max_batches == 3 for s in events)
    assert [s.epoch for s in steps] == pytest.approx([0.2, 0.4, 0.6])
    losses = [s.loss for s in steps]
    assert all(np.isfinite(losses)) and losses[0] > 0
    assert steps[0].avg == losses[0]
    assert steps[1].avg == pytest.approx(0.9 * losses[0] + 0.1 * losses[1])
    assert steps[2].avg == pytest.approx(0.9 * steps[1].avg + 0.1 * losses[2])
    assert all(s.images_per_second > 0 for s in steps) and steps[-1].eta == 0

    z = np.load(tmp_path / "toy.npz")
    x = z["x"][:, None].astype(np.float32) / 255
    for check in checks:
        net = Network(load_graph(cfg))
        net.load_weights(tmp_path / "backup" / f"toy_{check.iteration}.weights")
        top1 = np.mean(net.forward(x).reshape(len(x), -1).argmax(1) == z["y"])
        assert (check.iteration, check.metric) in ((2, "top-1"), (3, "top-1"))
        assert check.value == pytest.approx(top1)


def test_quiet_option_sends_no_progress(tmp_path):
    data = make_data(tmp_path)
    events: list = []
    train(str(data), str(write_cfg(tmp_path, 2)), None, few(quiet=True),
          progress=events.append)
    assert events == []


def test_cli_prints_messages_and_a_line_per_10_s(tmp_path, capsys):
    """Not a terminal: the first iteration's line (and later ones every 10 s) on stderr,
    the messages on stdout."""
    data = make_data(tmp_path)
    cfg = write_cfg(tmp_path, 2)
    assert main(["train", str(data), str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"training {cfg} on 40 images")
    assert "done: 2 iterations, 16 images" in out
    assert "\r" not in err
    assert any(line.startswith("1/2 epoch 0.20  loss ") for line in err.splitlines())


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_redraws_the_line_on_a_terminal(tmp_path, monkeypatch):
    """On a terminal the line is redrawn in place, and a message starts on a new line."""
    data = make_data(tmp_path)
    cfg = write_cfg(tmp_path, 2)
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    assert main(["train", str(data), str(cfg)]) == 0
    text = screen.getvalue()
    assert "\r1/2 epoch 0.20  loss " in text and "\r2/2 epoch 0.40  loss " in text
    before, done = text.split("done: 2 iterations", 1)
    assert before.endswith("\n") and before.rstrip().split("\r")[-1].startswith("2/2 ")
    assert done.endswith("\n") and "\r" not in done
