"""Reliability of images, label files and the run/detect/valid/map commands: wide
(16/32-bit, float) images, Pillow's pixel limit, memory, non-UTF-8 names files, output
paths checked before the work, option ranges, class counts, detectors given to `run`,
and garbage inputs."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image

from darkcfg.cli import main
from darkcfg.data import images as imageops
from darkcfg.data.images import load_image
from darkcfg.errors import DataError
from darkcfg.predict import read_labels

from .test_cli import TINY
from .test_detect import write_tiny_detector

# ---------------------------------------------------------------------------------------
# files written byte by byte, so the test does not trust the decoder it checks


def tiff_bytes(a: np.ndarray, sample_format: int) -> bytes:
    """An uncompressed little-endian grey TIFF of the 2-D array `a` (SampleFormat 1:
    unsigned, 2: signed, 3: float), one strip."""
    h, w = a.shape
    data = a.astype(a.dtype.newbyteorder("<")).tobytes()
    bits = a.dtype.itemsize * 8

    def short(v: int) -> bytes:
        return struct.pack("<HH", v, 0)

    tags = [(256, 4, struct.pack("<I", w)), (257, 4, struct.pack("<I", h)),
            (258, 3, short(bits)), (259, 3, short(1)), (262, 3, short(1)),
            (273, 4, struct.pack("<I", 8)), (277, 3, short(1)),
            (278, 4, struct.pack("<I", h)), (279, 4, struct.pack("<I", len(data))),
            (339, 3, short(sample_format))]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHI", tag, kind, 1) + value for tag, kind, value in tags) + bytes(4)
    return b"II*\0" + struct.pack("<I", 8 + len(data)) + data + ifd


def png_bytes(w: int, h: int, depth: int, colour: int, rows: bytes) -> bytes:
    """A PNG from raw scanlines (each prefixed by filter byte 0)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    head = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


U16 = np.array([[0, 1, 255, 256], [32768, 65534, 65535, 1000]], np.uint16)


def expect(values: np.ndarray, top: float) -> np.ndarray:
    """value / top in double, rounded once to float32."""
    return (values.astype(np.float64) / top).astype(np.float32)


# ---------------------------------------------------------------------------------------
# 1. wide images are scaled by their range, not clipped at 255

@pytest.mark.parametrize("mode, order", [("I;16", "<u2"), ("I;16B", ">u2")])
def test_16bit_grey_png_and_tiff_are_value_over_65535(tmp_path, mode, order):
    im = Image.frombytes(mode, (4, 2), U16.astype(order).tobytes())
    for fmt in ("PNG", "TIFF"):
        path = tmp_path / f"g16.{fmt.lower()}"
        im.save(path, format=fmt)
        grey = load_image(path, channels=1)
        assert grey.dtype == np.float32 and grey.shape == (1, 2, 4)
        np.testing.assert_array_equal(grey[0], expect(U16, 65535))
        rgb = load_image(path, channels=3)                 # grey repeated into R, G, B
        np.testing.assert_array_equal(rgb, np.repeat(grey, 3, axis=0))


def test_16bit_pgm_is_value_over_maxval(tmp_path):
    path = tmp_path / "g.pgm"
    path.write_bytes(b"P5\n4 2\n65535\n" + U16.astype(">u2").tobytes())
    np.testing.assert_array_equal(load_image(path, 1)[0], expect(U16, 65535))


def test_32bit_unsigned_tiff_uses_the_unsigned_range(tmp_path):
    a = np.array([[0, 2**31, 2**32 - 1, 12345678]], np.uint32)
    path = tmp_path / "u32.tif"
    path.write_bytes(tiff_bytes(a, 1))
    np.testing.assert_array_equal(load_image(path, 1)[0], expect(a, 2**32 - 1))


