"""The command line, end to end, in fresh processes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .conftest import DARKNET_CFG, need
from .helpers import darkcfg

TINY = """[net]
width=12
height=12
channels=3
[convolutional]
filters=4
size=3
stride=2
pad=1
activation=leaky
[avgpool]
[softmax]
"""


def test_summary_table_json_dot():
    cfg = need(DARKNET_CFG / "pjreddie" / "yolov3-tiny.cfg")
    table = darkcfg("summary", cfg)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("layer     filters    size")
    assert lines[1].startswith("    0 conv     16  3 x 3 / 1   416 x 416 x   3   ->   416")
    assert "params 8858734 weights_bytes 35434956" in table.stdout

    doc = json.loads(darkcfg("summary", cfg, "--format", "json", "--width", "320",
                             "--height", "320").stdout)
    assert doc["input"] == [3, 320, 320]
    first = doc["layers"][0]
    assert first["output"] == [16, 320, 320] and first["params"] == 16 + 16 * 3 + 16 * 27
    assert first["bflops"] == pytest.approx(2 * 16 * 27 * 320 * 320 / 1e9)
    assert doc["layers"][16]["receptive_field"] is not None
    assert doc["totals"]["weights_bytes"] == 35434956

    dot = darkcfg("summary", cfg, "--format", "dot").stdout
    assert dot.startswith("digraph") and "L19 -> L20" in dot and "L8 -> L20" in dot


def test_summary_does_not_import_numba():
    cfg = need(DARKNET_CFG / "pjreddie" / "yolov3-tiny.cfg")
    code = (f"import sys, darkcfg.cli as c; c.main(['summary', {str(cfg)!r}]); "
            "sys.exit(1 if 'numba' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, "the summary path imported numba"


def test_bad_cfg_gives_one_clear_line(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text(TINY.replace("filters=4", "filtres=4"))
    proc = darkcfg("summary", bad)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("darkcfg: error: bad.cfg:6: [convolutional] (layer 0): "
                                   "unknown key 'filtres' - did you mean 'filters'?")
    lenient = darkcfg("summary", bad, "--lenient")
    assert lenient.returncode == 0 and "unknown key 'filtres'" in lenient.stderr


def test_run_classifier_end_to_end(tmp_path):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    rng = np.random.default_rng(3)
    weights = np.concatenate([[0, 0, 0, 0], rng.normal(size=4 * 27)]).astype("<f4")
    (tmp_path / "tiny.weights").write_bytes(
        np.array([0, 2, 0], "<i4").tobytes() + np.zeros(1, "<u8").tobytes() + weights.tobytes())
    (tmp_path / "labels.txt").write_text("ant\nbee\ncat\ndog\n")
    img = (rng.random((12, 12, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    proc = darkcfg("run", cfg, tmp_path / "tiny.weights", tmp_path / "a.png",
                   tmp_path / "missing.png", "--labels", tmp_path / "labels.txt", "--top", "2",
                   "--output", tmp_path / "out.npy")
    assert proc.returncode == 1                               # one image failed...
    assert "missing.png: no such image file" in proc.stderr   # ...and is named
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (1, 4)

    # independent check: the same net in plain NumPy
    x = img.astype(np.float32).transpose(2, 0, 1) / 255       # 12x12: no resize needed
    w = weights[4:].reshape(4, 3, 3, 3)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    conv = np.array([[[np.sum(w[f] * xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3])
                       for j in range(6)] for i in range(6)] for f in range(4)])
    conv = np.where(conv > 0, conv, 0.1 * conv)
    logits = conv.mean(axis=(1, 2))
    p = np.exp(logits - logits.max())
    p /= p.sum()
    np.testing.assert_allclose(out[0], p, rtol=1e-5)
    best = int(np.argmax(p))
    assert f"{100 * p[best]:6.2f}%  {['ant', 'bee', 'cat', 'dog'][best]}" in proc.stdout
