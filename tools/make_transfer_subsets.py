"""The Fashion-MNIST subsets of the README's transfer-learning example.

    python tools/make_transfer_subsets.py OUT [--seed 0] [--per-class 50]
        [--pretrain-classes 1,3,5,7,8,9] [--finetune-classes 0,2,4,6]
        [--detection data/fashion_det]

Pre-training sees six classes, fine-tuning four others with few images (the defaults;
cfg/fashion_backbone.cfg has 6 outputs and cfg/transfer_*.cfg 4, so other class lists
keep those counts):

    pretrain_train.npz   every train-split image of classes 1,3,5,7,8,9 (36,000),
                         labelled 0..5 in that order
    pretrain_test.npz    the test-split images of those classes (6,000)
    finetune_train.npz   --per-class train-split images of each of classes 0,2,4,6 (200),
                         drawn with --seed, labelled 0..3
    finetune_test.npz    every test-split image of classes 0,2,4,6 (4,000)
    pretrain.data, finetune.data, *.names   for `darkcfg train` / `valid`, checkpoints in
                         OUT/backup/

With --detection DIR (the output of tools/make_detection_dataset.py) it also writes
yolo_scratch.data and yolo_pretrained.data: that dataset with a backup folder of its own
for each run (OUT/backup_scratch/, OUT/backup_pretrained/), so the two detector runs keep
apart checkpoints of the same cfg.

The README's controls change the classes: the reversed split (pre-training on classes
that include the four tops, fine-tuning on others) and the upper bound (pre-training on
the fine-tuning classes themselves). When the two lists share a class, pre-training
leaves out the images drawn for fine-tuning, so the small set stays unseen.

The same --seed gives the same files. The .npz files hold uint8 images (N, 28, 28) as
`x` and labels as `y`, the array fast path of darkcfg's .data reader.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from darkcfg.data.arrays import FASHION_MNIST_NAMES, fashion_mnist
from darkcfg.errors import DarkcfgError

PRETRAIN = (1, 3, 5, 7, 8, 9)
FINETUNE = (0, 2, 4, 6)


def pick(y: np.ndarray, classes: tuple[int, ...], per_class: int | None,
         rng: np.random.Generator, leave_out: np.ndarray | None = None) -> np.ndarray:
    """Indices of the images of `classes` (all, or per_class of each drawn by rng), in
    their original order, without those in leave_out."""
    keep = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        if leave_out is not None:
            idx = np.setdiff1d(idx, leave_out)
        if per_class is not None:
            if per_class > len(idx):
                raise DarkcfgError(f"class {c} has {len(idx)} images; --per-class "
                                   f"{per_class} asks for more")
            idx = rng.choice(idx, per_class, replace=False)
        keep.append(idx)
    return np.sort(np.concatenate(keep))


def relabelled(x: np.ndarray, y: np.ndarray, order: np.ndarray,
               classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The images at `order`, labelled by their class's position in `classes`."""
    relabel = np.full(10, -1, np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    return x[order], relabel[y[order]]


def subset(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...], per_class: int | None,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images of `classes` (all, or per_class of each drawn by rng), in their original
    order, labelled by position in `classes`."""
    return relabelled(x, y, pick(y, classes, per_class, rng), classes)


def class_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated Fashion-MNIST class numbers 0-9, each once."""
    try:
        classes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of class numbers 0-9") from None
    if not all(0 <= c <= 9 for c in classes) or len(set(classes)) != len(classes):
        raise argparse.ArgumentTypeError(
            f"'{text}': give each Fashion-MNIST class number 0-9 at most once")
    return classes


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, x=x.astype(np.uint8), y=y.astype(np.int64))


def write_data(out: Path, name: str, classes: tuple[int, ...]) -> None:
    names = [FASHION_MNIST_NAMES[c] for c in classes]
    (out / f"{name}.names").write_text("\n".join(names) + "\n")
    (out / f"{name}.data").write_text(
        f"# Fashion-MNIST classes {','.join(map(str, classes))} "
        f"(tools/make_transfer_subsets.py)\n"
        f"classes = {len(classes)}\ntrain = {name}_train.npz\nvalid = {name}_test.npz\n"
        f"names = {name}.names\nbackup = backup/\ntop = 1\n")


def write_detection_data(out: Path, det: Path) -> None:
    det = det.resolve()
    for run in ("scratch", "pretrained"):
        (out / f"yolo_{run}.data").write_text(
            f"# {det} with checkpoints of its own (tools/make_transfer_subsets.py)\n"
            f"classes = 10\ntrain = {det / 'train.txt'}\nvalid = {det / 'valid.txt'}\n"
            f"names = {det / 'fashion.names'}\nbackup = backup_{run}/\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write into (made if missing)")
    p.add_argument("--seed", type=int, default=0, help="which fine-tuning images (0)")
    p.add_argument("--per-class", type=int, default=50,
                   help="fine-tuning training images per class (50)")
    p.add_argument("--pretrain-classes", type=class_list, default=PRETRAIN,
                   metavar="LIST", help="pre-training classes, labelled 0.. in this "
                   "order (1,3,5,7,8,9)")
    p.add_argument("--finetune-classes", type=class_list, default=FINETUNE,
                   metavar="LIST", help="fine-tuning classes, labelled 0.. in this "
                   "order (0,2,4,6); those also in --pretrain-classes lose the drawn "
                   "fine-tuning images from pre-training")
    p.add_argument("--detection", type=Path,
                   help="a tools/make_detection_dataset.py folder: also write "
                   "yolo_scratch.data and yolo_pretrained.data for it")
    args = p.parse_args(argv)
    try:
        train, test = fashion_mnist("train"), fashion_mnist("test")
    except DarkcfgError as e:
        print(f"make_transfer_subsets: {e}", file=sys.stderr)
        return 2
    if args.detection is not None and not (args.detection / "train.txt").exists():
        print(f"make_transfer_subsets: {args.detection}/train.txt does not exist (make it "
              "with tools/make_detection_dataset.py)", file=sys.stderr)
        return 2
    out = Path(args.out)
    rng = np.random.default_rng(args.seed)
    pre, fine = args.pretrain_classes, args.finetune_classes
    try:
        # the only draw from rng (pre-training takes every image), so a seed makes the
        # files it made before the class options existed
        small = pick(train.labels, fine, args.per_class, rng)
    except DarkcfgError as e:
        print(f"make_transfer_subsets: {e}", file=sys.stderr)
        return 2
    parts = {
        "pretrain_train": relabelled(train.images, train.labels,
                                     pick(train.labels, pre, None, rng, small), pre),
        "pretrain_test": subset(test.images, test.labels, pre, None, rng),
        "finetune_train": relabelled(train.images, train.labels, small, fine),
        "finetune_test": subset(test.images, test.labels, fine, None, rng),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in parts.items():
        write_npz(out / f"{name}.npz", x.reshape(len(x), 28, 28), y)
        print(f"{out / name}.npz: {len(x)} images, {len(set(y.tolist()))} classes")
    write_data(out, "pretrain", pre)
    write_data(out, "finetune", fine)
    if args.detection is not None:
        write_detection_data(out, args.detection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