def test_signed_integer_tiffs_use_the_positive_range_and_refuse_negatives(tmp_path):
    a16 = np.array([[0, 5, 32767, 16384]], np.int16)
    (tmp_path / "i16.tif").write_bytes(tiff_bytes(a16, 2))
    np.testing.assert_array_equal(load_image(tmp_path / "i16.tif", 1)[0], expect(a16, 32767))
    a32 = np.array([[0, 7, 2**31 - 1, 2**30]], np.int32)
    (tmp_path / "i32.tif").write_bytes(tiff_bytes(a32, 2))
    np.testing.assert_array_equal(load_image(tmp_path / "i32.tif", 1)[0],
                                  expect(a32, 2**31 - 1))
    (tmp_path / "neg.tif").write_bytes(tiff_bytes(np.array([[0, -5, 9]], np.int32), 2))
    with pytest.raises(DataError, match=r"neg\.tif: .*negative values \(down to -5\)"):
        load_image(tmp_path / "neg.tif")


def test_float_tiff_is_used_as_is_in_0_1_and_refused_outside(tmp_path):
    a = np.array([[0.0, 0.3, 1.0, 1e-7]], np.float32)
    (tmp_path / "f.tif").write_bytes(tiff_bytes(a, 3))
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif", 1)[0], a)
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif", 3), np.repeat(a[None], 3, 0))
    (tmp_path / "big.tif").write_bytes(tiff_bytes(np.array([[0, 0.5, 1.5]], np.float32), 3))
    with pytest.raises(DataError, match=r"big\.tif: .*\[0, 1\].*1 pixels outside "
                                        r"\(values from 0 to 1\.5\)"):
        load_image(tmp_path / "big.tif")
    (tmp_path / "nan.tif").write_bytes(tiff_bytes(np.array([[0, np.nan]], np.float32), 3))
    with pytest.raises(DataError, match=r"nan\.tif: .*NaN or infinite"):
        load_image(tmp_path / "nan.tif")


def test_16bit_rgb_png_keeps_the_high_byte_like_darknet(tmp_path):
    """Pillow gives 16-bit RGB as 8-bit (the high byte): what stb_image gives Darknet."""
    v = np.array([65535, 32768, 255, 300, 1, 0], np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(2, 1, 16, 2, b"\0" + v.astype(">u2").tobytes()))
    got = load_image(path, 3)
    want = ((v >> 8).astype(np.float32) / np.float32(255)).reshape(1, 2, 3).transpose(2, 0, 1)
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------
# 2. Pillow's pixel limit and memory

def _noise(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("limit", [150, 300])   # 2x over (Pillow raises), 1.33x (warns)
def test_images_over_the_pixel_limit_are_a_data_error(tmp_path, monkeypatch, limit):
    path = _noise(tmp_path / "big.png", 20, 20)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DataError, match=rf"big\.png: the image has 400 pixels, over Pillow's "
                                        rf"limit of {limit} pixels"):
        load_image(path)


