"""The `darkcfg` command line."""
from __future__ import annotations

import argparse
import sys
import time
import warnings

from . import __version__
from .errors import CfgWarning, DarkcfgError, DataError
from .netcfg import DIALECTS


def _shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--channels", type=int, help="override [net] channels")
    p.add_argument("--batch", type=int, help="override [net] batch (subdivisions become 1)")
    p.add_argument("--dialect", choices=DIALECTS,
                   help="which Darknet lineage's numbers to follow (default: alexeyab for "
                   "weights of header revision >= 5 or a cfg using an AlexeyAB-only "
                   "feature, else pjreddie)")
    p.add_argument("--lenient", action="store_true",
                   help="turn unknown keys and other fixable cfg problems into warnings")


def _letter_args(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--letter-box", dest="letter_box", action="store_const", const=True,
                      help="letterbox each image to the network size, keeping its aspect "
                      "ratio (default: pjreddie always; alexeyab only with letter_box=1 in "
                      "[net], as AlexeyAB's -letter_box)")
    what.add_argument("--no-letter-box", dest="letter_box", action="store_const",
                      const=False, help="stretch each image to the network size "
                      "(AlexeyAB's default)")


def cmd_summary(args: argparse.Namespace) -> int:
    from .graph import load_graph
    from .summary import format_table, to_dot, to_json
    graph = load_graph(args.cfg, width=args.width, height=args.height,
                       channels=args.channels, batch=args.batch, dialect=args.dialect,
                       strict=not args.lenient)
    render = {"table": format_table, "json": to_json, "dot": to_dot}[args.format]
    print(render(graph))
    return 0


def _positive_int(text: str) -> int:
    """argparse type for counts such as --top: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _check_unit(option: str, value: float, why: str = "") -> None:
    """A threshold that must be in [0, 1] (NaN is refused too: it compares False)."""
    if not 0 <= value <= 1:
        raise DarkcfgError(f"{option} must be in [0, 1]{why}; received {value}")


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .fileio import atomic_write, check_target
    from .network import Network
    from .predict import detector_head, prepare, raw_output_reason, read_labels, top_k
    if args.output:
        check_target(args.output, "outputs")    # before the work, not after it
    names = read_labels(args.labels) if args.labels else None
    net = Network.load(args.cfg, args.weights, dialect=args.dialect, strict=not args.lenient,
                       width=args.width, height=args.height, channels=args.channels)
    head = detector_head(net.graph)
    if head is not None:
        raise DarkcfgError(f"{args.cfg}: layer {head.index} is a [{head.type}]: this network "
                           "is a detector and its output is a grid of boxes, not class "
                           "probabilities; use `darkcfg detect` (or `darkcfg map`)")
    out_len = net.graph.output_layer.outputs
    if names is not None and len(names) != out_len:
        raise DataError(f"{args.labels}: {len(names)} labels, but the network has {out_len} "
                        "outputs")
    raw = raw_output_reason(net.graph)
    if raw:
        print(f"darkcfg: note: {raw}; listing the {args.top} largest", file=sys.stderr)
    failed, outputs = 0, []
    for path, y, error in _run_outputs(args, net, prepare):
        if y is None:
            print(f"darkcfg: error: {error}", file=sys.stderr)
            failed += 1
            continue
        outputs.append(y)
        print(f"{path}:")
        for i, p in top_k(y, min(args.top, y.size)):
            label = names[i] if names else f"{'output' if raw else 'class'} {i}"
            print(f"  {p:12.6g}  {label}" if raw else f"  {100 * p:6.2f}%  {label}")
    if args.output and outputs:
        with atomic_write(args.output, "outputs") as f:
            np.save(f, np.stack(outputs))
        print(f"saved {len(outputs)} x {outputs[0].size} outputs to {args.output}")
    elif args.output:
        print(f"darkcfg: nothing saved to {args.output}: no image could be read",
              file=sys.stderr)
    return 1 if failed else 0


def _run_outputs(args: argparse.Namespace, net, prepare):
    """(image, its flat output or None, the error) per image, in order: here, or on
    Dask workers with --workers/--scheduler."""
    if not _on_dask(args):
        for path in args.images:
            try:
                x = prepare(path, net.input_shape)
            except DarkcfgError as e:
                yield path, None, str(e)
                continue
            yield path, net.forward(x[None])[0].ravel().copy(), ""
        return
    from .distributed import run_chunk
    spec = _net_spec(args, dialect=args.dialect, width=args.width, height=args.height,
                     channels=args.channels)
    for path, (y, error) in _on_workers(args, run_chunk, args.images, spec):
        yield path, y, error


def _on_dask(args: argparse.Namespace) -> bool:
    return getattr(args, "workers", None) is not None or \
        getattr(args, "scheduler", None) is not None


def _net_spec(args: argparse.Namespace, **options):
    from .distributed import NetSpec
    return NetSpec.of(args.cfg, args.weights, strict=not args.lenient, **options)


def _image_progress(done: int, total: int) -> None:
    print(f"\r{done}/{total} images", end="\n" if done == total else "", file=sys.stderr,
          flush=True)


def _on_workers(args: argparse.Namespace, func, images, spec, *more):
    """func(spec, chunk, *more) over chunks of `images` on Dask; (image, its result) in
    input order."""
    from .distributed import Cluster
    with Cluster(args.workers, args.scheduler) as cluster:
        chunks = cluster.chunks(list(images))
        results = cluster.map(func, [(spec, c, *more) for c in chunks],
                              [len(c) for c in chunks],
                              progress=None if getattr(args, "quiet", False)
                              else _image_progress)
    for chunk, result in zip(chunks, results, strict=True):
        yield from zip(chunk, result, strict=True)


def _dask_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="spread the images over N local Dask worker processes (one "
                       "thread each; needs darkcfg[dask])")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="spread the images over the workers of this Dask scheduler "
                       "(e.g. tcp://host:8786; the files must be at the same paths there)")


def cmd_partial(args: argparse.Namespace) -> int:
    import os

    from .fileio import check_target
    from .network import Network
    from .weights import partial
    check_target(args.out, "weights")           # before the work, not after it
    for given, what in ((args.weights, "weights file"), (args.cfg, "cfg")):
        if os.path.exists(args.out) and os.path.exists(given) and \
                os.path.samefile(args.out, given):
            raise DarkcfgError(f"{args.out}: is the input {what}; partial writes a new file "
                               "(choose another name for OUT)")
    if os.path.exists(args.out) and not args.force:
        raise DarkcfgError(f"{args.out}: exists; darkcfg does not replace it unasked (use "
                           "--force, or choose another name)")
    net = Network.load(args.cfg, args.weights, dialect=args.dialect, strict=not args.lenient)
    done = partial(net, args.out, args.n, net.loaded)
    h = done.header
    print(f"saved layers 0-{done.cutoff - 1} of {args.cfg} to {args.out}: "
          f"{len(done.layers)} with parameters, {done.params:,} parameters, "
          f"{done.bytes_written:,} bytes (header {h.major}.{h.minor}.{h.revision}, seen 0)")
    for index, kind, params in done.layers:
        print(f"  layer {index:3d} [{kind}] {params:,} parameters")
    return 0


def _batch_arg(text: str) -> int | str:
    """argparse type for export's --batch: a whole number >= 1 or 'dynamic'."""
    if text == "dynamic":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'dynamic', got "
                                         f"{text!r}") from None


