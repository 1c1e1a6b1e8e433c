"""Reliability of `darkcfg train`: starting from a prefix file or from finished weights,
bad counts, a bad backup folder, a full disk, a damaged .state, damaged data and labels,
unreadable images, SIGTERM and repeated Ctrl-C, the chart across a resume, file modes.

The tiny classifier runs of test_trainer.py (8x8 toy images, 16 images per iteration) and
the tiny YOLO of test_dettrain.py are reused; every run takes well under a second once
Numba has compiled.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from darkcfg.cli import main
from darkcfg.errors import DarkcfgError, DataError, OutputError
from darkcfg.graph import load_graph
from darkcfg.network import Network
from darkcfg.train import classifier as trainer
from darkcfg.train.classifier import train
from darkcfg.train.loop import TrainOptions

from . import toy_detector as det
from .toy_classifier import make_data, write_cfg


def quiet(**kw) -> TrainOptions:
    return TrainOptions(**{"quiet": True, "backup_every": 1000, "save_every": 1000,
                           "chart_every": 1000, **kw})


def params_of(cfg: Path, weights: Path) -> list[np.ndarray]:
    net = Network(load_graph(cfg))
    net.load_weights(weights)
    return [v.copy() for lay in net.layers for v in lay.params.values()]


def assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def set_seen(src: Path, dst: Path, seen: int) -> Path:
    """A copy of a 0.2 .weights file with another image count in its header (bytes 12-19,
    uint64 little-endian: weights-format.md)."""
    raw = bytearray(src.read_bytes())
    assert raw[:8] == np.array([0, 2], "<i4").tobytes()
    raw[12:20] = np.array([seen], "<u8").tobytes()
    dst.write_bytes(bytes(raw))
    return dst


# --- 1. a prefix file -----------------------------------------------------------------

def write_prefix(path: Path, seen: int) -> tuple[Path, dict[str, np.ndarray]]:
    """A 0.2.0 file holding toy.cfg's layer 0 only (conv + BN, 4 filters 3x3 over one
    channel), in Darknet's order: biases, scales, rolling mean, rolling variance, weights."""
    rng = np.random.default_rng(5)
    conv = {"biases": rng.normal(size=4), "scales": rng.uniform(0.5, 1.5, 4),
            "rolling_mean": rng.normal(size=4), "rolling_variance": rng.uniform(0.5, 2, 4),
            "weights": rng.normal(size=(4, 1, 3, 3))}
    with open(path, "wb") as f:
        f.write(np.array([0, 2, 0], "<i4").tobytes() + np.array([seen], "<u8").tobytes())
        for k in ("biases", "scales", "rolling_mean", "rolling_variance", "weights"):
            f.write(conv[k].astype("<f4").tobytes())
    return path, conv


def test_prefix_file_the_other_layers_get_the_random_initialisation(tmp_path, monkeypatch):
    """toy.cfg: layer 0 conv (BN, 4 filters 3x3 over 1 channel), 3 connected (64 -> 3).
    A prefix file holding layer 0 only, written here in Darknet's order (biases, scales,
    rolling mean, rolling variance, weights) leaves layer 3 as Network.init_weights(seed)
    draws it; today it stayed 0."""
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    prefix, conv = write_prefix(tmp_path / "toy.conv.1", seen=0)
    start = {}

    def capture(net, task, opts, **kw):        # the network as training would start
        start.update({(lay.index, k): v.copy() for lay in net.layers
                      for k, v in lay.params.items()})
        start["seen"] = net.seen
        return Path("unused")

    monkeypatch.setattr(trainer, "run_training", capture)
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(str(data), str(cfg), str(prefix), quiet(seed=7), log=lines.append)
    for k, v in conv.items():
        np.testing.assert_array_equal(start[(0, k)], v.astype(np.float32))
    fresh = Network(load_graph(cfg))
    fresh.init_weights(7)
    np.testing.assert_array_equal(start[(3, "weights")], fresh.layers[3].params["weights"])
    assert np.abs(start[(3, "weights")]).max() > 0
    np.testing.assert_array_equal(start[(3, "biases")], np.zeros(3, np.float32))
    assert start["seen"] == 0
    text = "\n".join(lines)
    assert f"layer 0 from {prefix} (a prefix file: 1 of 2 layers with parameters); layer " \
        "3 initialised randomly (seed 7)" in text
    assert "resuming" not in text          # a prefix file is a start, not a resume
    # said once: the log line replaces the loader's WeightsWarning about the same thing
    assert not [w for w in caught if "prefix" in str(w.message)]


