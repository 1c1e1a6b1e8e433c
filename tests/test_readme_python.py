"""The README's Python section runs as written (from the repository root)."""
from __future__ import annotations

import os
import re

import numpy as np

from .conftest import ROOT


def python_section() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_section_runs(tmp_path, monkeypatch):
    code = python_section()
    monkeypatch.chdir(ROOT)
    # the example saves copy.weights in the current folder: keep the checkout clean
    code = code.replace('"copy.weights"', repr(str(tmp_path / "copy.weights")))
    scope: dict = {}
    exec(compile(code, "README.md (Python)", "exec"), scope)
    assert scope["y"].reshape(1, -1).argmax(1).tolist() == [1]     # the trouser sample
    assert scope["conv0"].shape == (1, 16, 28, 28)
    assert os.path.getsize(tmp_path / "copy.weights") > 16
    assert scope["n"] == 128 and np.isfinite(scope["loss"])
    assert scope["graph"].net.input_shape[1:] == (160, 160)
    assert isinstance(scope["boxes"], list)