def test_run_and_detect_report_a_too_big_image_and_go_on(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    weights = write_classifier_weights(tmp_path / "tiny.weights")
    big = _noise(tmp_path / "big.png", 60, 60)
    small = _noise(tmp_path / "small.png", 12, 12, seed=1)
    # 3600 pixels: 1.44 x the limit (Pillow only warns); the small image and the
    # drawing's label text stay under it
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 2500)
    assert main(["run", str(cfg), str(weights), str(big), str(small)]) == 1
    out, err = capsys.readouterr()
    assert "big.png: the image has 3600 pixels, over Pillow's limit of 2500" in err
    assert f"{small}:" in out and f"{big}:" not in out

    dcfg, dweights = write_tiny_detector(tmp_path)
    assert main(["detect", str(dcfg), str(dweights), str(big), str(small), "--out-dir",
                 str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert "big.png: the image has 3600 pixels" in err and "Traceback" not in err
    assert os.listdir(tmp_path / "out") == ["small_boxes.png"]


def test_an_image_too_big_for_memory_is_refused_saying_what_it_needs(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.new("RGB", (3000, 2000)).save(path)
    # 3000 x 2000 RGB: 6e6 * (3 bytes decoded + two float32 copies of 3 channels)
    need = 3000 * 2000 * (3 + 2 * 4 * 3)
    assert imageops.image_bytes(3000, 2000, 3, 3) == need
    monkeypatch.setattr(imageops, "available_memory", lambda: 100 * 2**20)
    with pytest.raises(DataError, match=rf"wide\.png: a 3000 x 2000 image needs about "
                                        rf"{need / 2**20:.0f} MB .* only 100 MB is available"):
        load_image(path)
    monkeypatch.setattr(imageops, "available_memory", lambda: need)
    assert load_image(path, channels=1).shape == (1, 2000, 3000)


# ---------------------------------------------------------------------------------------
# 3. labels / names files that are not UTF-8

def test_labels_not_utf8_or_binary_are_refused_with_the_offset(tmp_path):
    (tmp_path / "latin1.txt").write_bytes(b"ant\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"latin1\.txt:2: the labels file is not UTF-8 "
                                        r"\(byte 0xe9 at offset 7\)"):
        read_labels(tmp_path / "latin1.txt")
    (tmp_path / "bin.names").write_bytes(b"ant\n\x00\x01\x02")
    with pytest.raises(DataError, match=r"bin\.names: a binary file, not a names file "
                                        r"\(a zero byte at offset 4\)"):
        read_labels(tmp_path / "bin.names", "names")
    (tmp_path / "bom.txt").write_bytes("\ufeffant\ncafé\n".encode())
    assert read_labels(tmp_path / "bom.txt") == ["ant", "café"]


def test_run_and_detect_refuse_a_latin1_names_file(tmp_path, capsys):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    weights = write_classifier_weights(tmp_path / "tiny.weights")
    image = _noise(tmp_path / "a.png", 12, 12)
    (tmp_path / "labels.txt").write_bytes(b"ant\nbee\ncat\nd\xf6g\n")
    assert main(["run", str(cfg), str(weights), str(image), "--labels",
                 str(tmp_path / "labels.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("darkcfg: error: ") and "labels.txt:4: the labels file is not UTF-8"\
        in err
    dcfg, dweights = write_tiny_detector(tmp_path)
    (tmp_path / "names.txt").write_bytes(b"ant\n\xff\xfeb\x00e\x00")
    assert main(["detect", str(dcfg), str(dweights), str(image), "--names",
                 str(tmp_path / "names.txt"), "--out-dir", str(tmp_path)]) == 2
    assert "names.txt: a binary file, not a names file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# 4. output paths are checked before any work

def write_classifier_weights(path: Path) -> Path:
    rng = np.random.default_rng(3)
    values = np.concatenate([[0, 0, 0, 0], rng.normal(size=4 * 27)]).astype("<f4")
    path.write_bytes(np.array([0, 2, 0], "<i4").tobytes() + np.zeros(1, "<u8").tobytes()
                     + values.tobytes())
    return path


def test_detect_out_dir_that_is_a_file_is_refused_before_loading(tmp_path, capsys):
    cfg, _ = write_tiny_detector(tmp_path)
    image = _noise(tmp_path / "a.png", 12, 12)
    (tmp_path / "taken").write_text("mine")
    # the weights do not exist: the out-dir error proves nothing was loaded first
    assert main(["detect", str(cfg), str(tmp_path / "none.weights"), str(image),
                 "--out-dir", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err == f"darkcfg: error: {tmp_path / 'taken'}: is a file, not a folder; the " \
                  "drawings need a folder\n"
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into any folder")
def test_detect_out_dir_not_writable_is_refused(tmp_path, capsys):
    cfg, weights = write_tiny_detector(tmp_path)
    image = _noise(tmp_path / "a.png", 12, 12)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main(["detect", str(cfg), str(weights), str(image), "--out-dir",
                     str(locked)]) == 2
    finally:
        locked.chmod(0o700)
    assert "locked: the folder is not writable" in capsys.readouterr().err


@pytest.mark.parametrize("target, message", [
    ("missing/out.npy", "no such folder for the outputs"),
    (".", "is a folder; give a file name for the outputs"),
    ("/dev/null", "is not a regular file"),
])
def test_run_output_is_checked_before_running_any_image(tmp_path, capsys, target, message):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    weights = write_classifier_weights(tmp_path / "tiny.weights")
    image = _noise(tmp_path / "a.png", 12, 12)
    output = target if target.startswith("/") else str(tmp_path / target)
    assert main(["run", str(cfg), str(weights), str(image), "--output", output]) == 2
    out, err = capsys.readouterr()
    assert out == ""                                    # no image was run
    named = output.rsplit("/", 1)[0] if "missing" in output else output  # the folder
    assert err.startswith(f"darkcfg: error: {named}: ") and message in err
    assert not (tmp_path / "missing").exists() and not Path(output + ".npy").exists()


def test_run_output_is_written_to_the_exact_path(tmp_path, capsys):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    weights = write_classifier_weights(tmp_path / "tiny.weights")
    image = _noise(tmp_path / "a.png", 12, 12)
    out = tmp_path / "scores.bin"
    assert main(["run", str(cfg), str(weights), str(image), "--output", str(out)]) == 0
    assert not (tmp_path / "scores.bin.npy").exists()
    saved = np.load(io.BytesIO(out.read_bytes()))
    assert saved.shape == (1, 4)
    np.testing.assert_allclose(saved.sum(axis=1), 1, rtol=1e-6)   # a softmax row
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".darkcfg-")] == []


# ---------------------------------------------------------------------------------------
# 5. option ranges

@pytest.mark.parametrize("top", ["-3", "0", "two"])
def test_top_must_be_a_positive_count(tmp_path, capsys, top):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    for argv in (["run", str(cfg), "w", "a.png", "--top", top],
                 ["valid", "d.data", str(cfg), "w", "--top", top]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        assert "argument --top: " in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--thresh", "1.5"), ("--thresh", "-0.1"),
                                           ("--thresh", "nan"), ("--nms", "nan"),
                                           ("--nms", "-1")])
def test_thresholds_must_be_in_0_1(tmp_path, capsys, option, value):
    cfg, weights = write_tiny_detector(tmp_path)
    image = _noise(tmp_path / "a.png", 12, 12)
    (tmp_path / "valid.txt").write_text(f"{image}\n")
    (tmp_path / "d.data").write_text("classes=2\nvalid=valid.txt\n")
    for argv in (["detect", str(cfg), str(weights), str(image), "--out-dir", str(tmp_path)],
                 ["map", str(tmp_path / "d.data"), str(cfg), str(weights), "--quiet"]):
        assert main([*argv, option, value]) == 2
        out, err = capsys.readouterr()
        assert err.startswith(f"darkcfg: error: {option} must be in [0, 1]") and out == ""
        assert value in err
    assert not (tmp_path / "a_boxes.png").exists()


# ---------------------------------------------------------------------------------------
# 6. valid checks the class count; 7. run refuses detectors and says when it prints raw
# values

def write_npz_data(folder: Path, classes: int) -> Path:
    rng = np.random.default_rng(5)
    np.savez(folder / "valid.npz", x=(rng.random((6, 3, 12, 12)) * 255).astype(np.uint8),
             y=np.arange(6) % 4)
    data = folder / "c.data"
    data.write_text(f"classes={classes}\nvalid=valid.npz\n")
    return data


def test_valid_checks_the_class_count(tmp_path, capsys):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    weights = write_classifier_weights(tmp_path / "tiny.weights")
    data = write_npz_data(tmp_path, 5)
    assert main(["valid", str(data), str(cfg), str(weights)]) == 2
    assert capsys.readouterr().err == (f"darkcfg: error: {data}: classes=5, but {cfg} has 4 "
                                       "outputs\n")
    data = write_npz_data(tmp_path, 4)
    assert main(["valid", str(data), str(cfg), str(weights)]) == 0
    assert "6 images" in capsys.readouterr().out


def test_valid_and_run_point_a_detector_elsewhere(tmp_path, capsys):
    cfg, weights = write_tiny_detector(tmp_path)
    image = _noise(tmp_path / "a.png", 12, 12)
    assert main(["run", str(cfg), str(weights), str(image)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "layer 1 is a [yolo]" in err and "use `darkcfg detect`" in err
    assert main(["valid", str(write_npz_data(tmp_path, 2)), str(cfg), str(weights)]) == 2
    assert "use `darkcfg map` for a detector" in capsys.readouterr().err


def test_run_on_a_net_without_softmax_prints_raw_values(tmp_path, capsys):
    cfg = tmp_path / "raw.cfg"
    cfg.write_text(TINY.replace("[softmax]\n", ""))
    weights = write_classifier_weights(tmp_path / "tiny.weights")
    rng = np.random.default_rng(9)
    img = (rng.random((12, 12, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    assert main(["run", str(cfg), str(weights), str(tmp_path / "a.png"), "--top", "4"]) == 0
    out, err = capsys.readouterr()
    assert "note: the output layer 1 is a [avgpool], not a [softmax]: the values are raw " \
           "outputs, not probabilities" in err
    assert "%" not in out
    # independent: conv (stride 2, pad 1, leaky) then the channel means, in plain NumPy
    w = np.frombuffer(weights.read_bytes()[20:], "<f4")[4:].reshape(4, 3, 3, 3)
    xp = np.pad(img.astype(np.float32).transpose(2, 0, 1) / 255, ((0, 0), (1, 1), (1, 1)))
    conv = np.array([[[np.sum(w[f] * xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3])
                       for j in range(6)] for i in range(6)] for f in range(4)])
    means = np.where(conv > 0, conv, 0.1 * conv).mean(axis=(1, 2))
    lines = out.splitlines()[1:]
    order = np.argsort(-means)
    assert [int(ln.split()[-1]) for ln in lines] == order.tolist()
    assert [ln.split()[1] for ln in lines] == ["output"] * 4
    np.testing.assert_allclose([float(ln.split()[0]) for ln in lines], means[order],
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# 8. garbage in: one clear line, no traceback

def test_garbage_files_give_one_clear_error(tmp_path, capsys):
    cfg, weights = write_tiny_detector(tmp_path)
    classifier = tmp_path / "classifier.cfg"
    classifier.write_text(TINY)
    classifier_weights = write_classifier_weights(tmp_path / "classifier.weights")
    rng = np.random.default_rng(11)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    image = _noise(tmp_path / "a.png", 12, 12)
    (tmp_path / "valid.txt").write_text(f"{image}\n")
    data = tmp_path / "d.data"
    data.write_text("classes=2\nvalid=valid.txt\n")
    (tmp_path / "junk.data").write_text(f"classes=2\nvalid={junk}\n")
    runs = [["detect", junk, weights, image], ["detect", cfg, junk, image],
            ["detect", cfg, weights, junk], ["map", junk, cfg, weights],
            ["map", data, junk, weights], ["map", data, cfg, junk],
            ["map", tmp_path / "junk.data", cfg, weights], ["valid", junk, cfg, weights],
            ["valid", data, cfg, junk], ["valid", write_npz_data(tmp_path, 2), cfg, weights],
            ["run", classifier, classifier_weights, junk],
            ["run", classifier, junk, image], ["run", junk, classifier_weights, image]]
    (tmp_path / "a.txt").write_bytes(b"0 0.5 0.5 0.2 0.2\n\xff\xfe")   # junk label file
    runs.append(["map", data, cfg, weights])
    for argv in runs:
        extra = ["--out-dir", str(tmp_path / "out")] if argv[0] == "detect" else []
        code = main([*map(str, argv), *extra])
        err = capsys.readouterr().err
        assert code != 0, argv
        # warnings may come first (e.g. about a junk weights header); the error ends it
        assert err.splitlines()[-1].startswith("darkcfg: error: "), (argv, err)
        assert "Traceback" not in err, (argv, err)