def test_prefix_file_keeps_its_count_and_is_refused_when_it_reached_max_batches(tmp_path):
    """toy.cfg trains 8 images per iteration: seen=32 is iteration 4."""
    data = make_data(tmp_path)
    prefix, _ = write_prefix(tmp_path / "toy.conv.1", seen=32)
    with pytest.raises(DarkcfgError, match="already trained 4 iterations.*--clear"):
        train(str(data), str(write_cfg(tmp_path, 4)), str(prefix), quiet(),
              log=lambda *a: None)
    lines: list[str] = []
    train(str(data), str(write_cfg(tmp_path, 6)), str(prefix), quiet(), log=lines.append)
    assert any("training starts at iteration 4 (pass --clear to start from 0)" in line
               for line in lines)
    assert any(line.startswith("done: 6 iterations, 16 images") for line in lines)
    lines.clear()
    train(str(data), str(write_cfg(tmp_path, 4)), str(prefix), quiet(clear=True),
          log=lines.append)
    assert any(line.startswith("done: 4 iterations, 32 images") for line in lines)


# --- 2. weights that have already reached max_batches; --clear ------------------------

def test_finished_weights_are_refused_and_the_old_final_weights_kept(tmp_path):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    final = train(str(data), str(cfg), None, quiet(), log=lambda *a: None)
    start = tmp_path / "start.weights"
    shutil.copy(final, start)
    final.write_bytes(b"the final weights of an earlier run")    # must survive
    lines: list[str] = []
    with pytest.raises(DarkcfgError, match=r"already trained 4 iterations .* max_batches is "
                       r"4: there is nothing left to train.*--max-batches.*--clear"):
        train(str(data), str(cfg), str(start), quiet(), log=lines.append)
    assert final.read_bytes() == b"the final weights of an earlier run"
    assert not any(line.startswith("done") for line in lines)


def test_clear_counts_from_zero_without_momentum(tmp_path):
    """--clear equals starting from the same weights with seen=0 in the header and no
    .state file beside them (Darknet's -clear)."""
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    first = train(str(data), str(cfg), None, quiet(), log=lambda *a: None)
    start = tmp_path / "start.weights"
    shutil.copy(first, start)
    shutil.copy(f"{first}.state", f"{start}.state")    # a matching .state, not to be used
    assert main(["train", str(data), str(cfg), str(start), "--clear", "--quiet"]) == 0
    cleared = params_of(cfg, tmp_path / "backup" / "toy_final.weights")
    (tmp_path / "zero").mkdir()
    zero = set_seen(start, tmp_path / "zero" / "start.weights", 0)
    ref = train(str(data), str(write_cfg(tmp_path, 4, name="ref.cfg")), str(zero), quiet(),
                log=lambda *a: None)
    assert_same(cleared, params_of(cfg, ref))
    assert not np.array_equal(cleared[0], params_of(cfg, start)[0])     # it did train


def test_max_batches_below_one_is_refused(tmp_path, capsys):
    with pytest.raises(DarkcfgError, match=r"--max-batches \(TrainOptions.max_batches\) "
                       r"must be a whole number >= 1; got 0"):
        TrainOptions(max_batches=0)
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    with pytest.raises(SystemExit) as e:
        main(["train", str(data), str(cfg), "--max-batches", "0"])
    assert e.value.code == 2
    assert "--max-batches: must be a whole number >= 1, got '0'" in capsys.readouterr().err


# --- 3. zero or negative intervals ------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--backup-every", "0"), ("--save-every", "0"),
                                         ("--valid-every", "-1"), ("--backup-every", "-3")])
