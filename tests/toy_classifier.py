"""A toy classifier for the training tests: an 8 x 8 grey cfg (conv+BN, maxpool, dropout,
connected, softmax) and three classes of images (a bright row, column or diagonal)."""
from __future__ import annotations

import numpy as np

from . import helpers

CFG = """[net]
batch=8
subdivisions=2
width=8
height=8
channels=1
learning_rate=0.05
momentum=0.9
decay=0.0005
policy=steps
steps=6
scales=0.5
burn_in=3
max_batches={max_batches}
min_crop=8
max_crop=10
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[dropout]
probability=0.2
[connected]
output=3
activation=linear
[softmax]
"""


def make_data(tmp_path, n=40):
    """Three classes of 8x8 images: a bright row, column or diagonal, plus noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 0.3, (n, 8, 8))
    for i, c in enumerate(y):
        if c == 0:
            x[i, rng.integers(0, 8)] += 0.7
        elif c == 1:
            x[i, :, rng.integers(0, 8)] += 0.7
        else:
            x[i][np.eye(8, dtype=bool)] += 0.7
    np.savez(tmp_path / "toy.npz", x=(np.clip(x, 0, 1) * 255).astype(np.uint8), y=y)
    (tmp_path / "toy.data").write_text("classes=3\ntrain=toy.npz\nvalid=toy.npz\n"
                                       "backup=backup/\n")
    return tmp_path / "toy.data"


def write_cfg(tmp_path, max_batches, name="toy.cfg"):
    return helpers.write_cfg(tmp_path, CFG.format(max_batches=max_batches), name)
