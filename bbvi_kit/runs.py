"""The run directory: the one source of truth after a run.

Layout of ``<root>/<recipe name>/<YYYYmmdd-HHMMSS>-<id>/``:

- ``recipe.yaml``: the fully resolved recipe (re-runnable as it is);
- ``run.json``: status (``running``, ``completed`` or ``failed`` with the error), environment
  (versions, device, git commit, seed) and timing; replaced atomically on every change;
- ``metrics.csv``: one row per recorded iteration, streamed and flushed as it is recorded;
- ``eval.csv``: one row per evaluation;
- ``diagnostics/<name>.csv``: one row per measurement of each diagnostic the recipe lists;
- ``plots/``: PNG figures drawn from the CSV files.

A run directory is created with an exclusive ``mkdir`` and files with mode ``x``: nothing is ever
overwritten. A crashed run keeps every row flushed before the crash, and ``run.json`` still says
``running``, so a half-finished run never looks complete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from bbvi_kit.errors import InputError, OutputError
from bbvi_kit.files import (  # noqa: F401  (WRITE_FAILURES, file_error_message: also read from here)
    MAX_INFO_BYTES,
    TEMPORARY_NAME,
    WRITE_FAILURES,
    atomic_write_text,
    ensure_folder,
    file_error_message,
    fresh_directory,
    read_regular_file,
)


class CsvLog:
    """An append-only CSV file with a fixed header, flushed on every write.

    A new log creates its file exclusively on the first write. Each write appends whole rows in
    one ``write`` call; if it fails (e.g. a full disk), the file is cut back to the rows before
    it, so a file never ends in a partial row written by this process, and the error is raised
    as a :class:`~bbvi_kit.errors.OutputError` naming the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self.columns: list[str] | None = None

    @staticmethod
    def check_cut(path: Path, size: int) -> None:
        """Refuse (an :class:`InputError`, nothing changed) a cut of ``path`` at ``size`` bytes
        that the file cannot have had: longer than the file, or inside a row (a checkpoint of
        another run, or a file edited since)."""
        if size == 0:
            return
        actual = path.stat().st_size if path.exists() else -1
        if actual < size:
            raise InputError(
                f"{path}: has {max(actual, 0)} bytes but the checkpoint recorded {size}: "
                "it was changed or cut after the checkpoint was taken"
            )
        with open(path, "rb") as fh:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                raise InputError(f"{path}: the checkpoint's size {size} falls inside a row: the checkpoint "
                                 "was not taken with this file")

    @classmethod
    def reopen(cls, path: Path, size: int) -> tuple["CsvLog", list[dict[str, float]]]:
        """Cut ``path`` back to its first ``size`` bytes (what a checkpoint recorded, checked
        first with :meth:`check_cut`) and open it for appending; ``size`` 0 removes it. Returns the
        log and the rows it keeps."""
        log = cls(path)
        if size == 0:
            path.unlink(missing_ok=True)
            return log, []
        os.truncate(path, size)
        with open(path, newline="", encoding="utf-8") as fh:
            header = fh.readline()
        log.columns = next(csv.reader([header]))
        log._fh = open(path, "a", newline="", encoding="utf-8")
        return log, read_csv(path)

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        buffer = io.StringIO()
        new = self._fh is None
        columns = self.columns if self.columns is not None else list(rows[0].keys())
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="raise")
        if new:
            writer.writeheader()
        writer.writerows(rows)
        try:
            if new:
                self._fh = open(self.path, "x", newline="", encoding="utf-8")
                self.columns = columns
            start = self._fh.tell()
            try:
                self._fh.write(buffer.getvalue())
                self._fh.flush()
            except OSError:
                self._cut_back(start)
                raise
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def _cut_back(self, size: int) -> None:
        """After a failed write: drop what the buffer still holds and truncate to ``size``."""
        fh, self._fh = self._fh, None
        fd = os.dup(fh.fileno())
        try:
            try:
                fh.close()  # may try to flush the failed bytes again; they are cut below
            except OSError:
                pass
            os.ftruncate(fd, size)
        except OSError:
            pass
        finally:
            os.close(fd)
        if size == 0:
            self.path.unlink(missing_ok=True)
            self.columns = None
        else:
            self._fh = open(self.path, "a", newline="", encoding="utf-8")

    def size(self) -> int:
        """Bytes on disk (every written row is flushed)."""
        if self._fh is not None:
            return self._fh.tell()
        return self.path.stat().st_size if self.path.exists() else 0

    def sync(self) -> None:
        """Flush the rows written so far to the disk itself (before a checkpoint names them)."""
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            try:
                os.fsync(self._fh.fileno())
            finally:
                self._fh.close()
                self._fh = None


