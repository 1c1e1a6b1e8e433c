"""`darkcfg train`: Darknet's classifier training loop with checkpoints, resume, a progress
line and a loss chart.

Every random draw of iteration i (which images, their augmentation, dropout masks) comes
from a generator seeded with (seed, i) and the mini-batch's position k in the iteration:
(seed, i, 1, k) for the data, (seed, i, 2, k) for the network's pass. Training resumed
from a checkpoint continues exactly as an uninterrupted run would, and the passes of an
iteration can run in separate processes (train/mpi.py) and still be the same run.
Darknet's .weights hold no momentum buffers; darkcfg writes them beside each checkpoint
(`X.weights.state`, with the loss chart's history) and uses them on resume.

Stopping: Ctrl-C or SIGTERM finishes the current iteration, then saves `<cfg>.backup`; a
second one says so; a third stops at once without saving.
"""
from __future__ import annotations

import math
import signal
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DarkcfgError, DataError, OutputError
from ..fileio import atomic_write, check_folder, check_target
from ..network import Network


def silent(message: str) -> None:
    """The default `log`: the library says nothing itself; the CLI passes a printer."""


@dataclass(frozen=True)
class Step:
    """One finished training iteration, for a progress display (the CLI's status line)."""
    iteration: int              # iterations done, Darknet's count
    max_batches: int
    epoch: float                # images seen / images in the training set
    loss: float
    avg: float                  # Darknet's running average: 0.9 avg + 0.1 loss
    rate: float                 # the learning rate of this iteration
    images_per_second: float    # since this run started
    eta: float                  # seconds left at that speed
    status: str = ""            # the task's extra text ("  IoU 0.512  R@.5 0.734")


@dataclass(frozen=True)
class Validated:
    """The validation metric after iteration `iteration`."""
    iteration: int
    max_batches: int
    metric: str                 # "top-1", "mAP@0.5"
    value: float                # 0..1


Log = Callable[[str], None]                     # a line for the user to read
Progress = Callable[[Step | Validated], None]   # a progress event
# mini-batch k of the current iteration: (x, truth)
Draw = Callable[[int], tuple[np.ndarray, np.ndarray]]


class Reducer:
    """How the passes of an iteration are shared out: this default runs them all in this
    process. train/mpi.py's MPIReducer runs some of them on each MPI rank and sums the
    gradients before the update. Only the leader (rank 0) writes checkpoints and the
    chart, validates and reports progress."""
    rank = 0
    size = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def check(self, net: Network) -> None:
        """Refuse a network this reducer cannot train (before the first iteration)."""

    def start(self, net: Network) -> None:
        """Every process starts from the leader's weights, momentum and `seen`."""

    def describe(self, net: Network) -> str:
        """Who trains, for the log ("" for this process alone)."""
        return ""

    def step(self, net: Network, draw: Draw, stops: Callable[[], int]
             ) -> tuple[float, int]:
        """One iteration: every pass over the mini-batches `draw(k)` gives, then the
        update; returns (the loss per image, the stop requests of every process:
        `stops()` after the passes)."""
        subs = net.graph.net.opts["subdivisions"]
        parts = [draw(k) for k in range(subs)]
        if subs == 1:
            x, truth = parts[0]
        else:
            x = np.concatenate([p[0] for p in parts])
            truth = np.concatenate([p[1] for p in parts])
        return net.train_step(x, truth), stops()


