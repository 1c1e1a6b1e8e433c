"""`darkcfg train` for detectors: a cfg ending in [yolo] or [region] trained on a
detection `.data` file (YOLO-format labels, detdata.py).

The loop is the classifier's (trainer.py): the same per-iteration seeding (resume equals an
uninterrupted run), checkpoints with Darknet's names and a momentum sidecar, progress line,
chart, Ctrl-C save and NaN stop. What differs: each image comes with its box truth
(Darknet's layout, up to the head's `max` boxes), the augmentation is box-aware (the head's
`jitter`, flip, exposure/saturation/hue), and the progress line adds each head's mean IoU
and recall at the truths it trained on. Validation, when the `.data` file has `valid`, is
mAP@0.5 on it (darkcfg.evaluate).
"""
from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np

from .errors import DarkcfgError
from .network import Network
from .trainer import (
    History,
    Progress,
    TrainOptions,
    batch_indices,
    first_non_finite,
    restore_momentum,
    save_checkpoint,
)

DETECTION_HEADS = ("yolo", "region")


def is_detector(cfg_file: str, *, strict: bool = True) -> bool:
    """Whether the cfg's last layer is a detection head (cheap: no Numba, no weights)."""
    from .graph import load_graph
    return load_graph(cfg_file, strict=strict).layers[-1].type in DETECTION_HEADS


def head_jitter(layer) -> float:
    """The head's `jitter` (Darknet's default .2): read here, the layer does not model it."""
    from .options import Opt, parse_value
    if "jitter" not in layer.section.entries:
        return 0.2
    return float(parse_value(layer.section, "jitter", Opt("float", 0.2, min=0)))


def head_summary(net: Network) -> str:
    """'IoU .. R .. ' over the heads that saw truths in the last pass."""
    heads = [lay for lay in net.layers if lay.type in DETECTION_HEADS and
             getattr(lay, "stats", None) and lay.stats["count"]]
    if not heads:
        return ""
    count = sum(h.stats["count"] for h in heads)
    iou = sum(h.stats["iou"] * h.stats["count"] for h in heads) / count
    rec = sum(h.stats["recall50"] * h.stats["count"] for h in heads) / count
    return f"  IoU {iou:.3f}  R@.5 {rec:.3f}"


def valid_map(net: Network, paths: list[str], classes: int) -> float | None:
    """mAP@0.5 of the network on the validation images (None when darkcfg.evaluate is
    not available)."""
    try:
        from .evaluate import evaluate_network
    except ImportError:
        return None
    return float(evaluate_network(net, paths, classes).map50)


