"""Files bbvi-kit reads and writes safely: bounded reads of regular files only, atomic writes
(a temporary file, ``fsync``, a rename: never half-written), folders created with one-line
errors, fresh directories made with an exclusive ``mkdir``, and one line for a failed file
operation."""

from __future__ import annotations

import datetime as _dt
import errno
import os
import re
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from bbvi_kit.errors import InputError, OutputError

TEMPORARY_NAME = re.compile(r"^\..+\.tmp-\d+(\.[A-Za-z0-9]+)?$")
"""The name of an atomic write's temporary file: ``.<name>.tmp-<pid>`` (plots: ``.<stem>.tmp-<pid>.<ext>``)."""

MAX_INFO_BYTES = 16 * 1024 * 1024
"""Largest ``run.json``, ``sweep.json`` or checkpoint index read (16 MiB)."""


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file (a symbolic link to one is followed) of at most
    ``limit`` bytes. Anything else is refused without blocking: the file is opened non-blocking
    and checked with ``fstat`` before a byte is read, so a FIFO, a device (``/dev/zero``) or a
    socket is an :class:`InputError` naming it, as is a larger file. A directory raises
    :class:`IsADirectoryError` and a missing file :class:`FileNotFoundError`, for the caller to
    word; other failures to open are :class:`OSError`."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: not a regular file (a FIFO, a device or a socket); refused")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise InputError(f"{path}: larger than {limit // 1024} KiB; refused")
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file object whose contents replace ``path`` when the block ends without an error: it is
    written to a temporary file beside ``path`` (``.<name>.tmp-<pid>``), flushed to disk and
    renamed over ``path``, so ``path`` is never half-written. On failure (e.g. a full disk, or an
    exception in the block) the temporary file is removed and ``path`` is as it was; an
    ``OSError`` names ``path`` (a failed ``write`` names no file by itself). ``mode`` is ``"wb"``
    or ``"w"`` (UTF-8 text)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        text_options: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8"}
        with open(tmp, mode, **text_options) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    """Remove ``path`` if it is there; a folder that is not there (or not a folder) is fine."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path, "w") as fh:
        fh.write(text)


WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})
"""Errors of the machine rather than of the paths given (exit code 1, as an :class:`OutputError`;
any other failed file operation is a path that cannot be used: exit code 2)."""


def file_error_message(exc: OSError) -> str:
    """One line for a failed file operation, naming the file(s) it was about."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{where or 'a file'}: {exc.strerror or exc}"


def ensure_folder(path: Path) -> Path:
    """``mkdir -p`` for a folder bbvi-kit writes into (``plots/``, a run's output root); a file
    in its place is an :class:`InputError`, a failure to create it an :class:`OutputError`, each
    naming the folder."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{path}: exists and is not a folder; move it away") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the folder ({exc.strerror or exc})") from None
    return path


def fresh_directory(parent: Path, prefix: str = "") -> Path:
    """Make and return a new ``parent/<prefix><YYYYmmdd-HHMMSS>-<random id>`` with an exclusive mkdir."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {parent}: {exc.strerror or exc}") from exc
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = parent / f"{prefix}{stamp}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise InputError(f"cannot find a fresh directory name under {parent}")
