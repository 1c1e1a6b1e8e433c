"""Classifier datasets: `.data` files, image lists with labels from paths, IDX and .npz
arrays, Darknet's training augmentation, and a shuffled batch iterator.

The `.data` file (training.md §10.1) has a cfg's `key=value` syntax without sections.
Keys darkcfg reads:

    classes = 10                # number of classes (= the network's outputs)
    train   = train.list        # what to train on (see below)
    valid   = test.list         # what to validate on (optional)
    test    = test.list         # optional
    labels  = labels.txt        # one label per line: how truth is found in image paths
    names   = names.txt         # display names (default: the labels)
    backup  = backup/           # where checkpoints go
    top     = 1                 # top-k accuracy to report

Relative paths are read from the `.data` file's folder; when a path exists only relative
to the current folder (Darknet's rule) that one is used.

`train`, `valid` and `test` each name one of:

* a list file: one image path per line (Darknet's way). Truth comes from `labels`
  (or, when there is no `labels` key, from `names`).
* an IDX file (MNIST family, `.gz` or raw, e.g. `train-images-idx3-ubyte.gz`): the
  labels file is `train_labels` / `valid_labels` / `test_labels`, or, when that key is
  absent, the file of the same name with `images-idx3` replaced by `labels-idx1`.
* a `.npz` archive holding `x` and `y` (or `images` and `labels`): images as (N, H, W) or
  (N, C, H, W) (or (N, H, W, C) with C = 1 or 3), uint8 0..255 or float in [0, 1];
  labels as N integers.
* `fashion-mnist:train` or `fashion-mnist:test`: Fashion-MNIST, found in the folder that
  the environment variable DARKCFG_FASHION_MNIST names, else /usr/share/datasets/
  fashion-mnist (Debian's `dataset-fashion-mnist` package).

Arrays are the fast path: no image decoding during training. Array images are fed as
they are when their size is the network's; image files are sized like Darknet's
classifier (training: random crop/scale/rotation; validation: shorter side resized to the
network width, then a centre crop).

Label matching fixes Darknet's substring trap (§10.2): a label matches an image when it
equals a folder name of the path (folders holding the list file itself do not count) or
a whole word of the file name, words being separated by anything but letters and digits
(`123_cat.png` is a cat; `/data/train/` is not `rain`, `category` is not `cat`). No match
or several matches is an error naming the image and the candidates.
"""
from __future__ import annotations

import difflib
import gzip
import os
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cfg import _strip_comment
from .errors import DataError
from .imageops import load_image, resize

# ---------------------------------------------------------------------------------------
# .data files

DATA_KEYS = ("classes", "train", "valid", "test", "labels", "names", "backup", "top",
             "train_labels", "valid_labels", "test_labels")
# Darknet keys for commands or data darkcfg does not model (detector evaluation, AH
# checkpoint cadence): accepted, unused.
DATA_QUIET = frozenset({"eval", "results", "map", "difficult", "saveweights", "savelast",
                        "leaves"})
SPLITS = ("train", "valid", "test")


@dataclass
class DataConfig:
    """A parsed `.data` file. Paths are resolved; `line` gives each key's line."""
    file: str
    classes: int
    values: dict[str, str] = field(default_factory=dict)
    line: dict[str, int] = field(default_factory=dict)
    labels: list[str] | None = None
    names: list[str] | None = None
    top: int = 1

    def path(self, key: str) -> str | None:
        return self.values.get(key)

    @property
    def backup(self) -> str | None:
        return self.values.get("backup")

    def where(self, key: str) -> str:
        return f"{self.file}:{self.line[key]}" if key in self.line else self.file


def _resolve(value: str, folder: str) -> str:
    """The .data folder first; the current folder when only there the path exists."""
    if value.startswith("fashion-mnist:"):
        return value
    if os.path.isabs(value):
        return os.path.normpath(value)
    mine = os.path.normpath(os.path.join(folder, value))
    if not os.path.exists(mine) and os.path.exists(value):
        return value
    return mine


