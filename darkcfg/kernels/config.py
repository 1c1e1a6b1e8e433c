"""JIT flags and the threading choice for every Numba kernel, in one place.

Import `jit` / `pjit` from here; never call `numba.njit` directly in a kernel module.
"""
from __future__ import annotations

import functools

import numba

# Numba's default (OpenMP when available) keeps its worker threads busy-waiting after a
# parallel region; on a 2-core machine that halves the throughput of the OpenBLAS sgemm
# that runs right after. 'workqueue' threads sleep. This must be set before the first
# parallel kernel runs, which importing this module guarantees.
numba.config.THREADING_LAYER = "workqueue"

# fastmath stays off: Darknet's numbers are matched term by term (no reassociation).
# error_model='numpy': division by zero gives inf/nan like C instead of raising.
_FLAGS = {"cache": True, "fastmath": False, "nogil": True, "error_model": "numpy"}

jit = functools.partial(numba.njit, **_FLAGS)
pjit = functools.partial(numba.njit, parallel=True, **_FLAGS)


def check_f32(name: str, a, ndim: int | None = None) -> None:
    """Kernel wrappers' input check: float32 and C-contiguous (optionally of given rank)."""
    if a.dtype != "float32" or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a float32 C-contiguous array; received "
                         f"dtype={a.dtype}, c_contiguous={a.flags.c_contiguous}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; received shape {a.shape}")
