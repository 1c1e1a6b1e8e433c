"""Data-parallel training over MPI: `mpiexec -n N darkcfg train DATA CFG [WEIGHTS]`.

The run is the one-process run, spread out. An iteration's `subdivisions` mini-batches
are shared among the N ranks: rank r runs the passes at positions r, r+N, ... with the
images, augmentation and dropout masks a single process draws there (train/loop.py seeds
each by its position). Then one MPI allreduce sums, in one flat float32 buffer:

    the gradients of every trained array        (their sum over the passes, as one
                                                 process accumulates them)
    each pass's move of the rolling BN statistics (subdivisions x the BN channels)
    each pass's loss (two float32 words: high and low part of its float64 value)
    the stop requests (Ctrl-C / SIGTERM) of every rank

and every rank makes the same update. The rolling statistics move by
r <- 0.99 r + 0.01 stat at each pass (kernels/bn_train.py: MOMENTUM), so a rank runs its
passes from zeroed statistics, sends 0.01 stat (the move from zero, exactly as a
pass computes it) and every rank replays the moves of all the passes in order from the
iteration's start: the very operations, in the very order, of one process. Rank 0 alone
writes checkpoints and the chart, validates and reports progress.

mpi4py is imported only here, and this module only when darkcfg runs under MPI (an
mpiexec environment variable, or `--mpi`).
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import DarkcfgError
from ..network import Network
from .loop import Draw, Reducer

# what MPI launchers set in each rank's environment: (rank, size) variable names
# (MPICH/Intel MPI: Hydra's PMI; Open MPI; PMIx; MVAPICH)
LAUNCHER_VARIABLES = (("PMI_RANK", "PMI_SIZE"),
                      ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                      ("PMIX_RANK", "PMIX_SIZE"),
                      ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"))

STATISTICS = ("rolling_mean", "rolling_variance")


def launched_rank() -> int:
    """This process's rank, from the launcher's environment (0 when there is none)."""
    for rank, _ in LAUNCHER_VARIABLES:
        value = os.environ.get(rank, "")
        if value.isdigit():
            return int(value)
    return 0


def launched_size() -> int:
    """How many ranks the MPI launcher started, from its environment; 0 when darkcfg does
    not run under an MPI launcher."""
    for _, size in LAUNCHER_VARIABLES:
        value = os.environ.get(size, "")
        if value.isdigit():
            return int(value)
    return 0


def wanted(force: bool = False) -> bool:
    """Whether `darkcfg train` should train over MPI: `--mpi`, or more than one rank."""
    return force or launched_size() > 1


def mpi_reducer() -> MPIReducer:
    """The reducer of this rank (imports mpi4py, which initialises MPI)."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DarkcfgError(f"training over MPI needs mpi4py ({e}): pip install "
                           "'darkcfg[mpi]' (mpi4py and the mpich wheel), or mpi4py built "
                           "against your system's MPI") from None
    return MPIReducer(MPI.COMM_WORLD)


@dataclass
class Ended:
    """How the training process of this rank ended (seen by its supervisor)."""
    pid: int
    code: int           # exit status, or 128 + the signal
    signal: int = 0     # the signal that killed it; 0: it exited


def supervise() -> Ended | None:
    """Split this rank in two: the child returns None and trains; the parent waits for
    it and returns how it ended. A rank killed outright (SIGKILL, the OOM killer) cannot
    say anything itself, and the launcher reports only a process id: its parent can
    name the rank. The child dies with the parent (PR_SET_PDEATHSIG), so the launcher,
    which ends the parents when one fails, ends the whole job. Call before MPI starts;
    a system without fork (or prctl) gets no supervisor: None in the only process."""
    if not hasattr(os, "fork") or _pdeathsig() is None:
        return None
    import signal
    pid = os.fork()
    if pid == 0:
        _pdeathsig()(signal.SIGKILL)
        # its own process group: a terminal's Ctrl-C reaches it once, through the parent
        os.setpgid(0, 0)
        return None

    def forward(signum, frame) -> None:     # Ctrl-C and SIGTERM reach the trainer
        os.kill(pid, signum)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return Ended(pid, 128 + os.WTERMSIG(status), os.WTERMSIG(status))
    return Ended(pid, os.WEXITSTATUS(status))


