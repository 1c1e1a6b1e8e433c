"""The README's table of sections and keys is the option schemas, not a copy of them."""
from __future__ import annotations

from darkcfg.docs import sections_markdown

from .conftest import ROOT


def test_readme_table_is_current():
    assert sections_markdown() in (ROOT / "README.md").read_text(), \
        "README.md is stale: run python tools/update_readme.py"


def test_table_lists_every_section():
    from darkcfg.layers import REGISTRY
    table = sections_markdown()
    for name in REGISTRY:
        assert f"`[{name}]`" in table
    assert "`filters`=1" in table and "`activation`=logistic" in table
