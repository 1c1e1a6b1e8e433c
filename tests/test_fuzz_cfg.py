"""Mutated real cfgs either load or raise darkcfg's own error — never anything else."""
from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darkcfg import DarkcfgError
from darkcfg.cfg import parse_cfg
from darkcfg.graph import build_graph
from darkcfg.summary import format_table, to_dot, to_json

from .conftest import CASES, DARKNET_CFG

SOURCES = [DARKNET_CFG / "pjreddie" / "yolov3-tiny.cfg", DARKNET_CFG / "pjreddie" / "tiny.cfg",
           DARKNET_CFG / "alexeyab" / "yolov4-tiny.cfg", DARKNET_CFG / "pjreddie" / "go.cfg",
           CASES / "shortcut" / "net.cfg", CASES / "route" / "net.cfg",
           CASES / "upsample_reorg" / "net.cfg", CASES / "conv_groups" / "net.cfg"]
TEXTS = [p.read_text() for p in SOURCES if p.exists()]
if not TEXTS:
    pytest.skip("the Darknet cfgs in ../shared are absent", allow_module_level=True)

values = st.one_of(st.integers(-5, 2000).map(str), st.floats(-1e3, 1e3).map(str),
                   st.sampled_from(["", "abc", "1e9", "-1", "0", "3,", ",", "nan", "inf",
                                    "leaky", "linear", "1,2,3", "-1,-99", "99"]),
                   st.text(max_size=8))


@st.composite
def mutated(draw):
    lines = draw(st.sampled_from(TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["value", "delete", "duplicate", "swap", "insert",
                                   "truncate", "key"]))
        if op == "value" and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "=" + draw(values)
        elif op == "key" and "=" in lines[i]:
            lines[i] = draw(st.sampled_from(["filters", "size", "stride", "from", "layers",
                                             "groups", "dilation", "padding", "bogus",
                                             "mask", "classes", "num", "stride_x"])) + \
                "=" + lines[i].split("=", 1)[1]
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(["[route]", "[shortcut]", "[yolo]",
                                                  "[maxpool]", "[bogus]", "[", "=", "x=1",
                                                  "[upsample]", "[reorg]", "[softmax]"])))
        elif op == "truncate":
            lines = lines[:i]
    return "\n".join(lines)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.booleans())
def test_mutated_cfgs_fail_only_with_darkcfg_errors(text, strict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            graph = build_graph(parse_cfg(text, "fuzz.cfg", strict=strict), strict=strict)
        except DarkcfgError as e:
            assert str(e).startswith("fuzz.cfg")
            return
    format_table(graph)
    to_json(graph)
    to_dot(graph)
    for layer in graph.layers:
        assert min(layer.out_shape) > 0