def read_csv_columns(path: Path) -> dict[str, np.ndarray]:
    """The columns of a metrics, eval or diagnostic CSV file as float arrays (empty cells NaN),
    in the header's order: the one reader of bbvi-kit's CSV files.

    A last line without its line end is a row cut short by a killed process (or one still being
    written): it is left out. A line with the wrong number of fields or a value that is not a
    number anywhere else is an :class:`InputError` naming the file, the line and the column.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        text = fh.read()
    if not text.endswith(("\n", "\r")):
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1]
    head, _, body = text.partition("\n")
    header = next(csv.reader([head.rstrip("\r")]), [])
    if not header or not body.strip():
        return {name: np.empty(0) for name in header}
    try:  # the fast path: plain numbers, no empty cells
        values = np.loadtxt(io.StringIO(body), delimiter=",", dtype=float, ndmin=2)
        if values.shape[1] == len(header):
            return {name: values[:, j].copy() for j, name in enumerate(header)}
    except ValueError:
        pass
    lines = [(n, line) for n, line in enumerate(csv.reader(io.StringIO(body, newline="")), start=2) if line]
    columns: dict[str, list[float]] = {name: [] for name in header}
    for n, line in lines:
        if len(line) != len(header):
            raise InputError(f"{path}: line {n}: {len(line)} fields, the header has {len(header)}")
        for name, value in zip(header, line):
            try:
                columns[name].append(float(value) if value.strip() else math.nan)
            except ValueError:
                raise InputError(f"{path}: line {n}, column {name}: {value[:40]!r} is not a number") from None
    return {name: np.array(values, dtype=float) for name, values in columns.items()}


def read_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics, eval or diagnostic CSV file, each a dict of floats (empty cells NaN);
    see :func:`read_csv_columns`."""
    columns = read_csv_columns(path)
    return [dict(zip(columns, map(float, values))) for values in zip(*columns.values())]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    import pyro
    import torch

    import bbvi_kit

    return {
        "bbvi_kit": bbvi_kit.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
        "argv": sys.argv,
    }