def cmd_export(args: argparse.Namespace) -> int:
    import os

    from .export import check_opset, save_onnx, to_onnx
    from .fileio import check_target
    from .network import Network
    check_opset(args.opset)             # says what to install when onnx is missing
    check_target(args.out, "ONNX model")    # before the work, not after it
    if os.path.exists(args.out) and not args.force:
        raise DarkcfgError(f"{args.out}: exists; darkcfg does not replace it unasked (use "
                           "--force, or choose another name)")
    for given, what in ((args.weights, "weights file"), (args.cfg, "cfg")):
        if os.path.exists(args.out) and os.path.exists(given) and \
                os.path.samefile(args.out, given):
            raise DarkcfgError(f"{args.out}: is the input {what}; choose another name for "
                               "OUT.onnx")
    net = Network.load(args.cfg, args.weights, dialect=args.dialect, strict=not args.lenient,
                       width=args.width, height=args.height)
    model = to_onnx(net, opset=args.opset, batch=args.batch, decode=args.decode,
                    fuse=not args.no_fuse)
    size = save_onnx(model, args.out, force=args.force)
    dims = [d.dim_param or str(d.dim_value) for d in
            model.graph.input[0].type.tensor_type.shape.dim]
    props = {p.key: p.value for p in model.metadata_props}
    bn = "batch norm kept as nodes" if args.no_fuse else \
        f"batch norm folded into {props['bn_folded']} layers"
    print(f"wrote {args.out}: opset {args.opset}, {len(model.graph.node)} nodes, "
          f"{size:,} bytes; {bn}")
    print(f"  input  input {' x '.join(dims)} (float32 NCHW in [0, 1])")
    for out in model.graph.output:
        shape = " x ".join(d.dim_param or str(d.dim_value)
                           for d in out.type.tensor_type.shape.dim)
        print(f"  output {out.name} {shape}")
    return 0