def read_data_config(path: str | os.PathLike, *, strict: bool = True) -> DataConfig:
    """Read a `.data` file; every problem is a DataError naming the file and line."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such .data file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the .data file: {e}") from None
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        if not line:
            continue
        if line.startswith("["):
            raise DataError(f"{path}:{lineno}: a .data file has no [sections] (is this a "
                            ".cfg file?)")
        if "=" not in line:
            raise DataError(f"{path}:{lineno}: expected 'key=value', found {line!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        if key == "tag" and value == "0":
            continue
        if key not in DATA_KEYS and key not in DATA_QUIET:
            if key in ("tree", "tag"):
                raise DataError(f"{path}:{lineno}: '{key}' (hierarchical/multi-label "
                                "classifier data) is not supported by darkcfg")
            hint = difflib.get_close_matches(key, DATA_KEYS, n=1)
            msg = f"{path}:{lineno}: unknown key '{key}'" + (
                f" - did you mean '{hint[0]}'?" if hint else
                f"; known keys: {', '.join(DATA_KEYS)}")
            if strict:
                raise DataError(msg)
            warnings.warn(msg + " (ignored)", stacklevel=2)
            continue
        if not value:
            raise DataError(f"{path}:{lineno}: '{key}' has an empty value")
        if key in values:
            raise DataError(f"{path}:{lineno}: duplicate key '{key}' (first on line "
                            f"{lines[key]})")
        values[key], lines[key] = value, lineno
    folder = os.path.dirname(os.path.abspath(path))
    cfg = DataConfig(path, 0, line=lines)
    for key, value in values.items():
        if key in ("classes", "top"):
            if not re.fullmatch(r"\d+", value) or int(value) < 1:
                raise DataError(f"{path}:{lines[key]}: '{key}' must be a positive integer, "
                                f"got '{value}'")
        elif key not in DATA_QUIET:
            value = _resolve(value, folder)
        cfg.values[key] = value
    cfg.top = int(values.get("top", 1))
    if "labels" in values:
        cfg.labels = read_lines(cfg.values["labels"], "labels", cfg.where("labels"))
    if "names" in values:
        cfg.names = read_lines(cfg.values["names"], "names", cfg.where("names"))
    n = len(cfg.labels) if cfg.labels else 0
    if "classes" in values:
        cfg.classes = int(values["classes"])
        if n and n != cfg.classes:
            raise DataError(f"{cfg.where('labels')}: {cfg.values['labels']} has {n} labels "
                            f"but classes={cfg.classes} (line {lines['classes']})")
    elif n:
        cfg.classes = n
    elif any(str(values.get(s, "")).startswith("fashion-mnist:") for s in SPLITS):
        cfg.classes = 10
    else:
        raise DataError(f"{path}: no 'classes' key (the number of classes)")
    return cfg


def read_lines(path: str, what: str, where: str = "") -> list[str]:
    """A labels/names file: one entry per line; trailing blank lines are ignored."""
    src = f"{where}: " if where else ""
    try:
        with open(path, encoding="utf-8-sig") as f:
            items = [s.strip() for s in f.read().splitlines()]
    except FileNotFoundError:
        raise DataError(f"{src}{what} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{src}cannot read {what} file {path}: {e}") from None
    while items and not items[-1]:
        items.pop()
    if not items:
        raise DataError(f"{path}: the {what} file is empty (one entry per line)")
    for i, item in enumerate(items, start=1):
        if not item:
            raise DataError(f"{path}:{i}: blank line in the {what} file; Darknet would "
                            "read it as a label that matches every path")
    if what == "labels":
        seen: dict[str, int] = {}
        for i, item in enumerate(items, start=1):
            if item in seen:
                raise DataError(f"{path}:{i}: label '{item}' repeats line {seen[item]}")
            seen[item] = i
    return items


# ---------------------------------------------------------------------------------------
# labels from image paths (the substring-trap fix)

_WORD_CHARS = "A-Za-z0-9"


def _label_pattern(label: str) -> re.Pattern:
    return re.compile(f"(?<![{_WORD_CHARS}]){re.escape(label)}(?![{_WORD_CHARS}])")


class LabelMatcher:
    def __init__(self, labels: list[str]):
        self.labels = labels
        self.patterns = [_label_pattern(lab) for lab in labels]

    def candidates(self, path: str, root: str | None = None) -> list[int]:
        """Indices of labels naming `path`. Folders of `root` (the list file's folder)
        and above are not part of the image's name."""
        shown = path
        if root and os.path.isabs(path):
            rel = os.path.relpath(path, root)
            if not rel.startswith(".."):
                shown = rel
        parts = [p for p in re.split(r"[\\/]+", shown) if p]
        folders = set(parts[:-1])
        stem = os.path.splitext(parts[-1])[0] if parts else ""
        return [i for i, (lab, pat) in enumerate(zip(self.labels, self.patterns))
                if lab in folders or pat.search(stem)]

    def label(self, path: str, where: str, root: str | None = None) -> int:
        hits = self.candidates(path, root)
        if len(hits) == 1:
            return hits[0]
        if hits:
            names = ", ".join(self.labels[i] for i in hits)
            raise DataError(f"{where}: image {path} matches {len(hits)} labels ({names}); "
                            "exactly one label must be a folder name or a whole word of "
                            "the file name")
        shown = ", ".join(self.labels[:12]) + (", ..." if len(self.labels) > 12 else "")
        raise DataError(f"{where}: image {path} matches none of the {len(self.labels)} "
                        f"labels ({shown}); name it like 123_{self.labels[0]}.png or put "
                        f"it in a folder named {self.labels[0]}/")


# ---------------------------------------------------------------------------------------
# datasets

@dataclass
class ArrayDataset:
    """Images in memory: (N, C, H, W) uint8 (0..255) or float32 (0..1), int labels."""
    images: np.ndarray
    labels: np.ndarray
    source: str
    names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: np.ndarray, shape: tuple[int, int, int],
              augment: Augment | None, rng: np.random.Generator) -> np.ndarray:
        x = self.images[idx]
        x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else \
            x.astype(np.float32, copy=False)
        x = _to_channels(x, shape[0], self.source)
        return transform(x, shape, augment, rng)


