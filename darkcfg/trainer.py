"""`darkcfg train`: Darknet's classifier training loop with checkpoints, resume, a progress
line and a loss chart.

Every random draw of iteration i (which images, their augmentation, dropout masks) comes
from a generator seeded with (seed, i), so training resumed from a checkpoint continues
exactly as an uninterrupted run would. Darknet's .weights hold no momentum buffers; darkcfg
writes them beside each checkpoint (`X.weights.state`) and uses them on resume.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DarkcfgError
from .network import Network


@dataclass
class TrainOptions:
    seed: int = 0
    max_batches: int | None = None     # default: the cfg's max_batches
    save_every: int = 1000             # <base>_<N>.weights
    backup_every: int = 100            # <base>.backup
    valid_every: int = 0               # 0: once per epoch
    chart_every: int = 20
    quiet: bool = False


@dataclass
class History:
    iterations: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    avg: list[float] = field(default_factory=list)
    accuracy: list[tuple[int, float]] = field(default_factory=list)


def batch_indices(n: int, iteration: int, batch: int, seed: int) -> np.ndarray:
    """Images of iteration `iteration`: the stream of per-epoch permutations, cut into
    consecutive batches (a batch may span two epochs)."""
    start = iteration * batch
    out = []
    while len(out) < batch:
        epoch, pos = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[pos:pos + batch - len(out)].tolist())
    return np.array(out, dtype=np.int64)


def save_checkpoint(net: Network, path: Path) -> None:
    """The .weights file (Darknet's format) and the momentum buffers beside it."""
    net.save_weights(path)
    state = {f"{lay.index}.{k}": v for lay in net.layers for k, v in lay.updates.items()}
    state["seen"] = np.array(net.seen)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **state)
    os.replace(tmp, f"{path}.state")


def restore_momentum(net: Network, weights: Path) -> bool:
    state_path = Path(f"{weights}.state")
    if not state_path.exists():
        return False
    with np.load(state_path) as state:
        if int(state["seen"]) != net.seen:
            return False
        for lay in net.layers:
            for k, v in lay.updates.items():
                key = f"{lay.index}.{k}"
                if key in state and state[key].shape == v.shape:
                    v[...] = state[key]
    return True


def first_non_finite(net: Network) -> str:
    """Which layer first went non-finite: outputs in forward order, then parameters."""
    for lay in net.layers:
        out = net.outputs[lay.index]
        if out is not None and not np.all(np.isfinite(out)):
            return f"layer {lay.index} [{lay.type}] (cfg line {lay.section.line}) output"
    for lay in net.layers:
        for k, v in lay.params.items():
            if not np.all(np.isfinite(v)):
                return f"layer {lay.index} [{lay.type}] (cfg line {lay.section.line}) {k}"
    return "the loss itself (every layer's output is finite)"


