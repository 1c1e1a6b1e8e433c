"""Which lineage a network follows (DECISIONS.md 2): `--dialect` > a weights header of
revision >= 5 > an AlexeyAB-only section, key or activation in the cfg > pjreddie; the
reason `darkcfg summary` prints."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from darkcfg.graph import load_graph
from darkcfg.network import Network

from .conftest import DARKNET_CFG, listing
from .helpers import darkcfg

PLAIN = """[net]
width=4
height=4
channels=1
[convolutional]
filters=1
size=1
activation=leaky
"""


def cfg_with(tmp_path: Path, text: str, name: str = "t.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def weights_file(tmp_path: Path, revision: int) -> Path:
    """A 0.2.<revision> weights file for PLAIN (one bias, one weight)."""
    path = tmp_path / f"rev{revision}.weights"
    path.write_bytes(np.array([0, 2, revision], "<i4").tobytes() + np.zeros(1, "<u8").tobytes()
                     + np.array([0.5, 2.0], "<f4").tobytes())
    return path


# each AlexeyAB-only thing, the line it sits on in the cfg, and what the reason quotes
AB_ONLY = [
    ("[convolutional]\nfilters=1\nsize=1\nactivation=mish\n", 4, "activation=mish"),
    ("[convolutional]\nfilters=1\nsize=1\nactivation=swish\n", 4, "activation=swish"),
    ("[convolutional]\nfilters=1\nsize=3\ndilation=2\npad=1\n", 4, "dilation=2"),
    ("[maxpool]\nsize=2\nstride_x=2\nstride_y=1\n", 3, "stride_x=2"),
    ("[convolutional]\nfilters=2\nsize=1\n[route]\nlayers=-1\ngroups=2\ngroup_id=1\n", 6,
     "[route] groups=2"),
    ("[convolutional]\nfilters=1\nsize=1\n" * 3 + "[shortcut]\nfrom=-2, -3\n", 11,
     "from=-2, -3"),
    ("[convolutional]\nfilters=1\nsize=1\n[sam]\nfrom=-1\n", 4, "section [sam]"),
    ("[reorg3d]\nstride=2\n", 1, "section [reorg3d]"),
]


@pytest.mark.parametrize("layers,line,what", AB_ONLY, ids=[a[2] for a in AB_ONLY])
def test_an_alexeyab_only_feature_chooses_alexeyab(tmp_path, layers, line, what):
    head = "[net]\nwidth=4\nheight=4\nchannels=1\n"
    path = cfg_with(tmp_path, head + layers)
    choice = load_graph(path).net.dialect_choice
    assert (choice.dialect, choice.rule) == ("alexeyab", "cfg")
    assert f"t.cfg line {4 + line}: " in choice.reason and what in choice.reason
    # the line named is the one that holds it
    text = path.read_text().splitlines()[4 + line - 1]
    assert text.strip("[]") in choice.reason


def test_net_keys_and_yolo_keys_of_alexeyab(tmp_path):
    for extra, what in (("letter_box=1", "[net] letter_box=1"), ("mosaic=1", "[net] mosaic=1"),
                        ("policy=sgdr", "[net] policy=sgdr")):
        path = cfg_with(tmp_path, PLAIN.replace("channels=1\n", f"channels=1\n{extra}\n"))
        choice = load_graph(path).net.dialect_choice
        assert choice.rule == "cfg" and f"line 5: {what}" in choice.reason, extra


def test_nothing_alexeyab_only_stays_pjreddie(tmp_path):
    # keys both lineages read: conv groups, [net] flip, a single shortcut from
    text = PLAIN.replace("channels=1\n", "channels=1\nflip=1\n") + \
        "[convolutional]\nfilters=1\nsize=1\ngroups=1\n[shortcut]\nfrom=-2\n"
    choice = load_graph(cfg_with(tmp_path, text)).net.dialect_choice
    assert (choice.dialect, choice.rule) == ("pjreddie", "default")


def test_precedence_given_then_weights_then_cfg_then_default(tmp_path):
    plain = cfg_with(tmp_path, PLAIN)
    mish = cfg_with(tmp_path, PLAIN.replace("leaky", "mish"), "mish.cfg")
    old, new = weights_file(tmp_path, 0), weights_file(tmp_path, 5)

    def rule(cfg, weights=None, dialect=None) -> tuple[str, str]:
        c = Network.load(cfg, weights, dialect=dialect).graph.net.dialect_choice
        return c.dialect, c.rule

    assert rule(plain) == ("pjreddie", "default")
    assert rule(plain, old) == ("pjreddie", "default")
    assert rule(mish) == ("alexeyab", "cfg")
    assert rule(mish, old) == ("alexeyab", "cfg")          # a revision 0 header says nothing
    assert rule(plain, new) == ("alexeyab", "weights")
    assert rule(mish, new) == ("alexeyab", "weights")
    assert rule(mish, new, "pjreddie") == ("pjreddie", "given")
    assert rule(plain, old, "alexeyab") == ("alexeyab", "given")
    reason = Network.load(plain, new).graph.net.dialect_choice.reason
    assert "rev5.weights" in reason and "0.2.5" in reason


def test_the_chosen_dialect_changes_the_numbers(tmp_path):
    """A BN conv with an AlexeyAB activation runs with AlexeyAB's BN denominator
    sqrt(var + 1e-5) (not pjreddie's sqrt(var) + 1e-6) unless --dialect says otherwise."""
    text = PLAIN.replace("activation=leaky", "batch_normalize=1\nactivation=swish")
    cfg = cfg_with(tmp_path, text)
    out = {}
    for dialect in (None, "pjreddie"):
        net = Network.load(cfg, dialect=dialect)
        lay = net.layers[0]
        lay.params["weights"][:] = 1.0
        lay.params["scales"][:] = 1.0
        lay.params["rolling_variance"][:] = 1e-4
        out[dialect] = net.forward(np.full((1, 1, 4, 4), 0.01, np.float32))[0, 0, 0, 0]
    xhat_ab, xhat_p = 0.01 / np.sqrt(1e-4 + 1e-5), 0.01 / (np.sqrt(1e-4) + 1e-6)
    swish = lambda v: v / (1 + np.exp(-v))              # noqa: E731
    assert out[None] == pytest.approx(swish(xhat_ab), rel=1e-5)
    assert out["pjreddie"] == pytest.approx(swish(xhat_p), rel=1e-5)


def test_summary_says_which_dialect_and_why(tmp_path):
    cfg = cfg_with(tmp_path, PLAIN.replace("leaky", "hard_mish"))
    table = darkcfg("summary", cfg)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[-1] == (
        "dialect: alexeyab, chosen by the cfg content: t.cfg line 8: [convolutional] "
        "activation=hard_mish exists only in AlexeyAB's Darknet")
    forced = darkcfg("summary", cfg, "--dialect", "pjreddie")
    assert forced.stdout.splitlines()[-1].startswith("dialect: pjreddie, chosen by "
                                                     "--dialect: ")
    doc = json.loads(darkcfg("summary", cfg, "--format", "json").stdout)
    assert (doc["dialect"], doc["dialect_rule"]) == ("alexeyab", "cfg")
    assert "line 8: [convolutional] activation=hard_mish" in doc["dialect_reason"]
    plain = darkcfg("summary", cfg_with(tmp_path, PLAIN, "p.cfg")).stdout.splitlines()[-1]
    assert plain.startswith("dialect: pjreddie, chosen by default: nothing AlexeyAB-only")


# ---------------------------------------------------------------------------------------
# Darknet's own cfgs (../shared/darknet-cfg)

# An independent reading of spec/cfg-format.md's lineage columns: text patterns of
# AlexeyAB-only things, matched on the raw lines.
AB_PATTERNS = re.compile(
    r"^\s*(\[(sam|scale_channels|implicit|reorg3d|local_avgpool|local_avg|Gaussian_yolo|"
    r"contrastive|empty|silence)\]|activation\s*=\s*(mish|swish|hard_mish|relu6|gelu)\b|"
    r"(scale_x_y|new_coords|iou_loss|iou_normalizer|nms_kind|weights_type|group_id|"
    r"stride_x|stride_y|dilation|letter_box|mosaic|cutmix|mixup|label_smooth_eps)\s*=)",
    re.M)


def detected(path: Path):
    return load_graph(path, strict=False).net.dialect_choice


@pytest.mark.parametrize("path", listing(DARKNET_CFG / "pjreddie", "*.cfg"),
                         ids=lambda p: p.name)
def test_every_pjreddie_cfg_stays_pjreddie(path):
    choice = detected(path)
    assert (choice.dialect, choice.rule) == ("pjreddie", "default"), choice.reason


@pytest.mark.parametrize("path", listing(DARKNET_CFG / "alexeyab", "*.cfg"),
                         ids=lambda p: p.name)
def test_alexeyab_cfgs_with_an_ab_feature_are_alexeyab(path):
    choice = detected(path)
    if AB_PATTERNS.search(path.read_text()):
        assert (choice.dialect, choice.rule) == ("alexeyab", "cfg")
    if choice.rule == "cfg":
        # the reason names a line of the file that holds what it quotes
        n, what = re.search(r"line (\d+): (.*) exists only", choice.reason).groups()
        line = path.read_text().splitlines()[int(n) - 1].replace(" ", "")
        quoted = what.split("] ")[-1].replace(" (several layers)", "").replace(" ", "")
        assert quoted.strip("[]").lstrip("section") in line, (line, what)


def test_the_alexeyab_folder_has_many_ab_cfgs():
    paths = listing(DARKNET_CFG / "alexeyab", "*.cfg")
    if not paths:
        pytest.skip("../shared/darknet-cfg is absent")
    found = {p.name for p in paths if detected(p).dialect == "alexeyab"}
    assert {"yolov4.cfg", "yolov4-tiny.cfg", "yolov4-csp.cfg", "yolov7.cfg",
            "efficientnet_b0.cfg", "enet-coco.cfg", "Gaussian_yolov3_BDD.cfg"} <= found
    assert len(found) >= 35