class DirectoryLock:
    """An exclusive advisory lock on a directory, held while a process writes there, so that a
    run (or sweep) is never written by two processes at once, e.g. resumed while it is still
    running. It is a ``flock`` on the directory itself (no lock file is left behind), and the
    operating system releases it when the process ends, however it ends. Where ``fcntl`` does
    not exist (Windows) the lock is a no-op."""

    def __init__(self, directory: Path) -> None:
        self.path = directory
        self._fd: int | None = None

    def acquire(self) -> "DirectoryLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return self
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(f"{self.path} is being written by another bbvi-kit process; wait for it to end") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def wait_until_free(self, on_wait: Callable[[str], None] | None = None) -> None:
        """Block while another process holds the lock (saying so once through ``on_wait``), then
        return without holding it: what a sweep's ``--resume`` does with a run that another
        process (a separate ``--resume`` of it, or a stopping worker of a killed driver) is still
        finishing, before it looks at that run's status."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if on_wait is not None:
                    on_wait(f"{self.path} is being written by another bbvi-kit process; waiting for it to end")
                fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            os.close(fd)


_CSV_NAME = re.compile(r"^(metrics|eval)\.csv$|^diagnostics/[A-Za-z0-9_.-]+\.csv$")


class RunDirectory:
    """A run directory and the files in it; see the module docstring. The process that creates
    (or resumes) it holds its :class:`DirectoryLock` until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metrics = CsvLog(path / "metrics.csv")
        self.evals = CsvLog(path / "eval.csv")
        self.plots = path / "plots"
        self.diagnostics: dict[str, CsvLog] = {}
        self._info: dict[str, Any] = {}
        self._identity: dict[str, Any] | None = None
        self._lock = DirectoryLock(path).acquire()

    @classmethod
    def create(cls, root: Path | str, name: str) -> "RunDirectory":
        """Make ``root/name/<time>-<id>``; never reuses an existing directory."""
        path = fresh_directory(Path(root) / name)
        (path / "plots").mkdir()
        return cls(path)

    @classmethod
    def create_named(cls, parent: Path, name: str) -> "RunDirectory":
        """Make ``parent/name`` (a run inside a sweep directory); it must not exist yet."""
        path = parent / name
        try:
            path.mkdir()
        except OSError as exc:
            raise InputError(f"cannot create run directory {path}: {exc.strerror or exc}") from exc
        (path / "plots").mkdir()
        return cls(path)

    @classmethod
    def reopen(cls, path: Path) -> "RunDirectory":
        """An existing run directory, to resume: ``run.json`` (if any; a run trained from Python
        has none) is read back; the CSV files are left as they are until :meth:`restore_logs`
        cuts them back to a checkpoint."""
        if not path.is_dir():
            raise InputError(f"{path}: no such run directory")
        info_path = path / "run.json"
        info: Any = {}
        if info_path.exists():
            try:
                info = json.loads(read_regular_file(info_path, MAX_INFO_BYTES).decode("utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise InputError(f"{info_path}: unreadable ({type(exc).__name__}: {exc})") from None
            if not isinstance(info, dict):
                raise InputError(f"{info_path}: not a run description")
        run = cls(path)
        run._info = info
        try:
            ensure_folder(path / "plots")
        except BaseException:
            run.release()
            raise
        return run

    def log_sizes(self) -> dict[str, int]:
        """The byte size of every CSV file written so far, synced to disk first: what a
        checkpoint records so that a resumed run can cut each file back to that moment."""
        logs = {"metrics.csv": self.metrics, "eval.csv": self.evals}
        logs.update({f"diagnostics/{name}.csv": log for name, log in self.diagnostics.items()})
        sizes = {}
        for rel, log in logs.items():
            log.sync()
            sizes[rel] = log.size()
        return sizes

    def restore_logs(self, sizes: Mapping[str, int]) -> dict[str, list[dict[str, float]]]:
        """Cut every CSV file back to the size a checkpoint recorded (removing files it did not
        know) and reopen them for appending; returns the rows kept, by relative file name."""
        for rel, size in sizes.items():
            if not isinstance(rel, str) or not _CSV_NAME.match(rel) or not isinstance(size, int) or size < 0:
                raise InputError(f"{self.path}: the checkpoint names an unexpected log {rel!r}")
        for rel, size in sizes.items():  # every file checked before any is cut
            CsvLog.check_cut(self.path / rel, size)
        present = [p for p in (self.path / "metrics.csv", self.path / "eval.csv") if p.exists()]
        if (self.path / "diagnostics").is_dir():
            present += sorted((self.path / "diagnostics").glob("*.csv"))
        kept: dict[str, list[dict[str, float]]] = {}
        for path in present:
            rel = path.relative_to(self.path).as_posix()
            if rel not in sizes:
                path.unlink()  # written after the checkpoint: it will be written again
        for rel, size in sizes.items():
            log, rows = CsvLog.reopen(self.path / rel, size)
            kept[rel] = rows
            if rel == "metrics.csv":
                self.metrics = log
            elif rel == "eval.csv":
                self.evals = log
            else:
                self.diagnostics[rel[len("diagnostics/"):-len(".csv")]] = log
        return kept

    @property
    def info(self) -> dict[str, Any]:
        """What ``run.json`` holds."""
        return dict(self._info)

    def write_recipe(self, recipe: Mapping[str, Any]) -> str:
        """Write the resolved recipe as ``recipe.yaml``; returns its text's SHA-256 (what
        ``run.json`` and every checkpoint record, so that a resume can tell an edited recipe)."""
        text = yaml.safe_dump(dict(recipe), sort_keys=False)
        atomic_write_text(self.path / "recipe.yaml", text)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def set_aside_results(self) -> Path | None:
        """Move what the run computed (its CSV files, ``diagnostics/`` and ``checkpoints/``) into
        a new ``set-aside-<time>/`` folder inside it, for ``--resume DIR --from-scratch``: the run
        starts again from step 0 and nothing it had is deleted. Returns that folder, or ``None``
        when there was nothing to move."""
        results = [p for p in (self.path / "metrics.csv", self.path / "eval.csv", self.path / "diagnostics",
                               self.path / "checkpoints") if os.path.lexists(p)]
        if not results:
            return None
        aside = fresh_directory(self.path, prefix="set-aside-")
        for path in results:
            os.replace(path, aside / path.name)
        return aside

    def remove_stray_temporaries(self) -> list[Path]:
        """Delete the temporary files of atomic writes (``.<name>.tmp-<pid>...``) that a killed
        process left in the run directory, ``plots/`` or ``diagnostics/``: called on resume and
        when a run ends, while this process holds the run's lock. Returns what it removed."""
        removed = []
        for folder in (self.path, self.path / "plots", self.path / "diagnostics"):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if TEMPORARY_NAME.match(path.name) and path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed.append(path)
        return removed

    def identity(self) -> dict[str, Any]:
        """What makes a checkpoint this run's: ``run.json``'s ``run_uid`` (drawn when the run
        started), its recipe's SHA-256 and text (to name what an edit changed). Read once: the
        recipe does not change while the run holds its lock."""
        if self._identity is None:
            recipe = self.path / "recipe.yaml"
            self._identity = {"run_uid": self._info.get("run_uid"), "recipe_sha256": self._info.get("recipe_sha256"),
                              "recipe_text": recipe.read_text(encoding="utf-8") if recipe.is_file() else ""}
        return self._identity

    def update_info(self, **fields: Any) -> None:
        """Merge ``fields`` into ``run.json`` and rewrite it atomically."""
        self._info.update(fields)
        atomic_write_text(self.path / "run.json", json.dumps(self._info, indent=2, default=str) + "\n")

    def diagnostic_log(self, name: str) -> CsvLog:
        """The CSV of diagnostic ``name``: ``diagnostics/<name>.csv``, created on first write."""
        if name not in self.diagnostics:
            (self.path / "diagnostics").mkdir(exist_ok=True)
            self.diagnostics[name] = CsvLog(self.path / "diagnostics" / f"{name}.csv")
        return self.diagnostics[name]

    def close(self) -> None:
        """Close every log, syncing it to disk."""
        self.metrics.close()
        self.evals.close()
        for log in self.diagnostics.values():
            log.close()

    def release(self) -> None:
        """Release the directory's lock (after the last write of ``run.json``)."""
        self._lock.release()
