"""Shared paths (the Darknet reference material lives in ../shared beside the repo) and
fixtures; plain helpers are in tests/helpers.py."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from . import helpers

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DARKCFG_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference"
DARKNET_CFG = SHARED / "darknet-cfg"
CASES = REFERENCE / "cases"


def need(path: Path) -> Path:
    """Skip (with the reason) when the Darknet reference material is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent: the Darknet reference material is in ../shared "
                    "in the darkcfg development checkout only")
    return path


def listing(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern)) if folder.exists() else []


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator seeded 0, fresh for each test."""
    return np.random.default_rng(0)


@pytest.fixture
def write_cfg(tmp_path):
    """write_cfg(text, name="t.cfg") -> the path of `text` written into tmp_path."""
    return lambda text, name="t.cfg": helpers.write_cfg(tmp_path, text, name)
