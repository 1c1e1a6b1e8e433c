"""Shared paths: the Darknet reference material lives in ../shared beside the repo."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