def test_bad_intervals_are_clear_errors(tmp_path, capsys, flag, value):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    with pytest.raises(SystemExit) as e:
        main(["train", str(data), str(cfg), flag, value, "--quiet"])
    assert e.value.code == 2
    assert f"argument {flag}: must be a whole number >=" in capsys.readouterr().err
    name = flag[2:].replace("-", "_")
    with pytest.raises(DarkcfgError, match=f"{flag} \\(TrainOptions.{name}\\) must be"):
        train(str(data), str(cfg), None, quiet(**{name: int(value)}), log=lambda *a: None)
    opts = quiet()
    setattr(opts, name, int(value))            # edited after construction: checked again
    with pytest.raises(DarkcfgError, match=f"TrainOptions.{name}"):
        train(str(data), str(cfg), None, opts, log=lambda *a: None)
    assert not (tmp_path / "backup").exists() or not list((tmp_path / "backup").iterdir())


# --- 4. the backup folder -----------------------------------------------------------------

def test_backup_that_is_a_file_is_refused_before_training(tmp_path):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    data.write_text("classes=3\ntrain=toy.npz\nbackup=blocker\n")
    (tmp_path / "blocker").write_text("not a folder")
    lines: list[str] = []
    with pytest.raises(OutputError, match=r"blocker: is a file, not a folder.*backup= of "
                       r".*toy.data:3"):
        train(str(data), str(cfg), None, quiet(), log=lines.append)
    assert not any(line.startswith("training") for line in lines)
    assert (tmp_path / "blocker").read_text() == "not a folder"


def test_backup_folder_not_writable_is_refused_before_training(tmp_path, monkeypatch):
    """We run as root here, where chmod 0o555 stops nothing and os.access says yes; so the
    folder's answer from os.access is faked ("not writable") - what a normal user with a
    read-only folder gets. The real chmod case runs in the test below when not root."""
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    folder = tmp_path / "backup"
    folder.mkdir()
    real_access = os.access

    def access(path, mode, *a, **kw):
        if os.path.realpath(path) == str(folder.resolve()) and mode & os.W_OK:
            return False
        return real_access(path, mode, *a, **kw)

    monkeypatch.setattr(os, "access", access)
    lines: list[str] = []
    with pytest.raises(OutputError, match=r"backup: the folder is not writable"):
        train(str(data), str(cfg), None, quiet(), log=lines.append)
    assert not any(line.startswith("training") for line in lines)
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 0o555 folder; "
                    "the faked os.access test above covers this case")
def test_backup_folder_read_only_for_real(tmp_path):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    folder = tmp_path / "backup"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            train(str(data), str(cfg), None, quiet(), log=lambda *a: None)
    finally:
        folder.chmod(0o755)


# --- 5. a full disk while saving ---------------------------------------------------------

def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or "tmp" in p.name]


def test_disk_full_while_saving_the_weights(tmp_path, monkeypatch):
    """ENOSPC when the checkpoint is put in place: a darkcfg error naming it, the
    previous checkpoint intact, no temporary file left."""
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 3)
    backup = tmp_path / "backup"
    train(str(data), str(cfg), None, quiet(backup_every=1), log=lambda *a: None)
    before = (backup / "toy.backup").read_bytes()
    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        if str(backup.resolve()) in os.path.realpath(dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match=r"toy.backup.*(disk is full|No space left).*"
                       r"training stopped at iteration 1"):
        train(str(data), str(cfg), None, quiet(seed=1, backup_every=1), log=lambda *a: None)
    assert (backup / "toy.backup").read_bytes() == before
    assert leftovers(backup) == []


