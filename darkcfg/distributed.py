"""`run`, `detect`, `valid` and `map` on Dask distributed (`--workers N` / `--scheduler
ADDRESS`; the darkcfg[dask] extra).

The images are cut into chunks; a task computes one chunk on a worker and returns
plain results (outputs, boxes, hit counts), which the client puts back in input order.
A task is pure (same chunk, same result; it writes nothing), so when a worker dies Dask
computes its chunks again elsewhere: no result is lost or counted twice. Each worker
process loads the network once per thread (`network`, keyed by the files' paths, sizes
and modification times, so changed weights are loaded again) and keeps it for the next
chunks. Workers find the kernels Numba compiled in its on-disk cache (the same folder,
NUMBA_CACHE_DIR included, on this machine; each machine compiles once), and a
LocalCluster's workers run one Numba thread each.

dask is imported only here, and this module only for `--workers` / `--scheduler`.
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DarkcfgError

Progress = Callable[[int, int], None]       # (images done, images in all)


@dataclass(frozen=True)
class NetSpec:
    """What a worker needs to load the network: the files (absolute paths: the same on
    every machine), how the client loaded them, and the files' (size, mtime) as the
    client saw them (part of the cache key)."""
    cfg: str
    weights: str
    options: tuple[tuple[str, Any], ...] = ()
    stamp: tuple[int, ...] = ()

    @classmethod
    def of(cls, cfg: str, weights: str, **options) -> NetSpec:
        cfg, weights = os.path.abspath(cfg), os.path.abspath(weights)
        stamp = tuple(v for p in (cfg, weights) for v in _stat(p))
        return cls(cfg, weights, tuple(sorted(options.items())), stamp)


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


# --- on the workers ---------------------------------------------------------------------

_NETS: dict[tuple[NetSpec, int], Any] = {}
_COMPILED = [0, False]      # darkcfg kernels compiled in this process; listener installed


def network(spec: NetSpec):
    """This worker thread's network for `spec`, loaded at the first chunk (a network
    keeps per-layer buffers: two threads must not share one)."""
    key = (spec, threading.get_ident())
    net = _NETS.get(key)
    if net is None:
        from .network import Network
        _count_compiles()
        net = _NETS[key] = Network.load(spec.cfg, spec.weights, **dict(spec.options))
    return net


def _count_compiles() -> None:
    """Count the darkcfg kernels this process compiles (a Numba cache miss)."""
    if _COMPILED[1]:
        return
    import numba.core.event as ev

    class Listener(ev.Listener):
        def on_start(self, event):
            func = getattr(event.data.get("dispatcher"), "py_func", None)
            if getattr(func, "__module__", "").startswith("darkcfg."):
                _COMPILED[0] += 1

        def on_end(self, event):
            pass
    ev.register("numba:compile", Listener())
    _COMPILED[1] = True


def compiled_kernels() -> int:
    """How many darkcfg kernels this process has compiled since it loaded a network
    (0 when every kernel came from Numba's cache); for `Client.run`."""
    return _COMPILED[0]


def run_chunk(spec: NetSpec, paths: Sequence[str]) -> list[tuple[np.ndarray | None, str]]:
    """`darkcfg run` on some images: (the flat output, "") or (None, the error)."""
    from .predict import prepare
    net = network(spec)
    out: list[tuple[np.ndarray | None, str]] = []
    for path in paths:
        try:
            x = prepare(path, net.input_shape)
        except DarkcfgError as e:
            out.append((None, str(e)))
            continue
        out.append((net.forward(x[None])[0].ravel().copy(), ""))
    return out


def detect_chunk(spec: NetSpec, paths: Sequence[str], thresh: float, nms: float,
                 letter: bool | None) -> list[tuple[list | None, float, str]]:
    """`darkcfg detect` on some images: (the detections, seconds, "") or (None, 0, the
    error). The client draws them."""
    import time

    from .data.images import load_image
    from .detection.detect import detect
    net = network(spec)
    out: list[tuple[list | None, float, str]] = []
    for path in paths:
        try:
            image = load_image(path, channels=net.input_shape[0])
        except DarkcfgError as e:
            out.append((None, 0.0, str(e)))
            continue
        start = time.perf_counter()
        found = detect(net, image, thresh, nms, letter)
        out.append((found, time.perf_counter() - start, ""))
    return out


def map_chunk(spec: NetSpec, paths: Sequence[str], classes: int, thresh: float, nms: float,
              letter: bool | None) -> list:
    """`darkcfg map`'s per-image work (detection.evaluate.evaluate_image) on some images."""
    from .detection.evaluate import evaluate_image
    net = network(spec)
    return [evaluate_image(net, path, classes, thresh, nms, letter) for path in paths]


_DATA: dict[tuple[str, bool, tuple[int, ...]], Any] = {}


def valid_chunk(spec: NetSpec, data_file: str, strict: bool, start: int, stop: int,
                classes: int, top: int, batch: int = 100) -> tuple[int, int, int]:
    """(top-1 hits, top-k hits, images) of the valid images start..stop-1, in forward
    passes of `batch` images cut where `darkcfg valid` cuts them (start is a multiple
    of `batch`), so every output is the one the serial run computes."""
    from .data.classifier import open_dataset, read_data_config
    net = network(spec)
    key = (os.path.abspath(data_file), strict, _stat(data_file))
    split = _DATA.get(key)
    if split is None:
        split = _DATA[key] = open_dataset(read_data_config(data_file, strict=strict), "valid")
    hit1 = hitk = 0
    for at in range(start, stop, batch):
        idx = np.arange(at, min(at + batch, stop))
        x = split.batch(idx, net.input_shape, None, None)
        y = net.forward(x).reshape(len(x), -1)
        labels = split.labels[idx]
        order = np.argsort(-y, axis=1, kind="stable")[:, :top]
        hit1 += int(np.sum(order[:, 0] == labels))
        hitk += int(np.sum(np.any(order == labels[:, None], axis=1)))
    return hit1, hitk, stop - start


# --- on the client ----------------------------------------------------------------------

class Cluster:
    """A Dask client: on a LocalCluster of `workers` processes (one thread each), or on
    the scheduler at `scheduler` ("tcp://host:8786"). A context manager."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        if (workers is None) == (scheduler is None):
            raise DarkcfgError("give either --workers N or --scheduler ADDRESS")
        if workers is not None and workers < 1:
            raise DarkcfgError(f"--workers must be >= 1; got {workers}")
        self.workers, self.scheduler = workers, scheduler
        self.client = self.cluster = None

    def __enter__(self) -> Cluster:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as e:
            raise DarkcfgError(f"--workers and --scheduler need Dask distributed ({e}): "
                               "pip install 'darkcfg[dask]'") from None
        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout="20s")
            except OSError as e:
                raise DarkcfgError(f"--scheduler {self.scheduler}: cannot reach the Dask "
                                   f"scheduler ({e}); start one with `dask scheduler` and "
                                   "workers with `dask worker ADDRESS`") from None
            return self
        # set before each worker process starts (a restarted one too)
        self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                    processes=True, dashboard_address=None,
                                    env=worker_environment())
        self.client = Client(self.cluster)
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    @property
    def threads(self) -> int:
        """Tasks the cluster runs at once (for the chunk size)."""
        info = self.client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info["workers"].values()))

    def map(self, func: Callable, tasks: Sequence[tuple], sizes: Sequence[int],
            progress: Progress | None = None,
            on_done: Callable[[int], None] | None = None) -> list:
        """func(*task) for every task on the workers; the results in task order.
        `progress(images done, images)` as tasks finish (`sizes`: images per task);
        `on_done(tasks done)` too (the tests kill a worker from it)."""
        from dask.distributed import as_completed
        futures = [self.client.submit(func, *task, pure=True) for task in tasks]
        where = {f.key: n for n, f in enumerate(futures)}
        images, total = 0, sum(sizes)
        for done, future in enumerate(as_completed(futures), start=1):
            images += sizes[where[future.key]]
            if progress is not None:
                progress(images, total)
            if on_done is not None:
                on_done(done)
        return [f.result() for f in futures]

    def chunks(self, items: Sequence, most: int = 64) -> list[list]:
        """items cut into consecutive chunks: about four per thread (a worker that
        finishes early takes another), at most `most` items each."""
        size = max(1, min(most, math.ceil(len(items) / (4 * self.threads))))
        return [list(items[i:i + size]) for i in range(0, len(items), size)]


def worker_environment() -> dict[str, str]:
    """What a LocalCluster's workers get on top of this process's environment: one Numba
    thread each (the workers share the cores), and the Numba cache folder darkcfg chose
    itself when it had to (kernels/config.py's fallback), so they read the same one."""
    import numba
    env = {"NUMBA_NUM_THREADS": "1"}
    if numba.config.CACHE_DIR and "NUMBA_CACHE_DIR" not in os.environ:
        env["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
    return env
