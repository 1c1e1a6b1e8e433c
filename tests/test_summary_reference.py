"""The summary table and totals equal what Darknet (P) printed for its own cfgs."""
from __future__ import annotations

import re

import pytest

from darkcfg import load_graph
from darkcfg.summary import darknet_totals_line, format_table, layer_facts, totals

from .conftest import DARKNET_CFG, REFERENCE, listing, need

SUMMARIES = listing(REFERENCE / "summary" / "pjreddie", "*.txt")
NOISE = re.compile(r"\w+: Using default '[^']*'\n|Unused field: '[^']*'\n")


def darknet_rows(text: str) -> dict[int, list[str]]:
    """Darknet's table: layer index -> its line(s), with the option notices removed."""
    rows: dict[int, list[str]] = {}
    current = None
    for line in NOISE.sub("", text).splitlines():
        m = re.match(r" *(\d+) ", line)
        if m and not line.startswith("layers "):
            current = int(m.group(1))
            rows[current] = [line]
        elif line.startswith("\t") and current is not None:
            rows[current].append(line)
    return rows


@pytest.mark.parametrize("ref", SUMMARIES, ids=lambda p: p.stem)
def test_matches_darknet_table(ref):
    text = ref.read_text()
    if "layers " not in text:
        pytest.skip(f"Darknet crashed loading {ref.stem}.cfg; it printed no table")
    graph = load_graph(DARKNET_CFG / "pjreddie" / f"{ref.stem}.cfg", strict=False)
    rows = darknet_rows(text)
    assert sorted(rows) == list(range(len(graph.layers)))
    ours = format_table(graph).splitlines()[1:]
    i = 0
    for layer in graph.layers:
        theirs = rows[layer.index]
        for line in theirs:
            # darkcfg's table is Darknet's text, then extra columns to the right
            assert ours[i].rstrip().startswith(line.rstrip()), (ours[i], line)
            extra = ours[i][len(line):]
            assert not extra.strip() or extra.startswith(" "), ours[i]
            i += 1
        assert layer.row().count("\n") + 1 == len(theirs)

    facts = layer_facts(graph)
    t = totals(graph, facts)
    # Darknet's reference generator counted no parameters inside [rnn]/[gru]/[local]
    # layers, although Darknet's .weights files hold them; compare the rest exactly.
    skipped = sum(lay.nparams for lay in graph.layers if lay.type in ("rnn", "gru", "local"))
    t["params"] -= skipped
    t["weights_bytes"] -= 4 * skipped
    line = next(ln for ln in text.splitlines() if ln.startswith("layers "))
    assert darknet_totals_line(t) == line.strip()


def test_conv_bflops_and_shapes_of_yolov3_tiny_by_hand():
    graph = load_graph(need(DARKNET_CFG / "pjreddie" / "yolov3-tiny.cfg"))
    conv12 = graph.layers[12]
    assert conv12.out_shape == (1024, 13, 13)
    assert conv12.flops() == 2 * 1024 * 9 * 512 * 13 * 13
    assert graph.layers[11].out_shape == (512, 13, 13)       # 2x2/1 "same" maxpool
    assert graph.layers[20].out_shape == (384, 26, 26)       # route 19 8
