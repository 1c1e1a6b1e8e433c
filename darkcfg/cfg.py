"""Text of a .cfg file -> a list of sections with line numbers.

Only syntax lives here: which sections exist, their aliases (`[conv]` for
`[convolutional]`), which keys they accept and what those mean are the business of the layer
modules, and the graph builder (darkcfg/graph.py) checks section names against them. The
one name known here is the [net] header's, which must come first.
"""
from __future__ import annotations

import difflib
import os
import warnings
from dataclasses import dataclass, field

from .errors import CfgError, CfgWarning

# the header section and its alias (Darknet's src/parser.c: is_network)
NET_NAMES = ("net", "network")


@dataclass
class Entry:
    key: str
    value: str
    line: int


@dataclass
class Section:
    name: str                    # section name: "net" for [net]/[network]; as written for
    #                              layers until the graph builder resolves aliases
    #                              (`[conv]` -> "convolutional")
    written: str                 # as written in the file, e.g. "conv"
    line: int                    # line of the [header]
    index: int | None            # layer index; None for [net]
    file: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def error(self, message: str, key: str | None = None, **kw) -> CfgError:
        entry = self.entries.get(key) if key else None
        if entry and f"'{key}" not in message:
            message = f"'{key}={entry.value}': {message}"
        return CfgError(message, file=self.file, line=entry.line if entry else self.line,
                        section=self.written, index=self.index, key=key,
                        value=entry.value if entry else None, **kw)


def read_cfg(path: str | os.PathLike, *, strict: bool = True) -> list[Section]:
    """Read a cfg file; raise CfgError naming the file when it is not a cfg at all."""
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CfgError("no such file", file=path) from None
    except IsADirectoryError:
        raise CfgError("is a directory, not a cfg file", file=path) from None
    except OSError as e:
        raise CfgError(f"cannot read: {e.strerror}", file=path) from None
    return parse_cfg(data, name, strict=strict)


def _check_text(data: bytes, file: str) -> str:
    if not data.strip():
        raise CfgError("the file is empty; a cfg starts with a [net] section", file=file)
    if b"\0" in data[:4096]:
        raise CfgError("this is a binary file, not a cfg (a .weights file given as the cfg?)",
                       file=file)
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head")):
        raise CfgError("this is an HTML page, not a cfg (downloaded a web page instead of "
                       "the raw file? on GitHub use the 'Raw' link)", file=file)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise CfgError(f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})",
                       file=file, line=line) from None


def _strip_comment(text: str) -> str:
    cut = len(text)
    for mark in "#;":
        i = text.find(mark)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut].strip()


def parse_cfg(data: bytes | str, file: str = "<cfg>", *, strict: bool = True) -> list[Section]:
    """Parse cfg text into sections. Accepts LF and CRLF, `#`/`;` comments. Section names
    are not checked here (see graph.build_graph)."""
    text = _check_text(data.encode() if isinstance(data, str) else data, file)
    sections: list[Section] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise CfgError(f"section header {line!r} has no closing ']'", file=file,
                               line=lineno)
            written = line[1:-1].strip()
            name = "net" if written in NET_NAMES else written
            if not sections and name != "net":
                hint = difflib.get_close_matches(written, NET_NAMES, n=1)
                if hint:        # a misspelt [net]
                    raise CfgError(f"unknown section [{written}] - did you mean [{hint[0]}]?",
                                   file=file, line=lineno)
                raise CfgError(f"the first section must be [net] or [network], found "
                               f"[{written}]", file=file, line=lineno, section=written, index=0)
            if sections and name == "net":
                raise CfgError("a second [net] section; [net] must appear once, first",
                               file=file, line=lineno, section=written, index=len(sections) - 1)
            index = None if name == "net" else len(sections) - 1
            sections.append(Section(name, written, lineno, index, file))
            continue
        if "=" not in line:
            where = dict(section=sections[-1].written, index=sections[-1].index) \
                if sections else {}
            raise CfgError(f"expected 'key=value' or a [section], found {line!r}", file=file,
                           line=lineno, **where)
        key, value = (s.strip() for s in line.split("=", 1))
        if not sections:
            raise CfgError(f"'{key}={value}' comes before any section; a cfg starts with "
                           "[net]", file=file, line=lineno, key=key, value=value)
        sec = sections[-1]
        if not key:
            raise sec.error(f"a line with no key before '=': {line!r}") from None
        if not value:
            raise CfgError(f"'{key}' has an empty value", file=file, line=lineno,
                           section=sec.written, index=sec.index, key=key, value=value)
        if key in sec.entries:
            first = sec.entries[key]
            err = CfgError(f"duplicate key '{key}' (first set on line {first.line} to "
                           f"'{first.value}')", file=file, line=lineno, section=sec.written,
                           index=sec.index, key=key, value=value)
            if strict:
                raise err
            warnings.warn(f"{err}; keeping the first, as Darknet does (lenient mode)",
                          CfgWarning, stacklevel=2)
            continue
        sec.entries[key] = Entry(key, value, lineno)
    if not sections:
        raise CfgError("no sections found; a cfg starts with a [net] section", file=file)
    return sections
