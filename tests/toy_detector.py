"""A toy detector for the training tests: a 32 x 32 grey tiny YOLO (two anchors, two
classes) and images of squares (class 0) and crosses (class 1) with their label files."""
from __future__ import annotations

import numpy as np
from PIL import Image

from . import helpers

CFG = """[net]
batch=8
subdivisions=1
width=32
height=32
channels=1
learning_rate=0.01
momentum=0.9
decay=0.0005
burn_in=5
policy=constant
max_batches={max_batches}
flip=1
exposure=1.2

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
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
anchors=6,6, 12,12
num=2
classes=2
jitter=.1
{extra}
"""


def make_data(tmp_path, n=24, classes=2):
    """32x32 grey images with 1-2 squares (class 0) or crosses (class 1)."""
    rng = np.random.default_rng(0)
    lines = []
    for k in range(n):
        pix = rng.uniform(0, 40, (32, 32))
        labels = []
        for _ in range(rng.integers(1, 3)):
            s = int(rng.integers(6, 13))
            x0, y0 = (int(v) for v in rng.integers(0, 32 - s, 2))
            c = int(rng.integers(0, 2))
            if c == 0:
                pix[y0:y0 + s, x0:x0 + s] = 230
            else:
                pix[y0 + s // 2 - 1:y0 + s // 2 + 1, x0:x0 + s] = 230
                pix[y0:y0 + s, x0 + s // 2 - 1:x0 + s // 2 + 1] = 230
            labels.append(f"{c} {(x0 + s / 2) / 32} {(y0 + s / 2) / 32} {s / 32} {s / 32}")
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        Image.fromarray(pix.astype(np.uint8)).save(tmp_path / "images" / f"{k}.png")
        (tmp_path / "labels" / f"{k}.txt").write_text("\n".join(labels) + "\n")
        lines.append(f"images/{k}.png")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "d.data").write_text(f"classes={classes}\ntrain=train.txt\n"
                                     "backup=backup/\n")
    return tmp_path / "d.data"


def write_cfg(tmp_path, max_batches=10, extra="", name="tiny_yolo.cfg"):
    return helpers.write_cfg(tmp_path, CFG.format(max_batches=max_batches, extra=extra), name)