@dataclass
class ImageListDataset:
    """Image files named by a list file; labels derived from the paths."""
    paths: list[str]             # resolved paths
    labels: np.ndarray
    source: str                  # the list file
    lines: list[int]             # the list file line of each path
    names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int, channels: int) -> np.ndarray:
        try:
            return load_image(self.paths[i], channels)
        except DataError as e:
            raise DataError(f"{self.source}:{self.lines[i]}: {e}") from None

    def batch(self, idx: np.ndarray, shape: tuple[int, int, int],
              augment: Augment | None, rng: np.random.Generator) -> np.ndarray:
        return np.concatenate([transform(self.image(int(i), shape[0])[None], shape,
                                         augment, rng) for i in idx])


Dataset = ArrayDataset | ImageListDataset


def read_image_list(list_file: str, labels: list[str], where: str = "") -> ImageListDataset:
    """A list of image paths (relative ones from the list's folder, else the current
    folder) with each image's label index."""
    src = f"{where}: " if where else ""
    try:
        with open(list_file, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{src}list file {list_file} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{src}cannot read list file {list_file}: {e}") from None
    folder = os.path.dirname(os.path.abspath(list_file))
    matcher = LabelMatcher(labels)
    paths, lines, ys = [], [], []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        p = raw.strip()
        if not p:
            continue
        ys.append(matcher.label(p, f"{list_file}:{lineno}", folder))
        paths.append(_resolve(p, folder))
        lines.append(lineno)
    if not paths:
        raise DataError(f"{list_file}: the list file has no image paths")
    return ImageListDataset(paths, np.array(ys, dtype=np.int64), list_file, lines)


def open_dataset(cfg: DataConfig, split: str = "train") -> Dataset | None:
    """The dataset a `.data` file names for `split` (train/valid/test); None if absent."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    value = cfg.path(split)
    if value is None:
        return None
    where = cfg.where(split)
    if value.startswith("fashion-mnist:"):
        part = value.split(":", 1)[1]
        if part not in ("train", "test", "t10k"):
            raise DataError(f"{where}: '{value}': use fashion-mnist:train or "
                            "fashion-mnist:test")
        ds = fashion_mnist("train" if part == "train" else "test")
    elif _sniff(value, where) == "list":
        labels = cfg.labels or cfg.names
        if not labels:
            raise DataError(f"{where}: {value} is a list of images; the .data file needs "
                            "'labels' (one label per line) to find each image's class")
        ds = read_image_list(value, labels, where)
    elif value.endswith(".npz"):
        ds = load_npz(value)
    else:
        key = f"{split}_labels"
        label_file = cfg.path(key) or _idx_labels_name(value, where, key)
        ds = load_idx(value, label_file)
    ds.names = cfg.names or cfg.labels or ds.names
    if len(ds) and (ds.labels.min() < 0 or ds.labels.max() >= cfg.classes):
        bad = int(ds.labels.max() if ds.labels.max() >= cfg.classes else ds.labels.min())
        raise DataError(f"{where}: {ds.source} has label {bad}, outside 0..{cfg.classes - 1}"
                        f" (classes={cfg.classes})")
    return ds


def _sniff(path: str, where: str) -> str:
    """'list' for a text list of paths, else 'array' (IDX, gzip or npz)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise DataError(f"{where}: {path} does not exist") from None
    except OSError as e:
        raise DataError(f"{where}: cannot read {path}: {e.strerror}") from None
    if head[:2] == b"\x1f\x8b" or head[:2] == b"\0\0" or head[:2] == b"PK":
        return "array"
    return "list"


def _idx_labels_name(images: str, where: str, key: str) -> str:
    base = os.path.basename(images)
    if "images-idx3" in base:
        guess = os.path.join(os.path.dirname(images), base.replace("images-idx3", "labels-idx1"))
        if os.path.exists(guess):
            return guess
    raise DataError(f"{where}: no labels for the IDX images {images}: add '{key}=' naming "
                    "the labels file")


# ---------------------------------------------------------------------------------------
# IDX and .npz

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (magic 0,0,type,ndim; ndim big-endian uint32 sizes; big-endian data),
    gzip-compressed or raw."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: no such IDX file") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read (damaged gzip?): {e}") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (first bytes {raw[:4].hex(' ')}; an IDX "
                        "file starts 00 00 <type 08..0e> <ndim>)")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{path}: IDX header cut short ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims, dtype=np.int64))
    have = len(raw) - start
    if have != count * dtype.itemsize:
        raise DataError(f"{path}: IDX header says {' x '.join(map(str, dims))} "
                        f"{dtype.name} values ({count * dtype.itemsize} bytes) but the file "
                        f"holds {have} bytes after the header")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=start)
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def _as_images(x: np.ndarray, source: str) -> np.ndarray:
    """(N,H,W), (N,C,H,W) or unambiguous (N,H,W,C) -> (N,C,H,W) uint8 or float32."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise DataError(f"{source}: images must be (N, H, W) or (N, C, H, W); got shape "
                        f"{x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind != "f":
        raise DataError(f"{source}: images must be uint8 (0..255) or float (0..1), got "
                        f"{x.dtype}")
    x = x.astype(np.float32)
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise DataError(f"{source}: float images must lie in [0, 1] (found "
                        f"{np.nanmin(x):g}..{np.nanmax(x):g})")
    return np.ascontiguousarray(x)


def _as_labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{source}: labels must be N integers; got {y.dtype} {y.shape}")
    if len(y) != n:
        raise DataError(f"{source}: {n} images but {len(y)} labels")
    return y.astype(np.int64)


def load_idx(images: str | os.PathLike, labels: str | os.PathLike) -> ArrayDataset:
    images, labels = os.fspath(images), os.fspath(labels)
    x = _as_images(read_idx(images), images)
    return ArrayDataset(x, _as_labels(read_idx(labels), len(x), f"{images} + {labels}"),
                        images)


def load_idx_images(path: str | os.PathLike) -> np.ndarray:
    """IDX images as (N, C, H, W) float32 in [0, 1]."""
    x = _as_images(read_idx(path), os.fspath(path))
    return x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x


def load_npz(path: str | os.PathLike) -> ArrayDataset:
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such .npz file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz archive: {e}") from None
    for xk, yk in (("x", "y"), ("images", "labels")):
        if xk in arrays and yk in arrays:
            x = _as_images(arrays[xk], path)
            return ArrayDataset(x, _as_labels(arrays[yk], len(x), path), path)
    raise DataError(f"{path}: expected arrays 'x' and 'y' (or 'images' and 'labels'); "
                    f"found {', '.join(sorted(arrays)) or 'none'}")


# ---------------------------------------------------------------------------------------
# Fashion-MNIST

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "DARKCFG_FASHION_MNIST"
FASHION_MNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                       "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """folder/stem.gz or folder/stem, whichever exists."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_dir() -> Path:
    """The folder holding the four Fashion-MNIST IDX files, or a DataError saying how
    to get them."""
    stems = [s for pair in _FASHION_FILES.values() for s in pair]
    env = os.environ.get(FASHION_MNIST_ENV)
    folder = Path(env) if env else Path(FASHION_MNIST_DIR)
    missing = [s for s in stems if find_idx_file(folder, s) is None]
    if not missing:
        return folder
    if env:
        raise DataError(f"{FASHION_MNIST_ENV}={env}: that folder lacks "
                        f"{', '.join(m + '[.gz]' for m in missing)}")
    wanted = ", ".join(s + ".gz" for s in stems)
    raise DataError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}. Install it with "
                    "'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or set "
                    f"{FASHION_MNIST_ENV} to a folder holding {wanted}")