@dataclass
class TrainOptions:
    seed: int = 0
    max_batches: int | None = None     # default: the cfg's max_batches
    save_every: int = 1000             # <base>_<N>.weights
    backup_every: int = 100            # <base>.backup
    valid_every: int = 0               # 0: once per epoch
    chart_every: int = 20
    quiet: bool = False                # no progress events (the CLI's --quiet)
    clear: bool = False                # Darknet's -clear: count from iteration 0 (transfer)
    weights_cfg: str | None = None     # the cfg the starting weights were made for
    # who trains: this process alone, or MPI ranks (train/mpi.py); not a count, not checked
    reducer: Reducer = field(default_factory=Reducer)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse counts that would divide by zero or train nothing (checked again when
        training starts, for options edited after construction)."""
        for name, low, flag, note in _COUNTS:
            value = getattr(self, name)
            if value is None and name == "max_batches":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise DarkcfgError(f"{flag} (TrainOptions.{name}) must be a whole number >= "
                                   f"{low}{note}; got {value!r}")


# (field, smallest value, command-line flag, what the smallest means)
_COUNTS = (("max_batches", 1, "--max-batches", ""),
           ("save_every", 1, "--save-every", ""),
           ("backup_every", 1, "--backup-every", ""),
           ("valid_every", 0, "--valid-every", " (0: once per epoch)"),
           ("chart_every", 1, "chart_every", ""))


@dataclass
class History:
    """What the chart shows; saved in each checkpoint's .state so a resumed run's chart
    holds the whole run."""
    iterations: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    avg: list[float] = field(default_factory=list)
    accuracy: list[tuple[int, float]] = field(default_factory=list)
    stat: list[float] = field(default_factory=list)     # Task.stat per iteration (NaN: none)

    REQUIRED = ("history.iterations", "history.losses", "history.avg", "history.accuracy")

    def arrays(self) -> dict[str, np.ndarray]:
        return {"history.iterations": np.array(self.iterations, np.int64),
                "history.losses": np.array(self.losses, np.float64),
                "history.avg": np.array(self.avg, np.float64),
                "history.accuracy": np.array(self.accuracy, np.float64).reshape(-1, 2),
                "history.stat": np.array(self.stat, np.float64)}

    @classmethod
    def from_arrays(cls, state: dict[str, np.ndarray]) -> History | None:
        """The history in a .state file; None when it has none or it is inconsistent. A
        file from before `stat` was kept gives NaN for it."""
        try:
            its, losses, avg, acc = (state[k] for k in cls.REQUIRED)
        except KeyError:
            return None
        stat = state.get("history.stat", np.full(len(its), np.nan))
        if not (its.ndim == losses.ndim == avg.ndim == stat.ndim == 1 and len(its) ==
                len(losses) == len(avg) == len(stat) and acc.ndim == 2 and acc.shape[1] == 2):
            return None
        return cls([int(i) for i in its], [float(v) for v in losses],
                   [float(v) for v in avg], [(int(i), float(a)) for i, a in acc],
                   [float(v) for v in stat])


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


class IterationImages:
    """The images of the current iteration (`draw(i)`, e.g. batch_indices), drawn once
    for all its mini-batches; part(i, k, mini) -> the images of mini-batch k."""

    def __init__(self, draw: Callable[[int], np.ndarray]):
        self.draw = draw
        self.iteration, self.images = -1, np.zeros(0, np.int64)

    def part(self, iteration: int, k: int, mini: int) -> np.ndarray:
        if iteration != self.iteration:
            self.images = self.draw(iteration)
            self.iteration = iteration
        return self.images[k * mini:(k + 1) * mini]


def save_checkpoint(net: Network, path: Path, history: History | None = None) -> None:
    """The .weights file (Darknet's format), then the momentum buffers and the chart's
    history beside it (`<path>.state`), each replaced atomically."""
    try:
        net.save_weights(path)
    except OSError as e:                  # a writer that does not say it in darkcfg terms
        raise OutputError(f"{path}: cannot write the checkpoint: {e.strerror or e}") from None
    state = {f"{lay.index}.{k}": v for lay in net.layers for k, v in lay.updates.items()}
    state["seen"] = np.array(net.seen)
    if history is not None:
        state.update(history.arrays())
    with atomic_write(f"{path}.state", "momentum file") as f:
        np.savez(f, **state)


def restore_state(net: Network, weights: Path, log: Log = silent) -> History | None:
    """Momentum buffers and chart history from the .state file beside `weights` when it
    belongs to them; otherwise (missing, from another iteration, damaged, another cfg)
    momentum restarts from zero, as in Darknet, and `log` says why. None: not restored."""
    state_path = Path(f"{weights}.state")
    restart = "momentum restarts from zero, as in Darknet"
    if not state_path.exists():
        log(f"{restart} (no {state_path.name} beside the weights)")
        return None
    try:
        with np.load(state_path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        log(f"warning: {state_path} is damaged ({e}); {restart}")
        return None
    problem = _state_problem(net, state)
    if problem:
        log(f"warning: {state_path} {problem}; {restart}")
        return None
    for lay in net.layers:
        for k, v in lay.updates.items():
            v[...] = state[f"{lay.index}.{k}"]
    history = History.from_arrays(state)
    if history is not None and history.iterations and \
            history.iterations[-1] != net.iteration:
        history = None
    if history is None:
        log(f"{state_path} has no loss history for this checkpoint: the chart starts at "
            f"iteration {net.iteration}")
    return history or History()


def _state_problem(net: Network, state: dict[str, np.ndarray]) -> str | None:
    """Why a .state file does not belong to the loaded weights; None when it does."""
    seen = state.get("seen")
    if seen is None or seen.shape != () or seen.dtype.kind not in "iu":
        return "is damaged (no image count 'seen')"
    if int(seen) != net.seen:
        return (f"belongs to another checkpoint ({int(seen)} images seen, the weights "
                f"{net.seen})")
    for lay in net.layers:
        for k, v in lay.updates.items():
            got = state.get(f"{lay.index}.{k}")
            if got is None or got.shape != v.shape or got.dtype.kind != "f":
                shape = "missing" if got is None else f"{got.dtype} {got.shape}"
                return (f"does not fit this cfg (layer {lay.index} [{lay.type}] '{k}': "
                        f"{shape}, expected {v.shape})")
            if not np.all(np.isfinite(got)):
                return f"is damaged (layer {lay.index} [{lay.type}] '{k}' is not finite)"
    return None


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


@dataclass
class Task:
    """What differs between training a classifier and a detector."""
    # sample(i, k, rng): mini-batch k (0..subdivisions-1) of iteration i, (x, truth),
    # drawing only from rng (seeded with the position), so that any process can draw it
    sample: Callable[[int, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]
    images: int                               # training images (one epoch)
    valid_every: int
    validate: Callable[[], float] | None      # the validation metric, 0..1
    metric: str                               # its name: "top-1", "mAP@0.5"
    status: Callable[[], str] = lambda: ""    # extra text for the progress line (Step.status)
    # a 0..1 statistic of each iteration drawn on the chart (e.g. the fraction of active
    # triplets), and its name; None: nothing to draw
    stat: Callable[[], float | None] = lambda: None
    stat_name: str = ""


class _Abort(KeyboardInterrupt):
    """The third stop request: stop at once, without saving."""


class StopRequests:
    """SIGINT/SIGTERM handler while training: the first asks to stop after the current
    iteration (a long one can take minutes), the second says that this is happening, the
    third aborts at once without saving. Installed only in the main thread (where Python
    runs signal handlers); elsewhere the default behaviour stays."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, say: Callable[[], None]):
        self.count = 0
        self.say = say
        self.old: dict[int, object] = {}

    def __call__(self, signum, frame) -> None:
        self.count += 1
        if self.count == 2:
            self.say()
        elif self.count >= 3:
            raise _Abort

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self.old = {s: signal.signal(s, self) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.old.items():    # None: a handler not set from Python
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def check_run(net: Network, task: Task, opts: TrainOptions, max_batches: int) -> None:
    """What makes a run meaningless, refused before its first iteration."""
    opts.check()
    if isinstance(max_batches, bool) or not isinstance(max_batches, (int, np.integer)) \
            or max_batches < 1:
        raise DarkcfgError(f"max_batches must be a whole number >= 1; got {max_batches!r}")
    if task.images < 1:
        raise DataError("the training set has no images")
    if task.valid_every < 1:
        raise DarkcfgError(f"the validation interval must be >= 1; got {task.valid_every}")
    if net.iteration >= max_batches:
        raise DarkcfgError(f"the network has already trained {net.iteration} iterations and "
                           f"max_batches is {max_batches}: nothing to train (raise "
                           "max_batches, or set seen to 0 to start counting again)")


def check_frozen_statistics(net: Network) -> None:
    """A frozen layer normalises with its rolling statistics; Darknet's initial ones
    (variance 0) would divide by 1e-6 and send the loss to inf at once."""
    for layer in net.layers:
        var = layer.params.get("rolling_variance")
        if layer.frozen and var is not None and not var.any():
            sec = layer.section
            raise DarkcfgError(
                f"layer {layer.index} [{layer.type}] ({sec.file}:{sec.line}) is frozen "
                f"({net.frozen.why[layer.index]}) but its rolling_variance is all 0, "
                "Darknet's initial value: a frozen layer normalises with its rolling "
                "statistics, so they must come from trained weights (give a weights file "
                "holding this layer, or do not freeze it)")


def run_training(net: Network, task: Task, opts: TrainOptions, *, base: str, backup: Path,
                 max_batches: int, resume_hint: str, log: Log = silent,
                 progress: Progress | None = None, history: History | None = None) -> Path:
    """Darknet's training loop with darkcfg's checkpoints, chart, Ctrl-C/SIGTERM save and
    NaN stop; returns the final weights' path. `log` receives what a user should read
    (frozen layers, resumed, interrupted, done), `progress` a Step after each iteration
    and a Validated after each validation (none with opts.quiet). `history`: the chart's
    points before this run (restored with a checkpoint)."""
    from ..summary import freeze_line
    from .chart import draw_chart
    check_run(net, task, opts, max_batches)
    team = opts.reducer
    team.check(net)
    log(freeze_line(net.layers, net.freeze(net.iteration + 1)))     # what stays as it is
    check_frozen_statistics(net)
    team.start(net)
    if team.describe(net):
        log(team.describe(net))
    if team.leader:
        backup = Path(check_folder(backup, "checkpoints"))
    else:       # only the leader writes: the others neither report nor save
        log, progress = silent, None
    batch = net.graph.net.batch * net.graph.net.opts["subdivisions"]
    hist = history if history is not None else History()
    report = (lambda event: None) if opts.quiet or progress is None else progress
    chart = backup / f"{base}_chart.png"
    avg = hist.avg[-1] if hist.avg else None     # the average continues across a resume
    t_start, seen_start = time.monotonic(), net.seen
    last_good: Path | None = None

    def kept() -> str:
        return f"; the last good checkpoint is {last_good}" if last_good else ""

    def written(what: Callable[[], None]) -> None:
        try:
            what()
        except DarkcfgError as e:
            raise OutputError(f"{e}; training stopped at iteration {net.iteration}"
                              f"{kept()}") from None

    def checkpoint(name: str) -> Path:
        path = backup / name
        if team.leader:
            written(lambda: save_checkpoint(net, path, hist))
        return path

    def draw() -> None:
        if team.leader:
            written(lambda: draw_chart(chart, hist.iterations, hist.losses, hist.avg,
                                   accuracy=hist.accuracy, title=f"{base}  (batch {batch})",
                                   accuracy_label=task.metric,
                                   stat=(task.stat_name, hist.stat) if task.stat_name
                                   else None))

    def finishing() -> None:
        log(f"stopping: finishing iteration {net.iteration + 1} (it can take a while), then "
            f"saving {backup / (base + '.backup')}; press Ctrl-C once more to stop at once "
            "without saving")

    try:
        with StopRequests(finishing) as stop:
            while net.iteration < max_batches:
                i = net.iteration
                net.pass_seed = (opts.seed, i, 2)

                def sample(k: int, i: int = i) -> tuple[np.ndarray, np.ndarray]:
                    return task.sample(i, k, np.random.default_rng([opts.seed, i, 1, k]))
                with np.errstate(over="ignore", invalid="ignore"):  # NaN is reported below
                    loss, stopping = team.step(net, sample, lambda: stop.count)
                if not math.isfinite(loss):
                    where = first_non_finite(net)
                    error = DarkcfgError(f"the loss became {loss} at iteration {i + 1}: "
                                         f"{where} went non-finite first{kept()}. Try a lower "
                                         "learning_rate or a longer burn_in.")
                    error.every_rank = True     # the summed loss: every process stops here
                    raise error
                avg = loss if avg is None else 0.9 * avg + 0.1 * loss
                it = net.iteration
                hist.iterations.append(it)
                hist.losses.append(loss)
                hist.avg.append(avg)
                value = task.stat()
                hist.stat.append(math.nan if value is None else float(value))
                elapsed = time.monotonic() - t_start
                ips = (net.seen - seen_start) / max(elapsed, 1e-9)
                eta = (max_batches - it) * batch / max(ips, 1e-9)
                report(Step(it, max_batches, net.seen / task.images, loss, avg,
                            net.last_rate, ips, eta, task.status()))
                if task.validate and team.leader and \
                        (it % task.valid_every == 0 or it == max_batches):
                    hist.accuracy.append((it, task.validate()))
                    report(Validated(it, max_batches, task.metric, hist.accuracy[-1][1]))
                if it % opts.backup_every == 0:
                    last_good = checkpoint(f"{base}.backup")
                if it % opts.save_every == 0:
                    last_good = checkpoint(f"{base}_{it}.weights")
                if it % opts.chart_every == 0 or it == max_batches:
                    draw()
                if stopping:        # a stop request on any process stops them all
                    path = checkpoint(f"{base}.backup")
                    log(f"interrupted at iteration {it}: saved {path}; resume with "
                        f"{resume_hint} {path}")
                    raise KeyboardInterrupt
    except _Abort:
        log(f"stopped at once during iteration {net.iteration + 1}, without saving"
            f"{kept()}")
        raise KeyboardInterrupt from None
    final = checkpoint(f"{base}_final.weights")
    elapsed = time.monotonic() - t_start
    images = net.seen - seen_start
    done = (f"done: {net.iteration} iterations, {images} images in {elapsed:.0f} s "
            f"({images / max(elapsed, 1e-9):.0f} img/s)")
    if hist.accuracy:
        done += f"; validation {task.metric} {hist.accuracy[-1][1]:.4f}"
    log(f"{done}; weights {final}; chart {chart}")
    return final


@dataclass
class Start:
    """Where a run writes and the chart history it continues."""
    backup: Path
    history: History


def prepare_run(net: Network, data_cfg, weights: str | None, opts: TrainOptions,
                log: Log = silent, *, base: str, max_batches: int) -> Start:
    """Before the first iteration: the backup folder (made, and checked writable) and the
    starting weights: Darknet's random initialisation, then the weights file over it (a
    prefix file such as darknet53.conv.74 covers only the first layers), with the
    momentum and chart history of a checkpoint when its .state file matches."""
    backup = check_backup(data_cfg, base)
    net.init_weights(opts.seed)
    history = load_start(net, weights, opts, max_batches, log) if weights else History()
    return Start(backup, history)


def check_backup(data_cfg, base: str) -> Path:
    """The checkpoint folder, made and checked writable, and the fixed-name files in it
    checked replaceable: a problem is found before training, not after an hour of it."""
    where = data_cfg.where("backup") if data_cfg.backup else data_cfg.file
    try:
        backup = Path(check_folder(data_cfg.backup or "backup", "checkpoints"))
        for name in (f"{base}.backup", f"{base}_final.weights"):
            check_target(backup / name, "checkpoint")
            check_target(backup / f"{name}.state", "momentum file")
        check_target(backup / f"{base}_chart.png", "loss chart")
    except OutputError as e:
        raise OutputError(f"{e} (backup= of {where})") from None
    return backup


def load_start(net: Network, weights: str, opts: TrainOptions, max_batches: int,
               log: Log = silent) -> History:
    """Load the starting weights over the initialised network and say what they were: a
    checkpoint to resume (momentum and history restored when they match), a prefix file
    (the other layers keep their initialisation), or, with --clear, a new start. Weights
    that have reached max_batches are refused: training them would do nothing."""
    from ..weights import WeightsError, WeightsWarning, load_matching
    shapes = weights_shapes(net, weights, opts.weights_cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WeightsWarning)
        try:
            if shapes is None:
                report = net.load_weights(weights)
            else:       # what the file holds is known: its matching layers load
                report = net.loaded = load_matching(net, weights, shapes)
                net.params_changed()
        except WeightsError as e:
            raise WeightsError(f"{e} To train on its first layers (a new head), give "
                               "the cfg it was made for with --weights-cfg, or cut them "
                               "with `darkcfg partial`.") from None
    for w in caught:        # the prefix warning is said below, with the layers; others stay
        if report.complete or not issubclass(w.category, WeightsWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    reached = net.iteration
    if reached >= max_batches and not opts.clear:
        raise DarkcfgError(
            f"{weights}: these weights have already trained {reached} iterations "
            f"({net.seen} images seen) and max_batches is {max_batches}: there is nothing "
            f"left to train. To train them further, raise max_batches (--max-batches N with "
            f"N > {reached}); to start a new training from them (transfer learning), pass "
            "--clear (Darknet's -clear: the count starts again from 0).")
    if not report.complete:
        log(prefix_message(net, weights, report.layers_loaded, opts.seed, report.mismatch))
    if opts.clear:
        net.seen = 0
        log(f"--clear: counting starts from iteration 0 (the file had reached iteration "
            f"{reached}); momentum starts from zero")
        return History()
    if not report.complete:     # a start, not a resume: no momentum or history to match
        if reached:
            log(f"{weights} has seen {net.seen} images: training starts at iteration "
                f"{reached} (pass --clear to start from 0)")
        return History()
    log(f"resuming from {weights} at iteration {reached}")
    history = restore_state(net, Path(weights), log)
    return history if history is not None else History()


def weights_shapes(net: Network, weights: str, weights_cfg: str | None):
    """What the starting weights hold (a list of weights.FileLayer), when it is known:
    from the cfg they were made for (--weights-cfg), else from the momentum buffers
    darkcfg keeps beside its checkpoints (X.weights.state) when their sizes add up to
    the file's; None otherwise (a .weights file has no shapes of its own)."""
    from ..graph import load_graph
    from ..weights import FileLayer, file_layers_of, read_header
    if weights_cfg is not None:
        return file_layers_of(load_graph(weights_cfg, dialect=net.graph.net.dialect))
    state = Path(f"{weights}.state")
    try:
        with np.load(state, allow_pickle=False) as z:
            shapes = {k: z[k].shape for k in z.files if "." in k and k[0].isdigit()}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        return None
    layers: dict[int, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        index, name = key.split(".", 1)
        layers.setdefault(int(index), {})[name] = shape
    out = []
    for index in sorted(layers):
        arrays = layers[index]
        # in the file a BN layer's scales come with rolling_mean and rolling_variance
        size = sum(int(np.prod(v)) for v in arrays.values()) + \
            2 * int(np.prod(arrays.get("scales", 0)))
        out.append(FileLayer(index, None, arrays, size, False, state.name))
    header = read_header(weights)
    if 4 * sum(f.size for f in out) != Path(weights).stat().st_size - header.size:
        return None
    return out


def prefix_message(net: Network, weights: str, loaded: int, seed: int,
                   mismatch: str | None = None) -> str:
    """'layers 0-7 from X.weights (...); layers 8-10 initialised randomly (seed 0)'."""
    from ..weights import file_arrays
    order = [lay.index for lay in net.layers if lay.params]     # layers with parameters
    from_file = [lay.index for lay in net.layers if file_arrays(lay)][:loaded]
    rest = [i for i in order if i not in from_file]
    first = f"{_span(from_file, order)} from {weights}" if from_file else \
        f"no layer from {weights}"
    if mismatch:        # a new head: where the file and the cfg part, then the layers
        return (f"{mismatch}. {first} ({loaded} of {len(order)} layers with parameters); "
                f"{_span(rest, order)} initialised randomly (seed {seed})")
    return (f"{first} (a prefix file: {loaded} of {len(order)} layers with parameters); "
            f"{_span(rest, order)} initialised randomly (seed {seed})")


def _span(indices: list[int], order: list[int]) -> str:
    """Layer indices as runs, consecutive in `order` (layers without parameters between
    them do not break a run): 'layers 0-74', 'layers 0-5, 9', 'layer 3'."""
    pos = {i: k for k, i in enumerate(order)}
    runs: list[list[int]] = []
    for i in indices:
        if runs and pos[i] == pos[runs[-1][1]] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    word = "layer" if len(indices) == 1 else "layers"
    return f"{word} " + ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def max_batches_of(cfg_file: str, netopts: dict, opts: TrainOptions) -> int:
    max_batches = opts.max_batches or netopts["max_batches"]
    if not max_batches:
        raise DarkcfgError(f"{cfg_file}: max_batches is 0; set it in [net] (or pass "
                           "--max-batches): darkcfg does not train forever")
    return max_batches