def test_disk_full_while_writing_the_state_file(tmp_path, monkeypatch):
    """ENOSPC in the middle of writing `.state`: its previous version stays, no temp."""
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 3)
    backup = tmp_path / "backup"
    train(str(data), str(cfg), None, quiet(backup_every=1), log=lambda *a: None)
    before = (backup / "toy.backup.state").read_bytes()

    def savez(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(OutputError, match=r"toy.backup.state: cannot write the momentum file:"
                       r" the disk is full; training stopped at iteration 1"):
        train(str(data), str(cfg), None, quiet(seed=1, backup_every=1), log=lambda *a: None)
    assert (backup / "toy.backup.state").read_bytes() == before
    assert leftovers(backup) == []


# --- 6. a damaged .state file ------------------------------------------------------------

def damage(state: Path, kind: str) -> None:
    if kind == "truncated":
        state.write_bytes(state.read_bytes()[:len(state.read_bytes()) // 2])
    elif kind == "garbage":
        state.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "empty":
        state.write_bytes(b"")
    else:                      # the right image count, a momentum array of the wrong shape
        with np.load(state) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["3.weights"] = arrays["3.weights"][:2]
        with open(state, "wb") as f:          # a file name would get '.npz' appended
            np.savez(f, **arrays)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "wrong-shape"])
def test_damaged_state_file_warns_and_momentum_restarts(tmp_path, kind):
    """Resuming beside a damaged .state equals resuming with none (momentum from zero, as
    Darknet resumes), and the log says so."""
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    train(str(data), str(cfg), None, quiet(save_every=2), log=lambda *a: None)
    ckpt = tmp_path / "backup" / "toy_2.weights"
    plain = tmp_path / "plain" / "toy_2.weights"
    plain.parent.mkdir()
    shutil.copy(ckpt, plain)                                      # no .state beside it
    ref = params_of(cfg, train(str(data), str(cfg), str(plain), quiet(), log=lambda *a: None))
    damage(Path(f"{ckpt}.state"), kind)
    lines: list[str] = []
    final = train(str(data), str(cfg), str(ckpt), quiet(), log=lines.append)
    assert_same(params_of(cfg, final), ref)
    warned = [line for line in lines if line.startswith("warning:")]
    assert len(warned) == 1 and "toy_2.weights.state" in warned[0] \
        and "momentum restarts from zero" in warned[0]


# --- 7. damaged or empty array data ------------------------------------------------------

def npz_bytes(tmp_path, n: int) -> bytes:
    np.savez(tmp_path / "tmp.npz", x=np.zeros((n, 8, 8), np.uint8), y=np.zeros(n, np.int64))
    return (tmp_path / "tmp.npz").read_bytes()


@pytest.mark.parametrize("kind, message", [
    ("empty", r"bad.npz: not a readable .npz archive \(the file is empty\)"),
    ("truncated", r"bad.npz: not a readable .npz archive \(damaged or cut short"),
    ("garbage", r"bad.npz: not a readable .npz archive \(not a zip of .npy arrays\)"),
    ("no images", r"bad.npz: holds no images"),
])
def test_damaged_or_empty_npz_is_a_data_error(tmp_path, kind, message):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    good = npz_bytes(tmp_path, 10)
    raw = {"empty": b"", "truncated": good[:len(good) // 2],
           "garbage": b"PK" + np.random.default_rng(1).bytes(500),
           "no images": npz_bytes(tmp_path, 0)}[kind]
    (tmp_path / "bad.npz").write_bytes(raw)
    data.write_text("classes=3\ntrain=bad.npz\nbackup=backup/\n")
    with pytest.raises(DataError, match=message):
        train(str(data), str(cfg), None, quiet(), log=lambda *a: None)


@pytest.mark.parametrize("kind", ["cut", "gzip cut", "bad deflate"])
def test_damaged_idx_files_are_data_errors(tmp_path, kind):
    """A truncated IDX file (raw or gzip) and a gzip whose deflate data is invalid (zlib's
    own error, which escaped before) are DataErrors naming the file."""
    import gzip
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    head = bytes([0, 0, 8, 3]) + np.array([10, 8, 8], ">u4").tobytes()
    whole = head + bytes(640)
    raw = {"cut": whole[:-100], "gzip cut": gzip.compress(whole)[:-20],
           "bad deflate": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x07" + bytes(40)}[kind]
    (tmp_path / "x-images-idx3-ubyte").write_bytes(raw)
    (tmp_path / "x-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) +
                                                   np.array([10], ">u4").tobytes() + bytes(10))
    data.write_text("classes=3\ntrain=x-images-idx3-ubyte\nbackup=backup/\n")
    with pytest.raises(DataError, match="x-images-idx3-ubyte: "):
        train(str(data), str(cfg), None, quiet(), log=lambda *a: None)


# --- 8. nan and inf in YOLO labels ---------------------------------------------------------

@pytest.mark.parametrize("line, field", [("nan 0.5 0.5 0.1 0.1", "class"),
                                         ("inf 0.5 0.5 0.1 0.1", "class"),
                                         ("-inf 0.5 0.5 0.1 0.1", "class"),
                                         ("0 0.5 0.5 inf 0.1", "w"),
                                         ("1 nan 0.5 0.1 0.1", "x"),
                                         ("0 0.5 0.5 0.1 NaN", "h")])
def test_nan_or_inf_in_a_label_file_names_file_and_line(tmp_path, line, field):
    data = det.make_data(tmp_path, n=4)
    (tmp_path / "labels" / "2.txt").write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    from darkcfg.train.detector import train_detector
    with pytest.raises(DataError, match=f"labels/2.txt:2: {field} is not a finite number"):
        train_detector(str(data), str(det.write_cfg(tmp_path)), None, quiet(),
                       log=lambda *a: None)


# --- 9. unreadable images while training ---------------------------------------------------

LABELS = ("row", "col", "diag")


def image_list(tmp_path, n=12) -> tuple[Path, list[str]]:
    """8x8 grey PNGs named <k>_<label>.png, a list file and a .data file."""
    rng = np.random.default_rng(2)
    (tmp_path / "img").mkdir()
    names = []
    for k in range(n):
        c = k % 3
        pix = rng.uniform(0, 60, (8, 8))
        if c == 0:
            pix[rng.integers(0, 8)] = 240
        elif c == 1:
            pix[:, rng.integers(0, 8)] = 240
        else:
            pix[np.eye(8, dtype=bool)] = 240
        names.append(f"img/{k}_{LABELS[c]}.png")
        Image.fromarray(pix.astype(np.uint8)).save(tmp_path / names[-1])
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return tmp_path / "labels.txt", names


def list_data(tmp_path, names: list[str], tag: str) -> Path:
    (tmp_path / f"{tag}.list").write_text("\n".join(names) + "\n")
    data = tmp_path / f"{tag}.data"
    data.write_text(f"classes=3\ntrain={tag}.list\nlabels=labels.txt\nbackup=backup_{tag}/\n")
    return data


def test_unreadable_training_images_are_skipped_reproducibly(tmp_path):
    """Image 3 is damaged: it is warned about (once, by name) and the next readable image
    of the list, 4, trains in its place - the same run as a list naming image 4 twice."""
    _, names = image_list(tmp_path)
    cfg = write_cfg(tmp_path, 6)
    (tmp_path / names[3]).write_bytes(b"\x89PNG\r\n\x1a\n but damaged")
    broken = list_data(tmp_path, names, "broken")
    twice = list_data(tmp_path, [*names[:3], names[4], *names[4:]], "twice")
    with pytest.warns(UserWarning, match=f"broken.list:4: .*{names[3]}.*skipped") as rec:
        a = train(str(broken), str(cfg), None, quiet(), log=lambda *a: None)
    assert len([w for w in rec if names[3] in str(w.message)]) == 1
    b = train(str(twice), str(cfg), None, quiet(), log=lambda *a: None)
    assert_same(params_of(cfg, a), params_of(cfg, b))
    with pytest.warns(UserWarning):
        again = train(str(broken), str(cfg), None, quiet(), log=lambda *a: None)
    assert_same(params_of(cfg, again), params_of(cfg, a))


def test_an_image_over_the_pixel_limit_is_skipped(tmp_path, monkeypatch):
    """Over Pillow's limit (lowered here to 20,000 pixels, refused above twice that; image
    5 is 250x250, the others 8x8; the chart's text stays below it): skipped like an
    unreadable image."""
    import PIL.Image

    _, names = image_list(tmp_path)
    Image.fromarray(np.full((250, 250), 128, np.uint8)).save(tmp_path / names[5])
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 20000)
    cfg = write_cfg(tmp_path, 4)
    with pytest.warns(UserWarning, match=f"{names[5]}.*skipped"):
        a = train(str(list_data(tmp_path, names, "big")), str(cfg), None, quiet(),
                  log=lambda *a: None)
    b = train(str(list_data(tmp_path, [*names[:5], names[6], *names[6:]], "ref")), str(cfg),
              None, quiet(), log=lambda *a: None)
    assert_same(params_of(cfg, a), params_of(cfg, b))


def test_every_image_unreadable_is_a_data_error(tmp_path):
    _, names = image_list(tmp_path, n=3)
    for name in names:
        (tmp_path / name).write_bytes(b"not an image")
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"all.list: none of its "
                                                  r"3 images can be read"):
        train(str(list_data(tmp_path, names, "all")), str(write_cfg(tmp_path, 2)), None,
              quiet(), log=lambda *a: None)


def test_detector_skips_an_unreadable_image_reproducibly(tmp_path):
    data = det.make_data(tmp_path, n=8)
    (tmp_path / "images" / "2.png").write_bytes(b"damaged")
    lines = (tmp_path / "train.txt").read_text().split()
    (tmp_path / "twice.txt").write_text("\n".join([*lines[:2], lines[3], *lines[3:]]) + "\n")
    (tmp_path / "twice.data").write_text("classes=2\ntrain=twice.txt\nbackup=backup2/\n")
    from darkcfg.train.detector import train_detector
    cfg = det.write_cfg(tmp_path, max_batches=3)
    with pytest.warns(UserWarning, match=r"train.txt:3: .*2.png.*skipped"):
        a = train_detector(str(data), str(cfg), None, quiet(), log=lambda *a: None)
    b = train_detector(str(tmp_path / "twice.data"), str(cfg), None, quiet(),
                       log=lambda *a: None)
    assert_same(params_of(cfg, a), params_of(cfg, b))


# --- 10. SIGTERM and repeated Ctrl-C -------------------------------------------------------

def signal_during(monkeypatch, iteration: int, signum: int, times: int = 1) -> None:
    """Send `signum` to this process `times` times while iteration `iteration` (0-based)
    draws its images: deterministic, no timing."""
    real = trainer.batch_indices

    def hooked(n, i, batch, seed):
        if i == iteration:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return real(n, i, batch, seed)

    monkeypatch.setattr(trainer, "batch_indices", hooked)


@pytest.fixture
def sigterm_recorded():
    """Without darkcfg's handler a SIGTERM would end pytest itself: record it instead."""
    got: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda *a: got.append(1))
    yield got
    signal.signal(signal.SIGTERM, old)