def fashion_mnist(split: str = "train") -> ArrayDataset:
    """Fashion-MNIST train (60,000) or test (10,000) as (N, 1, 28, 28) uint8 + labels."""
    folder = fashion_mnist_dir()
    images, labels = (find_idx_file(folder, s) for s in _FASHION_FILES[split])
    ds = load_idx(images, labels)  # type: ignore[arg-type]
    ds.names = list(FASHION_MNIST_NAMES)
    return ds


# ---------------------------------------------------------------------------------------
# images: channels, sizing, Darknet's training augmentation

def _to_channels(x: np.ndarray, c: int, source: str) -> np.ndarray:
    """Grey -> RGB by copying, RGB -> grey with Pillow's 'L' weights, as for image files."""
    have = x.shape[1]
    if have == c:
        return x
    if have == 1 and c == 3:
        return np.repeat(x, 3, axis=1)
    if have == 3 and c == 1:
        w = np.array([0.299, 0.587, 0.114], np.float32)[None, :, None, None]
        return (x * w).sum(axis=1, keepdims=True, dtype=np.float32)
    raise DataError(f"{source}: images have {have} channels; the network takes {c}")


@dataclass(frozen=True)
class Augment:
    """Training augmentation of Darknet's classifier (training.md §10.3, §11).

    low/high: the crop's shorter side in pixels before it is fitted to the network
    (P: min_crop..max_crop, default width..2*width, or min_ratio/max_ratio x width).
    """
    low: int
    high: int
    angle: float = 0.0
    aspect: float = 1.0
    exposure: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    flip: bool = True
    center: bool = False

    @classmethod
    def from_net(cls, opts: dict[str, Any], shape: tuple[int, int, int]) -> Augment:
        w = shape[2]
        min_crop, max_crop = opts["min_crop"] or w, opts["max_crop"] or 2 * w
        # Darknet keeps the crops as ratios of the width (min_ratio = min_crop / w); the
        # small epsilon keeps 1.1428...*28 from truncating to 31.
        low = int(opts["min_ratio"] * w + 1e-6) if opts["min_ratio"] else min_crop
        high = int(opts["max_ratio"] * w + 1e-6) if opts["max_ratio"] else max_crop
        return cls(max(1, min(low, high)), max(1, low, high), opts["angle"], opts["aspect"],
                   opts["exposure"], opts["saturation"], opts["hue"], bool(opts["flip"]),
                   bool(opts["center"]))