class Progress:
    """One status line, redrawn in place on a terminal, printed every few seconds
    otherwise."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet = total, quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            sys.stderr.write("\r" + text[:150].ljust(150))
            sys.stderr.flush()
        elif force or now - self.last >= 10:
            print(text, file=sys.stderr, flush=True)
            self.last = now

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def accuracy(net: Network, data, classes: int, top: int, batch: int = 100) -> tuple[float, float]:
    """(top-1, top-k) accuracy of the network on a dataset, at inference."""
    from .data import batches
    hit1 = hitk = count = 0
    for x, truth in batches(data, batch, classes=classes, shape=net.input_shape,
                            shuffle=False, epochs=1):
        y = net.forward(x).reshape(len(x), -1)
        labels = truth.argmax(1)
        order = np.argsort(-y, axis=1, kind="stable")[:, :top]
        hit1 += int(np.sum(order[:, 0] == labels))
        hitk += int(np.sum(np.any(order == labels[:, None], axis=1)))
        count += len(x)
    return hit1 / count, hitk / count


@dataclass
class Task:
    """What differs between training a classifier and a detector."""
    sample: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]
    images: int                               # training images (one epoch)
    valid_every: int
    validate: Callable[[], float] | None      # the validation metric, 0..1
    metric: str                               # its name: "top-1", "mAP@0.5"
    status: Callable[[], str] = lambda: ""    # extra text for the progress line


def run_training(net: Network, task: Task, opts: TrainOptions, *, base: str, backup: Path,
                 max_batches: int, resume_hint: str, log=print) -> Path:
    """Darknet's training loop with darkcfg's checkpoints, progress line, chart, Ctrl-C
    save and NaN stop; returns the final weights' path."""
    from .chart import draw_chart
    batch = net.graph.net.batch * net.graph.net.opts["subdivisions"]
    hist = History()
    progress = Progress(max_batches, opts.quiet)
    chart = backup / f"{base}_chart.png"
    avg = None
    t_start, seen_start = time.monotonic(), net.seen

    def checkpoint(name: str) -> Path:
        path = backup / name
        save_checkpoint(net, path)
        return path

    def draw() -> None:
        draw_chart(chart, hist.iterations, hist.losses, hist.avg, accuracy=hist.accuracy,
                   title=f"{base}  (batch {batch})", accuracy_label=task.metric)

    last_good = None
    interrupted = []
    old = signal.signal(signal.SIGINT, lambda *a: interrupted.append(1))
    try:
        while net.iteration < max_batches:
            i = net.iteration
            net.rng = np.random.default_rng([opts.seed, i, 2])
            x, truth = task.sample(i, np.random.default_rng([opts.seed, i, 1]))
            with np.errstate(over="ignore", invalid="ignore"):   # NaN is reported below
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
            progress.show(f"{it}/{max_batches} epoch {net.seen / task.images:.2f}  loss "
                          f"{loss:.4f}  avg {avg:.4f}{task.status()}  rate "
                          f"{net.last_rate:.6f}  {ips:.0f} img/s  ETA {int(eta) // 60}:"
                          f"{int(eta) % 60:02d}", force=it == 1)
            if task.validate and (it % task.valid_every == 0 or it == max_batches):
                hist.accuracy.append((it, task.validate()))
                progress.show(f"{it}/{max_batches} validation {task.metric} "
                              f"{hist.accuracy[-1][1]:.4f}", force=True)
            if it % opts.backup_every == 0:
                last_good = checkpoint(f"{base}.backup")
            if it % opts.save_every == 0:
                last_good = checkpoint(f"{base}_{it}.weights")
            if it % opts.chart_every == 0 or it == max_batches:
                draw()
            if interrupted:
                progress.done()
                path = checkpoint(f"{base}.backup")
                log(f"interrupted at iteration {it}: saved {path}; resume with "
                    f"{resume_hint} {path}")
                raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, old)
    progress.done()
    final = checkpoint(f"{base}_final.weights")
    elapsed = time.monotonic() - t_start
    images = net.seen - seen_start
    done = (f"done: {net.iteration} iterations, {images} images in {elapsed:.0f} s "
            f"({images / max(elapsed, 1e-9):.0f} img/s)")
    if hist.accuracy:
        done += f"; validation {task.metric} {hist.accuracy[-1][1]:.4f}"
    log(f"{done}; weights {final}; chart {chart}")
    return final


def train(data_file: str, cfg_file: str, weights: str | None, opts: TrainOptions,
          *, strict: bool = True, log=print) -> Path:
    """Train a classifier; returns the path of the final weights."""
    from .augment import Augment
    from .data import open_dataset, read_data_config
    from .graph import load_graph
    from .schedule import check_schedule

    data_cfg = read_data_config(data_file, strict=strict)
    graph = load_graph(cfg_file, strict=strict)
    net = Network(graph)
    netopts = graph.net.opts
    check_schedule(netopts, graph.net.section)
    classes = graph.output_layer.outputs
    if data_cfg.classes != classes:
        raise DarkcfgError(f"{data_file}: classes={data_cfg.classes} but {cfg_file} has "
                           f"{classes} outputs")
    train_set = open_dataset(data_cfg, "train")
    if train_set is None:
        raise DarkcfgError(f"{data_file}: no 'train' key: nothing to train on")
    valid_set = open_dataset(data_cfg, "valid")
    backup = prepare_run(net, data_cfg, weights, opts, log)
    batch = graph.net.batch * netopts["subdivisions"]
    max_batches = max_batches_of(cfg_file, netopts, opts)
    augment = Augment.from_net(netopts, net.input_shape)
    n = len(train_set)
    eye = np.eye(classes, dtype=np.float32)

    def sample(i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = batch_indices(n, i, batch, opts.seed)
        return train_set.batch(idx, net.input_shape, augment, rng), eye[train_set.labels[idx]]

    task = Task(sample, n, opts.valid_every or max(1, n // batch),
                (lambda: accuracy(net, valid_set, classes, 1)[0]) if valid_set else None,
                "top-1")
    log(f"training {cfg_file} on {n} images ({train_set.source}), batch {batch}, "
        f"{max_batches} iterations; checkpoints in {backup}/")
    return run_training(net, task, opts, base=Path(cfg_file).stem, backup=backup,
                        max_batches=max_batches,
                        resume_hint=f"darkcfg train {data_file} {cfg_file}", log=log)


def prepare_run(net: Network, data_cfg, weights: str | None, opts: TrainOptions,
                log=print) -> Path:
    """The backup folder, and the starting weights: a checkpoint (with its momentum when
    the .state file beside it matches) or Darknet's random initialisation."""
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
    return backup


def max_batches_of(cfg_file: str, netopts: dict, opts: TrainOptions) -> int:
    max_batches = opts.max_batches or netopts["max_batches"]
    if not max_batches:
        raise DarkcfgError(f"{cfg_file}: max_batches is 0; set it in [net] (or pass "
                           "--max-batches): darkcfg does not train forever")
    return max_batches
