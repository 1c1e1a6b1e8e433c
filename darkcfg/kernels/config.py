"""JIT flags and the threading choice for every Numba kernel, in one place.

Import `jit` / `pjit` (and the variants below: `jit_sums` / `pjit_sums` for float64
sums, `pjit_dual` for kernels that also see small arrays) from here; never call
`numba.njit` directly in a kernel module.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import numba
import numba.core.event

# OpenMP with passive waiting: its threads sleep soon after a parallel region ends (the
# default busy-waits for long, which on a 2-core machine halves the throughput of the
# BLAS calls that follow), and starting a kernel costs ~3 us against ~115 us with
# 'workqueue' (timed: a 29-layer forward launches a hundred kernels). GOMP reads the
# policy when libgomp loads, at the first parallel kernel; a value the user set is kept,
# and so is NUMBA_THREADING_LAYER. Without OpenMP, Numba falls back to 'workqueue'. This must run
# before the first parallel kernel, which importing this module guarantees.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# ...but not at once: a thread that has just finished a region spins ~30k rounds (tens of
# microseconds) before it sleeps, so that the next kernel, usually a few microseconds
# away, finds it awake: waking a sleeping thread costs ~70 us on this VM, spinning ~2 us
# (timed: resnet18 at batch 1 went from 18.7 to 16.7 ms; 100k rounds was no better, and
# 0 is the plain passive policy).
os.environ.setdefault("GOMP_SPINCOUNT", "30000")
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "default"
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]

# fastmath stays off: Darknet's numbers are matched term by term (no reassociation).
# error_model='numpy': division by zero gives inf/nan like C instead of raising.


def _probe(x):  # pragma: no cover - never compiled, only decorated
    return x


def _cache_usable() -> bool:
    """Whether Numba finds somewhere to keep compiled kernels for this folder: beside the
    source, NUMBA_CACHE_DIR, or the user's cache folder. Numba raises at decoration time
    when none is writable (an install on a read-only file system, a user without a home),
    which would make every import fail."""
    try:
        numba.njit(cache=True)(_probe)
        return True
    except RuntimeError:
        return False


def _choose_cache() -> bool:
    if _cache_usable():
        return True
    try:        # gettempdir raises when no temporary folder is writable either
        fallback = os.path.join(tempfile.gettempdir(), f"darkcfg-numba-cache-{os.getuid()}")
        os.makedirs(fallback, mode=0o700, exist_ok=True)
        numba.config.CACHE_DIR = fallback
        if _cache_usable():
            warnings.warn(f"darkcfg: Numba cannot keep compiled kernels beside darkcfg or in "
                          f"the user's cache folder (read-only); using {fallback} (set "
                          f"NUMBA_CACHE_DIR to choose another)", RuntimeWarning, stacklevel=2)
            return True
    except OSError:
        pass
    warnings.warn("darkcfg: no writable place for Numba's compiled kernels (set "
                  "NUMBA_CACHE_DIR to a writable folder); compiling without a cache, so "
                  "every run compiles again", RuntimeWarning, stacklevel=2)
    return False


# `from .x import ...`, `from . import x, y as z` and `from ..x import ...` (darkcfg's
# base modules: their constants are compiled into the kernels too)
_IMPORT = re.compile(r"^\s*from (\.\.?)(\w*) import (?:\(([^)]*)\)|([^\n#]*))", re.M)


def module_digests(folder: Path) -> dict[str, str]:
    """For each kernel module (file stem), a digest of its source, of the sources of every
    module it imports from (kernel modules transitively), and of Numba's version."""
    sources = {p.stem: p.read_bytes() for p in sorted(folder.glob("*.py"))}
    for p in sorted(folder.parent.glob("*.py")):
        sources[".." + p.stem] = p.read_bytes()
    deps: dict[str, set[str]] = {name: set() for name in sources}
    for name, text in sources.items():
        if name.startswith(".."):
            continue
        found = set()
        for dots, module, group, line in _IMPORT.findall(text.decode("utf-8", "replace")):
            if dots == "..":
                found.add(".." + module)
            elif module:
                found.add(module)
            else:
                found.update(re.findall(r"\w+", group or line))
        deps[name] = found & sources.keys()
    digests = {}
    for name in (n for n in sources if not n.startswith("..")):
        seen, todo = set(), [name]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(deps[m])
        h = hashlib.sha256(numba.__version__.encode())
        for m in sorted(seen):
            h.update(m.encode() + b"\0" + sources[m])
        digests[name] = h.hexdigest()
    return digests


