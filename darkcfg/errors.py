"""darkcfg's exception types: every problem with a user's input is one of these."""
from __future__ import annotations


class DarkcfgError(Exception):
    """Base class for every error darkcfg raises about its input."""


class CfgError(DarkcfgError):
    """A problem in a .cfg file, located by file, line, section, layer index and key.

    The message reads like a compiler diagnostic:
        yolo.cfg:23: [convolutional] (layer 4): unknown key 'filtres' - did you mean 'filters'?
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 section: str | None = None, index: int | None = None,
                 key: str | None = None, value: str | None = None):
        self.file, self.line, self.section, self.index = file, line, section, index
        self.key, self.value, self.reason = key, value, message
        where = file or "<cfg>"
        if line is not None:
            where += f":{line}"
        head = where + ":"
        if section is not None:
            head += f" [{section}]"
            head += " (net)" if index is None else f" (layer {index})"
            head += ":"
        super().__init__(f"{head} {message}")


class WeightsError(DarkcfgError):
    """A .weights file that does not fit its cfg (names the layer and byte offset)."""


class DataError(DarkcfgError):
    """A dataset, list, label or image problem (names the file)."""


class CfgWarning(UserWarning):
    """A cfg problem that lenient mode lets through."""


class OutputError(DarkcfgError):
    """A file or folder darkcfg cannot (or must not) write (names the user's path)."""
