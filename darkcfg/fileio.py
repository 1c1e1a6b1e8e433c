"""The user's files, read and written safely: every file darkcfg writes goes through
`atomic_write`, every small text file it reads through `read_text`.

The rules (one place for all of them):
- a new file appears whole or not at all (written to a temporary file beside it, flushed,
  then renamed over the target), and no temporary file is left behind on any error;
- a symlink is written through (its target is replaced, the link stays);
- an existing file keeps its mode; a new one gets the user's umask (as `open` would);
- anything that is not a regular file or a new path (a device, a FIFO, a folder, a
  socket), a read-only file and a file with several hard links are refused: replacing
  them would not do what the user meant;
- errors name the user's path, never the temporary file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO

from .errors import DataError, OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "the disk is full"
    if e.errno == errno.EDQUOT:
        return "the disk quota is exhausted"
    return e.strerror or str(e)


def check_target(path: str | os.PathLike, what: str = "file") -> tuple[str, int | None]:
    """Where writing `path` would go (symlinks followed) and the mode to keep (None for a
    new file); raises OutputError for a path that must not be replaced."""
    shown = os.fspath(path)
    real = os.path.realpath(shown)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"{shown}: cannot write the {what}: {_why(e)}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{shown}: is a folder; give a file name for the {what}")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{shown}: is not a regular file (a device, FIFO or socket); "
                              f"darkcfg writes the {what} only to a regular file or a new path")
        if not st.st_mode & 0o222:
            raise OutputError(f"{shown}: is read-only; darkcfg does not replace it (make it "
                              f"writable or choose another name for the {what})")
        if st.st_nlink > 1:
            raise OutputError(f"{shown}: has {st.st_nlink} hard links; replacing it would "
                              f"leave the other names with the old content (copy it first, "
                              f"or choose another name for the {what})")
    folder = os.path.dirname(real) or "."
    shown_folder = os.path.dirname(shown) or "."
    if os.path.realpath(shown_folder) != folder:    # a symlink points elsewhere: name that
        shown_folder = f"{folder} (where {shown} points)"
    check_folder(folder, what, create=False, shown=shown_folder)
    return real, None if st is None else stat.S_IMODE(st.st_mode)


def check_folder(folder: str | os.PathLike, what: str = "files", *, create: bool = True,
                 shown: str | None = None) -> str:
    """A folder that darkcfg can write into (made, with its parents, when `create`);
    raises OutputError naming it otherwise. Checked before long work, not after it."""
    folder = os.fspath(folder)
    shown = folder if shown is None else shown
    if create and not os.path.exists(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{shown}: cannot make the folder for the {what}: "
                              f"{_why(e)}") from None
    if not os.path.exists(folder):
        raise OutputError(f"{shown}: no such folder for the {what}")
    if not os.path.isdir(folder):
        raise OutputError(f"{shown}: is a file, not a folder; the {what} need a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{shown}: the folder is not writable; the {what} cannot go there")
    return folder


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, what: str = "file") -> Iterator[IO[bytes]]:
    """Open a binary file that replaces `path` when the block ends without an error."""
    shown = os.fspath(path)
    real, mode = check_target(shown, what)
    folder = os.path.dirname(real) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".darkcfg-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError(f"{shown}: cannot write the {what}: {_why(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, real)
    except OSError as e:
        _remove(tmp)
        raise OutputError(f"{shown}: cannot write the {what}: {_why(e)}") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def read_text(path: str | os.PathLike, what: str, where: str = "") -> str:
    """A small text file of the user's (names, lists, labels, .data) that must be UTF-8 (a
    leading BOM is allowed). Anything else is refused with the byte offset of the first
    bad byte: guessing latin-1 would turn names into silently different strings. `where`
    (e.g. "cfg/x.data:3") says who named the file, ahead of every message."""
    path = os.fspath(path)
    src = f"{where}: " if where else ""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{src}{path}: no such {what} file") from None
    except OSError as e:
        raise DataError(f"{src}{path}: cannot read the {what} file: {e.strerror}") from None
    if b"\0" in raw:
        at = raw.index(b"\0")
        raise DataError(f"{src}{path}: a binary file, not a {what} file (a zero byte at offset "
                        f"{at}); give a text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{src}{path}:{line}: the {what} file is not UTF-8 (byte "
                        f"0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8") from None
