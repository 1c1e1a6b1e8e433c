"""The loss chart: a real PNG of the asked size with the curves drawn, written atomically."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from darkcfg.train.chart import ACC, AVG, LOSS, draw_chart, loss_axis_top, nice_ticks


def made_up(n=300):
    rng = np.random.default_rng(0)
    it = list(range(1, n + 1))
    loss = [2.0 * math.exp(-i / 80) + 0.3 + 0.2 * rng.random() for i in it]
    avg, a = [], loss[0]
    for v in loss:
        a = 0.9 * a + 0.1 * v
        avg.append(a)
    return it, loss, avg


def colours(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
        return im.size, {tuple(c) for c in np.unique(rgb, axis=0)}, rgb


def test_chart_with_accuracy(tmp_path):
    it, loss, avg = made_up()
    loss[40] = float("nan")
    out = tmp_path / "chart.png"
    draw_chart(out, it, loss, avg, accuracy=[(100, 0.71), (200, 0.84), (300, 0.9)],
               title="t.cfg", size=(640, 400))
    size, cols, rgb = colours(out)
    assert size == (640, 400)
    assert {LOSS, AVG, ACC} <= cols
    assert (rgb != 255).any(axis=1).mean() > 0.02          # not blank
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]   # no temp file left


def test_chart_without_accuracy_replaces_the_old_file(tmp_path):
    out = tmp_path / "chart.png"
    out.write_bytes(b"old")
    it, loss, avg = made_up(50)
    draw_chart(out, it, loss, avg)
    size, cols, _ = colours(out)
    assert size == (900, 560) and {LOSS, AVG} <= cols and ACC not in cols


def test_chart_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError):
        draw_chart(tmp_path / "c.png", [1, 2], [1.0])


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0, 2.6) == [0, 1, 2, 3]
    assert nice_ticks(1, 4000) == [0, 1000, 2000, 3000, 4000]
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 0.0034) == [0, 0.001, 0.002, 0.003, 0.004]


def test_chart_draws_a_statistic_on_the_right_axis(tmp_path):
    from darkcfg.train.chart import STAT
    it, loss, avg = made_up(100)
    out = tmp_path / "chart.png"
    stat = [0.75] * 50 + [math.nan] * 10 + [0.25] * 40      # NaN: no value, a gap
    draw_chart(out, it, loss, avg, stat=("active", stat), size=(600, 400))
    _, cols, rgb = colours(out)
    assert STAT in cols and ACC not in cols
    # the plot spans rows 45..345: 0.75 and 0.25 of the right axis are rows 120 and 270
    rows = {int(r) for r in np.flatnonzero((rgb == STAT).all(1)) // 600}
    assert {120, 270} <= rows
    with pytest.raises(ValueError):
        draw_chart(out, it, loss, avg, stat=("active", stat[:-1]))


def test_a_huge_early_loss_is_clipped_so_the_rest_stays_readable(tmp_path):
    # a detector: ~80 for the first iterations, then 3-4; the axis follows the late part
    rng = np.random.default_rng(1)
    it = list(range(1, 401))
    loss = [80.0 * math.exp(-i / 10) + 3 + rng.random() for i in it]
    late = sorted(loss[200:])
    assert loss_axis_top(loss) == pytest.approx(2 * late[int(0.9 * 200)])
    assert loss_axis_top(loss) < 10
    out = tmp_path / "chart.png"
    draw_chart(out, it, loss, loss, size=(600, 400))
    _, _, rgb = colours(out)
    # the late average (3-4 of a top of ~8-10) is drawn in the plot's middle rows, not
    # squashed onto its bottom edge (which a top of 80 would do: rows 330-345)
    rows = np.flatnonzero((rgb == AVG).all(1)) // 600
    assert np.median(rows) < 300
    # a flat run keeps its largest loss as the top; a short one too
    assert loss_axis_top([1.0, 0.9] * 20) == 1.0
    assert loss_axis_top([50.0, 1.0, 1.0]) == 50.0
    assert loss_axis_top([math.nan, math.inf]) == 1.0
