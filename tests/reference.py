"""Access to Darknet's reference cases (../shared/reference/cases)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

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


def check_sgd_steps(net, x: np.ndarray, truth: np.ndarray, case: Path,
                    costs: list[float] | None = None) -> None:
    """Two train_steps of `net` (loaded with the case's weights) on (x, truth): after
    step 1 and 2 every parameter equals Darknet's trained.weights / trained2.weights
    within REL_BAR of the largest change Darknet's step made to that array (at least
    1e-6); `seen` counts the steps; with `costs`, each step's cost is Darknet's (rel 1e-5)."""
    from darkcfg.graph import load_graph
    from darkcfg.network import Network
    before = {(lay.index, k): v.copy() for lay in net.layers for k, v in lay.params.items()}
    for step, name in ((1, "trained.weights"), (2, "trained2.weights")):
        cost = net.train_step(x, truth)
        assert net.seen == step
        if costs is not None:
            assert cost == pytest.approx(costs[step - 1], rel=1e-5), step
        ref = Network(load_graph(case / "net.cfg"))
        ref.load_weights(case / name)
        for lay, rlay in zip(net.layers, ref.layers):
            for k, v in lay.params.items():
                change = rlay.params[k] - before[(lay.index, k)]
                scale = max(np.abs(change).max(initial=0), 1e-6)
                err = np.abs(v - rlay.params[k]).max(initial=0) / scale
                assert err <= REL_BAR, (step, lay.index, k, err)
