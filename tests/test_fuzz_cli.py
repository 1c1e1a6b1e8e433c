"""Every CLI command fed random bytes and valid-but-odd files in every file slot.

For each generated command line (in-process, through `darkcfg.cli.main`):
- no exception escapes `main` and nothing prints a traceback;
- a non-zero exit comes with a darkcfg message (`darkcfg: error: ...`) or argparse's usage;
- no file outside the output folder changes, and no temporary file is left anywhere.
The inputs are tiny nets (a classifier and a two-class YOLO) whose kernels compile once.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from darkcfg.cli import main

CLS_CFG = """[net]
batch=2
subdivisions=1
width=8
height=8
channels=1
learning_rate=0.01
max_batches=2

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[connected]
output=3
activation=linear

[softmax]
"""

DET_CFG = """[net]
batch=2
subdivisions=1
width=16
height=16
channels=1
learning_rate=0.01
max_batches=2

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
size=1
filters=14
activation=linear

[yolo]
mask=0,1
anchors=4,4, 8,8
num=2
classes=2
jitter=.1
"""

NAMES = ["cat", "dog", "bird"]
ODD_VALUES = ["-1", "0", "1", "3", "2147483648", "1000000000000", "nan", "inf", "1e400",
              "", "abc", "0x10", "1,2", "\u00e9t\u00e9", "-0"]


def _build(root: Path) -> None:
    """The valid files every slot starts from (paths in lists and .data are absolute)."""
    from darkcfg.network import Network
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    for i in range(6):
        name = NAMES[i % 3]
        pix = (rng.random((16, 16)) * 255).astype(np.uint8)
        Image.fromarray(pix, "L").save(root / "imgs" / f"{name}_{i}.png")
        # YOLO labels for the detector (class 0/1, a box in the middle)
        (root / "imgs" / f"{name}_{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.4 0.3\n")
    imgs = sorted(str(p) for p in (root / "imgs").glob("*.png"))
    (root / "list.txt").write_text("\n".join(imgs) + "\n")
    (root / "names.txt").write_text("\n".join(NAMES) + "\n")
    (root / "det.names").write_text("a\nb\n")
    out = root.parent / "out"
    for kind, cfg, classes, names in (("cls", CLS_CFG, 3, "names.txt"),
                                      ("det", DET_CFG, 2, "det.names")):
        (root / f"{kind}.cfg").write_text(cfg)
        net = Network.load(root / f"{kind}.cfg")
        net.init_weights(seed=1)
        net.save_weights(root / f"{kind}.weights")
        (root / f"{kind}.data").write_text(
            f"classes = {classes}\ntrain = {root / 'list.txt'}\nvalid = {root / 'list.txt'}"
            f"\nnames = {root / names}\nlabels = {root / names}\nbackup = {out / 'backup'}\n")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    valid = base / "valid"
    valid.mkdir()
    _build(valid)
    return base


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root))] = "dir"
    return out


SLOT_KINDS = ["random", "truncated", "mutated", "mutated", "empty", "dir", "missing",
              "devnull", "wrongkind", "huge"]


@st.composite
def slot(draw, kind_of_file: str):
    """How one file argument is spoiled: (spoiling, payload)."""
    how = draw(st.sampled_from(SLOT_KINDS))
    if how == "random":
        return how, draw(st.binary(max_size=600))
    if how == "truncated":
        return how, draw(st.floats(0, 1))
    if how == "mutated":
        return how, (draw(st.integers(0, 60)), draw(st.sampled_from(ODD_VALUES)),
                     draw(st.booleans()))
    if how == "wrongkind":
        return how, draw(st.sampled_from(["cls.cfg", "cls.weights", "imgs/cat_0.png",
                                          "cls.data", "names.txt"]))
    if how == "huge":
        return how, draw(st.sampled_from([(100_000, 100_000), (1, 2**31 - 1), (30_000, 1)]))
    return how, None


def _materialise(valid: Path, work: Path, name: str, spoil) -> str:
    """A path for `name` (a file of the valid set) spoiled as drawn."""
    how, payload = spoil
    src = valid / name
    dst = work / ("x_" + name.replace("/", "_"))
    if how == "valid":
        return str(src)
    if how == "random":
        dst.write_bytes(payload)
    elif how == "truncated":
        data = src.read_bytes()
        dst.write_bytes(data[:int(len(data) * payload)])
    elif how == "mutated":
        if src.suffix in (".png", ".weights"):       # binary: flip bytes instead
            data = bytearray(src.read_bytes())
            pos, value, _ = payload
            for k, ch in enumerate(value.encode() or b"\xff"):
                data[(pos * 37 + k * 11) % len(data)] = ch
            dst.write_bytes(bytes(data))
        else:
            lines = src.read_text().splitlines()
            pos, value, add = payload
            i = pos % len(lines)
            key = lines[i].split("=")[0].strip() if "=" in lines[i] else "size"
            if key == "backup":     # the output folder stays the test's (see the docstring)
                key = "top"
            new = f"{key}={value}" if "=" in lines[i] or add else value
            if add:
                lines.insert(i, new)
            else:
                lines[i] = new
            dst.write_text("\n".join(lines) + "\n")
    elif how == "huge":
        dst.write_bytes(_huge(src, *payload))
    elif how == "empty":
        dst.write_bytes(b"")
    elif how == "dir":
        dst.mkdir()
    elif how == "missing":
        pass
    elif how == "devnull":
        return os.devnull
    elif how == "wrongkind":
        return str(valid / payload)
    return str(dst)


def _huge(src: Path, w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels (its IHDR rewritten, CRC fixed; the pixel data stays
    small); other files get a size line or header field that is absurdly large."""
    data = bytearray(src.read_bytes())
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        data[16:24] = struct.pack(">II", w, h)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        return bytes(data)
    if src.suffix == ".weights":                    # seen and revision
        data[8:12] = struct.pack("<i", h)
        data[12:20] = struct.pack("<Q", 2**63 + w)
        return bytes(data)
    return data.replace(b"width=", f"width={w}\nheight={h}\n#".encode(), 1)