def _rand_scale(rng: np.random.Generator, s: float, n: int) -> np.ndarray:
    """Darknet's rand_scale: u ~ U(1, s), then u or 1/u with equal chance."""
    u = rng.uniform(min(1.0, s), max(1.0, s), n)
    return np.where(rng.random(n) < 0.5, u, 1.0 / u)


def transform(x: np.ndarray, shape: tuple[int, int, int], augment: Augment | None,
              rng: np.random.Generator) -> np.ndarray:
    """(N, C, H, W) images of one size -> (N, C, h, w) network input."""
    _, oh, ow = shape
    if augment is None:
        if x.shape[2:] == (oh, ow):
            return np.ascontiguousarray(x, dtype=np.float32)
        return np.stack([center_resize(im, ow, oh) for im in x])
    n, _, h, w = x.shape
    if augment.center:
        m = min(h, w)
        y0, x0 = (h - m) // 2, (w - m) // 2
        out = np.stack([resize(im[:, y0:y0 + m, x0:x0 + m], ow, oh) for im in x])
    else:
        a = _rand_scale(rng, augment.aspect, n)
        r = rng.integers(augment.low, augment.high + 1, n)
        # Darknet stores min(h, w*aspect) in an int before dividing
        scale = r / np.minimum(h, w * a).astype(np.int64)
        rad = rng.uniform(-augment.angle, augment.angle, n) * np.pi / 180
        dx = (w * scale / a - ow) / 2
        dy = (h * scale - oh) / 2    # P uses the width here; darkcfg the height
        dx = rng.uniform(-1.0, 1.0, n) * dx
        dy = rng.uniform(-1.0, 1.0, n) * dy
        out = rotate_crop(x, rad, scale, a, dx, dy, ow, oh)
    if augment.flip:
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, :, ::-1]
    return distort(out, rng.uniform(-augment.hue, augment.hue, n),
                   _rand_scale(rng, augment.saturation, n),
                   _rand_scale(rng, augment.exposure, n))


