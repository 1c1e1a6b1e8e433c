"""Typed option schemas: one `Opt` per cfg key, with Darknet's default.

A layer class declares `options = {...}`; the same table drives parsing, defaults, error
messages, the summary and the README's table of supported keys.
"""
from __future__ import annotations

import difflib
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

from .cfg import Section
from .errors import CfgWarning

_INT = re.compile(r"[+-]?\d+\Z")


@dataclass(frozen=True)
class Opt:
    """One cfg key. kind: int, float, str, ints, floats, layers (relative/absolute refs)."""
    kind: str
    default: Any = None
    doc: str = ""
    min: float | None = None           # inclusive lower bound
    choices: tuple[str, ...] | None = None
    required: bool = False

    def describe_default(self) -> str:
        if self.required:
            return "required"
        if self.default is None:
            return "-"
        if isinstance(self.default, (list, tuple)):
            return ",".join(str(v) for v in self.default) or "-"
        return str(self.default)


def _int(sec: Section, key: str, text: str) -> int:
    if _INT.match(text):
        return int(text)
    try:
        f = float(text)
    except ValueError:
        f = None
    if f is not None and math.isfinite(f) and f == int(f):
        return int(f)
    raise sec.error(f"'{key}' must be an integer, got '{text}'", key)


def _float(sec: Section, key: str, text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise sec.error(f"'{key}' must be a number, got '{text}'", key) from None
    if not math.isfinite(f):
        raise sec.error(f"'{key}' must be a finite number, got '{text}'", key)
    return f


def _items(sec: Section, key: str, text: str, strict: bool) -> list[str]:
    items = [s.strip() for s in text.split(",")]
    if any(any(ch.isspace() for ch in item) for item in items):
        bad = next(item for item in items if any(ch.isspace() for ch in item))
        msg = f"'{key}' item '{bad}' has a blank inside it (a missing comma?)"
        if strict:
            raise sec.error(msg, key)
        # hank-ai Darknet reads blank-separated numbers as separate items, which is what
        # such a line means; P/A would glue them ('45 61' -> 4561).
        items = [part for item in items for part in (item.split() or [""])]
        warnings.warn(str(sec.error(msg + "; read as separate items (lenient mode)", key)),
                      CfgWarning, stacklevel=4)
    if items and items[-1] == "" and len(items) > 1:
        # Darknet (P/A) reads a trailing comma as one more item 0; that is never meant.
        warnings.warn(f"{sec.file}:{sec.entries[key].line}: '{key}={text}' ends with a "
                      "comma; ignored (Darknet would add an extra 0)", CfgWarning,
                      stacklevel=4)
        items.pop()
    if any(not s for s in items):
        raise sec.error(f"'{key}' has an empty item in '{text}'", key)
    return items


def parse_value(sec: Section, key: str, opt: Opt, strict: bool = True) -> Any:
    text = sec.entries[key].value
    if opt.kind == "int":
        value = _int(sec, key, text)
    elif opt.kind == "float":
        value = _float(sec, key, text)
    elif opt.kind == "str":
        value = text
        if opt.choices is not None and value not in opt.choices:
            hint = difflib.get_close_matches(value, opt.choices, n=1)
            msg = f"'{key}={value}' is not one of: {', '.join(opt.choices)}"
            raise sec.error(msg + (f" - did you mean '{hint[0]}'?" if hint else ""), key)
    elif opt.kind in ("ints", "layers"):
        value = [_int(sec, key, s) for s in _items(sec, key, text, strict)]
    elif opt.kind == "floats":
        value = [_float(sec, key, s) for s in _items(sec, key, text, strict)]
    else:  # pragma: no cover - schema error, not user error
        raise AssertionError(opt.kind)
    if opt.min is not None and opt.kind in ("int", "float") and value < opt.min:
        bound = int(opt.min) if opt.kind == "int" else opt.min
        raise sec.error(f"'{key}' must be >= {bound}, got {text}", key)
    return value


def read_options(sec: Section, schema: dict[str, Opt], quiet: frozenset[str] = frozenset(),
                 *, strict: bool = True) -> dict[str, Any]:
    """Typed values for every key of `schema` (defaults filled in).

    Unknown keys are errors (strict) or warnings (lenient); keys in `quiet` are accepted and
    ignored because they change nothing darkcfg computes.
    """
    for key in sec.entries:
        if key in schema or key in quiet:
            continue
        hint = difflib.get_close_matches(key, list(schema) + list(quiet), n=1, cutoff=0.6)
        msg = f"unknown key '{key}'" + (f" - did you mean '{hint[0]}'?" if hint else
                                         f" for [{sec.written}]")
        if strict:
            raise sec.error(msg, key)
        warnings.warn(str(sec.error(msg + " (ignored: lenient mode)", key)), CfgWarning,
                      stacklevel=3)
    values: dict[str, Any] = {}
    for key, opt in schema.items():
        if key in sec.entries:
            values[key] = parse_value(sec, key, opt, strict)
        elif opt.required:
            raise sec.error(f"missing required key '{key}' ({opt.doc})" if opt.doc else
                            f"missing required key '{key}'")
        else:
            d = opt.default
            values[key] = list(d) if isinstance(d, (list, tuple)) else d
    return values