def test_sigterm_saves_the_backup_like_ctrl_c(tmp_path, monkeypatch, capsys, sigterm_recorded):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 10)
    signal_during(monkeypatch, 2, signal.SIGTERM)
    assert main(["train", str(data), str(cfg), "--quiet"]) == 130
    out = capsys.readouterr().out
    backup = tmp_path / "backup" / "toy.backup"
    assert f"interrupted at iteration 3: saved {backup}; resume with darkcfg train" in out
    assert sigterm_recorded == []            # darkcfg's handler had it, then gave it back
    monkeypatch.undo()
    ref = train(str(data), str(write_cfg(tmp_path, 3, name="ref.cfg")), None, quiet(),
                log=lambda *a: None)
    assert_same(params_of(cfg, backup), params_of(cfg, ref))


def test_second_ctrl_c_says_the_iteration_is_finishing(tmp_path, monkeypatch):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 10)
    signal_during(monkeypatch, 2, signal.SIGINT, times=2)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        train(str(data), str(cfg), None, quiet(), log=lines.append)
    backup = tmp_path / "backup" / "toy.backup"
    assert any(f"finishing iteration 3 (it can take a while), then saving {backup}" in line
               and "once more to stop at once without saving" in line for line in lines)
    assert any(line.startswith("interrupted at iteration 3: saved") for line in lines)
    assert backup.exists()


