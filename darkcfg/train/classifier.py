"""`darkcfg train` for classifiers: a softmax net on a classifier `.data` file (image
lists or arrays), top-1 on the valid split; the loop itself is train/loop.py's."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DarkcfgError, DataError
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


def accuracy(net: Network, data, classes: int, top: int, batch: int = 100) -> tuple[float, float]:
    """(top-1, top-k) accuracy of the network on a dataset, at inference."""
    from ..data.classifier import batches
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


def triplet_status(net: Network) -> str:
    """The progress line's text for an embedding net: for [triplet] the fraction of the
    mined triplets that were active (loss > 0) in the last mini-batch, for [contrastive]
    AH's contrast accuracy."""
    stats = net.layers[-1].stats
    if not stats:
        return ""
    if "active" in stats:
        return f"  active {stats['active']:.3f}"
    return f"  contrast acc {stats['accuracy']:.3f}"


def metric_stat(net: Network) -> float | None:
    """The chart's statistic of the last mini-batch (triplet_status's number), None when
    there is none (AH's contrast accuracy is -1 without a positive and a negative)."""
    stats = getattr(net.layers[-1], "stats", None)
    if not stats:
        return None
    value = stats.get("active", stats.get("accuracy"))
    return None if value is None or value < 0 else value


def metric_stat_name(layer) -> str:
    if layer is None:
        return ""
    return "active" if layer.type == "triplet" else "contrast acc"


def two_views(graph) -> bool:
    """AH's [net] contrastive=1 (src/data.c: load_image_augment_paths): each mini-batch
    holds every image twice, consecutive, augmented independently (its two views). The
    mini-batch must be even so that no pair is split."""
    sec = graph.net.section
    entry = sec.entries.get("contrastive")
    try:
        on = entry is not None and float(entry.value) != 0
    except ValueError:
        raise sec.error(f"'contrastive' must be a number, got '{entry.value}'",
                        "contrastive") from None
    if on and graph.net.batch % 2:
        raise sec.error(f"two views of each image go in one mini-batch, but "
                        f"batch/subdivisions is {graph.net.batch} (odd): make it even",
                        "contrastive")
    return on


def train(data_file: str, cfg_file: str, weights: str | None, opts: TrainOptions,
          *, strict: bool = True, log: Log = silent,
          progress: Progress | None = None) -> Path:
    """Train a classifier; returns the path of the final weights. `log` and `progress`:
    see run_training."""
    from ..data.augment import Augment
    from ..data.classifier import open_dataset, pk_indices, read_data_config
    from ..graph import load_graph
    from ..netcfg import not_computed
    from ..schedule import check_schedule

    opts.check()
    data_cfg = read_data_config(data_file, strict=strict)
    graph = load_graph(cfg_file, strict=strict)
    for where in not_computed(graph.net.section, ("contrastive",)):
        log(f"warning: {where} is not computed by darkcfg; training goes on without it")
    net = Network(graph)
    netopts = graph.net.opts
    check_schedule(netopts, graph.net.section)
    if netopts["time_steps"] > 1:       # rows would be time steps of sequences, not images
        raise DarkcfgError(f"{cfg_file}: time_steps={netopts['time_steps']}: a classifier "
                           "trains on single images (time_steps=1); sequence nets train on "
                           "text with `darkcfg rnn train`")
    metric = graph.layers[-1] if graph.layers[-1].type in ("triplet", "contrastive") else None
    classes = data_cfg.classes if metric else graph.output_layer.outputs
    if data_cfg.classes != classes:
        raise DarkcfgError(f"{data_file}: classes={data_cfg.classes} but {cfg_file} has "
                           f"{classes} outputs")
    # a [triplet] net: each mini-batch P classes x K images (every anchor has positives)
    pk = metric.classes_and_images(graph.net.batch) if metric and metric.type == "triplet" \
        else None
    views = two_views(graph)
    if pk and views:
        log(f"warning: {graph.net.section.file}: contrastive=1 is not used: a [triplet] "
            "net's mini-batches are P classes x K images")
    train_set = open_dataset(data_cfg, "train")
    if train_set is None:
        raise DarkcfgError(f"{data_file}: no 'train' key: nothing to train on")
    if len(train_set) == 0:
        raise DataError(f"{data_cfg.where('train')}: {train_set.source} holds no images")
    valid_set = open_dataset(data_cfg, "valid")
    batch = graph.net.batch * netopts["subdivisions"]
    max_batches = max_batches_of(cfg_file, netopts, opts)
    base = Path(cfg_file).stem
    start = prepare_run(net, data_cfg, weights, opts, log, base=base,
                        max_batches=max_batches)
    augment = Augment.from_net(netopts, net.input_shape)
    n = len(train_set)
    eye = np.eye(classes, dtype=np.float32)

    mini = graph.net.batch
    # AH's contrastive=1: each image twice (consecutive), augmented independently
    images = IterationImages(lambda i: batch_indices(n, i, batch // 2 if views else batch,
                                                     opts.seed))

    def sample(i: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # mini-batch k of iteration i
        if pk:
            idx = pk_indices(train_set.labels, *pk, 1, rng, train_set.source)
        elif views:
            idx = np.repeat(images.part(i, k, mini // 2), 2)
        else:
            idx = images.part(i, k, mini)
        # an unreadable image is replaced by the next readable one, its label with it
        x, used = train_set.train_batch(idx, net.input_shape, augment, rng)
        return x, eye[train_set.labels[used]]

    if metric:      # an embedding: leave-one-out retrieval over the valid split
        from ..embed import validate_embeddings

        def validate() -> float:
            return validate_embeddings(net, valid_set, net.output_index)[1].recall_at_1
    else:
        def validate() -> float:
            return accuracy(net, valid_set, classes, 1)[0]
    task = Task(sample, n, opts.valid_every or max(1, n // batch),
                validate if valid_set else None, "recall@1" if metric else "top-1",
                status=(lambda: triplet_status(net)) if metric else (lambda: ""),
                stat=lambda: metric_stat(net), stat_name=metric_stat_name(metric))
    log(f"training {cfg_file} on {n} images ({train_set.source}), batch {batch}"
        + (f" ({pk[0]} classes x {pk[1]} images per mini-batch)" if pk else "")
        + f", {max_batches} iterations; checkpoints in {start.backup}/")
    return run_training(net, task, opts, base=base, backup=start.backup,
                        max_batches=max_batches, history=start.history,
                        resume_hint=f"darkcfg train {data_file} {cfg_file}", log=log,
                        progress=progress)