class _StatusLine:
    """Training progress on stderr: one line redrawn in place on a terminal; otherwise a
    line every 10 s (and at iteration 1 and after each validation) so that a log file
    stays short. The library's messages go to stdout, on a line of their own."""
    WIDTH = 150

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.drawn = False          # a status line is on the terminal, unfinished

    def show(self, event) -> None:
        text, force = _progress_text(event)
        now = time.monotonic()
        if self.tty:
            sys.stderr.write("\r" + text[:self.WIDTH].ljust(self.WIDTH))
            sys.stderr.flush()
            self.drawn = True
        elif force or now - self.last >= 10:
            print(text, file=sys.stderr, flush=True)
            self.last = now

    def end_line(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False

    def say(self, message: str) -> None:
        self.end_line()
        print(message, flush=True)


def _progress_text(event) -> tuple[str, bool]:
    """The status line of a training event, and whether it must be shown at once."""
    from .train.loop import Validated
    head = f"{event.iteration}/{event.max_batches}"
    if isinstance(event, Validated):
        return f"{head} validation {event.metric} {event.value:.4f}", True
    eta = int(event.eta)
    return (f"{head} epoch {event.epoch:.2f}  loss {event.loss:.4f}  avg {event.avg:.4f}"
            f"{event.status}  rate {event.rate:.6f}  {event.images_per_second:.0f} img/s  "
            f"ETA {eta // 60}:{eta % 60:02d}"), event.iteration == 1


def cmd_train(args: argparse.Namespace) -> int:
    from .train.classifier import train
    from .train.detector import is_detector, train_detector
    from .train.loop import TrainOptions
    opts = TrainOptions(seed=args.seed, max_batches=args.max_batches,
                        save_every=args.save_every, backup_every=args.backup_every,
                        valid_every=args.valid_every, quiet=args.quiet, clear=args.clear,
                        weights_cfg=args.weights_cfg)
    # a cfg ending in [yolo]/[region] trains as a detector (YOLO-format labels)
    run = train_detector if is_detector(args.cfg, strict=not args.lenient) else train
    from .train import mpi
    if mpi.wanted(args.mpi):        # under mpiexec: this process is one rank
        ended = mpi.supervise()
        if ended is not None:       # the supervisor: the rank's trainer has ended
            return _rank_ended(ended, mpi)
        return _train_ranked(mpi.mpi_reducer(), run, args, opts)
    status = _StatusLine()
    try:
        run(args.data, args.cfg, args.weights, opts, strict=not args.lenient, log=status.say,
            progress=status.show)
    finally:                # an error or Ctrl-C message starts on a line of its own
        status.end_line()
    return 0


def cmd_rnn(args: argparse.Namespace) -> int:
    """`darkcfg rnn train|generate|valid`: Darknet's char-RNN on bytes (train/charrnn.py)."""
    import numpy as np

    from .network import Network
    from .train import charrnn
    if args.action == "train":
        status = _StatusLine()
        try:
            charrnn.train_char_rnn(args.text, args.cfg, args.weights, args.backup,
                                   charrnn.CharOptions(max_batches=args.max_batches,
                                                       seed=args.seed),
                                   log=status.say, progress=status.show)
        finally:
            status.end_line()
        return 0
    net = Network.load(args.cfg, args.weights)
    charrnn.check_net(net, args.cfg)
    if args.action == "generate":
        text = charrnn.generate(net, args.seed, args.len, args.temp,
                                np.random.default_rng(args.rng))
        sys.stdout.buffer.write(args.seed.encode() + text + b"\n")
        return 0
    data = charrnn.read_bytes(args.text)
    if args.tail:
        data = charrnn.split(data)[1]
    bits, ppl = charrnn.evaluate(net, data)
    print(f"{len(data)} bytes: {bits:.4f} bits per byte, perplexity {ppl:.3f}")
    return 0


def _rank_ended(ended, mpi) -> int:
    """Say which rank ended how, when it could not say it itself (killed)."""
    import signal
    import socket
    if ended.signal and ended.signal not in (signal.SIGINT, signal.SIGTERM):
        name = signal.Signals(ended.signal).name
        print(f"darkcfg: error: rank {mpi.launched_rank()} of {mpi.launched_size()} (pid "
              f"{ended.pid} on {socket.gethostname()}) was killed by signal {ended.signal} "
              f"({name}); the job ends (the last checkpoint is kept as it was)",
              file=sys.stderr, flush=True)
    return ended.code


def _train_ranked(team, run, args: argparse.Namespace, opts) -> int:
    """`darkcfg train` as one MPI rank (train/mpi.py): rank 0 prints; a rank that fails
    says so with its rank. Before training the ranks agree (a problem found by all of
    them is said once); during training a failure ends every rank (MPI_Abort), and the
    last checkpoint stays as it was."""
    import traceback

    from .train.mpi import other_rank_failed
    opts.reducer = team
    lead = team.rank == 0
    status = _StatusLine() if lead else None
    try:
        run(args.data, args.cfg, args.weights, opts, strict=not args.lenient,
            log=status.say if status else (lambda message: None),
            progress=status.show if status else None)
        return 0
    except KeyboardInterrupt:
        if team.stopping or not team.started:   # every rank stops after one iteration
            if lead:
                raise
            return 130
        print(f"darkcfg: interrupted: rank {team.rank} of {team.size}", file=sys.stderr,
              flush=True)
        team.abort(130)
    except BaseException as e:      # any failure must end every rank
        if other_rank_failed(e) is not None:   # another rank said why
            return 2
        if team.started and getattr(e, "every_rank", False):   # all stop here: say it once
            if lead:
                print(f"darkcfg: error: {e}", file=sys.stderr)
            return 2
        message = str(e) if isinstance(e, DarkcfgError) else \
            "".join(traceback.format_exception(e)).rstrip()
        if not team.started:        # the ranks meet once before training
            failed = team.agree(message)
            if len({f.message for f in failed}) == 1:
                if team.rank == failed[0].rank:
                    where = "every rank" if len(failed) == team.size else \
                        ", ".join(f"rank {f.rank}" for f in failed) + f" of {team.size}"
                    print(f"darkcfg: error ({where}): {message}", file=sys.stderr)
            else:
                print(f"darkcfg: error: rank {team.rank} of {team.size}: {message}",
                      file=sys.stderr)
            return 2
        print(f"darkcfg: error: rank {team.rank} of {team.size}: {message}; ending the "
              "job (the last checkpoint is kept as it was)", file=sys.stderr, flush=True)
        team.abort(2)
    finally:
        if status is not None:
            status.end_line()
    return 2


def cmd_valid(args: argparse.Namespace) -> int:
    from .data.classifier import open_dataset, read_data_config
    from .network import Network
    from .predict import detector_head
    from .train.classifier import accuracy
    data_cfg = read_data_config(args.data, strict=not args.lenient)
    net = Network.load(args.cfg, args.weights, strict=not args.lenient)
    head = detector_head(net.graph)
    if head is not None:
        raise DarkcfgError(f"{args.cfg}: layer {head.index} is a [{head.type}]: `valid` "
                           "measures classifiers; use `darkcfg map` for a detector")
    from .embed import metric_head
    for flag, given in (("--layer", args.layer is not None),
                        ("--save-threshold", args.save_threshold)):
        if given and metric_head(net.graph) is None:
            what = ("chooses the embedding" if flag == "--layer" else
                    "replaces the verification threshold")
            raise DarkcfgError(f"{args.cfg}: {flag} {what} of a net ending in [triplet] or "
                               f"[contrastive]; this one is a classifier (leave {flag} out)")
    if metric_head(net.graph) is not None:
        if _on_dask(args):
            print("darkcfg: note: an embedding net's validation runs in this process "
                  "(--workers/--scheduler are for classifiers)", file=sys.stderr)
        return _valid_embedding(args, data_cfg, net)
    classes = net.graph.output_layer.outputs
    if classes != data_cfg.classes:     # as `train` and `map` check it
        raise DataError(f"{args.data}: classes={data_cfg.classes}, but {args.cfg} has "
                        f"{classes} outputs")
    split = open_dataset(data_cfg, "valid")
    if split is None:
        raise DataError(f"{args.data}: no 'valid' key: nothing to validate on")
    top = args.top or max(data_cfg.top, 5)
    if _on_dask(args):
        top1, topk = _valid_on_workers(args, split, classes, top)
    else:
        top1, topk = accuracy(net, split, classes, top)
    print(f"{len(split)} images ({split.source}): top-1 {100 * top1:.2f}%, "
          f"top-{top} {100 * topk:.2f}%")
    return 0


def _valid_on_workers(args: argparse.Namespace, split, classes: int, top: int
                      ) -> tuple[float, float]:
    """`valid`'s accuracy from Dask workers: chunks of whole forward batches of 100
    images, cut where the serial run cuts them, so the counts are the serial ones."""
    import os

    from .data.classifier import check_labels
    from .distributed import Cluster, valid_chunk
    check_labels(split, classes)        # as the serial run does, before the workers start
    n = len(split)
    spec = _net_spec(args)
    with Cluster(args.workers, args.scheduler) as cluster:
        per = 100 * max(1, -(-n // (100 * 4 * cluster.threads)))
        spans = [(a, min(a + per, n)) for a in range(0, n, per)]
        counts = cluster.map(valid_chunk, [(spec, os.path.abspath(args.data),
                                            not args.lenient, a, b, classes, top)
                                           for a, b in spans],
                             [b - a for a, b in spans], progress=_image_progress)
    return sum(c[0] for c in counts) / n, sum(c[1] for c in counts) / n


def cmd_embed(args: argparse.Namespace) -> int:
    from .embed import embed_images, embedding_layer, failed_list_path, save_embeddings
    from .fileio import check_target
    from .network import Network
    if args.output:                             # before the work, not after it
        check_target(args.output, "embeddings")
        check_target(failed_list_path(args.output), "list of failed images")
    net = Network.load(args.cfg, args.weights, strict=not args.lenient)
    layer = embedding_layer(net.graph, args.layer)
    emb, kept, failed = embed_images(net, args.images, layer)
    for f in failed:
        print(f"darkcfg: error: {f.reason} (image {f.index}, left out)", file=sys.stderr)
    if args.output and len(emb):
        listing = save_embeddings(args.output, emb, failed)
        print(f"saved {len(emb)} x {emb.shape[1]} embeddings (layer {layer}, rows in input "
              f"order) to {args.output}; {len(failed)} images left out, listed in {listing}")
    elif args.output:
        print(f"darkcfg: nothing saved to {args.output}: no image could be read",
              file=sys.stderr)
    else:
        for i, row in zip(kept, emb):
            print(f"{args.images[i]}: " + " ".join(f"{v:.6g}" for v in row))
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .embed import (
        distance_of,
        embed_images,
        embedding_layer,
        load_threshold,
        pair_distance,
        threshold_path,
    )
    from .network import Network
    net = Network.load(args.cfg, args.weights, strict=not args.lenient)
    stored = load_threshold(args.weights) if args.threshold is None else None
    # without --layer, the layer `valid` chose the stored threshold on
    layer = embedding_layer(net.graph, args.layer if args.layer is not None or stored is None
                            else stored.layer)
    kind = distance_of(net.graph)
    if stored is not None and (stored.layer, stored.distance) != (layer, kind):
        raise DarkcfgError(f"{threshold_path(args.weights)} holds a threshold for the "
                           f"{stored.distance} distance at layer {stored.layer}, not {kind} "
                           f"at layer {layer}: pass --threshold, or run `darkcfg valid` "
                           "for this layer")
    emb, _, failed = embed_images(net, [args.image_a, args.image_b], layer)
    if failed:
        raise DataError(failed[0].reason)
    d = pair_distance(emb[0], emb[1], kind)
    print(f"distance {d:.6g} ({kind}, layer {layer})")
    if args.threshold is None and stored is None:
        print(f"darkcfg: note: no threshold ({threshold_path(args.weights)} is absent): pass "
              "--threshold T, or run `darkcfg valid` to choose one", file=sys.stderr)
        return 0
    t = args.threshold if args.threshold is not None else stored.threshold
    source = "--threshold" if args.threshold is not None else \
        f"{threshold_path(args.weights)}: balanced accuracy {100 * stored.accuracy:.2f}% on " \
        f"{stored.valid}"
    print(f"{'same' if d <= t else 'different'} (threshold {t:.6g}, {source})")
    return 0


def _valid_embedding(args: argparse.Namespace, data_cfg, net) -> int:
    """`valid` on a [triplet] net: leave-one-out retrieval over the valid split, the
    verification threshold (stored beside the weights for `compare`) and a PCA scatter."""
    import os

    from .data.classifier import open_dataset
    from .embed import (
        Threshold,
        distance_of,
        draw_scatter,
        embedding_layer,
        save_threshold,
        threshold_path,
        validate_embeddings,
    )
    from .fileio import check_target
    stem = os.path.splitext(os.fspath(args.weights))[0]
    scatter = args.scatter or f"{stem}_scatter.png"
    check_target(scatter, "scatter plot")           # before the work, not after it
    # the threshold file is written when there is none, replaced only when asked: a
    # `valid --layer N` for a look at another layer must not undo the one `compare` uses
    tpath = threshold_path(args.weights)
    keep = os.path.lexists(tpath) and not args.save_threshold
    if not keep:
        check_target(tpath, "threshold file")
    split = open_dataset(data_cfg, "valid")
    if split is None:
        raise DataError(f"{args.data}: no 'valid' key: nothing to validate on")
    layer = embedding_layer(net.graph, args.layer)
    emb, r = validate_embeddings(net, split, layer)
    kind = distance_of(net.graph)
    print(f"{r.images} images ({split.source}), leave-one-out retrieval ({kind} distance): "
          f"recall@1 {100 * r.recall_at_1:.2f}%, recall@5 {100 * r.recall_at_5:.2f}%, "
          f"mAP@R {100 * r.map_at_r:.2f}%")
    print(f"verification: same class when the distance is <= {r.threshold:.6g} (balanced "
          f"accuracy {100 * r.accuracy:.2f}% over all pairs)")
    if not keep:
        saved = save_threshold(args.weights, Threshold(r.threshold, kind, layer, r.accuracy,
                                                       f"{split.source}, {r.images} images"))
    draw_scatter(scatter, emb, split.labels, split.names,
                 title=f"{os.path.basename(args.cfg)}: {r.images} images, PCA")
    if keep:
        print(f"{tpath} kept ({_stored_threshold(args.weights)}); pass --save-threshold to "
              f"replace it with this one; scatter plot {scatter}")
    else:
        print(f"threshold saved to {saved} (read by `darkcfg compare`); scatter plot "
              f"{scatter}")
    return 0


def _stored_threshold(weights) -> str:
    """What the threshold file beside `weights` holds, in words (or why it is unreadable)."""
    from .embed import load_threshold
    try:
        t = load_threshold(weights)
    except DarkcfgError as e:
        return f"unreadable: {e}"
    return (f"threshold {t.threshold:.6g} at layer {t.layer}, chosen on {t.valid}" if t
            else "absent")


def cmd_detect(args: argparse.Namespace) -> int:
    import json
    import os

    from .data.images import load_image
    from .detection.detect import detect, heads
    from .detection.draw import save_detections
    from .fileio import check_folder
    from .network import Network
    from .predict import read_labels
    _check_unit("--thresh", args.thresh)
    _check_unit("--nms", args.nms, " (0: no NMS)")
    check_folder(args.out_dir, "drawings")     # before the work, not after it
    names = read_labels(args.names, "names") if args.names else None
    net = Network.load(args.cfg, args.weights, dialect=args.dialect, strict=not args.lenient,
                       width=args.width, height=args.height, channels=args.channels)
    classes = heads(net.graph)[0].classes
    if names is not None and len(names) != classes:
        raise DataError(f"{args.names}: {len(names)} names, but the network has {classes} "
                        "classes")
    failed, report, drawn = 0, [], set()
    for path, image, found, seconds, error in _detections(args, net, load_image, detect):
        if error:
            print(f"darkcfg: error: {error}", file=sys.stderr)
            failed += 1
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        png = os.path.join(args.out_dir, f"{stem}_boxes.png")
        if png in drawn:                        # same file name from another folder
            png = os.path.join(args.out_dir, f"{stem}_{len(drawn)}_boxes.png")
        drawn.add(png)
        try:
            save_detections(png, image, found, names)
        except DarkcfgError as e:            # e.g. a read-only drawing left from before
            print(f"darkcfg: error: {e}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            report.append({"image": path, "width": image.shape[2], "height": image.shape[1],
                           "drawn": png, "seconds": seconds,
                           "detections": [d.to_dict(names) for d in found]})
        else:
            print(f"{path}: Predicted in {seconds:.3f} seconds; {len(found)} objects, drawn "
                  f"in {png}")
            for d in found:
                print(d.format(names))
    if args.json:
        print(json.dumps({"images": report}, indent=1))
    return 1 if failed else 0


def _detections(args: argparse.Namespace, net, load_image, detect):
    """(image file, image, detections, seconds, error) per image in order: detected
    here, or on Dask workers (then the image is read again here, for the drawing)."""
    import time
    if not _on_dask(args):
        for path in args.images:
            try:
                image = load_image(path, channels=net.input_shape[0])
            except DarkcfgError as e:
                yield path, None, None, 0.0, str(e)
                continue
            start = time.perf_counter()
            found = detect(net, image, args.thresh, args.nms, args.letter_box)
            yield path, image, found, time.perf_counter() - start, ""
        return
    from .distributed import detect_chunk
    spec = _net_spec(args, dialect=args.dialect, width=args.width, height=args.height,
                     channels=args.channels)
    for path, (found, seconds, error) in _on_workers(
            args, detect_chunk, args.images, spec, args.thresh, args.nms, args.letter_box):
        image = None if error else load_image(path, channels=net.input_shape[0])
        yield path, image, found, seconds, error


def cmd_map(args: argparse.Namespace) -> int:
    from .data.classifier import read_data_config
    from .detection.detect import heads
    from .detection.evaluate import evaluate_network, format_report, read_image_list
    from .network import Network
    _check_unit("--thresh", args.thresh)
    _check_unit("--nms", args.nms, " (0: no NMS)")
    data = read_data_config(args.data, strict=not args.lenient)
    if data.path("valid") is None:
        raise DataError(f"{args.data}: no 'valid' key: no images to evaluate")
    net = Network.load(args.cfg, args.weights, strict=not args.lenient, width=args.width,
                       height=args.height)
    classes = heads(net.graph)[0].classes
    if classes != data.classes:
        raise DataError(f"{args.data}: classes={data.classes}, but the network detects "
                        f"{classes} classes")
    images = read_image_list(data.path("valid"))

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} images", end="\n" if done == total else "",
              file=sys.stderr, flush=True)

    if _on_dask(args):
        from .detection.evaluate import evaluate_results
        from .distributed import map_chunk
        spec = _net_spec(args, width=args.width, height=args.height)
        found = [r for _, r in _on_workers(args, map_chunk, images, spec, classes,
                                           args.thresh, args.nms, args.letter_box)]
        result = evaluate_results(images, found, classes)
    else:
        result = evaluate_network(net, images, classes, thresh=args.thresh, nms=args.nms,
                                  letter=args.letter_box,
                                  progress=None if args.quiet else progress)
    print(format_report(result, data.names))
    return 0


