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


def train(data_file: str, cfg_file: str, weights: str | None, opts: TrainOptions,
          *, strict: bool = True, log=print) -> Path:
    """Train; returns the path of the final weights."""
    from .augment import Augment
    from .chart import draw_chart
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
    base = Path(cfg_file).stem
    backup = Path(data_cfg.backup or "backup")
    backup.mkdir(parents=True, exist_ok=True)
    if weights:
        net.load_weights(weights)
        if not restore_momentum(net, Path(weights)):
            log(f"resuming from {weights} at iteration {net.iteration}; momentum restarts "
                "from zero (no matching .state file beside it), as in Darknet")
        else:
            log(f"resuming from {weights} at iteration {net.iteration}")
    else:
        net.init_weights(opts.seed)
    batch = graph.net.batch * netopts["subdivisions"]
    max_batches = opts.max_batches or netopts["max_batches"]
    if not max_batches:
        raise DarkcfgError(f"{cfg_file}: max_batches is 0; set it in [net] (or pass "
                           "--max-batches): darkcfg does not train forever")
    augment = Augment.from_net(netopts, net.input_shape)
    n = len(train_set)
    valid_every = opts.valid_every or max(1, n // batch)
    hist = History()
    progress = Progress(max_batches, opts.quiet)
    chart = backup / f"{base}_chart.png"
    avg = None
    t_start, seen_start = time.monotonic(), net.seen
    log(f"training {cfg_file} on {n} images ({train_set.source}), batch {batch}, "
        f"{max_batches} iterations; checkpoints in {backup}/")

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
            x = train_set.batch(idx, net.input_shape, augment, rng)
            truth = np.eye(classes, dtype=np.float32)[train_set.labels[idx]]
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
            progress.show(f"{it}/{max_batches} epoch {net.seen / n:.2f}  loss {loss:.4f}  "
                          f"avg {avg:.4f}  rate {net.last_rate:.6f}  {ips:.0f} img/s  "
                          f"ETA {int(eta) // 60}:{int(eta) % 60:02d}", force=it == 1)
            if valid_set is not None and it % valid_every == 0:
                top1, _ = accuracy(net, valid_set, classes, 1)
                hist.accuracy.append((it, top1))
                progress.show(f"{it}/{max_batches} validation top-1 {top1:.4f}", force=True)
            if it % opts.backup_every == 0:
                last_good = checkpoint(f"{base}.backup")
            if it % opts.save_every == 0:
                last_good = checkpoint(f"{base}_{it}.weights")
            if it % opts.chart_every == 0 or it == max_batches:
                draw_chart(chart, hist.iterations, hist.losses, hist.avg,
                           accuracy=hist.accuracy, title=f"{base}  (batch {batch})")
            if interrupted:
                progress.done()
                path = checkpoint(f"{base}.backup")
                log(f"interrupted at iteration {it}: saved {path}; resume with "
                    f"darkcfg train {data_file} {cfg_file} {path}")
                raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, old)
    progress.done()
    if valid_set is not None and hist.iterations and \
            (not hist.accuracy or hist.accuracy[-1][0] != net.iteration):
        top1, _ = accuracy(net, valid_set, classes, 1)
        hist.accuracy.append((net.iteration, top1))
        log(f"validation top-1 {top1:.4f} at iteration {net.iteration}")
    final = checkpoint(f"{base}_final.weights")
    if hist.iterations:
        draw_chart(chart, hist.iterations, hist.losses, hist.avg, accuracy=hist.accuracy,
                   title=f"{base}  (batch {batch})")
    elapsed = time.monotonic() - t_start
    log(f"done: {net.iteration} iterations, {net.seen - seen_start} images in {elapsed:.0f} s "
        f"({(net.seen - seen_start) / max(elapsed, 1e-9):.0f} img/s); weights {final}; "
        f"chart {chart}")
    return final