@st.composite
def command_line(draw):
    cmd = draw(st.sampled_from(["summary", "run", "detect", "valid", "map", "train",
                                "calc_anchors", "partial", "embed", "compare",
                                "export"]))
    detector_only = ("detect", "map", "calc_anchors")
    kind = "det" if cmd in detector_only else draw(st.sampled_from(["cls", "det"]))
    names = [f"{kind}.cfg", f"{kind}.weights", f"{kind}.data", "imgs/cat_0.png",
             "imgs/dog_1.png", "names.txt", "det.names", "list.txt"]
    # one or two files spoiled, the rest valid, so that the run gets past the first check
    bad = draw(st.lists(st.sampled_from(names), min_size=0, max_size=2, unique=True))
    spoil = {name: draw(slot(name)) if name in bad else ("valid", None) for name in names}
    extra = draw(st.lists(st.sampled_from(
        ["--top", "--thresh", "--nms", "--width", "--height", "--json", "--lenient",
         "--format", "--clear", "--dialect"]), max_size=2, unique=True))
    values = {opt: draw(st.sampled_from(["-3", "0", "1", "0.5", "nan", "64", "json", "x",
                                         "alexeyab"])) for opt in extra}
    return cmd, kind, spoil, values


def _argv(cmd, kind, paths, values, out: Path) -> list[str]:
    cfg, weights, data = paths[f"{kind}.cfg"], paths[f"{kind}.weights"], paths[f"{kind}.data"]
    images = [paths["imgs/cat_0.png"], paths["imgs/dog_1.png"]]
    argv = {
        "summary": ["summary", cfg],
        "run": ["run", cfg, weights, *images, "--labels", paths["names.txt"],
                "--output", str(out / "o.npy")],
        "detect": ["detect", cfg, weights, *images, "--out-dir", str(out / "boxes"),
                   "--names", paths["det.names"]],
        "valid": ["valid", data, cfg, weights],
        "map": ["map", data, cfg, weights, "--quiet"],
        "train": ["train", data, cfg, weights, "--max-batches", "1", "--quiet"],
        "calc_anchors": ["calc_anchors", data, "--num", "2", "--width", "16", "--height",
                         "16"],
        "partial": ["partial", cfg, weights, str(out / "p.weights"), "2"],
        "embed": ["embed", cfg, weights, *images, "--output", str(out / "e.npy")],
        "compare": ["compare", cfg, weights, *images],
        "export": ["export", cfg, weights, str(out / "m.onnx"), "--decode"],
    }[cmd]
    for opt, value in values.items():
        argv += [opt] if opt in ("--json", "--lenient", "--clear") else [opt, value]
    return argv


TEMP_MARKS = (".darkcfg-", ".tmp-", ".chart-")


# Deterministic in the test suite; DARKCFG_FUZZ_RANDOM=1 DARKCFG_FUZZ_EXAMPLES=2000 hunts.
@settings(max_examples=int(os.environ.get("DARKCFG_FUZZ_EXAMPLES", 150)), deadline=None,
          derandomize=not os.environ.get("DARKCFG_FUZZ_RANDOM"),
          suppress_health_check=list(HealthCheck))
@given(case=command_line())
def test_cli_never_tracebacks_and_touches_only_its_outputs(sandbox, case):
    cmd, kind, spoil, values = case
    valid, work, out = sandbox / "valid", sandbox / "work", sandbox / "out"
    for folder in (work, out):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    paths = {name: _materialise(valid, work, name, s) for name, s in spoil.items()}
    data = f"{kind}.data"
    if spoil["list.txt"][0] != "valid" and spoil[data][0] == "valid":
        # the .data file names the spoiled image list
        text = (valid / data).read_text().replace(str(valid / "list.txt"), paths["list.txt"])
        paths[data] = str(work / "x_list.data")
        Path(paths[data]).write_text(text)
    argv = _argv(cmd, kind, paths, values, out)
    before = {"valid": _digest(valid), "work": _digest(work)}
    stderr, stdout = io.StringIO(), io.StringIO()
    shown = warnings.showwarning
    cwd = os.getcwd()
    os.chdir(out)                    # anything written "here" is an output too
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout), \
                warnings.catch_warnings():
            try:
                code = main(argv)
            except SystemExit as e:                 # argparse's usage errors
                code = e.code
    finally:
        os.chdir(cwd)
        warnings.showwarning = shown
    err = stderr.getvalue()
    assert "Traceback" not in err, (argv, err)
    if code:
        assert "darkcfg: error:" in err or "usage:" in err or "interrupted" in err, \
            (argv, code, err)
    assert {"valid": _digest(valid), "work": _digest(work)} == before, argv
    left = [str(p) for p in sandbox.rglob("*") if p.name.startswith(TEMP_MARKS)
            or p.name.endswith(".tmp")]
    assert not left, (argv, left)
