"""Access to Darknet's reference cases (../shared/reference/cases)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from .conftest import CASES, REFERENCE, need

REL_BAR = 1e-4          # reference/README.md: rel <= 1e-4 per layer
ABS_FLOOR = 1e-6


def case_dirs(kind: str = "") -> list[Path]:
    if not CASES.exists():
        return []
    return sorted(p for p in CASES.iterdir() if (p / "net.cfg").exists()
                  and p.name.startswith(kind))


def info(case: Path) -> dict:
    return json.loads((case / "case.json").read_text())


def weights_path(case: Path, tmp_path: Path) -> Path:
    """The case's weights: stored, or rebuilt bit-exactly with regen_weights.py."""
    stored = case / "weights.weights"
    if stored.exists():
        return stored
    meta = info(case)
    script = need(REFERENCE / "regen_weights.py")
    spec = importlib.util.spec_from_file_location("regen_weights", script)
    regen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regen)
    out = tmp_path / f"{case.name}.weights"
    regen.regen(str(case / "params.txt"), int(meta["seed"]), str(out))
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == meta["weights_sha256"], "regen_weights.py did not rebuild the weights"
    return out


def case_input(case: Path) -> np.ndarray:
    return np.fromfile(case / "input.bin", dtype="<f4")


def rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    ours = np.asarray(ours, np.float64).ravel()
    ref = np.asarray(ref, np.float64).ravel()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = max(np.abs(ref).max(initial=0.0), ABS_FLOOR)
    if not np.all(np.isfinite(ours)):
        return float("inf")
    return float(np.abs(ours - ref).max(initial=0.0) / scale)
