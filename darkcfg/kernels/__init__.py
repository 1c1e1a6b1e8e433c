"""Numba kernels: small pure functions on float32 C-contiguous arrays, no cfg knowledge.

Layer modules import these lazily inside their forward/backward methods, so reading a cfg
and printing its summary never imports Numba. `config` holds the JIT flags and sets the
threading layer before any parallel kernel runs.
"""
from . import config  # noqa: F401  (sets the threading layer first)