def clear_stale_cache(cache_dir: Path, sources: Path) -> list[str]:
    """Delete the compiled kernels in `cache_dir` of every kernel module in `sources`
    whose source, or the source of a module it imports from, changed since they were
    compiled; returns those modules' names.

    Numba checks only the timestamp of the file that defines a kernel, yet a kernel
    carries compiled copies of the functions it calls or inlines from other files: after
    an edit of kernels/activations.py (a `git pull` into an editable install), the conv
    kernels of kernels/epilogue.py would go on computing the old activation from the
    cache, silently. So each module's cache files (named `<module>.<function>-...`) are
    stamped with a digest of everything they can have compiled in.
    """
    stamp = cache_dir / "darkcfg-kernels.json"
    digests = module_digests(sources)
    try:
        old = json.loads(stamp.read_text())
    except (OSError, ValueError):
        old = {}
    stale = sorted(m for m, d in digests.items() if old.get(m) != d)
    if not stale:
        return []
    try:
        for f in cache_dir.iterdir():
            if f.suffix in (".nbi", ".nbc") and f.name.split(".", 1)[0] in stale:
                f.unlink(missing_ok=True)
        tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(digests, indent=0, sort_keys=True))
        os.replace(tmp, stamp)      # atomic: a process starting now sees all or nothing
    except OSError:
        return []                   # a cache we cannot write is recompiled anyway
    return stale


def _probe_cache_dir() -> Path | None:
    # where Numba keeps this folder's kernels (beside the source, NUMBA_CACHE_DIR or the
    # user's cache folder), from its own locator
    try:
        return Path(numba.njit(cache=True)(_probe)._cache._cache_path)
    except (AttributeError, RuntimeError):
        return None


_FLAGS = {"cache": _choose_cache(), "fastmath": False, "nogil": True,
          "error_model": "numpy"}
if _FLAGS["cache"] and (_CACHE_DIR := _probe_cache_dir()) is not None:
    clear_stale_cache(_CACHE_DIR, Path(__file__).parent)

jit = functools.partial(numba.njit, **_FLAGS)
pjit = functools.partial(numba.njit, parallel=True, **_FLAGS)
# Sums in float64 of float32 values (BN statistics and gradients) may be reassociated:
# LLVM then runs them in SIMD lanes, 3-4x faster, and the float64 result moves by a few
# float64 roundings, far below a float32 one. Only kernels whose reassociable operations
# are such float64 sums use these; the order is fixed by the compiled code, so the same
# machine gives the same numbers every run.
_SUMS = {**_FLAGS, "fastmath": {"reassoc"}}
jit_sums = functools.partial(numba.njit, **_SUMS)
pjit_sums = functools.partial(numba.njit, parallel=True, **_SUMS)


# Below this many values in its first array argument a `pjit_dual` kernel runs its
# serial twin. With the threads still spinning from the last kernel a parallel region
# starts in ~2 us (a sleeping one takes ~70 us on this VM): 4k values is about where the
# split pays (timed over the whole forward of resnet18 and yolov3-tiny at batch 1: 17.0
# -> 16.0 and 24.9 -> 24.0 ms against the 128k of the passive-only setting).
SMALL = 1 << 12


class _Dual:
    """A kernel compiled twice, parallel and serial (prange is range there), called
    through one name; the serial twin runs when args[0].size < SMALL."""

    def __init__(self, func):
        self.parallel = pjit(func)
        twin = types.FunctionType(func.__code__, func.__globals__, func.__name__ + "_serial",
                                  func.__defaults__, func.__closure__)
        # its own cache file: Numba's cache index does not tell parallel from serial
        twin.__qualname__ = func.__qualname__ + "_serial"
        twin.__module__ = func.__module__
        self.serial = jit(twin)
        functools.update_wrapper(self, func)

    def __call__(self, *args):
        kernel = self.serial if args[0].size < SMALL else self.parallel
        return kernel(*args)


def pjit_dual(func):
    """`pjit` for kernels that also see small arrays (see _Dual)."""
    return _Dual(func)


def check_f32(name: str, a, ndim: int | None = None) -> None:
    """Kernel wrappers' input check: float32 and C-contiguous (optionally of given rank)."""
    if a.dtype != "float32" or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a float32 C-contiguous array; received "
                         f"dtype={a.dtype}, c_contiguous={a.flags.c_contiguous}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; received shape {a.shape}")


class _CompileNotice(numba.core.event.Listener):
    """Calls `say(message)` once, when the first darkcfg kernel is compiled (a disk-cache
    miss: the first run after installing or upgrading darkcfg or Numba)."""

    def __init__(self, say):
        self.say = say
        self.done = False

    def on_start(self, event):
        if self.done:
            return
        func = getattr(event.data.get("dispatcher"), "py_func", None)
        if getattr(func, "__module__", "").startswith(__package__):
            self.done = True
            self.say("darkcfg: compiling the Numba kernels for this machine (first run "
                     "only; they are cached on disk, later runs start in about a second)")

    def on_end(self, event):
        pass


def announce_compiling(say: Callable[[str], None]) -> None:
    """Have `say` told when darkcfg starts compiling kernels, so that a first run does not
    look hung. For the CLI (which prints it); the library itself is silent."""
    numba.core.event.register("numba:compile", _CompileNotice(say))