def test_third_ctrl_c_stops_at_once_without_saving(tmp_path, monkeypatch):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 10)
    signal_during(monkeypatch, 2, signal.SIGINT, times=3)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        train(str(data), str(cfg), None, quiet(), log=lines.append)
    assert any("stopped at once during iteration 3, without saving" in line for line in lines)
    assert not (tmp_path / "backup" / "toy.backup").exists()
    assert leftovers(tmp_path / "backup") == []


# --- 11. the chart's history across a resume ---------------------------------------------

def test_chart_history_survives_a_resume(tmp_path, monkeypatch):
    import darkcfg.train.chart
    drawn: dict[str, tuple] = {}
    real = darkcfg.train.chart.draw_chart

    def draw(path, iterations, losses, avg, *, accuracy, **kw):
        drawn[Path(path).name] = (list(iterations), list(losses), list(avg), list(accuracy))
        real(path, iterations, losses, avg, accuracy=accuracy, **kw)

    monkeypatch.setattr(darkcfg.train.chart, "draw_chart", draw)
    data = make_data(tmp_path)
    opts = dict(valid_every=2, save_every=4)
    train(str(data), str(write_cfg(tmp_path, 8, name="whole.cfg")), None, quiet(**opts),
          log=lambda *a: None)
    cfg = write_cfg(tmp_path, 8, name="part.cfg")
    train(str(data), str(cfg), None, quiet(max_batches=4, **opts), log=lambda *a: None)
    assert drawn["part_chart.png"][0] == [1, 2, 3, 4]
    train(str(data), str(cfg), str(tmp_path / "backup" / "part_4.weights"), quiet(**opts),
          log=lambda *a: None)
    whole, resumed = drawn["whole_chart.png"], drawn["part_chart.png"]
    assert whole[0] == list(range(1, 9)) and len(whole[3]) == 4
    assert resumed == whole


