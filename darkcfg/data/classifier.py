"""Classifier datasets: `.data` files, image lists with labels from paths, IDX and .npz
arrays, Darknet's training augmentation, and a shuffled batch iterator.

The `.data` file (Darknet's src/option_list.c: read_data_cfg, read by src/classifier.c:
train_classifier) has a cfg's `key=value` syntax without sections.
Keys darkcfg reads:

    classes = 10                # number of classes (= the network's outputs)
    train   = train.list        # what to train on (see below)
    valid   = test.list         # what to validate on (optional)
    test    = test.list         # optional
    labels  = labels.txt        # one label per line: how truth is found in image paths
    names   = names.txt         # display names (default: the labels)
    backup  = backup/           # where checkpoints go
    top     = 1                 # top-k accuracy to report
    train_classes = 1,3,5       # only the images of these classes (indices; also
                                # valid_classes, test_classes); labels keep their index

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

Label matching fixes Darknet's substring trap (src/data.c: fill_truth takes any label
found by strstr in the path; README, "Deliberate differences from Darknet"): a label
matches an image when it equals a folder name of the path (folders holding the list file
itself do not count) or a whole word of the file name, words being separated by anything
but letters and digits (`123_cat.png` is a cat; `/data/train/` is not `rain`, `category`
is not `cat`). No match or several matches is an error naming the image and the
candidates.
"""
from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..cfg import _strip_comment
from ..errors import DataError
from ..fileio import read_text
from .arrays import ArrayDataset, fashion_mnist, load_idx, load_npz
from .augment import Augment, transform
from .images import load_image

# ---------------------------------------------------------------------------------------
# .data files

DATA_KEYS = ("classes", "train", "valid", "test", "labels", "names", "backup", "top",
             "train_labels", "valid_labels", "test_labels", "train_classes",
             "valid_classes", "test_classes")
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
    text = read_text(path, ".data")
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
        elif key.endswith("_classes"):
            if not re.fullmatch(r"\d+(\s*,\s*\d+)*", value):
                raise DataError(f"{path}:{lines[key]}: '{key}' must list class indices "
                                f"separated by commas (e.g. 1,3,5), got '{value}'")
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
    items = [s.strip() for s in read_text(path, what, where).splitlines()]
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

class ImageWarning(UserWarning):
    """A training image that cannot be read (damaged, over Pillow's pixel limit, gone):
    skipped, the next readable image of the list trains in its place."""


def first_readable(load: Callable[[int], np.ndarray], i: int, n: int, bad: set[int],
                   source: str) -> tuple[int, np.ndarray]:
    """(j, image j) for the first readable image from i on, in list order (wrapping). The
    choice depends only on the files, so a run stays reproducible from its seed; each
    unreadable image is warned about once (and remembered in `bad`)."""
    for k in range(n):
        j = (i + k) % n
        if j in bad:
            continue
        try:
            return j, load(j)
        except DataError as e:
            bad.add(j)
            warnings.warn(f"{e}; skipped: the next readable image of the list trains in its "
                          "place", ImageWarning, stacklevel=3)
    raise DataError(f"{source}: none of its {n} images can be read (see the warnings)")


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

    def train_batch(self, idx: np.ndarray, shape: tuple[int, int, int],
                    augment: Augment | None, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
        """`batch` for training: an unreadable image is skipped with an ImageWarning and
        the next readable one takes its place; returns (x, the indices used)."""
        bad = self.__dict__.setdefault("_bad", set())
        used, xs = [], []
        for i in idx:
            j, im = first_readable(lambda k: self.image(k, shape[0]), int(i), len(self),
                                   bad, self.source)
            used.append(j)
            xs.append(transform(im[None], shape, augment, rng))
        return np.concatenate(xs), np.array(used, np.int64)


Dataset = ArrayDataset | ImageListDataset


def read_image_list(list_file: str, labels: list[str], where: str = "") -> ImageListDataset:
    """A list of image paths (relative ones from the list's folder, else the current
    folder) with each image's label index."""
    text = read_text(list_file, "list", where)
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
    if cfg.path(f"{split}_classes") is not None:
        ds = only_classes(ds, cfg, f"{split}_classes")
    return ds


def only_classes(ds: Dataset, cfg: DataConfig, key: str) -> Dataset:
    """The images of `ds` whose class is one of those `key` lists (labels unchanged)."""
    import dataclasses
    keep = sorted({int(v) for v in cfg.values[key].split(",")})
    where = cfg.where(key)
    if keep[-1] >= cfg.classes:
        raise DataError(f"{where}: class {keep[-1]} is outside 0..{cfg.classes - 1} "
                        f"(classes={cfg.classes})")
    mask = np.isin(ds.labels, keep)
    if not mask.any():
        raise DataError(f"{where}: {ds.source} has no image of classes {_shown(keep)}")
    if isinstance(ds, ImageListDataset):     # its source stays the list file (file:line)
        pick = np.flatnonzero(mask)
        return dataclasses.replace(ds, paths=[ds.paths[i] for i in pick], labels=ds.labels[pick],
                                   lines=[ds.lines[i] for i in pick])
    return dataclasses.replace(ds, images=ds.images[mask], labels=ds.labels[mask],
                               source=f"{ds.source}, classes {','.join(map(str, keep))}")


def _sniff(path: str, where: str) -> str:
    """'list' for a text list of paths, else 'array' (IDX, gzip or npz)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise DataError(f"{where}: {path} does not exist") from None
    except OSError as e:
        raise DataError(f"{where}: cannot read {path}: {e.strerror}") from None
    if head[:2] == b"\x1f\x8b" or head[:2] == b"\0\0" or head[:2] == b"PK" \
            or path.endswith(".npz"):       # an empty or damaged .npz is no list either
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
# batches

def pk_indices(labels: np.ndarray, classes_per_batch: int, images_per_class: int,
               count: int, rng: np.random.Generator, source: str = "the dataset"
               ) -> np.ndarray:
    """Image indices of `count` mini-batches for metric learning ([triplet]), one after
    the other: each holds P = classes_per_batch classes, drawn without replacement from
    the classes that have images, with K = images_per_class images of each, consecutive
    (drawn without replacement; with replacement from a class holding fewer than K)."""
    present = np.unique(labels)
    if len(present) < classes_per_batch:
        raise DataError(f"{source}: classes_per_batch={classes_per_batch}, but the training "
                        f"images hold only {len(present)} classes ({_shown(present)})")
    members = {int(c): np.flatnonzero(labels == c) for c in present}
    out = []
    for _ in range(count):
        for c in rng.choice(present, classes_per_batch, replace=False):
            own = members[int(c)]
            out.append(rng.choice(own, images_per_class, replace=len(own) < images_per_class))
    return np.concatenate(out).astype(np.int64)


def _shown(values, most: int = 12) -> str:
    text = ", ".join(str(int(v)) for v in values[:most])
    return text + (", ..." if len(values) > most else "")


def check_labels(data: Dataset, classes: int) -> None:
    """Refuse an empty dataset, and labels that are not outputs of the network."""
    if len(data) == 0:
        raise DataError(f"{data.source}: the dataset is empty")
    if data.labels.max() >= classes or data.labels.min() < 0:
        raise DataError(f"{data.source}: labels run {data.labels.min()}..{data.labels.max()}"
                        f" but the network has {classes} outputs")


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
    check_labels(data, classes)
    n = len(data)
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
