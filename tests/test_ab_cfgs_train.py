"""Every AlexeyAB cfg with a detection head starts training: one iteration at a reduced
size on a composed Fashion-MNIST dataset, through `train_detector` (what `darkcfg train`
runs). Each cfg either finishes (a finite loss, final weights that load back) or is refused,
by name, for a section or an option the README lists as one darkcfg sizes but does not run.
Any other refusal (an unknown key, an option darkcfg rejects) fails here.

The cfg is Darknet's own, with only what a user changes to train it on another dataset:
`classes` (and `counters_per_class`) in each head, the filters of the [convolutional]
before it, and in [net] width/height (the smallest multiple of the largest stride, at
least 64), batch=2, subdivisions=1, max_batches=1. Anchors and masks stay as written.
The large networks are @slow (seconds each, mostly initialising and writing 50-400 MB of
weights); a fast subset of the tiny and CSP families runs by default.
"""
from __future__ import annotations

import importlib.util
import math
import re
import warnings
from pathlib import Path

import pytest

from darkcfg.cfg import read_cfg
from darkcfg.cli import main
from darkcfg.errors import CfgWarning, DataError
from darkcfg.graph import load_graph
from darkcfg.layers.base import REGISTRY
from darkcfg.network import Network
from darkcfg.train.detector import train_detector
from darkcfg.train.loop import Step, TrainOptions

from .conftest import DARKNET_CFG, ROOT, listing, need

AB = DARKNET_CFG / "alexeyab"
HEAD = re.compile(r"^\s*\[(yolo|gaussian_yolo)\]", re.M | re.I)
CFGS = [p for p in listing(AB, "*.cfg") if HEAD.search(p.read_text(errors="replace"))]
CLASSES = 2                                     # Fashion-MNIST Trouser, Sandal

# Under two seconds each here: the tiny family (yolov3/v4/v7), enet, a small CSP, and
# every refusal (refused before any weights are drawn).
FAST = {"yolov3-tiny", "yolov3-tiny-prn", "yolov3-tiny_3l", "yolov3-tiny_obj", "yolov4-tiny",
        "yolov4-tiny-3l", "yolov4-tiny-custom", "yolov7-tiny", "yolov4-csp-s-mish",
        "enet-coco"}

# What darkcfg sizes but does not run (README: "Sections darkcfg sizes but cannot run ...
# and options whose math it does not compute ... are refused by name").
REFUSED = {
    "Gaussian_yolov3_BDD": r"training a \[Gaussian_yolo\] head .* is not implemented",
    "yolov3-tiny_occlusion_track": r"\[crnn\] \(line 112\): darkcfg does not train "
                                   r"detectors on sequences",
    "yolov4-tiny_contrastive": r"\[contrastive\] layers cannot run in darkcfg",
    "resnet152_trident": r"'share_index' \(weights shared with another layer\) is not "
                         r"computed by darkcfg",
    "yolov3-tiny_xnor": r"'xnor=1' is not computed by darkcfg",
}


