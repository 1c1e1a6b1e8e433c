"""One module per cfg section kind; importing this package registers them all.

Every module of this package is imported here (found on disk, so a new section is one new
file and nothing else), except `base` and the helper modules named `_*.py`; each section
module registers its class with `@register`.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Layer


def _import_sections() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_sections()

__all__ = ["REGISTRY", "Layer", "known_sections"]


def known_sections() -> set[str]:
    return set(REGISTRY) | {"net"}
