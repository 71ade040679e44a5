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
import datetime as _dt
import json
import os
import platform
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from bbvi_kit.errors import InputError


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class CsvLog:
    """An append-only CSV file with a fixed header, created exclusively, flushed on every write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self._writer: Any = None
        self.columns: list[str] | None = None

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        if self._fh is None:
            self.columns = list(rows[0].keys())
            self._fh = open(self.path, "x", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="raise")
            self._writer.writeheader()
        self._writer.writerows(rows)
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


def read_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics or eval CSV with every value as float (empty cells as NaN)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: float(v) if v != "" else float("nan") for k, v in row.items()} for row in csv.DictReader(fh)]


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


def fresh_directory(parent: Path) -> Path:
    """Make and return a new ``parent/<YYYYmmdd-HHMMSS>-<random id>`` with an exclusive mkdir."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {parent}: {exc.strerror or exc}") from exc
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = parent / f"{stamp}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise InputError(f"cannot find a fresh directory name under {parent}")


class RunDirectory:
    """A fresh run directory and the files in it; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metrics = CsvLog(path / "metrics.csv")
        self.evals = CsvLog(path / "eval.csv")
        self.plots = path / "plots"
        self.diagnostics: dict[str, CsvLog] = {}
        self._info: dict[str, Any] = {}

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

    def write_recipe(self, recipe: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / "recipe.yaml", yaml.safe_dump(dict(recipe), sort_keys=False))

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
        self.metrics.close()
        self.evals.close()
        for log in self.diagnostics.values():
            log.close()
