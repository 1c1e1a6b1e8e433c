"""Export an IDX dataset (Fashion-MNIST by default) into Darknet's classifier layout.

    python tools/export_idx.py OUT [--source DIR] [--limit N] [--labels a,b,...]

writes, so that Darknet and darkcfg can be given the very same data:

    OUT/train/<index>_<label>.png   OUT/test/<index>_<label>.png
    OUT/labels.txt  OUT/names.txt  OUT/train.list  OUT/test.list  OUT/<name>.data  OUT/backup/

DIR holds the MNIST-style files train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]; without --source,
Fashion-MNIST is found as darkcfg finds it (DARKCFG_FASHION_MNIST or Debian's package).
List and .data paths are absolute (Darknet reads them relative to where it runs), or
relative to OUT with --relative. Darknet finds truth by plain substring search in the
whole path, so the labels avoid being substrings of each other, and the exported paths
are checked against that rule.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from darkcfg.data.arrays import FASHION_MNIST_NAMES, fashion_mnist_dir, find_idx_file, read_idx
from darkcfg.errors import DarkcfgError, DataError

# Fashion-MNIST labels chosen so none is a substring of another ('shirt' vs 't-shirt').
FASHION_LABELS = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "boot"]
SPLITS = (("train", "train"), ("test", "t10k"))


def _source_files(folder: Path, prefix: str) -> tuple[Path, Path]:
    found = [find_idx_file(folder, f"{prefix}-{kind}-ubyte") for kind in
             ("images-idx3", "labels-idx1")]
    if None in found:
        raise DataError(f"{folder}: needs {prefix}-images-idx3-ubyte[.gz] and "
                        f"{prefix}-labels-idx1-ubyte[.gz]")
    return found[0], found[1]  # type: ignore[return-value]


def darknet_matches(path: str, labels: list[str]) -> int:
    """How many labels Darknet would find in `path` (src/data.c: fill_truth's strstr)."""
    return sum(lab in path for lab in labels)


def export_split(images: Path, label_file: Path, out: Path, split: str,
                 labels: list[str], limit: int | None, relative: bool) -> list[str]:
    x, y = read_idx(images), read_idx(label_file)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{images}: expected uint8 images (N, H, W), got {x.dtype} "
                        f"{x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{label_file}: expected {len(x)} labels, got shape {y.shape}")
    if len(y) and y.max() >= len(labels):
        raise DataError(f"{label_file}: label {y.max()} but only {len(labels)} label names "
                        "(give --labels)")
    n = len(x) if limit is None else min(limit, len(x))
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    digits = len(str(max(n - 1, 0)))
    every = max(1, n // 10)
    lines = []
    for i in range(n):
        name = f"{i:0{digits}d}_{labels[int(y[i])]}.png"
        Image.fromarray(x[i], "L").save(folder / name)
        lines.append(f"{split}/{name}" if relative else str((folder / name).resolve()))
        if (i + 1) % every == 0 or i + 1 == n:
            print(f"{split}: {i + 1}/{n} images", flush=True)
    (out / f"{split}.list").write_text("\n".join(lines) + "\n")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--source", type=Path, help="folder with the four MNIST-style IDX files "
                   "(default: Fashion-MNIST)")
    p.add_argument("--limit", type=int, help="export only the first N images of each split")
    p.add_argument("--labels", help="comma-separated label per class (default: Fashion-"
                   "MNIST's when exporting it, else class0,class1,...)")
    p.add_argument("--name", default="fashion", help="name of the .data file")
    p.add_argument("--relative", action="store_true",
                   help="write paths relative to OUT instead of absolute ones")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    try:
        source = args.source or fashion_mnist_dir()
        files = {split: _source_files(source, prefix) for split, prefix in SPLITS}
        if args.labels:
            labels = [s.strip() for s in args.labels.split(",")]
        elif args.source is None:
            labels = FASHION_LABELS
        else:
            classes = int(read_idx(files["train"][1]).max()) + 1
            labels = [f"class{k}" for k in range(classes)]
        names = FASHION_MNIST_NAMES if args.source is None and not args.labels else labels
        if len(set(labels)) != len(labels) or not all(labels):
            raise DarkcfgError(f"labels must be distinct and non-empty: {labels}")
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "backup").mkdir(exist_ok=True)
        (out / "labels.txt").write_text("\n".join(labels) + "\n")
        (out / "names.txt").write_text("\n".join(names) + "\n")
        written = {split: export_split(*files[split], out, split, labels, args.limit,
                                       args.relative) for split, _ in SPLITS}
    except DarkcfgError as e:
        print(f"export_idx: error: {e}", file=sys.stderr)
        return 2
    ref = (lambda s: s) if args.relative else (lambda s: str((out / s).resolve()))
    data = [f"# {len(labels)}-class data exported by tools/export_idx.py from {source}",
            f"classes = {len(labels)}", f"train = {ref('train.list')}",
            f"valid = {ref('test.list')}", f"labels = {ref('labels.txt')}",
            f"names = {ref('names.txt')}", f"backup = {ref('backup')}{os.sep}", "top = 1"]
    (out / f"{args.name}.data").write_text("\n".join(data) + "\n")
    bad = [p for lines in written.values() for p in lines if darknet_matches(p, labels) != 1]
    if bad:
        print(f"warning: {len(bad)} paths would match zero or several labels under "
              f"Darknet's substring rule (e.g. {bad[0]}); export to a folder whose path "
              "contains no label", file=sys.stderr)
    print(f"wrote {out / (args.name + '.data')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
