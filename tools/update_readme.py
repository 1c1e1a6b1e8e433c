#!/usr/bin/env python3
"""Rewrite the generated table of sections and keys in README.md from the option schemas."""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from darkcfg.docs import BEGIN, END, sections_markdown

readme = Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text()
pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
if not pattern.search(text):
    sys.exit(f"{readme}: no '{BEGIN}' ... '{END}' block to rewrite")
readme.write_text(pattern.sub(lambda _: sections_markdown(), text))
print(f"updated {readme}")
