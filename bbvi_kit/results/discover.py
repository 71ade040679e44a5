"""Finding the run directories under folders: one run, one sweep, several sweeps or a folder of
sweeps, searched recursively, each run read once (:func:`find_runs`)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

from bbvi_kit.errors import InputError
from bbvi_kit.results.run import Run, load_run
from bbvi_kit.results.table import read_table

__all__ = ["FiguresWarning", "find_runs", "is_run_dir", "warner"]


class FiguresWarning(UserWarning):
    """Something in the run directories that the figures work around (skipped or cut runs)."""


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds both ``run.json`` and ``metrics.csv``."""
    return (path / "run.json").is_file() and (path / "metrics.csv").is_file()


def _run_dirs_under(root: Path) -> list[Path]:
    if is_run_dir(root):
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_run_dir(here):
            found.append(here)
            dirnames[:] = []  # a run directory holds no runs
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def warner(warn: Callable[[str], None] | None) -> Callable[[str], None]:
    """``warn``, or :func:`warnings.warn` with :class:`FiguresWarning` when it is ``None``."""
    if warn is not None:
        return warn
    return lambda message: warnings.warn(message, FiguresWarning, stacklevel=3)


FIGURE_DIAGNOSTICS = ("full_gradient", "snr")  # what draw_figures reads (grad_norm_sq, snr_vs_K)


def find_runs(paths: Sequence[str | Path], warn: Callable[[str], None] | None = None) -> list[Run]:
    """Every run directory under ``paths``, recursively, each read once (with its
    ``diagnostics/full_gradient.csv`` and ``diagnostics/snr.csv``, the diagnostics the figures draw).

    A run directory is a folder holding ``run.json`` and ``metrics.csv``; the search does not
    descend into one, nor into hidden folders. A run with no metrics rows yet is skipped with a
    warning (``warn(message)``, by default :func:`warnings.warn` with :class:`FiguresWarning`).

    Raises:
        InputError: a path that does not exist, or under which no run has metrics rows.
    """
    say = warner(warn)
    seen: set[Path] = set()
    runs: list[Run] = []
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise InputError(f"{root}: no such file or directory")
        if not root.is_dir():
            raise InputError(f"{root}: not a directory (give run or sweep directories)")
        dirs = _run_dirs_under(root)
        if not dirs:
            raise InputError(f"{root}: no run directory (a folder with run.json and metrics.csv) under it")
        kept = 0
        for run_dir in dirs:
            key = run_dir.resolve()
            if key in seen:
                kept += 1
                continue
            seen.add(key)
            metrics = read_table(run_dir / "metrics.csv")
            if not metrics:
                say(f"{run_dir}: no metrics rows yet; skipped")
                continue
            runs.append(load_run(run_dir, diagnostics=FIGURE_DIAGNOSTICS, metrics=metrics))
            kept += 1
        if kept == 0:
            raise InputError(f"{root}: no run with metrics rows under it yet")
    return runs