def cmd_calc_anchors(args: argparse.Namespace) -> int:
    from .detection.anchors import anchors_for, masks, write_cfg
    width, height = args.width, args.height
    if args.write and (width is None or height is None):
        from .detection.anchors import cfg_size
        cfg_w, cfg_h = cfg_size(args.write)
        width, height = width or cfg_w, height or cfg_h
    if width is None or height is None:
        raise DarkcfgError("give --width and --height (the network's input size), or --write "
                           "CFG to take them from the cfg")
    found = anchors_for(args.data, args.num, width, height, seed=args.seed,
                        restarts=args.restarts)
    print(f"anchors = {found.line()}")
    print(f"average IoU {100 * found.avg_iou:.2f}% over {found.boxes} boxes at {width}x"
          f"{height} (best of {args.restarts} k-means++ runs, seed {args.seed})")
    for heads in (2, 3):
        if args.num % heads == 0:
            groups = masks(list(range(heads)), args.num)
            print(f"{heads} heads, finest grid first: " +
                  "  ".join(f"mask={','.join(map(str, g))}" for g in groups))
    if args.write:
        from .data.classifier import read_data_config
        for line in write_cfg(args.write, found, read_data_config(args.data).classes):
            print(f"{args.write}: {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkcfg", description="Run, summarise and train Darknet .cfg networks on a CPU.")
    parser.add_argument("--version", action="version", version=f"darkcfg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="print a cfg's layers, shapes, parameters and FLOPs")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("--format", choices=("table", "json", "dot"), default="table",
                   help="table (Darknet's layout plus extras), json, or dot (Graphviz)")
    _shape_args(p)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("run", help="run a network on images; top-k classes for classifiers")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("weights", help="the .weights file")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--labels", help="class names, one per line")
    p.add_argument("--top", type=_positive_int, default=5,
                   help="how many classes to print (5)")
    p.add_argument("--output", help="save the raw network outputs as a .npy array (to "
                   "this exact path; its folder must exist)")
    _shape_args(p)
    _dask_args(p)
    p.set_defaults(func=cmd_run)

    def count(low: int):
        """An argparse type: a whole number >= low (0 would divide by zero, <0 is no
        interval)."""
        def parse(text: str) -> int:
            try:
                value = int(text)
            except ValueError:
                value = None
            if value is None or value < low:
                raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got "
                                                 f"{text!r}")
            return value
        parse.__name__ = f"count>={low}"
        return parse

    p = sub.add_parser("train", help="train a classifier from a .data file and a cfg")
    p.add_argument("data", help="the .data file (classes, train, valid, backup, ...)")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("weights", nargs="?", help="start from (or resume) these weights; a "
                   "prefix file (e.g. darknet53.conv.74) loads over a random initialisation")
    p.add_argument("--clear", action="store_true",
                   help="count iterations from 0 after loading the weights, momentum from "
                   "zero (Darknet's -clear: transfer learning from trained weights)")
    p.add_argument("--weights-cfg", metavar="CFG",
                   help="the cfg the weights were made for: its layers that match this cfg "
                   "load, the rest (a new head) is initialised (darkcfg's own checkpoints "
                   "need no such hint)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and data")
    p.add_argument("--max-batches", type=count(1), help="override [net] max_batches")
    p.add_argument("--save-every", type=count(1), default=1000,
                   help="write <cfg>_<N>.weights every N iterations (1000)")
    p.add_argument("--backup-every", type=count(1), default=100,
                   help="write <cfg>.backup every N iterations (100)")
    p.add_argument("--valid-every", type=count(0), default=0,
                   help="validate every N iterations (default 0: once per epoch)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--lenient", action="store_true", help="cfg problems become warnings")
    p.add_argument("--mpi", action="store_true",
                   help="train as one rank of an MPI job (implied when mpiexec starts more "
                   "than one rank): `mpiexec -n N darkcfg train ...` shares each "
                   "iteration's subdivisions among N ranks (needs darkcfg[mpi])")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("rnn", help="char-RNN on bytes: train, generate, valid (Darknet's "
                       "examples/rnn.c)")
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = acts.add_parser("train", help="train a recurrent cfg (256 in, 256 out) on a text")
    q.add_argument("text")
    q.add_argument("cfg")
    q.add_argument("weights", nargs="?", help="start from these weights (their seen counts)")
    q.add_argument("--backup", default="backup", help="checkpoint folder (default backup)")
    q.add_argument("--max-batches", type=int, help="iterations (default: the cfg's)")
    q.add_argument("--seed", type=int, default=0, help="random offsets and weights")
    q = acts.add_parser("generate", help="text from a trained char-RNN")
    q.add_argument("cfg")
    q.add_argument("weights")
    q.add_argument("--seed", default="", help="text fed first (default a newline)")
    q.add_argument("--len", type=_positive_int, default=500, help="bytes to generate (500)")
    q.add_argument("--temp", type=float, default=0.7, help="temperature (0.7)")
    q.add_argument("--rng", type=int, default=0, help="random seed of the sampling")
    q = acts.add_parser("valid", help="bits per byte and perplexity on a text")
    q.add_argument("cfg")
    q.add_argument("weights")
    q.add_argument("text")
    q.add_argument("--tail", action="store_true", help="only the held-out last 5%% that "
                   "`rnn train` does not train on")
    p.set_defaults(func=cmd_rnn)

    p = sub.add_parser("partial", help="the first N layers' parameters of a .weights "
                       "file, seen reset (Darknet's partial: a backbone for transfer learning)")
    p.add_argument("cfg", help="the .cfg file the weights belong to")
    p.add_argument("weights", help="the .weights file")
    p.add_argument("out", help="the .weights file to write (e.g. darknet53.conv.74)")
    p.add_argument("n", type=int, help="how many layers to keep: layers 0..N-1, N counting "
                   "every section after [net] as Darknet's layer index does")
    p.add_argument("--dialect", choices=DIALECTS,
                   help="which Darknet lineage's layout (default: as `run` chooses)")
    p.add_argument("--lenient", action="store_true", help="cfg problems become warnings")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_partial)

    p = sub.add_parser("export", help="write the network (cfg + weights) as an ONNX model "
                       "(needs darkcfg[onnx])")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("weights", help="the .weights file")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13 or newer (17)")
    p.add_argument("--batch", type=_batch_arg, default=1,
                   help="images per run: a number (1) or 'dynamic'")
    p.add_argument("--decode", action="store_true",
                   help="detectors: decode every head into `boxes` (N, K, 4: x1 y1 x2 y2 in "
                   "network-input pixels) and `scores` (N, K, classes) instead of the raw "
                   "head outputs")
    p.add_argument("--no-fuse", action="store_true",
                   help="keep batch normalisation as BatchNormalization nodes (default: "
                   "folded into the convolution weights)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--dialect", choices=DIALECTS,
                   help="which Darknet lineage's numbers to follow (default: as `run` "
                   "chooses)")
    p.add_argument("--lenient", action="store_true", help="cfg problems become warnings")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("valid", help="top-1 and top-k accuracy on the .data file's valid set "
                       "(a [triplet] net: recall@1/@5, mAP@R, a threshold, a scatter plot)")
    p.add_argument("data", help="the .data file")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("weights", help="the .weights file")
    p.add_argument("--top", type=_positive_int,
                   help="k for top-k (default: the .data top, at least 5)")
    p.add_argument("--scatter", help="a [triplet] net: where the PCA scatter plot of the "
                   "embeddings goes (default: <weights without .weights>_scatter.png)")
    p.add_argument("--layer", type=int, help="a [triplet] net: the layer whose output is the "
                   "embedding measured (negative: from the end; default: the network output)")
    p.add_argument("--save-threshold", action="store_true", help="a [triplet] net: replace "
                   "<weights>.threshold with this run's threshold (default: written only "
                   "when there is none yet)")
    p.add_argument("--lenient", action="store_true", help="cfg problems become warnings")
    _dask_args(p)
    p.set_defaults(func=cmd_valid)

    p = sub.add_parser("embed", help="embeddings of images by a [triplet] net (or any "
                       "layer's output)")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("weights", help="the .weights file")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--layer", type=int, help="the layer whose output is the embedding "
                   "(negative: from the end; default: the network output, the [triplet])")
    p.add_argument("--output", help="save the embeddings as a .npy array, rows in input "
                   "order, to this exact path; images that cannot be read are left out and "
                   "listed beside it in <output>.failed.txt")
    p.add_argument("--lenient", action="store_true", help="cfg problems become warnings")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("compare", help="the embedding distance of two images, and same or "
                       "different under a threshold")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("weights", help="the .weights file")
    p.add_argument("image_a", help="an image file")
    p.add_argument("image_b", help="another image file")
    p.add_argument("--threshold", type=float, help="same when the distance is at most this "
                   "(default: the one `darkcfg valid` stored in <weights>.threshold)")
    p.add_argument("--layer", type=int, help="the layer whose output is the embedding "
                   "(default: the one the stored threshold was chosen on, else the output)")
    p.add_argument("--lenient", action="store_true", help="cfg problems become warnings")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("detect", help="objects in images with a [yolo]/[region] detector")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("weights", help="the .weights file")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--names", help="class names, one per line (e.g. coco.names)")
    p.add_argument("--thresh", type=float, default=0.5,
                   help="objectness and class probability threshold (0.5)")
    p.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold; 0: none (0.45)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--out-dir", default=".",
                   help="where <image>_boxes.png goes (default: the current folder)")
    _letter_args(p)
    _shape_args(p)
    _dask_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("map", help="detector mAP@0.5 and mAP@0.5:0.95 on a .data valid list")
    p.add_argument("data", help="the .data file (classes, valid, names)")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("weights", help="the .weights file")
    p.add_argument("--thresh", type=float, default=0.005, help="probability floor (0.005)")
    p.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold (0.45)")
    _letter_args(p)
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--lenient", action="store_true", help="cfg problems become warnings")
    _dask_args(p)
    p.set_defaults(func=cmd_map)
    p = sub.add_parser("calc_anchors", help="anchors for a YOLO cfg by k-means over the "
                       "training boxes of a .data file")
    p.add_argument("data", help="the detection .data file (its train list and labels)")
    p.add_argument("--num", type=_positive_int, default=9, help="how many anchors (9)")
    p.add_argument("--width", type=_positive_int, help="network width (default: the cfg's)")
    p.add_argument("--height", type=_positive_int, help="network height (default: the cfg's)")
    p.add_argument("--seed", type=int, default=0, help="seed for the k-means++ starts (0)")
    p.add_argument("--restarts", type=_positive_int, default=10,
                   help="k-means runs; the best average IoU is kept (10)")
    p.add_argument("--write", metavar="CFG",
                   help="set anchors, num, mask, classes and the heads' filters in CFG")
    p.set_defaults(func=cmd_calc_anchors)
    for extend in _EXTENSIONS:
        extend(sub)
    return parser


# Other modules add their sub-commands here (run, train, valid, ...).
_EXTENSIONS: list = []


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    def show(message, category, filename, lineno, file=None, line=None):
        prefix = "warning: " if issubclass(category, CfgWarning) else f"{category.__name__}: "
        print(prefix + str(message), file=sys.stderr)

    try:                # Ctrl-C can come at any time, importing Numba included
        args = build_parser().parse_args(argv)
        warnings.showwarning = show
        if args.command != "summary":       # summary never touches Numba
            from .kernels.config import announce_compiling
            announce_compiling(_to_stderr)
        return args.func(args)
    except DarkcfgError as e:
        print(f"darkcfg: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("darkcfg: error: out of memory (try a smaller width/height/batch)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("darkcfg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (`darkcfg ... | head`): quiet, and no second error at exit
        sys.stdout = None
        return 0