def lenient_names() -> set[str]:
    """The cfgs README's "Cfgs that load only with `--lenient`" names (backquoted)."""
    text = (ROOT / "README.md").read_text()
    part = text.split("## Cfgs that load only with `--lenient`", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([\w.-]+)`", part)) - {"--lenient"}


def params(paths: list[Path]):
    for p in paths:
        slow = p.stem not in FAST and p.stem not in REFUSED
        yield pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if slow else [])


# --- the dataset ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def composed(tmp_path_factory) -> Path:
    """8 training images of 96 x 96 RGB, 1-4 Fashion-MNIST items each, by
    tools/make_detection_dataset.py; the folder holding train.txt."""
    from darkcfg.data.arrays import fashion_mnist_dir
    try:
        fashion_mnist_dir()
    except DataError as e:
        pytest.skip(str(e))
    spec = importlib.util.spec_from_file_location(
        "make_detection_dataset", ROOT / "tools" / "make_detection_dataset.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path_factory.mktemp("composed")
    assert tool.main([str(out), "--count", "8", "--valid", "1", "--classes", "1,5", "--rgb",
                      "--anchors", "3"]) == 0
    return out


def data_file(composed: Path, folder: Path) -> Path:
    """A .data file for the composed train split, checkpoints in folder/backup. No
    `valid`: validating right after one iteration measures nothing (BN's rolling
    statistics are still Darknet's zero-variance start)."""
    path = folder / "ab.data"
    path.write_text(f"classes = {CLASSES}\ntrain = {composed / 'train.txt'}\n"
                    f"names = {composed / 'fashion.names'}\nbackup = {folder / 'backup'}\n")
    return path


# --- the cfg, as a user adapts it -------------------------------------------------------

def set_keys(lines: list[str], start: int, end: int, keys: dict[str, str]) -> None:
    """Set keys in the section whose body is lines[start:end] (0-based): every line that
    writes the key is rewritten (a duplicate stays a duplicate), a missing key is added
    under the header."""
    for key, value in keys.items():
        hits = [i for i in range(start, end)
                if "=" in lines[i] and lines[i].split("=", 1)[0].strip() == key
                and not lines[i].lstrip().startswith(("#", ";"))]
        for i in hits:
            lines[i] = f"{key}={value}"
        if not hits:
            lines.insert(start, f"{key}={value}")


def adapt(src: Path, dst: Path, size: int | None = None) -> None:
    """Write src to dst for CLASSES classes (and size x size, batch 2, one iteration)."""
    lines = src.read_text().split("\n")
    sections = read_cfg(src, strict=False)
    ends = [s.line - 1 for s in sections[1:]] + [len(lines)]
    edits: list[tuple[int, int, dict[str, str]]] = []
    for k, s in enumerate(sections):
        cls = REGISTRY.get(s.name.lower()) or REGISTRY.get(s.name)
        if not getattr(cls, "is_head", False):
            continue
        e = s.entries
        n = len(e["mask"].value.split(",")) if "mask" in e else int(e["num"].value)
        keys = {"classes": str(CLASSES)}
        if "counters_per_class" in e:               # one count per class
            keys["counters_per_class"] = ",".join(
                e["counters_per_class"].value.split(",")[:CLASSES])
        edits.append((s.line, ends[k], keys))
        before = sections[k - 1]
        edits.append((before.line, ends[k - 1],
                      {"filters": str((CLASSES + cls.per_anchor) * n)}))
    net = {"batch": "2", "subdivisions": "1", "max_batches": "1"}
    if size:
        net.update(width=str(size), height=str(size))
    edits.append((sections[0].line, ends[0], net))
    for start, end, keys in sorted(edits, reverse=True):    # bottom-up: lines stay valid
        set_keys(lines, start, end, keys)
    dst.write_text("\n".join(lines))


def reduced_size(cfg: Path, strict: bool) -> int:
    """The smallest multiple of the coarsest head's stride that is at least 64."""
    graph = load_graph(cfg, strict=strict)
    width = graph.net.input_shape[2]
    stride = max(width // lay.in_shape[2] for lay in graph.layers if lay.is_head)
    return stride * math.ceil(64 / stride)


# --- the tests --------------------------------------------------------------------------

def test_the_ab_cfgs_are_there():
    need(AB)
    assert len(CFGS) >= 40
    assert set(REFUSED) | FAST <= {p.stem for p in CFGS}
    assert {"yolov4-sam-mish-csp-reorg-bfm", "cspx-p7-mish"} <= lenient_names()


def test_adapt_sets_classes_filters_and_size(tmp_path):
    src = need(AB / "yolov4-tiny.cfg")
    adapt(src, tmp_path / "t.cfg", 96)
    graph = load_graph(tmp_path / "t.cfg")
    heads = [lay for lay in graph.layers if lay.is_head]
    # Darknet's yolov4-tiny: two heads of 3 anchors at strides 32 and 16
    assert [(h.classes, len(h.mask), h.in_shape) for h in heads] == \
        [(2, 3, (21, 3, 3)), (2, 3, (21, 6, 6))]
    assert graph.net.input_shape == (3, 96, 96)
    assert (graph.net.batch, graph.net.opts["max_batches"]) == (2, 1)


@pytest.mark.parametrize("src", params(CFGS))
def test_one_training_iteration(src, composed, tmp_path, capsys):
    strict = src.stem not in lenient_names()
    cfg = tmp_path / src.name
    with warnings.catch_warnings():
        # the lenient cfgs' warnings are the README's; a strict load turns any into an error
        warnings.simplefilter("ignore" if not strict else "error", CfgWarning)
        adapt(src, cfg)
        if src.stem in REFUSED:
            # through the command line: what a user sees (the library's train_detector
            # names the last layer instead when that is the unrunnable one)
            lenient = [] if strict else ["--lenient"]
            assert main(["train", str(data_file(composed, tmp_path)), str(cfg), "--quiet",
                         *lenient]) == 2
            err = capsys.readouterr().err
            assert re.search(REFUSED[src.stem], err), err
            assert not (tmp_path / "backup").exists()
            return
        adapt(src, cfg, reduced_size(cfg, strict))
        steps: list[Step] = []
        final = train_detector(str(data_file(composed, tmp_path)), str(cfg), None,
                               TrainOptions(chart_every=1000), strict=strict,
                               progress=steps.append)
        graph = load_graph(cfg, strict=strict)
    assert [s.iteration for s in steps if isinstance(s, Step)] == [1]
    loss = steps[0].loss
    assert math.isfinite(loss) and loss > 0
    assert final == tmp_path / "backup" / f"{src.stem}_final.weights"
    net = Network(graph)
    net.load_weights(final)         # the header, then every layer's parameters, exactly
    assert net.seen == 2 and net.iteration == 1


# What tools/make_detection_dataset.py's data needs changed in yolov4-tiny.cfg (README,
# "Measured"): [net] size, channels, batch and schedule, mosaic; the heads' anchors,
# classes, num and mask and the filters before them, as calc_anchors --write sets them.
FASHION_NET_KEYS = {"batch", "subdivisions", "width", "height", "channels", "burn_in",
                    "max_batches", "steps", "mosaic"}
FASHION_HEAD_KEYS = {"anchors", "classes", "num", "mask"}


def test_yolov4_tiny_fashion_is_alexeyabs_cfg_but_for_the_data():
    ours = read_cfg(ROOT / "cfg" / "yolov4-tiny_fashion.cfg")
    theirs = read_cfg(need(AB / "yolov4-tiny.cfg"))
    assert [s.name for s in ours] == [s.name for s in theirs]
    heads = [i for i, s in enumerate(ours) if s.name == "yolo"]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        mine = {k: e.value for k, e in a.entries.items()}
        orig = {k: e.value for k, e in b.entries.items()}
        allowed = (FASHION_NET_KEYS if a.name == "net" else FASHION_HEAD_KEYS if i in heads
                   else {"filters"} if i + 1 in heads else set())
        changed = {k for k in mine.keys() | orig.keys() if mine.get(k) != orig.get(k)}
        assert changed <= allowed, f"section {i} [{a.name}]: {sorted(changed - allowed)}"
    g = load_graph(ROOT / "cfg" / "yolov4-tiny_fashion.cfg")
    yolo = [lay for lay in g.layers if lay.type == "yolo"]
    assert [h.in_shape[1:] for h in yolo] == [(6, 6), (12, 12)]     # yolo_fashion's cells
    assert all(h.classes == 10 and h.total == 6 for h in yolo)
    assert g.net.opts["mosaic"] == 1 and g.net.opts["channels"] == 1