def train_detector(data_file: str, cfg_file: str, weights: str | None, opts: TrainOptions,
                   *, strict: bool = True, log=print) -> Path:
    """Train a detector; returns the path of the final weights."""
    from .chart import draw_chart
    from .data import read_data_config
    from .detdata import DetAugment, open_detection_dataset
    from .graph import load_graph
    from .schedule import check_schedule

    data_cfg = read_data_config(data_file, strict=strict)
    graph = load_graph(cfg_file, strict=strict)
    head = graph.layers[-1]
    if head.type not in DETECTION_HEADS:
        raise DarkcfgError(f"{cfg_file}: the last layer is [{head.type}], not [yolo] or "
                           "[region]: train it as a classifier")
    net = Network(graph)
    netopts = graph.net.opts
    check_schedule(netopts, graph.net.section)
    for lay in graph.layers:
        if lay.type in DETECTION_HEADS and lay.classes != data_cfg.classes:
            raise DarkcfgError(f"{data_file}: classes={data_cfg.classes} but layer "
                               f"{lay.index} [{lay.type}] of {cfg_file} (line "
                               f"{lay.section.line}) has classes={lay.classes}")
        if lay.type == "yolo":
            lay.check_trainable()
    train_set = open_detection_dataset(data_cfg, "train")
    if train_set is None:
        raise DarkcfgError(f"{data_file}: no 'train' key: nothing to train on")
    valid_set = open_detection_dataset(data_cfg, "valid")
    most = graph.truths // 5
    base = Path(cfg_file).stem
    backup = Path(data_cfg.backup or "backup")
    backup.mkdir(parents=True, exist_ok=True)
    if weights:
        net.load_weights(weights)
        resumed = restore_momentum(net, Path(weights))
        log(f"resuming from {weights} at iteration {net.iteration}" + (
            "" if resumed else "; momentum restarts from zero (no matching .state file "
            "beside it), as in Darknet"))
    else:
        net.init_weights(opts.seed)
    batch = graph.net.batch * netopts["subdivisions"]
    max_batches = opts.max_batches or netopts["max_batches"]
    if not max_batches:
        raise DarkcfgError(f"{cfg_file}: max_batches is 0; set it in [net] (or pass "
                           "--max-batches): darkcfg does not train forever")
    augment = DetAugment.from_net(netopts, head_jitter(head))
    n = len(train_set)
    boxes = sum(len(b) for b in train_set.boxes)
    valid_every = opts.valid_every or max(1, 5 * n // batch)
    hist = History()
    progress = Progress(max_batches, opts.quiet)
    chart = backup / f"{base}_chart.png"
    avg = None
    t_start, seen_start = time.monotonic(), net.seen
    log(f"training {cfg_file} on {n} images with {boxes} boxes ({train_set.source}), batch "
        f"{batch}, {max_batches} iterations, jitter {augment.jitter:g}; checkpoints in "
        f"{backup}/")

    def checkpoint(name: str) -> Path:
        path = backup / name
        save_checkpoint(net, path)
        return path

    last_good = None
    interrupted = []
    old = signal.signal(signal.SIGINT, lambda *a: interrupted.append(1))
    try:
        while net.iteration < max_batches:
            i = net.iteration
            rng = np.random.default_rng([opts.seed, i, 1])
            net.rng = np.random.default_rng([opts.seed, i, 2])
            idx = batch_indices(n, i, batch, opts.seed)
            x, truth = train_set.batch(idx, net.input_shape, augment, rng, most)
            loss = net.train_step(x, truth)
            if not math.isfinite(loss):
                progress.done()
                where = first_non_finite(net)
                keep = f"; the last good checkpoint is {last_good}" if last_good else ""
                raise DarkcfgError(f"the loss became {loss} at iteration {i + 1}: {where} "
                                   f"went non-finite first{keep}. Try a lower learning_rate"
                                   " or a longer burn_in.")
            avg = loss if avg is None else 0.9 * avg + 0.1 * loss
            it = net.iteration
            hist.iterations.append(it)
            hist.losses.append(loss)
            hist.avg.append(avg)
            elapsed = time.monotonic() - t_start
            ips = (net.seen - seen_start) / max(elapsed, 1e-9)
            eta = (max_batches - it) * batch / max(ips, 1e-9)
            progress.show(f"{it}/{max_batches} epoch {net.seen / n:.2f}  loss {loss:.3f}  "
                          f"avg {avg:.3f}{head_summary(net)}  rate {net.last_rate:.6f}  "
                          f"{ips:.1f} img/s  ETA {int(eta) // 60}:{int(eta) % 60:02d}",
                          force=it == 1)
            if valid_set is not None and (it % valid_every == 0 or it == max_batches):
                m = valid_map(net, valid_set.paths, data_cfg.classes)
                if m is not None:
                    hist.accuracy.append((it, m))
                    progress.show(f"{it}/{max_batches} validation mAP@0.5 {m:.4f}",
                                  force=True)
            if it % opts.backup_every == 0:
                last_good = checkpoint(f"{base}.backup")
            if it % opts.save_every == 0:
                last_good = checkpoint(f"{base}_{it}.weights")
            if it % opts.chart_every == 0 or it == max_batches:
                draw_chart(chart, hist.iterations, hist.losses, hist.avg,
                           accuracy=hist.accuracy,
                           title=f"{base}  (batch {batch})", accuracy_label="mAP@0.5")
            if interrupted:
                progress.done()
                path = checkpoint(f"{base}.backup")
                log(f"interrupted at iteration {it}: saved {path}; resume with "
                    f"darkcfg train {data_file} {cfg_file} {path}")
                raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, old)
    progress.done()
    final = checkpoint(f"{base}_final.weights")
    elapsed = time.monotonic() - t_start
    done = f"done: {net.iteration} iterations, {net.seen - seen_start} images in " \
        f"{elapsed:.0f} s ({(net.seen - seen_start) / max(elapsed, 1e-9):.1f} img/s)"
    if hist.accuracy:
        done += f"; mAP@0.5 {hist.accuracy[-1][1]:.4f} on {len(valid_set)} images"
    log(f"{done}; weights {final}; chart {chart}")
    return final
