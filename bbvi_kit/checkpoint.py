"""Checkpoints of a run: written atomically, verified when read, the last K kept.

A run directory's ``checkpoints/`` folder holds::

    step-000000120.pt    a checkpoint (torch.save of plain tensors, numbers, strings and lists)
    step-000000240.pt
    index.json           the checkpoints that are complete: file, step, size and SHA-256

A checkpoint is written to a temporary file, flushed to disk and renamed into place; only then is
it added to ``index.json`` (itself replaced atomically) and the oldest beyond ``keep`` deleted. A
process killed at any moment therefore leaves the index naming only complete checkpoints; a file
the index does not name is the debris of a killed write and is removed on resume. When the index
is missing or empty, the newest ``step-<n>.pt`` that loads is adopted instead
(:meth:`Checkpoints.find_unindexed`): valid checkpoints are never treated as debris.

Reading verifies the size and SHA-256 recorded in the index and loads with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only and never
runs code from the file. A checkpoint that fails any check is refused with a one-line
:class:`~bbvi_kit.errors.InputError` naming the file.

What a checkpoint holds is the trainer's business (:meth:`bbvi_kit.engine.Trainer.state_dict`):
parameters, optimizer, estimator and diagnostic state, every RNG state, the data order position,
the step and the running averages, and the size each CSV file of the run had when it was taken.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, cast

import torch

from bbvi_kit.errors import InputError, OutputError
from bbvi_kit.files import MAX_INFO_BYTES, atomic_file, atomic_write_text, read_regular_file

CHECKPOINT_DIR = "checkpoints"
INDEX_FILE = "index.json"
FORMAT_VERSION = 1
REQUIRED_KEYS = frozenset({"parameters", "buffers", "optimizer", "estimator", "diagnostics", "rng", "loop"})
"""What every checkpoint the training loop writes holds (besides ``format`` and ``step``)."""
REQUIRED_LOOP_KEYS = frozenset({"epoch", "batch_index", "epoch_generator", "elapsed", "last_eval_step",
                                "grad_norm_sq_sum", "good_steps", "skipped_steps"})
"""What its ``loop`` entry holds: the loop's position and running sums."""
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckpointRecord:
    """One complete checkpoint as ``index.json`` lists it."""

    file: str
    step: int
    size: int
    sha256: str


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None  # torch reports a failed write as its own RuntimeError

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += len(view)
        try:
            return self._fh.write(view)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._fh.flush()


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256_of(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class Checkpoints:
    """The ``checkpoints/`` folder of the run directory ``run_path``; keeps the last ``keep``."""

    def __init__(self, run_path: Path | str, keep: int = 2) -> None:
        self.path = Path(run_path) / CHECKPOINT_DIR
        self.keep = keep

    # -- the index --------------------------------------------------------------------------
    def records(self) -> list[CheckpointRecord]:
        """The complete checkpoints, oldest first (empty when there are none)."""
        index = self.path / INDEX_FILE
        if not index.exists():
            return []

        try:
            data = json.loads(read_regular_file(index, MAX_INFO_BYTES).decode("utf-8"))
            records = [CheckpointRecord(file=str(r["file"]), step=int(r["step"]), size=int(r["size"]),
                                        sha256=str(r["sha256"])) for r in data["checkpoints"]]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{index}: unreadable checkpoint index ({type(exc).__name__}: {exc})") from None
        for r in records:
            if Path(r.file).name != r.file or not r.file.endswith(".pt"):
                raise InputError(f"{index}: checkpoint file name {r.file!r} is not a file in {self.path}")
        return records

    def latest(self) -> CheckpointRecord | None:
        records = self.records()
        return records[-1] if records else None

    def describe_latest(self) -> str:
        """``last good checkpoint: <path> (step N)``, or that there is none; for error messages."""
        try:
            record = self.latest()
        except InputError:
            return "no readable checkpoint"
        if record is None:
            return "no checkpoint written yet"
        return f"last good checkpoint: {self.path / record.file} (step {record.step})"

    def _write_index(self, records: list[CheckpointRecord]) -> None:
        body = {"format": FORMAT_VERSION, "checkpoints": [asdict(r) for r in records]}
        atomic_write_text(self.path / INDEX_FILE, json.dumps(body, indent=2) + "\n")

    # -- writing ----------------------------------------------------------------------------
    def save(self, state: dict[str, Any], step: int) -> CheckpointRecord:
        """Write ``state`` as the checkpoint of ``step``; see the module docstring for the order
        of operations. A failure to write (e.g. a full disk) removes the partial file, keeps every
        earlier checkpoint, and raises an :class:`OutputError` naming the file."""
        self.path.mkdir(exist_ok=True)
        name = f"step-{step:09d}.pt"
        final = self.path / name
        writer: _HashingWriter | None = None
        try:
            with atomic_file(final) as fh:
                writer = _HashingWriter(fh)
                # torch.save only calls write (and flush) on the file object it is given
                torch.save({"format": FORMAT_VERSION, "step": step, **state}, cast(IO[bytes], writer))
            _fsync_dir(self.path)
            record = CheckpointRecord(file=name, step=step, size=writer.size, sha256=writer.digest.hexdigest())
            kept = [r for r in self.records() if r.file != name] + [record]
            dropped, kept = kept[: -self.keep], kept[-self.keep:]
            self._write_index(kept)
        except Exception as exc:
            cause = writer.error if writer is not None and writer.error is not None else exc
            if isinstance(cause, OSError):
                raise OutputError(f"cannot write checkpoint {final}: {cause.strerror or cause}") from exc
            raise
        for old in dropped:
            (self.path / old.file).unlink(missing_ok=True)
        return record

    def find_unindexed(self) -> tuple[CheckpointRecord, dict[str, Any]] | None:
        """When ``index.json`` is missing or names no checkpoint: the newest ``step-<n>.pt`` that
        loads as a checkpoint of step n (a file gets its final name only once complete), as a
        record with its size and SHA-256 computed now, and its state; ``None`` when none does.
        Nothing is written or deleted: :meth:`adopt` indexes it once the caller has accepted it."""
        if not self.path.is_dir():
            return None
        for path in sorted(self.path.glob("step-*.pt"), reverse=True):
            match = re.fullmatch(r"step-(\d{9})\.pt", path.name)
            if match is None or not path.is_file():  # is_file: a regular file (or a link to one)
                continue
            try:
                size, digest = _sha256_of(path)
                record = CheckpointRecord(file=path.name, step=int(match.group(1)), size=size, sha256=digest)
                return record, self._unpickle(path, record.step)
            except (OSError, InputError):
                continue
        return None

    def adopt(self, record: CheckpointRecord) -> None:
        """Index ``record`` (from :meth:`find_unindexed`) as the only complete checkpoint."""
        self._write_index([record])

    def remove_debris(self) -> list[Path]:
        """Delete files the index does not name (a write killed half-way); returns them."""
        if not self.path.is_dir():
            return []
        named = {r.file for r in self.records()} | {INDEX_FILE}
        removed = []
        for path in self.path.iterdir():
            if path.name not in named and path.is_file():
                path.unlink()
                removed.append(path)
        return removed

    # -- reading ----------------------------------------------------------------------------
    def load(self, record: CheckpointRecord, map_location: torch.device | str = "cpu") -> dict[str, Any]:
        """The state saved in ``record``, after checking its size and SHA-256; refuses anything
        else with a one-line :class:`InputError`."""
        path = self.path / record.file
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read, /dev/zero never end it
                raise InputError(f"checkpoint {path}: refused, not a regular file")
            size, digest = _sha256_of(path)
        except OSError as exc:
            raise InputError(f"checkpoint {path}: cannot read it ({exc.strerror or exc})") from None
        if size != record.size or digest != record.sha256:
            raise InputError(
                f"checkpoint {path}: refused, its contents do not match {INDEX_FILE} "
                f"(size {size} vs {record.size} bytes, or the SHA-256 differs): truncated or modified"
            )
        return self._unpickle(path, record.step, map_location)

    @staticmethod
    def _unpickle(path: Path, step: int, map_location: torch.device | str = "cpu") -> dict[str, Any]:
        """``torch.load(weights_only=True)`` of ``path``, which must be a bbvi-kit checkpoint of
        ``step``; anything else is a one-line :class:`InputError`."""
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not ours
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"checkpoint {path}: refused, not a loadable checkpoint ({type(exc).__name__}: "
                             f"{first[:200]})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or state.get("step") != step:
            raise InputError(f"checkpoint {path}: refused, not a bbvi-kit checkpoint of format {FORMAT_VERSION} "
                             f"for step {step}")
        loop = state.get("loop", {})
        missing = sorted(REQUIRED_KEYS - state.keys()) + (
            [f"loop.{k}" for k in sorted(REQUIRED_LOOP_KEYS - loop.keys())] if isinstance(loop, dict) else ["loop"])
        if missing:
            raise InputError(f"checkpoint {path}: refused, it lacks {', '.join(missing)} (not a whole bbvi-kit "
                             "checkpoint)")
        return state
