"""`darkcfg train` for detectors: a cfg ending in [yolo], [region] or [detection] trained on a
detection `.data` file (YOLO-format labels, data/detection.py).

The loop is the classifier's (train/loop.py): the same per-iteration seeding (resume equals an
uninterrupted run), checkpoints with Darknet's names and a momentum sidecar, progress line,
chart, Ctrl-C save and NaN stop. What differs: each image comes with its box truth
(Darknet's layout, up to the head's `max` boxes), the augmentation is box-aware (the head's
`jitter`, flip, exposure/saturation/hue), and the progress line adds each head's mean IoU
and recall at the truths it trained on. Validation, when the `.data` file has `valid`, is
mAP@0.5 on it (darkcfg.detection.evaluate).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data.augment import rand_scale
from ..errors import DarkcfgError
from ..network import Network
from .loop import (
    IterationImages,
    Log,
    Progress,
    Task,
    TrainOptions,
    batch_indices,
    max_batches_of,
    prepare_run,
    run_training,
    silent,
)


def is_detector(cfg_file: str, *, strict: bool = True) -> bool:
    """Whether the cfg has a detection head (cheap: no Numba, no weights). A head need not
    be the last layer (yolov4-tiny_contrastive ends in [contrastive] after its [yolo]s)."""
    from ..graph import load_graph
    return any(lay.is_head for lay in load_graph(cfg_file, strict=strict).layers)


def head_summary(net: Network) -> str:
    """'IoU .. R .. ' over the heads that saw truths in the last pass."""
    heads = [lay for lay in net.layers if lay.is_head and
             getattr(lay, "stats", None) and lay.stats["count"]]
    if not heads:
        return ""
    count = sum(h.stats["count"] for h in heads)
    iou = sum(h.stats["iou"] * h.stats["count"] for h in heads) / count
    rec = sum(h.stats["recall50"] * h.stats["count"] for h in heads) / count
    return f"  IoU {iou:.3f}  R@.5 {rec:.3f}"


def valid_map(net: Network, paths: list[str], classes: int) -> float:
    """mAP@0.5 of the network on the validation images."""
    from ..detection.evaluate import evaluate_network
    return float(evaluate_network(net, paths, classes).map50)


# ---------------------------------------------------------------------------------------
# multi-scale training (AlexeyAB's src/detector.c: train_detector, `random` of the last
# [yolo]): every 10 iterations the network is resized, sharing its parameters

def yolo_random(graph) -> float:
    """The `random` of the last [yolo] (AB reads it from the last detection layer; a
    float: 1 means a factor of 1.4, another value is the factor itself); 0 if absent."""
    heads = [lay for lay in graph.layers if lay.type == "yolo"]
    if not heads:
        return 0.0
    entry = heads[-1].section.entries.get("random")
    if entry is None:
        return 0.0
    try:
        value = float(entry.value)
    except ValueError:
        raise DarkcfgError(f"{entry_where(heads[-1], entry)}: random={entry.value} is not "
                           "a number (0: one size; 1: multi-scale training)") from None
    if not value >= 0:
        raise DarkcfgError(f"{entry_where(heads[-1], entry)}: random={entry.value} must be "
                           ">= 0")
    return value


def entry_where(layer, entry) -> str:
    return f"{layer.section.file} line {entry.line} [{layer.section.written}]"


def multiscale_size(iteration: int, init_w: int, init_h: int, random: float, step: int,
                    max_batches: int, seed: int) -> tuple[int, int]:
    """The input size of `iteration` under AB's rule, drawn once per block of 10
    iterations from a generator seeded with (seed, block), so a resumed run trains at the
    sizes an uninterrupted one would:

        coef = 1.4 if random == 1 else random;   r = rand_scale(coef)   (u or 1/u)
        size = round(r * init / step + 1) * step  (init if r < 1 and either side grows)
        the largest, round(coef * init / step + 1) * step, in the first block and in the
        last 100 iterations; never below step.
    """
    block = iteration // 10
    coef = 1.4 if random == 1 else random
    r = float(rand_scale(np.random.default_rng([seed, block, 3]), coef, 1)[0])

    def dim(scale: float, init: int) -> int:
        return math.floor(scale * init / step + 1 + 0.5) * step    # C's roundl

    w, h = dim(r, init_w), dim(r, init_h)
    if r < 1 and (w > init_w or h > init_h):
        w, h = init_w, init_h
    if block == 0 or block * 10 > max_batches - 100:
        w, h = dim(coef, init_w), dim(coef, init_h)
    return max(w, step), max(h, step)


def train_detector(data_file: str, cfg_file: str, weights: str | None, opts: TrainOptions,
                   *, strict: bool = True, log: Log = silent,
                   progress: Progress | None = None) -> Path:
    """Train a detector; returns the path of the final weights. `log` and `progress`: see
    loop.run_training."""
    from ..data.classifier import read_data_config
    from ..data.detection import DetAugment, open_detection_dataset
    from ..graph import load_graph
    from ..layers._detection_head import widen_truth
    from ..netcfg import not_computed
    from ..schedule import check_schedule

    opts.check()
    data_cfg = read_data_config(data_file, strict=strict)
    graph = load_graph(cfg_file, strict=strict)
    found = [lay for lay in graph.layers if lay.is_head]
    if not found:
        raise DarkcfgError(f"{cfg_file}: no [yolo], [region] or [detection] layer: train "
                           "it as a classifier")
    head = found[-1]
    netopts = graph.net.opts
    dialect = graph.net.dialect
    augment = DetAugment.from_net(netopts, head.opts["jitter"], dialect)
    for where in not_computed(graph.net.section):
        log(f"warning: {where} is not computed by darkcfg; training goes on without it")
    net = Network(graph)
    check_schedule(netopts, graph.net.section)
    for lay in graph.layers:
        if lay.is_head and lay.classes != data_cfg.classes:
            raise DarkcfgError(f"{data_file}: classes={data_cfg.classes} but layer "
                               f"{lay.index} [{lay.type}] of {cfg_file} (line "
                               f"{lay.section.line}) has classes={lay.classes}")
        if hasattr(lay, "check_trainable"):     # [yolo]; [Gaussian_yolo] refuses
            lay.check_trainable()
        if lay.type in ("rnn", "gru", "lstm", "crnn"):
            # AlexeyAB's track=1 trains on video sequences (time_steps frames a row)
            raise DarkcfgError(f"{cfg_file}: layer {lay.index} [{lay.type}] (line "
                               f"{lay.section.line}): darkcfg does not train detectors on "
                               "sequences of frames; recurrent layers train with "
                               "`darkcfg rnn train` (text)")
    train_set = open_detection_dataset(data_cfg, "train")
    if train_set is None:
        raise DarkcfgError(f"{data_file}: no 'train' key: nothing to train on")
    valid_set = open_detection_dataset(data_cfg, "valid")
    train_set.skip_unreadable = True     # skipped with a warning, not a crash mid-run
    cell_truth = getattr(head, "cell_truth", None)
    most = head.max_boxes if cell_truth else graph.truths // getattr(head, "truth_size", 5)
    batch = graph.net.batch * netopts["subdivisions"]
    max_batches = max_batches_of(cfg_file, netopts, opts)
    base = Path(cfg_file).stem
    start = prepare_run(net, data_cfg, weights, opts, log, base=base,
                        max_batches=max_batches)
    random = yolo_random(graph) if dialect == "alexeyab" else 0.0
    _, init_h, init_w = net.input_shape
    n = len(train_set)
    boxes = sum(len(b) for b in train_set.boxes)

    mini = graph.net.batch
    images = IterationImages(lambda i: batch_indices(n, i, batch, opts.seed))

    def sample(i: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # mini-batch k of iteration i (the size is the iteration's: resize does nothing
        # after the first)
        if random:
            net.resize(*multiscale_size(i, init_w, init_h, random, netopts["resize_step"],
                                        max_batches, opts.seed))
        idx = images.part(i, k, mini)
        x, truth = train_set.batch(idx, net.input_shape, augment, rng, most)
        if cell_truth is not None:          # YOLOv1's [detection]: Darknet's per-cell truth
            return x, cell_truth(truth, rng)
        return x, widen_truth(truth, getattr(head, "truth_size", 5))

    validate = None
    if valid_set is not None:
        def validate() -> float:
            net.resize(init_w, init_h)      # AB: the mAP at the cfg's size
            return valid_map(net, valid_set.paths, data_cfg.classes)
    task = Task(sample, n, opts.valid_every or max(1, 5 * n // batch), validate, "mAP@0.5",
                status=lambda: head_summary(net))
    log(f"training {cfg_file} on {n} images with {boxes} boxes ({train_set.source}), batch "
        f"{batch}, {max_batches} iterations, jitter {augment.jitter:g}; checkpoints in "
        f"{start.backup}/")
    if random:
        log(f"multi-scale training: the input size changes every 10 iterations (last "
            f"[yolo] random={random:g}, resize_step={netopts['resize_step']})")
    try:
        return run_training(net, task, opts, base=base, backup=start.backup,
                            max_batches=max_batches, history=start.history,
                            resume_hint=f"darkcfg train {data_file} {cfg_file}", log=log,
                            progress=progress)
    finally:
        net.resize(init_w, init_h)