def _pdeathsig() -> Callable[[int], None] | None:
    """prctl(PR_SET_PDEATHSIG, sig) for this process (Linux), or None."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    return lambda sig: prctl(1, int(sig), 0, 0, 0)      # 1: PR_SET_PDEATHSIG


@dataclass
class Failure:
    """A rank that could not start training."""
    rank: int
    message: str


class MPIReducer(Reducer):
    """Shares each iteration's passes among the ranks of `comm` (see the module
    docstring)."""

    def __init__(self, comm):
        from mpi4py import MPI
        self.comm = comm
        self.MPI = MPI
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.started = False        # every rank got past `agree`: failures now abort
        self.stopping = False       # the ranks agreed to stop after an iteration
        self.ranks: list[str] = []  # "rank 0: pid 123 on host", from `agree`

    # --- before the first iteration -----------------------------------------------------
    def check(self, net: Network) -> None:
        subs = net.graph.net.opts["subdivisions"]
        sec = net.graph.net.section
        if subs % self.size:
            divisors = [d for d in range(1, subs + 1) if subs % d == 0]
            raise DarkcfgError(
                f"{sec.file}: {self.size} MPI ranks cannot share subdivisions={subs} "
                f"mini-batches: the number of ranks must divide subdivisions (run with "
                f"-n {' / '.join(map(str, divisors))}, or set subdivisions to a multiple "
                f"of {self.size})")
        from ..layers.base import Layer
        for layer in net.layers:
            odd = [k for k in layer.params if k.endswith(STATISTICS) and k not in STATISTICS]
            # a recurrent layer carries its state from one pass to the next, and its
            # sub-layers' BN moves once per time step: neither can be split among ranks
            if type(layer).reset_state is not Layer.reset_state or odd:
                raise DarkcfgError(
                    f"{sec.file}:{layer.section.line}: layer {layer.index} "
                    f"[{layer.type}] is not trained over MPI: it carries its state from "
                    "one mini-batch to the next; train it in one process")

    def agree(self, failure: str | None = None) -> list[Failure]:
        """The ranks meet once before training: each says whether it could set up (a
        cfg, data or weights error on one machine), and where it runs. Returns the
        failures of every rank (the same list on each)."""
        mine = (failure, os.getpid(), socket.gethostname())
        every = self.comm.allgather(mine)
        self.ranks = [f"rank {r}: pid {pid} on {host}" for r, (_, pid, host) in
                      enumerate(every)]
        return [Failure(r, msg) for r, (msg, _, _) in enumerate(every) if msg is not None]

    def start(self, net: Network) -> None:
        failed = self.agree()
        if failed:          # another rank could not set up: it says why; stop quietly
            raise _OtherRankFailed(failed)
        self.started = True
        arrays = _state_arrays(net)
        flat = np.concatenate([a.ravel() for a in arrays]) if arrays else \
            np.zeros(0, np.float32)
        self.comm.Bcast(flat, root=0)
        _scatter(flat, arrays)
        net.seen = self.comm.bcast(net.seen, root=0)
        net.params_changed()

    def describe(self, net: Network) -> str:
        subs = net.graph.net.opts["subdivisions"]
        return (f"training over MPI: {self.size} ranks share the {subs} mini-batches of "
                f"each iteration ({subs // self.size} each; " + "; ".join(self.ranks) + ")")

    # --- each iteration -----------------------------------------------------------------
    def step(self, net: Network, draw: Draw, stops: Callable[[], int]
             ) -> tuple[float, int]:
        subs = net.graph.net.opts["subdivisions"]
        mini = net.train_batch // subs
        frozen = net.begin_iteration()
        seen0 = net.seen
        grads, stats = reduced_arrays(net, frozen)
        start = [a.copy() for a in stats]
        n_grad = sum(g.size for g in grads)
        n_stat = sum(a.size for a in stats)
        buf = np.zeros(buffer_values(net, frozen), np.float32)
        moves = buf[n_grad:n_grad + subs * n_stat].reshape(subs, n_stat)
        loss_hi = buf[n_grad + subs * n_stat:][:subs]
        loss_lo = buf[n_grad + subs * n_stat + subs:][:subs]
        for k in range(self.rank, subs, self.size):
            net.seen = seen0 + k * mini     # as the pass finds it in one process
            for a in stats:
                a[...] = 0
            x, truth = draw(k)
            cost = net.train_pass(x, truth, k)
            if stats:
                moves[k] = np.concatenate([a.ravel() for a in stats])
            loss_hi[k] = np.float32(cost)
            loss_lo[k] = np.float32(cost - float(loss_hi[k]))
        net.seen = seen0 + subs * mini
        _gather(grads, buf[:n_grad])
        buf[-1] = stops()
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        _scatter(buf[:n_grad], grads)
        momentum = np.float32(_momentum())
        for a, a0 in zip(stats, start):
            a[...] = a0
        if stats:
            for k in range(subs):   # the moves of every pass, in order (one process's ops)
                _scatter(moves[k], stats, add_after_scaling=momentum)
        net.update(frozen)
        total = float(np.sum(loss_hi.astype(np.float64) + loss_lo.astype(np.float64)))
        stopping = int(buf[-1])
        self.stopping = bool(stopping)
        return total / (subs * mini), stopping

    def abort(self, code: int) -> None:
        """End every rank's process now (after a failure during training)."""
        self.comm.Abort(code)