# --- 12. file modes -----------------------------------------------------------------------

def test_every_file_training_writes_gets_the_umask_mode(tmp_path):
    data, cfg = make_data(tmp_path), write_cfg(tmp_path, 4)
    old = os.umask(0o027)
    try:
        train(str(data), str(cfg), None, quiet(backup_every=2, save_every=3, chart_every=1),
              log=lambda *a: None)
    finally:
        os.umask(old)
    files = sorted((tmp_path / "backup").iterdir())
    assert [p.name for p in files] == ["toy.backup", "toy.backup.state", "toy_3.weights",
                                       "toy_3.weights.state", "toy_chart.png",
                                       "toy_final.weights", "toy_final.weights.state"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == \
        {p.name: oct(0o640) for p in files}


# --- AlexeyAB [net] techniques darkcfg does not compute --------------------------------------

def test_training_says_which_ab_techniques_it_leaves_out(tmp_path):
    from darkcfg.train.detector import train_detector
    data = det.make_data(tmp_path, n=4)
    cfg = tmp_path / "ab.cfg"
    cfg.write_text(det.write_cfg(tmp_path, max_batches=1).read_text().replace(
        "flip=1", "flip=1\nmixup=1\ngaussian_noise=0\nema_alpha=0.9998"))
    lines: list[str] = []
    train_detector(str(data), str(cfg), None, TrainOptions(quiet=True), log=lines.append)
    warned = [line for line in lines if "not computed by darkcfg" in line]
    text = cfg.read_text().splitlines()
    expect = [f"warning: {cfg.name}:{text.index(k) + 1}: {k} is not computed by darkcfg; "
              "training goes on without it" for k in ("mixup=1", "ema_alpha=0.9998")]
    assert warned == expect                  # gaussian_noise=0 is off: nothing to say


def test_a_head_before_an_unrunnable_last_layer_is_refused_by_that_layers_name(tmp_path):
    """yolov4-tiny_contrastive ends in [contrastive] after its [yolo] heads: it is a
    detector, refused for the section darkcfg cannot run (not sent to the classifier)."""
    from darkcfg.train.detector import is_detector, train_detector
    data = det.make_data(tmp_path, n=4)
    cfg = det.write_cfg(tmp_path, max_batches=1, extra="[contrastive]\nclasses=2\n")
    assert is_detector(str(cfg))
    with pytest.raises(DarkcfgError, match=r"\[contrastive\] layers cannot run"):
        train_detector(str(data), str(cfg), None, TrainOptions(quiet=True))
    plain = write_cfg(tmp_path, 1)
    assert not is_detector(str(plain))
    with pytest.raises(DarkcfgError, match=r"no \[yolo\], \[region\] or \[detection\] layer"):
        train_detector(str(data), str(plain), None, TrainOptions(quiet=True))