def center_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet classifier validation: resize the shorter side to w, centre-crop w x h
    (zero outside the image). im: (C, H, W)."""
    c, ih, iw = im.shape
    nw, nh = (w, ih * w // iw) if iw < ih else (iw * w // ih, w)
    if (nw, nh) != (iw, ih):
        im = resize(im, nw, nh)
    out = np.zeros((c, h, w), np.float32)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    sx, sy = max(x0, 0), max(y0, 0)
    ex, ey = min(x0 + w, nw), min(y0 + h, nh)
    out[:, sy - y0:ey - y0, sx - x0:ex - x0] = im[:, sy:ey, sx:ex]
    return out


def rotate_crop(x: np.ndarray, rad, scale, aspect, dx, dy, w: int, h: int) -> np.ndarray:
    """Darknet's rotate_crop_image for a batch: output pixel (i, j) samples the source at

        u = ((i - w/2) + dx) * aspect / scale,   v = ((j - h/2) + dy) / scale
        (sx, sy) = (cos r * u - sin r * v + W/2,  sin r * u + cos r * v + H/2)

    bilinearly, reading 0 outside the image. Per-image parameters are arrays of length N.
    """
    n, _, ih, iw = x.shape
    p = [np.asarray(v, np.float64).reshape(n, 1, 1) for v in (rad, scale, aspect, dx, dy)]
    rad, scale, aspect, dx, dy = p
    i = np.arange(w, dtype=np.float64)[None, None, :]
    j = np.arange(h, dtype=np.float64)[None, :, None]
    u = (i - w / 2 + dx) * aspect / scale
    v = (j - h / 2 + dy) / scale
    cos, sin = np.cos(rad), np.sin(rad)
    return bilinear(x, cos * u - sin * v + iw / 2, sin * u + cos * v + ih / 2)


def bilinear(x: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Sample (N, C, H, W) at float coordinates sx, sy (N, h, w); 0 outside the image."""
    n, c, ih, iw = x.shape
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    hwc = x.transpose(0, 2, 3, 1)
    batch = np.arange(n)[:, None, None]
    out = np.zeros((*sx.shape, c), np.float32)
    for oy, ox, wgt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                        (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + ox, y0 + oy
        inside = (xi >= 0) & (xi < iw) & (yi >= 0) & (yi < ih)
        vals = hwc[batch, np.clip(yi, 0, ih - 1), np.clip(xi, 0, iw - 1)]
        out += vals * (wgt * inside).astype(np.float32)[..., None]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def distort(x: np.ndarray, dhue, dsat, dexp) -> np.ndarray:
    """Darknet's distort_image + constrain_image: RGB goes through HSV (hue shifted and
    wrapped, saturation and value scaled); other channel counts only scale by exposure."""
    n = len(x)
    dhue, dsat, dexp = (np.asarray(v, np.float32).reshape(n, 1, 1) for v in
                        (dhue, dsat, dexp))
    if np.all(dhue == 0) and np.all(dsat == 1) and np.all(dexp == 1):
        return x
    if x.shape[1] != 3:
        return np.clip(x * dexp[:, None], 0, 1)
    hue, sat, val = rgb_to_hsv(x)
    hue = hue + dhue
    hue = np.where(hue > 1, hue - 1, np.where(hue < 0, hue + 1, hue))
    return np.clip(hsv_to_rgb(hue, sat * dsat, val * dexp), 0, 1)


def rgb_to_hsv(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3, H, W) RGB -> hue in [0, 1), saturation, value; each (N, H, W)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    mx, mn = x.max(axis=1), x.min(axis=1)
    delta = mx - mn
    safe = np.where(delta > 0, delta, 1)
    h = np.where(r == mx, (g - b) / safe, np.where(g == mx, 2 + (b - r) / safe,
                                                     4 + (r - g) / safe))
    h = np.where(delta > 0, h, 0)     # Darknet divides 0 by 0 here for grey pixels
    h = np.where(h < 0, h + 6, h) / 6
    s = np.where(mx > 0, delta / np.where(mx > 0, mx, 1), 0)
    return h.astype(np.float32), s.astype(np.float32), mx.astype(np.float32)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    h6 = h * 6
    k = np.floor(h6)
    f = h6 - k
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    k = k.astype(np.int64) % 6
    sel = [k == i for i in range(5)]
    r = np.select(sel, [v, q, p, p, t], v)
    g = np.select(sel, [t, v, v, q, p], p)
    b = np.select(sel, [p, p, t, v, v], q)
    grey = s == 0
    rgb = np.stack([np.where(grey, v, r), np.where(grey, v, g), np.where(grey, v, b)], 1)
    return rgb.astype(np.float32)


# ---------------------------------------------------------------------------------------
# batches

def batches(data: Dataset, batch: int, *, classes: int, shape: tuple[int, int, int],
            seed: int | np.random.Generator = 0, augment: Augment | None = None,
            shuffle: bool = True, epochs: int | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x (n, C, H, W) float32, truth (n, classes) float32 one-hot).

    epochs=None: endless, every batch full (a batch may span two epochs), each epoch a
    new permutation. epochs=k: k passes, the last batch possibly smaller. The same seed
    gives the same batches, augmentation included.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    n = len(data)
    if n == 0:
        raise DataError(f"{data.source}: the dataset is empty")
    if data.labels.max() >= classes or data.labels.min() < 0:
        raise DataError(f"{data.source}: labels run {data.labels.min()}..{data.labels.max()}"
                        f" but the network has {classes} outputs")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    eye = np.eye(classes, dtype=np.float32)
    pending = np.empty(0, np.int64)
    done = 0
    while epochs is None or done < epochs:
        order = rng.permutation(n) if shuffle else np.arange(n)
        pending = np.concatenate([pending, order])
        done += 1
        while len(pending) >= batch:
            idx, pending = pending[:batch], pending[batch:]
            yield data.batch(idx, shape, augment, rng), eye[data.labels[idx]]
    if len(pending):
        yield data.batch(pending, shape, augment, rng), eye[data.labels[pending]]
