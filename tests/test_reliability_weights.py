"""Reliability of .weights reading and writing: the user's files are never lost or replaced
by something else, and damaged or unusual files say so instead of loading silently.

Expected bytes are built by hand here (struct / numpy), never taken from darkcfg's output.
"""
from __future__ import annotations

import errno
import os
import stat
import struct
import warnings

import numpy as np
import pytest

from darkcfg import WeightsError
from darkcfg.errors import OutputError
from darkcfg.weights import WeightsWarning, read_header

from .test_weights import SMALL, small_net

N_SMALL = 188          # floats in SMALL (see test_weights.py)


def weights_bytes(header: tuple[int, int, int], seen: int, seen_bytes: int,
                  values) -> bytes:
    """A .weights file as Darknet lays it out: 3 int32, `seen`, float32 values (LE)."""
    head = struct.pack("<3i", *header) + struct.pack("<Q" if seen_bytes == 8 else "<I", seen)
    return head + np.asarray(values, "<f4").tobytes()


def loaded_net(tmp_path, values=None):
    """SMALL with the values 0..187 loaded from a hand-made 0.2.0 file (its bytes too)."""
    data = weights_bytes((0, 2, 0), 0, 8, np.arange(N_SMALL) if values is None else values)
    src = tmp_path / "src" / "hand.weights"
    src.parent.mkdir()
    src.write_bytes(data)
    net = small_net()
    net.load_weights(src)
    return net, data


def folder_names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- 1. save_weights writes only what the user meant -------------------------------------

def _never_replace(path: str):
    """os.replace / os.rename that fail the test instead of replacing `path`."""
    real_replace, real_rename = os.replace, os.rename

    def guard(real):
        def call(src, dst, *a, **kw):
            if os.path.realpath(dst) == path:
                raise AssertionError(f"darkcfg tried to replace {path}")
            return real(src, dst, *a, **kw)
        return call
    return guard(real_replace), guard(real_rename)


@pytest.mark.skipif(not os.path.exists("/dev/null")
                    or not stat.S_ISCHR(os.stat("/dev/null").st_mode),
                    reason="needs /dev/null as a character device")
def test_dev_null_is_not_replaced(tmp_path, monkeypatch):
    net, _ = loaded_net(tmp_path)
    # a safety net: if this ever regresses, fail here rather than break /dev/null
    replace, rename = _never_replace("/dev/null")
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OutputError, match=r"/dev/null: is not a regular file"):
        net.save_weights("/dev/null")
    monkeypatch.undo()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not [n for n in os.listdir("/dev") if n.startswith((".darkcfg-", ".tmp-"))]


def test_device_node_is_not_replaced(tmp_path):
    net, _ = loaded_net(tmp_path)
    dev = tmp_path / "null"
    try:        # the same device as /dev/null, made where a mistake does no harm
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, AttributeError):
        pytest.skip("cannot make a device node here (needs root)")
    with pytest.raises(OutputError, match="is not a regular file"):
        net.save_weights(dev)
    assert stat.S_ISCHR(os.stat(dev).st_mode)
    assert folder_names(tmp_path) == ["null", "src"]


