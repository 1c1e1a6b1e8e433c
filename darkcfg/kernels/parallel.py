"""Work split over the cores for the paths that call BLAS (transposed convs, and every
conv where kernels.gemm is not available): Python threads that run nogil
Numba kernels and single-threaded BLAS calls side by side; and per-thread scratch
buffers, which the Numba parallel loops (kernels.conv_tiles) take as (slots, size)
arrays from the calling thread.

Why not OpenBLAS's own threads: a conv is many GEMMs of a few hundred columns (a tile of
pixels, a few images), and a multi-threaded sgemm that small spends more time waking and
joining its threads than multiplying (32x196x144: 23 ms for 128 calls on 2 threads,
3.5 ms on one); and its threads spin while waiting, which is ruinous when another
process holds a core. So each conv is cut into independent tasks (gather patches, one
GEMM, the fused BN/activation epilogue), the tasks are spread over `threads()` Python
threads, and BLAS runs single-threaded inside them. With threadpoolctl absent (it is how
the BLAS thread count is set), everything runs on the calling thread and BLAS keeps its
threads.

`threads()` is Numba's thread count (NUMBA_NUM_THREADS, numba.set_num_threads), so one
setting governs both kinds of kernel; the parallel Numba kernels (OpenMP threads that
sleep when idle, kernels.config) and these threads never run at the same time, so they
do not fight over the cores.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas = None            # threadpoolctl's controller of the BLAS libraries, or False
_local = threading.local()
_lock = threading.Lock()


def threads() -> int:
    """How many threads the conv tasks use: Numba's setting, 1 without BLAS control."""
    return numba.get_num_threads() if _blas_control() else 1


def _blas_control():
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            ctl = ThreadpoolController().select(user_api="blas")
            _blas = ctl if ctl.lib_controllers else False
        except Exception:       # threadpoolctl absent or unable to see the BLAS
            _blas = False
    return _blas


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread inside the block (a no-op without threadpoolctl)."""
    ctl = _blas_control()
    if not ctl:
        yield
        return
    with ctl.limit(limits=1):
        yield


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="darkcfg")
            _pool_size = n
        return _pool


# Below this many FLOPs a conv runs on the calling thread: waking the other thread costs
# ~50-100 us on this VM, about what splitting 3e7 FLOPs saves.
SMALL_WORK = 3e7


def run(task: Callable[[int, int], None], count: int, *, static: bool = False,
        work: float | None = None) -> int:
    """Call task(i, t) for i in range(count), t being the index of the thread running it
    (0 .. threads-1); returns the number of threads used. Dynamic scheduling by default;
    static=True gives task i to thread i % threads, in increasing i, so per-thread partial
    sums combined in thread order are deterministic. Runs under single-threaded BLAS,
    also when there is a single task: OpenBLAS's own threads spin while they wait, and on
    a machine where another process holds a core a 256x1152x512 sgemm on 2 OpenBLAS
    threads took 7-13x longer than on one (timed). `work` (FLOPs) below SMALL_WORK: all
    on the calling thread."""
    n = 1 if work is not None and work < SMALL_WORK else min(threads(), count)
    if n <= 1:
        with single_threaded_blas():
            for i in range(count):
                task(i, 0)
        return 1
    if static:
        def work(t: int) -> None:
            for i in range(t, count, n):
                task(i, t)
    else:
        counter = itertools.count()

        def work(t: int) -> None:
            while True:
                i = next(counter)       # atomic under the GIL
                if i >= count:
                    return
                task(i, t)
    with single_threaded_blas():
        futures = [_executor(n - 1).submit(work, t) for t in range(1, n)]
        try:
            work(0)
        finally:
            for f in futures:
                f.result()
    return n


def scratch(name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A per-thread buffer of `shape` (uninitialised), reused across calls: grown when too
    small, so each thread holds about the largest one any layer asked for."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    size = 1
    for s in shape:
        size *= int(s)
    key = (name, np.dtype(dtype).str)
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = np.empty(max(size, 1), dtype)
    return buf[:size].reshape(shape)