def reduced_arrays(net: Network, frozen: set[int] = frozenset()
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What an iteration's allreduce carries: every gradient array, and the rolling BN
    statistics of the layers not frozen."""
    grads = [g for lay in net.layers for g in lay.grads.values()]
    stats = [arr for lay in net.layers if lay.index not in frozen
             for k, arr in lay.params.items() if k in STATISTICS]
    return grads, stats


def buffer_values(net: Network, frozen: set[int] = frozenset()) -> int:
    """float32 values allreduced per iteration: the gradients, subdivisions x the
    statistics, two words of loss per pass, and the stop requests."""
    subs = net.graph.net.opts["subdivisions"]
    grads, stats = reduced_arrays(net, frozen)
    return sum(g.size for g in grads) + subs * sum(a.size for a in stats) + 2 * subs + 1


class _OtherRankFailed(DarkcfgError):
    """Raised on the ranks that set up fine when another one could not."""

    def __init__(self, failures: list[Failure]):
        super().__init__("; ".join(f"rank {f.rank}: {f.message}" for f in failures))
        self.failures = failures


def other_rank_failed(error: BaseException) -> list[Failure] | None:
    """The failures of other ranks that stopped this one at start, or None."""
    return error.failures if isinstance(error, _OtherRankFailed) else None


def _momentum() -> float:
    from ..kernels.bn_train import MOMENTUM
    return MOMENTUM


def _state_arrays(net: Network) -> list[np.ndarray]:
    """What makes two ranks' networks the same: every parameter (BN statistics
    included) and momentum buffer, in a fixed order."""
    out = []
    for lay in net.layers:
        out.extend(lay.params[k] for k in sorted(lay.params))
        out.extend(lay.updates[k] for k in sorted(lay.updates))
    for a in out:
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            raise DarkcfgError(f"internal: a parameter array is {a.dtype}, not float32 "
                               "C-contiguous; it cannot be sent between ranks")
    return out


def _gather(arrays: list[np.ndarray], flat: np.ndarray) -> None:
    at = 0
    for a in arrays:
        flat[at:at + a.size] = a.ravel()
        at += a.size


def _scatter(flat: np.ndarray, arrays: list[np.ndarray],
             add_after_scaling: np.float32 | None = None) -> None:
    """flat's values back into the arrays, or, with add_after_scaling m, each array
    becomes m * array + its values (the BN statistics' move, rounded as one pass does
    it: the product, then the sum)."""
    at = 0
    for a in arrays:
        part = flat[at:at + a.size].reshape(a.shape)
        if add_after_scaling is None:
            a[...] = part
        else:
            a *= add_after_scaling
            a += part
        at += a.size