def test_fifo_is_not_replaced(tmp_path):
    net, _ = loaded_net(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match=r"pipe: is not a regular file .*FIFO"):
        net.save_weights(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert folder_names(tmp_path) == ["pipe", "src"]


def test_symlink_is_written_through(tmp_path):
    net, data = loaded_net(tmp_path)
    target = tmp_path / "real.weights"
    target.write_bytes(b"old")
    link = tmp_path / "link.weights"
    link.symlink_to("real.weights")
    net.save_weights(link)
    assert link.is_symlink() and os.readlink(link) == "real.weights"
    assert target.read_bytes() == data
    assert folder_names(tmp_path) == ["link.weights", "real.weights", "src"]


def test_hard_link_is_refused(tmp_path):
    net, _ = loaded_net(tmp_path)
    a, b = tmp_path / "a.weights", tmp_path / "b.weights"
    a.write_bytes(b"shared")
    os.link(a, b)
    with pytest.raises(OutputError, match=r"a\.weights: has 2 hard links"):
        net.save_weights(a)
    assert a.read_bytes() == b.read_bytes() == b"shared"
    assert os.stat(a).st_ino == os.stat(b).st_ino
    assert folder_names(tmp_path) == ["a.weights", "b.weights", "src"]


def test_read_only_file_is_refused(tmp_path):
    net, _ = loaded_net(tmp_path)
    path = tmp_path / "keep.weights"
    path.write_bytes(b"precious")
    path.chmod(0o444)
    with pytest.raises(OutputError, match=r"keep\.weights: is read-only"):
        net.save_weights(path)
    assert path.read_bytes() == b"precious"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert folder_names(tmp_path) == ["keep.weights", "src"]


def test_existing_file_keeps_its_mode(tmp_path):
    net, data = loaded_net(tmp_path)
    path = tmp_path / "private.weights"
    path.write_bytes(b"old")
    path.chmod(0o600)
    net.save_weights(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes() == data


def test_new_file_gets_the_umask(tmp_path):
    net, data = loaded_net(tmp_path)
    old = os.umask(0o027)
    try:
        net.save_weights(tmp_path / "new.weights")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.weights").st_mode) == 0o640
    assert (tmp_path / "new.weights").read_bytes() == data


def test_missing_folder_and_folder_path(tmp_path):
    net, _ = loaded_net(tmp_path)
    with pytest.raises(OutputError, match=r"nowhere: no such folder for the weights"):
        net.save_weights(tmp_path / "nowhere" / "x.weights")
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "dir.weights").mkdir()
    with pytest.raises(OutputError, match=r"dir\.weights: is a folder"):
        net.save_weights(tmp_path / "dir.weights")
    assert folder_names(tmp_path / "dir.weights") == []
    assert folder_names(tmp_path) == ["dir.weights", "src"]


class _Failing:
    """A binary file whose writes fail after `room` bytes, the way write(2) does: the
    bytes that fit are written, then `exc` (a full disk, or Ctrl-C mid-write)."""

    def __init__(self, f, room: int, exc: BaseException):
        self.f, self.room, self.exc = f, room, exc

    def write(self, b) -> int:
        b = bytes(b)
        if len(b) > self.room:
            self.f.write(b[:self.room])
            self.room = 0
            raise self.exc
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def _fail_writes(monkeypatch, room: int, exc: BaseException) -> None:
    real = os.fdopen

    def fdopen(fd, mode="r", *a, **kw):
        f = real(fd, mode, *a, **kw)
        return _Failing(f, room, exc) if "w" in mode else f
    monkeypatch.setattr(os, "fdopen", fdopen)


def test_disk_full_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    net, _ = loaded_net(tmp_path)
    path = tmp_path / "model.weights"
    path.write_bytes(b"the previous checkpoint")
    _fail_writes(monkeypatch, 100, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(OutputError) as info:
        net.save_weights(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "the disk is full" in msg
    assert ".darkcfg-" not in msg and ".tmp" not in msg      # the user's path, not ours
    monkeypatch.undo()
    assert path.read_bytes() == b"the previous checkpoint"
    assert folder_names(tmp_path) == ["model.weights", "src"]


def test_interrupt_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    net, _ = loaded_net(tmp_path)
    path = tmp_path / "model.weights"
    path.write_bytes(b"the previous checkpoint")
    _fail_writes(monkeypatch, 300, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        net.save_weights(path)
    monkeypatch.undo()
    assert path.read_bytes() == b"the previous checkpoint"
    assert folder_names(tmp_path) == ["model.weights", "src"]


# --- 2. `seen` that does not fit a 16-byte header -----------------------------------------

def test_seen_too_big_for_a_16_byte_header(tmp_path):
    text = "[net]\ninputs=3\n[connected]\noutput=2\nactivation=linear\n"
    src = tmp_path / "old.weights"
    values = np.arange(8)
    src.write_bytes(weights_bytes((0, 1, 0), 7, 4, values))
    net = small_net(text)
    net.load_weights(src)
    assert net.seen == 7
    out = tmp_path / "out.weights"
    net.seen = 2**32 - 1                # the largest that fits: written as ff ff ff ff
    net.save_weights(out)
    assert out.read_bytes() == weights_bytes((0, 1, 0), 2**32 - 1, 4, values)
    net.seen = 2**32
    with pytest.raises(WeightsError) as info:
        net.save_weights(out)
    msg = str(info.value)
    assert str(out) in msg and "4294967296" in msg
    assert "16-byte header" in msg and "4 bytes" in msg and "major*10+minor < 2" in msg
    assert "net.header = None" in msg                          # what to do
    assert out.read_bytes() == weights_bytes((0, 1, 0), 2**32 - 1, 4, values)
    assert folder_names(tmp_path) == ["old.weights", "out.weights"]


def test_negative_seen_is_refused(tmp_path):
    net, _ = loaded_net(tmp_path)
    out = tmp_path / "out.weights"
    out.write_bytes(b"old")
    net.seen = -1
    with pytest.raises(WeightsError, match=r"out\.weights: cannot save seen = -1 .* negative"):
        net.save_weights(out)
    assert out.read_bytes() == b"old"


# --- 3. header sanity -----------------------------------------------------------------------

def _load_warnings(net, path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.load_weights(path)
    return [str(w.message) for w in caught if issubclass(w.category, WeightsWarning)]


@pytest.mark.parametrize("header,field,value", [
    ((1001, 0, 0), "major", 1001),
    ((0, 5000, 0), "minor", 5000),
])
def test_huge_major_or_minor_warns_and_still_transposes(tmp_path, header, field, value):
    text = "[net]\ninputs=3\n[connected]\noutput=2\nactivation=linear\n"
    path = tmp_path / "t.weights"
    w_file = [[1, 2], [3, 4], [5, 6]]                          # [input][output]
    path.write_bytes(weights_bytes(header, 0, 8, np.r_[7, 8, np.ravel(w_file)]))
    net = small_net(text)
    msgs = _load_warnings(net, path)
    assert len(msgs) == 1
    assert f"{field} = {value}" in msgs[0] and "> 1000" in msgs[0]
    assert "transposed" in msgs[0] and "damaged header" in msgs[0]
    # Darknet's behaviour is kept: [connected] weights read as [input][output]
    assert net.layers[0].params["weights"].tolist() == [[1, 3, 5], [2, 4, 6]]


@pytest.mark.parametrize("header,field", [
    ((-1, 2, 0), "major"), ((0, -2, 0), "minor"), ((0, 2, -7), "revision"),
])
def test_negative_version_fields_warn(tmp_path, header, field):
    net = small_net()
    path = tmp_path / "neg.weights"
    # major*10+minor < 2 for the first two: Darknet reads a 4-byte `seen`
    seen_bytes = 8 if header[0] * 10 + header[1] >= 2 else 4
    path.write_bytes(weights_bytes(header, 0, seen_bytes, np.zeros(N_SMALL)))
    assert read_header(path).size == 12 + seen_bytes
    msgs = _load_warnings(net, path)
    value = header[("major", "minor", "revision").index(field)]
    assert len(msgs) == 1 and f"{field} = {value}" in msgs[0] and "negative" in msgs[0]


def test_ordinary_headers_do_not_warn(tmp_path):
    for header, seen_bytes in (((0, 2, 0), 8), ((0, 2, 5), 8), ((0, 1, 0), 4)):
        path = tmp_path / "ok.weights"
        path.write_bytes(weights_bytes(header, 12345, seen_bytes, np.ones(N_SMALL)))
        assert _load_warnings(small_net(), path) == []


# --- 4. NaN / inf / negative rolling_variance -------------------------------------------

def test_non_finite_values_and_negative_variance_warn_once(tmp_path):
    values = np.arange(N_SMALL, dtype=np.float64)
    # layer 0 (cfg line 5): biases 0-2, scales 3-5, rolling_mean 6-8, variance 9-11,
    # weights 12-65; layer 2 [connected] 66-177; layer 3 (cfg line 17) 178-187
    values[[20, 30]] = np.nan
    values[40] = np.inf
    values[10] = -0.5
    values[185] = -np.inf
    net = small_net()
    path = tmp_path / "bad.weights"
    path.write_bytes(weights_bytes((0, 2, 0), 0, 8, values))
    msgs = _load_warnings(net, path)
    assert len(msgs) == 1
    msg = msgs[0]
    assert msg.startswith("bad.weights: ")
    assert SMALL.splitlines()[4] == SMALL.splitlines()[16] == "[convolutional]"
    assert ("layer 0 [convolutional] (small.cfg:5): 'rolling_variance' has 1 negative "
            "value, 'weights' has 3 NaN/inf values; ") in msg
    assert "layer 3 [convolutional] (small.cfg:17): 'weights' has 1 NaN/inf value" in msg
    assert "layer 2" not in msg
    # the values still load where they are (the file is the user's; we only report)
    assert net.layers[0].params["rolling_variance"].tolist() == [9, -0.5, 11]
    assert np.isnan(net.layers[0].params["weights"].ravel()[8])


def test_many_bad_layers_are_summarised(tmp_path):
    text = "[net]\ninputs=2\n" + "[connected]\noutput=2\nactivation=linear\n" * 6
    net = small_net(text)
    path = tmp_path / "nan.weights"
    path.write_bytes(weights_bytes((0, 2, 0), 0, 8, np.full(6 * 6, np.nan)))
    msgs = _load_warnings(net, path)
    assert len(msgs) == 1
    assert ("layer 0 [connected] (small.cfg:3): 'biases' has 2 NaN/inf values, 'weights' "
            "has 4 NaN/inf values; layer 1 [connected] (small.cfg:6)") in msgs[0]
    assert "and 3 more layers" in msgs[0] and "layer 5" not in msgs[0]


def test_zero_variance_and_finite_values_do_not_warn(tmp_path):
    values = np.arange(N_SMALL, dtype=np.float64) - 100    # negatives everywhere else
    values[9:12] = [0, 1, 2]                               # rolling_variance >= 0
    path = tmp_path / "ok.weights"
    path.write_bytes(weights_bytes((0, 2, 0), 0, 8, values))
    assert _load_warnings(small_net(), path) == []


def test_dangling_symlink_into_a_missing_folder_names_that_folder(tmp_path):
    net, _ = loaded_net(tmp_path)
    link = tmp_path / "link.weights"
    link.symlink_to(tmp_path / "gone" / "x.weights")
    with pytest.raises(OutputError) as info:
        net.save_weights(link)
    # the link's own folder exists: the message must name the missing one it points into
    assert str(info.value).startswith(f"{tmp_path / 'gone'} (where {link} points): no such "
                                      "folder for the weights")
    assert link.is_symlink() and folder_names(tmp_path) == ["link.weights", "src"]
