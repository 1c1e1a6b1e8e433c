"""What several test files share: the finite-difference gradient check, relative errors,
random float32 arrays, a network from cfg text, and the command line in a fresh process.

Fixtures that wrap these (`rng`, `write_cfg`) are in conftest.py.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

# --- comparisons and data ----------------------------------------------------------------


def rel(ours, ref, floor: float = 1e-6) -> float:
    """max|ours - ref| / max|ref| (the scale at least `floor`), after checking the shapes."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), floor))


def assert_close(ours, ref, rtol: float, *, atol: float = 0.0, floor: float = 0.0,
                 scale: float | None = None, what: object = "") -> None:
    """max|ours - ref| <= rtol * scale + atol: one bar for the whole array, relative to its
    largest value (scale = max|ref|, at least `floor`, unless given). A reference that is
    all zeros with no floor is refused: it would make the check vacuous."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    if scale is None:
        scale = max(np.abs(ref).max(initial=0.0), floor)
    assert scale > 0 or atol > 0, (what, "the reference is all zeros")
    err = np.abs(ours - ref).max(initial=0.0)
    assert err <= rtol * scale + atol, (what, err, scale)


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    """Standard normal float32 values (times `scale`)."""
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# --- finite differences ------------------------------------------------------------------


def numeric_gradient(f: Callable[[], float], x: np.ndarray, entries: Iterable[int],
                     eps: float, *, usable: Callable[[], bool] | None = None,
                     count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of f() at flat `entries` of x, which is moved by +-eps in place
    (in its own dtype) and put back. The difference is divided by the step x really took,
    so float32 rounding of x + eps does not bias it.

    usable(): called with the entry at +eps and at -eps; an entry is skipped unless both
    are True (for losses whose assignment must stay fixed). count: stop after that many.
    Returns (the entries used, their derivatives)."""
    flat = x.reshape(-1)
    assert np.shares_memory(flat, x), "x must be contiguous: it is perturbed in place"
    picked, values = [], []
    for e in entries:
        keep = flat[e]
        up_x, down_x = (keep + x.dtype.type(eps)), (keep - x.dtype.type(eps))
        if usable is not None and not all(_at(flat, e, v, usable) for v in (up_x, down_x)):
            flat[e] = keep
            continue
        up, down = _at(flat, e, up_x, f), _at(flat, e, down_x, f)
        flat[e] = keep
        picked.append(e)
        values.append((up - down) / (np.float64(up_x) - np.float64(down_x)))
        if count is not None and len(picked) == count:
            break
    return np.array(picked, np.int64), np.array(values, np.float64)


def _at(flat: np.ndarray, e: int, value, f: Callable[[], object]):
    flat[e] = value
    return f()


def check_gradient(f: Callable[[], float], x: np.ndarray, ours: np.ndarray,
                   entries: Iterable[int] | None = None, *, eps: float, rtol: float,
                   atol: float = 0.0, floor: float = 0.0, scale: float | None = None,
                   usable: Callable[[], bool] | None = None, count: int | None = None,
                   least: int = 1, what: object = "") -> np.ndarray:
    """Our gradient `ours` (x's shape) of f() against central differences at `entries`
    (default: all of x): max|ours - numeric| <= rtol * scale + atol, scale = max|numeric|
    (at least `floor`) unless given. At least `least` entries must be usable. Returns the
    entries checked."""
    assert ours.shape == x.shape, (what, ours.shape, x.shape)
    entries = range(x.size) if entries is None else entries
    picked, numeric = numeric_gradient(f, x, entries, eps, usable=usable, count=count)
    assert len(picked) >= least, (what, len(picked), least)
    assert_close(ours.reshape(-1)[picked], numeric, rtol, atol=atol, floor=floor,
                 scale=scale, what=what)
    return picked


# --- networks and the command line --------------------------------------------------------


def tiny_net(body: str, c: int = 4, h: int = 6, w: int = 6, name: str = "t.cfg"):
    """A Network from the cfg sections `body` after a [net] of c x h x w (no file)."""
    from darkcfg.cfg import parse_cfg
    from darkcfg.graph import build_graph
    from darkcfg.network import Network
    text = f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n\n" + body
    return Network(build_graph(parse_cfg(text, name)))


def write_cfg(folder: Path, text: str, name: str = "t.cfg") -> Path:
    path = Path(folder) / name
    path.write_text(text)
    return path


def darkcfg(*args, cwd=None) -> subprocess.CompletedProcess:
    """`python -m darkcfg ARGS` in a fresh process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "darkcfg", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)
