"""The README's table of sections and keys is the option schemas, not a copy of them."""
from __future__ import annotations

from darkcfg.docs import sections_markdown

from .conftest import ROOT


def test_readme_table_is_current():
    assert sections_markdown() in (ROOT / "README.md").read_text(), \
        "README.md is stale: run python tools/update_readme.py"

